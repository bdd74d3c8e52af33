"""Footprint of `uat-bot serve`: start-up time, idle RSS, and RSS holding 1,000 environments.

The bot runs as its own process, `python -m bot.cli serve` (what the `uat-bot serve` console
script runs), in an empty working directory (no `.env`) with only these settings:
SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_API_URL (the Slack Web API stub,
tests/harness/slack_stub/, served by this process on 127.0.0.1), UAT_HOST=127.0.0.1, UAT_PORT (a
free port) and UAT_DB (a fresh SQLite file).

* start-up: from just before `Popen` to the first `GET /healthz` that answers 200 (polled every
  POLL_S); median of RUNS starts. The baseline is a bare aiohttp server answering /healthz
  (`python -c 'import aiohttp; ...'`, same interpreter), started the same way. The two
  alternate.
* idle RSS: VmRSS from /proc/<pid>/status, IDLE_S after /healthz first answered, in the same
  RUNS starts (median); the bare server's the same way.
* RSS with 1,000 environments: the store is seeded (bot.store.SqliteStore + Environment) with
  1,000 `running` environments whose tasks are RUNNING in moto's ECS (server in a subprocess,
  as bench/environments.py runs it; one `run_task` per environment in the bot's own family,
  startedBy its session), and the bot is configured for that account with UAT_POLL_SECONDS=1
  and UAT_CONTAINER_URL pointing at the containers' stand-in (tests/harness/uat_aws.py `Containers`,
  in this process). After /healthz, the watcher must finish WATCH_POLLS polls (counted on
  /metrics) and `/uat status` is asked STATUS_ASKS times (signed, through /slack/events, each
  answered before the next); then VmRSS is read. The baseline is the bare server's idle RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import Row, compared, fmt_s, met

ROOT = Path(__file__).resolve().parents[1]

RUNS = 5
POLL_S = 0.005
IDLE_S = 1.0
START_TIMEOUT_S = 30.0
ENVIRONMENTS = 1000
WATCH_POLLS = 3
STATUS_ASKS = 3
IDLE_GOAL_MB = 120.0
LOADED_GOAL_MB = 200.0
START_GOAL_S = 2.0
REPO = "Codertocat/Hello-World"

BARE_SERVER = """
import sys
from aiohttp import web

async def healthz(request):
    return web.json_response({"ok": True})

app = web.Application()
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def mb(size: float) -> str:
    return f"{size / 2**20:.1f} MB"


def base_env() -> dict[str, str]:
    """The parent's environment without anything the bot reads as settings or AWS config."""
    prefixes = ("AWS_", "UAT_", "SLACK_", "GITHUB_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(prefixes)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    url: str
    seconds: float  # from just before Popen to the first /healthz 200
    log: Path


async def start(
    argv: list[str], env: dict[str, str], workdir: Path, session: aiohttp.ClientSession
) -> Started:
    """Start a server whose port is env["UAT_PORT"] and wait for /healthz to answer 200."""
    port = env["UAT_PORT"]
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"server-{port}.log"
    started = time.perf_counter()
    process = launch(argv, env, workdir, log)
    timeout = aiohttp.ClientTimeout(total=2)
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(f"{url}/healthz", timeout=timeout) as response:
                await response.read()
                if response.status == 200:
                    return Started(process, url, time.perf_counter() - started, log)
        if process.poll() is not None or time.perf_counter() - started > START_TIMEOUT_S:
            stop(process)
            tail = read(log)[-800:]
            raise RuntimeError(f"{argv[1:3]} never answered /healthz: {tail}")
        await asyncio.sleep(POLL_S)


def launch(
    argv: list[str], env: dict[str, str], workdir: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start `argv` in `workdir`, its stdout and stderr to `log` (Popen returns at once)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )


def read(path: Path) -> str:
    return path.read_text(errors="replace")


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def bot_argv() -> list[str]:
    return [sys.executable, "-m", "bot.cli", "serve"]


def bare_argv(port: str) -> list[str]:
    return [sys.executable, "-c", BARE_SERVER, port]


def bot_settings(stub: Any, db: Path) -> dict[str, str]:
    from tests.harness.bot import BOT_TOKEN, SIGNING_SECRET

    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": stub.api_url,
        "UAT_HOST": "127.0.0.1",
        "UAT_PORT": str(free_port()),
        "UAT_DB": str(db),
    }


# ------------------------------------------------------------------------------ start + idle


async def _idle(stub: Any, workdir: Path) -> dict[str, Any]:
    """RUNS alternating starts of the bot and the bare server: start seconds and idle RSS."""
    seconds: dict[str, list[float]] = {"bot": [], "bare": []}
    rss: dict[str, list[int]] = {"bot": [], "bare": []}
    exits: dict[str, set[int]] = {"bot": set(), "bare": set()}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for i in range(RUNS):
            for app in ("bot", "bare") if i % 2 == 0 else ("bare", "bot"):
                run_dir = workdir / f"{app}-{i}"
                env = {**base_env(), **bot_settings(stub, run_dir / "uat-bot.db")}
                argv = bot_argv() if app == "bot" else bare_argv(env["UAT_PORT"])
                started = await start(argv, env, run_dir, session)
                try:
                    seconds[app].append(started.seconds)
                    await asyncio.sleep(IDLE_S)
                    rss[app].append(memory(started.process.pid)["VmRSS"])
                finally:
                    exits[app].add(stop(started.process))
    return {"seconds": seconds, "rss": rss, "exits": exits}


