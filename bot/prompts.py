"""Prompts relayed to the coding agent in a PR's container, and the results posted back.

A prompt goes to the container's `POST /prompt` (bearer token) through UAT_CONTAINER_URL; the
job is then followed by polling `GET /prompts/{id}` with backoff until it ends, and the result
goes into the PR's thread: a message (a few at most) and, when the agent said more than a message
holds, its whole output as a file (`GET /prompts/{id}/output`).

Jobs being followed are in the store until their result is posted, so a restart resumes them;
one replica at a time follows a job (a lease), and the result's messages are keyed (see
bot/outbox.py), so a follower cut short mid-post and resumed posts nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot import slack_ui
from bot.chat import Chat, ChatError
from bot.config import Settings
from bot.environments import LIVE, Environments
from bot.errors import UserError
from bot.outbox import Outbox
from bot.store import Environment, Relay, Store, renewing
from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

MAX_PROMPT = 20_000
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
REQUEST_TIMEOUT_S = 10.0
FIRST_POLL_S = 1.0
MAX_POLL_S = 15.0
UNREACHABLE_GIVE_UP_S = 15 * 60
RELAY_LEASE_S = 30.0  # a dead follower's lease lapses this long after its last renewal
MAX_RESULT_MESSAGES = 3
LONG_OUTPUT_CHARS = 3_000  # more than one message section holds: the output goes as a file


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
        tasks: TaskSupervisor,
    ) -> None:
        self.settings = settings
        self.store = store
        self.chat = chat
        self.environments = environments
        self.tasks = tasks
        self._http: aiohttp.ClientSession | None = None
        self.first_poll_s = FIRST_POLL_S
        self.outbox = Outbox(store, chat)
        self._following: set[str] = set()  # job ids this process follows

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _headers(self) -> dict[str, str]:
        token = self.settings.uat_prompt_token
        if token is None:
            raise UserError(slack_ui.NO_PROMPT_TOKEN)
        return {"Authorization": f"Bearer {token.get_secret_value()}"}

    async def submit(self, env: Environment, text: str, user: str) -> Queued:
        """Queue `text` in the PR's container; says in the thread who asked what."""
        text = text.strip()
        if not text:
            raise UserError(slack_ui.EMPTY_PROMPT)
        if len(text) > MAX_PROMPT:
            raise UserError(slack_ui.prompt_too_long(len(text), MAX_PROMPT))
        if env.state not in LIVE or not env.task_arn:
            raise UserError(slack_ui.not_running(env.repo, env.pr))
        if env.state != "ready":
            raise UserError(slack_ui.not_ready(env))
        headers = self._headers()
        url = self.environments.container_url(env) + "/prompt"
        body = {"prompt": text, "user": user, "thread": env.thread_ts or ""}
        try:
            async with self.http.post(url, json=body, headers=headers) as response:
                answer = await _json(response)
                if response.status == 401:
                    raise UserError(slack_ui.PROMPT_TOKEN_REFUSED)
                if response.status != 202:
                    reason = answer.get("error") or f"HTTP {response.status}"
                    raise UserError(slack_ui.container_refused(env, str(reason)))
        except (aiohttp.ClientError, TimeoutError):
            raise UserError(slack_ui.container_unreachable(env)) from None
        if "id" not in answer:
            raise UserError(slack_ui.container_refused(env, "it answered without a job id"))
        position = answer.get("position")  # null once the job has left the queue: it runs
        queued = Queued(str(answer["id"]), int(position) if position else 0, env)
        relay = Relay(queued.job_id, env.repo, env.pr, user, env.thread_ts or "", text)
        await self.store.open_relay(relay)
        await self.environments.touch(env.repo, env.pr)
        if env.thread_ts and self.settings.uat_channel:
            note, blocks = slack_ui.prompt_queued(relay, queued.position)
            await self.chat.post(self.settings.uat_channel, note, blocks, env.thread_ts)
        self.follow(relay)
        return queued

    def follow(self, relay: Relay) -> None:
        if relay.job_id in self._following:
            return
        self._following.add(relay.job_id)
        self.tasks.spawn(self._follow(relay), name=f"follow prompt {relay.job_id}")

    async def resume(self) -> None:
        """After a restart: follow every prompt whose result was not posted yet."""
        for relay in await self.store.open_relays():
            self.follow(relay)

    async def cancel(self, env: Environment, job_id: str) -> None:
        url = f"{self.environments.container_url(env)}/prompts/{job_id}"
        try:
            async with self.http.delete(url, headers=self._headers()) as response:
                if response.status == 404:
                    raise UserError(slack_ui.no_such_job(job_id))
                if response.status >= 400:
                    answer = await _json(response)
                    raise UserError(slack_ui.container_refused(env, str(answer.get("error"))))
        except (aiohttp.ClientError, TimeoutError):
            raise UserError(slack_ui.container_unreachable(env)) from None

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
        return any(r.job_id == relay.job_id for r in await self.store.open_relays())

    async def _poll(self, relay: Relay) -> None:
        delay = self.first_poll_s
        unreachable_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(delay)
            env = await self.store.get_environment(relay.repo, relay.pr)
            if env is None or env.state not in LIVE:
                await self._finish(relay, slack_ui.prompt_lost(relay, env), kind="lost")
                return
            job = await self._job(env, relay.job_id)
            if job is None:
                unreachable_since = unreachable_since or loop.time()
                if loop.time() - unreachable_since > UNREACHABLE_GIVE_UP_S:
                    await self._finish(relay, slack_ui.prompt_lost(relay, env), kind="lost")
                    return
            else:
                unreachable_since = None
                if job.get("state") in TERMINAL:
                    self.environments.metrics.prompt_jobs.labels(state=str(job["state"])).inc()
                    await self._finish(relay, *await self._result(env, relay, job))
                    return
            delay = min(delay * 1.5, MAX_POLL_S)

    async def _job(self, env: Environment, job_id: str) -> dict[str, Any] | None:
        url = f"{self.environments.container_url(env)}/prompts/{job_id}"
        try:
            async with self.http.get(url) as response:
                if response.status == 404:
                    return {"state": "failed", "error": "the container no longer knows this job"}
                if response.status != 200:
                    return None
                return await _json(response)
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _result(
        self, env: Environment, relay: Relay, job: dict[str, Any]
    ) -> tuple[list[str], str | None]:
        """The result's messages and, when it is long, the text of the file that goes with them."""
        messages = slack_ui.prompt_result(relay, job)
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
        url = f"{self.environments.container_url(env)}/prompts/{job_id}/output"
        try:
            async with self.http.get(url, headers=self._headers()) as response:
                if response.status == 200:
                    return await response.text(encoding="utf-8", errors="replace"), None
                answer = await _json(response)
                return None, str(answer.get("error") or f"HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError):
            return None, "the container did not answer"
        except UserError as exc:  # no UAT_PROMPT_TOKEN
            return None, str(exc)

    async def _finish(
        self, relay: Relay, messages: list[str], file: str | None = None, kind: str = "result"
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
        await self.store.close_relay(relay.repo, relay.pr, relay.job_id)

    async def _attach(self, relay: Relay, channel: str, content: str) -> None:
        name = slack_ui.prompt_file_name(relay.job_id)
        try:
            await self.outbox.upload(
                channel, relay.thread_ts, name, content, slack_ui.prompt_file_title(relay)
            )
        except ChatError as exc:  # say so in the thread: the result itself is there already
            logger.warning("could not attach the output of prompt %s: %s", relay.job_id, exc)
            text = slack_ui.prompt_file_failed(relay.job_id, str(exc))
            await self._say(relay, channel, "file-failed", text)

    async def _say(self, relay: Relay, channel: str, part: str, text: str) -> None:
        """Post one keyed part of what a prompt came to in its thread."""
        key = f"prompt:{relay.job_id}:{part}"
        await self.outbox.post(key, channel, text, [slack_ui.text_block(text)], relay.thread_ts)


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return body if isinstance(body, dict) else {}
