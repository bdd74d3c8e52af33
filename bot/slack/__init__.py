"""Everything that speaks Slack: Bolt listeners, and the limits and ids Slack holds us to."""