# ------------------------------------------------------------------------------ 1,000 environments


def _seed_tasks(account: Any, count: int, workdir: Path) -> list[tuple[int, str, str, str]]:
    """`count` RUNNING tasks in the bot's own family: (pr, session, task ARN, image digest)."""
    from tests.harness.uat_aws import BASE_FAMILY, CONTAINER, OWN_FAMILY

    workdir.mkdir(parents=True)

    uri = account.ecr.describe_repositories()["repositories"][0]["repositoryUri"]
    digest = account.digests["latest"]
    base = account.ecs.describe_task_definition(taskDefinition=BASE_FAMILY)["taskDefinition"]
    definition = account.ecs.register_task_definition(
        family=OWN_FAMILY,
        networkMode=base["networkMode"],
        requiresCompatibilities=base["requiresCompatibilities"],
        cpu=base["cpu"],
        memory=base["memory"],
        containerDefinitions=[
            {"name": CONTAINER, "image": f"{uri}@{digest}", "memory": 2048, "essential": True}
        ],
        tags=[{"key": "managed-by", "value": "uat-bot"}],
    )["taskDefinition"]["taskDefinitionArn"]
    seeded = []
    for pr in range(1, count + 1):
        session = f"pr{pr}-bench"
        arn = account.run_pr_task(definition, pr, session)
        seeded.append((pr, session, arn, digest))
    return seeded


async def _seed_store(db: Path, seeded: list[tuple[int, str, str, str]], definition: str) -> None:
    from bot.store import SqliteStore
    from tests.harness.uat_aws import running_environment

    store = SqliteStore(db)
    await store.open()
    now = time.time()
    try:
        for pr, session, arn, digest in seeded:
            await store.save_environment(
                running_environment(REPO, pr, session, arn, digest, definition, now)
            )
    finally:
        await store.close()


async def _metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _loaded(stub: Any, endpoint: str, workdir: Path) -> dict[str, Any]:
    from bench.environments import reset_moto
    from tests.harness.bot import CHANNEL, DEVELOPER, SIGNING_SECRET, WEBHOOK_SECRET
    from tests.harness.signing import slack_headers, slash_command_body
    from tests.harness.uat_aws import CLUSTER, Containers, set_up_account

    reset_moto(endpoint)
    account = set_up_account(endpoint)
    began = time.perf_counter()
    seeded = await asyncio.to_thread(_seed_tasks, account, ENVIRONMENTS, workdir)
    definition = account.ecs.describe_tasks(cluster=CLUSTER, tasks=[seeded[0][2]])["tasks"][0][
        "taskDefinitionArn"
    ]
    db = workdir / "uat-bot.db"
    await _seed_store(db, seeded, definition)
    seeding_s = time.perf_counter() - began
    containers = Containers()
    await containers.start()
    try:
        env = {
            **base_env(),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            **bot_settings(stub, db),
            **account.env(containers.url),
            "UAT_POLL_SECONDS": "1",
            "UAT_CHANNEL": CHANNEL,
            "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        async with aiohttp.ClientSession() as session:
            started = await start(bot_argv(), env, workdir, session)
            try:
                after_start = memory(started.process.pid)["VmRSS"]
                polls_s = time.perf_counter()
                polls = 0.0
                while polls < WATCH_POLLS:
                    if time.perf_counter() - polls_s > 180 or started.process.poll() is not None:
                        raise RuntimeError(f"the watcher did only {polls:.0f} polls")
                    await asyncio.sleep(0.25)
                    polls = await _metric(session, started.url, "uat_poll_duration_seconds_count")
                poll_sum = await _metric(session, started.url, "uat_poll_duration_seconds_sum")
                hits = len(containers.hits)
                status_s: list[float] = []
                url_ids: set[str] = set()
                calls = len(stub.calls)
                for _ in range(STATUS_ASKS):
                    answered = len(stub.responses)
                    response_url = stub.new_response_url()
                    url_ids.add(response_url.rsplit("/", 1)[-1])
                    body = slash_command_body(
                        "status", user_id=DEVELOPER, channel_id=CHANNEL, response_url=response_url
                    )
                    asked = time.perf_counter()
                    async with session.post(
                        f"{started.url}/slack/events",
                        data=body,
                        headers=slack_headers(SIGNING_SECRET, body),
                    ) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"/uat status answered {response.status}")
                    while not any(  # an answer Slack would show: an accepted post
                        r.url_id in url_ids and not r.error and not r.failed_status
                        for r in stub.responses[answered:]
                    ):
                        if time.perf_counter() - asked > 60:
                            raise RuntimeError("/uat status never answered")
                        await asyncio.sleep(0.01)
                    status_s.append(time.perf_counter() - asked)
                await asyncio.sleep(IDLE_S)
                measured = memory(started.process.pid)
                healthy = await _metric(session, started.url, 'uat_environments{state="running"}')
            finally:
                exit_code = stop(started.process)
        log = read(started.log)
    finally:
        await containers.stop()
    replies = [r for r in stub.responses if r.url_id in url_ids]
    return {
        "rss": measured["VmRSS"],
        "peak": measured["VmHWM"],
        "after_start": after_start,
        "start_s": started.seconds,
        "seeding_s": seeding_s,
        "polls": polls,
        "poll_mean_s": poll_sum / polls if polls else 0.0,
        "probes": hits,
        "running": healthy,
        "status_s": status_s,
        "status_posts": len(replies),
        "status_refused": [r.error or r.failed_status for r in replies if r.error],
        "status_texts": [len(str(r.body.get("text", ""))) for r in replies],
        "status_shown": sorted(
            {str(r.body.get("text", ""))[:90] for r in replies if not r.error}, key=len
        ),
        "status_calls": [f"{c.method} {c.error or 'ok'}" for c in stub.calls[calls:]],
        "errors": log.count(" ERROR "),
        "exit": exit_code,
    }


