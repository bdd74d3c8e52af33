"""Stand-ins for warm-pool tasks' prompt servers on 127.0.0.1, one per task id, reached through
UAT_CONTAINER_URL `http://127.0.0.1:<port>/task/{task_id}` (a pool task has no PR or session to
put in a URL). Strict where the real server (container/prompt_server.py, pool mode) is: the claim
needs the bearer the task was started with (its UAT_POOL_TOKEN as ECS holds it), its body is
checked by the real server's own `parse_claim`, it lands once (409 after), and from then on the
claim's prompt token alone opens /status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.log import access_logger

from container.prompt_server import BadClaim, Claim, parse_claim


async def take_claim(
    request: web.Request, task: str, token_of: Callable[[str], str | None], taken: bool
) -> Claim | web.Response:
    """POST /claim to `task` checked as the real server in pool mode checks it: the claim, or the
    refusal to answer (409 when `taken` already, 401 without the bearer of the task's pool token
    as `token_of` gives it, 400 for a body `parse_claim` refuses)."""
    if taken:
        return web.json_response({"error": "already claimed"}, status=409)
    token = await asyncio.to_thread(token_of, task)
    if token is None or request.headers.get("Authorization") != f"Bearer {token}":
        return web.json_response({"error": "bad pool token"}, status=401)
    try:
        body: Any = await request.json()
        return parse_claim(body)
    except (BadClaim, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)


async def serve_tasks(
    app: web.Application, access_log: logging.Logger | None = access_logger
) -> tuple[web.AppRunner, str]:
    """Serve `app` (routes under /task/{task}/) on 127.0.0.1, an ephemeral port: its runner and
    the UAT_CONTAINER_URL that reaches a task's routes by its id."""
    runner = web.AppRunner(app, access_log=access_log)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/task/{{task_id}}"


@dataclass
class PoolContainers:
    """`token_of(task_id)` is the pool token its task was started with (None: no pool task)."""

    token_of: Callable[[str], str | None]
    claims: dict[str, Claim] = field(default_factory=dict)  # task id -> the claim it took
    ready: set[str] = field(default_factory=set)  # claimed task ids whose app answers
    taken: set[str] = field(default_factory=set)  # task ids someone else claimed (409)
    lost: set[str] = field(default_factory=set)  # task ids that take a claim, answer dropped
    attempts: list[str] = field(default_factory=list)  # task ids, one per POST /claim
    runner: web.AppRunner | None = None
    url: str = ""

    def ready_all(self) -> None:
        self.ready |= set(self.claims)

    async def start(self) -> None:
        async def claim(request: web.Request) -> web.Response:
            task = request.match_info["task"]
            self.attempts.append(task)
            taken = task in self.claims or task in self.taken
            parsed = await take_claim(request, task, self.token_of, taken)
            if isinstance(parsed, web.Response):
                return parsed
            self.claims[task] = parsed
            if task in self.lost and request.transport is not None:
                request.transport.close()  # the claim landed; its answer never reaches the bot
            return web.json_response({"claimed": True, "session_id": parsed.session_id})

        async def health(request: web.Request) -> web.Response:
            task = request.match_info["task"]
            if task not in self.claims:
                return web.json_response({"ready": False, "phase": "waiting"}, status=503)
            if task in self.ready:
                return web.json_response({"ready": True, "phase": "ready"})
            return web.json_response({"ready": False, "phase": "cloning"}, status=503)

        async def status(request: web.Request) -> web.Response:
            task = request.match_info["task"]
            claimed = self.claims.get(task)
            if claimed is None:
                return web.json_response({"error": "waiting for a claim"}, status=503)
            if request.headers.get("Authorization") != f"Bearer {claimed.prompt_token}":
                return web.json_response({"error": "bad token"}, status=401)
            return web.json_response({"running": None, "queue": [], "recent": []})

        app = web.Application()
        app.router.add_post("/task/{task}/claim", claim)
        app.router.add_get("/task/{task}/health", health)
        app.router.add_get("/task/{task}/status", status)
        self.runner, self.url = await serve_tasks(app)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
