"""Roll :latest back to a known-good image by its sha tag. Deployers only.

Without a sha, pick from the recent images; with one, confirm and re-tag it as :latest.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot.commands.promote import announce_retag, retag_in_place

from bot.slack import action_ids, slack_ui
from bot.slack.cards import card_value, claim_card, field
from bot.slack.context import CommandContext

NAME = "rollback"
ACTION = "roll back"
TERMINAL_HELP = """Without a sha, lists the recent sha images (digest, date, which is live) to pick
from; with one, shows it, asks to confirm (--yes answers it) and re-tags it as :latest."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sha", nargs="?", help="the sha tag to go back to (7-40 hex characters)")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer(ACTION)
    await ctx.pipeline.check_unlocked(ctx.user_id, f"rollback to {args.sha}" if args.sha else NAME)
    if args.sha:
        await confirm_card(ctx, args.sha)
        return
    overview = await ctx.pipeline.rollback_choices(ctx.user_id)
    live = overview.latest.digest if overview.latest else None
    text, blocks = slack_ui.rollback_picker(overview.recent, live, lambda sha: card_value(sha=sha))
    await ctx.reply(text, blocks)


async def confirm_card(ctx: CommandContext, sha: str, replace: bool = False) -> None:
    image, latest = await ctx.pipeline.rollback_plan(ctx.user_id, sha)
    tag = image.sha_tags[0]
    text, blocks = slack_ui.confirm_card(
        f"Roll :latest back to `{tag}`?",
        [slack_ui.image_line(":latest now", latest), slack_ui.image_line(f"`{tag}`", image)],
        action_ids.ROLLBACK_CONFIRM,
        card_value(sha=tag, digest=image.digest),
        "Roll back",
    )
    await ctx.reply(text, blocks, replace_original=replace)


async def _clicked_sha(ctx: CommandContext, value: dict[str, Any]) -> str:
    """The commit a rollback card's button names, once the clicker may roll back to it now."""
    ctx.require_deployer(ACTION)
    sha = field(value, "sha", str)
    await ctx.pipeline.check_unlocked(ctx.user_id, f"rollback to {sha}")
    return sha


async def pick(ctx: CommandContext, value: dict[str, Any]) -> None:
    sha = await _clicked_sha(ctx, value)
    if await claim_card(ctx, value, "rollback.pick"):
        await confirm_card(ctx, sha, replace=True)


async def confirm(ctx: CommandContext, value: dict[str, Any]) -> None:
    sha = await _clicked_sha(ctx, value)
    if not await claim_card(ctx, value, "rollback"):
        return
    await retag_in_place(
        ctx,
        slack_ui.rolling_back(sha),
        lambda started: ctx.pipeline.rollback(ctx.user_id, sha, started),
    )


async def undo(ctx: CommandContext, value: dict[str, Any]) -> None:
    ctx.require_deployer("undo a change of :latest")
    digest = field(value, "digest", str)
    await ctx.pipeline.check_unlocked(ctx.user_id, "undo")  # the Undo stays for later
    if not await claim_card(ctx, value, "undo"):
        return
    result = await ctx.pipeline.undo(ctx.user_id, digest, expected_latest=value.get("latest"))
    await announce_retag(ctx, result)


ACTIONS = {
    action_ids.ROLLBACK_PICK: pick,
    action_ids.ROLLBACK_CONFIRM: confirm,
    action_ids.UNDO: undo,
}
