"""A PR container's output in moto's CloudWatch Logs, where ECS's awslogs driver would put it
(`/ecs/uat`, stream `uat/app/<task-id>`: the base task definition's log configuration), and
CloudWatch Logs refusing the bot (AccessDeniedException, as AWS answers it on the wire)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

GROUP = "/ecs/uat"
PREFIX = "uat"


def stream_of(task_arn: str, container: str = "app") -> str:
    return f"{PREFIX}/{container}/{task_arn.rsplit('/', 1)[-1]}"


def write_log(
    endpoint: str,
    task_arn: str,
    lines: Sequence[str],
    *,
    at: float | None = None,
    step_s: float = 0.001,
) -> str:
    """Put `lines` in the task's stream (group and stream made when missing), the first at
    `at` (default now) and each `step_s` later; returns the stream's name."""
    logs = boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1")
    stream = stream_of(task_arn)
    if not logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]:
        logs.create_log_group(logGroupName=GROUP)
    if not logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=stream)["logStreams"]:
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    start = time.time() if at is None else at
    events = [
        {"timestamp": int((start + i * step_s) * 1000), "message": line}
        for i, line in enumerate(lines)
    ]
    for first in range(0, len(events), 10_000):  # PutLogEvents takes 10,000 at most
        logs.put_log_events(
            logGroupName=GROUP, logStreamName=stream, logEvents=events[first : first + 10_000]
        )
    return stream


def refusing_logs() -> boto3.session.Session:
    """A session whose CloudWatch Logs calls AWS answers with AccessDeniedException (the JSON
    error body of the awsJson1_1 protocol, status 400); every other service answers as usual."""
    session = boto3.session.Session(region_name="us-east-1")

    def refuse(request: Any, **_: Any) -> AWSResponse:
        body = {
            "__type": "AccessDeniedException",
            "message": "User: arn:aws:sts::123456789012:assumed-role/uat-bot/x is not authorized "
            "to perform: logs:GetLogEvents",
        }

        class Raw:
            def stream(self, **_: Any) -> Any:
                yield json.dumps(body).encode()

        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, Raw())

    session.events.register("before-send.cloudwatch-logs", refuse)
    return session


def task_exits(endpoint: str, cluster: str, task_arn: str, reason: str, exit_code: int) -> None:
    """The task stops as ECS stops a task whose essential container exited: its stopped reason,
    and the container's exit code (moto's StopTask sets no exit code, so it is set on moto's
    own record of the task; moto runs in this process)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ecs.models import ecs_backends

    ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1")
    ecs.stop_task(cluster=cluster, task=task_arn, reason=reason)
    tasks = ecs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].tasks[cluster]
    [task] = [t for arn, t in tasks.items() if arn.endswith(task_arn.rsplit("/", 1)[-1])]
    for container in task.containers:
        container.exitCode = exit_code
