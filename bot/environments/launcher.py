"""Launching an environment: record the request, then resolve the image, register a pinned
revision and run the task; resumable after a crash.

Each launch carries a session id that is also the task's `startedBy`, so a launch resumed after
a crash adopts the task it had started instead of starting a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot.aws.gateways import INSTANCE_TAG, AwsError
from bot.config import TAG_VALUE_MAX
from bot.environments.changes import asked, change, change_in_session, overtaken
from bot.environments.context import (
    ACTIVE,
    LIVE,
    MANAGED_BY,
    Context,
    PullRequest,
    launch_lease,
)
from bot.environments.pool import Pool
from bot.environments.stopper import Stopper
from bot.environments.thread import Thread
from bot.errors import UserError
from bot.logs import outside
from bot.slack import slack_ui
from bot.store import (
    ENDED,
    Environment,
    LeaseLost,
    Replaced,
    State,
    StoreUnavailable,
    VersionConflict,
    renewing,
)

logger = logging.getLogger(__name__)

LAUNCH_LEASE_S = 15.0
# A launch that AWS or the store fails in a way waiting may mend (throttling, 5xx, the network,
# a busy store) past botocore's own retries is tried again after these pauses (about two minutes
# in all), resuming where it stopped, before its card says it failed.
LAUNCH_RETRIES_S: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0)
# how many replaced launches an environment remembers until ECS shows their tasks gone
SUPERSEDED_MAX = 16


def card_key(repo: str, pr: int) -> str:
    """The key a PR's card carries in its Slack message metadata (bot/slack/outbox.py)."""
    return f"card:{repo}#{pr}"


def tag_safe(value: str) -> str:
    """`value` with what ECS refuses in a tag value left out (a GitHub login never has any)."""
    kept = "".join(ch for ch in value if ch.isalnum() or ch in " _.:/=+-@")
    return kept[:TAG_VALUE_MAX]


def pull_ref(pr: int) -> str:
    """The ref GitHub keeps in the base repository for a PR's head, forks' PRs included."""
    return f"refs/pull/{pr}/head"


