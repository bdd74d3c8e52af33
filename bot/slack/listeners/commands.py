"""The `/uat` slash command: stored in the inbox and acknowledged by the dispatcher, its work run
as a task afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack.inbox import Invocation
from bot.slack.listeners.reply import context_for

if TYPE_CHECKING:
    from bot.app import Runtime

SLASH_COMMAND = "/uat"


def register(app: AsyncApp, runtime: Runtime) -> None:
    @app.command(SLASH_COMMAND)
    async def on_uat(ack: AsyncAck, command: dict[str, Any]) -> None:
        invocation = Invocation(
            kind="command",
            user_id=command["user_id"],
            channel_id=command["channel_id"],
            user_name=command.get("user_name", ""),
            response_url=command.get("response_url"),
            trigger_id=command.get("trigger_id"),
            text=command.get("text", ""),
        )

        async def acknowledge(text: str | None) -> None:
            await (ack(text=runtime.services.scrubber.text(text)) if text else ack())

        ctx = context_for(runtime, invocation)
        await runtime.dispatcher.dispatch(ctx, invocation.text, acknowledge, invocation)
