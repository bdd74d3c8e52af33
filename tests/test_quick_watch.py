"""The watcher's quick lane: environments that are starting are probed on their own short cadence
(backing off to the poll), a bounded number at a time, by the watcher-lease holder alone; the
bot (its watcher running, the poll an hour apart) on moto, the Slack stub and stand-in
containers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bot.environments import Environments
from bot.environments.context import WATCHER_LEASE
from bot.environments.watcher import QUICK_CONCURRENCY
from bot.store import SqliteStore
from tests.harness.bot import CHANNEL, Bot, BotFactory
from tests.harness.pull_requests import PR, REPO, label, root_messages
from tests.harness.uat_aws import (
    BASE_FAMILY,
    CONTAINER,
    Containers,
    UatAccount,
    running_environment,
)

QUICK = {"UAT_QUICK_POLL_SECONDS": "0.2"}
# far below the poll (an hour here), so only the quick lane can meet it; generous, because a
# loaded CI machine is slow and a stopped task's card also reads its log: bench.readiness
# measures the real figures (goals 1.5 s and 2 s)
SOON = 5.0


def envs(bot: Bot) -> Environments:
    return bot.runtime.services.environments


async def state(bot: Bot, pr: int = PR) -> str:
    env = await bot.runtime.services.store.get_environment(REPO, pr)
    assert env is not None
    return env.state


async def until_state(bot: Bot, wanted: str, within: float) -> float:
    """Seconds until the environment's state is `wanted` (AssertionError after `within`)."""
    started = time.monotonic()
    while await state(bot) != wanted:
        if time.monotonic() - started > within:
            raise AssertionError(f"still {await state(bot)} after {within} s, not {wanted}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def quick_bot(make_bot: BotFactory, account: UatAccount, containers: Containers) -> Bot:
    bot: Bot = await make_bot(**{**account.env(containers.url), **QUICK})
    await bot.settle_startup()
    return bot


async def test_a_starting_app_shows_ready_without_waiting_for_the_poll(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot = await quick_bot(make_bot, account, containers)
    await label(bot)
    assert await state(bot) == "running"

    containers.ready(PR)

    assert await until_state(bot, "ready", within=SOON) < SOON
    await bot.slack.wait_for(lambda _: root_messages(bot)[0]["text"].endswith("— ready"), SOON)


async def test_a_task_stopped_while_starting_is_reported_without_waiting_for_the_poll(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot = await quick_bot(make_bot, account, containers)
    await label(bot)
    [task] = account.tasks()

    account.ecs.stop_task(cluster="uat", task=task["taskArn"], reason="Essential container exited")

    assert await until_state(bot, "failed", within=SOON) < SOON
    [root] = root_messages(bot)
    await bot.slack.wait_for(
        lambda stub: "Essential container exited" in stub.thread(CHANNEL, root["ts"])[-1]["text"],
        SOON,
    )


async def test_a_ready_environment_is_left_to_the_poll(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot = await quick_bot(make_bot, account, containers)
    await label(bot)
    containers.ready(PR)
    await until_state(bot, "ready", within=SOON)
    probes = len(containers.hits)

    await asyncio.sleep(1.0)  # five quick intervals

    assert len(containers.hits) == probes


async def test_a_replica_without_the_watcher_lease_does_not_probe(
    make_bot: BotFactory, account: UatAccount, containers: Containers, tmp_path: Path
) -> None:
    other = SqliteStore(str(tmp_path / "uat-bot.db"))  # the bot's store, as another replica's
    await other.open()
    assert await other.hold_lease(WATCHER_LEASE, "another-replica", 3600)  # for the whole test
    await other.close()
    bot: Bot = await make_bot(**{**account.env(containers.url), **QUICK})
    await label(bot)
    containers.ready(PR)

    await asyncio.sleep(1.0)

    assert containers.hits == []
    assert await state(bot) == "running"


async def test_probes_back_off_from_the_quick_interval_to_the_poll(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot: Bot = await make_bot(**{**account.env(containers.url), **QUICK})
    watcher = envs(bot).watcher
    envs(bot).settings = envs(bot).settings.model_copy(update={"uat_poll_seconds": 10.0})
    now = 1_000_000.0

    def started(ago: float) -> float:
        env = running_environment(REPO, PR, "s", "arn", "sha256:x", "def", now - ago)
        return watcher.pace(env, now)

    assert started(0) == 0.2
    assert started(3) == 0.2  # a thirtieth of 3 s is less than the quick interval
    assert started(60) == 2.0
    assert started(3600) == 10.0  # never less often than the poll
    unknown = running_environment(REPO, PR, "s", "arn", "sha256:x", "def", now)
    assert watcher.pace(unknown.with_facts(launch_started=None), now) == 0.2


async def test_many_starting_environments_are_probed_a_bounded_number_at_a_time(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot = await quick_bot(make_bot, account, containers)
    ecs, store = envs(bot).ecs, bot.runtime.services.store
    digest = account.digests["latest"]
    definition = await ecs.register_pinned(
        BASE_FAMILY, envs(bot).family, CONTAINER, f"img@{digest}", {"managed-by": "uat-bot"}
    )
    now = envs(bot).clock()
    prs = range(100, 100 + 3 * QUICK_CONCURRENCY)
    for pr in prs:
        arn = account.run_pr_task(definition, pr, f"pr{pr}-s")
        await store.save_environment(
            running_environment(REPO, pr, f"pr{pr}-s", arn, digest, definition, now)
        )
        envs(bot).watcher.follow(REPO, pr)
    containers.health_delay_s = 0.1
    before = envs(bot).ecs.calls.get("DescribeTasks", 0)

    deadline = time.monotonic() + 5
    while {pr for pr, _ in containers.hits} != set(prs):
        assert time.monotonic() < deadline, "not every starting environment was probed"
        await asyncio.sleep(0.05)

    assert containers.most_in_flight == QUICK_CONCURRENCY
    # the quick lane describes the due tasks together: one call per round, not one per task
    assert envs(bot).ecs.calls["DescribeTasks"] - before < len(prs) / 4
