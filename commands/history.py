"""The last 20 image operations: who, what, from which digest to which, when, result."""

from __future__ import annotations

import argparse

from bot.slack import slack_ui
from bot.slack.context import CommandContext

NAME = "history"


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    text, blocks = slack_ui.history(await ctx.services.store.recent_audit(20))
    await ctx.reply(text, blocks)
