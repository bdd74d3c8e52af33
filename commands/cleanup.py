"""Remove what no active environment owns: tasks, the bot's revisions, ALB routing. Deployers only.

Orphan tasks tagged managed-by=uat-bot are stopped, task-definition revisions of the bot's own
family that no live task uses are deregistered, and target groups / listener rules tagged with a
session nobody runs are deleted. `--dry-run` lists what would go without touching anything.
"""

from __future__ import annotations

import argparse

from bot.slack import slack_ui
from bot.slack.context import CommandContext

NAME = "cleanup"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="only list what would be removed")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer("clean up")
    leftovers = await ctx.environments.cleanup(dry_run=args.dry_run)
    text, blocks = slack_ui.cleanup_report(leftovers, args.dry_run)
    await ctx.reply(text, blocks)
