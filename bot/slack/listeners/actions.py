"""Button clicks: every action id the bot's cards send (bot/slack/action_ids.py), stored in the
inbox, acknowledged at once and handed to the handler its command declared."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack import action_ids, slack_ui
from bot.slack.inbox import Invocation
from bot.slack.listeners.reply import context_for
from bot.store import StoreUnavailable

if TYPE_CHECKING:
    from bot.app import Runtime

BUTTONS = re.compile("^" + re.escape(action_ids.PREFIX))


def register(app: AsyncApp, runtime: Runtime) -> None:
    @app.action(BUTTONS)
    async def on_button(ack: AsyncAck, body: dict[str, Any]) -> None:
        action = body["actions"][0]
        channel = (body.get("channel") or {}).get("id") or body["container"].get("channel_id", "")
        invocation = Invocation(
            kind="click",
            user_id=body["user"]["id"],
            channel_id=channel,
            user_name=body["user"].get("username", ""),
            response_url=body.get("response_url"),
            trigger_id=body.get("trigger_id"),
            action_id=action["action_id"],
            value=action.get("value", ""),
            message_ts=body["container"].get("message_ts"),
        )
        ctx = context_for(runtime, invocation)
        try:
            ctx = await runtime.dispatcher.receive(ctx, invocation)
        except StoreUnavailable as exc:  # not kept, so not acted on: its user is told
            runtime.dispatcher.not_recorded(ctx, f"button {invocation.action_id}", exc)

            async def tell() -> None:  # owned by the app (drained on shutdown), not by Bolt
                await ctx.reply(slack_ui.NOT_RECORDED)

            runtime.services.tasks.spawn(tell(), name=f"not recorded: {invocation.action_id}")
            await ack()
            return
        await ack()
        runtime.dispatcher.click(ctx, invocation.action_id, invocation.value)
