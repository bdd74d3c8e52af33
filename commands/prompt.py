"""Ask the coding agent in a PR's container to do something; the result lands in the PR's thread.

`/uat prompt PR-123 add a dark mode toggle` — the text is taken as written (no quoting needed).
`/uat prompt PR-123 --cancel <job>` (or `/uat prompt --cancel <job> PR-123`) cancels a queued or
running prompt; its result then says who cancelled it.
The PR can be named as `PR-123`, `#123`, `123`, `owner/repo#123` or its pasted link.
A plain reply in the PR's thread does the same as `/uat prompt`.
A long result comes with the agent's whole output as a file in the thread.
"""

from __future__ import annotations

import argparse
from typing import Any

from bot.slack import action_ids, slack_ui
from bot.slack.cards import claim_card, field
from bot.slack.context import CommandContext

NAME = "prompt"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pr", metavar="PR", help="PR-123, #123, 123 or owner/repo#123")
    parser.add_argument("text", nargs="?", default="", help="what the agent should do")
    parser.add_argument("--cancel", metavar="JOB", help="cancel that prompt instead")


def split(text: str) -> list[str]:
    """The PR, then the prose exactly as typed (apostrophes and all), or `--cancel JOB` (before
    or after the PR)."""
    if text.strip().startswith("--cancel"):
        return text.split()
    pr, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    if rest.startswith("--cancel"):
        return [pr, *rest.split()]
    return [pr, "--", rest] if rest else [pr] if pr else []


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    env = await ctx.environments.find(args.pr)
    if args.cancel:
        await ctx.require_changer(await ctx.services.prompts.author(env, args.cancel))
        await ctx.services.prompts.cancel(env, args.cancel, ctx.user_id)
        await ctx.reply(slack_ui.prompt_cancelled(args.cancel))
        return
    await ctx.require_changer()
    await ctx.point_of_no_return()  # a second send would run the prompt twice
    queued = await ctx.services.prompts.submit(env, args.text, ctx.user_id)
    await ctx.reply(slack_ui.prompt_answer(queued.job_id, queued.position))


async def cancel_click(ctx: CommandContext, value: dict[str, Any]) -> None:
    repo, pr, job = field(value, "repo", str), field(value, "pr", int), field(value, "job", str)
    env = await ctx.environments.find(f"{repo}#{pr}")
    await ctx.require_changer(await ctx.services.prompts.author(env, job))
    if not await claim_card(ctx, value, "cancel prompt"):
        return
    await ctx.services.prompts.cancel(env, job, ctx.user_id)
    await ctx.reply(slack_ui.prompt_cancelled(job))


ACTIONS = {action_ids.PROMPT_CANCEL: cancel_click}
