"""The gateway to a PR container's prompt server (container/prompt_server.py), over HTTP.

One `ContainerClient` for the whole bot, on the one `aiohttp.ClientSession` the composition root
opens and closes. It knows URLs, status codes and JSON, nothing of Slack or environments: the
caller says which container (its base URL) and with which token; a failure comes out as a
`ContainerError` whose message says what to do, and the caller decides what the user reads.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

logger = logging.getLogger(__name__)

# The container refuses a longer prompt (container/prompt_server.py's MAX_PROMPT_CHARS; the two
# share no code, tests/test_container_client.py checks that they agree).
MAX_PROMPT: Final = 20_000
# A job id as the container makes them (prompt_server.py's JOB_ID, `new_job_id`): nothing else is
# ever put into one of its URLs (tests/test_container_client.py checks that they agree).
JOB_ID: Final = re.compile(r"[0-9a-f]{12}")
REQUEST_TIMEOUT_S: Final = 10.0  # a prompt, a job, an output, a cancel
PROBE_TIMEOUT_S: Final = 3.0  # /health, /version, /status: a hanging container costs a poll 3 s
REQUEST = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
PROBE = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)

Answer = dict[str, Any]  # a JSON object as the container sent it


class ContainerError(Exception):
    """The container did not do what was asked; the message says what to do about it."""


class ContainerUnreachable(ContainerError):
    def __init__(self, base: str, detail: str) -> None:
        super().__init__(
            f"The container at {base} did not answer ({detail}): check that its task runs and "
            "that UAT_CONTAINER_URL reaches it."
        )


class ContainerRefused(ContainerError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(
            f"The container refused the request (HTTP {status}): {reason}. Its log says more."
        )
        self.status = status
        self.reason = reason


class TokenRefused(ContainerError):
    def __init__(self) -> None:
        super().__init__(
            "The container refused this environment's prompt token: it was started with another "
            "environment's token (or by a bot with another UAT_PROMPT_TOKEN); restart the "
            "environment."
        )


class PoolTokenRefused(ContainerError):
    def __init__(self) -> None:
        super().__init__(
            "The warm-pool task refused the pool token: it was started with another one (by "
            "another installation or before a restart); claim another task or launch a cold one."
        )


class AlreadyClaimed(ContainerError):
    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The task cannot be claimed ({reason}): claim another warm-pool task or launch a "
            "cold one."
        )
        self.reason = reason


class NoSuchJob(ContainerError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"The container knows no job {job_id}: see its /status for the jobs.")
        self.job_id = job_id


class BadJobId(ContainerError):
    def __init__(self, job_id: str) -> None:
        super().__init__("A job id is 12 hex digits, as the container gave it: check the id.")
        self.job_id = job_id


def job_path(job_id: str, tail: str = "") -> str:
    """`/prompts/{id}` (+ `tail`) for a well-formed job id; BadJobId for anything else, so no
    other text ever reaches the container's URL."""
    if not JOB_ID.fullmatch(job_id):
        raise BadJobId(job_id)
    return f"/prompts/{job_id}{tail}"


