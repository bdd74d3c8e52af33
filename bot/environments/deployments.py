"""The PR page shows its environment: a GitHub deployment per launch (session), in environment
`uat/pr-<n>`, whose statuses follow the environment (in_progress, success with the app link and
the Slack thread, failure with the reason, inactive once stopped or replaced), and a `uat` commit
status on the head sha mirroring them.

GitHub never holds up Slack or the task: `Deployments.kick` runs a sync in the background after
the thread is updated, and the watcher's every round catches up whatever is not done yet (GitHub
down, rate limited, the bot killed half-way). Each step is keyed in the store:

- `github-deployment:<repo>#<pr>:<session>` (a reserved post whose ts is the deployment id) is
  reserved before the deployment is created; a reservation without an id (a crash in between)
  is looked up in GitHub by the `uat_session` of the deployments' payloads before creating one;
- `github:<repo>#<pr>:<session>:<state>` is claimed once a state is shown (and, with it, the
  states before it, so a late sync never shows an older one after a newer);
- `github:<repo>#<pr>:<session>:retired` once the PR's older deployments are made inactive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.environments.context import Context
from bot.github_api import (
    DEPLOYMENTS,
    STATUSES,
    GitHub,
    GitHubNotInstalled,
    GitHubPermission,
    GitHubRefused,
    GitHubUnavailable,
)
from bot.logs import outside
from bot.slack import slack_ui
from bot.slack.outbox import IN_FLIGHT_S
from bot.store import Environment, Post, State

logger = logging.getLogger(__name__)

# the deployment status each environment state shows, in the order they may follow each other
SHOWN: dict[State, str] = {
    State.STARTING: "in_progress",
    State.PROVISIONING: "in_progress",
    State.RUNNING: "in_progress",
    State.READY: "success",
    State.FAILED: "failure",
    State.STOPPED: "inactive",
}
RANK = {"in_progress": 0, "success": 1, "failure": 1, "inactive": 2}
# the commit status (pending, success, failure, error) each deployment status shows
COMMIT_STATE = {"in_progress": "pending", "success": "success", "failure": "failure"}

Permalink = Callable[[str, str], Awaitable[str | None]]


def environment_name(pr: int) -> str:
    return f"uat/pr-{pr}"


class Deployments:
    """Keeps GitHub's deployments and `uat` commit statuses showing each PR's environment."""

    def __init__(self, ctx: Context, github: GitHub | None, permalink: Permalink | None) -> None:
        self.ctx = ctx
        self.github = github
        self.permalink = permalink
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.done: set[str] = set()  # keys known claimed: not read from the store again
        self.pending: set[tuple[str, int]] = set()  # PRs with a sync waiting to start
        self.reserved: set[str] = set()  # deployment keys this process reserved

    def kick(self, env: Environment) -> None:
        """Sync `env`'s PR in the background (never waited for by Slack or the task), unless
        its state is known to be shown or a sync of it is waiting already."""
        if self.github is None or env.state not in SHOWN or not env.facts.session:
            return
        where = (env.repo, env.pr)
        if self._key(env, SHOWN[env.state]) in self.done or where in self.pending:
            return
        self.pending.add(where)
        self.ctx.tasks.spawn(self._kicked(env.repo, env.pr), name=f"github {env.repo}#{env.pr}")

    async def _kicked(self, repo: str, pr: int) -> None:
        lock = self._locks.setdefault((repo, pr), asyncio.Lock())
        async with lock:
            self.pending.discard((repo, pr))  # a kick from now on syncs again after this one
            await self._catch_up(repo, pr)

    async def catch_up(self, repo: str, pr: int) -> None:
        """Show the environment's current state on GitHub unless it is shown already; GitHub
        failing is logged, and the watcher's next round tries again."""
        lock = self._locks.setdefault((repo, pr), asyncio.Lock())
        async with lock:  # one sync per PR at a time in this process, in order
            await self._catch_up(repo, pr)

    async def _catch_up(self, repo: str, pr: int) -> None:
        if self.github is None:
            return
        try:
            await self._sync(self.github, repo, pr)
        except GitHubUnavailable as exc:
            where = outside(repo)
            logger.warning("GitHub for %s#%d: %s; trying again later", where, pr, outside(exc))
        except Exception:
            logger.exception("showing %s#%d on GitHub failed; trying again", outside(repo), pr)

    def _key(self, env: Environment, what: str) -> str:
        return f"github:{env.repo}#{env.pr}:{env.facts.session}:{what}"

    async def _sync(self, github: GitHub, repo: str, pr: int) -> None:
        store = self.ctx.store
        env = await store.get_environment(repo, pr)  # the latest, whoever kicked
        if env is None or env.state not in SHOWN or not env.facts.session:
            return
        if not env.facts.head_sha:
            return
        shown = SHOWN[env.state]
        if self._key(env, shown) in self.done or await store.claimed(self._key(env, shown)):
            self.done.add(self._key(env, shown))
            return
        try:
            deployment = await self._deployment(github, env, create=env.state != State.STOPPED)
            if deployment is not None:
                await self._retire_older(github, env, deployment)
                await self._status(github, env, deployment, shown)
        except GitHubPermission as exc:  # told once; the next state tries again
            await self._tell_permission(env, exc)
            deployment = None
        if self.ctx.settings.uat_github_status and (deployment is not None or shown != "inactive"):
            await self._commit_status(github, env, shown)
        for state, rank in RANK.items():  # this state, and those it comes after, are done
            if state == shown or rank < RANK[shown]:
                await store.claim(self._key(env, state), "github")
                self.done.add(self._key(env, state))

    async def _deployment(self, github: GitHub, env: Environment, create: bool) -> int | None:
        """This session's deployment id: recorded, found again after a crash, or created."""
        key = f"github-deployment:{env.repo}#{env.pr}:{env.facts.session}"
        stored, fresh = await self.ctx.store.reserve_post(Post(key, "github"))
        if stored.ts:
            return int(stored.ts)
        if fresh:
            self.reserved.add(key)
        environment = environment_name(env.pr)
        if not fresh:  # reserved before a crash: did GitHub create it?
            for found in await github.deployments(env.repo, environment, env.facts.head_sha):
                if found.payload.get("uat_session") == env.facts.session:
                    await self.ctx.store.posted(key, str(found.id))
                    return found.id
            young = self.ctx.clock() - stored.created_at < IN_FLIGHT_S
            if key not in self.reserved and young:  # another replica may be creating it
                raise GitHubUnavailable("another replica may be creating the deployment")
        if not create:
            return None
        try:
            created = await github.create_deployment(
                env.repo,
                env.facts.head_sha,
                environment,
                {"uat_session": env.facts.session, "uat_label": env.label},
                slack_ui.github_deployment_description(env),
            )
        except GitHubRefused as exc:  # asking again will not help: shown without a deployment
            where = outside(env.repo)
            logger.warning("GitHub refused a deployment of %s#%d: %s", where, env.pr, outside(exc))
            return None
        await self.ctx.store.posted(key, str(created))
        return created

    async def _retire_older(self, github: GitHub, env: Environment, deployment: int) -> None:
        """Make the PR's other deployments inactive (a new push restarted it on a new sha)."""
        key = self._key(env, "retired")
        if await self.ctx.store.claimed(key):
            return
        for old in await github.deployments(env.repo, environment_name(env.pr)):
            session = str(old.payload.get("uat_session") or "")
            if old.id == deployment or not session or session == env.facts.session:
                continue
            done = f"github:{env.repo}#{env.pr}:{session}:inactive"
            if await self.ctx.store.claimed(done):
                continue
            text = slack_ui.github_status_description("inactive", env)
            await github.deployment_status(env.repo, old.id, "inactive", text)
            await self.ctx.store.claim(done, "github")
        await self.ctx.store.claim(key, "github")

    async def _status(self, github: GitHub, env: Environment, deployment: int, shown: str) -> None:
        app = slack_ui.app_url(env, self.ctx.settings) if shown == "success" else None
        thread = await self._thread_link(env) if shown in ("success", "failure") else None
        try:
            await github.deployment_status(
                env.repo,
                deployment,
                shown,
                slack_ui.github_status_description(shown, env),
                environment_url=app,
                log_url=thread,
            )
        except GitHubRefused as exc:
            where = outside(env.repo)
            logger.warning(
                "GitHub refused %s#%d's %s status: %s", where, env.pr, shown, outside(exc)
            )

    async def _commit_status(self, github: GitHub, env: Environment, shown: str) -> None:
        state = COMMIT_STATE.get(shown)
        if state is None:  # stopped: success once it was ready, else an error
            ready = await self.ctx.store.claimed(self._key(env, "success"))
            state = "success" if ready else "error"
        link = slack_ui.app_url(env, self.ctx.settings) if shown == "success" else None
        try:
            await github.commit_status(
                env.repo,
                env.facts.head_sha,
                state,
                slack_ui.github_status_description(shown, env),
                link or await self._thread_link(env),
            )
        except GitHubPermission as exc:
            await self._tell_permission(env, exc)
        except GitHubRefused as exc:
            where = outside(env.repo)
            logger.warning("GitHub refused %s#%d's uat status: %s", where, env.pr, outside(exc))

    async def _thread_link(self, env: Environment) -> str | None:
        channel = self.ctx.settings.uat_channel
        if self.permalink is None or not env.thread_ts or not channel:
            return None
        try:
            return await self.permalink(channel, env.thread_ts)
        except Exception:
            where = outside(env.repo)
            logger.warning("no permalink for %s#%d's thread", where, env.pr, exc_info=True)
            return None

    async def _tell_permission(self, env: Environment, exc: GitHubPermission) -> None:
        """Say once in the PR's thread which permission the bot lacks on GitHub."""
        logger.warning("GitHub for %s#%d: %s", outside(env.repo), env.pr, outside(exc))
        channel = self.ctx.settings.uat_channel
        if not env.thread_ts or not channel:
            return
        key = f"github-permission:{env.repo}#{env.pr}:{exc.permission}"
        if isinstance(exc, GitHubNotInstalled):
            text = slack_ui.github_app_not_installed(env.repo)
        else:
            text = slack_ui.github_permission_missing(exc.permission, exc.status)
        await self.ctx.outbox.post(key, channel, text, None, env.thread_ts)


__all__ = ["DEPLOYMENTS", "STATUSES", "Deployments", "environment_name"]
