"""After a restart, or when this replica takes the watcher lease: resume interrupted launches
(and, every watcher round, the launches whose launcher died elsewhere) and stops, bring threads
a crash left behind up to date, and adopt the running tasks of this installation that the store
does not know; and `/uat cleanup`, which finds (and, once confirmed, removes) what no active
environment owns.

A task is never stopped for being unknown: a bot whose store was lost, or a replica pointed at
the wrong table, would otherwise stop every environment it cannot see. It rebuilds such a
task's environment from the task's tags and overrides and finds the PR's thread again by the
card's Slack message metadata. Tasks of another installation (`UAT_INSTANCE`) are not looked at
at all. Tasks stop only by an explicit stop, an idle stop, a PR event or a confirmed cleanup.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace

from bot.aws.gateways import Ecs, TaskInfo
from bot.config import Settings
from bot.environments.changes import change
from bot.environments.context import (
    ACTIVE,
    ADOPTION_TAGS,
    Context,
    Leftovers,
    launch_lease,
    ours,
    own_family,
)
from bot.environments.launcher import LAUNCH_LEASE_S, Launcher, card_key
from bot.environments.pool import Pool
from bot.environments.stopper import Stopper
from bot.environments.thread import Thread
from bot.errors import UserError
from bot.logs import outside
from bot.slack import slack_ui
from bot.slack.outbox import IN_FLIGHT_S
from bot.store import ENDED, Environment, Facts, State, Store, VersionConflict

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 5.0  # how often the watcher's holder looks for what a killed replica left
LEFT_BEHIND_S = LAUNCH_LEASE_S  # unchanged this long, a half-done change was left behind
# ... and its reply too, once any post of it in flight elsewhere was given up on (the outbox's
# IN_FLIGHT_S): before that, the sweep updates the card alone
REPLY_LEFT_BEHIND_S = IN_FLIGHT_S + LEFT_BEHIND_S


def unshown(env: Environment) -> bool:
    """Whether `env` has a thread that does not show its state yet (`Facts.shown`)."""
    return bool(env.thread_ts) and env.facts.shown != env.state and env.state != State.NEW


class Reconciler:
    """Brings the store, the threads and ECS back in line with one another."""

    def __init__(self, ctx: Context, thread: Thread, launcher: Launcher, stopper: Stopper) -> None:
        self.ctx = ctx
        self.thread = thread
        self.launcher = launcher
        self.stopper = stopper
        self.pool: Pool | None = None  # waiting pool tasks the store lost go back to it
        self.reported: set[str] = set()  # tasks this process already said it cannot adopt
        self.stalled_seen: set[tuple[str, str]] = set()  # (session, lease holder) logged
        self.refreshed: set[tuple[str, int, int]] = set()  # cards the sweep updated, by version
        self.resumed: set[tuple[str, int, int]] = set()  # stops the sweep carries out, by version

    async def reconcile(self) -> None:
        """Resume interrupted launches and stops, bring threads up to date, and adopt the
        running tasks of this installation that no environment knows."""
        ctx = self.ctx
        await self.catch_up()
        for env in await ctx.store.list_environments(ACTIVE):
            if env.state == State.STARTING and env.facts.session not in ctx.launching:
                await self.thread.note(env, slack_ui.RESUMED_LAUNCH)
                self.resume(env)
            elif env.state == State.STOPPING:
                ctx.tasks.spawn(
                    self.stopper.finish_stop(env.repo, env.pr), name=f"resume stop {env.pr}"
                )
        await self.adopt_unknown()

    async def adopt_unknown(self) -> list[Environment]:
        """Adopt every running task of this installation that the store does not know; report
        (never stop) the ones that cannot be adopted. The environments adopted."""
        ctx = self.ctx
        envs = await ctx.store.list_environments()
        known = {e.facts.session for e in envs if e.facts.session}
        known |= {
            e.facts.replace.task_arn
            for e in envs
            if e.facts.replace is not None and e.facts.replace.task_arn
        }
        known |= {e.task_arn for e in envs if e.task_arn is not None}
        # a replaced launch's task is the bot's own and unwanted: the watcher stops it
        # (Stopper.stop_superseded), so it is neither adopted nor reported
        known |= {session for e in envs for session in e.facts.superseded}
        # warm-pool tasks: waiting ones, and those a launch is claiming (its startedBy is the
        # pool id, until the claim is recorded the environment knows no task of it)
        known |= {e.pool_id for e in await ctx.store.list_pool_entries()}
        known |= {e.facts.pool_id for e in envs if e.facts.pool_id}
        # a stop or failure recorded for this very session whose task outlived it (a launch cut
        # short after RunTask while the stop ran): the recorded stop is finished
        ended = {e.facts.session: e for e in envs if e.state in ENDED and e.facts.session}
        adopted = []
        for task in await ctx.ecs.live_tasks():
            if not ctx.ours(task) or task.started_by in ctx.launching:
                continue
            if task.started_by in ended:
                gone = ended[task.started_by]
                logger.info("finishing the recorded stop of %s#%d", outside(gone.repo), gone.pr)
                await ctx.ecs.stop_task(task.arn, f"uat-bot: {gone.state} ({gone.repo}#{gone.pr})")
                continue
            if task.started_by in known or task.arn in known:
                continue
            if self.pool is not None and await self.pool.adopt(task):
                continue  # a waiting pool task: back in the pool
            env = await self.adopt(task)
            if env is not None:
                adopted.append(env)
        return adopted

    async def adopt(self, task: TaskInfo) -> Environment | None:
        """Rebuild the environment of `task` from its tags and overrides, find its thread again
        (or open one that says it was adopted); None (and a report) when it cannot be."""
        ctx = self.ctx
        tags = task.tags or {}
        missing = [name for name in ADOPTION_TAGS if not tags.get(name)]
        # a claimed warm-pool task was started by its pool id (its `pool` tag), not its session
        started = task.started_by in (tags.get("session"), tags.get("pool"))
        if not missing and (not started or not tags["pr"].isdigit()):
            missing = ["session" if not started else "pr"]
        if missing:
            await self.report(task, slack_ui.cannot_adopt_tags(task.task_id, missing))
            return None
        repo, pr, session = tags["repo"], int(tags["pr"]), tags["session"]
        current = await ctx.store.get_environment(repo, pr)
        if current is not None and current.state in ACTIVE:
            await self.report(
                task, slack_ui.cannot_adopt_taken(task.task_id, repo, pr, current.state)
            )
            return None
        now = ctx.clock()
        overrides = task.facts or {}
        old = current.facts if current is not None else Facts()
        facts = replace(
            old,
            url=old.url or f"https://github.com/{repo}/pull/{pr}",
            author=old.author or tags.get("author", ""),
            branch=overrides.get("BRANCH", old.branch),
            head_sha=overrides.get("HEAD_SHA", old.head_sha),
            clone_url=overrides.get("REPO", old.clone_url),
            session=session,
            pool_id=tags.get("pool", "") if tags.get("pool") == task.started_by else "",
            launch_started=now,
            requested_by="uat-bot",
            task_definition=task.task_definition_arn or None,
            replace=None,
            idle_until=now + ctx.settings.uat_idle_hours * 3600,
            warned=False,
            health=None,
            last_seen=task.last_status,
            task_ip=task.private_ip,
            reason="",
            label_gone=False,
            stopped_at=None,
            shown="",
        )
        state = State.RUNNING if task.last_status == "RUNNING" else State.PROVISIONING
        thread_ts = current.thread_ts if current is not None else None
        found = thread_ts is not None
        if thread_ts is None and ctx.channel:
            thread_ts = await ctx.outbox.recover(card_key(repo, pr), ctx.channel)
            found = thread_ts is not None
        env = replace(
            current or Environment(repo=repo, pr=pr, state=state),
            state=state,
            label=tags["label"],
            task_arn=task.arn,
            image_digest=tags["image-digest"],
            thread_ts=thread_ts,
            facts=facts,
        )
        try:
            saved = await ctx.store.save_environment(env)
        except VersionConflict:  # someone else changed this PR meanwhile: the next round looks
            logger.info("%s#%d changed while adopting %s", outside(repo), pr, task.arn)
            return None
        logger.warning(
            "adopted task %s of %s#%d (%s): the store did not know it",
            task.arn,
            outside(repo),
            pr,
            session,
        )
        if not ctx.channel:
            return saved
        try:
            return await self.show_adopted(saved, found, now)
        except UserError as exc:  # Slack refused: the environment is adopted all the same
            logger.warning("the thread of adopted %s#%d: %s", outside(repo), pr, outside(exc))
            return saved

    async def show_adopted(self, env: Environment, found: bool, now: float) -> Environment:
        """The adopted environment's card, found again or new, brought up to date, and a note
        in its thread saying it was adopted."""
        ctx = self.ctx
        repo, pr, session = env.repo, env.pr, env.facts.session
        if found and env.thread_ts:  # a ready reply posted before the store was lost stays one
            await ctx.outbox.recover(
                f"reply:{repo}#{pr}:{session}:{State.READY}", ctx.channel, env.thread_ts
            )
        else:
            text, blocks = slack_ui.environment_card(env, ctx.settings, now)
            ts = await ctx.outbox.post(card_key(repo, pr), ctx.channel, text, blocks)
            env = (
                await change(ctx.store, repo, pr, lambda e: replace(e, thread_ts=e.thread_ts or ts))
                or env
            )
        await self.thread.show(env)
        if env.thread_ts:
            await ctx.outbox.post(
                f"adopted:{session}", ctx.channel, *slack_ui.adopted_note(env, found), env.thread_ts
            )
        return env

    async def report(self, task: TaskInfo, text: str) -> None:
        """Say once (in the log, and in the UAT channel) that a task of this installation was
        left running because it cannot be adopted."""
        if task.arn in self.reported:
            return
        self.reported.add(task.arn)
        logger.warning("not adopting task %s: %s", task.arn, slack_ui.plain(text))
        if self.ctx.channel:
            await self.ctx.outbox.post(f"unadoptable:{task.arn}", self.ctx.channel, text)

    async def resume_stalled(self, envs: list[Environment], now: float) -> None:
        """Resume the launches among `envs` that nobody carries on: starting for longer than a
        launch lease, not launched here, and their PR's launch lease free. A replica killed
        mid-launch while another held the watcher lease leaves such a launch: no takeover
        follows (the holder lives on), so `reconcile` never sees it, and a redelivered label
        finds the PR live already."""
        ctx = self.ctx
        for env in envs:
            started = env.facts.launch_started
            if (
                env.state != State.STARTING
                or env.facts.session in ctx.launching
                or (started is not None and now - started < LAUNCH_LEASE_S)
            ):
                continue
            held = await ctx.store.get_lock(launch_lease(env.repo, env.pr))
            if held is not None:  # its launcher (here or on another replica) is at it
                seen = (env.facts.session, held.holder)
                if seen not in self.stalled_seen:  # said once: a launch slow to start
                    self.stalled_seen.add(seen)
                    logger.info(
                        "%s#%d (%s) still starting; %s holds its launch lease",
                        outside(env.repo),
                        env.pr,
                        env.facts.session,
                        outside(held.holder),
                    )
                continue
            logger.warning(
                "resuming the launch of %s#%d (%s): its launcher stopped",
                outside(env.repo),
                env.pr,
                env.facts.session,
            )
            note = self.thread.note(env, slack_ui.RESUMED_LAUNCH)
            ctx.tasks.spawn(note, name=f"note resumed launch {env.pr}")
            self.resume(env)

    def resume(self, env: Environment) -> None:
        session = env.facts.session
        self.ctx.launching.add(session)  # until the spawned launch takes over the marker
        self.launcher.spawn(env.repo, env.pr, session, f"resume launch {env.repo}#{env.pr}")

    async def catch_up(self, envs: list[Environment] | None = None) -> None:
        """Threads a crash left behind their environment's state are brought up to date."""
        ctx = self.ctx
        for env in await ctx.store.list_environments() if envs is None else envs:
            if unshown(env):
                shown = self.thread.catch_up(env)
                ctx.tasks.spawn(shown, name=f"catch up {env.repo}#{env.pr}")
            elif not env.thread_ts and env.state in ACTIVE and env.state != State.STARTING:
                # its launch's card was still waiting for Slack when the process died (a
                # starting one is resumed by its launch, which posts its card)
                posted = self.launcher.post_missing_card(env)
                ctx.tasks.spawn(posted, name=f"post the card of {env.repo}#{env.pr}")

    async def sweep(self) -> None:
        """What a replica killed half-way left while another replica held the watcher lease
        (so no takeover, and no `reconcile`, follows): a stop recorded and not carried out, a
        state recorded and not shown in its thread, a card never posted. The watcher's holder
        looks every SWEEP_EVERY_S at the environments last changed over LEFT_BEHIND_S ago that
        this process is not stopping or showing already. A state not yet shown gets its card
        updated at once, and its reply only after REPLY_LEFT_BEHIND_S: the replica that changed
        it may still be waiting for Slack's pace to post that reply (keyed, it is posted once;
        a wait past the outbox's IN_FLIGHT_S is what could post it twice)."""
        ctx = self.ctx
        now = time.time()  # the store's clock (records' updated_at), not the bot's
        left = [
            env
            for env in await ctx.store.list_environments()
            if now - env.updated_at > LEFT_BEHIND_S
            and (env.repo, env.pr) not in self.thread.showing
            and (env.repo, env.pr) not in self.stopper.finishing
            and env.facts.session not in ctx.launching
        ]
        behind = []
        refreshed, resumed = set(), set()
        for env in left:
            if env.state == State.STOPPING:
                seen = (env.repo, env.pr, env.version)
                resumed.add(seen)
                if seen not in self.resumed:  # logged once, however many sweeps it takes
                    logger.warning(
                        "carrying out the stop of %s#%d: its replica stopped",
                        outside(env.repo),
                        env.pr,
                    )
                finish = self.stopper.finish_stop(env.repo, env.pr)
                ctx.tasks.spawn(finish, name=f"resume stop {env.pr}")
            elif unshown(env) and now - env.updated_at < REPLY_LEFT_BEHIND_S:
                # its reply may still be waiting for Slack's pace in the replica that changed
                # the state: the card now, once per version; the reply once that post is over
                seen = (env.repo, env.pr, env.version)
                refreshed.add(seen)
                if seen not in self.refreshed:
                    card = self.thread.show(env, card_only=True)
                    ctx.tasks.spawn(card, name=f"card of {env.repo}#{env.pr}")
            else:
                behind.append(env)
        self.refreshed, self.resumed = refreshed, resumed
        await self.catch_up(behind)

    async def leftovers(self) -> Leftovers:
        """What no active environment owns (see `find_leftovers`)."""
        return await find_leftovers(self.ctx.ecs, self.ctx.store, self.ctx.settings)

    async def cleanup(self, expected: str | None = None) -> Leftovers | None:
        """Remove what `leftovers` finds, if it is still what was shown (its `fingerprint` is
        `expected`); None, with nothing removed, when it changed meanwhile."""
        found = await self.leftovers()
        if expected is not None and fingerprint(found) != expected:
            return None
        await remove_leftovers(self.ctx.ecs, found)
        return found


