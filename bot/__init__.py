"""uat-bot: Slack chat-ops for per-pull-request UAT environments on AWS."""

__version__ = "0.1.0"
