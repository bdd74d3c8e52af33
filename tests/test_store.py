"""The SQLite store: migrations, delivery dedupe, compare-and-set, locks with expiry, audit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.store import (
    MIGRATIONS,
    AuditEntry,
    Environment,
    LockHeld,
    Relay,
    SqliteStore,
    VersionConflict,
)


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


async def test_a_delivery_is_claimed_once_even_concurrently(store: SqliteStore) -> None:
    results = await asyncio.gather(*(store.claim("d-7", "pull_request") for _ in range(20)))
    assert results.count(True) == 1
    await store.forget("d-7")
    assert await store.claim("d-7", "pull_request")


async def test_environment_writes_are_compare_and_set(store: SqliteStore) -> None:
    env = Environment(repo="acme/web", pr=12, state="starting", label="uat", data={"title": "x"})
    saved = await store.save_environment(env)
    assert saved.version == 1 and saved.created_at == saved.updated_at
    with pytest.raises(VersionConflict):
        await store.save_environment(env)  # a second insert of the same PR
    running = await store.save_environment(replace(saved, state="running", task_arn="arn:t"))
    assert running.version == 2
    with pytest.raises(VersionConflict):
        await store.save_environment(replace(saved, state="stopped"))  # stale version
    loaded = await store.get_environment("acme/web", 12)
    assert loaded == running
    assert loaded is not None and loaded.data == {"title": "x"}


async def test_only_one_of_many_concurrent_updates_wins(store: SqliteStore) -> None:
    saved = await store.save_environment(Environment(repo="acme/web", pr=1, state="starting"))
    outcomes = await asyncio.gather(
        *(store.save_environment(replace(saved, state=f"s{i}")) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert all(isinstance(o, VersionConflict) for o in outcomes if isinstance(o, Exception))


async def test_list_environments_by_state(store: SqliteStore) -> None:
    await store.save_environment(Environment(repo="a/b", pr=1, state="running"))
    await store.save_environment(Environment(repo="a/b", pr=2, state="stopped"))
    await store.save_environment(Environment(repo="a/b", pr=3, state="ready"))
    active = await store.list_environments({"running", "ready"})
    assert [e.pr for e in active] == [1, 3]
    assert len(await store.list_environments()) == 3
    assert await store.list_environments([]) == []


async def test_lock_is_exclusive_released_and_expires(store: SqliteStore, clock: Clock) -> None:
    lock = await store.acquire_lock("images", "U1", "staging abc1234", ttl_s=600)
    assert lock.holder == "U1"
    with pytest.raises(LockHeld) as held:
        await store.acquire_lock("images", "U2", "promote", ttl_s=600)
    assert held.value.lock.holder == "U1" and held.value.lock.reason == "staging abc1234"
    assert not await store.release_lock("images", "U2")  # not theirs to release
    assert await store.release_lock("images", "U1")
    assert await store.get_lock("images") is None
    await store.acquire_lock("images", "U2", "promote", ttl_s=60)
    clock.now += 61  # the holder died: the lock expires
    assert await store.get_lock("images") is None
    taken = await store.acquire_lock("images", "U3", "rollback", ttl_s=60)
    assert taken.holder == "U3"


async def test_audit_is_newest_first_and_limited(store: SqliteStore, clock: Clock) -> None:
    for i in range(25):
        clock.now += 1
        await store.append_audit(
            AuditEntry(actor="U1", action=f"op{i}", result="ok", from_digest="sha256:a")
        )
    recent = await store.recent_audit(20)
    assert len(recent) == 20
    assert recent[0].action == "op24" and recent[-1].action == "op5"
    assert recent[0].at == clock.now and recent[0].from_digest == "sha256:a"


async def test_wal_mode_is_on(store: SqliteStore) -> None:
    async with store.db.execute("PRAGMA journal_mode") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == "wal"


async def test_a_lease_is_renewed_by_its_holder_and_taken_over_when_it_lapses(
    store: SqliteStore, clock: Clock
) -> None:
    assert await store.hold_lease("watcher", "replica-a", ttl_s=20)
    assert not await store.hold_lease("watcher", "replica-b", ttl_s=20)
    clock.now += 15
    assert await store.hold_lease("watcher", "replica-a", ttl_s=20)  # renewed
    clock.now += 15
    assert not await store.hold_lease("watcher", "replica-b", ttl_s=20)  # still a's
    clock.now += 6  # a stopped renewing
    assert await store.hold_lease("watcher", "replica-b", ttl_s=20)
    assert not await store.hold_lease("watcher", "replica-a", ttl_s=20)


async def test_relays_are_remembered_until_closed_once(store: SqliteStore) -> None:
    relay = Relay("job-1", "acme/web", 7, "U1", "1700.0001", "add a button")
    await store.open_relay(relay)
    await store.open_relay(relay)  # idempotent
    [kept] = await store.open_relays()
    assert kept.job_id == "job-1" and kept.prompt == "add a button" and kept.created_at > 0
    assert await store.close_relay("acme/web", 7, "job-1")
    assert not await store.close_relay("acme/web", 7, "job-1")
    assert await store.open_relays() == []
