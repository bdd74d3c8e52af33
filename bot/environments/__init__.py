"""PR environments: label events start and stop ECS tasks; one Slack thread per PR follows them.

`Environments` is the facade the rest of the bot uses; the work is done by one collaborator per
job over a shared `Context`: `Launcher` (starting), `Stopper` (stopping and failing), `Watcher`
(polling ECS and /health), `Events` (ECS task state changes from UAT_EVENTS_QUEUE),
`Reconciler` (after a restart, and cleanup), `Pool` (the warm pool, UAT_WARM_POOL), `Requests`
(GitHub events and people's requests) and `Thread` (the PR's Slack thread). Every state change
is a compare-and-set in the store (bot/environments/changes.py), made before anything acts on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.aws.gateways import Ecr, Ecs, TaskInfo
from bot.config import Settings
from bot.environments import changes
from bot.environments.context import (
    ACTIVE,
    LIVE,
    STATES,
    Context,
    Leftovers,
    PullRequest,
    ReadyHook,
)
from bot.environments.deployments import Deployments
from bot.environments.events import Events
from bot.environments.launcher import LAUNCH_LEASE_S, Launcher
from bot.environments.logs import Logs, LogTail
from bot.environments.pool import Pool
from bot.environments.reconcile import Reconciler
from bot.environments.requests import Requests
from bot.environments.stopper import Stopper
from bot.environments.thread import Thread
from bot.environments.watcher import Watcher
from bot.metrics import Metrics
from bot.slack.chat import Chat
from bot.slack.outbox import Outbox
from bot.store import Environment, Facts, State, Store
from bot.tasks import TaskSupervisor

__all__ = [
    "ACTIVE",
    "LAUNCH_LEASE_S",
    "LIVE",
    "STATES",
    "Context",
    "Environments",
    "Leftovers",
    "LogTail",
    "PullRequest",
    "State",
]


class Environments:
    """Starts, watches and stops PR environments, and keeps their Slack threads current."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.deployments = Deployments(ctx, ctx.github, ctx.permalink)
        ctx.on_show.append(self.deployments.kick)
        self.thread = Thread(self.ctx)
        self.logs = Logs(self.ctx)
        self.stopper = Stopper(self.ctx, self.thread, self.logs)
        self.launcher = Launcher(self.ctx, self.thread, self.stopper)
        self.pool = Pool(self.ctx, self.thread)
        self.launcher.pool = self.pool
        self.reconciler = Reconciler(self.ctx, self.thread, self.launcher, self.stopper)
        self.reconciler.pool = self.pool
        self.watcher = Watcher(self.ctx, self.thread, self.stopper, self.reconciler)
        self.watcher.pool = self.pool
        self.requests = Requests(self.ctx, self.thread, self.launcher, self.stopper)
        self.events: Events | None = None
        if ctx.events_queue is not None:
            self.events = Events(ctx, self.watcher, ctx.events_queue)
            self.watcher.followers.append(self.events.follow)
            self.watcher.slower = self.events.flowing
        # what callers use, straight from the collaborator that does it
        self.on_pull_request = self.requests.on_pull_request
        self.note_new_commits = self.requests.note_new_commits
        self.extend = self.requests.extend
        self.touch = self.requests.touch
        self.by_thread = self.requests.by_thread
        self.restart = self.requests.restart
        self.find = self.requests.find
        self.request_start = self.launcher.request_start
        self.request_stop = self.stopper.request_stop
        self.finish_stop = self.stopper.finish_stop
        self.read_logs = self.logs.read
        self.reconcile = self.reconciler.reconcile
        self.leftovers = self.reconciler.leftovers
        self.cleanup = self.reconciler.cleanup
        self.adopt_unknown = self.reconciler.adopt_unknown
        self.watch = self.watcher.watch
        self.poll = self.watcher.poll

    # the shared context, as callers (and tests) read or swap it
    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.ctx.settings = settings

    @property
    def clock(self) -> Callable[[], float]:
        return self.ctx.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.ctx.clock = clock

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def chat(self) -> Chat:
        return self.ctx.chat

    @property
    def ecr(self) -> Ecr:
        return self.ctx.ecr

    @property
    def ecs(self) -> Ecs:
        return self.ctx.ecs

    @property
    def tasks(self) -> TaskSupervisor:
        return self.ctx.tasks

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    @property
    def outbox(self) -> Outbox:
        return self.ctx.outbox

    @property
    def replica(self) -> str:
        return self.ctx.replica

    @property
    def when_ready(self) -> list[ReadyHook]:
        return self.ctx.when_ready

    @property
    def labels(self) -> dict[str, str]:
        """UAT label -> image tag it runs."""
        return self.ctx.labels

    @property
    def family(self) -> str:
        return self.ctx.family

    async def close(self) -> None:
        """Hand the watcher lease over; stop reading the events queue."""
        await self.watcher.close()
        if self.ctx.events_queue is not None:
            self.ctx.events_queue.close()

    async def launch(self, repo: str, pr: int, session: str) -> None:
        await self.launcher.launch(repo, pr, session)

    async def edit_facts(
        self, repo: str, pr: int, edit: Callable[[Facts], Facts | None]
    ) -> Environment | None:
        """Compare-and-set on an environment's facts alone (`edit` returns None: nothing to do)."""
        return await changes.edit_facts(self.ctx.store, repo, pr, edit)

    async def health(self, env: Environment, task: TaskInfo) -> dict[str, Any] | None:
        return await self.watcher.health(env, task)

    async def probe(self, env: Environment, task: TaskInfo, path: str) -> dict[str, Any] | None:
        return await self.watcher.probe(env, task, path)

    def container_url(self, env: Environment, task: TaskInfo | None = None) -> str:
        return self.watcher.container_url(env, task)

    def prompt_token(self, env: Environment) -> str | None:
        """`env`'s own prompt token (see bot/prompt_tokens.py); None without UAT_PROMPT_TOKEN."""
        return self.ctx.prompt_token(env)
