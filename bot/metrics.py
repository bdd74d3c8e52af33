"""Prometheus metrics on `GET /metrics`: what the bot did and how it went.

One registry per running bot (not the process-global one), so tests and replicas in one
process never mix their counts. Labels are fixed words and names, never user text or secrets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commands = Counter(
            "uat_commands", "/uat commands by name and outcome", ["command", "outcome"], registry=r
        )
        self.webhooks = Counter(
            "uat_webhook_deliveries",
            "GitHub deliveries by event and result",
            ["event", "result"],
            registry=r,
        )
        self.environments = Gauge(
            "uat_environments",
            "PR environments by state (as of the last poll)",
            ["state"],
            registry=r,
        )
        self.slack_errors = Counter(
            "uat_slack_api_errors",
            "Slack Web API errors by method and error",
            ["method", "code"],
            registry=r,
        )
        self.aws_errors = Counter(
            "uat_aws_api_errors", "AWS API errors by call and code", ["method", "code"], registry=r
        )
        self.poll_seconds = Histogram(
            "uat_poll_duration_seconds",
            "How long one watcher round took",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.check_failures = Counter(
            "uat_watch_check_failures",
            "Watcher checks of one environment that failed (the next round looks again)",
            registry=r,
        )
        self.rejected = Counter(
            "uat_rejected_requests",
            "Requests refused before they were trusted, by endpoint and reason",
            ["endpoint", "reason"],
            registry=r,
        )
        self.cost_so_far = Gauge(
            "uat_environments_estimated_cost_usd",
            "Estimated Fargate cost so far of the active environments (as of the last poll)",
            registry=r,
        )
        self.cost_per_hour = Gauge(
            "uat_environments_estimated_cost_usd_per_hour",
            "Estimated Fargate cost an hour of the environments running now",
            registry=r,
        )
        self.prompt_jobs = Counter(
            "uat_prompt_jobs", "Relayed prompts by final state", ["state"], registry=r
        )

        self.pool = Gauge(
            "uat_warm_pool_tasks",
            "Warm-pool tasks by image tag and state: waiting, claiming, claimed (last refill)",
            ["tag", "state"],
            registry=r,
        )
        self.pool_claims = Counter(
            "uat_warm_pool_claims",
            "Launches that claimed a warm-pool task, or whose claim failed (they went cold)",
            ["result"],
            registry=r,
        )

    def aws_error(self, method: str, code: str) -> None:
        self.aws_errors.labels(method=method, code=code or "unknown").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
