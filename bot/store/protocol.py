"""The narrow interface the rest of the bot may ask of persistence; SQLite and DynamoDB
implement it (`bot.store.sqlite`, `bot.store.dynamodb`)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from bot.store.records import AuditEntry, Environment, InboxItem, Lock, PoolEntry, Post, Relay


class Store(Protocol):
    """What the rest of the bot may ask of persistence."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def claim(self, key: str, kind: str) -> bool:
        """Record a one-time key (a webhook delivery ID, a card click); False if already taken."""
        ...

    async def claimed(self, key: str) -> bool:
        """Whether `key` was claimed (without claiming it)."""
        ...

    async def get_environment(self, repo: str, pr: int) -> Environment | None: ...

    async def list_environments(
        self, states: Collection[str] | None = None
    ) -> list[Environment]: ...

    async def save_environment(self, env: Environment) -> Environment:
        """Insert (version 0) or update (version n) with compare-and-set; returns version n+1.

        Raises VersionConflict when the stored version is not `env.version`.
        """
        ...

    async def get_pool_entry(self, pool_id: str) -> PoolEntry | None: ...

    async def list_pool_entries(self) -> list[PoolEntry]:
        """Every warm-pool entry, oldest first."""
        ...

    async def save_pool_entry(self, entry: PoolEntry) -> PoolEntry:
        """Insert (version 0) or update (version n) with compare-and-set; returns version n+1.

        Raises VersionConflict when the stored version is not `entry.version`.
        """
        ...

    async def delete_pool_entry(self, entry: PoolEntry) -> bool:
        """Forget an entry if it is still at `entry.version`; False if it changed or is gone."""
        ...

    async def acquire_lock(self, name: str, holder: str, reason: str, ttl_s: float) -> Lock:
        """Take `name`, or raise LockHeld with the current holder; expired locks are taken over."""
        ...

    async def release_lock(self, name: str, holder: str | None = None) -> bool:
        """Release `name` if `holder` holds it (any holder when None); True if released."""
        ...

    async def get_lock(self, name: str) -> Lock | None: ...

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew a lease (e.g. "watcher"): True while `holder` has it."""
        ...

    async def append_audit(self, entry: AuditEntry) -> None: ...

    async def recent_audit(self, limit: int = 20) -> list[AuditEntry]: ...

    async def open_relay(self, relay: Relay) -> None:
        """Remember a prompt being followed (idempotent on the job id)."""
        ...

    async def close_relay(self, repo: str, pr: int, job_id: str) -> bool:
        """Forget a followed prompt; False if it was already closed (somebody else posted)."""
        ...

    async def open_relays(self) -> list[Relay]: ...

    async def relay(self, repo: str, pr: int, job_id: str) -> Relay | None:
        """One followed prompt, by its key (None once closed): what a follower polls, so that
        N prompts being followed cost N small reads, not N reads of every open relay."""
        ...

    async def reserve_post(self, post: Post) -> tuple[Post, bool]:
        """Record a message about to be posted (idempotent on its key): what is stored, and
        whether this call recorded it (False: an earlier attempt may have reached Slack)."""
        ...

    async def posted(self, key: str, ts: str) -> None:
        """Record the ts Slack gave a reserved message."""
        ...

    async def inbox_put(self, item: InboxItem) -> None:
        """Record a command or click before its ack (idempotent on its key)."""
        ...

    async def inbox_claim(self, key: str, holder: str, until: float) -> bool:
        """Compare-and-set: `holder` holds the item until `until` if it already held it or the
        last holder's time has passed; False otherwise (or when the item is gone)."""
        ...

    async def inbox_done(self, key: str) -> None:
        """Forget an item whose work is complete (or whose user was told)."""
        ...

    async def inbox_items(self) -> list[InboxItem]:
        """Every item not done yet, oldest first."""
        ...

    async def prune(self, before: float) -> int:
        """Forget one-time keys and message keys recorded before `before` (epoch seconds); how
        many were forgotten. (DynamoDB's TTL does this there: 0.)"""
        ...
