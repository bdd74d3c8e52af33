"""The SQLite store's own concerns: migrations and WAL mode.

What every store must do (dedupe, compare-and-set, locks, leases, audit, relays) is asserted
against SQLite and DynamoDB alike in tests/test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import (
    RETENTION_S,
    Carried,
    Facts,
    LeaseLost,
    Post,
    Replaced,
    SqliteStore,
    State,
    renewing,
)
from bot.store.sqlite import MIGRATIONS


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state" / "uat.db", clock=clock)
    await s.open()
    yield s
    await s.close()


async def test_schema_is_migrated_once_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "uat.db"
    first = SqliteStore(path)
    await first.open()
    assert await first.schema_version() == len(MIGRATIONS)
    await first.claim("d-1", "pull_request")
    await first.close()
    second = SqliteStore(path)
    await second.open()
    assert await second.schema_version() == len(MIGRATIONS)
    assert not await second.claim("d-1", "pull_request")
    await second.close()


async def test_wal_mode_is_on(store: SqliteStore) -> None:
    async with store.db.execute("PRAGMA journal_mode") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == "wal"


async def test_prune_forgets_old_one_time_keys_and_message_keys_only(
    store: SqliteStore, clock: Clock
) -> None:
    await store.claim("old-delivery", "pull_request")
    await store.reserve_post(Post("old-posted", "C1"))
    await store.posted("old-posted", "1.1")
    await store.reserve_post(Post("old-unposted", "C1"))  # a post that never went out
    clock.now += RETENTION_S
    await store.claim("new-delivery", "pull_request")
    await store.reserve_post(Post("new-posted", "C1"))
    await store.posted("new-posted", "1.2")
    assert await store.prune(clock.now - RETENTION_S + 1) == 3
    assert await store.claim("old-delivery", "pull_request")  # forgotten: claimable again
    assert not await store.claim("new-delivery", "pull_request")
    assert (await store.reserve_post(Post("old-posted", "C1")))[1]  # forgotten
    assert (await store.reserve_post(Post("new-posted", "C1")))[0].ts == "1.2"
    assert (await store.reserve_post(Post("old-unposted", "C1")))[1]
    assert await store.prune(clock.now - RETENTION_S + 1) == 0


async def test_a_lease_taken_over_stops_the_work_under_it(store: SqliteStore) -> None:
    """The holder stalled past its lease; another took it: the next renewal stops the holder's
    work with LeaseLost, and the new holder's lease is left alone."""
    assert await store.hold_lease("relay:j", "one", 0.3)
    reached_the_end = False
    with pytest.raises(LeaseLost):
        async with renewing(store, "relay:j", "one", 0.3):
            await store.release_lock("relay:j")  # what expiry and a takeover look like
            assert await store.hold_lease("relay:j", "two", 60)
            await asyncio.sleep(1)
            reached_the_end = True
    assert not reached_the_end
    lock = await store.get_lock("relay:j")
    assert lock is not None and lock.holder == "two"


async def test_a_lease_is_renewed_while_the_work_runs_and_released_after(
    store: SqliteStore,
) -> None:
    assert await store.hold_lease("launch:x", "one", 0.3)
    async with renewing(store, "launch:x", "one", 0.3):
        await asyncio.sleep(0.6)  # twice the lease: renewals kept it
        assert not await store.hold_lease("launch:x", "two", 60)
    assert await store.get_lock("launch:x") is None


async def test_prune_keeps_what_came_at_the_cut_and_counts_what_it_forgot(
    store: SqliteStore, clock: Clock
) -> None:
    await store.claim("at-the-cut", "pull_request")
    await store.reserve_post(Post("post-at-the-cut", "C1"))
    assert await store.prune(clock.now) == 0  # older than the cut only
    await store.claim("another", "card")
    assert await store.prune(clock.now + 0.5) == 3
    assert not await store.claimed("at-the-cut") and not await store.claimed("another")


async def test_a_lock_that_lapses_between_a_failed_take_and_the_read_back_is_taken_again(
    store: SqliteStore, clock: Clock
) -> None:
    await store.acquire_lock("images", "one", "build", 1.0)
    ticks = iter([clock.now + 0.5, clock.now + 2.0, clock.now + 3.0])
    store._clock = lambda: next(ticks)  # held when tried, lapsed when read back
    lock = await store.acquire_lock("images", "two", "promote", 10.0)
    assert (lock.holder, lock.reason, lock.acquired_at, lock.expires_at) == (
        "two",
        "promote",
        clock.now + 3.0,
        clock.now + 13.0,
    )


