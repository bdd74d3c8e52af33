"""A PR container's log: its last lines for `/uat logs`, the card's Logs button and the
terminal, and the tail a failure card shows."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.aws.gateways import Ecs
from bot.aws.logs import CloudWatchLogs, LogLine, LogPlace
from bot.environments.context import Context
from bot.errors import UserError
from bot.logs import outside
from bot.scrub import scrub
from bot.slack import slack_ui
from bot.store import Environment

logger = logging.getLogger(__name__)

LOGS_UNAVAILABLE = "the bot reads no container logs here (no CloudWatch Logs gateway)"


@dataclass(frozen=True)
class LogTail:
    """What was read: where from, and the lines (each as shown, credentials replaced)."""

    place: LogPlace
    lines: list[str]
    last_at: float | None = None  # when the last line was logged


class Logs:
    """Reads an environment's container log from CloudWatch Logs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def read(
        self,
        env: Environment,
        lines: int,
        *,
        since: float | None = None,
        grep: str | None = None,
    ) -> LogTail:
        """The last `lines` of `env`'s log (from `since`, containing `grep`), oldest first."""
        if self.ctx.logs is None:
            raise UserError(LOGS_UNAVAILABLE)
        reader = LogReader(self.ctx.logs, self.ctx.ecs, self.ctx.container_name)
        return await reader.read(env, lines, since=since, grep=grep)

    async def failure_tail(self, env: Environment) -> tuple[tuple[str, ...], str]:
        """The last lines a failure card shows, or none and why (as mrkdwn). Never raises:
        the failure is recorded whether or not its log can be read."""
        if self.ctx.logs is None or not env.task_arn:
            return (), ""
        try:
            tail = await self.read(env, slack_ui.FAILURE_LOG_LINES)
        except UserError as exc:
            logger.info("no log lines for %s#%d: %s", outside(env.repo), env.pr, outside(exc))
            return (), slack_ui.mrkdwn(str(exc))
        return tuple(tail.lines), ""


@dataclass
class LogReader:
    """Reads one environment's log with the gateways it takes (the bot's, or the terminal's)."""

    logs: CloudWatchLogs
    ecs: Ecs
    container: str

    async def place(self, env: Environment) -> LogPlace:
        """Where `env`'s task writes its log; a UserError saying why when that is unknown."""
        if not env.task_arn:
            raise UserError(slack_ui.no_task_for_logs(env))
        definition = env.facts.task_definition
        if not definition:
            task = (await self.ecs.describe([env.task_arn])).get(env.task_arn)
            definition = task.task_definition_arn if task is not None else None
        if not definition:
            raise UserError(slack_ui.no_task_for_logs(env))
        return await self.logs.locate(definition, self.container, env.task_arn)

    async def read(
        self, env: Environment, lines: int, *, since: float | None = None, grep: str | None = None
    ) -> LogTail:
        place = await self.place(env)
        found = await self.logs.tail(place, lines, since=since, grep=grep)
        return LogTail(place, shown(found), found[-1].at if found else None)


def shown(lines: list[LogLine]) -> list[str]:
    """Log events as the bot shows them: time and text, credentials replaced."""
    return [scrub(slack_ui.log_line(line.at, line.text)) for line in lines]
