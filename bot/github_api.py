"""GitHub's REST API, for deployments and commit statuses: `gidgethub` on the bot's aiohttp session.

Access is a token (`UAT_GITHUB_TOKEN`) or a GitHub App (`UAT_GITHUB_APP_ID` +
`UAT_GITHUB_PRIVATE_KEY`): the App's JWT buys one installation token per repository's
installation, cached until a minute before it expires. `UAT_GITHUB_API_URL` points it at GitHub
Enterprise Server (or at the tests' stub).

GitHub failing is retried here, briefly: a 5xx or a dropped connection with a doubling backoff,
a rate limit (403/429 with `Retry-After`, or `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset`)
after the wait GitHub asks for when it is short. Past that `GitHubUnavailable` is raised and the
caller tries again later. A token that may not do what was asked raises `GitHubPermission`,
naming the permission to grant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp
from gidgethub import BadRequest, GitHubBroken, HTTPException
from gidgethub.aiohttp import GitHubAPI
from gidgethub.apps import get_jwt

from bot.config import Settings
from bot.logs import outside

logger = logging.getLogger(__name__)

USER_AGENT = "uat-bot"
ATTEMPTS = 5  # per request, the first included
BACKOFF_S = 1.0  # the first wait after a 5xx; doubled each time
LONGEST_WAIT_S = 60.0  # a rate limit lifting later than this is left to the next round
TOKEN_MARGIN_S = 60.0  # an installation token this close to its expiry is replaced

DEPLOYMENTS = "deployments: write"
STATUSES = "statuses: write"

Sleep = Callable[[float], Awaitable[None]]


class GitHubUnavailable(Exception):
    """GitHub did not answer usefully within the retries (5xx, rate limited, unreachable)."""


class GitHubRefused(Exception):
    """GitHub refused the request itself (404, 409, 422 ...): asking again will not help."""


class GitHubPermission(Exception):
    """GitHub refused what the token may do; `permission` is what to grant the App/token."""

    def __init__(self, permission: str, status: int, message: str) -> None:
        super().__init__(f"GitHub refused it ({status} {message}): grant {permission}")
        self.permission = permission
        self.status = status
        self.message = message


class GitHubNotInstalled(GitHubPermission):
    """The GitHub App is not installed on the repository (or cannot see it)."""

    def __init__(self, repo: str) -> None:
        super().__init__("installation", 404, f"the GitHub App is not installed on {repo}")
        self.repo = repo


@dataclass(frozen=True)
class Deployment:
    """A GitHub deployment as the bot reads it back."""

    id: int
    sha: str
    environment: str
    payload: Mapping[str, Any]


class GitHub(Protocol):
    """What the bot asks of GitHub (GitHubApi; the console prints it instead)."""

    async def create_deployment(
        self, repo: str, sha: str, environment: str, payload: Mapping[str, Any], description: str
    ) -> int: ...

    async def deployments(
        self, repo: str, environment: str, sha: str | None = None
    ) -> list[Deployment]: ...

    async def deployment_status(
        self,
        repo: str,
        deployment: int,
        state: str,
        description: str,
        environment_url: str | None = None,
        log_url: str | None = None,
    ) -> None: ...

    async def commit_status(
        self, repo: str, sha: str, state: str, description: str, target_url: str | None
    ) -> None: ...


def _rate_limit_wait(exc: HTTPException, now: float) -> float | None:
    """Seconds GitHub asks us to wait before asking again, or None when it is not a rate limit."""
    headers = exc.headers or {}
    if int(exc.status_code) not in (403, 429):
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return BACKOFF_S
    if headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(headers.get("x-ratelimit-reset", "0")) - now) + 1.0
        except ValueError:
            return BACKOFF_S
    return None


class _Client(GitHubAPI):
    """gidgethub's aiohttp client, retrying what GitHub says to retry (see the module)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        sleeper: Sleep,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(session, USER_AGENT, base_url=base_url)
        self._sleeper = sleeper
        self._clock = clock

    async def sleep(self, seconds: float) -> None:
        await self._sleeper(seconds)

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: HTTPException, attempt: int
    ) -> bool:
        if attempt >= ATTEMPTS:
            return False
        wait = _rate_limit_wait(exception, self._clock())
        if wait is None and isinstance(exception, GitHubBroken):
            wait = BACKOFF_S * 2 ** (attempt - 1)
        if wait is None or wait > LONGEST_WAIT_S:
            return False
        logger.info(
            "GitHub answered %s %s with %s; asking again in %.0fs",
            method,
            outside(url),
            int(exception.status_code),
            wait,
        )
        await self.sleep(wait)
        return True


