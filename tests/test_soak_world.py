"""The soak's fault injection in front of moto (bench/soak/world.py): a throttling window and a
store outage answer as AWS does, in each service's protocol, so boto3 sees AWS's own errors,
and the window lifts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.environments import moto_server
from bench.soak.world import AwsFaults
from tests.harness.uat_aws import partition_queries

RACERS = 16
ROUNDS = 20


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


def test_the_soaks_moto_answers_a_query_from_its_partition_alone(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB's Query reads one partition whatever else the table holds; moto's walked the
    whole table, so the soak's store calls slowed as its table grew, until inbox items a kill
    left were taken over too late (bench/environments.py runs moto with `partition_queries`)."""
    from moto.dynamodb.models.table import Table

    walked: list[int] = []  # how many items each walk of a table went through
    every_item = Table.all_items

    def counted(self: Any) -> Any:
        items = every_item(self)
        walked.append(len(items))
        return items

    monkeypatch.setattr(Table, "all_items", counted)
    partition_queries(monkeypatch.setattr)
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(
        TableName="soak",
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for sk in ("a", "b", "c"):
        dynamodb.put_item(TableName="soak", Item={"pk": {"S": "inbox"}, "sk": {"S": sk}})
    for n in range(40):
        dynamodb.put_item(TableName="soak", Item={"pk": {"S": f"claim#{n}"}, "sk": {"S": "x"}})
    query: dict[str, Any] = {
        "TableName": "soak",
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": "inbox"}},
        "ScanIndexForward": False,
        "Limit": 2,
    }
    first = dynamodb.query(**query)
    rest = dynamodb.query(**query, ExclusiveStartKey=first["LastEvaluatedKey"])
    assert [i["sk"]["S"] for i in first["Items"] + rest["Items"]] == ["c", "b", "a"]
    assert "LastEvaluatedKey" not in rest
    absent = {**query, "ExpressionAttributeValues": {":pk": {"S": "nothing"}}}
    assert dynamodb.query(**absent)["Items"] == []
    assert all(count <= 3 for count in walked), walked


def test_the_soaks_moto_lets_one_of_many_racing_conditional_writes_to_an_item_pass() -> None:
    """Two replicas' compare-and-sets on one environment: DynamoDB lets exactly one pass, and so
    must the soak's moto (bench/environments.py), or the soak sees lost updates DynamoDB never
    makes (a stop overwriting the launch a newer label recorded)."""
    with moto_server() as endpoint:
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        dynamodb.create_table(
            TableName="race",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        key = {"pk": {"S": "env"}}
        dynamodb.put_item(TableName="race", Item={**key, "version": {"N": "0"}})
        start = threading.Barrier(RACERS)

        def write(racer: int) -> bool:
            start.wait()
            try:
                dynamodb.update_item(
                    TableName="race",
                    Key=key,
                    UpdateExpression="SET version = :next, winner = :me",
                    ConditionExpression="version = :seen",
                    ExpressionAttributeValues={
                        ":seen": {"N": "0"},
                        ":next": {"N": "1"},
                        ":me": {"N": str(racer)},
                    },
                )
            except ClientError:
                return False
            return True

        for _ in range(ROUNDS):
            dynamodb.put_item(TableName="race", Item={**key, "version": {"N": "0"}})
            with concurrent.futures.ThreadPoolExecutor(RACERS) as pool:
                passed = list(pool.map(write, range(RACERS)))
            assert sum(passed) == 1
