"""`uat-bot serve` as a real process: started, probed, killed with SIGKILL and restarted.

The test's event loop keeps serving the Slack stub and the stand-in containers while a bot
process runs, so every wait here is an asyncio sleep, never a blocking one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.harness.bot import WEBHOOK_SECRET
from tests.harness.signing import github_headers

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(cwd: Path, port: int, env: dict[str, str]) -> dict[str, str]:
    """The whole environment of a `uat-bot serve` process: `env` and the few it needs."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(cwd)),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "UAT_HOST": "127.0.0.1",
        "UAT_PORT": str(port),
        **env,
    }


@dataclass
class Exited:
    """How a `uat-bot serve` that stopped by itself ended."""

    status: int
    stdout: str
    stderr: str
    seconds: float = 0.0  # from start to exit

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


async def serve_until_exit(
    env: dict[str, str],
    cwd: Path,
    timeout: float = 30.0,  # noqa: ASYNC109
    *,
    preexec_fn: Callable[[], None] | None = None,
    command: tuple[str, ...] = ("serve",),
) -> Exited:
    """Run `uat-bot serve` (or `command`), expecting it to stop on its own (it refused to start);
    `preexec_fn` runs in the child before it starts (limits, dropped privileges).

    Asynchronous, so that the test's event loop keeps serving the Slack stub meanwhile."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *command,
        env=serve_env(cwd, free_port(), env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"uat-bot serve did not stop by itself in {timeout}s") from None
    assert proc.returncode is not None
    seconds = time.monotonic() - started
    return Exited(
        proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), seconds
    )


@dataclass
class BotProcess:
    """One bot configuration; each `start()` runs a fresh process of it on the same port."""

    env: dict[str, str]
    cwd: Path
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.procs[-1] if self.procs else None

    def log(self, index: int = -1) -> Path:
        number = index if index >= 0 else len(self.procs) + index
        return self.cwd / f"bot{number}.log"

    def logs(self) -> str:
        """Every process's log, for a failure message."""
        return "\n".join(
            f"----- bot{i}.log\n" + self.log(i).read_text(errors="replace")
            for i in range(len(self.procs))
            if self.log(i).exists()
        )

    async def start(
        self,
        timeout: float = 20.0,  # noqa: ASYNC109
        ready: str = "/healthz",
    ) -> subprocess.Popen[bytes]:
        """Start the bot and wait until `ready` answers 200 (/livez: it serves HTTP, whether or
        not its store and Slack answer)."""
        proc = self._spawn()
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise AssertionError(f"the bot exited with {proc.returncode}\n{self.logs()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(
                        f"{self.url}{ready}", timeout=aiohttp.ClientTimeout(total=1)
                    ) as response:
                        if response.status == 200:
                            return proc
                await asyncio.sleep(0.02)
        raise AssertionError(f"the bot did not answer {ready} in {timeout}s\n{self.logs()}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        """`python -m bot.cli serve` in its own session, its output in bot<n>.log."""
        env = serve_env(self.cwd, self.port, self.env)
        with self.log(len(self.procs)).open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "serve"],
                env=env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def kill(self) -> None:
        """SIGKILL: nothing is released, flushed or said goodbye to."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            await self.wait(proc, 10)

    async def terminate(self, timeout: float = 15.0) -> int:  # noqa: ASYNC109
        """SIGTERM, as an orchestrator stops it; the exit code once it has shut down."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return await self.wait(proc, timeout)

    @staticmethod
    async def wait(proc: subprocess.Popen[bytes], timeout: float) -> int:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"process {proc.pid} did not exit in {timeout}s")
            await asyncio.sleep(0.01)
        return int(proc.returncode)

    def cleanup(self) -> None:
        """Kill whatever is still running (a failed test's leftovers), by process group."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)


# ---------------------------------------------------------------- a bot process, seen from outside


async def eventually(
    probe: Callable[[], T],
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.05,
) -> T:
    """`probe()`'s first truthy answer; AssertionError when `timeout` runs out first."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {timeout}s: {probe}")
        await asyncio.sleep(interval)


def read_store(path: str) -> dict[int, dict[str, Any]]:
    """The environments table, read-only, by PR number."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM environments").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        db.close()
    return {row["pr"]: {**dict(row), "data": json.loads(row["data"])} for row in rows}


async def deliver(
    http: aiohttp.ClientSession, url: str, payload: dict[str, Any], delivery: str
) -> int:
    body = json.dumps(payload).encode()
    headers = github_headers(WEBHOOK_SECRET, body, "pull_request", delivery)
    async with http.post(f"{url}/github/webhook", data=body, headers=headers) as response:
        return response.status
