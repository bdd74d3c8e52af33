"""The soak's fault injection in front of moto (bench/soak/world.py): a throttling window and a
store outage answer as AWS does, in each service's protocol, so boto3 sees AWS's own errors,
and the window lifts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.soak.world import AwsFaults


@pytest.fixture
async def proxy(aws_env: dict[str, str]) -> AsyncIterator[AwsFaults]:
    faults = AwsFaults(aws_env["AWS_ENDPOINT_URL"])
    await faults.start()
    yield faults
    await faults.stop()


def client(proxy: AwsFaults, service: str) -> Any:
    no_retries = Config(retries={"max_attempts": 1, "mode": "standard"})
    return boto3.client(service, endpoint_url=proxy.url, region_name="us-east-1", config=no_retries)


async def error_code(call: Any) -> str | None:
    try:
        await asyncio.to_thread(call)
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


async def test_a_throttling_window_throttles_ecs_and_elb_but_not_the_store(
    proxy: AwsFaults,
) -> None:
    ecs, elb, dynamodb = (client(proxy, s) for s in ("ecs", "elbv2", "dynamodb"))
    proxy.throttle(5)
    assert await error_code(ecs.list_clusters) == "ThrottlingException"
    assert await error_code(elb.describe_load_balancers) == "Throttling"
    assert await error_code(dynamodb.list_tables) is None
    proxy.clear()
    assert await error_code(ecs.list_clusters) is None


async def test_a_window_lifts_by_itself(proxy: AwsFaults) -> None:
    ecs = client(proxy, "ecs")
    proxy.throttle(0.05, "unavailable")
    await asyncio.sleep(0.1)
    assert await error_code(ecs.list_clusters) is None
    assert proxy.failed == 0


async def test_a_store_outage_fails_dynamodb_only(proxy: AwsFaults) -> None:
    ecs, dynamodb = client(proxy, "ecs"), client(proxy, "dynamodb")
    proxy.store_outage(5)
    assert await error_code(dynamodb.list_tables) == "ServiceUnavailableException"
    assert await error_code(ecs.list_clusters) is None
    proxy.clear()
    assert await error_code(dynamodb.list_tables) is None
