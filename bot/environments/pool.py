"""The warm pool (UAT_WARM_POOL): tasks started from a tag's current digest before anyone asks,
waiting for a launch of that tag to claim one (POST /claim) instead of calling RunTask.

Each pool task has an entry in the store (`PoolEntry`, compare-and-set like environments) and
its pool id as `startedBy`; its token (the bearer of its /claim) is derived from the master
secret (bot/prompt_tokens.py), never stored or logged. A launch claims an entry by moving it
waiting -> claiming with its PR and session, then records the pool id on its environment, both
before the HTTP claim, so neither two replicas nor a redelivery claim two tasks for one PR, and a
launch resumed after a crash carries its own claim on (`claimed_for` tells whether a lost answer
landed). A claim that fails marks the entry dead and the launch goes cold.

`refill`, run by the watcher-lease holder each round and after each claim (under a lease of its
own), keeps N waiting tasks per tag from the tag's current digest: entries of another digest (a
promote, rollback or staging moved the tag), older than UAT_IDLE_HOURS, or beyond N are retired
(their tasks stopped), and tasks that stopped are replaced.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from dataclasses import replace

from bot.aws.gateways import INSTANCE_TAG, AwsError, TaskInfo
from bot.container import ContainerError
from bot.environments.changes import change_in_session
from bot.environments.context import ECS_STOPPING, LIVE, MANAGED_BY, Context
from bot.environments.thread import Thread
from bot.logs import outside
from bot.prompt_tokens import pool_token
from bot.slack import slack_ui
from bot.store import (
    Environment,
    PoolEntry,
    PoolState,
    StoreUnavailable,
    VersionConflict,
)
from bot.urls import task_url

logger = logging.getLogger(__name__)

POOL_LEASE = "pool"
POOL_LEASE_S = 60.0
# an entry recorded without its task yet, or a claim not carried on, is left this long to the
# launch or refill that wrote it before it counts as abandoned
GRACE_S = 60.0
POOL_TAG = "pool"  # the pool id, on every pool task (also its startedBy)
POOL_TAG_TAG = "pool-tag"  # the image tag the pool task was started for
POOL_STATE_TAG = "pool-state"  # waiting, or claimed once a launch has it


class Pool:
    """Keeps the warm pool full and hands its tasks to launches."""

    def __init__(self, ctx: Context, thread: Thread) -> None:
        self.ctx = ctx
        self.thread = thread

    @property
    def sizes(self) -> dict[str, int]:
        """Image tag -> how many waiting tasks UAT_WARM_POOL asks for."""
        return self.ctx.settings.warm_pool

    def token(self, pool_id: str) -> str:
        master = self.ctx.settings.uat_prompt_token
        return pool_token(
            master.get_secret_value() if master else "", self.ctx.installation, pool_id
        )

    # ---------------------------------------------------------------- claiming

    async def claim(
        self, env: Environment, tag: str, digest: str, tags: dict[str, str]
    ) -> TaskInfo | None:
        """The task of a warm-pool entry of `tag` at `digest`, claimed for `env`'s launch (the
        caller holds its launch lease) and given the PR's `tags`; None when there is none to
        claim or the claim failed (the thread then says the launch goes cold)."""
        if self.sizes.get(tag, 0) <= 0 and not env.facts.pool_id:
            return None
        session = env.facts.session
        if env.facts.pool_id:  # a launch resumed: carry its own claim on
            entry = await self.ctx.store.get_pool_entry(env.facts.pool_id)
            if (
                entry is not None
                and entry.session == session
                and entry.state
                in (
                    PoolState.CLAIMING,
                    PoolState.CLAIMED,
                )
            ):
                return await self._send(env, entry, tags, resumed=True)
            forgot = await self._forget_claim(env)
            if forgot is None:
                return None
            env = forgot
        entries = await self.ctx.store.list_pool_entries()
        for entry in entries:  # claimed by this launch before a crash cut it short: carry on
            if entry.session == session and entry.state in (PoolState.CLAIMING, PoolState.CLAIMED):
                recorded = await self._record(env, entry.pool_id)
                return (
                    None
                    if recorded is None
                    else await self._send(recorded, entry, tags, resumed=True)
                )
        candidates = [
            e
            for e in entries
            if e.state == PoolState.WAITING and e.tag == tag and e.digest == digest and e.task_arn
        ]
        if any(e.tag == tag and e.digest != digest for e in entries):
            # the tag moved (promote, rollback, staging): replace its pool now, not next round
            self.ctx.tasks.spawn(self.refill(), name="refill the warm pool")
        # only tasks ECS runs: one still provisioning has no container to answer the claim yet
        running = await self.ctx.ecs.describe([e.task_arn for e in candidates if e.task_arn])
        candidates = [
            e
            for e in candidates
            if (task := running.get(e.task_arn or "")) is not None and task.last_status == "RUNNING"
        ]
        random.shuffle(candidates)  # replicas claiming at once try different entries first
        for entry in candidates:
            claiming = replace(
                entry, state=PoolState.CLAIMING, repo=env.repo, pr=env.pr, session=session
            )
            try:
                entry = await self.ctx.store.save_pool_entry(claiming)
            except VersionConflict:
                continue  # another launch took it first
            recorded = await self._record(env, entry.pool_id)
            if recorded is None:  # stopped or replaced meanwhile: the entry waits again
                await self._release(entry)
                return None
            return await self._send(recorded, entry, tags, resumed=False)
        return None

    async def _record(self, env: Environment, pool_id: str) -> Environment | None:
        """Record on `env` (still its launch's) the pool entry it claims."""
        return await change_in_session(
            self.ctx.store,
            env.repo,
            env.pr,
            env.facts.session,
            lambda e: e.with_facts(pool_id=pool_id),
        )

    async def _send(
        self, env: Environment, entry: PoolEntry, tags: dict[str, str], *, resumed: bool
    ) -> TaskInfo | None:
        """POST /claim to `entry`'s task for `env` (already recorded on both); on success the
        task carries the PR's tags and the entry is claimed."""
        ctx = self.ctx
        arn = entry.task_arn or ""
        task = (await ctx.ecs.describe([arn])).get(arn) if arn else None
        if task is None or task.last_status in ECS_STOPPING:
            await self._failed(env, entry, slack_ui.WARM_TASK_GONE)
            return None
        base = task_url(ctx.settings.uat_container_url, task)
        prompt_token = ctx.prompt_token(env) or ""
        landed = await ctx.container.claimed_for(base, prompt_token) if resumed else False
        if not landed:
            try:
                await ctx.container.claim(
                    base,
                    self.token(entry.pool_id),
                    # the container takes a clone URL only (a cold task's REPO may be a name)
                    repo=env.facts.clone_url or f"https://github.com/{env.repo}.git",
                    git_ref=f"refs/pull/{env.pr}/head",
                    head_sha=env.facts.head_sha,
                    session_id=env.facts.session,
                    prompt_token=prompt_token,
                    branch=env.facts.branch,
                    pr_number=env.pr,
                )
            except ContainerError as exc:
                # the answer may be lost while the claim landed: the task says which
                if await ctx.container.claimed_for(base, prompt_token) is not True:
                    logger.warning(
                        "claiming warm-pool task %s for %s#%d failed: %s",
                        arn,
                        outside(env.repo),
                        env.pr,
                        outside(exc),
                    )
                    await self._failed(env, entry, slack_ui.WARM_CLAIM_REFUSED)
                    return None
        tags = {**tags, POOL_TAG: entry.pool_id, POOL_STATE_TAG: "claimed"}
        await ctx.ecs.tag_task(arn, tags)
        if entry.state != PoolState.CLAIMED:
            try:
                await ctx.store.save_pool_entry(replace(entry, state=PoolState.CLAIMED))
            except VersionConflict:
                logger.info("warm-pool entry %s changed while claimed; left to refill", arn)
        logger.info(
            "claimed warm-pool task %s (%s) for %s#%d",
            arn,
            entry.pool_id,
            outside(env.repo),
            env.pr,
        )
        ctx.metrics.pool_claims.labels(result="claimed").inc()
        ctx.tasks.spawn(self.refill(), name="refill the warm pool")
        return replace(task, tags={**(task.tags or {}), **tags})

    async def _failed(self, env: Environment, entry: PoolEntry, why: str) -> None:
        """The claim failed: the environment forgets it and says in its thread that it goes
        cold; the entry is dead (refill stops its task and forgets it)."""
        self.ctx.metrics.pool_claims.labels(result="failed").inc()
        await self._forget_claim(env)
        await self._retire(entry)
        await self.thread.note(env, slack_ui.warm_claim_failed(why))
        self.ctx.tasks.spawn(self.refill(), name="refill the warm pool")

    async def _forget_claim(self, env: Environment) -> Environment | None:
        pool_id = env.facts.pool_id
        return await change_in_session(
            self.ctx.store,
            env.repo,
            env.pr,
            env.facts.session,
            lambda e: e.with_facts(pool_id="") if e.facts.pool_id == pool_id else None,
        ) or await self.ctx.store.get_environment(env.repo, env.pr)

    async def _release(self, entry: PoolEntry) -> None:
        with contextlib.suppress(VersionConflict):
            await self.ctx.store.save_pool_entry(
                replace(entry, state=PoolState.WAITING, repo="", pr=0, session="")
            )

    async def _retire(self, entry: PoolEntry) -> None:
        """Mark `entry` dead, stop its task, deregister its revision and forget it."""
        ctx = self.ctx
        if entry.state != PoolState.DEAD:
            try:
                entry = await ctx.store.save_pool_entry(replace(entry, state=PoolState.DEAD))
            except VersionConflict:
                return  # somebody claimed or retired it meanwhile: the next refill looks again
        if entry.task_arn:
            await ctx.ecs.stop_task(
                entry.task_arn, f"uat-bot: warm-pool task {entry.pool_id} retired"
            )
        if entry.task_definition:
            await ctx.ecs.deregister(entry.task_definition)
        await ctx.store.delete_pool_entry(entry)

    # ---------------------------------------------------------------- refilling

    async def refill(self) -> None:
        """Under the pool lease: retire what must go, then start tasks until every tag has its
        N waiting ones from its current digest. Failures are logged; the next round tries again."""
        ctx = self.ctx
        if not self.sizes and not await ctx.store.list_pool_entries():
            return
        holder = f"{ctx.replica}/pool"
        if not await ctx.store.hold_lease(POOL_LEASE, holder, POOL_LEASE_S):
            return
        try:
            await self._refill()
        except (AwsError, StoreUnavailable, ContainerError) as exc:
            logger.warning("refilling the warm pool: %s; next round", outside(exc))
        finally:
            await ctx.store.release_lock(POOL_LEASE, holder)

    async def _refill(self) -> None:
        ctx = self.ctx
        now = ctx.clock()
        digests: dict[str, str | None] = {}
        for tag in self.sizes:
            image = await ctx.ecr.describe(tag)
            digests[tag] = image.digest if image else None
        entries = await ctx.store.list_pool_entries()
        tasks = await ctx.ecs.describe([e.task_arn for e in entries if e.task_arn])
        envs = {(e.repo, e.pr): e for e in await ctx.store.list_environments()}
        waiting: dict[str, int] = {}
        max_age = ctx.settings.uat_idle_hours * 3600
        for entry in entries:
            task = tasks.get(entry.task_arn or "")
            gone = entry.task_arn is not None and (task is None or task.last_status in ECS_STOPPING)
            if entry.state == PoolState.DEAD or (entry.state == PoolState.WAITING and gone):
                await self._retire(entry)
            elif entry.state == PoolState.WAITING and entry.task_arn is None:
                if now - entry.started_at > GRACE_S:
                    await self._recover(entry)
            elif entry.state == PoolState.WAITING:
                kept = waiting.get(entry.tag, 0)
                stale = digests.get(entry.tag) != entry.digest or now - entry.started_at > max_age
                if stale or kept >= self.sizes.get(entry.tag, 0):
                    logger.info("retiring warm-pool task %s (%s)", entry.task_arn, entry.tag)
                    await self._retire(entry)
                else:
                    waiting[entry.tag] = kept + 1
            elif gone:  # claimed, and its environment's task has ended
                await ctx.store.delete_pool_entry(entry)
            elif now - entry.updated_at > GRACE_S and entry.session not in ctx.launching:
                env = envs.get((entry.repo, entry.pr))
                if env is None or env.facts.session != entry.session or env.state not in LIVE:
                    # a claim whose launch was replaced or stopped: the task is nobody's
                    logger.warning("stopping warm-pool task %s: its launch ended", entry.task_arn)
                    await self._retire(entry)
        for tag, size in self.sizes.items():
            digest = digests.get(tag)
            if digest is None:
                continue
            for _ in range(size - waiting.get(tag, 0)):
                await self._start(tag, digest)

    async def _recover(self, entry: PoolEntry) -> None:
        """An entry whose refill stopped before it recorded the task: find the task by its
        startedBy (RunTask is idempotent on it) or forget the entry."""
        arns = await self.ctx.ecs.tasks_started_by(entry.pool_id)
        if arns:
            with contextlib.suppress(VersionConflict):
                await self.ctx.store.save_pool_entry(replace(entry, task_arn=arns[0]))
        else:
            await self._retire(entry)

    async def _start(self, tag: str, digest: str) -> None:
        ctx = self.ctx
        pool_id = f"pool-{tag}-{secrets.token_hex(4)}"
        entry = await ctx.store.save_pool_entry(
            PoolEntry(pool_id, tag, digest, started_at=ctx.clock())
        )
        tags = {
            "managed-by": MANAGED_BY,
            INSTANCE_TAG: ctx.installation,
            POOL_TAG: pool_id,
            POOL_TAG_TAG: tag,
            "image-digest": digest,
            POOL_STATE_TAG: "waiting",
        }
        uri = await ctx.ecr.repository_uri()
        definition = await ctx.ecs.register_pinned(
            ctx.settings.uat_task_definition or "",
            ctx.family,
            ctx.container_name,
            f"{uri}@{digest}",
            tags,
        )
        entry = await ctx.store.save_pool_entry(replace(entry, task_definition=definition))
        task = await ctx.ecs.run_task(
            definition,
            started_by=pool_id,
            environment={"UAT_POOL_TOKEN": self.token(pool_id)},
            container=ctx.container_name,
            tags=tags,
        )
        await ctx.store.save_pool_entry(replace(entry, task_arn=task.arn))
        logger.info("started warm-pool task %s (%s, %s)", task.arn, pool_id, tag)

    async def adopt(self, task: TaskInfo) -> bool:
        """Take a waiting pool task the store does not know (a lost store) back into the pool;
        False when `task` is no waiting pool task."""
        tags = task.tags or {}
        pool_id = tags.get(POOL_TAG, "")
        if not pool_id or pool_id != task.started_by or tags.get(POOL_STATE_TAG) != "waiting":
            return False
        entry = PoolEntry(
            pool_id,
            tags.get(POOL_TAG_TAG, ""),
            tags.get("image-digest", ""),
            task_arn=task.arn,
            task_definition=task.task_definition_arn or None,
        )
        try:
            await self.ctx.store.save_pool_entry(entry)
            logger.warning("took warm-pool task %s back into the pool", task.arn)
        except VersionConflict:
            pass
        return True

    async def counts(self) -> dict[str, dict[str, int]]:
        """Image tag -> pool state -> how many entries, for /uat status and /metrics."""
        found: dict[str, dict[str, int]] = {tag: {} for tag in self.sizes}
        for entry in await self.ctx.store.list_pool_entries():
            per = found.setdefault(entry.tag, {})
            per[entry.state] = per.get(entry.state, 0) + 1
        return found