class Launcher:
    """Starts environments: one launcher at a time per PR, across replicas."""

    def __init__(self, ctx: Context, thread: Thread, stopper: Stopper) -> None:
        self.ctx = ctx
        self.thread = thread
        self.stopper = stopper
        self.pool: Pool | None = None  # the warm pool, when UAT_WARM_POOL asks for one
        self.carding: set[tuple[str, int]] = set()  # PRs whose missing card is posted here

    async def request_start(
        self,
        pr: PullRequest,
        label: str,
        actor: str,
        *,
        force: bool = False,
        asked_at: float | None = None,
        deferred: bool = False,
    ) -> Environment | None:
        """Record a launch of `label`'s image for `pr`; a live one with that label is kept (and
        counts as asked for again: a stop received before this request no longer stops it).
        `asked_at` is when the request was received (a command's, by the inbox; None: now): one
        received before the environment was last asked for something else (stopped since) is
        refused with a UserError saying so. A `deferred` launch (a webhook's) waits for the
        requests being acknowledged (`TaskSupervisor.defer`): in a burst of deliveries, the
        launches' AWS calls do not slow the answers down."""
        ctx = self.ctx
        missing = [
            name
            for name, value in (
                ("UAT_CHANNEL", ctx.settings.uat_channel),
                ("UAT_ECS_CLUSTER", ctx.settings.uat_ecs_cluster),
                ("UAT_TASK_DEFINITION", ctx.settings.uat_task_definition),
            )
            if not value
        ]
        if missing:
            raise UserError(slack_ui.environments_not_configured(missing))
        now = ctx.clock()
        session = f"pr{pr.number}-{secrets.token_hex(4)}"
        idle_until = now + ctx.settings.uat_idle_hours * 3600

        launching: list[bool] = []
        overtook: list[Environment] = []

        def start(env: Environment) -> Environment | None:
            launching.clear()
            overtook.clear()
            if overtaken(env, asked_at):
                overtook.append(env)
                return None
            wanted_at = asked(env, asked_at, now)
            if env.state in LIVE and env.label == label and not force:
                if wanted_at == env.facts.wanted_at:
                    return None
                return env.with_facts(wanted_at=wanted_at)
            launching.append(True)
            old = env.facts
            superseded = old.superseded
            if old.session and old.session not in superseded:  # its task, if any, must go
                superseded = (*superseded, old.session)[-SUPERSEDED_MAX:]
            facts = replace(
                pr.facts(old),
                wanted_at=wanted_at,
                session=session,
                superseded=superseded,
                launch_started=now,
                requested_by=actor,
                idle_until=idle_until,
                warned=False,
                health=None,
                last_seen="",
                reason="",
                label_gone=False,
                task_definition=None,
                pushed_sha=None,
            )
            if env.state in ACTIVE and env.task_arn:
                facts = replace(
                    facts,
                    replace=Replaced(env.task_arn, old.task_definition, old.session or None),
                )
            return replace(env, state=State.STARTING, label=label, task_arn=None, facts=facts)

        existing = await ctx.store.get_environment(pr.repo, pr.number)
        if existing is None:
            # somebody else may create it a moment before us; then we decide on theirs below
            with contextlib.suppress(VersionConflict):
                await ctx.store.save_environment(
                    Environment(repo=pr.repo, pr=pr.number, state=State.NEW, facts=pr.facts())
                )
        saved = await change(ctx.store, pr.repo, pr.number, start)
        if overtook:
            raise UserError(slack_ui.not_started_overtaken(overtook[0]))
        if saved is None or not launching:
            logger.info(
                "%s#%d already runs %s; nothing to start",
                outside(pr.repo),
                pr.number,
                outside(label),
            )
            return None
        name = f"launch {pr.repo}#{pr.number}"
        self.spawn(pr.repo, pr.number, session, name, deferred=deferred)
        return saved

    def spawn(self, repo: str, pr: int, session: str, name: str, *, deferred: bool = False) -> None:
        """Run `launch` as a task the app owns (`deferred`: see `request_start`); a failure
        fails the environment."""
        start = self.ctx.tasks.defer if deferred else self.ctx.tasks.spawn
        start(self.launch(repo, pr, session), name=name, on_error=self.failer(repo, pr, session))

    def failer(
        self, repo: str, pr: int, session: str
    ) -> Callable[[BaseException], Awaitable[None]]:
        async def fail(exc: BaseException) -> None:
            if isinstance(exc, LeaseLost):  # another launcher has taken over: it carries on
                return
            reason = str(exc) if isinstance(exc, UserError) else "the launch crashed (see the log)"
            if not isinstance(exc, UserError):
                logger.error("launch of %s#%d failed", outside(repo), pr, exc_info=exc)
            await self.stopper.fail(repo, pr, session, reason)

        return fail

    async def launch(self, repo: str, pr: int, session: str) -> None:
        """Resolve the image, register a pinned revision, run the task; resumable after a crash.

        A lease per PR makes sure one launcher at a time works on it, across replicas.
        """
        ctx = self.ctx
        if session in ctx.running:
            return  # this process already launches that session
        ctx.running.add(session)  # before any await: a second call in this process stops above
        ctx.launching.add(session)
        lease, holder = launch_lease(repo, pr), f"{ctx.replica}/{session}"
        try:
            # Another launch of this PR (an older session, maybe on another replica) goes first;
            # it gives up as soon as it sees it was superseded, or its lease lapses if it died.
            # A store that fails meanwhile is waited for: failing the launch for it would fail
            # an environment that nothing is wrong with (and the failure might not be recorded
            # either, leaving it starting with no launcher).
            waiting_for: str | None = None
            while not await self._lease_or_none(lease, holder):
                if not await self._still_launching(repo, pr, session):
                    return
                with contextlib.suppress(StoreUnavailable):  # who goes first, once each
                    held = await ctx.store.get_lock(lease)
                    if held is not None and held.holder != waiting_for:
                        waiting_for = held.holder
                        logger.info("%s waits its turn: %s holds it", holder, outside(held.holder))
                await asyncio.sleep(LAUNCH_LEASE_S / 4)
            async with renewing(ctx.store, lease, holder, LAUNCH_LEASE_S):
                await self._launch_patiently(repo, pr, session)
        finally:
            ctx.running.discard(session)
            ctx.launching.discard(session)

    async def _launch_patiently(self, repo: str, pr: int, session: str) -> None:
        """`_launch`, tried again after LAUNCH_RETRIES_S while it fails in a way waiting may
        mend; safe because a launch resumes where it stopped (its task is found by session)."""
        for pause in (*LAUNCH_RETRIES_S, None):
            try:
                await self._launch(repo, pr, session)
                return
            except (AwsError, StoreUnavailable) as exc:
                transient = isinstance(exc, StoreUnavailable) or exc.transient
                if pause is None or not transient:
                    raise
                logger.warning(
                    "launch of %s#%d: %s; trying again in %.0f s",
                    outside(repo),
                    pr,
                    outside(exc),
                    pause,
                )
                seconds = pause * random.uniform(0.8, 1.2)
                if not await self._pause(repo, pr, session, seconds, isinstance(exc, AwsError)):
                    return  # stopped or superseded while waiting

    async def _pause(
        self, repo: str, pr: int, session: str, seconds: float, aws_failed: bool
    ) -> bool:
        """Wait up to `seconds` before the launch is tried again, looking every quarter lease:
        False as soon as it was stopped or superseded (it holds the PR's launch lease, which
        its replacement waits for); after a store failure, True as soon as the store answers
        again (AWS throttling, on the other hand, is given its whole pause)."""
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(min(left, LAUNCH_LEASE_S / 4))
            try:
                env = await self.ctx.store.get_environment(repo, pr)
            except StoreUnavailable:
                continue
            if env is None or env.state != State.STARTING or env.facts.session != session:
                return False
            if not aws_failed:
                return True
        return await self._still_launching(repo, pr, session)

    async def _still_launching(self, repo: str, pr: int, session: str) -> bool:
        """Whether `session` is still the PR's launch to run (True while the store fails: the
        caller waits and asks again)."""
        try:
            env = await self.ctx.store.get_environment(repo, pr)
        except StoreUnavailable as exc:
            logger.warning("launch of %s#%d waits for the store: %s", outside(repo), pr, exc.line)
            return True
        return env is not None and env.state == State.STARTING and env.facts.session == session

    async def _lease_or_none(self, lease: str, holder: str) -> bool:
        """Take or renew the PR's launch lease; False when another holds it or the store fails."""
        try:
            return await self.ctx.store.hold_lease(lease, holder, LAUNCH_LEASE_S)
        except StoreUnavailable as exc:
            logger.warning("%s waits for the store: %s", lease, exc.line)
            return False

    async def _launch(self, repo: str, pr: int, session: str) -> None:
        ctx = self.ctx
        env = await ctx.store.get_environment(repo, pr)
        if env is None or env.facts.session != session or env.state != State.STARTING:
            return  # superseded by a later request
        # The card goes out beside the AWS work, never before it: a burst of labels in one
        # channel has its cards posted at Slack's pace (about one a second), and no launch waits
        # its card's turn to call RunTask. The launch waits for its card only at the end, still
        # under its lease (one poster per card key), and then shows its current state on it.
        card = asyncio.ensure_future(self._ensure_thread(env))
        try:
            started = await self._start(repo, pr, session, env, card)
        except BaseException:
            await asyncio.gather(card, return_exceptions=True)  # a failure is shown on the card
            raise
        await card
        if started:
            latest = await ctx.store.get_environment(repo, pr)
            if latest is not None and latest.facts.session == session:
                await self.thread.catch_up(latest)

    async def _start(
        self, repo: str, pr: int, session: str, found: Environment, card: asyncio.Future[None]
    ) -> bool:
        """The AWS part of a launch: True once its task runs and the watcher follows it."""
        ctx = self.ctx
        env: Environment | None
        env = found
        if env.facts.replace is not None:
            old = env.facts.replace
            await self.stopper.teardown(
                old.task_arn,
                old.task_definition,
                old.session,
                f"replaced by {env.label} ({env.facts.requested_by})",
            )
            env = await change_in_session(
                ctx.store, repo, pr, session, lambda e: e.with_facts(replace=None)
            )
            if env is None:
                return False
        if env.facts.superseded:  # under the lease: no replaced launch runs a task meanwhile
            await self.stopper.stop_superseded_of(repo, pr)
        tag = ctx.labels.get(env.label, "latest")
        existing = await ctx.ecs.tasks_started_by(session)
        if existing:  # a launch interrupted after RunTask: adopt its task
            task = (await ctx.ecs.describe(existing[:1])).get(existing[0])
            if task is None:
                raise UserError(slack_ui.TASK_VANISHED)
        else:
            image = await ctx.ecr.describe(tag)
            if image is None:
                raise UserError(slack_ui.no_image(tag))
            claimed = None
            if self.pool is not None:  # a warm-pool task of this tag and digest, if one waits
                claimed = await self.pool.claim(
                    env, tag, image.digest, self.tags(env, image.digest)
                )
                if claimed is None and not await self._still_launching(repo, pr, session):
                    return False
                env = await ctx.store.get_environment(repo, pr) or env
            definition = env.facts.task_definition
            if claimed is not None:
                digest, tags = image.digest, image.tags
                definition = claimed.task_definition_arn or None

                def claimed_pin(e: Environment) -> Environment:
                    e = e.with_facts(task_definition=definition, image_tags=tags)
                    return replace(e, image_digest=digest)

                # a stop meanwhile is seen below, where the claimed task is stopped
                env = await change_in_session(ctx.store, repo, pr, session, claimed_pin) or env
            elif not definition or env.image_digest != image.digest:
                uri = await ctx.ecr.repository_uri()
                definition = await ctx.ecs.register_pinned(
                    ctx.settings.uat_task_definition or "",
                    ctx.family,
                    ctx.container_name,
                    f"{uri}@{image.digest}",
                    self.tags(env, image.digest),
                )
                digest, tags = image.digest, image.tags

                def pinned(e: Environment) -> Environment:
                    e = e.with_facts(task_definition=definition, image_tags=tags)
                    return replace(e, image_digest=digest)

                env = await change_in_session(ctx.store, repo, pr, session, pinned)
                if env is None:  # stopped meanwhile: nothing was run
                    await ctx.ecs.deregister(definition)
                    return False
            task = claimed or await ctx.ecs.run_task(
                definition or "",
                started_by=session,
                environment=self.task_environment(env, session),
                container=ctx.container_name,
                tags=self.tags(env, env.image_digest or ""),
            )
        state = State.RUNNING if task.last_status == "RUNNING" else State.PROVISIONING
        cpu, memory = task.cpu, task.memory
        if not (cpu and memory) and task.task_definition_arn:  # for its cost
            cpu, memory = await ctx.ecs.task_size(task.task_definition_arn)

        def running(e: Environment) -> Environment:
            e = e.with_facts(last_seen=task.last_status, cpu=cpu, memory=memory)
            return replace(
                e, state=state if e.state == State.STARTING else e.state, task_arn=task.arn
            )

        saved = await change_in_session(ctx.store, repo, pr, session, running)
        if saved is None or saved.state == State.STOPPING:
            # a stop arrived while launching: the stop may not know this task yet
            await ctx.ecs.stop_task(task.arn, "stopped while launching")
            if saved is not None:
                await card  # the stop is shown on the card
                await self.stopper.finish_stop(repo, pr)
            return False
        ctx.follow(repo, pr)
        return True

    def tags(self, env: Environment, digest: str) -> dict[str, str]:
        """The task's tags: whose it is, and what a bot that lost its store needs to adopt it
        (bot/environments/reconcile.py)."""
        return {
            "managed-by": MANAGED_BY,
            INSTANCE_TAG: self.ctx.installation,
            "repo": env.repo,
            "pr": str(env.pr),
            "label": env.label,
            "image-digest": digest,
            "session": env.facts.session,
            "author": tag_safe(env.facts.author),
        }

    def task_environment(self, env: Environment, session: str) -> dict[str, str]:
        # The task gets its environment's own prompt token, never UAT_PROMPT_TOKEN itself.
        token = self.ctx.prompt_token(env, session)
        # The base repository and its refs/pull/<n>/head, which GitHub keeps for forks too; the
        # branch may be a fork's (even one named like a base branch), so it is for display only.
        return {
            "PR_NUMBER": str(env.pr),
            "BRANCH": env.facts.branch,
            "REPO": env.facts.clone_url or env.repo,
            "GIT_REF": pull_ref(env.pr),
            "HEAD_SHA": env.facts.head_sha,
            "SESSION_ID": session,
            "UAT_PROMPT_TOKEN": token or "",
        }

    async def post_missing_card(self, env: Environment) -> None:
        """Post the card of an environment a crash left without one, and show its state on it.

        A launch posts its card beside the AWS work, so a process killed while the card waited
        for Slack's pace can leave a task running with no card recorded. Under the PR's launch
        lease (a launch still posting it goes first), the keyed post finds the card if it was
        posted after all."""
        ctx = self.ctx
        pr = (env.repo, env.pr)
        if pr in self.carding:  # a catch-up here posts it already (same holder: same lease)
            return
        lease, holder = launch_lease(env.repo, env.pr), f"{ctx.replica}/card"
        self.carding.add(pr)
        try:
            if await self._lease_or_none(lease, holder):
                await self._post_missing_card(env, lease, holder)
        finally:
            self.carding.discard(pr)

    async def _post_missing_card(self, env: Environment, lease: str, holder: str) -> None:
        ctx = self.ctx
        try:
            latest = await ctx.store.get_environment(env.repo, env.pr)
            if latest is None or latest.thread_ts or latest.state not in ACTIVE:
                return
            await self._ensure_thread(latest)
            shown = await ctx.store.get_environment(env.repo, env.pr)
            if shown is not None and shown.thread_ts:
                await self.thread.catch_up(shown)
        finally:
            with contextlib.suppress(StoreUnavailable):
                await ctx.store.release_lock(lease, holder)

    async def _ensure_thread(self, env: Environment) -> None:
        """Post the PR's card unless it has one (then show the launch on it)."""
        ctx = self.ctx
        if env.thread_ts:
            await self.thread.show(env)
            return
        text, blocks = slack_ui.environment_card(env, ctx.settings, ctx.clock())
        # Keyed by PR: a launch resumed after a crash, or a bot adopting the task after losing
        # its store, finds the card already posted.
        ts = await ctx.outbox.post(card_key(env.repo, env.pr), ctx.channel, text, blocks)
        saved = await change(
            ctx.store, env.repo, env.pr, lambda e: replace(e, thread_ts=e.thread_ts or ts)
        )
        # A stop or failure that ended the environment while its card waited for Slack found no
        # card to show itself on (no thread_ts yet), and the launch, stopped, shows nothing
        # more: so whoever records the card shows the end on it. (One that ends it after this
        # write sees the thread_ts and shows itself: the compare-and-set orders the two.)
        if saved is not None and saved.state in ENDED and saved.thread_ts == ts:
            await self.thread.catch_up(saved)
