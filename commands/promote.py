"""Promote :staging to :latest by copying its manifest (no rebuild). Deployers only.

Shows what :latest and :staging are, then asks to confirm. The result has an Undo button.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from bot.errors import ReplacingError, UserError
from bot.images.operations import RetagResult, Started
from bot.slack import action_ids, slack_ui
from bot.slack.cards import card_value, claim_card
from bot.slack.chat import Message
from bot.slack.context import CommandContext

NAME = "promote"
ACTION = "promote"
TERMINAL_HELP = """Shows what :latest and :staging are, then asks to confirm (--yes answers it).
Prints the `uat-bot rollback` command that undoes it."""


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    ctx.require_deployer(ACTION)
    await ctx.pipeline.check_unlocked(ctx.user_id, "promote")
    plan = await ctx.pipeline.promote_plan(ctx.user_id)
    if plan.staging is None:  # promote_plan refuses that already; said the same way here
        raise UserError(slack_ui.NO_STAGING)
    text, blocks = slack_ui.promote_card(
        plan.latest, plan.staging, card_value(digest=plan.staging.digest)
    )
    await ctx.reply(text, blocks)


async def confirm(ctx: CommandContext, value: dict[str, Any]) -> None:
    ctx.require_deployer(ACTION)
    await ctx.pipeline.check_unlocked(ctx.user_id, "promote")  # the card stays for later
    if not await claim_card(ctx, value, "promote"):
        return
    digest = value.get("digest")
    await retag_in_place(
        ctx,
        slack_ui.PROMOTING,
        lambda started: ctx.pipeline.promote(ctx.user_id, digest, started),
    )


async def retag_in_place(
    ctx: CommandContext,
    progress: str,
    operation: Callable[[Started], Awaitable[RetagResult]],
) -> None:
    """A confirmed card's change of :latest: the card becomes `progress` once the lock is taken,
    then the result, or the refusal or failure; never left saying "… ing"."""

    async def started() -> None:
        await ctx.reply(progress, replace_original=True)

    try:
        result = await operation(started)
    except UserError as exc:
        raise ReplacingError(str(exc)) from exc
    await announce_retag(ctx, result, in_place=True)


async def announce_retag(ctx: CommandContext, result: Any, in_place: bool = False) -> None:
    """Say in the channel what happened to :latest, with an Undo button when it moved.

    `in_place`: the asker's progress line is replaced with the outcome too.
    """
    undo = None
    if result.previous is not None:
        undo = card_value(digest=result.previous.digest, latest=result.current.digest)
    text, blocks = slack_ui.retag_done(result, ctx.user_id, undo)
    if result.changed:
        await ctx.services.chat.post(Message(ctx.channel_id, text, blocks))
        if in_place:
            await ctx.reply(slack_ui.RETAG_ANNOUNCED, replace_original=True)
    else:
        await ctx.reply(text, blocks, replace_original=in_place)


ACTIONS = {action_ids.PROMOTE_CONFIRM: confirm}
