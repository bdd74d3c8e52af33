"""PR environments: label events start and stop ECS tasks; one Slack thread per PR follows them.

Every state change is a compare-and-set in the store, made before anything acts on it; each
launch carries a session id that is also the task's `startedBy`, so a launch resumed after a
crash adopts the task it had started instead of starting a second one. One watcher polls every
active task together (one DescribeTasks per 100) and the container's /health until ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from bot import pr_refs, slack_ui
from bot.aws import Ecr, Ecs, TaskInfo
from bot.chat import Blocks, Chat
from bot.config import Settings
from bot.container import ContainerClient
from bot.errors import UserError
from bot.github import PullRequestEvent
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.store import Environment, LeaseLost, Store, VersionConflict, renewing
from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

LIVE = ("starting", "provisioning", "running", "ready")
STATES = ("new", *LIVE, "stopping", "stopped", "failed")
ACTIVE = (*LIVE, "stopping")
ECS_PROVISIONING = {"PROVISIONING", "PENDING", "ACTIVATING"}
ECS_STOPPING = {"DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED", "DELETED"}
MANAGED_BY = "uat-bot"
IDLE_WARNING_S = 15 * 60
WATCHER_LEASE = "watcher"
LAUNCH_LEASE_S = 15.0
PR_REF = re.compile(r"^(?:(?P<repo>[\w.-]+/[\w.-]+)#|PR-|#)?(?P<number>\d{1,9})$", re.IGNORECASE)


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

    def as_data(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "url": self.url,
            "author": self.author,
            "branch": self.branch,
            "head_sha": self.head_sha,
            "clone_url": self.clone_url,
        }


Mutation = Callable[[Environment], Environment | None]


@dataclass(frozen=True)
class Leftovers:
    """What `/uat cleanup` found (and removed, unless it was a dry run)."""

    tasks: list[str]
    revisions: list[str]
    routing: list[str]

    def __bool__(self) -> bool:
        return bool(self.tasks or self.revisions or self.routing)


class Environments:
    """Starts, watches and stops PR environments, and keeps their Slack threads current."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        chat: Chat,
        ecr: Ecr,
        ecs: Ecs,
        container: ContainerClient,
        tasks: TaskSupervisor,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.chat = chat
        self.ecr = ecr
        self.ecs = ecs
        self.container = container
        self.tasks = tasks
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._launching: set[str] = set()  # sessions this process launches or is about to
        self._running: set[str] = set()  # sessions whose launch() is under way here
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.outbox = Outbox(store, chat)
        self.polls = 0
        # called (as tasks) when an environment becomes ready: the prompt relay sends what a
        # restart carried over
        self.when_ready: list[Callable[[Environment], Coroutine[Any, Any, None]]] = []

    @property
    def labels(self) -> dict[str, str]:
        """UAT label -> image tag it runs."""
        return {
            self.settings.uat_label_latest: "latest",
            self.settings.uat_label_staging: "staging",
        }

    @property
    def family(self) -> str:
        """The bot's own task-definition family; the operators' base family is never written."""
        return f"{self.settings.uat_task_definition or 'uat'}-uat-bot"

    async def close(self) -> None:
        """On a graceful shutdown, hand the watcher lease over at once rather than at expiry."""
        try:
            await self.store.release_lock(WATCHER_LEASE, self.replica)
        except Exception:
            logger.warning("could not release the watcher lease", exc_info=True)

    # ------------------------------------------------------------------ GitHub events

    async def on_pull_request(self, event: PullRequestEvent) -> None:
        """Record what the event asks for before GitHub gets its 2xx; act in the background."""
        pr = PullRequest.from_event(event)
        uat_labels = [label for label in event.labels if label in self.labels]
        if event.action == "labeled" and event.label in self.labels:
            await self.request_start(pr, event.label, event.sender)
        elif event.action == "unlabeled" and event.label in self.labels:
            env = await self.store.get_environment(pr.repo, pr.number)
            if env is not None and env.label == event.label:
                await self._label_gone(pr)
                await self.request_stop(
                    pr.repo, pr.number, f"`{event.label}` removed", event.sender
                )
        elif event.action == "closed":
            await self._label_gone(pr)
            verb = "merged" if event.merged else "closed"
            await self.request_stop(pr.repo, pr.number, f"PR {verb}", event.sender)
        elif event.action == "reopened" and uat_labels:
            await self.request_start(pr, uat_labels[0], event.sender)
        elif event.action == "synchronize":
            await self.note_new_commits(pr, event.sender)

    async def _label_gone(self, pr: PullRequest) -> None:
        """Remember that the PR no longer asks for an environment (closed, or its label removed):
        hints then say to label it rather than to `/uat restart` it."""
        await self.edit_data(
            pr.repo, pr.number, lambda d: None if d.get("label_gone") else {**d, "label_gone": True}
        )

    # ------------------------------------------------------------------ state changes

    async def edit_data(
        self, repo: str, pr: int, edit: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> Environment | None:
        """Compare-and-set on an environment's data alone (`edit` returns None: nothing to do)."""

        def change(env: Environment) -> Environment | None:
            data = edit(dict(env.data))
            return None if data is None else replace(env, data=data)

        return await self._change(repo, pr, change)

    async def _change(self, repo: str, pr: int, mutate: Mutation) -> Environment | None:
        """Compare-and-set: re-read and re-decide until the write lands (None: nothing to do)."""
        for _ in range(20):
            current = await self.store.get_environment(repo, pr)
            if current is None:
                return None
            wanted = mutate(current)
            if wanted is None:
                return None
            try:
                return await self.store.save_environment(wanted)
            except VersionConflict:
                await asyncio.sleep(0)
        raise UserError(slack_ui.changing_too_often(repo, pr))

    async def request_start(
        self, pr: PullRequest, label: str, actor: str, *, force: bool = False
    ) -> Environment | None:
        """Record a launch of `label`'s image for `pr`; a live one with that label is kept."""
        missing = [
            name
            for name, value in (
                ("UAT_CHANNEL", self.settings.uat_channel),
                ("UAT_ECS_CLUSTER", self.settings.uat_ecs_cluster),
                ("UAT_TASK_DEFINITION", self.settings.uat_task_definition),
            )
            if not value
        ]
        if missing:
            raise UserError(slack_ui.environments_not_configured(missing))
        now = self.clock()
        session = f"pr{pr.number}-{secrets.token_hex(4)}"

        def start(env: Environment) -> Environment | None:
            if env.state in LIVE and env.label == label and not force:
                return None
            data = {
                **env.data,
                **pr.as_data(),
                "session": session,
                "launch_started": now,
                "requested_by": actor,
                "idle_until": now + self.settings.uat_idle_hours * 3600,
                "warned": False,
                "health": None,
                "last_seen": "",
                "reason": "",
                "label_gone": False,
            }
            data.pop("task_definition", None)
            if env.state in ACTIVE and env.task_arn:
                data["replace"] = {
                    "task_arn": env.task_arn,
                    "task_definition": env.data.get("task_definition"),
                    "session": env.data.get("session"),
                }
            return replace(env, state="starting", label=label, task_arn=None, data=data)

        existing = await self.store.get_environment(pr.repo, pr.number)
        if existing is None:
            # somebody else may create it a moment before us; then we decide on theirs below
            with contextlib.suppress(VersionConflict):
                await self.store.save_environment(
                    Environment(repo=pr.repo, pr=pr.number, state="new", data=pr.as_data())
                )
        saved = await self._change(pr.repo, pr.number, start)
        if saved is None:
            logger.info("%s#%d already runs %s; nothing to start", pr.repo, pr.number, label)
            return None
        self.tasks.spawn(
            self.launch(pr.repo, pr.number, session),
            name=f"launch {pr.repo}#{pr.number}",
            on_error=self._failer(pr.repo, pr.number, session),
        )
        return saved

    async def request_stop(self, repo: str, pr: int, reason: str, actor: str) -> bool:
        """Record that the environment must stop; the stop itself runs in the background."""

        def stop(env: Environment) -> Environment | None:
            if env.state not in LIVE:
                return None
            data = {**env.data, "reason": f"{reason} by {slack_ui.person(actor)}"}
            return replace(env, state="stopping", data=data)

        saved = await self._change(repo, pr, stop)
        if saved is None:
            return False
        self.tasks.spawn(self.finish_stop(repo, pr), name=f"stop {repo}#{pr}")
        return True

    def _failer(
        self, repo: str, pr: int, session: str
    ) -> Callable[[BaseException], Awaitable[None]]:
        async def fail(exc: BaseException) -> None:
            if isinstance(exc, LeaseLost):  # another launcher has taken over: it carries on
                return
            reason = str(exc) if isinstance(exc, UserError) else "the launch crashed (see the log)"
            if not isinstance(exc, UserError):
                logger.error("launch of %s#%d failed", repo, pr, exc_info=exc)
            await self._fail(repo, pr, session, reason)

        return fail

    # ------------------------------------------------------------------ launching

    async def launch(self, repo: str, pr: int, session: str) -> None:
        """Resolve the image, register a pinned revision, run the task; resumable after a crash.

        A lease per PR makes sure one launcher at a time works on it, across replicas.
        """
        if session in self._running:
            return  # this process already launches that session
        self._running.add(session)  # before any await: a second call in this process stops above
        self._launching.add(session)
        lease, holder = f"launch:{repo}#{pr}", f"{self.replica}/{session}"
        try:
            # Another launch of this PR (an older session, maybe on another replica) goes first;
            # it gives up as soon as it sees it was superseded, or its lease lapses if it died.
            while not await self.store.hold_lease(lease, holder, LAUNCH_LEASE_S):
                if not await self._still_launching(repo, pr, session):
                    return
                await asyncio.sleep(LAUNCH_LEASE_S / 4)
            async with renewing(self.store, lease, holder, LAUNCH_LEASE_S):
                await self._launch(repo, pr, session)
        finally:
            self._running.discard(session)
            self._launching.discard(session)

    async def _still_launching(self, repo: str, pr: int, session: str) -> bool:
        env = await self.store.get_environment(repo, pr)
        return env is not None and env.state == "starting" and env.data.get("session") == session

    async def _launch(self, repo: str, pr: int, session: str) -> None:
        env = await self._ensure_thread(repo, pr, session)
        if env is None:
            return
        if "replace" in env.data:
            old = env.data["replace"]
            await self._teardown(
                old.get("task_arn"),
                old.get("task_definition"),
                old.get("session"),
                f"replaced by {env.label} ({env.data.get('requested_by', '')})",
            )
            env = await self._change(
                repo, pr, _in_session(session, lambda e: _without(e, "replace"))
            )
            if env is None:
                return
        tag = self.labels.get(env.label, "latest")
        existing = await self.ecs.tasks_started_by(session)
        if existing:  # a launch interrupted after RunTask: adopt its task
            task = (await self.ecs.describe(existing[:1])).get(existing[0])
            if task is None:
                raise UserError(slack_ui.TASK_VANISHED)
        else:
            image = await self.ecr.describe(tag)
            if image is None:
                raise UserError(slack_ui.no_image(tag))
            definition = env.data.get("task_definition")
            if not definition or env.image_digest != image.digest:
                uri = await self.ecr.repository_uri()
                definition = await self.ecs.register_pinned(
                    self.settings.uat_task_definition or "",
                    self.family,
                    self._container,
                    f"{uri}@{image.digest}",
                    self._tags(env, image.digest),
                )
                env = await self._change(
                    repo,
                    pr,
                    _in_session(
                        session,
                        lambda e: replace(
                            e,
                            image_digest=image.digest,
                            data={
                                **e.data,
                                "task_definition": definition,
                                "image_tags": list(image.tags),
                            },
                        ),
                    ),
                )
                if env is None:  # stopped meanwhile: nothing was run
                    await self.ecs.deregister(definition)
                    return
            task = await self.ecs.run_task(
                definition,
                started_by=session,
                environment=self._task_environment(env, session),
                container=self._container,
                tags=self._tags(env, env.image_digest or ""),
            )
        state = "running" if task.last_status == "RUNNING" else "provisioning"
        saved = await self._change(
            repo,
            pr,
            _in_session(
                session,
                lambda e: replace(
                    e,
                    state=state if e.state == "starting" else e.state,
                    task_arn=task.arn,
                    data={**e.data, "last_seen": task.last_status},
                ),
            ),
        )
        if saved is None or saved.state == "stopping":
            # a stop arrived while launching: the stop may not know this task yet
            await self.ecs.stop_task(task.arn, "stopped while launching")
            if saved is not None:
                await self.finish_stop(repo, pr)
            return
        await self._show(saved)

    @property
    def _container(self) -> str:
        return self.settings.uat_container_name or "app"

    def _tags(self, env: Environment, digest: str) -> dict[str, str]:
        return {
            "managed-by": MANAGED_BY,
            "repo": env.repo,
            "pr": str(env.pr),
            "label": env.label,
            "image-digest": digest,
            "session": str(env.data.get("session", "")),
        }

    def _task_environment(self, env: Environment, session: str) -> dict[str, str]:
        token = self.settings.uat_prompt_token
        return {
            "PR_NUMBER": str(env.pr),
            "BRANCH": str(env.data.get("branch", "")),
            "REPO": str(env.data.get("clone_url") or env.repo),
            "HEAD_SHA": str(env.data.get("head_sha", "")),
            "SESSION_ID": session,
            "UAT_PROMPT_TOKEN": token.get_secret_value() if token else "",
        }

    async def _ensure_thread(self, repo: str, pr: int, session: str) -> Environment | None:
        env = await self.store.get_environment(repo, pr)
        if env is None or env.data.get("session") != session or env.state != "starting":
            return None  # superseded by a later request
        if env.thread_ts:
            await self._show(env)
            return env
        text, blocks = slack_ui.environment_card(env, self.settings, self.clock())
        # Keyed by session: a launch resumed after a crash finds the card it already posted.
        channel = self.settings.uat_channel or ""
        ts = await self.outbox.post(f"card:{session}", channel, text, blocks)
        return await self._change(repo, pr, lambda e: replace(e, thread_ts=e.thread_ts or ts))

    # ------------------------------------------------------------------ stopping

    async def finish_stop(self, repo: str, pr: int) -> None:
        env = await self.store.get_environment(repo, pr)
        if env is None or env.state != "stopping":
            return
        await self._teardown(
            env.task_arn,
            env.data.get("task_definition"),
            env.data.get("session"),
            str(env.data.get("reason", "stopped")),
        )
        saved = await self._change(
            repo,
            pr,
            lambda e: (
                replace(e, state="stopped", data={**e.data, "stopped_at": self.clock()})
                if e.state == "stopping"
                else None
            ),
        )
        if saved is not None:
            await self._show(saved, reply=slack_ui.stopped_reply(saved))

    async def _teardown(
        self, task_arn: str | None, definition: str | None, session: str | None, reason: str
    ) -> None:
        if task_arn:
            await self.ecs.stop_task(task_arn, reason)
        if definition:
            await self.ecs.deregister(definition)
        if session:
            try:
                await self.ecs.remove_routing(session)
            except UserError as exc:
                logger.warning("routing for %s not cleaned: %s", session, exc)

    async def _fail(self, repo: str, pr: int, session: str | None, reason: str) -> None:
        def fail(env: Environment) -> Environment | None:
            if env.state not in LIVE or (session and env.data.get("session") != session):
                return None
            return replace(env, state="failed", data={**env.data, "reason": reason})

        saved = await self._change(repo, pr, fail)
        if saved is None:
            return
        if saved.task_arn:
            await self.ecs.stop_task(saved.task_arn, f"uat-bot: {reason}")  # Ecs cuts it to fit
        if saved.data.get("task_definition"):
            await self.ecs.deregister(str(saved.data["task_definition"]))
        await self._show(saved, reply=slack_ui.failed_reply(saved))

    # ------------------------------------------------------------------ watching

    async def poll(self) -> None:
        """One round: every active task in ceil(N/100) DescribeTasks calls, then health checks."""
        with self.metrics.poll_seconds.time():
            await self._poll()
        self.polls += 1
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for env in await self.store.list_environments():
            counts[env.state] = counts.get(env.state, 0) + 1
        for state, count in counts.items():
            self.metrics.environments.labels(state=state).set(count)

    async def _poll(self) -> None:
        envs = await self.store.list_environments(LIVE)
        now = self.clock()
        tracked = [e for e in envs if e.task_arn]
        infos = await self.ecs.describe([e.task_arn for e in tracked if e.task_arn])
        await asyncio.gather(
            *(self._observe(e, infos.get(e.task_arn or ""), now) for e in tracked),
            return_exceptions=False,
        )
        for env in envs:
            if env.task_arn is None and now - float(env.data.get("launch_started", now)) > (
                self.settings.uat_launch_timeout_s
            ):
                await self._fail(
                    env.repo,
                    env.pr,
                    env.data.get("session"),
                    "the launch did not get a task in time",
                )

    async def _observe(self, env: Environment, task: TaskInfo | None, now: float) -> None:
        session = env.data.get("session")
        if task is None:
            await self._fail(env.repo, env.pr, session, "ECS no longer knows the task")
            return
        if task.last_status in ECS_STOPPING:
            await self._fail(env.repo, env.pr, session, slack_ui.stop_reason(task))
            return
        health: dict[str, Any] | None = None
        state = "provisioning" if task.last_status in ECS_PROVISIONING else "running"
        if state == "running":
            health = await self.health(env, task)
            if health is not None and health.get("ready") is True:
                state = "ready"
            elif health is not None and health.get("phase") == "failed":
                await self._fail(
                    env.repo,
                    env.pr,
                    session,
                    f"the container failed: {health.get('error') or 'no reason'}",
                )
                return
        if state != "ready" and now - float(env.data.get("launch_started", now)) > (
            self.settings.uat_launch_timeout_s
        ):
            seen = f"{task.last_status}" + (
                f", /health phase {health.get('phase')}" if health else ""
            )
            await self._fail(env.repo, env.pr, session, f"not ready in time (last seen: {seen})")
            return
        if state == "ready" and env.state == "ready":
            await self._idle_check(env, now)
            return
        if state == env.state or (env.state == "ready" and state == "running"):
            return

        def move(e: Environment) -> Environment | None:
            if e.data.get("session") != session or e.state not in LIVE or e.state == state:
                return None
            return replace(
                e,
                state=state,
                data={
                    **e.data,
                    "last_seen": task.last_status,
                    "health": health,
                    "task_ip": task.private_ip,
                },
            )

        saved = await self._change(env.repo, env.pr, move)
        if saved is not None:
            reply = slack_ui.ready_reply(saved, self.settings) if state == "ready" else None
            await self._show(saved, reply=reply)
            if state == "ready":
                for hook in self.when_ready:
                    self.tasks.spawn(hook(saved), name=f"on ready {env.repo}#{env.pr}")

    async def _idle_check(self, env: Environment, now: float) -> None:
        idle_until = float(env.data.get("idle_until", now + 1))
        if now >= idle_until:
            hours = self.settings.uat_idle_hours
            await self.request_stop(env.repo, env.pr, f"idle for {hours:g}h", "uat-bot")
        elif now >= idle_until - IDLE_WARNING_S and not env.data.get("warned"):
            saved = await self._change(
                env.repo,
                env.pr,
                lambda e: (
                    replace(e, data={**e.data, "warned": True})
                    if not e.data.get("warned")
                    else None
                ),
            )
            if saved is not None and saved.thread_ts:
                text, blocks = slack_ui.idle_warning(saved)
                await self.chat.post(self.settings.uat_channel or "", text, blocks, saved.thread_ts)

    async def health(self, env: Environment, task: TaskInfo) -> dict[str, Any] | None:
        """The container's /health answer (any status), or None when it does not answer."""
        return await self.container.health(self.container_url(env, task))

    async def probe(self, env: Environment, task: TaskInfo, path: str) -> dict[str, Any] | None:
        """GET the container's /health, /version or /status (any status); None when it does
        not answer."""
        endpoints = {
            "health": self.container.health,
            "version": self.container.version,
            "status": self.container.status,
        }
        if path not in endpoints:
            raise ValueError(f"no /{path} to probe: ask for health, version or status")
        return await endpoints[path](self.container_url(env, task))

    def container_url(self, env: Environment, task: TaskInfo | None = None) -> str:
        return self.settings.uat_container_url.format(
            ip=(task.private_ip if task else env.data.get("task_ip")) or "",
            pr=env.pr,
            task_id=(task.task_id if task else (env.task_arn or "").rsplit("/", 1)[-1]),
        ).rstrip("/")

    async def watch(self) -> None:
        """Poll every UAT_POLL_SECONDS while this replica holds the watcher lease.

        The lease lapses one poll interval (+1 s) after its holder's last renewal, so another
        replica takes over within two intervals (plus a second) when the holder dies. The
        holder reconciles with ECS when it takes the lease. A failed round is logged and the
        next one runs.
        """
        reconciled = False
        poll_s = self.settings.uat_poll_seconds
        while True:
            try:
                if await self.store.hold_lease(WATCHER_LEASE, self.replica, poll_s + 1.0):
                    if not reconciled:
                        await self.reconcile()
                        reconciled = True
                    await self.poll()
                else:
                    reconciled = False
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("watching environments failed; trying again next round")
            await asyncio.sleep(poll_s)

    # ------------------------------------------------------------------ after a restart

    def _resume(self, env: Environment) -> None:
        session = str(env.data.get("session", ""))
        self._launching.add(session)  # until the spawned launch takes over the marker
        self.tasks.spawn(
            self.launch(env.repo, env.pr, session),
            name=f"resume launch {env.repo}#{env.pr}",
            on_error=self._failer(env.repo, env.pr, session),
        )

    async def reconcile(self) -> None:
        """Resume interrupted launches and stops, bring threads up to date, and stop tasks no
        environment owns."""
        await self._catch_up()
        envs = await self.store.list_environments(ACTIVE)
        sessions = {e.data.get("session") for e in envs if e.state in LIVE}
        for env in envs:
            session = str(env.data.get("session", ""))
            if env.state == "starting" and session not in self._launching:
                await self._note(env, slack_ui.RESUMED_LAUNCH)
                self._resume(env)
            elif env.state == "stopping":
                self.tasks.spawn(self.finish_stop(env.repo, env.pr), name=f"resume stop {env.pr}")
        arns = await self.ecs.tasks_started_by()
        for task in (await self.ecs.describe(arns)).values():
            tags = task.tags or {}
            if tags.get("managed-by") != MANAGED_BY or task.last_status in ECS_STOPPING:
                continue
            if task.started_by not in sessions:
                logger.warning("stopping orphan task %s (%s)", task.arn, task.started_by)
                await self.ecs.stop_task(task.arn, "uat-bot: no environment owns this task")

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self, dry_run: bool) -> Leftovers:
        """What no active environment owns: tasks, the bot's revisions, routing; removed unless
        `dry_run`."""
        envs = await self.store.list_environments(ACTIVE)
        sessions = {str(e.data.get("session")) for e in envs}
        tasks = await self.ecs.describe(await self.ecs.tasks_started_by())
        live = [t for t in tasks.values() if t.last_status not in ECS_STOPPING]
        orphans = [
            t.arn
            for t in live
            if (t.tags or {}).get("managed-by") == MANAGED_BY and t.started_by not in sessions
        ]
        in_use = {t.task_definition_arn for t in live if t.arn not in orphans}
        in_use |= {str(e.data["task_definition"]) for e in envs if e.data.get("task_definition")}
        revisions = [a for a in await self.ecs.task_definitions(self.family) if a not in in_use]
        routing = [arn for arn, session in await self.ecs.routing() if session not in sessions]
        if not dry_run:
            for arn in orphans:
                await self.ecs.stop_task(arn, "uat-bot cleanup: no environment owns this task")
            for arn in revisions:
                await self.ecs.deregister(arn)
            if routing:
                await self.ecs.delete_routing(routing)
        return Leftovers(orphans, revisions, routing)

    # ------------------------------------------------------------------ people's requests

    async def note_new_commits(self, pr: PullRequest, actor: str) -> None:
        env = await self.store.get_environment(pr.repo, pr.number)
        if env is None or env.state not in LIVE or not env.thread_ts:
            return
        if not await self.store.claim(f"commits:{pr.repo}#{pr.number}@{pr.head_sha}", "note"):
            return  # said already (the same push delivered twice)
        text, blocks = slack_ui.new_commits(env, pr.head_sha, actor)
        await self.chat.post(self.settings.uat_channel or "", text, blocks, env.thread_ts)

    async def extend(self, repo: str, pr: int, hours: float) -> tuple[Environment, bool]:
        """Move the idle stop to `hours` from now, never earlier than it already is: the
        environment, and whether the stop moved (False: the later one was kept)."""
        until = self.clock() + hours * 3600
        current: list[Environment] = []

        def later(env: Environment) -> Environment | None:
            current[:] = [env]
            if env.state not in LIVE or float(env.data.get("idle_until", 0)) >= until:
                return None
            return replace(env, data={**env.data, "idle_until": until, "warned": False})

        saved = await self._change(repo, pr, later)
        if saved is None:
            if not current:
                raise UserError(slack_ui.not_running(repo, pr))
            if current[0].state not in LIVE:
                raise UserError(slack_ui.not_running_env(current[0]))
            return current[0], False
        await self._show(saved)
        return saved, True

    async def touch(self, repo: str, pr: int) -> None:
        """Activity (a prompt): the idle stop moves UAT_IDLE_HOURS from now."""
        until = self.clock() + self.settings.uat_idle_hours * 3600

        def later(env: Environment) -> Environment | None:
            if env.state not in LIVE or float(env.data.get("idle_until", 0)) >= until:
                return None
            return replace(env, data={**env.data, "idle_until": until, "warned": False})

        await self._change(repo, pr, later)

    async def by_thread(self, thread_ts: str) -> Environment | None:
        """The environment whose Slack thread starts at `thread_ts`."""
        for env in await self.store.list_environments():
            if env.thread_ts == thread_ts:
                return env
        return None

    async def restart(self, repo: str, pr: int, actor: str) -> None:
        env = await self.store.get_environment(repo, pr)
        if env is None or not slack_ui.restartable(env):  # closed, or its label was removed
            raise UserError(slack_ui.not_running(repo, pr))
        pr_info = PullRequest(
            repo,
            pr,
            **{
                k: str(env.data.get(k, ""))
                for k in PullRequest.__dataclass_fields__
                if k not in ("repo", "number")
            },
        )
        await self.request_start(pr_info, env.label, actor, force=True)

    async def find(self, ref: str) -> Environment:
        """The environment a person means by `PR-123`, `#123`, `123`, `owner/repo#123` or the
        PR's link (see bot/pr_refs.py)."""
        named = pr_refs.parse(ref)
        if named is None:
            raise UserError(slack_ui.bad_pr_ref(ref))
        number = named.number
        found = [e for e in await self.store.list_environments() if e.pr == number]
        if named.repo:  # GitHub's owner and repository names are not case-sensitive
            found = [e for e in found if e.repo.lower() == named.repo.lower()]
            if not found:
                raise UserError(slack_ui.not_running(named.repo, number))
        if not found:
            raise UserError(slack_ui.no_environment(number))
        if len(found) > 1:
            live = [e for e in found if e.state in ACTIVE]
            if len(live) == 1:
                return live[0]
            raise UserError(slack_ui.ambiguous_pr(number, [e.repo for e in found]))
        return found[0]

    # ------------------------------------------------------------------ Slack

    async def _show(
        self, env: Environment, reply: tuple[str, Blocks] | None = None, exclusive: bool = True
    ) -> None:
        """Update the PR's card in place, and reply in its thread when people must see it
        (`exclusive=False` when another replica may be posting that reply: see bot/outbox.py)."""
        if not env.thread_ts or not self.settings.uat_channel:
            return
        text, blocks = slack_ui.environment_card(env, self.settings, self.clock())
        await self.chat.update(self.settings.uat_channel, env.thread_ts, text, blocks)
        if reply is not None:  # keyed: a catch-up after a crash finds it was posted
            # A session reaches ready, failed and stopped once each (ready never goes back).
            session = env.data.get("session") or f"v{env.version}"
            key = f"reply:{env.repo}#{env.pr}:{session}:{env.state}"
            await self.outbox.post(
                key, self.settings.uat_channel, *reply, env.thread_ts, exclusive=exclusive
            )
        if env.data.get("shown") != env.state:  # what the thread shows, for after a crash
            state = env.state
            await self._change(
                env.repo,
                env.pr,
                lambda e: (
                    replace(e, data={**e.data, "shown": state})
                    if e.state == state and e.data.get("shown") != state
                    else None
                ),
            )

    async def _catch_up(self) -> None:
        """Threads a crash left behind their environment's state are brought up to date."""
        for env in await self.store.list_environments():
            if env.thread_ts and env.data.get("shown") != env.state and env.state != "new":
                reply = {
                    "ready": lambda e: slack_ui.ready_reply(e, self.settings),
                    "failed": slack_ui.failed_reply,
                    "stopped": slack_ui.stopped_reply,
                }.get(env.state)
                shown = self._show(env, reply=reply(env) if reply else None, exclusive=False)
                self.tasks.spawn(shown, name=f"catch up {env.repo}#{env.pr}")

    async def _note(self, env: Environment, text: str) -> None:
        if env.thread_ts and self.settings.uat_channel:
            await self.chat.post(self.settings.uat_channel, text, None, env.thread_ts)


def _in_session(session: str, change: Mutation) -> Mutation:
    """Apply `change` only while the environment is still this launch's and still live."""

    def guarded(env: Environment) -> Environment | None:
        if env.data.get("session") != session or env.state not in ACTIVE:
            return None
        return change(env)

    return guarded


def _without(env: Environment, key: str) -> Environment:
    return replace(env, data={k: v for k, v in env.data.items() if k != key})
