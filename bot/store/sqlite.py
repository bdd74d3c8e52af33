"""The default store: SQLite, one file in WAL mode. No SQL leaves this module."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from aiosqlite.context import contextmanager

from bot import gateway_text
from bot.store.records import (
    AuditEntry,
    Clock,
    Environment,
    Facts,
    InboxItem,
    Lock,
    LockHeld,
    PoolEntry,
    Post,
    Relay,
    State,
    StoreUnavailable,
    VersionConflict,
    next_pool_version,
    next_version,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000  # how long SQLite itself waits for another writer, while running
OPEN_BUSY_TIMEOUT_MS = 1000  # ... and at start, where a locked file must be said within seconds
BUSY_RETRIES = (0.05, 0.2, 0.8)  # then a statement still busy is retried after these (jittered)

# SQLite's primary result codes (https://sqlite.org/rescode.html) and what each says of the file.
TRANSIENT = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
PROBLEMS = {
    5: gateway_text.STORE_LOCKED,  # SQLITE_BUSY
    6: gateway_text.STORE_LOCKED,  # SQLITE_LOCKED
    8: gateway_text.STORE_READ_ONLY,  # SQLITE_READONLY
    10: gateway_text.STORE_FULL,  # SQLITE_IOERR: a write the OS refused (EFBIG, EIO)
    11: gateway_text.STORE_CORRUPT,  # SQLITE_CORRUPT
    13: gateway_text.STORE_FULL,  # SQLITE_FULL
    14: gateway_text.STORE_READ_ONLY,  # SQLITE_CANTOPEN
    23: gateway_text.STORE_READ_ONLY,  # SQLITE_AUTH
    26: gateway_text.STORE_CORRUPT,  # SQLITE_NOTADB
    3: gateway_text.STORE_READ_ONLY,  # SQLITE_PERM
}


MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE environments (
        repo TEXT NOT NULL,
        pr INTEGER NOT NULL,
        state TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        task_arn TEXT,
        thread_ts TEXT,
        image_digest TEXT,
        data TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (repo, pr)
    );
    CREATE INDEX environments_state ON environments (state);
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        event TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE TABLE locks (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        reason TEXT NOT NULL,
        acquired_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        from_digest TEXT,
        to_digest TEXT
    );
    """,
    # 2: prompts being relayed to containers, resumed after a restart
    """
    CREATE TABLE relays (
        repo TEXT NOT NULL,
        pr INTEGER NOT NULL,
        job_id TEXT NOT NULL,
        user TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        prompt TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (repo, pr, job_id)
    );
    """,
    # 3: messages posted at most once (see bot/slack/outbox.py)
    """
    CREATE TABLE posts (
        key TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        thread_ts TEXT,
        ts TEXT,
        created_at REAL NOT NULL
    );
    """,
    # 4: commands and clicks acknowledged but not done yet (see bot/slack/inbox.py)
    """
    CREATE TABLE inbox (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        received_at REAL NOT NULL,
        holder TEXT NOT NULL,
        held_until REAL NOT NULL
    );
    """,
    # 5: warm-pool tasks (see bot/environments/pool.py)
    """
    CREATE TABLE pool (
        pool_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL
    );
    """,
)

_ENV_COLUMNS = (
    "repo, pr, state, label, task_arn, thread_ts, image_digest, data, created_at, updated_at, "
    "version"
)


