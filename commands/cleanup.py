"""Remove what no environment owns: tasks, revisions, ALB routing; asks first. Deployers only.

Shows what it would remove and asks to confirm. Tasks are those tagged with this installation
(UAT_INSTANCE) that no active environment owns: a running task the bot can adopt is adopted
instead, so these are the ones it could not adopt. Task-definition revisions of the bot's own
family that no live task uses are deregistered, and target groups / listener rules of sessions
no live task runs are deleted. `--dry-run` only lists them.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot.environments.reconcile import fingerprint
from bot.slack import action_ids, slack_ui
from bot.slack.cards import card_value, claim_card, field
from bot.slack.context import CommandContext

NAME = "cleanup"
ACTION = "clean up"
TERMINAL_HELP = """Lists what it would remove and asks for confirmation first (--yes answers it;
--dry-run only lists). Tasks of another installation (UAT_INSTANCE) are never listed."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="only list what would be removed")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer(ACTION)
    leftovers = await ctx.environments.leftovers()
    if args.dry_run:
        await ctx.reply(*slack_ui.cleanup_report(leftovers, dry_run=True))
        return
    await ctx.reply(*slack_ui.cleanup_confirm(leftovers, card_value(shown=fingerprint(leftovers))))


async def confirm(ctx: CommandContext, value: dict[str, Any]) -> None:
    ctx.require_deployer(ACTION)
    shown = field(value, "shown", str)
    if not await claim_card(ctx, value, "cleanup"):
        return
    removed = await ctx.environments.cleanup(expected=shown)
    if removed is None:  # not what the card showed: show what it is now, to confirm afresh
        leftovers = await ctx.environments.leftovers()
        text, blocks = slack_ui.cleanup_confirm(leftovers, card_value(shown=fingerprint(leftovers)))
        await ctx.reply(
            f"{slack_ui.CLEANUP_CHANGED}\n{text}",
            [slack_ui.text_block(slack_ui.CLEANUP_CHANGED), *blocks],
            replace_original=True,
        )
        return
    await ctx.reply(*slack_ui.cleanup_report(removed, dry_run=False), replace_original=True)


ACTIONS = {action_ids.CLEANUP_CONFIRM: confirm}
