"""A GitHub REST API stub on 127.0.0.1 for the calls the bot makes: deployments, deployment
statuses, commit statuses, and a GitHub App's installation tokens.

Every deployment and status request is checked against GitHub's own OpenAPI description (the
operations vendored in tests/fixtures/github_rest/operations.json): an unknown path or method, a
query parameter the operation does not take, or a body its schema refuses is answered as GitHub
would (404, 422) and recorded in `problems`, which a test asserts empty. The two App endpoints
(a repository's installation, an installation token) are checked by path and by the App's JWT,
verified with its public key. Answers are GitHub's: 201 with the created
object, `X-RateLimit-*` headers on every answer, and the faults a test queues (5xx, rate limits,
"Resource not accessible by integration").
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonschema
import jwt
from aiohttp import web

from tests.harness.bot import reference

OPERATIONS: dict[str, Any] = reference("github_rest/operations.json")["operations"]
REFUSED = "Resource not accessible by integration"
DOCS = "https://docs.github.com/rest"


def _json_schema(schema: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema's `type: [..., "null"]`."""
    if isinstance(schema, dict):
        out = {k: _json_schema(v) for k, v in schema.items() if k != "nullable"}
        if schema.get("nullable") and "type" in schema:
            out["type"] = [schema["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_json_schema(v) for v in schema]
    return schema


def _route(path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", path)
    return re.compile(pattern.replace("(?P<sha>[^/]+)", "(?P<sha>.+)") + "$")


ROUTES = [(op["method"], _route(op["path"]), name, op) for name, op in OPERATIONS.items()] + [
    ("GET", _route("/repos/{owner}/{repo}/installation"), "apps/get-repo-installation", {}),
    (
        "POST",
        _route("/app/installations/{installation_id}/access_tokens"),
        "apps/create-installation-access-token",
        {},
    ),
]


@dataclass
class Fault:
    """What the stub answers instead, for requests whose operation matches `operation`."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    operation: str = ""  # "" matches every operation
    times: int = 1  # -1: every time


@dataclass
class Request:
    """One request the stub received and the operation it matched."""

    method: str
    path: str
    operation: str
    query: dict[str, str]
    body: Any
    status: int = 0


class GitHubStub:
    """The stub (see the module docstring). `token` is the token it accepts; with `app` set
    (app id, public key PEM), App JWTs too, and installation tokens it issues."""

    def __init__(self, token: str = "ghp-test-token") -> None:
        self.token = token
        self.app: tuple[str, bytes] | None = None
        self.installations: dict[str, int] = {}  # "owner/repo" (lowercase) -> installation
        self.issued: list[tuple[int, str, float]] = []  # (installation, token, expires at)
        self.token_ttl_s = 3600.0
        self.requests: list[Request] = []
        self.problems: list[str] = []
        self.faults: list[Fault] = []
        self.deployments: dict[str, list[dict[str, Any]]] = {}  # repo -> newest first
        self.statuses: dict[int, list[dict[str, Any]]] = {}  # deployment -> oldest first
        self.commit_statuses: dict[str, list[dict[str, Any]]] = {}  # sha -> oldest first
        self.remaining = 5000
        # operations whose effect happens but whose answer waits for `release` (a client
        # killed while waiting for GitHub's answer)
        self.held: set[str] = set()
        self.release = asyncio.Event()
        self._ids = itertools.count(1001)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> GitHubStub:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ what tests read

    def deployment_states(self, deployment: int) -> list[str]:
        return [s["state"] for s in self.statuses.get(deployment, [])]

    def calls(self, operation: str) -> list[Request]:
        return [r for r in self.requests if r.operation == operation]

    def fail(self, fault: Fault) -> None:
        self.faults.append(fault)

    # ------------------------------------------------------------------ serving

    def _headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            "X-RateLimit-Used": str(5000 - self.remaining),
            "X-RateLimit-Resource": "core",
        }

    def _answer(self, request: Request, status: int, body: Any, **extra: str) -> web.Response:
        request.status = status
        return web.json_response(body, status=status, headers={**self._headers(), **extra})

    def _error(self, request: Request, status: int, message: str) -> web.Response:
        return self._answer(request, status, {"message": message, "documentation_url": DOCS})

    async def _handle(self, http: web.Request) -> web.Response:
        raw = await http.read()
        body: Any = None
        if raw:
            try:
                body = await http.json()
            except ValueError:
                body = raw.decode(errors="replace")
        request = Request(http.method, http.path, "", dict(http.query), body)
        self.requests.append(request)
        self.remaining = max(0, self.remaining - 1)
        for method, pattern, name, operation in ROUTES:
            match = pattern.match(http.path)
            if match and method == http.method:
                request.operation = name
                return await self._operation(http, request, name, operation, match.groupdict())
        self.problems.append(f"{http.method} {http.path}: no such operation in GitHub's API")
        return self._error(request, 404, "Not Found")

    def _problem(self, request: Request, what: str) -> web.Response:
        self.problems.append(f"{request.method} {request.path}: {what}")
        return self._answer(
            request,
            422,
            {
                "message": "Validation Failed",
                "errors": [{"message": what}],
                "documentation_url": DOCS,
            },
        )

    def _auth(self, http: web.Request, app_call: bool) -> str | None:
        """Who the Authorization header is ("token", "installation <id>", "app"), or None."""
        kind, _, credential = http.headers.get("Authorization", "").partition(" ")
        if app_call:
            if kind.lower() != "bearer" or self.app is None:
                return None
            app_id, public_key = self.app
            try:
                claims = jwt.decode(credential, public_key, algorithms=["RS256"])
            except jwt.PyJWTError:
                return None
            return "app" if str(claims.get("iss")) == app_id else None
        if kind.lower() not in ("token", "bearer"):
            return None
        if credential == self.token and self.app is None:
            return "token"
        for installation, issued, expires in self.issued:
            if issued == credential and expires > time.time():
                return f"installation {installation}"
        return None

    async def _operation(
        self,
        http: web.Request,
        request: Request,
        name: str,
        operation: dict[str, Any],
        params: dict[str, str],
    ) -> web.Response:
        if not http.headers.get("User-Agent"):
            return self._problem(request, "GitHub requires a User-Agent header")
        app_call = name.startswith("apps/")
        if self._auth(http, app_call) is None:
            self.problems.append(f"{request.method} {request.path}: bad credentials")
            return self._error(request, 401, "Bad credentials")
        for fault in self.faults:
            if fault.times and fault.operation in ("", name):
                fault.times -= 1 if fault.times > 0 else 0
                request.status = fault.status
                return web.json_response(
                    fault.body, status=fault.status, headers={**self._headers(), **fault.headers}
                )
        known = set(operation.get("query", {}))
        unknown = sorted(set(request.query) - known)
        if unknown:
            return self._problem(request, f"query parameters {unknown} are not {name}'s")
        schema = operation.get("requestBody")
        if schema is not None:
            try:
                jsonschema.validate(request.body, _json_schema(schema))
            except jsonschema.ValidationError as exc:
                return self._problem(request, f"body refused by {name}: {exc.message}")
        repo = f"{params.get('owner', '')}/{params.get('repo', '')}"
        handler = getattr(self, "_" + name.split("/")[1].replace("-", "_"))
        response: web.Response = handler(request, repo, params)
        if name in self.held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
        return response

    # ------------------------------------------------------------------ operations

    def _get_repo_installation(self, request: Request, repo: str, _: Any) -> web.Response:
        installation = self.installations.get(repo.lower())
        if installation is None:
            return self._error(request, 404, "Not Found")
        return self._answer(request, 200, {"id": installation, "app_id": self.app and self.app[0]})

    def _create_installation_access_token(
        self, request: Request, _: str, params: dict[str, str]
    ) -> web.Response:
        installation = int(params["installation_id"])
        if installation not in self.installations.values():
            return self._error(request, 404, "Not Found")
        token = f"ghs_{installation}_{len(self.issued)}"
        expires = time.time() + self.token_ttl_s
        self.issued.append((installation, token, expires))
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._answer(request, 201, {"token": token, "expires_at": stamp})

    def _list_deployments(self, request: Request, repo: str, _: Any) -> web.Response:
        found = [
            d
            for d in self.deployments.get(repo.lower(), [])
            if all(
                d.get(key) == request.query[key]
                for key in ("sha", "environment")
                if key in request.query
            )
        ]
        per_page = int(request.query.get("per_page", "30"))
        return self._answer(request, 200, copy.deepcopy(found[:per_page]))

    def _create_deployment(self, request: Request, repo: str, _: Any) -> web.Response:
        body = request.body
        number = next(self._ids)
        url = f"{self.url}/repos/{repo}/deployments/{number}"
        environment = body.get("environment", "production")
        deployment = {
            "url": url,
            "id": number,
            "node_id": f"DE_{number}",
            "sha": body["ref"],
            "ref": body["ref"],
            "task": body.get("task", "deploy"),
            "payload": body.get("payload", {}),
            "environment": environment,
            "original_environment": environment,
            "description": body.get("description"),
            "creator": {"login": "uat-bot[bot]", "id": 1, "type": "Bot"},
            "created_at": _now(),
            "updated_at": _now(),
            "statuses_url": f"{url}/statuses",
            "repository_url": f"{self.url}/repos/{repo}",
            "transient_environment": body.get("transient_environment", False),
            "production_environment": body.get(
                "production_environment", environment == "production"
            ),
        }
        self.deployments.setdefault(repo.lower(), []).insert(0, deployment)
        return self._answer(request, 201, deployment)

    def _create_deployment_status(
        self, request: Request, repo: str, params: dict[str, str]
    ) -> web.Response:
        number = int(params["deployment_id"])
        if not any(d["id"] == number for d in self.deployments.get(repo.lower(), [])):
            return self._error(request, 404, "Not Found")
        body = request.body
        status = {
            "id": next(self._ids),
            "state": body["state"],
            "description": body.get("description", ""),
            "environment_url": body.get("environment_url", ""),
            "log_url": body.get("log_url", ""),
            "target_url": body.get("log_url", body.get("target_url", "")),
            "deployment_url": f"{self.url}/repos/{repo}/deployments/{number}",
            "created_at": _now(),
        }
        self.statuses.setdefault(number, []).append(status)
        return self._answer(request, 201, status)

    def _create_commit_status(
        self, request: Request, repo: str, params: dict[str, str]
    ) -> web.Response:
        body = request.body
        status = {
            "id": next(self._ids),
            "state": body["state"],
            "context": body.get("context", "default"),
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "created_at": _now(),
        }
        self.commit_statuses.setdefault(params["sha"], []).append(status)
        return self._answer(request, 201, status)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