class SqliteStore:
    """The default store: one SQLite file in WAL mode behind one connection.

    aiosqlite runs every statement, in order, on the connection's own thread, so the event loop
    never blocks. Every write is one statement (atomic on its own, the version or expiry check
    inside it), so writes need no lock of ours; only migrations, several statements in one
    transaction, take one.
    """

    def __init__(self, path: str | Path, clock: Clock = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Open, migrate and probe the file (a read of every table, a write); a file that cannot
        be used raises StoreUnavailable naming it, the cause and what to do, and leaves nothing
        open (aiosqlite's thread would keep the process alive)."""
        try:
            await self._open()
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise self._unavailable(exc) from None
        except BaseException:
            await self.close()
            raise

    async def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = db = await aiosqlite.connect(self.path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute(f"PRAGMA busy_timeout={OPEN_BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await self._migrate()
        async with db.execute("PRAGMA quick_check") as cur:  # a truncated file shows here
            verdict = [str(row[0]) for row in await cur.fetchall()]
        if verdict != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(verdict[:2]))
        await self._probe_write()
        await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    async def _probe_write(self) -> None:
        """A real write that changes nothing: the schema version, rewritten as it is (a page of
        the file goes through the journal, so a read-only, locked or full file shows here). A
        failure is raised as SQLite's own error: the caller says what it means."""
        version = await self.schema_version()
        if self._db is None:
            raise RuntimeError("store is not open")
        await self._db.execute(f"PRAGMA user_version = {version}")  # once: not retried if busy

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        code = getattr(exc, "sqlite_errorcode", None)
        problem = gateway_text.STORE_BROKEN
        if code is not None:
            problem = PROBLEMS.get(code & 0xFF, problem)
        elif isinstance(exc, sqlite3.DatabaseError):  # quick_check's own findings
            problem = gateway_text.STORE_CORRUPT
        elif isinstance(exc, PermissionError):
            problem = gateway_text.STORE_READ_ONLY
        cause = " ".join(str(exc).split()) or type(exc).__name__
        line = gateway_text.sqlite_unusable(self.path, problem, cause)
        return StoreUnavailable(line, f"SQLite {problem} ({cause})")

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> _Retrying:
        if self._db is None:
            raise RuntimeError("store is not open")
        return _Retrying(self._db, self._unavailable)

    async def schema_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        current = await self.schema_version()
        for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
            logger.info("migrating %s to schema version %d", self.path, number)
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    await self.db.execute(statement)
                await self.db.execute(f"PRAGMA user_version = {number}")
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def ping(self) -> None:
        """A read and a write (that changes nothing); StoreUnavailable when either fails."""
        async with self.db.execute("SELECT 1 FROM environments LIMIT 1") as cur:
            await cur.fetchone()
        try:
            await self._probe_write()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None

    # one-time keys: webhook deliveries, card clicks

    async def claim(self, key: str, kind: str) -> bool:
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO deliveries (id, event, received_at) VALUES (?, ?, ?)",
            (key, kind, self._clock()),
        )
        return cur.rowcount == 1

    async def claimed(self, key: str) -> bool:
        async with self.db.execute("SELECT 1 FROM deliveries WHERE id = ?", (key,)) as cur:
            return await cur.fetchone() is not None

    # environments

    async def get_environment(self, repo: str, pr: int) -> Environment | None:
        async with self.db.execute(
            f"SELECT {_ENV_COLUMNS} FROM environments WHERE repo = ? AND pr = ?", (repo, pr)
        ) as cur:
            row = await cur.fetchone()
        return _environment(row) if row else None

    async def list_environments(self, states: Collection[str] | None = None) -> list[Environment]:
        query = f"SELECT {_ENV_COLUMNS} FROM environments"
        params: tuple[Any, ...] = ()
        if states is not None:
            states = list(states)
            if not states:
                return []
            query += f" WHERE state IN ({', '.join('?' for _ in states)})"
            params = tuple(str(s) for s in states)
        async with self.db.execute(query + " ORDER BY repo, pr", params) as cur:
            rows = await cur.fetchall()
        return [_environment(row) for row in rows]

    async def save_environment(self, env: Environment) -> Environment:
        saved = next_version(env, self._clock())
        values = (
            str(saved.state),
            saved.label,
            saved.task_arn,
            saved.thread_ts,
            saved.image_digest,
            json.dumps(saved.facts.to_json(), sort_keys=True),
            saved.created_at,
            saved.updated_at,
            saved.version,
        )
        if env.version == 0:
            cur = await self.db.execute(
                "INSERT OR IGNORE INTO environments (state, label, task_arn, thread_ts, "
                "image_digest, data, created_at, updated_at, version, repo, pr) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, env.repo, env.pr),
            )
        else:
            cur = await self.db.execute(
                "UPDATE environments SET state = ?, label = ?, task_arn = ?, thread_ts = ?, "
                "image_digest = ?, data = ?, created_at = ?, updated_at = ?, version = ? "
                "WHERE repo = ? AND pr = ? AND version = ?",
                (*values, env.repo, env.pr, env.version),
            )
        if cur.rowcount != 1:
            raise VersionConflict(f"{env.repo}#{env.pr} changed since version {env.version}")
        return saved

    # warm-pool entries

    async def get_pool_entry(self, pool_id: str) -> PoolEntry | None:
        async with self.db.execute(
            "SELECT pool_id, state, version, updated_at, data FROM pool WHERE pool_id = ?",
            (pool_id,),
        ) as cur:
            row = await cur.fetchone()
        return _pool_entry(row) if row else None

    async def list_pool_entries(self) -> list[PoolEntry]:
        async with self.db.execute(
            "SELECT pool_id, state, version, updated_at, data FROM pool"
        ) as cur:
            rows = await cur.fetchall()
        return sorted((_pool_entry(row) for row in rows), key=lambda e: (e.started_at, e.pool_id))

    async def save_pool_entry(self, entry: PoolEntry) -> PoolEntry:
        saved = next_pool_version(entry, self._clock())
        values = (
            str(saved.state),
            json.dumps(saved.to_json(), sort_keys=True),
            saved.updated_at,
            saved.version,
            saved.pool_id,
        )
        if entry.version == 0:
            cur = await self.db.execute(
                "INSERT OR IGNORE INTO pool (state, data, updated_at, version, pool_id) "
                "VALUES (?, ?, ?, ?, ?)",
                values,
            )
        else:
            cur = await self.db.execute(
                "UPDATE pool SET state = ?, data = ?, updated_at = ?, version = ? "
                "WHERE pool_id = ? AND version = ?",
                (*values, entry.version),
            )
        if cur.rowcount != 1:
            raise VersionConflict(f"pool entry {entry.pool_id} changed since {entry.version}")
        return saved

    async def delete_pool_entry(self, entry: PoolEntry) -> bool:
        cur = await self.db.execute(
            "DELETE FROM pool WHERE pool_id = ? AND version = ?", (entry.pool_id, entry.version)
        )
        return cur.rowcount == 1

    # locks

    async def acquire_lock(self, name: str, holder: str, reason: str, ttl_s: float) -> Lock:
        now = self._clock()
        lock = Lock(name, holder, reason, now, now + ttl_s)
        cur = await self.db.execute(
            "INSERT INTO locks (name, holder, reason, acquired_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "reason = excluded.reason, acquired_at = excluded.acquired_at, "
            "expires_at = excluded.expires_at WHERE locks.expires_at <= ?",
            (name, holder, reason, now, now + ttl_s, now),
        )
        if cur.rowcount == 1:
            return lock
        current = await self.get_lock(name)
        if current is None:  # released between our insert and read: try once more
            return await self.acquire_lock(name, holder, reason, ttl_s)
        raise LockHeld(current)

    async def release_lock(self, name: str, holder: str | None = None) -> bool:
        if holder is None:
            cur = await self.db.execute("DELETE FROM locks WHERE name = ?", (name,))
        else:
            cur = await self.db.execute(
                "DELETE FROM locks WHERE name = ? AND holder = ?", (name, holder)
            )
        return cur.rowcount == 1

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()
        cur = await self.db.execute(
            "INSERT INTO locks (name, holder, reason, acquired_at, expires_at) "
            "VALUES (?, ?, 'lease', ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "holder = excluded.holder, expires_at = excluded.expires_at, "
            "acquired_at = CASE WHEN locks.holder = excluded.holder THEN locks.acquired_at "
            "ELSE excluded.acquired_at END "
            "WHERE locks.holder = excluded.holder OR locks.expires_at <= ?",
            (name, holder, now, now + ttl_s, now),
        )
        return cur.rowcount == 1

    async def get_lock(self, name: str) -> Lock | None:
        async with self.db.execute(
            "SELECT name, holder, reason, acquired_at, expires_at FROM locks "
            "WHERE name = ? AND expires_at > ?",
            (name, self._clock()),
        ) as cur:
            row = await cur.fetchone()
        return Lock(*row) if row else None

    # audit

    async def append_audit(self, entry: AuditEntry) -> None:
        await self.db.execute(
            "INSERT INTO audit (at, actor, action, result, detail, from_digest, to_digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.at or self._clock(),
                entry.actor,
                entry.action,
                entry.result,
                entry.detail,
                entry.from_digest,
                entry.to_digest,
            ),
        )

    async def recent_audit(self, limit: int = 20) -> list[AuditEntry]:
        async with self.db.execute(
            "SELECT actor, action, result, detail, from_digest, to_digest, at FROM audit "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        ) as cur:
            rows = await cur.fetchall()
        return [AuditEntry(*row) for row in rows]

    # relays

    async def open_relay(self, relay: Relay) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO relays (repo, pr, job_id, user, thread_ts, prompt, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                relay.repo,
                relay.pr,
                relay.job_id,
                relay.user,
                relay.thread_ts,
                relay.prompt,
                relay.created_at or self._clock(),
            ),
        )

    async def close_relay(self, repo: str, pr: int, job_id: str) -> bool:
        cur = await self.db.execute(
            "DELETE FROM relays WHERE repo = ? AND pr = ? AND job_id = ?", (repo, pr, job_id)
        )
        return cur.rowcount == 1

    async def open_relays(self) -> list[Relay]:
        async with self.db.execute(
            "SELECT repo, pr, job_id, user, thread_ts, prompt, created_at FROM relays "
            "ORDER BY created_at"
        ) as cur:
            rows = await cur.fetchall()
        return [_relay(row) for row in rows]

    async def relay(self, repo: str, pr: int, job_id: str) -> Relay | None:
        async with self.db.execute(
            "SELECT repo, pr, job_id, user, thread_ts, prompt, created_at FROM relays "
            "WHERE repo = ? AND pr = ? AND job_id = ?",
            (repo, pr, job_id),
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _relay(row)

    # messages posted at most once

    async def reserve_post(self, post: Post) -> tuple[Post, bool]:
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO posts (key, channel, thread_ts, ts, created_at) "
            "VALUES (?, ?, ?, NULL, ?)",
            (post.key, post.channel, post.thread_ts, post.created_at or self._clock()),
        )
        async with self.db.execute(
            "SELECT key, channel, thread_ts, ts, created_at FROM posts WHERE key = ?", (post.key,)
        ) as cur2:
            row = await cur2.fetchone()
        if row is None:  # cannot happen: the row was there or has just been inserted
            raise RuntimeError(f"post {post.key} vanished")
        return Post(*row), cur.rowcount == 1

    async def posted(self, key: str, ts: str) -> None:
        await self.db.execute("UPDATE posts SET ts = ? WHERE key = ?", (ts, key))

    # the inbox: commands and clicks acknowledged but not done yet

    async def inbox_put(self, item: InboxItem) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO inbox (key, kind, payload, received_at, holder, held_until) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                item.key,
                item.kind,
                json.dumps(dict(item.payload), sort_keys=True),
                item.received_at,
                item.holder,
                item.held_until,
            ),
        )

    async def inbox_claim(self, key: str, holder: str, until: float) -> bool:
        cur = await self.db.execute(
            "UPDATE inbox SET holder = ?, held_until = ? "
            "WHERE key = ? AND (holder = ? OR held_until <= ?)",
            (holder, until, key, holder, self._clock()),
        )
        return cur.rowcount == 1

    async def inbox_done(self, key: str) -> None:
        await self.db.execute("DELETE FROM inbox WHERE key = ?", (key,))

    async def inbox_items(self) -> list[InboxItem]:
        async with self.db.execute(
            "SELECT key, kind, payload, received_at, holder, held_until FROM inbox "
            "ORDER BY received_at, key"
        ) as cur:
            rows = await cur.fetchall()
        return [
            InboxItem(
                key=row["key"],
                kind=row["kind"],
                payload=json.loads(row["payload"]),
                received_at=row["received_at"],
                holder=row["holder"],
                held_until=row["held_until"],
            )
            for row in rows
        ]

    async def prune(self, before: float) -> int:
        claims = await self.db.execute("DELETE FROM deliveries WHERE received_at < ?", (before,))
        posts = await self.db.execute("DELETE FROM posts WHERE created_at < ?", (before,))
        return claims.rowcount + posts.rowcount