class GitHubApi:
    """The calls the bot makes to GitHub (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        http: Callable[[], aiohttp.ClientSession],
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.github_access is None:
            raise ValueError("GitHub access needs UAT_GITHUB_TOKEN or a GitHub App")
        self.settings = settings
        self.http = http
        self.sleep = sleep
        self.clock = clock
        self.installations: dict[str, int] = {}  # repository (lowercase) -> installation id
        self.tokens: dict[int, tuple[str, float]] = {}  # installation -> (token, expires at)
        self._token_lock = asyncio.Lock()

    def _client(self) -> _Client:
        return _Client(self.http(), self.settings.uat_github_api_url, self.sleep, self.clock)

    async def _token(self, repo: str) -> str:
        settings = self.settings
        if settings.github_access == "token" and settings.uat_github_token is not None:
            return settings.uat_github_token.get_secret_value()
        async with self._token_lock:
            return await self._installation_token(repo)

    def _jwt(self) -> str:
        key = self.settings.uat_github_private_key
        if key is None or self.settings.uat_github_app_id is None:
            raise ValueError("a GitHub App needs UAT_GITHUB_APP_ID and UAT_GITHUB_PRIVATE_KEY")
        return get_jwt(app_id=self.settings.uat_github_app_id, private_key=key.get_secret_value())

    async def _installation_token(self, repo: str) -> str:
        gh = self._client()
        installation = self.installations.get(repo.lower())
        if installation is None:
            try:
                found = await self._call(
                    DEPLOYMENTS,
                    gh.getitem("/repos/{+repo}/installation", {"repo": repo}, jwt=self._jwt()),
                )
            except GitHubRefused:  # 404: not installed there
                raise GitHubNotInstalled(repo) from None
            installation = int(found["id"])
            self.installations[repo.lower()] = installation
        cached = self.tokens.get(installation)
        if cached is not None and cached[1] - TOKEN_MARGIN_S > self.clock():
            return cached[0]
        answer = await self._call(
            DEPLOYMENTS,
            gh.post(
                "/app/installations/{installation}/access_tokens",
                {"installation": str(installation)},
                data=b"",
                jwt=self._jwt(),
            ),
        )
        expires = datetime.fromisoformat(str(answer["expires_at"]).replace("Z", "+00:00"))
        self.tokens[installation] = (str(answer["token"]), expires.timestamp())
        return str(answer["token"])

    async def _call(self, permission: str, request: Awaitable[Any]) -> Any:
        """Await a gidgethub request; its failures as GitHubUnavailable or GitHubPermission."""
        try:
            return await request
        except GitHubBroken as exc:
            raise GitHubUnavailable(f"GitHub answered {int(exc.status_code)}") from None
        except BadRequest as exc:
            status = int(exc.status_code)
            message = str(exc.args[0]) if exc.args else ""
            if _rate_limit_wait(exc, self.clock()) is not None:
                raise GitHubUnavailable(f"GitHub rate-limits us ({status})") from None
            if status in (401, 403) or (status == 404 and "not accessible" in message.lower()):
                raise GitHubPermission(permission, status, message) from None
            raise GitHubRefused(f"GitHub answered {status}: {message}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GitHubUnavailable(f"GitHub is unreachable: {type(exc).__name__}") from None

    async def create_deployment(
        self, repo: str, sha: str, environment: str, payload: Mapping[str, Any], description: str
    ) -> int:
        """Create a transient, non-production deployment of `sha`; its id."""
        token = await self._token(repo)
        body = {
            "ref": sha,
            "environment": environment,
            "transient_environment": True,
            "production_environment": False,
            "auto_merge": False,
            "required_contexts": [],
            "payload": dict(payload),
            "description": description[:140],
        }
        gh = self._client()
        answer = await self._call(
            DEPLOYMENTS,
            gh.post("/repos/{+repo}/deployments", {"repo": repo}, data=body, oauth_token=token),
        )
        return int(answer["id"])

    async def deployments(
        self, repo: str, environment: str, sha: str | None = None
    ) -> list[Deployment]:
        """The deployments of `environment` (of `sha` only, when given), newest first."""
        token = await self._token(repo)
        query: dict[str, str] = {"environment": environment, "per_page": "100"}
        if sha:
            query["sha"] = sha
        url = "/repos/{+repo}/deployments{?environment,sha,per_page}"
        gh = self._client()
        answer = await self._call(
            DEPLOYMENTS, gh.getitem(url, {"repo": repo, **query}, oauth_token=token)
        )
        found = []
        for item in answer if isinstance(answer, list) else []:
            payload = item.get("payload")
            found.append(
                Deployment(
                    int(item["id"]),
                    str(item.get("sha", "")),
                    str(item.get("environment", "")),
                    payload if isinstance(payload, dict) else {},
                )
            )
        return found

    async def deployment_status(
        self,
        repo: str,
        deployment: int,
        state: str,
        description: str,
        environment_url: str | None = None,
        log_url: str | None = None,
    ) -> None:
        """Post a deployment status (in_progress, success, failure, inactive ...)."""
        token = await self._token(repo)
        body: dict[str, Any] = {"state": state, "description": description[:140]}
        if environment_url:
            body["environment_url"] = environment_url
        if log_url:
            body["log_url"] = log_url
        url = "/repos/{+repo}/deployments/{deployment}/statuses"
        gh = self._client()
        await self._call(
            DEPLOYMENTS,
            gh.post(
                url, {"repo": repo, "deployment": str(deployment)}, data=body, oauth_token=token
            ),
        )

    async def commit_status(
        self, repo: str, sha: str, state: str, description: str, target_url: str | None
    ) -> None:
        """Set the `uat` commit status of `sha` (pending, success, failure or error)."""
        token = await self._token(repo)
        body: dict[str, Any] = {"state": state, "context": "uat", "description": description[:140]}
        if target_url:
            body["target_url"] = target_url
        gh = self._client()
        await self._call(
            STATUSES,
            gh.post(
                "/repos/{+repo}/statuses/{sha}",
                {"repo": repo, "sha": sha},
                data=body,
                oauth_token=token,
            ),
        )