async def find_leftovers(ecs: Ecs, store: Store, settings: Settings) -> Leftovers:
    """What no active environment owns: this installation's tasks (adopted ones are owned), the
    bot's revisions no live task uses, and routing of sessions no live task runs. Another
    installation's tasks, and the revisions and routing they use, are never among them."""
    envs = await store.list_environments(ACTIVE)
    sessions = {e.facts.session for e in envs if e.facts.session}
    # warm-pool tasks are started by their pool id: waiting ones (and claimed ones) are owned
    sessions |= {e.facts.pool_id for e in envs if e.facts.pool_id}
    sessions |= {e.pool_id for e in await store.list_pool_entries()}
    live = await ecs.live_tasks()
    installation = settings.installation
    orphans = [t.arn for t in live if ours(t, installation) and t.started_by not in sessions]
    in_use = {t.task_definition_arn for t in live if t.arn not in orphans}
    in_use |= {e.facts.task_definition for e in envs if e.facts.task_definition}
    running = sessions | {t.started_by for t in live if t.arn not in orphans}
    revisions = [a for a in await ecs.task_definitions(own_family(settings)) if a not in in_use]
    routing = [arn for arn, session in await ecs.routing() if session not in running]
    return Leftovers(orphans, revisions, routing)


async def remove_leftovers(ecs: Ecs, found: Leftovers) -> None:
    """Stop the tasks, deregister the revisions and delete the routing `found` lists."""
    for arn in found.tasks:
        await ecs.stop_task(arn, "uat-bot cleanup: no environment owns this task")
    for arn in found.revisions:
        await ecs.deregister(arn)
    if found.routing:
        await ecs.delete_routing(found.routing)


def fingerprint(leftovers: Leftovers) -> str:
    """A short digest of what a cleanup would remove, carried by its confirmation button."""
    items = sorted(leftovers.tasks) + sorted(leftovers.revisions) + sorted(leftovers.routing)
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