async def test_a_lease_is_renewed_every_third_of_its_time_to_live(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_sleep = asyncio.sleep
    asked: list[float] = []

    async def sleep(delay: float) -> None:
        asked.append(delay)
        await real_sleep(0.01)

    assert await store.hold_lease("launch:y", "one", 0.3)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    async with renewing(store, "launch:y", "one", 30):
        await real_sleep(0.2)
    assert asked and set(asked) == {10.0}


async def test_work_cancelled_from_outside_is_cancelled_not_lease_lost(store: SqliteStore) -> None:
    assert await store.hold_lease("launch:c", "one", 30)
    started = asyncio.Event()

    async def work() -> None:
        async with renewing(store, "launch:c", "one", 30):
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.get_lock("launch:c") is None  # released: the lease was not lost


async def test_a_renewal_that_fails_once_is_tried_again(store: SqliteStore) -> None:
    failures = [RuntimeError("database is locked")]
    hold = store.hold_lease

    async def flaky(name: str, holder: str, ttl_s: float) -> bool:
        if failures:
            raise failures.pop()
        return await hold(name, holder, ttl_s)

    assert await store.hold_lease("launch:z", "one", 0.3)
    store.hold_lease = flaky  # type: ignore[method-assign]
    async with renewing(store, "launch:z", "one", 0.3):
        await asyncio.sleep(0.6)
        assert not await hold("launch:z", "two", 60)
    assert failures == [] and await store.get_lock("launch:z") is None


# ---------------------------------------------------------------- rows written before Facts

# An environment's data column as the code before the typed record wrote it (a ready
# environment that replaced another task, with a cancelled prompt and one carried over).
OLD_ROW = (
    '{"author": "octocat", "branch": "changes", '
    '"carry": [{"job": "job-0", "prompt": "add a footer", "user": "U0SOMEONE"}], '
    '"clone_url": "https://github.com/acme/web.git", "head_sha": "1111111aaaa", '
    '"health": {"phase": "ready", "ready": true}, "idle_until": 1700028800.0, '
    '"image_tags": ["latest", "abc1234"], "label_gone": false, "last_seen": "RUNNING", '
    '"launch_started": 1700000000.0, "prompt_cancels": {"job-1": "U0SOMEONE"}, "reason": "", '
    '"replace": {"session": "pr2-99999999", "task_arn": "arn:aws:ecs:eu-west-1:1:task/uat/old", '
    '"task_definition": null}, "requested_by": "U0DEPLOYER", "session": "pr2-0a1b2c3d", '
    '"shown": "ready", "task_definition": "arn:aws:ecs:eu-west-1:1:task-definition/app-uat-bot:3", '
    '"task_ip": "10.0.1.23", "title": "Add a footer", '
    '"url": "https://github.com/acme/web/pull/2", "warned": false}'
)


def write_row(path: Path, state: str, data: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO environments (repo, pr, state, label, task_arn, thread_ts, image_digest,"
            " data, created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, 1, 1)",
            (
                "acme/web",
                2,
                state,
                "uat",
                "arn:aws:ecs:eu-west-1:1:task/uat/new",
                "1.2",
                None,
                data,
            ),
        )


def read_data(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as db:
        [(data,)] = db.execute("SELECT data FROM environments WHERE pr = 2").fetchall()
    loaded: dict[str, object] = json.loads(data)
    return loaded


async def test_an_old_row_loads_into_the_typed_record_and_is_written_back_the_same(
    store: SqliteStore, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "uat.db"
    write_row(path, "ready", OLD_ROW)
    env = await store.get_environment("acme/web", 2)
    assert env is not None and env.state is State.READY
    facts = env.facts
    assert (facts.session, facts.launch_started, facts.idle_until) == (
        "pr2-0a1b2c3d",
        1700000000.0,
        1700028800.0,
    )
    assert facts.replace == Replaced("arn:aws:ecs:eu-west-1:1:task/uat/old", None, "pr2-99999999")
    assert facts.carry == (Carried("add a footer", "U0SOMEONE", "job-0"),)
    assert facts.prompt_cancels == {"job-1": "U0SOMEONE"}
    assert facts.image_tags == ("latest", "abc1234") and facts.extra == {}
    await store.save_environment(env.with_facts(warned=True))
    assert read_data(path) == {**json.loads(OLD_ROW), "warned": True}


async def test_an_old_row_keeps_keys_it_does_not_know_and_defaults_those_it_lacks(
    store: SqliteStore, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "uat.db"
    write_row(path, "new", '{"title": "Add a footer", "from_a_later_version": [1, {"a": null}]}')
    env = await store.get_environment("acme/web", 2)
    assert env is not None and env.state is State.NEW
    assert env.facts == Facts(
        title="Add a footer", extra={"from_a_later_version": [1, {"a": None}]}
    )
    assert (env.facts.session, env.facts.launch_started, env.facts.replace) == ("", None, None)
    await store.save_environment(env.with_facts(reason="x"))
    written = read_data(path)
    assert written["from_a_later_version"] == [1, {"a": None}] and written["reason"] == "x"
    assert "launch_started" not in written and "replace" not in written  # as before: absent
