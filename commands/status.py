"""Active environments, or one PR's in detail: ECS state and the container's health and version.

`/uat status` lists them all; `/uat status PR-123` (or `#123`, `owner/repo#123`) shows one.
"""

from __future__ import annotations

import argparse
import asyncio

from bot.environments import ACTIVE
from bot.slack import slack_ui
from bot.slack.context import CommandContext

NAME = "status"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pr", nargs="?", metavar="PR", help="PR-123, #123, 123 or owner/repo#123")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    environments = ctx.environments
    now = environments.clock()
    if not args.pr:
        envs = await ctx.services.store.list_environments(ACTIVE)
        pool = slack_ui.pool_line(await environments.pool.counts(), ctx.settings.warm_pool)
        text, blocks = slack_ui.environments_overview(envs, ctx.settings, now, pool)
        await ctx.reply(text, blocks)
        return
    env = await environments.find(args.pr)
    task = None
    if env.task_arn:
        task = (await environments.ecs.describe([env.task_arn])).get(env.task_arn)
    probes: dict[str, object] = {}
    if task is not None and task.last_status == "RUNNING":
        paths = ("health", "version", "status")
        answers = await asyncio.gather(*(environments.probe(env, task, p) for p in paths))
        probes = dict(zip(paths, answers, strict=True))
    text, blocks = slack_ui.environment_detail(env, task, probes, ctx.settings, now)
    await ctx.reply(text, blocks)
