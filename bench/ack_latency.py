"""Ack latency of a signed `/uat status` through the real bot vs a bare Bolt app that only acks.

Three processes, all on 127.0.0.1:

* the Slack Web API stub (tests/harness/slack_stub/; `python -m bench.ack_latency --stub`), which
  takes the bot's after-ack `response_url` posts and notes when each arrived. It runs apart
  from the servers so that its Block Kit validation does not land on the servers' CPU;
* the servers (`python -m bench.ack_latency --serve API_URL`): both apps, each on its own port
  behind `web.AppRunner`, with the same signing secret and SLACK_API_URL, plus a control port;
  - bot:  `create_web_app(build_runtime(load_settings(bot_env(...))))`, as tests/conftest.py
    does, its SQLite store seeded with SEEDED environments so `/uat status` has rows to list;
  - bare: a Bolt `AsyncApp` whose only listener acks `/uat`, behind the same aiohttp adapter
    (`to_bolt_request` / `async_dispatch` / `to_aiohttp_response`) on `/slack/events`;
  - the bot's start-up freezes the process's heap (`gc.freeze()` in bot/server.py) and
    collects the young generation less often, which spares both apps the full collections that
    walked the heap and most of the others;
  - control: `GET /drain` waits for the bot's background tasks (`TaskSupervisor.join()`) and
    answers how many were pending, how long the drain took, and the `/uat status` outcomes
    counted by the bot's metrics; a sampler records the most tasks ever pending at once.
* the client (this process; one aiohttp ClientSession, every request freshly signed).

`/uat status` is stored in the bot's durable inbox (bot/slack/inbox.py: one SQLite write) before
its ack, acks (empty 200) and lists the environments after the ack, in a task the bot owns that
starts once the acks in flight are out (`TaskSupervisor.defer`); it needs no AWS.
Every request's response_url carries its number, so the answer of each one is matched to its
ack: how long after the ack it reached the stub is reported, and none may be missing. With two
or more CPUs the client and the stub share one CPU and the servers get another. Latency is
measured from just before the POST to the end of reading the response body. Sequential
requests alternate between the apps; the concurrent ones run in rounds that alternate, and
after every bot round the client drains the bot's after-ack work before the next round, so it
never spills into the baseline's round. Both apps leave Bolt's default
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bench import Row, alone, compared, fmt_ms, met, percentile, ratio

ROOT = Path(__file__).resolve().parents[1]

TEXT = "status"
SEEDED = 10  # environments `/uat status` lists
SEQUENTIAL = 200
CONCURRENT_TOTAL = 2000
CONCURRENCY = 50
CONCURRENT_ROUNDS = 16
HIGH_CONCURRENCY = 200
HIGH_TOTAL = 1000
HIGH_ROUNDS = 2
WARMUP_SEQUENTIAL = 20
WARMUP_CONCURRENT = 200
P99_GOAL = 1.3  # bot p99 / bare p99 at concurrency 50
ACK_DEADLINE_S = 3.0  # Slack's: every ack within 3 s
ANSWER_DEADLINE_S = 3.0  # every status answer within a few seconds of its ack
STATUS_COMMAND = f"/uat {TEXT}"


# ------------------------------------------------------------------------------ stub side


async def _stub() -> None:
    from tests.harness.bot import BOT_TOKEN
    from tests.harness.slack_stub import SlackStub

    class TimedStub(SlackStub):
        """Notes when the answer to request `n` (its response_url's query) arrived."""

        def __init__(self, token: str) -> None:
            super().__init__(token=token)
            self.answered: dict[str, float] = {}

        async def _handle_response_url(self, request: web.Request) -> web.Response:
            self.answered.setdefault(request.query.get("n", ""), time.monotonic())
            return await super()._handle_response_url(request)

    async with TimedStub(token=BOT_TOKEN) as stub:
        ready = {"api_url": stub.api_url, "response_url": stub.new_response_url()}
        print(json.dumps(ready), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        calls: dict[str, int] = {}
        for call in stub.calls:
            calls[call.method] = calls.get(call.method, 0) + 1
        texts = {r.body.get("text", "")[:40] for r in stub.responses}
        stats = {
            "calls": calls,
            "responses": len(stub.responses),
            "response_errors": sum(1 for r in stub.responses if r.error or r.failed_status),
            "response_texts": sorted(texts)[:3],
            "answered": stub.answered,
        }
        print(json.dumps(stats), flush=True)


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


async def _start(app: web.Application, path: str = "/slack/events") -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}{path}"


async def seed_store(db: Path, count: int) -> None:
    """`count` running environments, written to the bot's SQLite store before it starts."""
    from bot.store import Environment, Facts, SqliteStore

    store = SqliteStore(db)
    await store.open()
    now = time.time()
    try:
        for pr in range(1, count + 1):
            await store.save_environment(
                Environment(
                    repo="Codertocat/Hello-World",
                    pr=pr,
                    state="running",
                    label="uat",
                    task_arn=f"arn:aws:ecs:us-east-1:123456789012:task/uat/{pr:032x}",
                    facts=Facts.from_json(
                        {
                            "title": f"PR {pr}",
                            "branch": f"branch-{pr}",
                            "session": f"pr{pr}-bench",
                            "launch_started": now - 60 * pr,
                            "requested_by": "bench",
                            "idle_until": now + 8 * 3600,
                            "image_tags": [f"sha-{pr:07x}"],
                        }
                    ),
                )
            )
    finally:
        await store.close()


async def _serve(api_url: str) -> None:
    from bot.app import build_runtime
    from bot.config import load_settings
    from bot.server import create_web_app
    from tests.harness.bot import BOT_TOKEN, SIGNING_SECRET, bot_env

    class Api:  # what bot_env reads from a SlackStub
        def __init__(self, url: str) -> None:
            self.api_url = url

    with tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp:
        env = bot_env(Api(api_url), Path(tmp))  # type: ignore[arg-type]
        await seed_store(Path(env["UAT_DB"]), SEEDED)
        runtime = build_runtime(load_settings(env))
        tasks = runtime.services.tasks
        metrics = runtime.services.metrics
        most = 0

        async def sample() -> None:
            nonlocal most
            while True:
                most = max(most, len(tasks))
                await asyncio.sleep(0.005)

        def outcomes() -> dict[str, float]:
            found: dict[str, float] = {}
            for family in metrics.registry.collect():
                for sample_ in family.samples:
                    labels = sample_.labels
                    if (
                        sample_.name == "uat_commands_total"
                        and labels.get("command") == STATUS_COMMAND
                    ):
                        found[labels["outcome"]] = sample_.value
            return found

        async def drain(request: web.Request) -> web.Response:
            pending = len(tasks)
            started = time.perf_counter()
            await tasks.join()
            inbox = await runtime.services.store.inbox_items()
            return web.json_response(
                {
                    "inbox_left": len(inbox),
                    "pending": pending,
                    "drain_s": time.perf_counter() - started,
                    "most_pending": most,
                    "outcomes": outcomes(),
                }
            )

        control = web.Application()
        control.router.add_get("/drain", drain)
        bot_runner, bot_url = await _start(create_web_app(runtime))
        bare_runner, bare_url = await _start(bare_web_app(SIGNING_SECRET, BOT_TOKEN, api_url))
        control_runner, control_url = await _start(control, "/drain")
        sampler = asyncio.create_task(sample())
        print(json.dumps({"bot": bot_url, "bare": bare_url, "drain": control_url}), flush=True)
        try:
            # Serve until the parent closes our stdin.
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            sampler.cancel()
            await control_runner.cleanup()
            await bare_runner.cleanup()
            await bot_runner.cleanup()


# ------------------------------------------------------------------------------ client side


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _spawn(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.ack_latency", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{args[0]} process exited with {process.wait(10)}")
    return process, json.loads(line)


def _finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    """Close its stdin, read its last JSON line, and wait for it."""
    stats: dict[str, Any] = {}
    try:
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        line = process.stdout.readline()
        stats = json.loads(line) if line.strip() else {}
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return stats


@contextlib.contextmanager
def _processes() -> Iterator[tuple[dict[str, str], dict[str, Any], list[int]]]:
    """Start the stub and the servers; yield their URLs, then (filled on exit) the stub stats."""
    cpus = _cpus()
    pinned = len(cpus) >= 2
    previous = set(cpus)
    stub_stats: dict[str, Any] = {}
    stub, stub_urls = _spawn("--stub")
    server: subprocess.Popen[str] | None = None
    try:
        server, urls = _spawn("--serve", stub_urls["api_url"])
        if pinned:
            os.sched_setaffinity(server.pid, {cpus[1]})
            os.sched_setaffinity(stub.pid, {cpus[0]})
            os.sched_setaffinity(0, {cpus[0]})
        yield (
            {**urls, "response_url": stub_urls["response_url"]},
            stub_stats,
            (cpus[:2] if pinned else []),
        )
    finally:
        if pinned:
            os.sched_setaffinity(0, previous)
        if server is not None:
            _finish(server)
        stub_stats.update(_finish(stub))


class Client:
    """Posts freshly signed `/uat <TEXT>` slash commands and times each answer."""

    def __init__(self, session: aiohttp.ClientSession, response_url: str) -> None:
        from tests.harness.bot import CHANNEL, DEVELOPER, SIGNING_SECRET
        from tests.harness.signing import slack_headers, slash_command_body

        self._session = session
        self._response_url = response_url
        self._secret = SIGNING_SECRET
        self._channel = CHANNEL
        self._user = DEVELOPER
        self._headers = slack_headers
        self._body = slash_command_body
        self.sent = {"bot": 0, "bare": 0}
        self.acked: dict[str, float] = {}  # the bot's request number: time.monotonic() of its ack

    async def once(self, app: str, url: str, check: Callable[[bytes], bool]) -> float:
        n = str(sum(self.sent.values()))
        response_url = f"{self._response_url}?n={n}"
        body = self._body(
            TEXT, user_id=self._user, channel_id=self._channel, response_url=response_url
        )
        headers = self._headers(self._secret, body)
        self.sent[app] += 1
        started = time.perf_counter()
        async with self._session.post(url, data=body, headers=headers) as response:
            answer = await response.read()
        elapsed = time.perf_counter() - started
        if app == "bot":
            self.acked[n] = time.monotonic()
        if response.status != 200 or not check(answer):
            raise RuntimeError(f"{url} answered {response.status}: {answer[:200]!r}")
        return elapsed

    async def concurrent(
        self, app: str, url: str, check: Callable[[bytes], bool], total: int, concurrency: int
    ) -> tuple[list[float], float]:
        latencies: list[float] = []
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latencies.append(await self.once(app, url, check))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


async def _measure(urls: dict[str, str]) -> dict[str, Any]:
    def empty(answer: bytes) -> bool:  # `/uat status` acks with nothing: the list comes later
        return answer == b""

    check: dict[str, Callable[[bytes], bool]] = {"bot": empty, "bare": lambda answer: True}
    apps = ("bot", "bare")
    connector = aiohttp.TCPConnector(limit=HIGH_CONCURRENCY, keepalive_timeout=300)
    drains: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        client = Client(session, urls["response_url"])

        async def drain() -> None:
            async with session.get(urls["drain"]) as response:
                drains.append(await response.json())

        async def rounds(
            total: int, n_rounds: int, concurrency: int
        ) -> tuple[dict[str, list[float]], dict[str, float]]:
            latencies: dict[str, list[float]] = {"bot": [], "bare": []}
            elapsed = {"bot": 0.0, "bare": 0.0}
            for i in range(n_rounds):  # alternate, the order flipped each round
                for app in ("bare", "bot") if i % 2 == 0 else ("bot", "bare"):
                    found, seconds = await client.concurrent(
                        app, urls[app], check[app], total // n_rounds, concurrency
                    )
                    latencies[app] += found
                    elapsed[app] += seconds
                    if app == "bot":
                        await drain()
            return latencies, elapsed

        # Warm-up: the first request of each app does auth.test against the stub; the bursts
        # fill the connection pool so the concurrent runs do not pay for TCP connects.
        for _ in range(WARMUP_SEQUENTIAL):
            for app in apps:
                await client.once(app, urls[app], check[app])
        for concurrency in (CONCURRENCY, HIGH_CONCURRENCY):
            for app in apps:
                await client.concurrent(app, urls[app], check[app], WARMUP_CONCURRENT, concurrency)
        await drain()

        sequential: dict[str, list[float]] = {"bot": [], "bare": []}
        for i in range(SEQUENTIAL):  # interleaved, the order flipped every request
            for app in apps if i % 2 == 0 else ("bare", "bot"):
                sequential[app].append(await client.once(app, urls[app], check[app]))
        await drain()

        concurrent, elapsed = await rounds(CONCURRENT_TOTAL, CONCURRENT_ROUNDS, CONCURRENCY)
        high, high_elapsed = await rounds(HIGH_TOTAL, HIGH_ROUNDS, HIGH_CONCURRENCY)
    return {
        "sequential": sequential,
        "concurrent": concurrent,
        "elapsed": elapsed,
        "high": high,
        "high_elapsed": high_elapsed,
        "drains": drains,
        "sent": client.sent,
        "acked": client.acked,
    }


def _bot_vs_bare(name: str, samples: dict[str, list[float]], pct: float, note: str) -> Row:
    """The row comparing the bot's `pct` percentile of `samples` with the bare app's."""
    return compared(name, percentile(samples["bot"], pct), percentile(samples["bare"], pct), note)


def run() -> list[Row]:
    with _processes() as (urls, stub, pinned):
        results = asyncio.run(_measure(urls))
    seq, conc, elapsed = results["sequential"], results["concurrent"], results["elapsed"]
    high, high_elapsed = results["high"], results["high_elapsed"]
    drains: list[dict[str, Any]] = results["drains"]
    sent = results["sent"]["bot"]
    placement = (
        f"client+stub on cpu {pinned[0]}, servers on cpu {pinned[1]}"
        if pinned
        else "client, stub and servers unpinned"
    )
    rps = {app: CONCURRENT_TOTAL / elapsed[app] for app in elapsed}
    title = f"ack /uat {TEXT}"

    p99_ratio = ratio(percentile(conc["bot"], 99), percentile(conc["bare"], 99))
    p99_met = p99_ratio is not None and p99_ratio <= P99_GOAL
    worst = {app: max(high[app]) for app in high}
    over = {app: sum(1 for s in high[app] if s >= ACK_DEADLINE_S) for app in high}

    # The after-ack work: every /uat status must have run and answered, none piled up.
    last = drains[-1] if drains else {}
    outcomes: dict[str, float] = last.get("outcomes", {})
    ok = int(outcomes.get("ok", 0))
    failed = int(sum(v for k, v in outcomes.items() if k != "ok"))
    most_pending = int(last.get("most_pending", -1))
    left_at_round_end = max((int(d["pending"]) for d in drains), default=-1)
    inbox_left = max((int(d["inbox_left"]) for d in drains), default=-1)
    slowest_drain = max((float(d["drain_s"]) for d in drains), default=0.0)
    responses = int(stub.get("responses", -1))
    response_errors = int(stub.get("response_errors", -1))
    calls = stub.get("calls", {})
    stub_note = ", ".join(f"{method} x{n}" for method, n in sorted(calls.items())) or "none"
    answered: dict[str, float] = stub.get("answered", {})
    acked: dict[str, float] = results["acked"]
    delays = [answered[n] - at for n, at in acked.items() if n in answered]
    unanswered = len(acked) - len(delays)
    late = sum(1 for d in delays if d > ANSWER_DEADLINE_S)
    work_ok = ok == sent and failed == 0 and responses == sent and response_errors == 0
    work_ok = work_ok and unanswered == 0 and inbox_left == 0
    return [
        _bot_vs_bare(
            f"{title} sequential median",
            seq,
            50,
            f"goal: none (context); met: n/a; bot vs bare Bolt ack-only app; "
            f"n={SEQUENTIAL} each, interleaved; {placement}; {SEEDED} environments listed",
        ),
        _bot_vs_bare(
            f"{title} sequential p99",
            seq,
            99,
            "goal: none (context); met: n/a",
        ),
        _bot_vs_bare(
            f"{title} concurrent({CONCURRENCY}) p50",
            conc,
            50,
            f"goal: none (the goal is on p99); met: n/a; n={CONCURRENT_TOTAL} each in "
            f"{CONCURRENT_ROUNDS} alternating rounds; throughput bot {rps['bot']:.0f} req/s, "
            f"bare {rps['bare']:.0f} req/s",
        ),
        _bot_vs_bare(
            f"{title} concurrent({CONCURRENCY}) p99",
            conc,
            99,
            f"goal: ratio <= {P99_GOAL}; met: {met(p99_met)}; every bot request is written "
            "to the durable inbox before its ack; "
            "both ride Bolt's 10 ms ack() poll (slack_bolt listener/asyncio_runner.py)",
        ),
        compared(
            f"{title} concurrent({HIGH_CONCURRENCY}) max",
            worst["bot"],
            worst["bare"],
            f"goal: every ack < {ACK_DEADLINE_S:.0f} s; met: {met(over['bot'] == 0)}; "
            f"n={HIGH_TOTAL} each in {HIGH_ROUNDS} alternating rounds; acks >= "
            f"{ACK_DEADLINE_S:.0f} s: bot {over['bot']}, bare {over['bare']}; p99 bot "
            f"{fmt_ms(percentile(high['bot'], 99))}, bare {fmt_ms(percentile(high['bare'], 99))}; "
            f"throughput bot {HIGH_TOTAL / high_elapsed['bot']:.0f} req/s, "
            f"bare {HIGH_TOTAL / high_elapsed['bare']:.0f} req/s",
        ),
        alone(
            f"{title} answer after its ack p50 / p99 / max",
            " / ".join(fmt_ms(percentile(delays, q)) for q in (50, 99, 100)) if delays else "-",
            f"goal: every answer within {ANSWER_DEADLINE_S:.0f} s of its ack; "
            f"met: {met(bool(delays) and late == 0 and unanswered == 0)}; n={len(acked)} bot "
            f"requests (all runs), each matched to its answer by its response_url; later than "
            f"{ANSWER_DEADLINE_S:.0f} s: {late}, never answered: {unanswered}",
        ),
        alone(
            f"{title} after-ack work (all runs)",
            f"{ok} ok, {failed} failed of {sent}",
            "goal: every status answered, 0 failures, pending work drained after each round; "
            f"met: {met(work_ok)}; "
            f"stub: {responses} response_url posts ({response_errors} refused), calls: "
            f"{stub_note}; most status tasks pending at once {most_pending}, still pending "
            f"when a round's last ack arrived {left_at_round_end}, slowest drain "
            f"{fmt_ms(slowest_drain)}; inbox items left after a drain (done work is "
            f"forgotten): {inbox_left}",
        ),
    ]


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    asyncio.run(_serve(sys.argv[2]))
elif __name__ == "__main__" and sys.argv[1:] == ["--stub"]:
    asyncio.run(_stub())
elif __name__ == "__main__":
    for row in run():
        print(row)
