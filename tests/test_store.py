"""The SQLite store's own concerns: migrations and WAL mode.

What every store must do (dedupe, compare-and-set, locks, leases, audit, relays) is asserted
against SQLite and DynamoDB alike in tests/test_store_contract.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import RETENTION_S, LeaseLost, Post, SqliteStore, renewing
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
