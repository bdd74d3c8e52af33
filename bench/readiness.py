"""Bot-added latency: how long the real `uat-bot serve` takes to act on what AWS and the container
do, on its defaults (UAT_POLL_SECONDS 10).

Everything is loopback. moto's server runs in a subprocess (bench/environments.py); a recording
reverse proxy in front of it (the bot's AWS_ENDPOINT_URL) notes when each ECS call arrives; the
Slack Web API stub and the containers' stand-in (tests/harness/uat_aws.py `Containers`, reached
through UAT_CONTAINER_URL, never through the 10.x addresses moto invents) run in this process,
and `uat-bot serve` runs as its own process. The benchmark changes the world at known instants
and watches the PR cards in the stub (sampled every few milliseconds):

* label -> RunTask: N signed `labeled` webhooks, one every 100 ms; from just before each POST to
  the moment its RunTask call (found by the task's `pr` tag) reaches the proxy.
* container ready -> card Ready: once every card says running (the stand-in's /health answers
  503 "installing"), each PR's /health turns 200 ready at its own instant, spread over one
  default poll interval; until its card says ready.
* steady state: every environment ready, DescribeTasks calls (at the proxy) per watcher round
  (the bot's /metrics `uat_poll_duration_seconds_count`) over three rounds; the goal is ceil(N/100).
* ready task stopped by ECS -> card says so: then each of those ready tasks is stopped in moto
  at its own instant, spread over one poll interval; until its card says failed.
* task stopped by ECS while starting -> card says so: N more PRs, labeled and running but not
  ready yet (a container that crashes while starting), stopped the same way.
* with UAT_EVENTS_QUEUE: a second bot follows an SQS queue in moto; N PRs are made ready, then
  each task is stopped at its own instant and AWS's documented "ECS Task State Change" event
  (tests/fixtures/aws) for it is sent to the queue at once, as EventBridge would; until its card
  says failed. Its baseline is the same measure on the defaults (found by the poll).

The polling latency rows compare the p99 with one UAT_POLL_SECONDS: what a watcher that only
polls adds at worst.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import AWS_ENV, Row, alone, compared, fmt_s, met, percentile
from bench._readiness_parts import Recorder, serving, tags_of, wait_for

N = 20
POLL_S = 10.0  # UAT_POLL_SECONDS's default, which the bot runs on here
LABEL_GAP_S = 0.1
STEADY_ROUNDS = 3
GOALS = {"runtask": 0.5, "ready": 1.5, "stopped": 2.0}
REPO = "Codertocat/Hello-World"


def _stop_event(task_arn: str, version: int) -> str:
    """AWS's documented "ECS Task State Change" event (tests/fixtures/aws), as EventBridge
    would put it in the queue for `task_arn` having stopped."""
    from tests.harness.bot import FIXTURES
    from tests.harness.uat_aws import CLUSTER

    event = json.loads(
        (FIXTURES / "aws" / "ecs_task_state_change.RUNNING.awsdocs.json").read_text()
    )
    event["id"] = str(uuid.uuid4())
    event["resources"] = [task_arn]
    event["detail"].update(
        taskArn=task_arn,
        clusterArn=f"arn:aws:ecs:us-east-1:123456789012:cluster/{CLUSTER}",
        lastStatus="STOPPED",
        desiredStatus="STOPPED",
        stoppedReason="Essential container in task exited",
        version=version,
    )
    return json.dumps(event)


async def _scenario(endpoint: str, workdir: Path, events: bool = False) -> dict[str, Any]:
    """The polling rows on the defaults; with `events`, only ready environments stopped by ECS,
    the bot following UAT_EVENTS_QUEUE and the benchmark sending each stop's event at once."""
    import boto3

    from bench.environments import reset_moto
    from tests.harness.uat_aws import CLUSTER, Containers, set_up_account

    reset_moto(endpoint)
    account = set_up_account(endpoint)
    recorder = Recorder(endpoint)
    proxy_url = await recorder.start()
    containers = Containers()
    await containers.start()
    try:
        env = {**AWS_ENV, **account.env(containers.url), "AWS_ENDPOINT_URL": proxy_url}
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        queue = sqs.create_queue(QueueName="uat-ecs-events")["QueueUrl"]
        if events:
            env["UAT_EVENTS_QUEUE"] = queue
        async with serving(env, workdir) as bot:
            cards = bot.cards

            async def label(prs: list[int]) -> dict[int, float]:
                sent: dict[int, float] = {}
                for pr in prs:
                    sent[pr] = await bot.label(pr)
                    await asyncio.sleep(LABEL_GAP_S)
                return sent

            # warm-up: one launch through every path (boto3 clients, the first card), not counted
            await label([999])
            await cards.wait([999], ("running",), 60)
            containers.ready(999)
            await cards.wait([999], ("ready",), 60)

            def task_arns() -> dict[int, str]:
                return {
                    int(tags["pr"]): task["taskArn"]
                    for task in account.tasks("RUNNING")
                    if (tags := tags_of(task)).get("pr")
                }

            async def stop_one_by_one(prs: list[int], send_events: bool) -> list[float]:
                """Stop each PR's task at its own instant, spread over one poll interval (and
                send its event); seconds until each card says so."""
                arns = task_arns()
                stopped_at: dict[int, float] = {}
                start = time.perf_counter()
                for i, pr in enumerate(prs):
                    await asyncio.sleep(max(0.0, start + i * POLL_S / N - time.perf_counter()))
                    stopped_at[pr] = time.perf_counter()
                    await asyncio.to_thread(
                        account.ecs.stop_task,
                        cluster=CLUSTER,
                        task=arns[pr],
                        reason="Essential container in task exited",
                    )
                    if send_events:
                        body = _stop_event(arns[pr], 100 + i)
                        await asyncio.to_thread(sqs.send_message, QueueUrl=queue, MessageBody=body)
                await cards.wait(prs, ("failed", "stopped"), 60)
                return [(cards.at(pr, "failed", "stopped") or 0.0) - stopped_at[pr] for pr in prs]

            if events:
                group_c = list(range(201, 201 + N))
                await label(group_c)
                for pr in group_c:
                    containers.ready(pr)
                await cards.wait(group_c, ("ready",), 60)
                await asyncio.sleep(1.0)
                stopped_ready = await stop_one_by_one(group_c, send_events=True)
                await cards.stop()
                return {"stopped_ready": stopped_ready}

            # label -> RunTask, then container ready -> card Ready
            group_a = list(range(1, N + 1))
            sent = await label(group_a)
            await cards.wait(group_a, ("running",), 60)
            run_at = recorder.run_task_at()
            runtask = [run_at[pr] - sent[pr] for pr in group_a]
            flipped: dict[int, float] = {}
            start = time.perf_counter()
            for i, pr in enumerate(group_a):
                await asyncio.sleep(max(0.0, start + i * POLL_S / N - time.perf_counter()))
                containers.ready(pr)
                flipped[pr] = time.perf_counter()
            await cards.wait(group_a, ("ready",), 60)
            ready = [(cards.at(pr, "ready") or 0.0) - flipped[pr] for pr in group_a]

            # steady state: every environment ready, DescribeTasks per watcher round
            await asyncio.sleep(1.0)
            polls0, since = await bot.polls(), time.perf_counter()

            async def rounds_done() -> bool:
                return await bot.polls() >= polls0 + STEADY_ROUNDS

            await wait_for(rounds_done, STEADY_ROUNDS * POLL_S * 4, "three watcher rounds")
            rounds = await bot.polls() - polls0
            describes = recorder.calls("DescribeTasks", since)
            per_round = len(describes) / rounds
            described = sorted({len(body.get("tasks", [])) for _, body in describes})

            # a ready environment's task stopped by ECS -> card says failed (polling alone)
            stopped_ready = await stop_one_by_one(group_a, send_events=False)

            # task stopped by ECS while starting -> card says failed
            group_b = list(range(101, 101 + N))
            await label(group_b)
            await cards.wait(group_b, ("running",), 60)
            stopped = await stop_one_by_one(group_b, send_events=False)
            await cards.stop()
            return {
                "runtask": runtask,
                "ready": ready,
                "stopped": stopped,
                "stopped_ready": stopped_ready,
                "per_round": per_round,
                "rounds": rounds,
                "described": described,
                "live": N + 1,
            }
    finally:
        await containers.stop()
        await recorder.stop()


