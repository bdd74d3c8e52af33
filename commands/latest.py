"""Emergency hotfix: build a git ref and push it straight to :latest (and :<sha>). Deployers only.

Asks for confirmation first. The sha tag lets you `/uat rollback` it like any other image.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot.errors import ReplacingError, UserError
from bot.slack import action_ids, slack_ui
from bot.slack.build_progress import run_build
from bot.slack.cards import card_value, claim_card, field
from bot.slack.context import CommandContext

NAME = "latest"
ACTION = "build straight to :latest"
TERMINAL_HELP = """Asks for confirmation first (--yes answers it). The sha tag lets you
`uat-bot rollback` it like any other image."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ref", nargs="?", help="branch, tag or commit sha (default: UAT_SOURCE_REF)"
    )


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer(ACTION)
    ref = args.ref or ctx.settings.uat_source_ref
    await ctx.pipeline.check_unlocked(ctx.user_id, f"build :latest from {ref}")
    latest = await ctx.pipeline.ecr.describe("latest") if ctx.pipeline.tags_in_ecr else None
    text, blocks = slack_ui.confirm_card(
        f"Build `{ref}` and push it straight to :latest?",
        [slack_ui.image_line(":latest now", latest), "This skips :staging. It is for emergencies."],
        action_ids.LATEST_CONFIRM,
        card_value(ref=ref),
        "Build to :latest",
    )
    await ctx.reply(text, blocks)


async def confirm(ctx: CommandContext, value: dict[str, Any]) -> None:
    ctx.require_deployer(ACTION)
    ref = field(value, "ref", str)
    await ctx.pipeline.check_unlocked(ctx.user_id, f"build :latest from {ref}")
    if not await claim_card(ctx, value, "latest"):
        return
    await ctx.reply(slack_ui.build_confirmed(ref, "latest"), replace_original=True)
    try:
        await run_build(ctx, ref, "latest")
    except UserError as exc:  # refused before it started: the card says so, not "confirmed"
        raise ReplacingError(str(exc)) from exc


ACTIONS = {action_ids.LATEST_CONFIRM: confirm}
