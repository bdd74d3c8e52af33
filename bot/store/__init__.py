"""Persistence: everything that must survive a restart (PR environments, handled webhook
deliveries, image-operation locks, the audit log, prompts being followed, messages posted once,
commands and clicks acknowledged but not done yet, warm-pool tasks).

Every write that guards a side effect is conditional (unique keys, compare-and-set on a version),
so a retry or a second replica cannot double it. `Store` is the interface; `SqliteStore` the
default, `bot.store.dynamodb.DynamoStore` the one for several replicas (imported only when used).
"""

from bot.store.lease import renewing
from bot.store.protocol import Store
from bot.store.records import (
    ACTIVE,
    ENDED,
    LIVE,
    RETENTION_S,
    AuditEntry,
    Carried,
    Clock,
    Environment,
    Facts,
    InboxItem,
    LeaseLost,
    Lock,
    LockHeld,
    PoolEntry,
    PoolState,
    Post,
    Relay,
    Replaced,
    State,
    StoreUnavailable,
    VersionConflict,
)
from bot.store.sqlite import SqliteStore

__all__ = [
    "ACTIVE",
    "ENDED",
    "LIVE",
    "RETENTION_S",
    "AuditEntry",
    "Carried",
    "Clock",
    "Environment",
    "Facts",
    "InboxItem",
    "LeaseLost",
    "Lock",
    "LockHeld",
    "PoolEntry",
    "PoolState",
    "Post",
    "Relay",
    "Replaced",
    "SqliteStore",
    "State",
    "Store",
    "StoreUnavailable",
    "VersionConflict",
    "renewing",
]
