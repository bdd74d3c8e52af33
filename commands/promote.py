"""Promote :staging to :latest by copying its manifest (no rebuild). Deployers only.

Shows what :latest and :staging are, then asks to confirm. The result has an Undo button.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot import slack_ui
from bot.cards import card_value, claim_card
from bot.context import CommandContext

NAME = "promote"
ACTION = "promote"


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer(ACTION)
    plan = await ctx.pipeline.promote_plan()
    assert plan.staging is not None
    text, blocks = slack_ui.promote_card(
        plan.latest, plan.staging, card_value(digest=plan.staging.digest)
    )
    await ctx.reply(text, blocks)


async def confirm(ctx: CommandContext, value: dict[str, Any]) -> None:
    ctx.require_deployer(ACTION)
    if not await claim_card(ctx, value, "promote"):
        return
    await ctx.reply("Promoting :staging to :latest …", replace_original=True)
    result = await ctx.pipeline.promote(ctx.user_id, expected_digest=value.get("digest"))
    await announce_retag(ctx, result)


async def announce_retag(ctx: CommandContext, result: Any) -> None:
    """Say in the channel what happened to :latest, with an Undo button when it moved."""
    undo = None
    if result.previous is not None:
        undo = card_value(digest=result.previous.digest, latest=result.current.digest)
    text, blocks = slack_ui.retag_done(result, ctx.user_id, undo)
    if result.changed:
        await ctx.services.chat.post(ctx.channel_id, text, blocks)
    else:
        await ctx.reply(text, blocks)


ACTIONS = {"uat.promote.confirm": confirm}
