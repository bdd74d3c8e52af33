"""PR environments at scale: one watcher round over N tasks, and a burst of `labeled` webhooks.

Everything is loopback. moto's server runs in a subprocess on 127.0.0.1
(`python -m bench.environments --moto`, so its CPU is not this process's GIL); the Slack Web
API stub (tests/harness/slack_stub/) and the containers' stand-in
(tests/harness/uat_aws.py `Containers`, whose /health answers 503 "installing" at once) run in
this process on 127.0.0.1. The bot
reaches containers only through UAT_CONTAINER_URL, which points at that stand-in: nothing ever
contacts the 10.x addresses moto invents.

* watch: for N = 1, 100, 250, 1000, N RUNNING tasks are started in moto (`run_task` in the
  bot's own family, one per environment, each with its own session as `startedBy`) and N
  `running` Environment rows holding their ARNs are written to the bot's store. The figure is
  one `Environments.poll()` (store read, DescribeTasks, one /health probe per task); it must
  make ceil(N/100) DescribeTasks calls. The baseline is the same poll with `ecs.describe`
  swapped for a naive one that calls boto3's `describe_tasks` once per task ARN. The two
  alternate; the medians are reported, with the DescribeTasks phase timed on its own too.
* burst: 500 signed `pull_request` `labeled` deliveries ("uat", distinct PR numbers) at
  concurrency 50 through the real HTTP server (`create_web_app(build_runtime(...))`); after
  `tasks.join()` moto must hold 500 tasks and the stub 500 root messages. Then 200
  redeliveries (same X-GitHub-Delivery ids) must add nothing. The baseline is the same 500
  deliveries to a second bot whose `runtime.on_pull_request` is a no-op coroutine: signature
  check, JSON parse, delivery dedupe and the answer, nothing else. Response time is measured
  by the client (in this process) from just before the POST to the end of the body.
  `BENCH_PART=burst` runs the burst alone; its figures are printed (stderr) as soon as it is
  answered, before the launches' cards (Slack's pace: ~1 post/s) are waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import Row, alone, boto3_pointed_at, compared, fmt_ms, percentile, ratio

ROOT = Path(__file__).resolve().parents[1]

WATCH_SIZES = (1, 100, 250, 1000)
WATCH_RUNS = {1: 7, 100: 5, 250: 5, 1000: 3}  # alternating bot / naive polls per size
BURST = 500
CONCURRENCY = 50
REDELIVERIES = 200
WARMUP = 50
REPO = "Codertocat/Hello-World"
ROOT_PR = re.compile(r"#(\d+)")
# ------------------------------------------------------------------------------ moto


def _serve_moto() -> None:
    """Subprocess side: moto's server on 127.0.0.1:0; print its URL, serve until stdin closes."""
    from moto.server import ThreadedMotoServer

    from tests.harness.uat_aws import DYNAMODB_WRITES, atomic_dynamodb, partition_queries

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # as DynamoDB: two replicas' compare-and-sets never both pass (reads stay unlocked: with
    # them locked too, two soaks saw DynamoDB answer nothing for over a minute; not explained)
    atomic_dynamodb(operations=DYNAMODB_WRITES)
    # as DynamoDB: a Query's cost is its partition's, not the whole table's
    partition_queries()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


def _post(url: str, body: bytes = b"") -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method="POST")
    opener.open(request, timeout=30).read()


def reset_moto(endpoint: str) -> None:
    _post(f"{endpoint}/moto-api/reset")


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto in a subprocess, with boto3's variables pointing at it for the duration."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.environments", "--moto"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"moto's server did not start (exit {process.poll()})")
        with boto3_pointed_at(url):
            yield url
    finally:
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _all_tasks(ecs: Any, cluster: str) -> list[dict[str, Any]]:
    """Every task moto's cluster knows (listed, then described 100 at a time, with tags)."""
    arns: list[str] = []
    for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster):
        arns += page["taskArns"]
    found: list[dict[str, Any]] = []
    for start in range(0, len(arns), 100):
        batch = arns[start : start + 100]
        found += ecs.describe_tasks(cluster=cluster, tasks=batch, include=["TAGS"])["tasks"]
    return found


# ------------------------------------------------------------------------------ watching


