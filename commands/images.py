"""What :latest and :staging point at, and the last 10 sha-tagged images."""

from __future__ import annotations

import argparse

from bot.slack import slack_ui
from bot.slack.context import CommandContext

NAME = "images"


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    text, blocks = slack_ui.images_overview(await ctx.pipeline.overview(recent=10))
    await ctx.reply(text, blocks)
