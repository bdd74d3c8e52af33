"""A signed ack's p99 and the process's RSS while 50 hostile senders hold connections open, vs
the same bot with no hostile traffic; all on 127.0.0.1, in one process.

The hostile senders, 50 at once and each starting again as soon as it is refused or cut off:
half stream a chunked body past SLACK_MAX_BODY as fast as they can (refused with 413 while
streaming), half announce a body within the limit and then trickle it a byte at a time (cut off
by BODY_DEADLINE). Meanwhile 200 sequential signed `/uat help` requests are timed, as in the
quiet baseline before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from bench import Row, compared, met, percentile
from bot import guard
from bot.app import build_runtime
from bot.config import load_settings
from bot.server import create_web_app
from tests.harness.bot import BOT_TOKEN, SIGNING_SECRET, bot_env
from tests.harness.signing import slack_headers, slash_command_body
from tests.harness.slack_stub import SlackStub

REQUESTS = 200
HOSTILE = 50
CHUNK = b"a" * 65536


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


Sender = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def again_and_again(host: str, port: int, head: bytes, send: Sender) -> None:
    """Connect, send `head`, let `send` do the rest; then the same on a new connection."""
    while True:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(head)
            try:
                await send(reader, writer)
            finally:
                writer.close()


async def flood(host: str, port: int) -> None:
    """Stream a chunked body past the limit, again and again."""

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(guard.SLACK_MAX_BODY // len(CHUNK) + 2):
            writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            await writer.drain()
        await reader.read()

    head = b"POST /slack/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    await again_and_again(host, port, head, send)


async def trickle(host: str, port: int) -> None:
    """Announce a body within the limit, then send it a byte at a time."""

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            writer.write(b"a")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(), 0.1)

    head = b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
        guard.SLACK_MAX_BODY
    )
    await again_and_again(host, port, head, send)


async def acks(http: aiohttp.ClientSession, url: str, stub: SlackStub) -> list[float]:
    times = []
    for _ in range(REQUESTS):
        body = slash_command_body("help", response_url=stub.new_response_url())
        started = time.perf_counter()
        async with http.post(url, data=body, headers=slack_headers(SIGNING_SECRET, body)) as r:
            await r.read()
            assert r.status == 200
        times.append(time.perf_counter() - started)
    return times


async def measure() -> tuple[list[float], list[float], float, float]:
    async with SlackStub(token=BOT_TOKEN) as stub:
        with tempfile.TemporaryDirectory() as tmp:
            runner = web.AppRunner(
                create_web_app(build_runtime(load_settings(bot_env(stub, Path(tmp))))),
                access_log=None,
            )
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}/slack/events"
            async with aiohttp.ClientSession() as http:
                await acks(http, url, stub)  # warm up
                quiet = await acks(http, url, stub)
                rss_quiet = rss_mib()
                senders = [
                    asyncio.create_task((flood if i % 2 else trickle)(host, port))
                    for i in range(HOSTILE)
                ]
                await asyncio.sleep(1)
                hostile = await acks(http, url, stub)
                rss_hostile = rss_mib()
                for sender in senders:
                    sender.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
            await runner.cleanup()
    assert urlsplit(url).hostname == "127.0.0.1"
    return hostile, quiet, rss_hostile, rss_quiet


def run() -> list[Row]:
    hostile, quiet, rss_hostile, rss_quiet = asyncio.run(measure())
    p99, p99_quiet = percentile(hostile, 99), percentile(quiet, 99)
    grown = rss_hostile - rss_quiet
    return [
        compared(
            f"ack /uat help p99 under {HOSTILE} hostile bodies",
            p99,
            p99_quiet,
            f"goal: under Slack's 3 s; met: {met(p99 < 3)}; n={REQUESTS} sequential each, the "
            "baseline with no hostile traffic; senders in the same process",
        ),
        compared(
            f"RSS under {HOSTILE} hostile bodies",
            rss_hostile,
            rss_quiet,
            f"goal: grows by less than {HOSTILE} x 1 MiB (the bodies are never held past their "
            f"limit); met: {met(grown < HOSTILE)}; grew {grown:.1f} MiB",
            fmt=lambda mib: f"{mib:.1f} MiB",
        ),
    ]
