"""A PR container's log in CloudWatch Logs: where it is (the task definition's `awslogs` log
configuration) and its last lines.

ECS's awslogs driver names a Fargate container's stream `prefix/container-name/ecs-task-id`,
from the options `awslogs-group`, `awslogs-region` and `awslogs-stream-prefix`:
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/using_awslogs.html
The last lines are GetLogEvents read from the end (`startFromHead=False`); a time window or a
text to look for is FilterLogEvents on that one stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bot import gateway_text
from bot.aws.gateways import RETRIES, AwsError, _Gateway, boto3_session

MAX_LINES = 500  # what one read returns at most
MAX_PAGES = 20  # FilterLogEvents pages one read looks through (10,000 events each at most)
DENIED = ("AccessDeniedException", "AccessDenied")


@dataclass(frozen=True)
class LogPlace:
    """Where one task's container writes its log."""

    group: str
    region: str
    stream: str
    account: str = ""

    @property
    def group_arn(self) -> str:
        """The log group's ARN as a policy names it (its streams included)."""
        return f"arn:aws:logs:{self.region}:{self.account or 'ACCOUNT'}:log-group:{self.group}:*"


@dataclass(frozen=True)
class LogLine:
    """One log event: when (seconds since the epoch) and its text."""

    at: float
    text: str


class NoAwslogs(AwsError):
    """The task definition sends the container's output nowhere the bot can read."""


class LogStreamGone(AwsError):
    """The stream (or its group) does not exist: never created, or deleted by retention."""


class LogsAccessDenied(AwsError):
    """The bot's role may not read the log group."""


def log_place(definition: dict[str, Any], container: str, task_arn: str, region: str) -> LogPlace:
    """Where `container` of a task of `definition` (a DescribeTaskDefinition answer) logs to;
    NoAwslogs when its log configuration is not awslogs with a group and a stream prefix."""
    name = str(definition.get("taskDefinitionArn") or definition.get("family") or "?")
    name = name.rsplit("/", 1)[-1]
    for entry in definition.get("containerDefinitions", []):
        if entry.get("name") != container:
            continue
        config = entry.get("logConfiguration") or {}
        options = config.get("options") or {}
        group, prefix = options.get("awslogs-group"), options.get("awslogs-stream-prefix")
        if config.get("logDriver") != "awslogs" or not group or not prefix:
            break
        parts = task_arn.split(":")
        account = parts[4] if len(parts) > 5 else ""
        task_id = task_arn.rsplit("/", 1)[-1]
        return LogPlace(
            group=str(group),
            region=str(options.get("awslogs-region") or region),
            stream=f"{prefix}/{container}/{task_id}",
            account=account,
        )
    raise NoAwslogs(gateway_text.no_awslogs(name, container), "NoAwslogs")


def filter_pattern(text: str) -> str | None:
    """`text` as a CloudWatch Logs filter pattern matching it as written (a quoted term);
    None when it has a double quote or a backslash, which a quoted term cannot hold as typed
    (then every line of the window is read and matched here instead)."""
    if '"' in text or "\\" in text:
        return None
    return f'"{text}"'


class CloudWatchLogs(_Gateway):
    """Reads PR containers' logs (DescribeTaskDefinition, GetLogEvents, FilterLogEvents)."""

    def _logs(self, region: str) -> Any:
        """A CloudWatch Logs client in `region` (the log configuration's, not always the bot's)."""
        key = f"logs:{region}"
        if key not in self._clients:
            session = self._session or boto3_session(self._settings)
            self._clients[key] = session.client(
                "logs",
                region_name=region,
                endpoint_url=self._settings.aws_endpoint_url,
                config=RETRIES,
            )
        return self._clients[key]

    async def locate(self, task_definition: str, container: str, task_arn: str) -> LogPlace:
        """Where `container` of the task `task_arn` (run from `task_definition`) logs to. An
        inactive (deregistered) revision is still described, so a stopped task's log is found."""

        def run() -> LogPlace:
            self._count("DescribeTaskDefinition")
            described = self._client("ecs").describe_task_definition(taskDefinition=task_definition)
            region = self._settings.aws_region or self._client("ecs").meta.region_name
            return log_place(described["taskDefinition"], container, task_arn, str(region))

        return await self._guarded("DescribeTaskDefinition", run)

    async def tail(
        self,
        place: LogPlace,
        lines: int,
        *,
        since: float | None = None,
        grep: str | None = None,
    ) -> list[LogLine]:
        """The last `lines` (at most MAX_LINES) of the stream, oldest first; with `since`
        (seconds since the epoch) only those logged from then on, with `grep` only those
        containing it."""
        wanted = max(1, min(lines, MAX_LINES))

        def run() -> list[LogLine]:
            try:
                if since is None and not grep:
                    return self._last(place, wanted)
                return self._filtered(place, wanted, since, grep)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code == "ResourceNotFoundException":
                    raise LogStreamGone(
                        gateway_text.log_stream_gone(place.group, place.stream), code
                    ) from None
                if code in DENIED:
                    raise LogsAccessDenied(
                        gateway_text.logs_access_denied(place.group_arn), code
                    ) from None
                raise

        return await self._guarded("GetLogEvents", run)

    def _last(self, place: LogPlace, wanted: int) -> list[LogLine]:
        self._count("GetLogEvents")
        answer = self._logs(place.region).get_log_events(
            logGroupName=place.group,
            logStreamName=place.stream,
            limit=wanted,
            startFromHead=False,
        )
        events = sorted(answer.get("events", []), key=lambda e: e.get("timestamp", 0))
        return [_line(e) for e in events[-wanted:]]

    def _filtered(
        self, place: LogPlace, wanted: int, since: float | None, grep: str | None
    ) -> list[LogLine]:
        kwargs: dict[str, Any] = {"logGroupName": place.group, "logStreamNames": [place.stream]}
        if since is not None:
            kwargs["startTime"] = int(since * 1000)
        pattern = filter_pattern(grep) if grep else None
        if pattern:
            kwargs["filterPattern"] = pattern
        kept: deque[LogLine] = deque(maxlen=wanted)
        client = self._logs(place.region)
        for _ in range(MAX_PAGES):
            self._count("FilterLogEvents")
            answer = client.filter_log_events(**kwargs)
            for event in answer.get("events", []):
                line = _line(event)
                if not grep or grep in line.text:
                    kept.append(line)
            token = answer.get("nextToken")
            if not token or token == kwargs.get("nextToken"):
                break
            kwargs["nextToken"] = token
        return sorted(kept, key=lambda line: line.at)


def _line(event: dict[str, Any]) -> LogLine:
    return LogLine(float(event.get("timestamp", 0)) / 1000, str(event.get("message", "")))
