"""After a restart, or when this replica takes the watcher lease: resume interrupted launches
and stops, bring threads a crash left behind up to date, and stop tasks no environment owns;
and `/uat cleanup`, which finds (and removes) what no active environment owns."""

from __future__ import annotations

import logging

from bot.environments.context import (
    ACTIVE,
    ECS_STOPPING,
    LIVE,
    MANAGED_BY,
    Context,
    Leftovers,
)
from bot.environments.launcher import Launcher
from bot.environments.stopper import Stopper
from bot.environments.thread import Thread
from bot.slack import slack_ui
from bot.store import Environment, State

logger = logging.getLogger(__name__)


class Reconciler:
    """Brings the store, the threads and ECS back in line with one another."""

    def __init__(self, ctx: Context, thread: Thread, launcher: Launcher, stopper: Stopper) -> None:
        self.ctx = ctx
        self.thread = thread
        self.launcher = launcher
        self.stopper = stopper

    async def reconcile(self) -> None:
        """Resume interrupted launches and stops, bring threads up to date, and stop tasks no
        environment owns."""
        ctx = self.ctx
        await self.catch_up()
        envs = await ctx.store.list_environments(ACTIVE)
        sessions = {e.facts.session for e in envs if e.state in LIVE and e.facts.session}
        for env in envs:
            if env.state == State.STARTING and env.facts.session not in ctx.launching:
                await self.thread.note(env, slack_ui.RESUMED_LAUNCH)
                self.resume(env)
            elif env.state == State.STOPPING:
                ctx.tasks.spawn(
                    self.stopper.finish_stop(env.repo, env.pr), name=f"resume stop {env.pr}"
                )
        arns = await ctx.ecs.tasks_started_by()
        for task in (await ctx.ecs.describe(arns)).values():
            tags = task.tags or {}
            if tags.get("managed-by") != MANAGED_BY or task.last_status in ECS_STOPPING:
                continue
            if task.started_by not in sessions:
                logger.warning("stopping orphan task %s (%s)", task.arn, task.started_by)
                await ctx.ecs.stop_task(task.arn, "uat-bot: no environment owns this task")

    def resume(self, env: Environment) -> None:
        session = env.facts.session
        self.ctx.launching.add(session)  # until the spawned launch takes over the marker
        self.launcher.spawn(env.repo, env.pr, session, f"resume launch {env.repo}#{env.pr}")

    async def catch_up(self) -> None:
        """Threads a crash left behind their environment's state are brought up to date."""
        ctx = self.ctx
        for env in await ctx.store.list_environments():
            if env.thread_ts and env.facts.shown != env.state and env.state != State.NEW:
                reply = {
                    State.READY: lambda e: slack_ui.ready_reply(e, ctx.settings),
                    State.FAILED: slack_ui.failed_reply,
                    State.STOPPED: slack_ui.stopped_reply,
                }.get(env.state)
                shown = self.thread.show(env, reply=reply(env) if reply else None, exclusive=False)
                ctx.tasks.spawn(shown, name=f"catch up {env.repo}#{env.pr}")

    async def cleanup(self, dry_run: bool) -> Leftovers:
        """What no active environment owns: tasks, the bot's revisions, routing; removed unless
        `dry_run`."""
        ecs = self.ctx.ecs
        envs = await self.ctx.store.list_environments(ACTIVE)
        sessions = {e.facts.session for e in envs if e.facts.session}
        tasks = await ecs.describe(await ecs.tasks_started_by())
        live = [t for t in tasks.values() if t.last_status not in ECS_STOPPING]
        orphans = [
            t.arn
            for t in live
            if (t.tags or {}).get("managed-by") == MANAGED_BY and t.started_by not in sessions
        ]
        in_use = {t.task_definition_arn for t in live if t.arn not in orphans}
        in_use |= {e.facts.task_definition for e in envs if e.facts.task_definition}
        revisions = [a for a in await ecs.task_definitions(self.ctx.family) if a not in in_use]
        routing = [arn for arn, session in await ecs.routing() if session not in sessions]
        if not dry_run:
            for arn in orphans:
                await ecs.stop_task(arn, "uat-bot cleanup: no environment owns this task")
            for arn in revisions:
                await ecs.deregister(arn)
            if routing:
                await ecs.delete_routing(routing)
        return Leftovers(orphans, revisions, routing)
