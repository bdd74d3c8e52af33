"""Where the bot's words go: Slack's Web API in production, the terminal in the console.

Commands and lifecycle code talk to a `Chat`, never to a Slack client directly, so the same code
runs behind Slack, behind `uat-bot console` and in tests.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import UserError
from bot.metrics import Metrics

logger = logging.getLogger(__name__)

Blocks = list[dict[str, Any]]


class Chat(Protocol):
    """The few things the bot says, addressed by channel and message timestamp."""

    async def post(
        self, channel: str, text: str, blocks: Blocks | None = None, thread_ts: str | None = None
    ) -> str:
        """Post a message (a reply when `thread_ts` is given); returns its ts."""
        ...

    async def update(self, channel: str, ts: str, text: str, blocks: Blocks | None = None) -> None:
        """Replace the text and blocks of a message the bot posted."""
        ...

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: Blocks | None = None
    ) -> None:
        """Show a message only `user` sees."""
        ...


class ChatError(UserError):
    """Slack refused a call; the message says which and why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class SlackChat:
    """`Chat` over Slack's Web API (retries for 429 and 5xx live in the client's handlers)."""

    def __init__(self, client: AsyncWebClient, metrics: Metrics | None = None) -> None:
        self.client = client
        self.metrics = metrics

    async def post(
        self, channel: str, text: str, blocks: Blocks | None = None, thread_ts: str | None = None
    ) -> str:
        try:
            response = await self.client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, thread_ts=thread_ts
            )
        except SlackApiError as exc:
            raise self._error("chat.postMessage", exc) from None
        return str(response["ts"])

    async def update(self, channel: str, ts: str, text: str, blocks: Blocks | None = None) -> None:
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks or [])
        except SlackApiError as exc:
            raise self._error("chat.update", exc) from None

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: Blocks | None = None
    ) -> None:
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            raise self._error("chat.postEphemeral", exc) from None

    def _error(self, method: str, exc: SlackApiError) -> ChatError:
        error = _chat_error(method, exc)
        if self.metrics is not None:
            self.metrics.slack_errors.labels(method=method, code=error.code).inc()
        return error


def _chat_error(method: str, exc: SlackApiError) -> ChatError:
    error = exc.response.get("error", "unknown_error") if exc.response else "no response"
    hint = {
        "not_in_channel": "invite the bot to the channel (/invite @UAT Bot)",
        "channel_not_found": "check UAT_CHANNEL is a channel ID the bot can see",
        "invalid_auth": "check SLACK_BOT_TOKEN",
        "not_authed": "set SLACK_BOT_TOKEN",
    }.get(str(error), "see the bot's log")
    return ChatError(f"Slack refused {method} ({error}): {hint}.", str(error))
