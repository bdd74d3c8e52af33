"""The warm pool (UAT_WARM_POOL): a launch of a tag claims a task started from the tag's current
digest before anyone asked (POST /claim) instead of calling RunTask; bot/environments/
pool_keeper.py keeps the pool full.

Each pool task has an entry in the store (`PoolEntry`, compare-and-set like environments). A
launch claims an entry by moving it waiting -> claiming with its PR and session, then records the
pool id on its environment, both before the HTTP claim, so neither two replicas nor a redelivery
claim two tasks for one PR, and a launch resumed after a crash carries its own claim on
(`claimed_for` tells whether a lost answer landed). The claimed task gets its PR's tags and the
environment goes the normal way to Ready. A claim that fails marks the entry dead (its task is
stopped) and the launch goes cold, with a note in the thread.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import replace

from bot.aws.gateways import TaskInfo
from bot.container import ContainerError
from bot.environments.changes import change_in_session
from bot.environments.context import ECS_STOPPING, Context
from bot.environments.pool_keeper import POOL_STATE_TAG, POOL_TAG, PoolKeeper
from bot.environments.thread import Thread
from bot.logs import outside
from bot.slack import slack_ui
from bot.store import Environment, PoolEntry, PoolState, VersionConflict
from bot.urls import task_url

logger = logging.getLogger(__name__)

TAKEN = (PoolState.CLAIMING, PoolState.CLAIMED)


class Pool:
    """Keeps the warm pool full and hands its tasks to launches."""

    def __init__(self, ctx: Context, thread: Thread) -> None:
        self.ctx = ctx
        self.thread = thread
        self.keeper = PoolKeeper(ctx)
        # what the watcher, reconcile and /uat status use, straight from the keeper
        self.refill = self.keeper.refill
        self.adopt = self.keeper.adopt
        self.counts = self.keeper.counts

    # ---------------------------------------------------------------- claiming

    async def claim(
        self, env: Environment, tag: str, digest: str, tags: dict[str, str]
    ) -> TaskInfo | None:
        """The task of a warm-pool entry of `tag` at `digest`, claimed for `env`'s launch (the
        caller holds its launch lease) and given the PR's `tags`; None when there is none to
        claim or the claim failed (the thread then says the launch goes cold)."""
        if self.keeper.sizes.get(tag, 0) <= 0 and not env.facts.pool_id:
            return None
        session = env.facts.session
        if env.facts.pool_id:  # a launch resumed: carry its own claim on
            entry = await self.ctx.store.get_pool_entry(env.facts.pool_id)
            if entry is not None and entry.session == session and entry.state in TAKEN:
                return await self._send(env, entry, tags, resumed=True)
            forgot = await self._forget_claim(env)
            if forgot is None:
                return None
            env = forgot
        entries = await self.ctx.store.list_pool_entries()
        for entry in entries:  # claimed by this launch before a crash cut it short: carry on
            if entry.session == session and entry.state in TAKEN:
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
            self.ctx.tasks.spawn(self.keeper.refill(), name="refill the warm pool")
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
                    self.keeper.token(entry.pool_id),
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
        ctx.tasks.spawn(self.keeper.refill(), name="refill the warm pool")
        return replace(task, tags={**(task.tags or {}), **tags})

    async def _failed(self, env: Environment, entry: PoolEntry, why: str) -> None:
        """The claim failed: the environment forgets it and says in its thread that it goes
        cold; the entry is dead (refill stops its task and forgets it)."""
        self.ctx.metrics.pool_claims.labels(result="failed").inc()
        await self._forget_claim(env)
        await self.keeper.retire(entry)
        await self.thread.note(env, slack_ui.warm_claim_failed(why))
        self.ctx.tasks.spawn(self.keeper.refill(), name="refill the warm pool")

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