class _Retrying:
    """The connection as the store uses it: a statement SQLite answers "busy" or "locked" is
    retried a few times with backoff, and one that still fails, or fails for a reason waiting
    cannot mend (a full disk, a read-only or corrupt file), raises StoreUnavailable."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        unavailable: Callable[[BaseException], StoreUnavailable],
    ) -> None:
        self._db = db
        self._unavailable = unavailable

    @contextmanager
    async def execute(self, sql: str, parameters: Any = ()) -> aiosqlite.Cursor:
        return await self._retried(lambda: self._db.execute(sql, parameters))

    async def _retried(self, statement: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(len(BUSY_RETRIES) + 1):
            try:
                return await statement()
            except sqlite3.OperationalError as exc:
                code = exc.sqlite_errorcode & 0xFF
                if code in TRANSIENT and attempt < len(BUSY_RETRIES):
                    wait = BUSY_RETRIES[attempt] * random.uniform(0.5, 1.5)
                    logger.info("SQLite busy (%s); retrying in %.2fs", exc, wait)
                    await asyncio.sleep(wait)
                    continue
                if code in PROBLEMS:
                    raise self._unavailable(exc) from exc
                raise
            except sqlite3.DatabaseError as exc:
                if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in PROBLEMS:
                    raise self._unavailable(exc) from exc
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")


def _relay(row: Any) -> Relay:
    return Relay(
        job_id=row["job_id"],
        repo=row["repo"],
        pr=row["pr"],
        user=row["user"],
        thread_ts=row["thread_ts"],
        prompt=row["prompt"],
        created_at=row["created_at"],
    )


def _pool_entry(row: Any) -> PoolEntry:
    return PoolEntry.from_json(
        str(row["pool_id"]),
        str(row["state"]),
        int(row["version"]),
        float(row["updated_at"]),
        json.loads(row["data"]),
    )


def _environment(row: Any) -> Environment:
    return Environment(
        repo=row["repo"],
        pr=row["pr"],
        state=State(row["state"]),
        label=row["label"],
        task_arn=row["task_arn"],
        thread_ts=row["thread_ts"],
        image_digest=row["image_digest"],
        facts=Facts.from_json(json.loads(row["data"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )
