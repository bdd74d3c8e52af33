"""How a listener answers: through the response_url Slack gave, or by an ephemeral post; and the
context a command or click runs with, built from what Slack sent (or what the inbox kept)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.logs import outside
from bot.slack import slack_ui
from bot.slack.chat import Blocks, ChatError, Message, SlackUnreachable
from bot.slack.context import CommandContext
from bot.slack.inbox import Invocation

if TYPE_CHECKING:
    from bot.app import Runtime

logger = logging.getLogger(__name__)


class SlackReply:
    """Answers a slash command or a click through its response_url, on the bot's one HTTP
    session (no new connection per answer); when that fails, by an ephemeral post instead."""

    def __init__(self, response_url: str | None, runtime: Runtime, channel: str, user: str) -> None:
        self._url = response_url
        self._runtime = runtime
        self._channel = channel
        self._user = user

    async def __call__(
        self,
        text: str,
        blocks: Blocks | None = None,
        *,
        in_channel: bool = False,
        replace_original: bool = False,
    ) -> None:
        scrubber = self._runtime.services.scrubber
        text, blocks = slack_ui.fit(scrubber.text(text), scrubber.value(blocks))
        status, failure = 0, ""
        if self._url:
            body: dict[str, Any] = {
                "text": text,
                "response_type": "in_channel" if in_channel else "ephemeral",
                "replace_original": replace_original,
            }
            if blocks is not None:
                body["blocks"] = blocks
            try:
                async with self._runtime.http().post(self._url, json=body) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:  # must not lose the answer
                failure = type(exc).__name__
        if status == 200:
            return
        failure = failure or f"HTTP {status}"
        chat = self._runtime.services.chat
        try:
            if in_channel:
                await chat.post(Message(self._channel, text, blocks))
            else:
                await chat.ephemeral(self._channel, self._user, text, blocks)
        except SlackUnreachable as exc:  # nowhere left to say it: one line in the log
            logger.warning("%s; the answer to %s is lost", exc.line, self._user)
            return
        except ChatError as exc:
            logger.warning("could not answer %s: %s", outside(self._user), outside(exc))
            return
        if self._url:
            logger.warning("response_url failed (%s); the answer was posted instead", failure)


def context_for(runtime: Runtime, invocation: Invocation) -> CommandContext:
    """The context a command or click runs with, answering through its response_url."""
    return CommandContext(
        services=runtime.services,
        user_id=invocation.user_id,
        channel_id=invocation.channel_id,
        user_name=invocation.user_name,
        trigger_id=invocation.trigger_id,
        message_ts=invocation.message_ts,
        reply=SlackReply(
            invocation.response_url, runtime, invocation.channel_id, invocation.user_id
        ),
    )