def _rows(found: dict[str, Any], events: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    names = {
        "runtask": "latency: webhook receipt -> RunTask",
        "ready": "latency: container ready -> card Ready",
        "stopped": "latency: task stopped by ECS (starting) -> card says so",
    }
    for key, name in names.items():
        values: list[float] = found[key]
        p99, goal = percentile(values, 99), GOALS[key]
        note = (
            f"goal: p99 <= {goal:g} s; met: {met(p99 <= goal)}; p50 {fmt_s(percentile(values, 50))}"
            f", max {fmt_s(max(values))}, {len(values)} environments"
        )
        if key == "runtask":
            rows.append(alone(f"{name} (p99)", fmt_s(p99), note))
        else:
            rows.append(
                compared(
                    f"{name} (p99)",
                    p99,
                    POLL_S,
                    note + "; baseline: one UAT_POLL_SECONDS (a poll-only watcher's worst)",
                    fmt=fmt_s,
                )
            )
    polled, evented = found["stopped_ready"], events["stopped_ready"]
    p99, goal = percentile(evented, 99), GOALS["stopped"]
    rows.append(
        compared(
            "latency: task stopped by ECS (ready, UAT_EVENTS_QUEUE) -> card says so (p99)",
            p99,
            percentile(polled, 99),
            f"goal: p99 <= {goal:g} s; met: {met(p99 <= goal)}; "
            f"p50 {fmt_s(percentile(evented, 50))}, {len(evented)} environments, "
            "each stop's event sent to the queue with it; "
            f"baseline: the same on the defaults (no queue: the poll finds it), p50 "
            f"{fmt_s(percentile(polled, 50))}",
            fmt=fmt_s,
        )
    )
    live = found["live"]
    goal = -(-live // 100)
    per_round = found["per_round"]
    rows.append(
        alone(
            f"steady state: DescribeTasks per watcher round, {live} ready envs",
            f"{per_round:.2f}",
            f"goal: ceil({live}/100) = {goal}; met: {met(per_round == goal)}; "
            f"{found['rounds']:.0f} rounds; tasks per call {found['described']}",
        )
    )
    return rows


def run() -> list[Row]:
    from bench.environments import moto_server

    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp:
        started = time.perf_counter()
        workdir = Path(tmp) / "polling"
        workdir.mkdir()
        found = asyncio.run(_scenario(endpoint, workdir))
        print(f"  polling took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        started = time.perf_counter()
        workdir = Path(tmp) / "events"
        workdir.mkdir()
        events = asyncio.run(_scenario(endpoint, workdir, events=True))
        print(f"  events took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return _rows(found, events)


if __name__ == "__main__":
    for row in run():
        print(row)
