"""What the store holds: its records, the errors its conditional writes answer with, and the
one rule every implementation shares for writing an environment (the version bump)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

Clock = Callable[[], float]

RETENTION_S = 30 * 24 * 3600  # one-time keys and posted-message keys are kept this long


@dataclass(frozen=True)
class Environment:
    """One PR's UAT environment, as the bot last recorded it."""

    repo: str
    pr: int
    state: str
    label: str = ""
    task_arn: str | None = None
    thread_ts: str | None = None
    image_digest: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 0


@dataclass(frozen=True)
class Lock:
    """An exclusive hold on a named operation (e.g. "images"), expiring unless released."""

    name: str
    holder: str
    reason: str
    acquired_at: float
    expires_at: float


@dataclass(frozen=True)
class AuditEntry:
    """One thing somebody did or tried: who, what, from which digest to which, result."""

    actor: str
    action: str
    result: str
    detail: str = ""
    from_digest: str | None = None
    to_digest: str | None = None
    at: float = 0.0


@dataclass(frozen=True)
class Relay:
    """A prompt handed to a PR's container whose result the bot still has to post."""

    job_id: str
    repo: str
    pr: int
    user: str
    thread_ts: str
    prompt: str
    created_at: float = 0.0


@dataclass(frozen=True)
class Post:
    """A Slack message the bot posts at most once: its key, where it goes, its ts once posted."""

    key: str
    channel: str
    thread_ts: str | None = None
    ts: str | None = None
    created_at: float = 0.0


class VersionConflict(Exception):
    """Somebody else changed the environment first; re-read and decide again."""


class LockHeld(Exception):
    """The lock is held by somebody else."""

    def __init__(self, lock: Lock) -> None:
        super().__init__(f"{lock.name} is held by {lock.holder}: {lock.reason}")
        self.lock = lock


class LeaseLost(Exception):
    """Somebody else took a lease while its holder still worked under it (the holder stalled
    past its expiry): the holder's work was stopped."""


def next_version(env: Environment, now: float) -> Environment:
    """`env` as a compare-and-set write stores it: the next version, stamped `now` (and created
    now when it is new). The write succeeds only where the stored version is still `env.version`."""
    return replace(env, version=env.version + 1, updated_at=now, created_at=env.created_at or now)
