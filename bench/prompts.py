"""Prompts: the container's `/status` under polling while a job runs, and the bot's relay delay.

Everything is loopback. The real prompt server (`python container/prompt_server.py`, as the
container's entrypoint starts it) runs as a subprocess on 127.0.0.1 with WORK_DIR a temp git repo
(tests/harness/container_helpers.py `make_repo`), UAT_PROMPT_TOKEN, PROMPT_STATE (the entrypoint
sets it, so every queue change is fsynced), APP_PORT a port this process listens on, and
CLAUDE_CMD the fake agent (tests/harness/fake_claude.py via `fake_claude_cmd()`). Its log goes to
a file. The clients,
the Slack Web API stub (tests/harness/slack_stub/), the bot and a tiny timestamping proxy share this
process. With two or more CPUs the server (and the agents and git it starts, which inherit its
affinity) is pinned to one CPU and this process to another for the run.

* status: GET /status from POLLERS concurrent pollers (one aiohttp session, a connection each),
  timed from just before the GET to the end of the body. Rounds of POLLS_PER_ROUND alternate:
  no job (baseline), then a job `fake:slow JOB_S` that is running (its agent process has printed
  its first line) for the whole round and is cancelled after it. POLL_ROUNDS of each, after an
  untimed warm-up; p50 and p99 over all requests of each kind.
* relay: a signed `/uat prompt PR-2 <text>` posted to the real bot (`create_web_app(
  build_runtime(load_settings(bot_env(...))))` on 127.0.0.1, as tests/conftest.py starts it),
  whose store holds a `ready` environment for acme/web#2 with a task ARN and a thread in the
  stub's channel, and whose UAT_CONTAINER_URL is the proxy. The proxy (an aiohttp app in this
  process) takes perf_counter() when a `POST /prompt` reaches its handler, then forwards it to
  the prompt server. The figure is the time from just before the client's POST to /slack/events
  to that arrival. The bot calls ack() first (Bolt, process_before_response=False) and sends the
  prompt from the command's task after that; Bolt's 10 ms ack() poll usually delivers the ack to
  the client after the prompt has arrived, so the ack time is reported beside. The baseline is
  the same `POST /prompt` sent by the client straight to the proxy, timed the same way. The two
  alternate, RELAYS each after RELAY_WARMUP untimed each. A blocker job
  (`fake:slow BLOCKER_S`) keeps the worker busy, so every measured prompt is queued and is
  cancelled (DELETE /prompts/{id}) as soon as its 202 is back; before the next sample the bot's
  reply to the person (response_url) must have reached the stub. The bot's follow-up polls of
  cancelled jobs (1 s later, then backing off) and their result posts run in the background,
  during both kinds of samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench import Row, compared, fmt_ms, met, percentile, ratio

ROOT = Path(__file__).resolve().parents[1]

POLLERS = 50
POLLS_PER_ROUND = 500
POLL_ROUNDS = 4  # of each kind: 2,000 requests with a job running, 2,000 without
WARMUP_POLLS = 300
JOB_S = 20
RELAYS = 50
RELAY_WARMUP = 5
# The blocker outlasts the relay samples (each waits for the bot's reply, which comes after the
# prompt's card, and cards wait their turn in the channel: ~2 s a sample, ~110 s in all), within
# the prompt server's PROMPT_TIMEOUT_S (300 s).
BLOCKER_S = 240
REPO = "acme/web"
PR = 2
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/uat/abc"
STATUS_P99_GOAL = 1.5  # /status p99 with a job running / without
RELAY_P99_GOAL_S = 0.5  # from the slash command to the container, p99
ACK_DEADLINE_S = 3.0
START_TIMEOUT_S = 20.0
WAIT_S = 15.0


async def until(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {limit_s:g} s waiting for {what}")
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------------------ the container


class PromptServer:
    """`python container/prompt_server.py` on 127.0.0.1, with the fake agent; log to a file.

    Its token is the one the bot gives REPO#PR's environment (session "", as the benches save
    it), derived from the bot's UAT_PROMPT_TOKEN as a launch would hand it to the container."""

    def __init__(self, tmp: Path) -> None:
        from bot.prompt_tokens import environment_token
        from tests.harness.container_helpers import (
            PROMPT_SERVER,
            TOKEN,
            fake_claude_cmd,
            free_port,
            make_repo,
        )

        self.token = environment_token(TOKEN, REPO, PR, "")
        self.app_socket = socket.socket()
        self.app_socket.bind(("127.0.0.1", 0))
        self.app_socket.listen()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp / "prompt_server.log"
        env = {
            **os.environ,
            "PROMPT_HOST": "127.0.0.1",
            "PROMPT_PORT": str(port),
            "APP_PORT": str(self.app_socket.getsockname()[1]),
            "WORK_DIR": str(make_repo(tmp / "work")),
            "UAT_PROMPT_TOKEN": self.token,
            "CLAUDE_CMD": fake_claude_cmd(),
            "PROMPT_STATE": str(tmp / "prompt-state.json"),
            "PROMPT_TIMEOUT_S": "300",
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(PROMPT_SERVER)],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        async def answers() -> bool:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the prompt server exited ({self.process.returncode}): {tail}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/health") as response:
                    return response.status == 200
            return False

        await until(answers, "the prompt server's /health", START_TIMEOUT_S)

    async def submit(self, session: aiohttp.ClientSession, prompt: str) -> str:
        body = {"prompt": prompt, "user": "UBENCH", "thread": ""}
        async with session.post(f"{self.url}/prompt", json=body, headers=self.headers()) as r:
            answer = await r.json()
            if r.status != 202:
                raise RuntimeError(f"POST /prompt answered {r.status}: {answer}")
            return str(answer["id"])

    async def job(self, session: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
        async with session.get(f"{self.url}/prompts/{job_id}", headers=self.headers()) as response:
            answer: dict[str, Any] = await response.json()
            return answer

    async def cancel(self, session: aiohttp.ClientSession, job_id: str) -> str:
        url = f"{self.url}/prompts/{job_id}"
        async with session.delete(url, headers=self.headers()) as response:
            answer = await response.json()
            return str(answer.get("state", f"HTTP {response.status}"))

    async def start_job(self, session: aiohttp.ClientSession, seconds: int) -> str:
        """Queue `fake:slow seconds`; return once its agent runs and has printed its first line."""
        job_id = await self.submit(session, f"fake:slow {seconds}")

        async def agent_running() -> bool:
            job = await self.job(session, job_id)
            if job["state"] not in ("queued", "running"):
                raise RuntimeError(f"the job ended early: {job}")
            return job["state"] == "running" and "Working on it" in job["output_tail"]

        await until(agent_running, f"job {job_id} to run")
        return job_id

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # web.run_app: the worker kills its agent
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.app_socket.close()


# ------------------------------------------------------------------------------ /status


async def poll_round(
    session: aiohttp.ClientSession, url: str, total: int, headers: dict[str, str]
) -> tuple[list[float], dict[int, int], float]:
    """`total` GETs of `url` (with `headers`) from POLLERS workers: latencies, statuses, wall
    time."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    left = total

    async def poller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
            statuses[response.status] = statuses.get(response.status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(poller() for _ in range(POLLERS)))
    return latencies, statuses, time.perf_counter() - started


async def _status(server: PromptServer, session: aiohttp.ClientSession) -> list[Row]:
    url = f"{server.url}/status"

    async def running() -> Any:
        async with session.get(url, headers=server.headers()) as response:
            return (await response.json())["running"]

    await poll_round(session, url, WARMUP_POLLS, server.headers())
    lat: dict[bool, list[float]] = {False: [], True: []}
    statuses: dict[bool, dict[int, int]] = {False: {}, True: {}}
    wall: dict[bool, float] = {False: 0.0, True: 0.0}
    problems: list[str] = []
    outcomes: list[str] = []
    for _ in range(POLL_ROUNDS):
        for with_job in (False, True):
            job_id = await server.start_job(session, JOB_S) if with_job else None
            before = await running()
            times, codes, elapsed = await poll_round(
                session, url, POLLS_PER_ROUND, server.headers()
            )
            after = await running()
            lat[with_job] += times
            wall[with_job] += elapsed
            for code, n in codes.items():
                statuses[with_job][code] = statuses[with_job].get(code, 0) + n
            expected = job_id
            seen = {None if r is None else r["id"] for r in (before, after)}
            if seen != {expected}:
                problems.append(f"running {sorted(map(str, seen))}, wanted {expected}")
            if job_id is not None:
                outcomes.append(await server.cancel(session, job_id))
    for with_job, codes in statuses.items():
        if codes != {200: POLLS_PER_ROUND * POLL_ROUNDS}:
            problems.append(f"{'job' if with_job else 'idle'} answers {codes}")
    if outcomes != ["cancelled"] * POLL_ROUNDS:
        problems.append(f"jobs ended {outcomes}")
    verdict = "UNEXPECTED: " + "; ".join(problems) if problems else "as expected"
    n = POLLS_PER_ROUND * POLL_ROUNDS
    rps = {k: n / wall[k] for k in wall}
    p50 = {k: percentile(v, 50) for k, v in lat.items()}
    p99 = {k: percentile(v, 99) for k, v in lat.items()}
    p99_ratio = ratio(p99[True], p99[False])
    name = f"prompt server GET /status, {POLLERS} pollers"
    return [
        compared(
            f"{name} p50 (job running vs none)",
            p50[True],
            p50[False],
            f"goal: none (the goal is on p99); met: n/a; n={n} each in {POLL_ROUNDS} "
            f"alternating rounds of {POLLS_PER_ROUND}; job `fake:slow {JOB_S}` (the fake agent, "
            f"sleeping); throughput {rps[True]:.0f} vs {rps[False]:.0f} req/s; {verdict}",
        ),
        compared(
            f"{name} p99 (job running vs none)",
            p99[True],
            p99[False],
            f"goal: ratio <= {STATUS_P99_GOAL}; "
            f"met: {met(p99_ratio is not None and p99_ratio <= STATUS_P99_GOAL)}; "
            f"max {fmt_ms(max(lat[True]))} vs {fmt_ms(max(lat[False]))}; server in a "
            "subprocess, the pollers in this one",
        ),
    ]


# ------------------------------------------------------------------------------ relay


class Proxy:
    """Forwards everything to the prompt server; timestamps each `POST /prompt` on arrival."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.arrivals: dict[str, asyncio.Future[float]] = {}
        self.jobs: dict[str, asyncio.Future[str]] = {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.runner: web.AppRunner | None = None
        self.url = ""

    def expect(self, prompt: str) -> tuple[asyncio.Future[float], asyncio.Future[str]]:
        loop = asyncio.get_running_loop()
        self.arrivals[prompt] = loop.create_future()
        self.jobs[prompt] = loop.create_future()
        return self.arrivals[prompt], self.jobs[prompt]

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()
        body = await request.read()
        prompt = None
        if request.method == "POST" and request.path == "/prompt":
            with contextlib.suppress(ValueError, AttributeError):
                prompt = json.loads(body).get("prompt")
            if (arrival := self.arrivals.get(str(prompt))) is not None and not arrival.done():
                arrival.set_result(arrived)
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization",)}
        if body:
            headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
        async with self.session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers
        ) as upstream:
            answer = await upstream.read()
            status, content_type = upstream.status, upstream.content_type
        if (job := self.jobs.get(str(prompt))) is not None and not job.done():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                job.set_result(str(json.loads(answer)["id"]))
        return web.Response(status=status, body=answer, content_type=content_type)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await self.session.close()


async def _relay(server: PromptServer, session: aiohttp.ClientSession, tmp: Path) -> list[Row]:
    from bot.app import build_runtime
    from bot.config import load_settings
    from bot.server import create_web_app
    from bot.store import Environment, Facts
    from tests.harness.bot import BOT_TOKEN, CHANNEL, DEVELOPER, SIGNING_SECRET, bot_env
    from tests.harness.signing import slack_headers, slash_command_body
    from tests.harness.slack_stub import SlackStub

    proxy = Proxy(server.url)
    await proxy.start()
    runner: web.AppRunner | None = None
    blocker: str | None = None
    relay: list[float] = []
    direct: list[float] = []
    acks: list[float] = []
    after_ack = 0
    problems: list[str] = []
    try:
        async with SlackStub(token=BOT_TOKEN) as stub:
            settings = load_settings(bot_env(stub, tmp / "bot", UAT_CONTAINER_URL=proxy.url))
            runtime = build_runtime(settings)
            runner = web.AppRunner(create_web_app(runtime), access_log=None)
            await runner.setup()  # opens the store
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            events = f"http://{host}:{port}/slack/events"
            now = runtime.services.environments.clock()
            thread = stub.add_message(CHANNEL, f"{REPO}#{PR} Bench — ready", user="UBOT")
            await runtime.services.store.save_environment(
                Environment(
                    repo=REPO,
                    pr=PR,
                    state="ready",
                    label="uat",
                    task_arn=TASK_ARN,
                    thread_ts=thread,
                    facts=Facts.from_json(
                        {"title": "Bench", "branch": "bench", "launch_started": now - 60}
                    ),
                )
            )
            blocker = await server.start_job(session, BLOCKER_S)
            sent_by_bot = 0

            async def via_bot(tag: str) -> tuple[float, float]:
                nonlocal sent_by_bot
                arrival, job = proxy.expect(tag)
                replies = len(stub.responses)
                body = slash_command_body(
                    f"prompt PR-{PR} {tag}",
                    user_id=DEVELOPER,
                    channel_id=CHANNEL,
                    response_url=stub.new_response_url(),
                )
                headers = slack_headers(SIGNING_SECRET, body)
                started = time.perf_counter()
                async with session.post(events, data=body, headers=headers) as response:
                    await response.read()
                acked = time.perf_counter()
                sent_by_bot += 1
                if response.status != 200:
                    problems.append(f"slash answered {response.status}")
                arrived = await asyncio.wait_for(arrival, WAIT_S)

                async def replied() -> bool:
                    return len(stub.responses) > replies

                await until(replied, "the bot's reply to the person")
                state = await server.cancel(session, await asyncio.wait_for(job, WAIT_S))
                if state != "cancelled":
                    problems.append(f"a relayed job ended {state}")
                return arrived - started, acked - started

            async def direct_post(tag: str) -> float:
                arrival, _ = proxy.expect(tag)
                body = {"prompt": tag, "user": DEVELOPER, "thread": thread}
                headers = server.headers()
                started = time.perf_counter()
                async with session.post(f"{proxy.url}/prompt", json=body, headers=headers) as r:
                    answer = await r.json()
                arrived = await asyncio.wait_for(arrival, WAIT_S)
                if r.status != 202:
                    problems.append(f"direct POST /prompt answered {r.status}")
                state = await server.cancel(session, str(answer["id"]))
                if state != "cancelled":
                    problems.append(f"a direct job ended {state}")
                return arrived - started

            for i in range(RELAY_WARMUP + RELAYS):
                order = (True, False) if i % 2 == 0 else (False, True)
                for by_bot in order:
                    tag = f"fake:slow 0 bench {'relay' if by_bot else 'direct'} {i}"
                    if by_bot:
                        took, ack = await via_bot(tag)
                        if i >= RELAY_WARMUP:
                            relay.append(took)
                            acks.append(ack)
                            after_ack += took > ack
                    else:
                        took = await direct_post(tag)
                        if i >= RELAY_WARMUP:
                            direct.append(took)
            asked = [m for m in stub.thread(CHANNEL, thread) if "asked the agent" in m["text"]]
            if len(asked) != sent_by_bot:
                problems.append(f"{len(asked)} 'asked the agent' notes for {sent_by_bot} prompts")
            job = await server.job(session, blocker)
            if job["state"] != "running":
                problems.append(f"the blocker job is {job['state']}")
            if (outcome := await server.cancel(session, blocker)) != "cancelled":
                problems.append(f"the blocker ended {outcome}")
            blocker = None
    finally:
        if blocker is not None:
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                await server.cancel(session, blocker)
        if runner is not None:
            await runner.cleanup()
        await proxy.stop()

    verdict = "UNEXPECTED: " + "; ".join(problems) if problems else "as expected"
    med = {"relay": statistics.median(relay), "direct": statistics.median(direct)}
    p99 = {"relay": percentile(relay, 99), "direct": percentile(direct, 99)}
    late_acks = sum(1 for a in acks if a >= ACK_DEADLINE_S)
    name = "prompt relay: /uat prompt -> container POST /prompt"
    return [
        compared(
            f"{name} (median)",
            med["relay"],
            med["direct"],
            f"goal: none (context; the goal is on p99); met: n/a; baseline: the client's own "
            f"POST /prompt to the same proxy; n={RELAYS} each, alternating; the bot adds "
            f"{fmt_ms(med['relay'] - med['direct'])} (median); {verdict}",
        ),
        compared(
            f"{name} (p99)",
            p99["relay"],
            p99["direct"],
            f"goal: relay p99 < {fmt_ms(RELAY_P99_GOAL_S)}; "
            f"met: {met(p99['relay'] < RELAY_P99_GOAL_S)}; the bot calls ack() before it sends "
            "the prompt, but Bolt's 10 ms ack() poll (slack_bolt listener/asyncio_runner.py) "
            f"delivers the ack later: ack p50 {fmt_ms(percentile(acks, 50))}, p99 "
            f"{fmt_ms(percentile(acks, 99))} ({late_acks} >= {ACK_DEADLINE_S:.0f} s); "
            f"{after_ack}/{len(relay)} prompts reached the container after the client had the ack",
        ),
    ]


# ------------------------------------------------------------------------------ the benchmark


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


async def _measure(tmp: Path) -> list[Row]:
    server = PromptServer(tmp / "container")
    rows: list[Row] = []
    mine = cpus()
    pinned = len(mine) >= 2
    try:
        if pinned:  # the server (and the agents and git it starts) on one CPU, this on another
            os.sched_setaffinity(server.process.pid, {mine[1]})
            os.sched_setaffinity(0, {mine[0]})
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=2 * POLLERS),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as session:
            await server.wait_ready(session)
            started = time.perf_counter()
            rows += await _status(server, session)
            print(f"  status took {time.perf_counter() - started:.1f} s", file=sys.stderr)
            started = time.perf_counter()
            rows += await _relay(server, session, tmp)
            print(f"  relay took {time.perf_counter() - started:.1f} s", file=sys.stderr)
    finally:
        if pinned:
            os.sched_setaffinity(0, mine)
        await asyncio.to_thread(server.stop)
    placement = (
        f"prompt server (and its agents) on cpu {mine[1]}, this process on cpu {mine[0]}"
        if pinned
        else "unpinned"
    )
    return [replace(row, note=f"{row.note}; {placement}") for row in rows]


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp:
        (Path(tmp) / "container").mkdir()
        return asyncio.run(_measure(Path(tmp)))


if __name__ == "__main__":
    for row in run():
        print(row)
