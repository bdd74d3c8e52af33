"""Build the UAT image at a git ref and push it as :staging and :<sha>.

The ref defaults to UAT_SOURCE_REF. Progress shows in one message in this channel.
Try it on a PR with the `uat-staging` label, then `/uat promote`.
"""

from __future__ import annotations

import argparse

from bot.slack.build_progress import run_build
from bot.slack.context import CommandContext

NAME = "staging"
TERMINAL_HELP = """The ref defaults to UAT_SOURCE_REF. A progress display shows the fetch, the build
and the push. Try it on a PR with the `uat-staging` label, then `uat-bot promote`."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ref", nargs="?", help="branch, tag or commit sha (default: UAT_SOURCE_REF)"
    )


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    # No acknowledgement text: a refusal (locked, another build running) comes first and alone;
    # otherwise the build's one progress message appears in the channel once it holds the lock.
    await run_build(ctx, args.ref, "staging")
