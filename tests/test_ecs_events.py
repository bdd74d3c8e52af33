"""ECS task state changes from UAT_EVENTS_QUEUE: moto's SQS queue carries events in the shape AWS
documents (tests/fixtures/aws), and the bot (watcher running, poll and quick lane an hour apart,
so only the events move anything) applies them at once, once, in version order, deleting each
message only after it was applied."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from bot.config import load_settings
from bot.environments import Environments
from bot.environments.context import WATCHER_LEASE
from bot.environments.events import parse
from bot.errors import ConfigError
from bot.store import SqliteStore
from tests.harness.bot import CHANNEL, Bot, BotFactory, reference
from tests.harness.pull_requests import PR, REPO, label, root_messages
from tests.harness.uat_aws import CLUSTER, Containers, UatAccount

EVENT = "aws/ecs_task_state_change.RUNNING.awsdocs.json"
CLUSTER_ARN = f"arn:aws:ecs:us-east-1:123456789012:cluster/{CLUSTER}"


@pytest.fixture
def queue(aws_env: dict[str, str]) -> tuple[Any, str]:
    """moto's SQS client and a queue whose messages come back 1 s after a receive."""
    sqs = boto3.client(
        "sqs", region_name=aws_env["AWS_REGION"], endpoint_url=aws_env["AWS_ENDPOINT_URL"]
    )
    url = sqs.create_queue(QueueName="uat-ecs-events", Attributes={"VisibilityTimeout": "1"})
    return sqs, str(url["QueueUrl"])


def envs(bot: Bot) -> Environments:
    return bot.runtime.services.environments


async def state(bot: Bot) -> str:
    env = await bot.runtime.services.store.get_environment(REPO, PR)
    assert env is not None
    return env.state


def event(
    task_arn: str,
    last_status: str,
    version: int,
    *,
    event_id: str | None = None,
    cluster_arn: str = CLUSTER_ARN,
    reason: str = "",
) -> dict[str, Any]:
    """The documented event, about `task_arn` in `cluster_arn` at `version`."""
    found: dict[str, Any] = copy.deepcopy(reference(EVENT))
    found["id"] = event_id or str(uuid.uuid4())
    found["resources"] = [task_arn]
    detail = found["detail"]
    detail.update(taskArn=task_arn, clusterArn=cluster_arn, lastStatus=last_status, version=version)
    if last_status == "STOPPED":
        detail.update(
            desiredStatus="STOPPED", stoppedReason=reason, stopCode="EssentialContainerExited"
        )
    return found


def send(queue: tuple[Any, str], *events: dict[str, Any]) -> None:
    sqs, url = queue
    for one in events:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(one))


def waiting(queue: tuple[Any, str]) -> int:
    """Messages in the queue, visible or being handled."""
    sqs, url = queue
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(found[name]) for name in names)


async def until(check: Any, within: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not so after {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def drained(queue: tuple[Any, str], within: float = 3.0) -> None:
    async def empty() -> bool:
        return waiting(queue) == 0

    await until(empty, within)


async def events_bot(
    make_bot: BotFactory,
    account: UatAccount,
    containers: Containers,
    queue: tuple[Any, str],
    **overrides: str,
) -> Bot:
    bot: Bot = await make_bot(
        **{**account.env(containers.url), "UAT_EVENTS_QUEUE": queue[1], **overrides}
    )
    await bot.settle_startup()
    return bot


def test_the_documented_event_reads_as_its_task() -> None:
    found = parse(json.dumps(reference(EVENT)))

    assert found is not None
    assert found.event_id == "3317b2af-7005-947d-b652-f55e762e571a"
    assert found.version == 4
    assert found.cluster_arn == "arn:aws:ecs:us-west-2:111122223333:cluster/FargateCluster"
    assert found.task.arn.endswith("task/FargateCluster/c13b4cb40f1f4fe4a2971f76ae5a47ad")
    assert (found.task.last_status, found.task.desired_status) == ("RUNNING", "RUNNING")
    assert found.task.private_ip == "10.0.0.139"


def test_what_is_no_task_state_change_reads_as_nothing() -> None:
    other = copy.deepcopy(reference(EVENT))
    other["detail-type"] = "ECS Container Instance State Change"

    assert parse(json.dumps(other)) is None
    assert parse("not json") is None
    assert parse(json.dumps({"detail-type": "ECS Task State Change", "source": "aws.ecs"})) is None


def test_a_queue_name_instead_of_its_url_is_refused_with_what_to_set() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"UAT_EVENTS_QUEUE": "uat-ecs-events"})

    [problem] = caught.value.problems
    assert problem.startswith("UAT_EVENTS_QUEUE is invalid (must be the queue's URL")
    assert "https://sqs.us-east-1.amazonaws.com/123456789012/uat-ecs-events" in problem


async def test_a_task_stopped_by_ecs_shows_as_soon_as_its_event_arrives(
    make_bot: BotFactory, account: UatAccount, containers: Containers, queue: tuple[Any, str]
) -> None:
    bot = await events_bot(make_bot, account, containers, queue)
    await label(bot)
    containers.ready(PR)
    await envs(bot).poll()
    assert await state(bot) == "ready"
    [task] = account.tasks()
    account.ecs.stop_task(
        cluster=CLUSTER, task=task["taskArn"], reason="Essential container exited"
    )

    send(queue, event(task["taskArn"], "STOPPED", 9, reason="Essential container exited"))

    async def failed() -> bool:
        return await state(bot) == "failed"

    assert await until(failed, 2.0) < 2.0
    [root] = root_messages(bot)
    await bot.slack.wait_for(
        lambda stub: "Essential container exited" in stub.thread(CHANNEL, root["ts"])[-1]["text"],
        1.0,
    )
    await drained(queue)  # deleted once applied


