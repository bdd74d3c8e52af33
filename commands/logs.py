"""A PR container's last log lines (CloudWatch Logs), posted in the PR's thread.

`/uat logs PR-123` shows the last 50 lines; `--lines N` (1 to 500) more or fewer, `--since 10m`
only those of the last 10 minutes (s, m, h or d), `--grep TEXT` only lines containing TEXT.
A stopped task's log is there while its stream exists. Longer output comes as a file.
It changes nothing, so anyone in the channel may ask; the card's Logs button does the same.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from bot.errors import UserError
from bot.slack import action_ids, slack_ui
from bot.slack.cards import field
from bot.slack.chat import Message, Upload
from bot.slack.context import CommandContext
from bot.store import Environment

NAME = "logs"
TERMINAL_HELP = (
    "Prints the container's last log lines (CloudWatch Logs) in the terminal; `--follow` "
    "keeps printing new ones until Ctrl-C."
)
SINCE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def line_count(text: str) -> int:
    """The lines asked for, or a UserError saying the range (answered at once)."""
    most = slack_ui.LOGS_MAX_LINES
    if not text.strip().isdigit() or not 1 <= int(text) <= most:
        raise UserError(slack_ui.bad_lines(text, most))
    return int(text)


def since_seconds(text: str) -> float:
    """`10m` as 600 seconds, or a UserError saying how to write it."""
    match = SINCE.match(text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise UserError(slack_ui.bad_since(text))
    return float(match.group(1)) * UNIT_S[match.group(2)]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pr", metavar="PR", help="PR-123, #123, 123 or owner/repo#123")
    parser.add_argument(
        "--lines",
        type=line_count,
        default=slack_ui.LOGS_DEFAULT_LINES,
        help=f"how many (1 to {slack_ui.LOGS_MAX_LINES})",
    )
    parser.add_argument("--since", type=str, help="only the last 10m, 2h, 1d …")
    parser.add_argument("--grep", metavar="TEXT", help="only lines containing TEXT")


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    since = args.since
    if since is not None:
        since_seconds(since)  # a bad one is said before anything is read
    env = await ctx.environments.find(args.pr)
    await show(ctx, env, args.lines, since, args.grep or None)


async def show(
    ctx: CommandContext, env: Environment, lines: int, since: str | None, grep: str | None
) -> None:
    """Read the lines and post them in the PR's thread (or answer with them, without one)."""
    start = time.time() - since_seconds(since) if since else None
    tail = await ctx.environments.read_logs(env, lines, since=start, grep=grep)
    if not tail.lines:
        await ctx.reply(slack_ui.no_log_lines(env, since, grep))
        return
    channel = ctx.settings.uat_channel
    if not (channel and env.thread_ts):  # nowhere to post: the answer carries them
        fitting = slack_ui.last_fitting(tail.lines, slack_ui.LOGS_IN_MESSAGE)
        await ctx.reply(*slack_ui.logs_message(env, fitting, since, grep, ctx.user_id))
        return
    chat = ctx.services.chat
    if slack_ui.logs_fit(tail.lines):
        text, blocks = slack_ui.logs_message(env, tail.lines, since, grep, ctx.user_id)
        await chat.post(Message(channel, text, blocks, env.thread_ts))
    else:
        content = slack_ui.logs_file(env, tail.place.stream, tail.lines)
        await chat.upload(
            Upload(
                channel,
                env.thread_ts,
                slack_ui.logs_file_name(env, time.time()),
                content,
                slack_ui.logs_title(env, len(tail.lines), since, grep),
                slack_ui.logs_file_comment(env, len(tail.lines), since, grep),
            )
        )
    await ctx.reply(slack_ui.logs_posted(env, len(tail.lines)))


async def on_click(ctx: CommandContext, value: dict[str, Any]) -> None:
    """The card's Logs button: the last 50 lines, for anyone (it changes nothing)."""
    repo, pr = field(value, "repo", str), field(value, "pr", int)
    env = await ctx.environments.find(f"{repo}#{pr}")
    await show(ctx, env, slack_ui.LOGS_DEFAULT_LINES, None, None)


ACTIONS = {action_ids.ENV_LOGS: on_click}
