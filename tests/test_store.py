"""The SQLite store's own concerns: migrations and WAL mode.

What every store must do (dedupe, compare-and-set, locks, leases, audit, relays) is asserted
against SQLite and DynamoDB alike in tests/test_store_contract.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import MIGRATIONS, SqliteStore


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
