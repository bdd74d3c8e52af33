"""Shared by the container tests: free ports, git repos in temp dirs, the fake agent, blocking HTTP.

Everything talks to 127.0.0.1 only. Git runs with a fixed identity and no user or system config.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = ROOT / "tests" / "harness" / "fake_claude.py"
PROMPT_SERVER = ROOT / "container" / "prompt_server.py"
ENTRYPOINT = ROOT / "container" / "entrypoint.sh"
DOCKERFILE = ROOT / "container" / "Dockerfile"
TOKEN = "test-prompt-token-0123456789"

# A fixed identity and no user or system config, so commits never depend on the machine.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "UAT Tester",
    "GIT_AUTHOR_EMAIL": "uat-tester@example.com",
    "GIT_COMMITTER_NAME": "UAT Tester",
    "GIT_COMMITTER_EMAIL": "uat-tester@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    # Tests read checkouts that the entrypoint's agent user owns (git would call them dubious).
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "safe.directory",
    "GIT_CONFIG_VALUE_0": "*",
}

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    """git's output (stripped), with a fixed identity; `stdin` is fed to it when given."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        input=stdin,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def make_repo(path: Path, branch: str = "main") -> Path:
    """A git repo with one commit on `branch`."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    (path / "README.md").write_text("# app under test\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "Start the app")
    return path


def fake_claude_cmd(log: Path | None = None, python: str = sys.executable) -> str:
    """A CLAUDE_CMD value (with arguments, as operators may write it) that runs the fake agent."""
    extra = ["--log", str(log)] if log else []
    return shlex.join([python, str(FAKE_CLAUDE), *extra])


def read_pids(pidfile: Path) -> list[int]:
    return [int(p) for p in pidfile.read_text().split()]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def http(
    method: str, url: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """A blocking JSON request; returns (status, parsed body) for any status."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def answers(url: str) -> tuple[int, dict[str, Any]] | None:
    """http GET that returns None while the server does not accept connections yet."""
    try:
        return http("GET", url)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
