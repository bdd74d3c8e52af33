"""Keeping the warm pool (UAT_WARM_POOL) full: the watcher-lease holder, each round, and the
replica that has just claimed a task, under a lease of their own (`POOL_LEASE`), keep N waiting
tasks per tag running from the tag's current digest.

A pool task is started with its pool id as `startedBy` and tags `managed-by`, `uat-instance`,
`pool` (its pool id), `pool-tag`, `image-digest` and `pool-state=waiting`; its environment holds
its pool token alone (bot/prompt_tokens.py), derived from the master secret, never stored or
logged. Entries of another digest (a promote, rollback or staging moved the tag), older than
UAT_IDLE_HOURS, or beyond N are retired (their tasks stopped, their revisions deregistered),
tasks that stopped are replaced, and claims whose launch ended have their task stopped.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import replace

from bot.aws.gateways import INSTANCE_TAG, AwsError, TaskInfo
from bot.container import ContainerError
from bot.environments.context import ECS_STOPPING, LIVE, MANAGED_BY, Context
from bot.logs import outside
from bot.prompt_tokens import pool_token
from bot.store import PoolEntry, PoolState, StoreUnavailable, VersionConflict

logger = logging.getLogger(__name__)

POOL_LEASE = "pool"
POOL_LEASE_S = 60.0
# an entry recorded without its task yet, or a claim not carried on, is left this long to the
# launch or refill that wrote it before it counts as abandoned
GRACE_S = 60.0
POOL_TAG = "pool"  # the pool id, on every pool task (also its startedBy)
POOL_TAG_TAG = "pool-tag"  # the image tag the pool task was started for
POOL_STATE_TAG = "pool-state"  # waiting, or claimed once a launch has it


class PoolKeeper:
    """Refills, recycles and retires the warm pool's tasks."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def sizes(self) -> dict[str, int]:
        """Image tag -> how many waiting tasks UAT_WARM_POOL asks for."""
        return self.ctx.settings.warm_pool

    def token(self, pool_id: str) -> str:
        """The pool token of `pool_id`'s task (the bearer of its POST /claim)."""
        master = self.ctx.settings.uat_prompt_token
        return pool_token(
            master.get_secret_value() if master else "", self.ctx.installation, pool_id
        )

    async def retire(self, entry: PoolEntry) -> None:
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
                await self.retire(entry)
            elif entry.state == PoolState.WAITING and entry.task_arn is None:
                if now - entry.started_at > GRACE_S:
                    await self._recover(entry)
            elif entry.state == PoolState.WAITING:
                kept = waiting.get(entry.tag, 0)
                stale = digests.get(entry.tag) != entry.digest or now - entry.started_at > max_age
                if stale or kept >= self.sizes.get(entry.tag, 0):
                    logger.info("retiring warm-pool task %s (%s)", entry.task_arn, entry.tag)
                    await self.retire(entry)
                else:
                    waiting[entry.tag] = kept + 1
            elif gone:  # claimed, and its environment's task has ended
                await ctx.store.delete_pool_entry(entry)
            elif now - entry.updated_at > GRACE_S and entry.session not in ctx.launching:
                env = envs.get((entry.repo, entry.pr))
                if env is None or env.facts.session != entry.session or env.state not in LIVE:
                    # a claim whose launch was replaced or stopped: the task is nobody's
                    logger.warning("stopping warm-pool task %s: its launch ended", entry.task_arn)
                    await self.retire(entry)
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
            await self.retire(entry)

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
