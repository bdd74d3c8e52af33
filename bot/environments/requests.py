"""What GitHub's pull_request events and people's commands ask of environments: start or stop
on a label, say when new commits arrive, extend the idle stop, restart, and find the one meant."""

from __future__ import annotations

from dataclasses import replace

from bot import pr_refs
from bot.environments.changes import change, edit_facts
from bot.environments.context import ACTIVE, LIVE, Context, PullRequest
from bot.environments.launcher import Launcher
from bot.environments.stopper import Stopper
from bot.environments.thread import Thread
from bot.errors import UserError
from bot.github import PullRequestEvent
from bot.slack import slack_ui
from bot.slack.chat import Message
from bot.store import Environment, Store


class Requests:
    """Turns events and people's requests into launches, stops and thread updates."""

    def __init__(self, ctx: Context, thread: Thread, launcher: Launcher, stopper: Stopper) -> None:
        self.ctx = ctx
        self.thread = thread
        self.launcher = launcher
        self.stopper = stopper

    async def on_pull_request(self, event: PullRequestEvent) -> None:
        """Record what the event asks for before GitHub gets its 2xx; act in the background
        (a launch once the deliveries being acknowledged are answered: see `answering()`)."""
        pr = PullRequest.from_event(event)
        labels = self.ctx.labels
        uat_labels = [label for label in event.labels if label in labels]
        if event.action == "labeled" and event.label in labels:
            await self.launcher.request_start(pr, event.label, event.sender, deferred=True)
        elif event.action == "unlabeled" and event.label in labels:
            env = await self.ctx.store.get_environment(pr.repo, pr.number)
            if env is not None and env.label == event.label:
                await self._label_gone(pr)
                await self.stopper.request_stop(
                    pr.repo, pr.number, f"`{event.label}` removed", event.sender
                )
        elif event.action == "closed":
            await self._label_gone(pr)
            verb = "merged" if event.merged else "closed"
            await self.stopper.request_stop(pr.repo, pr.number, f"PR {verb}", event.sender)
        elif event.action == "reopened" and uat_labels:
            await self.launcher.request_start(pr, uat_labels[0], event.sender, deferred=True)
        elif event.action == "synchronize":
            await self._pushed(pr)
            await self.note_new_commits(pr, event.sender)

    async def _label_gone(self, pr: PullRequest) -> None:
        """Remember that the PR no longer asks for an environment (closed, or its label removed):
        hints then say to label it rather than to `/uat restart` it."""
        await edit_facts(
            self.ctx.store,
            pr.repo,
            pr.number,
            lambda f: None if f.label_gone else replace(f, label_gone=True),
        )

    async def _pushed(self, pr: PullRequest) -> None:
        """Remember the PR's new head, which a restart runs (and shows on GitHub)."""
        await edit_facts(
            self.ctx.store,
            pr.repo,
            pr.number,
            lambda f: (
                None
                if pr.head_sha in (f.head_sha, f.pushed_sha)
                else replace(f, pushed_sha=pr.head_sha)
            ),
        )

    async def note_new_commits(self, pr: PullRequest, actor: str) -> None:
        ctx = self.ctx
        env = await ctx.store.get_environment(pr.repo, pr.number)
        if env is None or env.state not in LIVE or not env.thread_ts:
            return
        if not await ctx.store.claim(f"commits:{pr.repo}#{pr.number}@{pr.head_sha}", "note"):
            return  # said already (the same push delivered twice)
        text, blocks = slack_ui.new_commits(env, pr.head_sha, actor)
        await ctx.chat.post(Message(ctx.channel, text, blocks, env.thread_ts))

    async def extend(self, repo: str, pr: int, hours: float) -> tuple[Environment, bool]:
        """Move the idle stop to `hours` from now, never earlier than it already is: the
        environment, and whether the stop moved (False: the later one was kept)."""
        until = self.ctx.clock() + hours * 3600
        current: list[Environment] = []

        def later(env: Environment) -> Environment | None:
            current[:] = [env]
            if env.state not in LIVE or (env.facts.idle_until or 0) >= until:
                return None
            return env.with_facts(idle_until=until, warned=False)

        saved = await change(self.ctx.store, repo, pr, later)
        if saved is None:
            if not current:
                raise UserError(slack_ui.not_running(repo, pr))
            if current[0].state not in LIVE:
                raise UserError(slack_ui.not_running_env(current[0]))
            return current[0], False
        await self.thread.show(saved)
        return saved, True

    async def touch(self, repo: str, pr: int) -> None:
        """Activity (a prompt): the idle stop moves UAT_IDLE_HOURS from now."""
        until = self.ctx.clock() + self.ctx.settings.uat_idle_hours * 3600

        def later(env: Environment) -> Environment | None:
            if env.state not in LIVE or (env.facts.idle_until or 0) >= until:
                return None
            return env.with_facts(idle_until=until, warned=False)

        await change(self.ctx.store, repo, pr, later)

    async def by_thread(self, thread_ts: str) -> Environment | None:
        """The environment whose Slack thread starts at `thread_ts`."""
        for env in await self.ctx.store.list_environments():
            if env.thread_ts == thread_ts:
                return env
        return None

    async def restart(
        self, repo: str, pr: int, actor: str, *, asked_at: float | None = None
    ) -> None:
        """Replace the environment's task; `asked_at` as `Launcher.request_start` takes it."""
        env = await self.ctx.store.get_environment(repo, pr)
        if env is None or not slack_ui.restartable(env):  # closed, or its label was removed
            raise UserError(slack_ui.not_running(repo, pr))
        target = PullRequest.of(env)
        if env.facts.pushed_sha:  # a push since it started: the restart runs the new head
            target = replace(target, head_sha=env.facts.pushed_sha)
        await self.launcher.request_start(target, env.label, actor, force=True, asked_at=asked_at)

    async def find(self, ref: str) -> Environment:
        """The environment a person means by `PR-123`, `#123`, `123`, `owner/repo#123` or the
        PR's link (see bot/pr_refs.py)."""
        return await find_environment(self.ctx.store, ref)


async def find_environment(store: Store, ref: str) -> Environment:
    """The environment in `store` a person means by `ref` (see `Requests.find`)."""
    named = pr_refs.parse(ref)
    if named is None:
        raise UserError(slack_ui.bad_pr_ref(ref))
    number = named.number
    found = [e for e in await store.list_environments() if e.pr == number]
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
