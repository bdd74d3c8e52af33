"""Label -> card Ready, cold vs warm (UAT_WARM_POOL): what the warm pool saves a reviewer, and
what the bot adds on top of the app's own clone and start when it claims a warm task.

Everything is loopback, as in bench/readiness.py: moto's server in a subprocess, a reverse proxy
in front of it (the bot's AWS_ENDPOINT_URL), the Slack Web API stub and a containers' stand-in in
this process (reached through UAT_CONTAINER_URL `http://127.0.0.1:<port>/task/{task_id}`), and
`uat-bot serve` as its own process on its defaults (UAT_POLL_SECONDS, UAT_QUICK_POLL_SECONDS).

Fargate's cold start is modelled by the proxy: a task is PROVISIONING, then PENDING, for
COLD_START_S after its RunTask (DescribeTasks and RunTask answers say so; moto runs it at once),
and its container's /health answers 503 until then. The app's own clone and start takes
CLONE_START_S: the benchmark turns a task's /health ready that long after the container starts
the app, i.e. COLD_START_S + CLONE_START_S after RunTask for a cold task, CLONE_START_S after
the claim (POST /claim) for a warm one.

* cold: a bot without a pool; N PRs labeled, one every LABEL_GAP_S; label -> card Ready.
* warm: a bot with UAT_WARM_POOL=latest=N+1; once its pool tasks are RUNNING, the same. Every
  warm launch is checked to have been claimed (the claim reached the stand-in, the task carries
  pool-state=claimed, no RunTask for the PR and no task started by its session, the bot logged
  the claim and counted it in /metrics); one that went cold fails the benchmark.

One warm-up label per bot (its first launch: boto3 clients, the first card) is not counted.
Settings: BENCH_COLD_START_S (default 20), BENCH_CLONE_START_S (5), BENCH_WARM_N (5 per path),
BENCH_LABEL_GAP_S (1.5: Slack takes a channel's cards at about one a second, and a launch posts
its card before it claims or runs a task, so closer labels measure Slack's pace instead).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import AWS_ENV, Row, compared, fmt_s, met, percentile
from bench._readiness_parts import Recorder, serving, tags_of, wait_for

COLD_START_S = float(os.environ.get("BENCH_COLD_START_S", "20"))  # provisioning + image pull
CLONE_START_S = float(os.environ.get("BENCH_CLONE_START_S", "5"))  # the app's clone and start
N = int(os.environ.get("BENCH_WARM_N", "5"))  # environments per path
GOAL_S = 2.0  # the warm path adds at most this over CLONE_START_S (issue #18)
# a label every 1.5 s: each launch posts its card first, and Slack takes a channel's posts at
# about 1 a second (bot/slack/pace.py); labels closer than that queue behind the posts (at 0.5 s
# the fifth launch claims ~2 s after its label), which is Slack's pace, not the claim path's
LABEL_GAP_S = float(os.environ.get("BENCH_LABEL_GAP_S", "1.5"))
WARM_UP_PR = 900
REPO = "Codertocat/Hello-World"
POOL_PREFIX = "pool-latest-"
CLAIMS = re.compile(r'^uat_warm_pool_claims_total\{result="claimed"\} (\S+)$', re.M)


def task_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


@dataclass
class Stand:
    """The containers' stand-in: /health per task id, turned ready by `flip` at the instant the
    app would answer; POST /claim checked as the real prompt server in pool mode checks it
    (tests/harness/pool_containers.py `take_claim`), after which the app starts."""

    token_of: Any  # task id -> its pool token (None: not a pool task)
    claims: dict[str, Any] = field(default_factory=dict)  # task id -> the claim it took
    claimed_at: dict[str, float] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)  # task id -> when /health turned ready
    runner: Any = None
    url: str = ""

    def flip(self, task: str) -> None:
        self.ready_at.setdefault(task, time.perf_counter())

    async def start(self) -> None:
        from aiohttp import web

        from tests.harness.pool_containers import serve_tasks, take_claim

        async def claim(request: web.Request) -> web.Response:
            task = request.match_info["task"]
            parsed = await take_claim(request, task, self.token_of, task in self.claims)
            if isinstance(parsed, web.Response):
                return parsed
            self.claims[task] = parsed
            self.claimed_at[task] = time.perf_counter()
            asyncio.get_running_loop().call_later(CLONE_START_S, self.flip, task)
            return web.json_response({"claimed": True, "session_id": parsed.session_id})

        async def health(request: web.Request) -> web.Response:
            if request.match_info["task"] in self.ready_at:
                return web.json_response({"ready": True, "phase": "ready"})
            return web.json_response({"ready": False, "phase": "cloning"}, status=503)

        async def status(request: web.Request) -> web.Response:
            claimed = self.claims.get(request.match_info["task"])
            if claimed is not None and (
                request.headers.get("Authorization") != f"Bearer {claimed.prompt_token}"
            ):
                return web.json_response({"error": "bad token"}, status=401)
            return web.json_response({"running": None, "queue": [], "recent": []})

        async def version(request: web.Request) -> web.Response:
            return web.json_response(
                {"commit": "c" * 40, "short": "ccccccc", "branch": "changes", "subject": "x"}
            )

        app = web.Application()
        app.router.add_post("/task/{task}/claim", claim)
        app.router.add_get("/task/{task}/health", health)
        app.router.add_get("/task/{task}/status", status)
        app.router.add_get("/task/{task}/version", version)
        self.runner, self.url = await serve_tasks(app, access_log=None)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class ColdStart(Recorder):
    """The recording proxy in front of moto, which for COLD_START_S after a task's RunTask
    answers its lastStatus as PROVISIONING then PENDING; a cold task's app turns ready
    CLONE_START_S after that (a pool task's waits for its claim)."""

    stand: Stand
    born: dict[str, float] = field(default_factory=dict)  # task arn -> when RunTask answered
    pool: set[str] = field(default_factory=set)  # pool tasks' arns

    def status(self, arn: str, now: float) -> str | None:
        """The lastStatus ECS would show of `arn` now, when it is not running yet."""
        born = self.born.get(arn)
        if born is None or now - born >= COLD_START_S:
            return None
        return "PROVISIONING" if now - born < COLD_START_S / 2 else "PENDING"

    def answer(self, action: str, request: dict[str, Any], body: bytes) -> bytes:
        if action in ("RunTask", "DescribeTasks"):
            return self._rewrite(action, request, body)
        return body

    def _rewrite(self, action: str, request: dict[str, Any], answer: bytes) -> bytes:
        now = time.perf_counter()
        try:
            parsed = json.loads(answer)
        except ValueError:
            return answer
        tasks = parsed.get("tasks") if isinstance(parsed, dict) else None
        if not isinstance(tasks, list):
            return answer
        loop = asyncio.get_running_loop()
        for task in tasks:
            arn = task.get("taskArn", "")
            if action == "RunTask" and arn not in self.born:
                self.born[arn] = now
                if str(request.get("startedBy", "")).startswith("pool-"):
                    self.pool.add(arn)
                else:
                    loop.call_later(COLD_START_S + CLONE_START_S, self.stand.flip, task_id(arn))
            provisioning = self.status(arn, now)
            if provisioning and task.get("lastStatus") == "RUNNING":
                task["lastStatus"] = provisioning
        return json.dumps(parsed).encode()


async def _scenario(endpoint: str, workdir: Path, warm: bool) -> dict[str, list[float]]:
    """label -> card Ready (seconds, "took") of N environments, cold or (with `warm`) claimed
    from the pool, and then label -> claim and /health ready -> card Ready; raises when a warm
    launch did not claim."""
    from bench.environments import reset_moto
    from tests.harness.uat_aws import CLUSTER, set_up_account

    reset_moto(endpoint)
    account = set_up_account(endpoint)

    def token_of(task: str) -> str | None:
        found = account.ecs.describe_tasks(cluster=CLUSTER, tasks=[task])["tasks"]
        if not found:
            return None
        [override] = found[0]["overrides"]["containerOverrides"]
        values = {e["name"]: e["value"] for e in override.get("environment", [])}
        return values.get("UAT_POOL_TOKEN")

    stand = Stand(token_of)
    await stand.start()
    proxy = ColdStart(endpoint, stand)
    proxy_url = await proxy.start()
    try:
        env = {**AWS_ENV, **account.env(stand.url), "AWS_ENDPOINT_URL": proxy_url}
        if warm:
            env["UAT_WARM_POOL"] = f"latest={N + 1}"  # the warm-up claims one too
        async with serving(env, workdir) as bot:
            cards, http, process, label = bot.cards, bot.http, bot.process, bot.label
            if warm:  # the pool filled and ECS runs its tasks (a provisioning one is skipped)

                async def pool_running() -> bool:
                    now = time.perf_counter()
                    running = [a for a in proxy.pool if proxy.status(a, now) is None]
                    return len(running) >= N + 1

                await wait_for(pool_running, COLD_START_S + 60, "the warm pool running")
            await label(WARM_UP_PR)

            async def warmed_up() -> bool:
                return bool(stand.claims) if warm else proxy.run_tasks_for(WARM_UP_PR) > 0

            await wait_for(warmed_up, 30, "the warm-up launch")
            prs = list(range(1, N + 1))
            sent: dict[int, float] = {}
            for pr in prs:
                sent[pr] = await label(pr)
                await asyncio.sleep(LABEL_GAP_S)
            await cards.wait(prs, ("ready",), COLD_START_S + CLONE_START_S + 60)
            await cards.stop()
            figures = {"took": [(cards.at(pr, "ready") or 0.0) - sent[pr] for pr in prs]}
            if warm:
                await _check_claimed(prs, account, proxy, stand, http, process)
                claimed = {c.pr_number: t for t, c in stand.claims.items()}
                figures["to_claim"] = [stand.claimed_at[claimed[pr]] - sent[pr] for pr in prs]
                figures["to_card"] = [
                    (cards.at(pr, "ready") or 0.0) - stand.ready_at[claimed[pr]] for pr in prs
                ]
            elif any(proxy.run_tasks_for(pr) != 1 for pr in prs):
                raise RuntimeError("a cold launch did not call RunTask once")
            return figures
    finally:
        await proxy.stop()
        await stand.stop()


async def _check_claimed(
    prs: list[int], account: Any, proxy: ColdStart, stand: Stand, http: Any, process: Any
) -> None:
    """Raise unless every PR of `prs` (and the warm-up) launched on a claimed warm-pool task."""
    from tests.harness.uat_aws import CLUSTER

    problems: list[str] = []
    by_pr = {int(c.pr_number): c for c in stand.claims.values() if c.pr_number}
    tasks = {
        int(tags["pr"]): (task, tags)
        for task in account.tasks("RUNNING")
        if (tags := tags_of(task)).get("pr")
    }
    for pr in [WARM_UP_PR, *prs]:
        claim = by_pr.get(pr)
        found = tasks.get(pr)
        if claim is None:
            problems.append(f"PR {pr}: no POST /claim reached a pool task")
        if found is None or found[1].get("pool-state") != "claimed":
            problems.append(f"PR {pr}: its task is not tagged pool-state=claimed")
        elif not str(found[0].get("startedBy", "")).startswith(POOL_PREFIX):
            problems.append(f"PR {pr}: its task was not started by the pool")
        if proxy.run_tasks_for(pr):
            problems.append(f"PR {pr}: RunTask was called for it (a cold launch)")
        if claim is not None and account.ecs.list_tasks(
            cluster=CLUSTER, startedBy=claim.session_id
        ).get("taskArns"):
            problems.append(f"PR {pr}: a task was started by its session")
    logged = process.log().read_text(errors="replace").count("claimed warm-pool task")
    if logged < len(prs) + 1:
        problems.append(f"the bot logged {logged} claims, not {len(prs) + 1}")
    async with http.get(f"{process.url}/metrics") as response:
        counted = CLAIMS.search(await response.text())
    if counted is None or float(counted.group(1)) < len(prs) + 1:
        problems.append(f"/metrics counts {counted and counted.group(1)} claims")
    if problems:
        raise RuntimeError("a warm launch went cold: " + "; ".join(problems))


def _rows(cold: dict[str, list[float]], warm: dict[str, list[float]]) -> list[Row]:
    setting = (
        f"{len(warm['took'])}+{len(cold['took'])} environments, a label every {LABEL_GAP_S:g} s"
        " (BENCH_LABEL_GAP_S);"
        f" cold start {COLD_START_S:g} s (BENCH_COLD_START_S),"
        f" clone+start {CLONE_START_S:g} s (BENCH_CLONE_START_S)"
    )
    rows = [
        compared(
            f"label -> card Ready, warm pool ({pct})",
            percentile(warm["took"], p),
            percentile(cold["took"], p),
            "every warm launch checked claimed; baseline: cold (RunTask) in the same run; "
            + setting,
            fmt=fmt_s,
        )
        for pct, p in (("p50", 50), ("p99", 99))
    ]
    overhead = [took - CLONE_START_S for took in warm["took"]]
    p99 = percentile(overhead, 99)
    rows.append(
        compared(
            "warm pool: label -> card Ready over the app's clone+start (p99)",
            p99,
            CLONE_START_S,
            f"goal: p99 <= {GOAL_S:g} s; met: {met(p99 <= GOAL_S)}; "
            f"p50 {fmt_s(percentile(overhead, 50))}, max {fmt_s(max(overhead))}; "
            f"of which label -> claim p99 {fmt_s(percentile(warm['to_claim'], 99))}, "
            f"/health ready -> card p99 {fmt_s(percentile(warm['to_card'], 99))}; "
            "baseline: CLONE_START_S",
            fmt=fmt_s,
        )
    )
    return rows


def run() -> list[Row]:
    from bench.environments import moto_server

    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp:
        found: dict[str, dict[str, list[float]]] = {}
        for path in ("cold", "warm"):
            started = time.perf_counter()
            workdir = Path(tmp) / path
            workdir.mkdir()
            found[path] = asyncio.run(_scenario(endpoint, workdir, warm=path == "warm"))
            took = time.perf_counter() - started
            print(f"  {path} took {took:.1f} s", file=sys.stderr, flush=True)
    return _rows(found["cold"], found["warm"])


if __name__ == "__main__":
    for row in run():
        print(row)
