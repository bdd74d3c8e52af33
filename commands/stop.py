"""Stop a PR's environment now: its task, its pinned revision and its routing."""

from __future__ import annotations

import argparse

from bot.slack import slack_ui
from bot.slack.context import CommandContext

NAME = "stop"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pr", metavar="PR", help="PR-123, #123, 123 or owner/repo#123")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    await ctx.require_changer()
    env = await ctx.environments.find(args.pr)
    stopped = await ctx.environments.request_stop(
        env.repo, env.pr, "stopped", ctx.user_id, asked_at=ctx.received_at
    )
    if not stopped:
        await ctx.reply(slack_ui.not_running_env(env))
        return
    await ctx.reply(slack_ui.stopping(env))
