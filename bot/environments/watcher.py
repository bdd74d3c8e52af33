"""Watching environments: while this replica holds the watcher lease, one round per
UAT_POLL_SECONDS (SLOW_POLL_FACTOR times that while ECS events flow, bot/environments/events.py)
describes every active task together (one DescribeTasks per 100), asks each running
container's /health, and moves each environment on (or fails or idles it out).

Environments that are starting are also probed on their own, shorter cadence (every
UAT_QUICK_POLL_SECONDS at first, then at a thirtieth of how long they have been starting, never less
often than the poll), at most QUICK_CONCURRENCY probes at a time, so a ready app or a task that
stopped while starting shows within a second or so; once ready they are left to the poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from bot import cost
from bot.aws.gateways import AwsError, TaskInfo
from bot.environments.changes import change
from bot.environments.context import (
    ACTIVE,
    ECS_PROVISIONING,
    ECS_STOPPING,
    IDLE_WARNING_S,
    LIVE,
    STATES,
    WATCHER_LEASE,
    Context,
)
from bot.environments.pool import Pool
from bot.environments.reconcile import SWEEP_EVERY_S, Reconciler
from bot.environments.stopper import Stopper
from bot.environments.thread import Thread
from bot.logs import outside
from bot.slack import slack_ui
from bot.slack.chat import Message
from bot.store import Environment, State, StoreUnavailable
from bot.urls import environment_url

logger = logging.getLogger(__name__)

QUICK_SLOWDOWN = 1 / 30  # then at this fraction of how long it has been starting
QUICK_TICK_S = 0.1  # how often the quick lane looks for starting environments that are due
QUICK_CONCURRENCY = 16  # the quick lane's checks (/health probes) at a time
SLOW_POLL_FACTOR = 6  # while ECS events flow (bot/environments/events.py), the poll waits longer


class Watcher:
    """Polls active environments and applies what it sees, one environment at a time."""

    def __init__(
        self, ctx: Context, thread: Thread, stopper: Stopper, reconciler: Reconciler
    ) -> None:
        self.ctx = ctx
        self.thread = thread
        self.stopper = stopper
        self.reconciler = reconciler
        self.pool: Pool | None = None  # refilled after each round
        self.first_round = asyncio.Event()  # set once this watcher has finished a round
        self.foreign_seen: set[str] = set()  # other installations' tasks, logged once each
        self.holding = False  # whether this replica held the watcher lease at its last renewal
        self.swept: float | None = None  # time.monotonic() of the last sweep (Reconciler.sweep)
        # starting environments (repo, pr) -> when (time.monotonic()) the quick lane probes next
        self.starting: dict[tuple[str, int], float] = {}
        self.quick_limit = asyncio.Semaphore(QUICK_CONCURRENCY)
        ctx.follow = self.follow
        # what else runs beside the rounds (the ECS events' follower), and whether the poll
        # may run SLOW_POLL_FACTOR times less often (events flow)
        self.followers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.slower: Callable[[], bool] = lambda: False

    async def close(self) -> None:
        """On a graceful shutdown, hand the watcher lease over at once rather than at expiry."""
        try:
            await self.ctx.store.release_lock(WATCHER_LEASE, self.ctx.replica)
        except Exception:
            logger.warning("could not release the watcher lease", exc_info=True)

    async def watch(self) -> None:
        """Poll every UAT_POLL_SECONDS while this replica holds the watcher lease.

        The lease lapses one poll interval (+1 s) after its holder's last renewal, so another
        replica takes over within two intervals (plus a second) when the holder dies. The
        holder reconciles with ECS when it takes the lease. A failed round is logged and the
        next one runs.
        """
        async with asyncio.TaskGroup() as group:
            group.create_task(self._rounds())
            group.create_task(self._quick_lane())
            for follower in self.followers:
                group.create_task(follower())

    async def _rounds(self) -> None:
        reconciled = False
        poll_s = self.ctx.settings.uat_poll_seconds
        polled: float | None = None  # time.monotonic() of this holder's last round
        while True:
            try:
                held = await self.ctx.store.hold_lease(
                    WATCHER_LEASE, self.ctx.replica, poll_s + 1.0
                )
                self.holding = held
                if held:
                    if not reconciled:
                        await self.reconciler.reconcile()
                        reconciled = True
                        self.swept = time.monotonic()  # it caught up: the next sweep in turn
                    every = poll_s * (SLOW_POLL_FACTOR if self.slower() else 1)
                    # the lease is renewed every poll_s; a round runs when it is due
                    if polled is None or time.monotonic() - polled + poll_s / 2 >= every:
                        polled = time.monotonic()
                        await self.poll()
                else:
                    reconciled, polled = False, None
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("watching environments failed; trying again next round")
            await asyncio.sleep(poll_s)

    def follow(self, repo: str, pr: int) -> None:
        """Probe `repo#pr` on the quick lane from now on, until it is ready or has ended."""
        settings = self.ctx.settings
        first = min(settings.uat_quick_poll_seconds, settings.uat_poll_seconds)
        self.starting.setdefault((repo, pr), time.monotonic() + first)

    def pace(self, env: Environment, now: float) -> float:
        """Seconds until a starting environment's next quick probe: UAT_QUICK_POLL_SECONDS at
        first, then a thirtieth of how long it has been starting, at most UAT_POLL_SECONDS."""
        started = env.facts.launch_started
        elapsed = 0.0 if started is None else max(0.0, now - started)
        settings = self.ctx.settings
        first = settings.uat_quick_poll_seconds
        return min(settings.uat_poll_seconds, max(first, elapsed * QUICK_SLOWDOWN))

    async def _quick_lane(self) -> None:
        """While this replica holds the lease, probe the starting environments that are due."""
        while True:
            await asyncio.sleep(QUICK_TICK_S)
            if not self.holding or not self.starting:
                continue
            try:
                await self.quick_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("probing starting environments failed; trying again")

    async def quick_round(self) -> None:
        """Describe the due starting environments' tasks together (one DescribeTasks per 100)
        and apply what each shows, QUICK_CONCURRENCY /health probes at a time; ready or ended
        ones leave the quick lane."""
        ctx = self.ctx
        due_by = time.monotonic()
        due = [key for key, at in self.starting.items() if at <= due_by]
        if not due:
            return

        now = ctx.clock()
        live = {(e.repo, e.pr): e for e in await ctx.store.list_environments(LIVE)}
        tracked: list[Environment] = []
        for key in due:
            env = live.get(key)
            if env is None or env.state == State.READY:
                self.starting.pop(key, None)
                continue
            self.starting[key] = time.monotonic() + self.pace(env, now)
            if env.task_arn:
                tracked.append(env)
        if not tracked:
            return
        infos = await ctx.ecs.describe([e.task_arn for e in tracked if e.task_arn])

        async def check(env: Environment) -> None:
            async with self.quick_limit:
                await self._check(env, infos.get(env.task_arn or ""), now)

        await asyncio.gather(*(check(env) for env in tracked))

    async def poll(self) -> None:
        """One round: every active task in ceil(N/100) DescribeTasks calls, then health checks."""
        metrics = self.ctx.metrics
        with metrics.poll_seconds.time():
            await self._poll()
        self.first_round.set()
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        so_far = per_hour = 0.0
        now = self.ctx.clock()
        for env in await self.ctx.store.list_environments():
            counts[env.state] = counts.get(env.state, 0) + 1
            if env.state in ACTIVE:
                so_far += cost.estimated_cost(env, self.ctx.settings, now) or 0.0
            if env.state in LIVE:
                per_hour += cost.hourly_cost(env, self.ctx.settings) or 0.0
            for hook in self.ctx.on_show:  # what GitHub missed (down, or the bot killed)
                hook(env)
        for state, count in counts.items():
            metrics.environments.labels(state=state).set(count)
        if self.pool is not None:
            metrics.pool.clear()
            for tag, per in (await self.pool.counts()).items():
                for pool_state in ("waiting", "claiming", "claimed"):
                    metrics.pool.labels(tag=tag, state=pool_state).set(per.get(pool_state, 0))
        metrics.cost_so_far.set(so_far)
        metrics.cost_per_hour.set(per_hour)

    async def _poll(self) -> None:
        ctx = self.ctx
        envs = await ctx.store.list_environments(LIVE)
        now = ctx.clock()
        tracked = [e for e in envs if e.task_arn]
        infos = await ctx.ecs.describe([e.task_arn for e in tracked if e.task_arn])
        async with asyncio.TaskGroup() as group:  # one PR's failing check stops no other's
            for env in tracked:
                group.create_task(self._check(env, infos.get(env.task_arn or ""), now))
        for env in envs:  # a replica that took the lease over learns of the starting ones here
            if env.state != State.READY:
                self.follow(env.repo, env.pr)
        for env in envs:
            started = env.facts.launch_started
            if env.task_arn is None and now - (now if started is None else started) > (
                ctx.settings.uat_launch_timeout_s
            ):
                await self.stopper.fail(
                    env.repo,
                    env.pr,
                    env.facts.session or None,
                    "the launch did not get a task in time",
                )
        try:  # replaced launches' tasks (one whose stop failed, or was never known to run)
            await self.stopper.stop_superseded()
        except (AwsError, StoreUnavailable) as exc:
            logger.warning("stopping replaced launches' tasks: %s; next round", outside(exc))
        await self.reconciler.resume_stalled(envs, now)  # a launcher that died mid-launch
        if self.swept is None or time.monotonic() - self.swept >= SWEEP_EVERY_S:
            self.swept = time.monotonic()  # what another replica's kill left half-done
            await self.reconciler.sweep()
        if self.pool is not None:
            await self.pool.refill()

    async def _check(self, env: Environment, task: TaskInfo | None, now: float) -> None:
        """Apply what the round saw of one environment; a failure is logged and counted, and
        the next round looks again."""
        try:
            await self.observe(env, task, now)
        except Exception:
            logger.exception("checking %s#%d failed; trying again next round", env.repo, env.pr)
            self.ctx.metrics.check_failures.inc()

    async def observe(self, env: Environment, task: TaskInfo | None, now: float) -> None:
        """Decide what one environment's task and /health answer mean, and record it."""
        ctx = self.ctx
        session = env.facts.session or None
        if task is not None and ctx.foreign(task):  # a store that is not this installation's
            if task.arn in self.foreign_seen:
                return
            self.foreign_seen.add(task.arn)
            logger.warning(
                "%s#%d's task %s is installation %r's, not this one's: left alone",
                outside(env.repo),
                env.pr,
                task.arn,
                task.installation(),
            )
            return
        if task is None:
            await self.stopper.fail(env.repo, env.pr, session, "ECS no longer knows the task")
            return
        if task.last_status in ECS_STOPPING:
            await self.stopper.fail(env.repo, env.pr, session, slack_ui.stop_reason(task))
            return
        health: dict[str, Any] | None = None
        state = State.PROVISIONING if task.last_status in ECS_PROVISIONING else State.RUNNING
        if state == State.RUNNING:
            health = await self.health(env, task)
            if health is not None and health.get("ready") is True:
                state = State.READY
            elif health is not None and health.get("phase") == "failed":
                await self.stopper.fail(
                    env.repo,
                    env.pr,
                    session,
                    "the container failed: "
                    + slack_ui.mrkdwn(str(health.get("error") or "no reason")),
                )
                return
        started = env.facts.launch_started
        if state != State.READY and now - (now if started is None else started) > (
            ctx.settings.uat_launch_timeout_s
        ):
            seen = f"{task.last_status}" + (
                f", /health phase {health.get('phase')}" if health else ""
            )
            await self.stopper.fail(
                env.repo, env.pr, session, f"not ready in time (last seen: {seen})"
            )
            return
        if state == State.READY and env.state == State.READY:
            await self.idle_check(env, now)
            return
        if state == env.state or (env.state == State.READY and state == State.RUNNING):
            return

        def move(e: Environment) -> Environment | None:
            if e.facts.session != session or e.state not in LIVE or e.state == state:
                return None
            moved = e.with_facts(
                last_seen=task.last_status,
                health=health,
                task_ip=task.private_ip,
                cpu=task.cpu or e.facts.cpu,
                memory=task.memory or e.facts.memory,
            )
            return replace(moved, state=state)

        saved = await change(ctx.store, env.repo, env.pr, move)
        if saved is not None:
            reply = slack_ui.ready_reply(saved, ctx.settings) if state == State.READY else None
            await self.thread.show(saved, reply=reply)
            if state == State.READY:
                for hook in ctx.when_ready:
                    ctx.tasks.spawn(hook(saved), name=f"on ready {env.repo}#{env.pr}")

    async def idle_check(self, env: Environment, now: float) -> None:
        ctx = self.ctx
        idle_until = env.facts.idle_until if env.facts.idle_until is not None else now + 1
        if now >= idle_until:
            hours = ctx.settings.uat_idle_hours
            await self.stopper.request_stop(env.repo, env.pr, f"idle for {hours:g}h", "uat-bot")
        elif now >= idle_until - IDLE_WARNING_S and not env.facts.warned:
            saved = await change(
                ctx.store,
                env.repo,
                env.pr,
                lambda e: e.with_facts(warned=True) if not e.facts.warned else None,
            )
            if saved is not None and saved.thread_ts:
                text, blocks = slack_ui.idle_warning(saved, ctx.settings)
                await ctx.chat.post(Message(ctx.channel, text, blocks, saved.thread_ts))

    async def health(self, env: Environment, task: TaskInfo) -> dict[str, Any] | None:
        """The container's /health answer (any status), or None when it does not answer."""
        return await self.ctx.container.health(self.container_url(env, task))

    async def probe(self, env: Environment, task: TaskInfo, path: str) -> dict[str, Any] | None:
        """GET the container's /health, /version or /status (any status); None when it does
        not answer."""
        if path == "health":
            return await self.health(env, task)
        endpoints = {"version": self.ctx.container.version, "status": self.ctx.container.status}
        if path not in endpoints:
            raise ValueError(f"no /{path} to probe: ask for health, version or status")
        return await endpoints[path](self.container_url(env, task), self.ctx.prompt_token(env))

    def container_url(self, env: Environment, task: TaskInfo | None = None) -> str:
        return environment_url(self.ctx.settings.uat_container_url, env, task)
