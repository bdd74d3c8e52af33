"""Roll :latest back to a known-good image by its sha tag. Deployers only.

Without a sha, pick from the recent images; with one, confirm and re-tag it as :latest.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot import slack_ui
from bot.cards import card_value, claim_card, field
from bot.context import CommandContext
from bot.errors import UserError
from bot.pipeline import SHA
from commands.promote import announce_retag

NAME = "rollback"
ACTION = "roll back"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sha", nargs="?", help="the sha tag to go back to (7-40 hex characters)")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer(ACTION)
    if args.sha:
        await confirm_card(ctx, args.sha)
        return
    overview = await ctx.pipeline.overview(recent=10)
    live = overview.latest.digest if overview.latest else None
    text, blocks = slack_ui.rollback_picker(overview.recent, live, lambda sha: card_value(sha=sha))
    await ctx.reply(text, blocks)


async def confirm_card(ctx: CommandContext, sha: str, replace: bool = False) -> None:
    if not SHA.match(sha.lower()):
        raise UserError(slack_ui.bad_sha(sha))
    image = await ctx.pipeline.find_sha(sha)
    latest = await ctx.pipeline.ecr.describe("latest")
    tag = image.sha_tags[0]
    text, blocks = slack_ui.confirm_card(
        f"Roll :latest back to `{tag}`?",
        [slack_ui.image_line(":latest now", latest), slack_ui.image_line(f"`{tag}`", image)],
        "uat.rollback.confirm",
        card_value(sha=tag, digest=image.digest),
        "Roll back",
    )
    await ctx.reply(text, blocks, replace_original=replace)


async def pick(ctx: CommandContext, value: dict[str, Any]) -> None:
    ctx.require_deployer(ACTION)
    sha = field(value, "sha", str)
    if await claim_card(ctx, value, "rollback.pick"):
        await confirm_card(ctx, sha, replace=True)


async def confirm(ctx: CommandContext, value: dict[str, Any]) -> None:
    ctx.require_deployer(ACTION)
    sha = field(value, "sha", str)
    if not await claim_card(ctx, value, "rollback"):
        return
    await ctx.reply(f"Rolling :latest back to `{sha}` …", replace_original=True)
    await announce_retag(ctx, await ctx.pipeline.rollback(ctx.user_id, sha))


async def undo(ctx: CommandContext, value: dict[str, Any]) -> None:
    ctx.require_deployer("undo a change of :latest")
    digest = field(value, "digest", str)
    if not await claim_card(ctx, value, "undo"):
        return
    result = await ctx.pipeline.undo(ctx.user_id, digest, expected_latest=value.get("latest"))
    await announce_retag(ctx, result)


ACTIONS = {"uat.rollback.pick": pick, "uat.rollback.confirm": confirm, "uat.undo": undo}
