"""Prompts relayed to the coding agent in a PR's container, and the results posted back.

A prompt goes to the container's `POST /prompt` (bearer token) through UAT_CONTAINER_URL; the
job is then followed by polling `GET /prompts/{id}` with backoff until it ends, and the result
goes into the PR's thread: a message (a few at most) and, when the agent said more than a message
holds, its whole output as a file (`GET /prompts/{id}/output`).

Jobs being followed are in the store until their result is posted, so a restart resumes them;
one replica at a time follows a job (a lease), and the result's messages are keyed (see
bot/slack/outbox.py), so a follower cut short mid-post and resumed posts nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Any

from bot.config import Settings
from bot.container import (
    JOB_ID,
    MAX_PROMPT,
    ContainerClient,
    ContainerError,
    ContainerRefused,
    ContainerUnreachable,
    JobEnded,
    NoSuchJob,
    TokenRefused,
)
from bot.environments import LIVE, Environments
from bot.errors import UserError
from bot.logs import outside
from bot.slack import limits, slack_ui
from bot.slack.chat import Chat, ChatError, Message, Upload
from bot.slack.outbox import Outbox
from bot.store import Carried, Environment, Facts, Relay, State, Store, renewing
from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

__all__ = ["MAX_PROMPT", "Prompts", "Queued"]

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
FIRST_POLL_S = 1.0
MAX_POLL_S = 15.0
UNREACHABLE_GIVE_UP_S = 15 * 60
RELAY_LEASE_S = 30.0  # a dead follower's lease lapses this long after its last renewal
MAX_RESULT_MESSAGES = 3
LONG_OUTPUT_CHARS = limits.SECTION_TEXT  # more than a section holds: the output goes as a file


@dataclass(frozen=True)
class Queued:
    job_id: str
    position: int
    env: Environment


class Prompts:
    """Sends prompts to containers and follows them to their result."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        chat: Chat,
        environments: Environments,
        container: ContainerClient,
        tasks: TaskSupervisor,
    ) -> None:
        self.settings = settings
        self.store = store
        self.chat = chat
        self.environments = environments
        self.container = container
        self.tasks = tasks
        self.first_poll_s = FIRST_POLL_S
        self.outbox = Outbox(store, chat)
        self._following: set[str] = set()  # job ids this process follows
        environments.when_ready.append(self.resend_carried)

    def _token(self, env: Environment) -> str:
        """`env`'s own prompt token (derived from UAT_PROMPT_TOKEN, which never leaves the bot)."""
        token = self.environments.prompt_token(env)
        if token is None:
            raise UserError(slack_ui.NO_PROMPT_TOKEN)
        return token

    async def submit(self, env: Environment, text: str, user: str) -> Queued:
        """Queue `text` in the PR's container; says in the thread who asked what."""
        text = text.strip()
        if not text:
            raise UserError(slack_ui.EMPTY_PROMPT)
        if len(text) > MAX_PROMPT:
            raise UserError(slack_ui.prompt_too_long(len(text), MAX_PROMPT))
        if env.state not in LIVE:
            raise UserError(slack_ui.not_running_env(env))
        if env.state != State.READY or not env.task_arn:
            timeout = self.settings.uat_launch_timeout_s
            raise UserError(slack_ui.not_ready(env, self.environments.clock(), timeout))
        token = self._token(env)
        base = self.environments.container_url(env)
        try:
            submitted = await self.container.submit(
                base, token, prompt=text, user=user, thread=env.thread_ts or ""
            )
        except TokenRefused:
            raise UserError(slack_ui.PROMPT_TOKEN_REFUSED) from None
        except ContainerRefused as exc:
            raise UserError(slack_ui.container_refused(env, exc.reason)) from None
        except ContainerUnreachable:
            raise UserError(slack_ui.container_unreachable(env)) from None
        queued = Queued(submitted.job_id, submitted.position, env)
        relay = Relay(queued.job_id, env.repo, env.pr, user, env.thread_ts or "", text)
        await self.store.open_relay(relay)
        try:  # bookkeeping: the container has the prompt, so it is reported as accepted
            await self.environments.touch(env.repo, env.pr)
        except UserError as exc:  # the PR keeps changing: the idle stop moves with the next one
            logger.warning("prompt %s accepted; its idle stop not moved: %s", relay.job_id, exc)
        if env.thread_ts and self.settings.uat_channel:
            note, blocks = slack_ui.prompt_queued(relay, queued.position)
            # keyed: the result's follower finds it, to take its Cancel button away
            await self.outbox.post(
                _asked_key(relay), self.settings.uat_channel, note, blocks, env.thread_ts
            )
        self.follow(relay)
        return queued

    def follow(self, relay: Relay) -> None:
        if relay.job_id in self._following:
            return
        self._following.add(relay.job_id)
        self.tasks.spawn(self._follow(relay), name=f"follow prompt {relay.job_id}")

    async def resume(self) -> None:
        """After a restart: follow every prompt whose result was not posted yet, and send what a
        restart carried over to environments that became ready meanwhile."""
        for relay in await self.store.open_relays():
            self.follow(relay)
        for env in await self.store.list_environments([State.READY]):
            if env.facts.carry:
                self.tasks.spawn(self.resend_carried(env), name=f"resend {env.repo}#{env.pr}")

    async def author(self, env: Environment, job_id: str) -> str | None:
        """Who asked for the prompt `job_id` of `env`, while its result is still to come."""
        relay = await self.store.relay(env.repo, env.pr, job_id)
        return None if relay is None else relay.user

    async def cancel(self, env: Environment, job_id: str, user: str) -> None:
        """Cancel a queued or running prompt; its result then says who cancelled it. A job id
        not in the container's format is refused here, before anything is recorded or sent."""
        if not JOB_ID.fullmatch(job_id):
            raise UserError(slack_ui.bad_job_id(job_id))
        await self.environments.edit_facts(
            env.repo,
            env.pr,
            lambda f: replace(f, prompt_cancels={**f.prompt_cancels, job_id: user}),
        )
        base = self.environments.container_url(env)
        try:
            await self.container.cancel(base, self._token(env), job_id)
        except TokenRefused:
            raise UserError(slack_ui.PROMPT_TOKEN_REFUSED) from None
        except NoSuchJob:
            raise UserError(slack_ui.no_such_job(job_id)) from None
        except JobEnded:  # it ended before the cancel reached it
            job = await self._job(env, job_id) or {}
            state = str(job.get("state") or "ended")
            raise UserError(slack_ui.prompt_already_ended(job_id, state)) from None
        except ContainerRefused as exc:
            raise UserError(slack_ui.container_refused(env, exc.reason)) from None
        except ContainerUnreachable:
            raise UserError(slack_ui.container_unreachable(env)) from None

    # ------------------------------------------------------------------ across a restart

    async def carry_over(self, env: Environment) -> None:
        """Before `/uat restart` replaces the task: the prompts still queued in the old container
        are cancelled there and kept (in order) to be sent to the new one once it is ready; the
        others the old container still has are dropped, and the thread says which and why."""
        relays = [r for r in await self.store.open_relays() if (r.repo, r.pr) == (env.repo, env.pr)]
        if not relays or env.state not in LIVE:
            return
        carried: list[Relay] = []
        dropped: list[tuple[Relay, str]] = []
        for relay in relays:
            job = await self._job(env, relay.job_id)
            state = None if job is None else job.get("state")
            if state == "queued":
                try:
                    await self._delete(env, relay.job_id)
                except (ContainerError, UserError):
                    dropped.append((relay, "the old container did not let it go"))
                    continue
                carried.append(relay)
            elif state == "running":
                dropped.append((relay, "it was running, and the restart stops it"))
            elif job is None:
                dropped.append((relay, "the old container does not answer"))
            # an ended job: its follower posts the result as usual
        items = tuple(Carried(r.prompt, r.user, r.job_id) for r in carried)
        if items:
            await self.environments.edit_facts(
                env.repo, env.pr, lambda f: replace(f, carry=(*f.carry, *items))
            )
        for relay in [*carried, *(r for r, _ in dropped)]:
            await self.store.close_relay(relay.repo, relay.pr, relay.job_id)
            await self._close_card(relay, "carried over" if relay in carried else "dropped")
        if (carried or dropped) and env.thread_ts and self.settings.uat_channel:
            text = slack_ui.prompts_carried(carried, dropped)
            await self.chat.post(
                Message(self.settings.uat_channel, text, [slack_ui.text_block(text)], env.thread_ts)
            )

    async def resend_carried(self, env: Environment) -> None:
        """Once the new environment is ready: send the carried-over prompts, in order; the thread
        says which the new container did not take, and why."""
        taken: list[tuple[Carried, ...]] = []

        def take(facts: Facts) -> Facts | None:
            if not facts.carry:
                return None
            taken[:] = [facts.carry]
            return replace(facts, carry=())

        saved = await self.environments.edit_facts(env.repo, env.pr, take)
        if saved is None or not taken:
            return
        failed: list[tuple[tuple[str, str], str]] = []
        for item in taken[0]:
            prompt, user = item.prompt, item.user
            try:
                await self.submit(saved, prompt, user)
            except UserError as exc:
                failed.append(((prompt, user), str(exc)))
        if failed and saved.thread_ts and self.settings.uat_channel:
            text = slack_ui.prompts_not_resent(failed)
            await self.chat.post(
                Message(
                    self.settings.uat_channel, text, [slack_ui.text_block(text)], saved.thread_ts
                )
            )

    async def _delete(self, env: Environment, job_id: str) -> None:
        """Cancel a job in the container; one that ended meanwhile is as good."""
        base = self.environments.container_url(env)
        with contextlib.suppress(JobEnded):
            await self.container.cancel(base, self._token(env), job_id)

    async def _follow(self, relay: Relay) -> None:
        """Follow the job while holding its lease; wait while another replica holds it, and stop
        once its result is posted."""
        lease, holder = f"relay:{relay.job_id}", self.environments.replica
        try:
            while not await self.store.hold_lease(lease, holder, RELAY_LEASE_S):
                if not await self._open(relay):
                    return
                await asyncio.sleep(RELAY_LEASE_S / 4)
            async with renewing(self.store, lease, holder, RELAY_LEASE_S):
                if await self._open(relay):
                    await self._poll(relay)
        finally:
            self._following.discard(relay.job_id)

    async def _open(self, relay: Relay) -> bool:
        return await self.store.relay(relay.repo, relay.pr, relay.job_id) is not None

    async def _poll(self, relay: Relay) -> None:
        delay = self.first_poll_s
        unreachable_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(delay)
            env = await self.store.get_environment(relay.repo, relay.pr)
            if env is None or env.state not in LIVE:
                if await self._open(relay):
                    await self._finish(relay, slack_ui.prompt_lost(relay, env), kind="lost")
                return
            job = await self._job(env, relay.job_id)
            if job is None and not await self._open(relay):
                return  # a restart carried it over or dropped it: its old container is gone
            if job is None:
                unreachable_since = unreachable_since or loop.time()
                if loop.time() - unreachable_since > UNREACHABLE_GIVE_UP_S:
                    if await self._open(relay):
                        await self._finish(relay, slack_ui.prompt_lost(relay, env), kind="lost")
                    return
            else:
                unreachable_since = None
                if job.get("state") in TERMINAL:
                    if not await self._open(relay):  # a restart carried it over, or dropped it
                        return
                    self.environments.metrics.prompt_jobs.labels(state=str(job["state"])).inc()
                    messages, file = await self._result(env, relay, job)
                    await self._finish(relay, messages, file, state=str(job["state"]))
                    return
            delay = min(delay * 1.5, MAX_POLL_S)

    async def _job(self, env: Environment, job_id: str) -> dict[str, Any] | None:
        """The job as its container describes it; None while the container does not answer."""
        try:
            token = self._token(env)
            return await self.container.job(self.environments.container_url(env), token, job_id)
        except NoSuchJob:
            return {"state": "failed", "error": "the container no longer knows this job"}
        except (ContainerError, UserError):  # no answer, no token, or the token refused
            return None

    async def _result(
        self, env: Environment, relay: Relay, job: dict[str, Any]
    ) -> tuple[list[str], str | None]:
        """The result's messages and, when it is long, the text of the file that goes with them."""
        messages = slack_ui.prompt_result(relay, job, _cancelled_by(env, relay.job_id))
        summary_is_long = len(messages) > MAX_RESULT_MESSAGES
        if not summary_is_long and int(job.get("output_chars") or 0) <= LONG_OUTPUT_CHARS:
            return messages, None
        if summary_is_long:
            messages = [*messages[: MAX_RESULT_MESSAGES - 1], slack_ui.REST_IN_FILE]
        output, problem = await self._output(env, relay.job_id)
        if output is None:
            output = str(job.get("output_tail") or "")
        return messages, slack_ui.prompt_file(relay, job, output, problem)

    async def _output(self, env: Environment, job_id: str) -> tuple[str | None, str | None]:
        """The job's whole output from the container, or None and why it could not be read."""
        base = self.environments.container_url(env)
        try:
            return await self.container.output(base, self._token(env), job_id), None
        except TokenRefused:
            return None, slack_ui.PROMPT_TOKEN_REFUSED
        except ContainerRefused as exc:
            return None, exc.reason
        except ContainerUnreachable:
            return None, "the container did not answer"
        except UserError as exc:  # no UAT_PROMPT_TOKEN
            return None, str(exc)

    async def _finish(
        self,
        relay: Relay,
        messages: list[str],
        file: str | None = None,
        kind: str = "result",
        state: str = "lost",
    ) -> None:
        """Post the result (or why there is none: `kind` "lost"), then close the relay. Each
        message and the file are keyed, so a follower resumed after a crash mid-post posts only
        what is missing."""
        channel = self.settings.uat_channel
        if channel and relay.thread_ts:
            for number, text in enumerate(messages):
                await self._say(relay, channel, f"{kind}:{number}", text)
            if file is not None:
                await self._attach(relay, channel, file)
        env = await self.store.get_environment(relay.repo, relay.pr)
        outcome = slack_ui.prompt_outcome(state, _cancelled_by(env, relay.job_id))
        await self._close_card(relay, outcome)
        await self.store.close_relay(relay.repo, relay.pr, relay.job_id)
        if env is not None and relay.job_id in env.facts.prompt_cancels:
            await self.environments.edit_facts(
                relay.repo,
                relay.pr,
                lambda f: replace(
                    f,
                    prompt_cancels={k: v for k, v in f.prompt_cancels.items() if k != relay.job_id},
                ),
            )

    async def _close_card(self, relay: Relay, outcome: str) -> None:
        """Take the Cancel button off the prompt's "asked the agent" message, saying how it
        ended. Best effort: the result is in the thread whatever happens here."""
        channel = self.settings.uat_channel
        if not channel or not relay.thread_ts:
            return
        try:
            ts = await self.outbox.posted(_asked_key(relay), channel, relay.thread_ts)
            if ts:
                text, blocks = slack_ui.prompt_card_closed(relay, outcome)
                await self.chat.update(channel, ts, text, blocks)
        except ChatError as exc:
            logger.warning(
                "could not close the card of prompt %s: %s", outside(relay.job_id), outside(exc)
            )

    async def _attach(self, relay: Relay, channel: str, content: str) -> None:
        name = slack_ui.prompt_file_name(relay.job_id)
        try:
            title = slack_ui.prompt_file_title(relay)
            await self.outbox.upload(Upload(channel, relay.thread_ts, name, content, title))
        except ChatError as exc:  # say so in the thread: the result itself is there already
            logger.warning(
                "could not attach the output of prompt %s: %s", outside(relay.job_id), outside(exc)
            )
            text = slack_ui.prompt_file_failed(relay.job_id, str(exc))
            await self._say(relay, channel, "file-failed", text)

    async def _say(self, relay: Relay, channel: str, part: str, text: str) -> None:
        """Post one keyed part of what a prompt came to in its thread."""
        key = f"prompt:{relay.job_id}:{part}"
        await self.outbox.post(key, channel, text, [slack_ui.text_block(text)], relay.thread_ts)


def _asked_key(relay: Relay) -> str:
    return f"prompt-card:{relay.job_id}"


def _cancelled_by(env: Environment | None, job_id: str) -> str | None:
    user = env.facts.prompt_cancels.get(job_id) if env is not None else None
    return user or None
