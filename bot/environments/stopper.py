"""Stopping an environment: record the stop, then stop its task, deregister its revision and
remove its routing; a failure does the same and says why in the thread."""

from __future__ import annotations

import logging
from dataclasses import replace

from bot.environments.changes import asked, change, overtaken
from bot.environments.context import ECS_STOPPING, LIVE, Context, launch_lease
from bot.environments.logs import Logs
from bot.environments.thread import Thread
from bot.errors import UserError
from bot.logs import outside
from bot.slack import slack_ui
from bot.store import Environment, State

logger = logging.getLogger(__name__)

ENDING = frozenset({State.STOPPING, State.STOPPED})
SWEEP_LEASE_S = 15.0  # how long a sweep of replaced launches holds a PR's launch lease


class Stopper:
    """Stops environments (asked to, or because they failed)."""

    def __init__(self, ctx: Context, thread: Thread, logs: Logs | None = None) -> None:
        self.ctx = ctx
        self.thread = thread
        self.logs = logs or Logs(ctx)
        self.finishing: set[tuple[str, int]] = set()  # PRs whose stop is being carried out here

    async def request_stop(
        self, repo: str, pr: int, reason: str, actor: str, *, asked_at: float | None = None
    ) -> bool:
        """Record that the environment must stop; the stop itself runs in the background. False
        when it is not live. `asked_at` is when the stop was received (a command's, by the
        inbox): one received before the environment was last asked to run (relabelled since) is
        refused with a UserError saying so, instead of stopping what was asked for after it; one
        an earlier run of the same command recorded (a crash cut it short) is True again."""
        now = self.ctx.clock()
        overtook: list[Environment] = []
        again: list[Environment] = []  # this very stop, recorded by a run a crash cut short

        def stop(env: Environment) -> Environment | None:
            overtook.clear()
            again.clear()
            if env.state not in LIVE:
                if asked_at is not None and env.facts.wanted_at == asked_at and env.state in ENDING:
                    again.append(env)
                return None
            if overtaken(env, asked_at):
                overtook.append(env)
                return None
            facts = replace(
                env.facts,
                reason=f"{reason} by {slack_ui.person(actor)}",
                wanted_at=asked(env, asked_at, now),
            )
            return replace(env, state=State.STOPPING, facts=facts)

        saved = await change(self.ctx.store, repo, pr, stop)
        if overtook:
            raise UserError(slack_ui.not_stopped_relaunched(overtook[0]))
        if saved is None and not again:
            return False
        self.ctx.tasks.spawn(self.finish_stop(repo, pr), name=f"stop {repo}#{pr}")
        return True

    async def finish_stop(self, repo: str, pr: int) -> None:
        """Carry a recorded stop out: the task, its revision and routing go, then `stopped`."""
        if (repo, pr) in self.finishing:
            return
        self.finishing.add((repo, pr))
        try:
            await self._finish_stop(repo, pr)
        finally:
            self.finishing.discard((repo, pr))

    async def _finish_stop(self, repo: str, pr: int) -> None:
        env = await self.ctx.store.get_environment(repo, pr)
        if env is None or env.state != State.STOPPING:
            return
        await self.teardown(
            env.task_arn,
            env.facts.task_definition,
            env.facts.session or None,
            env.facts.reason or "stopped",
        )
        clock = self.ctx.clock
        saved = await change(
            self.ctx.store,
            repo,
            pr,
            lambda e: (
                replace(e.with_facts(stopped_at=clock()), state=State.STOPPED)
                if e.state == State.STOPPING
                else None
            ),
        )
        if saved is not None:
            await self.thread.show(saved, reply=slack_ui.stopped_reply(saved))

    async def teardown(
        self, task_arn: str | None, definition: str | None, session: str | None, reason: str
    ) -> None:
        ecs = self.ctx.ecs
        if task_arn and await self.foreign(task_arn):
            return
        if task_arn:
            await ecs.stop_task(task_arn, reason)
        if definition:
            await ecs.deregister(definition)
        if session:
            try:
                await ecs.remove_routing(session)
            except UserError as exc:
                logger.warning("routing for %s not cleaned: %s", session, outside(exc))

    async def stop_superseded(self) -> None:
        """Stop the tasks of launches an environment has replaced (`Facts.superseded`), in
        any state: the bot ran them for this environment, so they are known, not a guess. Each
        PR is swept under its launch lease (one a launch holds is left to that launch and the
        next round), so no replaced launch runs a task between the look and the forgetting."""
        ctx = self.ctx
        for env in await ctx.store.list_environments():
            if not env.facts.superseded:
                continue
            lease, holder = launch_lease(env.repo, env.pr), f"{ctx.replica}/superseded"
            if not await ctx.store.hold_lease(lease, holder, SWEEP_LEASE_S):
                continue
            try:
                await self.stop_superseded_of(env.repo, env.pr)
            finally:
                await ctx.store.release_lock(lease, holder)

    async def stop_superseded_of(self, repo: str, pr: int) -> None:
        """Stop the running tasks of `repo#pr`'s replaced launches and forget the sessions ECS
        runs none of (StopTask again next time until it does); the caller holds its launch
        lease."""
        ctx = self.ctx
        env = await ctx.store.get_environment(repo, pr)
        if env is None or not env.facts.superseded:
            return
        sessions = set(env.facts.superseded)
        arns = [arn for session in sessions for arn in await ctx.ecs.tasks_started_by(session)]
        tasks = await ctx.ecs.describe(arns) if arns else {}
        running: set[str] = set()
        for task in tasks.values():
            if task.started_by not in sessions or task.last_status in ECS_STOPPING:
                continue
            if not ctx.ours(task):  # another installation's: never touched
                continue
            running.add(task.started_by)
            logger.warning(
                "stopping task %s of %s#%d: its launch (%s) was replaced",
                task.arn,
                outside(repo),
                pr,
                task.started_by,
            )
            await ctx.ecs.stop_task(task.arn, f"uat-bot: replaced ({repo}#{pr})")
        gone = sessions - running

        def forget(e: Environment) -> Environment | None:
            kept = tuple(s for s in e.facts.superseded if s not in gone)
            return None if kept == e.facts.superseded else e.with_facts(superseded=kept)

        if gone:
            await change(ctx.store, repo, pr, forget)

    async def foreign(self, task_arn: str) -> bool:
        """Whether the task is another installation's (UAT_INSTANCE): then neither it, nor its
        revision, nor its routing is touched, whatever this bot's store says."""
        task = (await self.ctx.ecs.describe([task_arn])).get(task_arn)
        if task is None or not self.ctx.foreign(task):
            return False
        logger.warning(
            "not stopping %s: it is installation %r's, not %r's",
            task_arn,
            task.installation(),
            self.ctx.installation,
        )
        return True

    async def fail(self, repo: str, pr: int, session: str | None, reason: str) -> None:
        """Record the failure (with its log's last lines, when they can be read), stop its task
        and say why in the thread."""
        tail: tuple[str, ...] = ()
        problem = ""
        current = await self.ctx.store.get_environment(repo, pr)
        if current is not None and self._fails(current, session):
            tail, problem = await self.logs.failure_tail(current)

        def failed(env: Environment) -> Environment | None:
            if not self._fails(env, session):
                return None
            facts = env.with_facts(reason=reason, log_tail=tail, log_problem=problem)
            return replace(facts, state=State.FAILED)

        saved = await change(self.ctx.store, repo, pr, failed)
        if saved is None:
            return
        if saved.task_arn and await self.foreign(saved.task_arn):
            await self.thread.show(saved, reply=slack_ui.failed_reply(saved))
            return
        if saved.task_arn:
            await self.ctx.ecs.stop_task(saved.task_arn, f"uat-bot: {reason}")  # Ecs cuts it to fit
        if saved.facts.task_definition:
            await self.ctx.ecs.deregister(saved.facts.task_definition)
        await self.thread.show(saved, reply=slack_ui.failed_reply(saved))

    @staticmethod
    def _fails(env: Environment, session: str | None) -> bool:
        """Whether a failure of `session` applies to `env` (live, and that launch's)."""
        return env.state in LIVE and not (session and env.facts.session != session)
