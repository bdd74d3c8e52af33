"""Replace a PR's environment with a fresh task (same label; the image is resolved again)."""

from __future__ import annotations

import argparse
from typing import Any

from bot import slack_ui
from bot.cards import claim_card, field
from bot.context import CommandContext

NAME = "restart"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pr", metavar="PR", help="PR-123, #123, 123 or owner/repo#123")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    env = await ctx.environments.find(args.pr)
    await ctx.environments.restart(env.repo, env.pr, ctx.user_id)
    await ctx.reply(slack_ui.restarting(env))


async def on_click(ctx: CommandContext, value: dict[str, Any]) -> None:
    repo, pr = field(value, "repo", str), field(value, "pr", int)
    if await claim_card(ctx, value, "restart"):
        await ctx.environments.restart(repo, pr, ctx.user_id)
        env = await ctx.environments.find(f"{repo}#{pr}")
        await ctx.reply(slack_ui.restarting(env))


ACTIONS = {"uat.env.restart": on_click}
