"""`uat-bot console`: a local chat shell that runs `/uat` lines through the same dispatcher.

Messages the bot would post to Slack are printed instead; it reads a terminal or a pipe.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import Any, TextIO

from bot import slack_ui
from bot.app import build_runtime
from bot.chat import Blocks
from bot.config import Settings
from bot.context import CommandContext

PROMPT = "uat> "
CONSOLE_USER = "U0CONSOLE"
CONSOLE_CHANNEL = "C0CONSOLE"
GREETING = "uat-bot console. Type /uat help, or quit."


def render(text: str, blocks: Blocks | None) -> str:
    """Block Kit as plain lines: section and context text, buttons as [labels]."""
    if not blocks:
        return slack_ui.plain(text)
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "section" and "text" in block:
            lines.append(block["text"]["text"])
        elif kind == "context":
            lines.extend(e.get("text", "") for e in block.get("elements", []))
        elif kind == "header":
            lines.append(block["text"]["text"].upper())
        elif kind == "actions":
            labels = [e["text"]["text"] for e in block.get("elements", []) if "text" in e]
            lines.append("  ".join(f"[{label}]" for label in labels))
        elif kind == "divider":
            lines.append("---")
    return slack_ui.plain("\n".join(lines))


class ConsoleChat:
    """`Chat` that prints; message timestamps are a counter."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._ts = itertools.count(1)

    def _print(self, prefix: str, text: str, blocks: Blocks | None) -> None:
        body = render(text, blocks).replace("\n", "\n" + " " * len(prefix))
        print(prefix + body, file=self.out, flush=True)

    async def post(
        self, channel: str, text: str, blocks: Blocks | None = None, thread_ts: str | None = None
    ) -> str:
        ts = f"{next(self._ts)}.000000"
        self._print("  ↳ bot: " if thread_ts else "bot: ", text, blocks)
        return ts

    async def update(self, channel: str, ts: str, text: str, blocks: Blocks | None = None) -> None:
        self._print("bot (updated): ", text, blocks)

    async def ephemeral(
        self, channel: str, user: str, text: str, blocks: Blocks | None = None
    ) -> None:
        self._print("bot (only you): ", text, blocks)


async def run_console(settings: Settings, stdin: TextIO, out: TextIO) -> int:
    chat = ConsoleChat(out)
    # the person at the terminal operates this bot: they may do what deployers do
    settings = settings.model_copy(
        update={"uat_deployers": (*settings.uat_deployers, CONSOLE_USER)}
    )
    runtime = build_runtime(settings, chat=chat, with_slack=False)
    await runtime.start()
    interactive = stdin.isatty()
    print(GREETING, file=out, flush=True)
    try:
        while True:
            if interactive:
                print(PROMPT, end="", file=out, flush=True)
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                break
            line = line.strip()
            if line in ("quit", "exit"):
                break
            if not line:
                continue
            if not line.startswith("/uat"):
                print("Lines start with /uat (try /uat help), or quit.", file=out, flush=True)
                continue

            async def reply(text: str, blocks: Blocks | None = None, **_: Any) -> None:
                await chat.ephemeral(CONSOLE_CHANNEL, CONSOLE_USER, text, blocks)

            async def ack(text: str | None) -> None:
                if text:
                    await chat.ephemeral(CONSOLE_CHANNEL, CONSOLE_USER, text)

            ctx = CommandContext(
                services=runtime.services,
                user_id=CONSOLE_USER,
                channel_id=CONSOLE_CHANNEL,
                user_name="you",
                reply=reply,
            )
            await runtime.dispatcher.dispatch(ctx, line.removeprefix("/uat"), ack)
            await runtime.services.tasks.join()
    finally:
        await runtime.stop()
    return 0


def main(settings: Settings) -> int:
    return asyncio.run(run_console(settings, sys.stdin, sys.stdout))
