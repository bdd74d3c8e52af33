"""Postpone a PR environment's idle stop (by UAT_IDLE_HOURS, or the hours you give)."""

from __future__ import annotations

import argparse
from typing import Any

from bot import slack_ui
from bot.cards import claim_card, field
from bot.context import CommandContext

NAME = "extend"
MAX_HOURS = 72.0


def _hours(text: str) -> float:
    value = float(text)
    if not 0 < value <= MAX_HOURS:
        raise ValueError
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pr", metavar="PR", help="PR-123, #123, 123 or owner/repo#123")
    parser.add_argument("hours", nargs="?", type=_hours, help=f"up to {MAX_HOURS:g}")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    env = await ctx.environments.find(args.pr)
    hours = args.hours or ctx.settings.uat_idle_hours
    saved = await ctx.environments.extend(env.repo, env.pr, hours)
    await ctx.reply(slack_ui.extended(saved))


async def on_click(ctx: CommandContext, value: dict[str, Any]) -> None:
    repo, pr = field(value, "repo", str), field(value, "pr", int)
    if await claim_card(ctx, value, "extend"):
        hours = ctx.settings.uat_idle_hours
        saved = await ctx.environments.extend(repo, pr, hours)
        await ctx.reply(slack_ui.extended(saved))


ACTIONS = {"uat.env.extend": on_click}