# ------------------------------------------------------------------------------ the benchmark


async def _run(endpoint: str, workdir: Path) -> list[Row]:
    from tests.harness.bot import BOT_TOKEN
    from tests.harness.slack_stub import SlackStub

    async with SlackStub(token=BOT_TOKEN) as stub:
        idle = await _idle(stub, workdir / "idle")
        loaded = await _loaded(stub, endpoint, workdir / "loaded")

    start_s = {app: statistics.median(v) for app, v in idle["seconds"].items()}
    rss = {app: statistics.median(v) for app, v in idle["rss"].items()}
    runs = {app: ", ".join(f"{s:.2f}" for s in idle["seconds"][app]) for app in idle["seconds"]}
    exits = {app: "/".join(str(c) for c in sorted(idle["exits"][app])) for app in idle["exits"]}
    refused = loaded["status_refused"]
    shown = loaded["status_shown"]
    status_note = (
        f"/uat status x{STATUS_ASKS} answered in "
        + ", ".join(f"{s:.2f}" for s in loaded["status_s"])
        + f" s ({loaded['status_posts']} response_url posts of "
        + "/".join(str(n) for n in loaded["status_texts"])
        + " chars, "
        + (f"refused: {refused}" if refused else "all accepted")
        + f"; Web API calls: {', '.join(loaded['status_calls']) or 'none'}"
        + (
            f"; THE LIST WAS NOT SHOWN, the user saw: {shown[0]!r})"
            if refused and len(shown) == 1 and len(shown[0]) < 90
            else ")"
        )
    )
    return [
        compared(
            "serve: start to /healthz 200 (median)",
            start_s["bot"],
            start_s["bare"],
            f"goal: <= {START_GOAL_S:.0f} s; met: {met(start_s['bot'] <= START_GOAL_S)}; "
            f"`python -m bot.cli serve` vs bare aiohttp /healthz; {RUNS} starts each, "
            f"alternating: bot {runs['bot']} s, bare {runs['bare']} s",
            fmt=fmt_s,
        ),
        compared(
            "serve: idle RSS (median)",
            rss["bot"],
            rss["bare"],
            f"goal: <= {IDLE_GOAL_MB:.0f} MB; met: {met(rss['bot'] <= IDLE_GOAL_MB * 2**20)}; "
            f"VmRSS {IDLE_S:.0f} s after /healthz, Slack settings only; exit codes after "
            f"SIGTERM: bot {exits['bot']}, bare {exits['bare']}",
            fmt=mb,
        ),
        compared(
            f"serve: RSS with {ENVIRONMENTS} environments",
            loaded["rss"],
            rss["bare"],
            f"goal: <= {LOADED_GOAL_MB:.0f} MB; met: "
            f"{met(loaded['rss'] <= LOADED_GOAL_MB * 2**20)}; baseline: bare server idle; "
            f"{ENVIRONMENTS} running envs in SQLite + {ENVIRONMENTS} RUNNING tasks in moto "
            f"(seeded in {loaded['seeding_s']:.0f} s); after {loaded['polls']:.0f} watcher "
            f"polls (mean {loaded['poll_mean_s']:.2f} s, {loaded['probes']} /health probes, "
            f"gauge running={loaded['running']:.0f}) and {status_note}; peak (VmHWM) "
            f"{mb(loaded['peak'])}, RSS at /healthz {mb(loaded['after_start'])}, start "
            f"{loaded['start_s']:.2f} s; ERROR log lines {loaded['errors']}; exit "
            f"{loaded['exit']}",
            fmt=mb,
        ),
    ]


def run() -> list[Row]:
    from bench.environments import moto_server

    with (
        moto_server() as endpoint,
        tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp,
    ):
        return asyncio.run(_run(endpoint, Path(tmp)))


if __name__ == "__main__":
    for row in run():
        print(row)
