"""Stand-ins for warm-pool tasks' prompt servers on 127.0.0.1, one per task id, reached through
UAT_CONTAINER_URL `http://127.0.0.1:<port>/task/{task_id}` (a pool task has no PR or session to
put in a URL). Strict where the real server (container/prompt_server.py, pool mode) is: the claim
needs the bearer the task was started with (its UAT_POOL_TOKEN as ECS holds it), its body is
checked by the real server's own `parse_claim`, it lands once (409 after), and from then on the
claim's prompt token alone opens /status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from container.prompt_server import BadClaim, Claim, parse_claim


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
            if task in self.claims or task in self.taken:
                return web.json_response({"error": "already claimed"}, status=409)
            token = await asyncio.to_thread(self.token_of, task)
            if token is None or request.headers.get("Authorization") != f"Bearer {token}":
                return web.json_response({"error": "bad pool token"}, status=401)
            try:
                body: Any = await request.json()
                parsed = parse_claim(body)
            except (BadClaim, ValueError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
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
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/task/{{task_id}}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