class JobEnded(ContainerError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job {job_id} had already ended: there is nothing left to cancel.")
        self.job_id = job_id


@dataclass(frozen=True)
class Submitted:
    """What `POST /prompt` answered: the job's id and its place in the queue (0: it runs)."""

    job_id: str
    position: int


class ContainerClient:
    """`GET /health /version /status`, `POST /prompt`, `GET /prompts/{id}` (and its output),
    `DELETE /prompts/{id}`, `POST /claim` (warm-pool tasks), on the session `session()` returns
    (the composition root's), each request with its own time limit."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession]) -> None:
        self._session = session

    async def health(self, base: str) -> Answer | None:
        """`/health`'s answer, whatever its status (503 while starting); None when it does not
        answer within PROBE_TIMEOUT_S."""
        return await self._probe(base, "health")

    async def version(self, base: str, token: str | None) -> Answer | None:
        """`/version`'s answer (the checkout), or None when it does not answer."""
        return await self._probe(base, "version", token)

    async def status(self, base: str, token: str | None) -> Answer | None:
        """`/status`'s answer (running, queue, recent), or None when it does not answer."""
        return await self._probe(base, "status", token)

    async def _probe(self, base: str, path: str, token: str | None = None) -> Answer | None:
        headers = _bearer(token) if token is not None else None
        try:
            async with self._session().get(
                f"{base}/{path}", headers=headers, timeout=PROBE
            ) as response:
                body = await response.json(content_type=None)
                return body if isinstance(body, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def submit(
        self, base: str, token: str, *, prompt: str, user: str, thread: str
    ) -> Submitted:
        """Queue a prompt. Raises TokenRefused, ContainerRefused or ContainerUnreachable."""
        body = {"prompt": prompt, "user": user, "thread": thread}
        async with self._request("POST", base, "/prompt", token, json=body) as response:
            answer = await _json(response)
            if response.status == 401:
                raise TokenRefused
            if response.status != 202:
                raise _refused(response.status, answer)
        if "id" not in answer:
            raise ContainerRefused(response.status, "it answered without a job id")
        position = answer.get("position")  # null once the job has left the queue: it runs
        return Submitted(str(answer["id"]), int(position) if position else 0)

    async def job(self, base: str, token: str, job_id: str) -> Answer:
        """`GET /prompts/{id}`: the job as the container describes it. Raises NoSuchJob (404),
        TokenRefused (401), ContainerRefused (another status) or ContainerUnreachable."""
        async with self._request("GET", base, job_path(job_id), token) as response:
            if response.status == 401:
                raise TokenRefused
            if response.status == 404:
                raise NoSuchJob(job_id)
            answer = await _json(response)
            if response.status != 200:
                raise _refused(response.status, answer)
            return answer

    async def output(self, base: str, token: str, job_id: str) -> str:
        """`GET /prompts/{id}/output`: the job's whole output. Raises TokenRefused,
        ContainerRefused (its `reason` is the container's own) or ContainerUnreachable."""
        async with self._request("GET", base, job_path(job_id, "/output"), token) as response:
            if response.status == 401:
                raise TokenRefused
            if response.status == 200:
                return await response.text(encoding="utf-8", errors="replace")
            raise _refused(response.status, await _json(response))

    async def cancel(self, base: str, token: str, job_id: str) -> None:
        """`DELETE /prompts/{id}`. Raises NoSuchJob (404), JobEnded (409: it ended first),
        TokenRefused, ContainerRefused or ContainerUnreachable."""
        async with self._request("DELETE", base, job_path(job_id), token) as response:
            if response.status == 401:
                raise TokenRefused
            if response.status == 404:
                raise NoSuchJob(job_id)
            if response.status == 409:
                raise JobEnded(job_id)
            if response.status >= 400:
                answer = await _json(response)
                raise ContainerRefused(response.status, str(answer.get("error")))

    async def claim(
        self,
        base: str,
        pool_token: str,
        *,
        repo: str,
        git_ref: str,
        head_sha: str,
        session_id: str,
        prompt_token: str,
        branch: str = "",
        pr_number: int | None = None,
    ) -> None:
        """`POST /claim`: the warm-pool task at `base` becomes this environment (it clones and
        starts the app as a cold task does; its prompt token is `prompt_token` from then on).
        Raises PoolTokenRefused (401), AlreadyClaimed (409: claimed first by someone else, or no
        pool member), ContainerRefused (400 names the field the container refused) or
        ContainerUnreachable, after which whether the claim landed is unknown: the task's
        `/status` answering to `prompt_token` says it did."""
        body: dict[str, object] = {
            "repo": repo,
            "git_ref": git_ref,
            "head_sha": head_sha,
            "session_id": session_id,
            "prompt_token": prompt_token,
        }
        if branch:
            body["branch"] = branch
        if pr_number is not None:
            body["pr_number"] = pr_number
        async with self._request("POST", base, "/claim", pool_token, json=body) as response:
            answer = await _json(response)
            if response.status == 401:
                raise PoolTokenRefused
            if response.status == 409:
                raise AlreadyClaimed(str(answer.get("error") or "HTTP 409"))
            if response.status != 200:
                raise _refused(response.status, answer)
        if answer.get("claimed") is not True or answer.get("session_id") != session_id:
            raise ContainerRefused(response.status, "it answered the claim without confirming it")

    async def claimed_for(self, base: str, prompt_token: str) -> bool | None:
        """Whether the task at `base` runs the environment whose token is `prompt_token`, for a
        claim whose answer was lost: True when its `/status` opens to that token (the claim
        landed), False when it refuses it (401: claimed for another; 503: still waiting), None
        when it does not answer (within PROBE_TIMEOUT_S) or answers anything else."""
        try:
            async with self._session().get(
                f"{base}/status", headers=_bearer(prompt_token), timeout=PROBE
            ) as response:
                if response.status == 200:
                    return True
                return False if response.status in (401, 503) else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    @contextlib.asynccontextmanager
    async def _request(
        self, method: str, base: str, path: str, token: str | None = None, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request within REQUEST_TIMEOUT_S (with the bearer `token` when given); no answer
        at all, even part way through reading it, is ContainerUnreachable."""
        headers = _bearer(token) if token is not None else None
        try:
            async with self._session().request(
                method, f"{base}{path}", headers=headers, timeout=REQUEST, **kwargs
            ) as response:
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ContainerUnreachable(base, _why(exc)) from None


def _refused(status: int, answer: Answer) -> ContainerRefused:
    reason = answer.get("error") or f"HTTP {status}"
    return ContainerRefused(status, str(reason))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _why(exc: BaseException) -> str:
    return "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__


async def _json(response: aiohttp.ClientResponse) -> Answer:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return body if isinstance(body, dict) else {}