async def test_a_redelivered_event_is_applied_once(
    make_bot: BotFactory, account: UatAccount, containers: Containers, queue: tuple[Any, str]
) -> None:
    bot = await events_bot(make_bot, account, containers, queue)
    await label(bot)
    [task] = account.tasks()
    running = event(task["taskArn"], "RUNNING", 5)

    send(queue, running, running)  # SQS delivers at least once; EventBridge too
    await drained(queue)

    # applying a RUNNING event asks the container's /health: once for the two copies
    assert containers.hits == [(PR, "health")]


async def test_an_event_older_than_one_applied_or_going_backwards_changes_nothing(
    make_bot: BotFactory, account: UatAccount, containers: Containers, queue: tuple[Any, str]
) -> None:
    bot = await events_bot(make_bot, account, containers, queue)
    await label(bot)
    [task] = account.tasks()
    arn = task["taskArn"]
    send(queue, event(arn, "RUNNING", 7))
    await drained(queue)
    assert containers.hits == [(PR, "health")]

    containers.failing(PR, "npm install failed")  # what applying an event would now report
    send(queue, event(arn, "RUNNING", 6), event(arn, "STOPPED", 5, reason="old news"))
    await drained(queue)
    send(queue, event(arn, "PENDING", 8))  # newer, but the task cannot go back to pending
    await drained(queue)

    assert containers.hits == [(PR, "health")]
    assert await state(bot) == "running"


async def test_an_event_whose_application_fails_comes_back_and_is_applied(
    make_bot: BotFactory,
    account: UatAccount,
    containers: Containers,
    queue: tuple[Any, str],
    mocker: Any,
) -> None:
    bot = await events_bot(make_bot, account, containers, queue)
    await label(bot)
    [task] = account.tasks()
    watcher = envs(bot).watcher
    real = watcher.observe
    calls: list[str] = []

    async def once_failing(*args: Any) -> None:
        calls.append("observe")
        if len(calls) == 1:
            raise RuntimeError("the store is down")
        await real(*args)

    mocker.patch.object(watcher, "observe", side_effect=once_failing)
    account.ecs.stop_task(cluster=CLUSTER, task=task["taskArn"], reason="Task failed to start")

    send(queue, event(task["taskArn"], "STOPPED", 3, reason="Task failed to start"))

    async def failed() -> bool:
        return await state(bot) == "failed"

    await until(failed, 4.0)  # after the queue's 1 s visibility timeout
    assert calls == ["observe", "observe"]
    await drained(queue)


async def test_events_of_another_cluster_change_nothing_and_are_deleted(
    make_bot: BotFactory, account: UatAccount, containers: Containers, queue: tuple[Any, str]
) -> None:
    bot = await events_bot(make_bot, account, containers, queue)
    await label(bot)
    [task] = account.tasks()
    other = "arn:aws:ecs:us-east-1:123456789012:cluster/production"

    send(queue, event(task["taskArn"], "STOPPED", 9, cluster_arn=other, reason="not ours"))
    await drained(queue)

    assert await state(bot) == "running"
    assert containers.hits == []


async def test_only_the_watcher_lease_holder_reads_the_queue(
    make_bot: BotFactory,
    account: UatAccount,
    containers: Containers,
    queue: tuple[Any, str],
    tmp_path: Path,
) -> None:
    other = SqliteStore(str(tmp_path / "uat-bot.db"))  # the bot's store, as another replica's
    await other.open()
    assert await other.hold_lease(WATCHER_LEASE, "another-replica", 3600)
    await other.close()
    bot: Bot = await make_bot(**{**account.env(containers.url), "UAT_EVENTS_QUEUE": queue[1]})
    await label(bot)
    [task] = account.tasks()

    send(queue, event(task["taskArn"], "STOPPED", 9, reason="Essential container exited"))
    await asyncio.sleep(1.5)

    assert waiting(queue) == 1  # left for the holder
    assert await state(bot) == "running"


async def test_while_events_flow_the_poll_runs_six_times_less_often(
    make_bot: BotFactory, account: UatAccount, containers: Containers, queue: tuple[Any, str]
) -> None:
    bot = await events_bot(make_bot, account, containers, queue, UAT_POLL_SECONDS="0.25")
    await label(bot)
    [task] = account.tasks()
    containers.ready(PR)  # ready: left to the poll, off the quick lane

    async def ready() -> bool:
        return await state(bot) == "ready"

    await until(ready, 2.0)
    calls = envs(bot).ecs.calls

    async def describes_in(seconds: float) -> int:
        before = calls.get("DescribeTasks", 0)
        await asyncio.sleep(seconds)
        return calls.get("DescribeTasks", 0) - before

    assert await describes_in(1.5) >= 5  # a round every 0.25 s
    send(queue, event(task["taskArn"], "RUNNING", 5))
    await drained(queue)

    assert await describes_in(1.5) <= 2  # a round every 1.5 s while events flow
