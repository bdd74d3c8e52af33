"""Build the UAT image at a git ref and push it as :staging and :<sha>.

The ref defaults to UAT_SOURCE_REF. Progress shows in one message in this channel.
Try it on a PR with the `uat-staging` label, then `/uat promote`.
"""

from __future__ import annotations

import argparse

from bot.builds import run_build
from bot.context import CommandContext

NAME = "staging"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ref", nargs="?", help="branch, tag or commit sha (default: UAT_SOURCE_REF)"
    )


def ack(args: argparse.Namespace) -> str | None:
    return f"Building `{args.ref or 'the default branch'}` for `:staging` …"


async def run(ctx: CommandContext, args: argparse.Namespace) -> None:
    await run_build(ctx, args.ref, "staging")
