"""A listener's failure: Slack not answering is one line in the log, anything else a traceback."""

from __future__ import annotations

import logging

import aiohttp
from slack_bolt.async_app import AsyncApp

from bot.slack.chat import one_line

logger = logging.getLogger(__name__)


async def on_error(error: Exception) -> None:
    if isinstance(error, aiohttp.ClientError | TimeoutError):  # Slack did not answer
        logger.warning("Slack unreachable (a Bolt listener's call): %s", one_line(error))
        return
    logger.error("Bolt listener failed: %r", error, exc_info=error)


def register(app: AsyncApp) -> None:
    app.error(on_error)
