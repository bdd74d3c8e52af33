"""The `/uat` slash command: acknowledged by the dispatcher, its work run as a task afterwards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.slack.context import CommandContext
from bot.slack.listeners.reply import SlackReply

if TYPE_CHECKING:
    from bot.app import Runtime

SLASH_COMMAND = "/uat"


def register(app: AsyncApp, runtime: Runtime) -> None:
    @app.command(SLASH_COMMAND)
    async def on_uat(ack: AsyncAck, command: dict[str, Any]) -> None:
        ctx = CommandContext(
            services=runtime.services,
            user_id=command["user_id"],
            channel_id=command["channel_id"],
            user_name=command.get("user_name", ""),
            trigger_id=command.get("trigger_id"),
            reply=SlackReply(
                command.get("response_url"), runtime, command["channel_id"], command["user_id"]
            ),
        )

        async def acknowledge(text: str | None) -> None:
            await (ack(text=runtime.services.scrubber.text(text)) if text else ack())

        await runtime.dispatcher.dispatch(ctx, command.get("text", ""), acknowledge)
