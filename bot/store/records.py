"""What the store holds: its records, the errors its conditional writes answer with, and the
one rule every implementation shares for writing an environment (the version bump)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

Clock = Callable[[], float]

RETENTION_S = 30 * 24 * 3600  # one-time keys and posted-message keys are kept this long


class State(StrEnum):
    """Where an environment is in its life."""

    NEW = "new"
    STARTING = "starting"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


LIVE = frozenset({State.STARTING, State.PROVISIONING, State.RUNNING, State.READY})
ACTIVE = LIVE | {State.STOPPING}
ENDED = frozenset({State.STOPPED, State.FAILED})


@dataclass(frozen=True)
class Replaced:
    """The task a launch replaces (another label's, or the same after `/uat restart`)."""

    task_arn: str | None = None
    task_definition: str | None = None
    session: str | None = None


@dataclass(frozen=True)
class Carried:
    """A prompt a restart carried over, to send to the new container once it is ready."""

    prompt: str = ""
    user: str = ""
    job: str = ""


@dataclass(frozen=True)
class Facts:
    """What the bot knows about an environment beyond its columns: the PR, the launch, what
    the watcher last saw and what its thread shows. Stored as one JSON object (the `data`
    column or attribute); keys this version does not know are kept as they were (`extra`)."""

    # the PR
    title: str = ""
    url: str = ""
    author: str = ""
    branch: str = ""
    head_sha: str = ""  # the commit the environment runs
    pushed_sha: str | None = None  # the PR's head after a push it does not run yet (restart)
    clone_url: str = ""
    label_gone: bool = False  # closed, or its label removed: hints say to label it
    # the launch
    session: str = ""  # also the task's startedBy (a claimed warm-pool task's is `pool_id`)
    pool_id: str = ""  # the warm-pool task this launch claims or claimed (bot/environments/pool.py)
    launch_started: float | None = None
    requested_by: str = ""
    task_definition: str | None = None
    image_tags: tuple[str, ...] = ()
    replace: Replaced | None = None
    # sessions of this environment's earlier launches, replaced by a later one: a task one of
    # them ran (its RunTask answered after the replacement, or its stop failed) is the bot's own
    # and unwanted, so it is stopped on sight; a session leaves once ECS runs none of its tasks
    superseded: tuple[str, ...] = ()
    # when what it should be (run a label, or stop) was last asked for, by the request's receipt
    # time: a request received before it (a command resumed after a crash) is out of date
    wanted_at: float | None = None
    # the watcher
    idle_until: float | None = None
    warned: bool = False
    health: Mapping[str, Any] | None = None  # the container's last /health answer
    last_seen: str = ""  # ECS's last status
    task_ip: str | None = None
    reason: str = ""  # why it failed or stopped, as mrkdwn (outside text in it escaped)
    stopped_at: float | None = None
    shown: str = ""  # the state its thread shows (for the catch-up after a crash)
    cpu: int = 0  # the task's CPU units (1024 a vCPU) and memory (MiB), for its cost
    memory: int = 0
    log_tail: tuple[str, ...] = ()  # its log's last lines when it failed (scrubbed)
    log_problem: str = ""  # why they could not be read, as mrkdwn
    # prompts
    prompt_cancels: Mapping[str, str] = field(default_factory=dict)  # job id -> who cancelled
    carry: tuple[Carried, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Facts:
        """Read the stored JSON object: missing keys get defaults, unknown ones are kept."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        for name in (
            "title",
            "url",
            "author",
            "branch",
            "head_sha",
            "clone_url",
            "session",
            "pool_id",
        ):
            if name in values:
                values[name] = str(values[name] or "")
        if values.get("pushed_sha") is not None:
            values["pushed_sha"] = str(values["pushed_sha"])
        for name in ("requested_by", "last_seen", "reason", "shown", "log_problem"):
            if name in values:
                values[name] = str(values[name] or "")
        for name in ("launch_started", "idle_until", "stopped_at", "wanted_at"):
            if values.get(name) is not None:
                values[name] = float(values[name])
        for name in ("warned", "label_gone"):
            if name in values:
                values[name] = bool(values[name])
        if "image_tags" in values:
            values["image_tags"] = tuple(str(t) for t in values["image_tags"] or ())
        if "superseded" in values:
            values["superseded"] = tuple(str(t) for t in values["superseded"] or ())
        if "log_tail" in values:
            values["log_tail"] = tuple(str(t) for t in values["log_tail"] or ())
        for name in ("cpu", "memory"):
            if name in values:
                values[name] = int(values[name] or 0)
        if isinstance(values.get("replace"), Mapping):
            old = values["replace"]
            values["replace"] = Replaced(
                old.get("task_arn"), old.get("task_definition"), old.get("session")
            )
        elif "replace" in values:
            values["replace"] = None
        if not isinstance(values.get("health"), Mapping):
            values["health"] = None
        values["prompt_cancels"] = {
            str(k): str(v) for k, v in dict(values.get("prompt_cancels") or {}).items()
        }
        values["carry"] = tuple(
            Carried(str(c.get("prompt", "")), str(c.get("user", "")), str(c.get("job", "")))
            for c in values.get("carry") or ()
            if isinstance(c, Mapping)
        )
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The JSON object to store, with the keys earlier versions wrote (an absent value is
        left out, as they left it out); unknown keys read from the row go back as they were."""
        data: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in _ONLY_WHEN_SET):
                continue
            if f.name in ("prompt_cancels", "carry", *_NEWER) and not value:
                continue
            if isinstance(value, Replaced | Carried):
                value = asdict(value)
            elif f.name == "carry":
                value = [asdict(c) for c in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            data[f.name] = value
        return data


# keys earlier versions wrote only once known (they test for the key, or read it as a number),
# and pushed_sha, newer than most rows: a row without a push is written back as it was
_ONLY_WHEN_SET = frozenset(
    {"launch_started", "idle_until", "stopped_at", "replace", "wanted_at", "pushed_sha"}
)
# keys added later, written only when they say something (a row stays as it was otherwise)
_NEWER = ("cpu", "memory", "log_tail", "log_problem", "superseded", "pool_id")


@dataclass(frozen=True)
class Environment:
    """One PR's UAT environment, as the bot last recorded it."""

    repo: str
    pr: int
    state: State
    label: str = ""
    task_arn: str | None = None
    thread_ts: str | None = None
    image_digest: str | None = None
    facts: Facts = field(default_factory=Facts)
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.state, State):  # a plain string read from a row
            object.__setattr__(self, "state", State(self.state))

    def with_facts(self, **changes: Any) -> Environment:
        """This environment with some of its facts changed."""
        return replace(self, facts=replace(self.facts, **changes))


class PoolState(StrEnum):
    """Where a warm-pool task is: waiting for a claim, being claimed by a launch (recorded before
    the claim is sent), claimed (it runs that launch's environment), or dead (retired, stopped,
    or its claim failed: its task is stopped and the entry forgotten)."""

    WAITING = "waiting"
    CLAIMING = "claiming"
    CLAIMED = "claimed"
    DEAD = "dead"


@dataclass(frozen=True)
class PoolEntry:
    """One warm-pool task (UAT_WARM_POOL): started from `tag`'s `digest` before anyone asked,
    waiting for a launch to claim it. `pool_id` is also its task's startedBy; `repo`, `pr` and
    `session` name the launch that claims (or claimed) it. Written by compare-and-set on
    `version`, as environments are."""

    pool_id: str
    tag: str
    digest: str
    state: PoolState = PoolState.WAITING
    task_arn: str | None = None
    task_definition: str | None = None
    repo: str = ""
    pr: int = 0
    session: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    version: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.state, PoolState):  # a plain string read from a row
            object.__setattr__(self, "state", PoolState(self.state))

    def to_json(self) -> dict[str, Any]:
        """What a store keeps beside the key, state and version columns."""
        return {
            "tag": self.tag,
            "digest": self.digest,
            "task_arn": self.task_arn,
            "task_definition": self.task_definition,
            "repo": self.repo,
            "pr": self.pr,
            "session": self.session,
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(
        cls, pool_id: str, state: str, version: int, updated_at: float, data: Mapping[str, Any]
    ) -> PoolEntry:
        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        return cls(
            pool_id=pool_id,
            tag=str(data.get("tag") or ""),
            digest=str(data.get("digest") or ""),
            state=PoolState(state),
            task_arn=text("task_arn"),
            task_definition=text("task_definition"),
            repo=str(data.get("repo") or ""),
            pr=int(data.get("pr") or 0),
            session=str(data.get("session") or ""),
            started_at=float(data.get("started_at") or 0.0),
            updated_at=updated_at,
            version=version,
        )


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


@dataclass(frozen=True)
class InboxItem:
    """A slash command or a click, stored before its ack and removed once its work is done
    (see bot/slack/inbox.py). `holder` works on it until `held_until` (epoch seconds), renewing;
    once that has passed, another replica (or the next process) may claim it."""

    key: str
    kind: str  # "command" or "click"
    payload: Mapping[str, Any]  # what the invocation was (JSON): who, where, the text or button
    received_at: float
    holder: str
    held_until: float


class VersionConflict(Exception):
    """Somebody else changed the environment first; re-read and decide again."""


class LockHeld(Exception):
    """The lock is held by somebody else."""

    def __init__(self, lock: Lock) -> None:
        super().__init__(f"{lock.name} is held by {lock.holder}: {lock.reason}")
        self.lock = lock


class StoreUnavailable(Exception):
    """The store cannot be opened or written (a corrupt, read-only, locked or full SQLite file;
    a DynamoDB table that is wrong, unreachable or throttled past its retries). `line` names
    UAT_DB or the table, the cause and what to do (for the operator: serve's one line, the log);
    `cause` is the short reason /healthz gives. Users are told their action was not recorded."""

    def __init__(self, line: str, cause: str) -> None:
        super().__init__(line)
        self.line = line
        self.cause = cause


class LeaseLost(Exception):
    """Somebody else took a lease while its holder still worked under it (the holder stalled
    past its expiry): the holder's work was stopped."""


def next_version(env: Environment, now: float) -> Environment:
    """`env` as a compare-and-set write stores it: the next version, stamped `now` (and created
    now when it is new). The write succeeds only where the stored version is still `env.version`."""
    return replace(env, version=env.version + 1, updated_at=now, created_at=env.created_at or now)


def next_pool_version(entry: PoolEntry, now: float) -> PoolEntry:
    """`entry` as a compare-and-set write stores it (see `next_version`)."""
    return replace(
        entry, version=entry.version + 1, updated_at=now, started_at=entry.started_at or now
    )
