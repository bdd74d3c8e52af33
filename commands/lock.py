"""Freeze image operations (staging, latest, promote, rollback) with a reason. Deployers only.

Whoever is refused sees the reason. `/uat unlock` lifts it.
"""

from __future__ import annotations

import argparse

from bot.slack import slack_ui
from bot.slack.context import CommandContext

NAME = "lock"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reason", nargs="+", help="why, shown to whoever is refused")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer("lock image operations")
    reason = " ".join(args.reason)
    await ctx.pipeline.freeze(ctx.user_id, reason)
    await ctx.reply(slack_ui.frozen(ctx.user_id, reason), in_channel=True)
