"""A reverse proxy on 127.0.0.1 in front of moto's server, for tests and the soak that make AWS
fail as it may (throttling, 5xx, an answer lost after the fact): a subclass decides, per request,
whether to answer it itself or `forward` it to moto."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class Forwarded:
    """moto's answer to a forwarded request."""

    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> web.Response:
        return web.Response(body=self.body, status=self.status, headers=self.headers)


@dataclass
class ReverseProxy:
    upstream: str
    url: str = field(default="", init=False)
    runner: web.AppRunner | None = field(default=None, init=False)
    http: aiohttp.ClientSession | None = field(default=None, init=False)

    async def handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def forward(self, request: web.Request, body: bytes) -> Forwarded:
        assert self.http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self.http.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            answer = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return Forwarded(upstream.status, answer, kept)

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.http is not None:
            await self.http.close()
