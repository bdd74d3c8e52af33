"""Button clicks: every action id the bot's cards send (bot/slack/action_ids.py), acknowledged at
once and handed to the handler its command declared."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack import action_ids
from bot.slack.context import CommandContext
from bot.slack.listeners.reply import SlackReply

if TYPE_CHECKING:
    from bot.app import Runtime

BUTTONS = re.compile("^" + re.escape(action_ids.PREFIX))


def register(app: AsyncApp, runtime: Runtime) -> None:
    @app.action(BUTTONS)
    async def on_button(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        action = body["actions"][0]
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or body["container"].get("channel_id", "")
        ctx = CommandContext(
            services=runtime.services,
            user_id=user,
            channel_id=channel,
            user_name=body["user"].get("username", ""),
            trigger_id=body.get("trigger_id"),
            message_ts=body["container"].get("message_ts"),
            reply=SlackReply(body.get("response_url"), runtime, channel, user),
        )
        runtime.dispatcher.click(ctx, action["action_id"], action.get("value", ""))
