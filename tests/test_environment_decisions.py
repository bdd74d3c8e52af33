"""What the launcher and the watcher decide, against recording fakes of ECS, ECR and Slack and
a real SQLite store in a temp dir: fast, beside the end-to-end tests in test_environments.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.aws.gateways import ImageInfo, TaskInfo
from bot.config import Settings, load_settings
from bot.environments import Context, Environments, PullRequest
from bot.errors import UserError
from bot.slack import slack_ui
from bot.store import Environment, Facts, SqliteStore, State, Store
from bot.store.dynamodb import DynamoStore
from bot.tasks import TaskSupervisor
from tests.harness.fakes import (
    ACCOUNT,
    AnsweringContainers,
    RecordingChat,
    RecordingEcr,
    RecordingEcs,
)
from tests.harness.uat_aws import atomic_dynamodb

REPO = "acme/web"
THREAD = "1000.000001"
DIGEST = "sha256:" + "ab" * 32


@dataclass
class World:
    environments: Environments
    store: Store
    ecs: RecordingEcs
    ecr: RecordingEcr
    chat: RecordingChat
    containers: AnsweringContainers
    tasks: TaskSupervisor
    settings: Settings

    async def running(self, pr: int, *, status: str = "RUNNING", **task: Any) -> TaskInfo:
        """An environment whose launch ran its task (`status` is what ECS says now)."""
        session = f"pr{pr}-0000"
        arn = f"{ACCOUNT}:task/uat/{pr:032x}"
        info = TaskInfo(arn, status, "RUNNING", started_by=session, **task)
        self.ecs.tasks[arn] = info
        now = self.environments.clock()
        facts = Facts(session=session, launch_started=now, idle_until=now + 3600)
        await self.store.save_environment(
            Environment(REPO, pr, State.RUNNING, "uat", arn, THREAD + str(pr), DIGEST, facts)
        )
        return info

    async def env(self, pr: int) -> Environment:
        env = await self.store.get_environment(REPO, pr)
        assert env is not None
        return env


SETTINGS = {
    "UAT_CHANNEL": "C0UAT",
    "UAT_ECS_CLUSTER": "uat",
    "UAT_TASK_DEFINITION": "app",
    "UAT_CONTAINER_URL": "http://127.0.0.1:9/{pr}",
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteStore(tmp_path / "uat.db")
    async for made in world_on(store, load_settings(SETTINGS)):
        yield made


@pytest.fixture(params=["sqlite", "dynamodb"])
async def either_world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    """The world on either store: SQLite, or DynamoDB on moto (its writes atomic, as AWS's)."""
    if request.param == "sqlite":
        store: Store = SqliteStore(tmp_path / "uat.db")
        settings = load_settings(SETTINGS)
    else:
        aws_env: dict[str, str] = request.getfixturevalue("aws_env")
        atomic_dynamodb(monkeypatch.setattr)
        table = {"UAT_STORE": "dynamodb", "UAT_DYNAMODB_TABLE": f"uat-{uuid.uuid4().hex[:8]}"}
        settings = load_settings({**SETTINGS, **aws_env, **table})
        store = DynamoStore(settings)
    async for made in world_on(store, settings):
        yield made


async def world_on(store: Store, settings: Settings) -> AsyncIterator[World]:
    await store.open()
    ecs, ecr, chat, tasks = (
        RecordingEcs(settings),
        RecordingEcr(settings),
        RecordingChat(),
        TaskSupervisor(),
    )
    ecr.images["latest"] = ImageInfo(DIGEST, ("latest", "abc1234"), None)
    containers = AnsweringContainers()
    environments = Environments(Context(settings, store, chat, ecr, ecs, containers, tasks))
    yield World(environments, store, ecs, ecr, chat, containers, tasks, settings)
    await tasks.close()
    await environments.close()
    await store.close()


# ------------------------------------------------- requests in the order they were received
# A command is received (stored by the inbox) before it runs; after a crash it runs seconds
# later. A stop or restart received before the PR was asked for something else does not undo it.


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_stop_received_before_a_relabel_leaves_the_relaunched_environment_running(
    either_world: World,
) -> None:
    world, clock = either_world, Clock()
    world.environments.clock = clock
    await world.running(7)
    stop_received = clock.now
    clock.now += 5  # meanwhile the PR was closed and labelled again
    assert await world.environments.request_stop(REPO, 7, "PR closed", "U2")
    await world.tasks.join()
    await world.environments.request_start(PullRequest(REPO, 7), "uat", "U3")
    await world.tasks.join()
    relaunched = await world.env(7)
    assert relaunched.state == "running"
    clock.now += 5
    with pytest.raises(UserError) as refused:  # the stop resumed after a crash
        await world.environments.request_stop(REPO, 7, "stopped", "U1", asked_at=stop_received)
    assert str(refused.value) == slack_ui.not_stopped_relaunched(relaunched)
    await world.tasks.join()
    assert (await world.env(7)).state == "running"
    assert await world.environments.request_stop(REPO, 7, "stopped", "U1", asked_at=clock.now)


async def test_a_label_on_a_running_environment_outdates_a_stop_received_before_it(
    either_world: World,
) -> None:
    world, clock = either_world, Clock()
    world.environments.clock = clock
    await world.running(8)
    stop_received = clock.now
    clock.now += 5
    assert await world.environments.request_start(PullRequest(REPO, 8), "uat", "U3") is None
    with pytest.raises(UserError):
        await world.environments.request_stop(REPO, 8, "stopped", "U1", asked_at=stop_received)
    await world.tasks.join()
    assert (await world.env(8)).state == "running" and world.ecs.said("StopTask") == []


async def test_a_restart_received_before_a_stop_does_not_start_the_environment_again(
    either_world: World,
) -> None:
    world, clock = either_world, Clock()
    world.environments.clock = clock
    await world.running(9)
    restart_received = clock.now
    clock.now += 5
    assert await world.environments.request_stop(REPO, 9, "stopped", "U2")
    await world.tasks.join()
    stopped = await world.env(9)
    assert stopped.state == "stopped"
    clock.now += 5
    with pytest.raises(UserError) as refused:  # the restart resumed after a crash
        await world.environments.restart(REPO, 9, "U1", asked_at=restart_received)
    assert str(refused.value) == slack_ui.not_started_overtaken(stopped)
    await world.tasks.join()
    assert (await world.env(9)).state == "stopped" and world.ecs.said("RunTask") == []


async def test_a_stop_run_again_after_a_crash_that_had_recorded_it_is_still_its_stop(
    either_world: World,
) -> None:
    world, clock = either_world, Clock()
    world.environments.clock = clock
    await world.running(10)
    received = clock.now
    assert await world.environments.request_stop(REPO, 10, "stopped", "U1", asked_at=received)
    await world.tasks.join()
    clock.now += 12  # the first run was cut short after recording it; its answer never left
    assert await world.environments.request_stop(REPO, 10, "stopped", "U1", asked_at=received)
    await world.tasks.join()
    assert (await world.env(10)).state == "stopped"
    assert not await world.environments.request_stop(REPO, 10, "stopped", "U4")


# ---------------------------------------------------------------- the launcher


async def test_a_label_on_a_pr_already_running_that_label_starts_nothing(world: World) -> None:
    await world.running(7)
    started = await world.environments.request_start(PullRequest(REPO, 7), "uat", "U1")
    await world.tasks.join()
    assert started is None
    assert world.ecs.said("RunTask") == [] and world.ecr.asked == []
    assert (await world.env(7)).state == "running"


async def test_a_label_runs_one_task_pinned_to_the_labels_image(world: World) -> None:
    saved = await world.environments.request_start(PullRequest(REPO, 8), "uat", "U1")
    await world.tasks.join()
    assert saved is not None and saved.state == "starting"
    assert world.ecr.asked == ["latest"]
    assert [image.endswith("@" + DIGEST) for image in world.ecs.said("RegisterTaskDefinition")] == [
        True
    ]
    [session] = world.ecs.said("RunTask")
    env = await world.env(8)
    assert (env.state, env.facts.session, env.image_digest) == ("running", session, DIGEST)


async def test_a_label_with_no_image_fails_and_runs_nothing(world: World) -> None:
    del world.ecr.images["latest"]
    await world.environments.request_start(PullRequest(REPO, 9), "uat", "U1")
    await world.tasks.join()
    env = await world.env(9)
    assert (env.state, env.facts.reason) == ("failed", slack_ui.no_image("latest"))
    assert world.ecs.said("RunTask") == []


async def test_a_stop_while_launching_stops_the_task_it_just_ran(world: World) -> None:
    async def stop_arrives() -> None:
        assert await world.environments.request_stop(REPO, 10, "`uat` removed", "U2")

    world.ecs.while_running = stop_arrives
    await world.environments.request_start(PullRequest(REPO, 10), "uat", "U1")
    await world.tasks.join()
    [arn] = world.ecs.tasks
    assert arn in world.ecs.said("StopTask")
    assert world.ecs.tasks[arn].last_status == "STOPPED"
    assert (await world.env(10)).state == "stopped"


# ---------------------------------------------------------------- the watcher


async def test_a_task_that_stopped_marks_the_environment_failed_with_ecss_reason(
    world: World,
) -> None:
    task = await world.running(
        11, status="STOPPED", stopped_reason="Essential container exited", exit_code=1
    )
    await world.environments.poll()
    env = await world.env(11)
    assert (env.state, env.facts.reason) == ("failed", slack_ui.stop_reason(task))
    assert world.chat.replies(env.thread_ts or "") == [slack_ui.failed_reply(env)[0]]


async def test_ready_goes_to_ready_once_and_replies_once(world: World) -> None:
    await world.running(12)
    world.containers.answers.update({12: {"ready": True}})
    for _ in range(3):
        await world.environments.poll()
    await world.tasks.join()
    env = await world.env(12)
    assert env.state == "ready"
    ready = slack_ui.ready_reply(env, world.settings)[0]
    assert world.chat.replies(env.thread_ts or "") == [ready]


async def test_one_prs_failing_check_does_not_stop_the_others_from_being_applied(
    world: World,
) -> None:
    for pr in (13, 14, 15):
        await world.running(pr)
    world.containers.answers.update(
        {13: {"ready": True}, 14: RuntimeError("the probe broke"), 15: {"ready": True}}
    )
    await world.environments.poll()
    await world.tasks.join()
    states = [(await world.env(pr)).state for pr in (13, 14, 15)]
    assert states == ["ready", "running", "ready"]
    failures = world.environments.metrics.registry.get_sample_value(
        "uat_watch_check_failures_total"
    )
    assert failures == 1
    assert world.environments.watcher.first_round.is_set()


async def test_a_container_that_says_it_failed_fails_the_environment_with_its_error(
    world: World,
) -> None:
    await world.running(16)
    world.containers.answers.update({16: {"phase": "failed", "error": "npm ci exited 1"}})
    await world.environments.poll()
    env = await world.env(16)
    assert (env.state, env.facts.reason) == ("failed", "the container failed: npm ci exited 1")
    assert env.task_arn in world.ecs.said("StopTask")
