"""Lift a `/uat lock` freeze on image operations. Deployers only."""

from __future__ import annotations

import argparse

from bot.slack import slack_ui
from bot.slack.context import CommandContext

NAME = "unlock"


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer("unlock image operations")
    await ctx.pipeline.unfreeze(ctx.user_id)
    await ctx.reply(slack_ui.unfrozen(ctx.user_id), in_channel=True)
