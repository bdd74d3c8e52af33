"""Replace a PR's environment with a fresh task (same label; the image is resolved again).

Prompts still queued in the old container go to the new one, in order, once it is ready; the
PR's thread says which were dropped (one that was running) and why.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot.errors import UserError
from bot.slack import action_ids, slack_ui
from bot.slack.cards import claim_card, field
from bot.slack.context import CommandContext
from bot.store import Environment

NAME = "restart"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pr", metavar="PR", help="PR-123, #123, 123 or owner/repo#123")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    await ctx.require_changer()
    env = await ctx.environments.find(args.pr)
    await _restart(ctx, env)


async def _restart(ctx: CommandContext, env: Environment) -> None:
    """Take the old container's queued prompts along, then replace the task."""
    if not slack_ui.restartable(env):
        raise UserError(slack_ui.not_running(env.repo, env.pr))
    await ctx.point_of_no_return()  # a second restart would replace the new task too
    await ctx.services.prompts.carry_over(env)
    await ctx.environments.restart(env.repo, env.pr, ctx.user_id, asked_at=ctx.received_at)
    await ctx.reply(slack_ui.restarting(env))


async def on_click(ctx: CommandContext, value: dict[str, Any]) -> None:
    repo, pr = field(value, "repo", str), field(value, "pr", int)
    await ctx.require_changer()
    if await claim_card(ctx, value, "restart"):
        await _restart(ctx, await ctx.environments.find(f"{repo}#{pr}"))


ACTIONS = {action_ids.ENV_RESTART: on_click}
