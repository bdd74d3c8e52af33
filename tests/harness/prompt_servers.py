"""The real prompt server (container/prompt_server.py, with the fake agent) on a fixed 127.0.0.1
port, started with the token its environment was given, and started again with another token, as
a replaced task's container would be."""

from __future__ import annotations

import socket
from pathlib import Path

from aiohttp import web

from container.prompt_server import Config, create_app
from tests.harness.container_helpers import fake_claude_cmd, free_port, make_repo


class PromptServer:
    """One PR container's prompt server; `serve(token)` (re)starts it on the same address."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.work = make_repo(folder / "work")
        self.port = free_port()
        self.token: str | None = None
        self._app_socket = socket.socket()  # the "app", listening, so /health says ready
        self._app_socket.bind(("127.0.0.1", 0))
        self._app_socket.listen()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, token: str) -> None:
        """Serve with `token` (what its task's UAT_PROMPT_TOKEN says), keeping the queue file."""
        await self.stop()
        config = Config.from_env(
            {
                "WORK_DIR": str(self.work),
                "UAT_PROMPT_TOKEN": token,
                "CLAUDE_CMD": fake_claude_cmd(),
                "APP_PORT": str(self._app_socket.getsockname()[1]),
                "PROMPT_STATE": str(self.folder / "queue.json"),
                "PROMPT_TIMEOUT_S": "30",
            }
        )
        runner = web.AppRunner(create_app(config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._runner, self.token = runner, token

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def close(self) -> None:
        await self.stop()
        self._app_socket.close()