class TimedDescribe:
    """Stands in for the bot's `Ecs` during a poll: times `describe`, delegates the rest.

    With `naive=True`, `describe` calls boto3's describe_tasks once per ARN instead of the
    bot's one call per 100.
    """

    def __init__(self, ecs: Any, client: Any, naive: bool) -> None:
        self.ecs = ecs
        self.client = client
        self.naive = naive
        self.seconds = 0.0
        self.naive_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ecs, name)

    async def describe(self, arns: list[str]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            if not self.naive:
                result: dict[str, Any] = await self.ecs.describe(arns)
                return result
            return await asyncio.to_thread(self._one_by_one, arns)
        finally:
            self.seconds += time.perf_counter() - started

    def _one_by_one(self, arns: list[str]) -> dict[str, Any]:
        from bot.aws.gateways import _task

        found: dict[str, Any] = {}
        for arn in arns:
            self.naive_calls += 1
            response = self.client.describe_tasks(
                cluster=self.ecs.cluster, tasks=[arn], include=["TAGS"]
            )
            for raw in response.get("tasks", []):
                if raw["taskArn"] == arn:
                    found[arn] = _task(raw)
        return found


async def _watch(endpoint: str, workdir: Path) -> list[Row]:
    import boto3

    from bot.app import build_runtime
    from bot.aws.gateways import RETRIES
    from bot.config import load_settings
    from bot.environments import LIVE
    from tests.harness.bot import BOT_TOKEN, bot_env
    from tests.harness.slack_stub import SlackStub
    from tests.harness.uat_aws import (
        BASE_FAMILY,
        CONTAINER,
        Containers,
        running_environment,
        set_up_account,
    )

    reset_moto(endpoint)
    account = set_up_account(endpoint)
    containers = Containers()
    await containers.start()
    rows: list[Row] = []
    try:
        async with SlackStub(token=BOT_TOKEN) as stub:
            settings = load_settings(bot_env(stub, workdir, **account.env(containers.url)))
            runtime = build_runtime(settings)
            await runtime.start(watch=False)
            envs = runtime.services.environments
            real_ecs = envs.ctx.ecs
            try:
                uri = await envs.ecr.repository_uri()
                digest = account.digests["latest"]
                tags = {"managed-by": "uat-bot"}
                definition = await real_ecs.register_pinned(
                    BASE_FAMILY, envs.family, CONTAINER, f"{uri}@{digest}", tags
                )
                client = boto3.session.Session(region_name=settings.aws_region).client(
                    "ecs", endpoint_url=settings.aws_endpoint_url, config=RETRIES
                )
                store = runtime.services.store
                seeded = 0

                async def seed(upto: int) -> None:
                    nonlocal seeded
                    now = envs.clock()
                    for pr in range(seeded + 1, upto + 1):
                        session = f"pr{pr}-bench"
                        arn = account.run_pr_task(definition, pr, session)
                        await store.save_environment(
                            running_environment(REPO, pr, session, arn, digest, definition, now)
                        )
                    seeded = upto

                async def one_poll(naive: bool) -> tuple[float, float, int, int]:
                    timed = TimedDescribe(real_ecs, client, naive)
                    real_ecs.calls.clear()
                    hits = len(containers.hits)
                    envs.ctx.ecs = timed
                    started = time.perf_counter()
                    try:
                        await envs.poll()
                    finally:
                        elapsed = time.perf_counter() - started
                        envs.ctx.ecs = real_ecs
                    calls = timed.naive_calls if naive else real_ecs.calls.get("DescribeTasks", 0)
                    return elapsed, timed.seconds, calls, len(containers.hits) - hits

                await seed(1)
                for naive in (False, True):  # warm-up: boto3 clients, the probes' session
                    await one_poll(naive)

                for size in WATCH_SIZES:
                    await seed(size)
                    times: dict[bool, list[float]] = {False: [], True: []}
                    phase: dict[bool, list[float]] = {False: [], True: []}
                    calls: dict[bool, set[int]] = {False: set(), True: set()}
                    probes: set[int] = set()
                    for i in range(WATCH_RUNS[size]):
                        for naive in (False, True) if i % 2 == 0 else (True, False):
                            elapsed, describing, n_calls, n_probes = await one_poll(naive)
                            times[naive].append(elapsed)
                            phase[naive].append(describing)
                            calls[naive].add(n_calls)
                            probes.add(n_probes)
                    live = await store.list_environments(LIVE)
                    problems = []
                    if calls[False] != {math.ceil(size / 100)}:
                        problems.append(f"bot DescribeTasks {sorted(calls[False])}")
                    if calls[True] != {size}:
                        problems.append(f"naive DescribeTasks {sorted(calls[True])}")
                    if probes != {size}:
                        problems.append(f"/health probes per poll {sorted(probes)}")
                    if len(live) != size or any(e.state != "running" for e in live):
                        problems.append("environments changed state")
                    bot_s = statistics.median(times[False])
                    naive_s = statistics.median(times[True])
                    n_bot = math.ceil(size / 100)
                    verdict = "UNEXPECTED: " + "; ".join(problems) if problems else "as expected"
                    goal_met = calls[False] == {n_bot}
                    rows.append(
                        Row(
                            f"watch: one poll of {size} running env(s) (median)",
                            f"{fmt_ms(bot_s)}, {_calls(calls[False])} DescribeTasks",
                            f"{fmt_ms(naive_s)}, {_calls(calls[True])} DescribeTasks",
                            ratio(bot_s, naive_s),
                            f"goal: ceil({size}/100) = {n_bot} DescribeTasks per poll; "
                            f"met: {'yes' if goal_met else 'NO'}; DescribeTasks phase "
                            f"{fmt_ms(statistics.median(phase[False]))} vs "
                            f"{fmt_ms(statistics.median(phase[True]))}; {size} /health probes "
                            f"each; {WATCH_RUNS[size]} polls each, alternating; {verdict}",
                        )
                    )
                if stub.calls:
                    rows.append(
                        Row("watch: Slack calls", str(len(stub.calls)), "0", None, "UNEXPECTED")
                    )
            finally:
                envs.ctx.ecs = real_ecs
                await runtime.stop()
    finally:
        await containers.stop()
    return rows


# ------------------------------------------------------------------------------ webhook burst


def labeled_payload(template: dict[str, Any], number: int, label: str) -> bytes:
    """The octokit `labeled` payload with the label renamed and the PR number changed."""
    payload = json.loads(json.dumps(template))
    payload["label"] = {**payload.get("label", {}), "name": label}
    payload["pull_request"]["labels"] = [{"name": label}]
    payload["pull_request"]["number"] = number
    return json.dumps(payload).encode()


class Sender:
    """Posts signed GitHub deliveries to one bot and times each answer."""

    def __init__(self, session: Any, url: str) -> None:
        from tests.harness.bot import WEBHOOK_SECRET

        self.session = session
        self.url = f"{url}/github/webhook"
        self.secret = WEBHOOK_SECRET

    async def once(self, body: bytes, delivery: str) -> tuple[float, int, dict[str, Any]]:
        from tests.harness.signing import github_headers

        headers = github_headers(self.secret, body, "pull_request", delivery)
        started = time.perf_counter()
        async with self.session.post(self.url, data=body, headers=headers) as response:
            answer = await response.read()
        elapsed = time.perf_counter() - started
        return elapsed, response.status, json.loads(answer)

    async def burst(
        self, deliveries: list[tuple[bytes, str]], concurrency: int = CONCURRENCY
    ) -> tuple[list[float], dict[int, int], float]:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        queue = iter(deliveries)

        async def worker() -> None:
            for body, delivery in queue:
                elapsed, status, _ = await self.once(body, delivery)
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, statuses, time.perf_counter() - started


async def _start_bot(settings: Any, configure: Any = None) -> tuple[Any, Any, str]:
    from aiohttp import web

    from bot.app import build_runtime
    from bot.server import create_web_app

    runtime = build_runtime(settings)
    if configure is not None:
        configure(runtime)
    runner = web.AppRunner(create_web_app(runtime), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runtime, runner, f"http://{host}:{port}"


def _calls(seen: set[int]) -> str:
    """The DescribeTasks counts seen over a size's polls: one number when they all agree."""
    return "/".join(str(n) for n in sorted(seen))


def _statuses(statuses: dict[int, int]) -> str:
    return ", ".join(f"{status} x{n}" for status, n in sorted(statuses.items()))


async def _burst(endpoint: str, workdir: Path) -> list[Row]:
    import aiohttp

    from bot.config import load_settings
    from tests.harness.bot import BOT_TOKEN, CHANNEL, FIXTURES, bot_env
    from tests.harness.slack_stub import SlackStub
    from tests.harness.uat_aws import CLUSTER, Containers, set_up_account

    reset_moto(endpoint)
    account = set_up_account(endpoint)
    template = json.loads(
        (FIXTURES / "github_webhooks" / "pull_request" / "labeled.payload.json").read_text()
    )
    deliveries = [(labeled_payload(template, pr, "uat"), str(uuid.uuid4())) for pr in range(1, 501)]
    warmup = [
        (labeled_payload(template, 100_000 + i, "bug"), str(uuid.uuid4())) for i in range(WARMUP)
    ]
    containers = Containers()
    await containers.start()
    runners: list[Any] = []
    try:
        async with (
            SlackStub(token=BOT_TOKEN) as stub,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4 * CONCURRENCY, keepalive_timeout=300)
            ) as session,
        ):
            real_dir, noop_dir = workdir / "bot", workdir / "noop"
            real_settings = load_settings(bot_env(stub, real_dir, **account.env(containers.url)))
            # The baseline bot has no ECS settings: no watcher, whose reconcile would stop the
            # real bot's tasks as orphans. Its on_pull_request does nothing anyway.
            noop_settings = load_settings(bot_env(stub, noop_dir))

            async def nothing(event: Any) -> None:
                return None

            def no_op(runtime: Any) -> None:
                runtime.on_pull_request = nothing

            real, real_runner, real_url = await _start_bot(real_settings)
            runners.append(real_runner)
            _, noop_runner, noop_url = await _start_bot(noop_settings, no_op)
            runners.append(noop_runner)
            envs = real.services.environments
            # start-up reconciliation and the watcher's first round
            await asyncio.wait_for(envs.watcher.first_round.wait(), 10)
            await envs.ecr.describe("latest")  # make the ECR client now, not in the burst

            bot, baseline = Sender(session, real_url), Sender(session, noop_url)
            for sender in (baseline, bot):  # a label the bot ignores: warms every path
                await sender.burst(warmup)
            await real.services.tasks.join()
            if _all_tasks(account.ecs, CLUSTER) or stub.messages.get(CHANNEL):
                raise RuntimeError("the warm-up started something")

            base_lat, base_status, base_wall = await baseline.burst(deliveries)
            bot_lat, bot_status, bot_wall = await bot.burst(deliveries)
            print(  # the launches' cards then take ~1 s each (Slack's pace): minutes
                f"  burst: bot {len(deliveries) / bot_wall:.0f}/s, p50 "
                f"{fmt_ms(percentile(bot_lat, 50))}, p99 {fmt_ms(percentile(bot_lat, 99))}; "
                f"no-op {len(deliveries) / base_wall:.0f}/s, p50 "
                f"{fmt_ms(percentile(base_lat, 50))}, p99 {fmt_ms(percentile(base_lat, 99))}",
                file=sys.stderr,
                flush=True,
            )
            started = time.perf_counter()
            await real.services.tasks.join()
            drained = time.perf_counter() - started + bot_wall

            def counts() -> tuple[int, int, int, int, int]:
                """Tasks, RUNNING tasks, PRs with a task, root threads, PRs with a thread."""
                tasks = _all_tasks(account.ecs, CLUSTER)
                running = [t for t in tasks if t["lastStatus"] == "RUNNING"]
                prs = {
                    tag["value"] for t in tasks for tag in t.get("tags", []) if tag["key"] == "pr"
                }
                messages = stub.messages.get(CHANNEL, [])
                roots = [m for m in messages if m.get("thread_ts") in (None, m["ts"])]
                # A root's text is the environment card's: "owner/repo#123 title — state".
                root_prs = {m.group(1) for r in roots if (m := ROOT_PR.search(r.get("text", "")))}
                return len(tasks), len(running), len(prs), len(roots), len(root_prs)

            tasks, running, prs, roots, _ = counts()
            states: dict[str, int] = {}
            for env in await real.services.store.list_environments():
                states[env.state] = states.get(env.state, 0) + 1

            redo = deliveries[:REDELIVERIES]
            redo_lat, redo_status, _ = await bot.burst(redo)
            await real.services.tasks.join()
            tasks2, running2, prs2, roots2, root_prs2 = counts()
    finally:
        for runner in runners:
            await runner.cleanup()
        await containers.stop()

    problems = []
    if bot_status != {202: BURST}:
        problems.append(f"bot answered {_statuses(bot_status)}")
    if base_status != {202: BURST}:
        problems.append(f"baseline answered {_statuses(base_status)}")
    if (tasks, running, prs, roots) != (BURST, BURST, BURST, BURST):
        problems.append(f"tasks {tasks} ({running} RUNNING, {prs} PRs), root threads {roots}")
    if states != {"running": BURST}:
        problems.append(f"environment states {states}")
    verdict = "UNEXPECTED: " + "; ".join(problems) if problems else "as expected"
    redo_problems = []
    if redo_status != {200: REDELIVERIES}:
        redo_problems.append(f"answered {_statuses(redo_status)}")
    if (tasks2, running2, roots2) != (tasks, running, roots):
        redo_problems.append(f"tasks {tasks}->{tasks2}, root threads {roots}->{roots2}")
    redo_verdict = "UNEXPECTED: " + "; ".join(redo_problems) if redo_problems else "as expected"
    # Duplicates, counted after the burst and the redeliveries: a second task for a PR, or a
    # second root thread for a PR.
    dup_tasks, dup_threads = tasks2 - prs2, roots2 - root_prs2
    duplicates = dup_tasks + dup_threads
    accepted = {"bot": bot_status.get(202, 0), "noop": base_status.get(202, 0)}
    rate = {"bot": accepted["bot"] / bot_wall, "noop": accepted["noop"] / base_wall}

    name = f"webhook burst: {BURST} labeled @ {CONCURRENCY}"
    return [
        compared(
            f"{name} accepted/s",
            rate["bot"],
            rate["noop"],
            f"goal: every delivery accepted (202), none lost; met: "
            f"{'yes' if accepted['bot'] == BURST and not problems else 'NO'}; "
            f"{accepted['bot']} accepted in {bot_wall:.2f} s vs no-op {accepted['noop']} in "
            f"{base_wall:.2f} s",
            fmt=lambda per_s: f"{per_s:.0f}/s",
        ),
        alone(
            f"{name} + {REDELIVERIES} redeliveries: duplicates",
            str(duplicates),
            f"goal: 0; met: {'yes' if duplicates == 0 else 'NO'}; {dup_tasks} extra ECS tasks "
            f"({tasks2} tasks for {prs2} PRs), {dup_threads} extra root threads "
            f"({roots2} roots for {root_prs2} PRs)",
        ),
        compared(
            f"{name} p50",
            percentile(bot_lat, 50),
            percentile(base_lat, 50),
            f"goal: none (context); met: n/a; bot vs no-op on_pull_request; "
            f"moto: {tasks} tasks ({running} RUNNING, {prs} PRs), "
            f"Slack stub: {roots} root threads; {_statuses(bot_status)}; {verdict}",
        ),
        compared(
            f"{name} p99",
            percentile(bot_lat, 99),
            percentile(base_lat, 99),
            f"goal: none (context); met: n/a; burst answered in {bot_wall:.2f} s vs "
            f"{base_wall:.2f} s; all {BURST} launches "
            f"done {drained:.2f} s after the first delivery",
        ),
        alone(
            f"webhook redeliveries: {REDELIVERIES} same ids",
            f"+{tasks2 - tasks} tasks, +{roots2 - roots} threads",
            f"goal: +0 tasks, +0 threads; met: {'yes' if not redo_problems else 'NO'}; "
            f"p50 {fmt_ms(percentile(redo_lat, 50))}, p99 {fmt_ms(percentile(redo_lat, 99))}; "
            f"{_statuses(redo_status)}; {redo_verdict}",
        ),
    ]


# ------------------------------------------------------------------------------ the benchmark


def run() -> list[Row]:
    with (
        moto_server() as endpoint,
        tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp,
    ):
        rows: list[Row] = []
        started = time.perf_counter()
        if os.environ.get("BENCH_PART") != "burst":  # BENCH_PART=burst: the burst alone
            rows += asyncio.run(_watch(endpoint, Path(tmp) / "watch"))
            print(
                f"  watch took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True
            )
        started = time.perf_counter()
        rows += asyncio.run(_burst(endpoint, Path(tmp) / "burst"))
        print(f"  burst took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__" and sys.argv[1:] == ["--moto"]:
    _serve_moto()
elif __name__ == "__main__":
    for row in run():
        print(row)
