"""Postpone a PR environment's idle stop (by UAT_IDLE_HOURS, or the hours you give).

`/uat extend PR-123 4` keeps PR-123's environment for 4 more hours of idleness; hours are 1 to 72.
An extend never brings the idle stop earlier: when it is already later, it stays (and I say so).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from bot.errors import UserError
from bot.slack import action_ids, slack_ui
from bot.slack.cards import claim_card, field
from bot.slack.context import CommandContext

NAME = "extend"
MIN_HOURS = 1.0
MAX_HOURS = 72.0  # three days: longer than a weekend, short of forgetting it exists


def hours(text: str) -> float:
    """The hours a person gave, or a UserError saying the allowed range (answered at once:
    argparse lets it through, and the dispatcher shows it as written)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not MIN_HOURS <= value <= MAX_HOURS:  # NaN fails every comparison
        raise UserError(slack_ui.bad_hours(text, MIN_HOURS, MAX_HOURS))
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pr", metavar="PR", help="PR-123, #123, 123 or owner/repo#123")
    parser.add_argument("hours", nargs="?", type=hours, help=f"{MIN_HOURS:g} to {MAX_HOURS:g}")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    await ctx.require_changer()
    wanted = args.hours or ctx.settings.uat_idle_hours
    env = await ctx.environments.find(args.pr)
    await _extend(ctx, env.repo, env.pr, wanted)


async def _extend(ctx: CommandContext, repo: str, pr: int, wanted: float) -> None:
    saved, moved = await ctx.environments.extend(repo, pr, wanted)
    await ctx.reply(slack_ui.extended(saved) if moved else slack_ui.extend_kept(saved, wanted))


async def on_click(ctx: CommandContext, value: dict[str, Any]) -> None:
    repo, pr = field(value, "repo", str), field(value, "pr", int)
    await ctx.require_changer()
    if await claim_card(ctx, value, "extend"):
        await _extend(ctx, repo, pr, ctx.settings.uat_idle_hours)


ACTIONS = {action_ids.ENV_EXTEND: on_click}
