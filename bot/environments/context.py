"""What every part of the environments package shares: the constants, the PR and leftovers
records, and one small context object (settings, gateways, store, clock, the sessions this
process launches) handed to each collaborator."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from bot.aws.gateways import INSTANCE_TAG, Ecr, Ecs, TaskInfo
from bot.aws.logs import CloudWatchLogs
from bot.aws.queue import EventQueue
from bot.config import Settings
from bot.container import ContainerClient
from bot.github import PullRequestEvent
from bot.github_api import GitHub
from bot.metrics import Metrics
from bot.prompt_tokens import environment_token
from bot.slack.chat import Chat
from bot.slack.outbox import Outbox
from bot.store import ACTIVE, LIVE, Environment, Facts, State, Store
from bot.tasks import TaskSupervisor

STATES = tuple(State)
__all__ = ["ACTIVE", "LIVE", "STATES", "Context", "Leftovers", "PullRequest", "State"]
ECS_PROVISIONING = {"PROVISIONING", "PENDING", "ACTIVATING"}
ECS_STOPPING = {"DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED", "DELETED"}
MANAGED_BY = "uat-bot"
# The tags a task must carry to be adopted: its environment is rebuilt from them (and from its
# container overrides, see bot/aws/gateways.py TASK_FACTS).
ADOPTION_TAGS = ("repo", "pr", "label", "session", "image-digest")
IDLE_WARNING_S = 15 * 60
WATCHER_LEASE = "watcher"


def ours(task: TaskInfo, installation: str) -> bool:
    """Whether `task` was started by the bot's installation `installation` (both tags say so)."""
    tags = task.tags or {}
    return tags.get("managed-by") == MANAGED_BY and tags.get(INSTANCE_TAG) == installation


def launch_lease(repo: str, pr: int) -> str:
    """The lease one launcher at a time holds per PR, across replicas (launcher.py); whoever
    else holds it knows no launch of that PR runs a task meanwhile."""
    return f"launch:{repo}#{pr}"


def own_family(settings: Settings) -> str:
    """The bot's own task-definition family; the operators' base family is never written."""
    return f"{settings.uat_task_definition or 'uat'}-uat-bot"


ReadyHook = Callable[[Environment], Coroutine[Any, Any, None]]


def _unwatched(repo: str, pr: int) -> None:
    """`Context.follow` until a watcher takes it over: nothing watches quickly."""


@dataclass(frozen=True)
class PullRequest:
    """What the bot keeps about a PR, for its card and its task's environment."""

    repo: str
    number: int
    title: str = ""
    url: str = ""
    author: str = ""
    branch: str = ""
    head_sha: str = ""
    clone_url: str = ""

    @classmethod
    def from_event(cls, event: PullRequestEvent) -> PullRequest:
        return cls(
            event.repo,
            event.number,
            event.title,
            event.url,
            event.author,
            event.branch,
            event.head_sha,
            event.clone_url,
        )

    @classmethod
    def of(cls, env: Environment) -> PullRequest:
        """The PR as its environment last recorded it."""
        f = env.facts
        return cls(env.repo, env.pr, f.title, f.url, f.author, f.branch, f.head_sha, f.clone_url)

    def facts(self, facts: Facts | None = None) -> Facts:
        """`facts` (or none) with this PR's details."""
        return replace(
            facts or Facts(),
            title=self.title,
            url=self.url,
            author=self.author,
            branch=self.branch,
            head_sha=self.head_sha,
            clone_url=self.clone_url,
        )


@dataclass(frozen=True)
class Leftovers:
    """What `/uat cleanup` found (and removed, unless it was a dry run)."""

    tasks: list[str]
    revisions: list[str]
    routing: list[str]

    def __bool__(self) -> bool:
        return bool(self.tasks or self.revisions or self.routing)


@dataclass
class Context:
    """What the collaborators share. `launching`: sessions this process launches or is about
    to; `running`: sessions whose launch() is under way here."""

    settings: Settings
    store: Store
    chat: Chat
    ecr: Ecr
    ecs: Ecs
    container: ContainerClient
    tasks: TaskSupervisor
    clock: Callable[[], float] = time.time
    metrics: Metrics = field(default_factory=Metrics)
    # this process among the bot's replicas, as its leases name it
    replica: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )
    outbox: Outbox = field(init=False)
    launching: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    # called (as tasks) when an environment becomes ready: the prompt relay sends what a
    # restart carried over
    when_ready: list[ReadyHook] = field(default_factory=list)
    # the containers' logs (None: not read, e.g. decision tests on recording fakes)
    logs: CloudWatchLogs | None = None
    # GitHub (deployments, commit statuses), when configured, and the Slack thread's permalink
    github: GitHub | None = None
    permalink: Callable[[str, str], Awaitable[str | None]] | None = None
    # called whenever an environment's state is shown (its thread updated), and for every
    # environment once per watcher round: start the GitHub sync in the background
    on_show: list[Callable[[Environment], None]] = field(default_factory=list)
    # puts a starting environment on the watcher's quick lane (bot/environments/watcher.py)
    follow: Callable[[str, int], None] = _unwatched
    # UAT_EVENTS_QUEUE's ECS task state changes (bot/environments/events.py), when it is set
    events_queue: EventQueue | None = None

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.store, self.chat)

    @property
    def labels(self) -> dict[str, str]:
        """UAT label -> image tag it runs."""
        return {
            self.settings.uat_label_latest: "latest",
            self.settings.uat_label_staging: "staging",
        }

    def prompt_token(self, env: Environment, session: str | None = None) -> str | None:
        """The prompt token of `env` (of its launch `session` when given, else its current one),
        derived from UAT_PROMPT_TOKEN; None when that is not set."""
        master = self.settings.uat_prompt_token
        if master is None or not master.get_secret_value():
            return None
        session = env.facts.session if session is None else session
        return environment_token(master.get_secret_value(), env.repo, env.pr, session)

    @property
    def installation(self) -> str:
        """This installation's tag value (UAT_INSTANCE): the tasks this bot may act on."""
        return self.settings.installation

    def ours(self, task: TaskInfo) -> bool:
        """Whether `task` was started by this installation of the bot (both tags say so)."""
        return ours(task, self.installation)

    def foreign(self, task: TaskInfo) -> bool:
        """Whether `task`'s tag names another installation (a task without it is not)."""
        owner = task.installation()
        return owner is not None and owner != self.installation

    @property
    def family(self) -> str:
        """The bot's own task-definition family; the operators' base family is never written."""
        return own_family(self.settings)

    @property
    def container_name(self) -> str:
        """The container of the base task definition that runs the PR (UAT_CONTAINER_NAME)."""
        return self.settings.uat_container_name or "app"

    @property
    def channel(self) -> str:
        return self.settings.uat_channel or ""
