"""bench/warm_pool.py's model of Fargate and the app: a task reads as provisioning, then pending,
for the cold start after its RunTask; a cold task's app turns ready a clone+start after that; a
pool task's waits for its claim (checked as the real prompt server checks it), so the benchmark's
cold and warm figures measure what they say."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bench import warm_pool
from bench.warm_pool import ColdStart, Stand

ARN = "arn:aws:ecs:us-east-1:123456789012:task/uat/"
POOL_TOKEN = "pool-token-0123456789"


def answer(arn: str) -> bytes:
    return json.dumps({"tasks": [{"taskArn": arn, "lastStatus": "RUNNING"}]}).encode()


def status_of(proxy: ColdStart, action: str, arn: str, started_by: str = "") -> str:
    body = proxy._rewrite(action, {"startedBy": started_by}, answer(arn))
    status: str = json.loads(body)["tasks"][0]["lastStatus"]
    return status


@pytest.fixture
async def stand(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stand]:
    monkeypatch.setattr(warm_pool, "COLD_START_S", 0.4)
    monkeypatch.setattr(warm_pool, "CLONE_START_S", 0.2)
    stand_in = Stand(lambda task: POOL_TOKEN if task == "pooled" else None)
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


async def health(http: aiohttp.ClientSession, stand: Stand, task: str) -> int:
    async with http.get(stand.url.format(task_id=task) + "/health") as response:
        return response.status


async def test_a_cold_task_provisions_then_pends_then_runs_and_its_app_answers_a_clone_later(
    stand: Stand,
) -> None:
    proxy = ColdStart("http://127.0.0.1:9", stand)
    started = time.perf_counter()
    assert status_of(proxy, "RunTask", ARN + "cold", "pr1-0123abcd") == "PROVISIONING"
    assert status_of(proxy, "DescribeTasks", ARN + "cold") == "PROVISIONING"
    await asyncio.sleep(max(0.0, started + 0.25 - time.perf_counter()))
    assert status_of(proxy, "DescribeTasks", ARN + "cold") == "PENDING"
    await asyncio.sleep(max(0.0, started + 0.45 - time.perf_counter()))
    assert status_of(proxy, "DescribeTasks", ARN + "cold") == "RUNNING"
    async with aiohttp.ClientSession() as http:
        assert await health(http, stand, "cold") == 503  # cloning
        await asyncio.sleep(max(0.0, started + 0.7 - time.perf_counter()))
        assert await health(http, stand, "cold") == 200
    assert stand.ready_at["cold"] - started == pytest.approx(0.6, abs=0.08)
    # a task the benchmark never saw start is left as moto says
    assert status_of(proxy, "DescribeTasks", ARN + "other") == "RUNNING"


async def test_a_pool_tasks_app_turns_ready_only_a_clone_after_its_claim(stand: Stand) -> None:
    proxy = ColdStart("http://127.0.0.1:9", stand)
    status_of(proxy, "RunTask", ARN + "pooled", "pool-latest-0123abcd")
    assert proxy.pool == {ARN + "pooled"}
    await asyncio.sleep(0.7)
    claim = {
        "repo": "https://github.com/Codertocat/Hello-World.git",
        "git_ref": "refs/pull/1/head",
        "head_sha": "c" * 40,
        "session_id": "pr1-0123abcd",
        "prompt_token": "uatp_" + "p" * 32,
        "pr_number": 1,
    }
    base = stand.url.format(task_id="pooled")
    async with aiohttp.ClientSession() as http:
        assert await health(http, stand, "pooled") == 503  # nobody claimed it: waiting
        async with http.post(f"{base}/claim", json=claim) as refused:
            assert refused.status == 401  # no pool token
        bearer = {"Authorization": f"Bearer {POOL_TOKEN}"}
        async with http.post(f"{base}/claim", json=claim, headers=bearer) as claimed:
            assert claimed.status == 200
        assert await health(http, stand, "pooled") == 503  # cloning
        await asyncio.sleep(0.3)
        assert await health(http, stand, "pooled") == 200
    waited = stand.ready_at["pooled"] - stand.claimed_at["pooled"]
    assert waited == pytest.approx(0.2, abs=0.08)
