"""Ack latency of a signed `/uat help` through the real bot vs a bare Bolt app that only acks.

Both apps run in one server subprocess (`python -m bench.ack_latency --serve`), each on its own
127.0.0.1 port behind `web.AppRunner`, with the same signing secret and the same Slack Web API
stub (tests/slack_stub.py) as SLACK_API_URL:

* bot:  `create_web_app(build_runtime(load_settings(bot_env(...))))`, as tests/conftest.py does;
* bare: a Bolt `AsyncApp` whose only listener acks `/uat`, behind the same aiohttp adapter
  (`to_bolt_request` / `async_dispatch` / `to_aiohttp_response`) on `/slack/events`.

The client (one aiohttp ClientSession, every request freshly signed) runs in this process, so
client and servers do not share an event loop; on a machine with two or more CPUs the client
and the server process are pinned to different CPUs. Latency is measured from just before the
POST to the end of reading the response body. Sequential requests alternate between the apps;
the concurrent ones run in rounds that alternate. Both apps leave Bolt's default
`process_before_response=False`, so both answer through its 10 ms ack() poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bench import Row, fmt_ms, percentile, ratio

ROOT = Path(__file__).resolve().parents[1]

SEQUENTIAL = 200
CONCURRENT_TOTAL = 2000
CONCURRENCY = 50
CONCURRENT_ROUNDS = 8
WARMUP_SEQUENTIAL = 20
WARMUP_CONCURRENT = 200


# ------------------------------------------------------------------------------ server side


def bare_web_app(signing_secret: str, token: str, api_url: str) -> web.Application:
    """A Bolt app that only acks `/uat`, served the way bot/server.py serves the real one."""
    bolt = AsyncApp(
        client=AsyncWebClient(token=token, base_url=api_url),
        signing_secret=signing_secret,
        raise_error_for_unhandled_request=False,
        process_before_response=False,
    )

    @bolt.command("/uat")
    async def on_uat(ack: AsyncAck) -> None:
        await ack()

    async def slack_events(request: web.Request) -> web.Response:
        bolt_request = await to_bolt_request(request)
        bolt_response = await bolt.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    app = web.Application(client_max_size=25 * 1024 * 1024)
    app.router.add_post("/slack/events", slack_events)
    return app


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/slack/events"


async def _serve() -> None:
    from bot.app import build_runtime
    from bot.config import load_settings
    from bot.server import create_web_app
    from tests.conftest import BOT_TOKEN, SIGNING_SECRET, bot_env
    from tests.slack_stub import SlackStub

    with tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp:
        async with SlackStub(token=BOT_TOKEN) as stub:
            runtime = build_runtime(load_settings(bot_env(stub, Path(tmp))))
            bot_runner, bot_url = await _start(create_web_app(runtime))
            bare_runner, bare_url = await _start(
                bare_web_app(SIGNING_SECRET, BOT_TOKEN, stub.api_url)
            )
            ready = {"bot": bot_url, "bare": bare_url, "response_url": stub.new_response_url()}
            print(json.dumps(ready), flush=True)
            try:
                # Serve until the parent closes our stdin.
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            finally:
                await bare_runner.cleanup()
                await bot_runner.cleanup()
            calls: dict[str, int] = {}
            for call in stub.calls:
                calls[call.method] = calls.get(call.method, 0) + 1
            print(json.dumps({"stub_calls": calls}), flush=True)


# ------------------------------------------------------------------------------ client side


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@contextlib.contextmanager
def _server() -> Iterator[tuple[dict[str, str], subprocess.Popen[str], list[int]]]:
    cpus = _cpus()
    pinned = len(cpus) >= 2
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.ack_latency", "--serve"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    previous = set(cpus)
    try:
        if pinned:
            os.sched_setaffinity(process.pid, {cpus[1]})
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the server process exited with {process.wait(10)}")
        if pinned:
            os.sched_setaffinity(0, {cpus[0]})
        yield json.loads(line), process, cpus[:2] if pinned else []
    finally:
        if pinned:
            os.sched_setaffinity(0, previous)
        if process.poll() is None:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Client:
    """Posts freshly signed `/uat help` slash commands and times each answer."""

    def __init__(self, session: aiohttp.ClientSession, response_url: str) -> None:
        from tests.conftest import CHANNEL, DEVELOPER, SIGNING_SECRET
        from tests.signing import slack_headers, slash_command_body

        self._session = session
        self._response_url = response_url
        self._secret = SIGNING_SECRET
        self._channel = CHANNEL
        self._user = DEVELOPER
        self._headers = slack_headers
        self._body = slash_command_body

    async def once(self, url: str, expect: bytes | None) -> float:
        body = self._body(
            "help", user_id=self._user, channel_id=self._channel, response_url=self._response_url
        )
        headers = self._headers(self._secret, body)
        started = time.perf_counter()
        async with self._session.post(url, data=body, headers=headers) as response:
            answer = await response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200 or (expect is not None and expect not in answer):
            raise RuntimeError(f"{url} answered {response.status}: {answer[:200]!r}")
        return elapsed

    async def concurrent(
        self, url: str, expect: bytes | None, total: int, concurrency: int
    ) -> tuple[list[float], float]:
        latencies: list[float] = []
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latencies.append(await self.once(url, expect))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


async def _measure(urls: dict[str, str]) -> dict[str, Any]:
    from bot import slack_ui

    expect = {"bot": slack_ui.HELP_HEADER.encode(), "bare": None}
    connector = aiohttp.TCPConnector(limit=4 * CONCURRENCY, keepalive_timeout=300)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = Client(session, urls["response_url"])
        # Warm-up: the first request of each app does auth.test against the stub; the bursts
        # fill the connection pool so the concurrent runs do not pay for TCP connects.
        for _ in range(WARMUP_SEQUENTIAL):
            for app in ("bot", "bare"):
                await client.once(urls[app], expect[app])
        for app in ("bot", "bare"):
            await client.concurrent(urls[app], expect[app], WARMUP_CONCURRENT, CONCURRENCY)

        sequential: dict[str, list[float]] = {"bot": [], "bare": []}
        for i in range(SEQUENTIAL):  # interleaved, the order flipped every request
            for app in ("bot", "bare") if i % 2 == 0 else ("bare", "bot"):
                sequential[app].append(await client.once(urls[app], expect[app]))

        # Rounds alternate between the apps (order flipped each round), so drift and whatever
        # else the machine is doing weigh on both alike.
        concurrent: dict[str, list[float]] = {"bot": [], "bare": []}
        elapsed = {"bot": 0.0, "bare": 0.0}
        for i in range(CONCURRENT_ROUNDS):
            for app in ("bare", "bot") if i % 2 == 0 else ("bot", "bare"):
                latencies, seconds = await client.concurrent(
                    urls[app], expect[app], CONCURRENT_TOTAL // CONCURRENT_ROUNDS, CONCURRENCY
                )
                concurrent[app] += latencies
                elapsed[app] += seconds
    return {"sequential": sequential, "concurrent": concurrent, "elapsed": elapsed}


def _row(name: str, bot: float, bare: float, note: str = "") -> Row:
    return Row(name, fmt_ms(bot), fmt_ms(bare), ratio(bot, bare), note)


def run() -> list[Row]:
    with _server() as (urls, process, pinned):
        results = asyncio.run(_measure(urls))
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        stats = json.loads(process.stdout.readline() or "{}")
    seq, conc, elapsed = results["sequential"], results["concurrent"], results["elapsed"]
    calls = stats.get("stub_calls", {})
    stub_note = ", ".join(f"{method} x{n}" for method, n in sorted(calls.items())) or "none"
    placement = (
        f"client on cpu {pinned[0]}, servers on cpu {pinned[1]}"
        if pinned
        else "client and servers unpinned"
    )
    rps = {app: CONCURRENT_TOTAL / elapsed[app] for app in elapsed}
    title = "ack /uat help"
    return [
        _row(
            f"{title} sequential median",
            percentile(seq["bot"], 50),
            percentile(seq["bare"], 50),
            f"bot vs bare Bolt ack-only app; n={SEQUENTIAL} each, interleaved; {placement}",
        ),
        _row(
            f"{title} sequential p99",
            percentile(seq["bot"], 99),
            percentile(seq["bare"], 99),
            f"Slack stub calls during the run: {stub_note}",
        ),
        _row(
            f"{title} concurrent({CONCURRENCY}) p50",
            percentile(conc["bot"], 50),
            percentile(conc["bare"], 50),
            f"n={CONCURRENT_TOTAL} each in {CONCURRENT_ROUNDS} alternating rounds; "
            f"throughput bot {rps['bot']:.0f} req/s, bare {rps['bare']:.0f} req/s",
        ),
        _row(
            f"{title} concurrent({CONCURRENCY}) p99",
            percentile(conc["bot"], 99),
            percentile(conc["bare"], 99),
            "both ride Bolt's 10 ms ack() poll (slack_bolt listener/asyncio_runner.py)",
        ),
    ]


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    asyncio.run(_serve())
