"""Persistence: everything that must survive a restart (PR environments, handled webhook
deliveries, image-operation locks, the audit log, prompts being followed, messages posted once).

Every write that guards a side effect is conditional (unique keys, compare-and-set on a version),
so a retry or a second replica cannot double it. `Store` is the interface; `SqliteStore` the
default, `bot.store.dynamodb.DynamoStore` the one for several replicas (imported only when used).
"""

from bot.store.lease import renewing
from bot.store.protocol import Store
from bot.store.records import (
    RETENTION_S,
    AuditEntry,
    Clock,
    Environment,
    LeaseLost,
    Lock,
    LockHeld,
    Post,
    Relay,
    VersionConflict,
)
from bot.store.sqlite import SqliteStore

__all__ = [
    "RETENTION_S",
    "AuditEntry",
    "Clock",
    "Environment",
    "LeaseLost",
    "Lock",
    "LockHeld",
    "Post",
    "Relay",
    "SqliteStore",
    "Store",
    "VersionConflict",
    "renewing",
]
