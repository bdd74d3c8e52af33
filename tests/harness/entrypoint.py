"""container/entrypoint.sh as a real process for the tests that run it: a local bare repo to clone
(`remote`), the entrypoint started with free ports and its env (`run_entrypoint`), and moto's ALB
that its routing talks to (`alb`). conftest.py makes these fixtures available to every test.

Run as root (as CI and the image do), the entrypoint separates its users as in the image: the
agent and the app get uids of their own (AGENT_UID, APP_UID, numeric ids no account has), so what
they use lives in `shared_dir`, a folder they can enter (pytest's own temp folders are root's
alone). The checkout itself may sit where they cannot enter (a clone in a `mktemp -d` folder or
under /root): what they run — the prompt server, the fake agent and the packages the server
imports — is copied into `shared_dir` first. Run as another user, the fixture sets APP_UID
empty: everything runs as that user."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.container_helpers import (
    ENTRYPOINT,
    FAKE_CLAUDE,
    PROMPT_SERVER,
    TOKEN,
    answers,
    free_port,
    git,
    make_repo,
    wait_until,
)
from tests.harness.uat_aws import alb_listener

FEATURE = "feature/blue-button"
PR = 7
GIT_REF = f"refs/pull/{PR}/head"
SEPARATED = os.geteuid() == 0  # whether the entrypoint runs the agent and the app as their users
AGENT_UID = 64101  # no account has these; setpriv needs none
APP_UID = 64102


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temporary folder every user may enter (0755), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="uat-entrypoint-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def runs_as(uid: int, argv: list[str]) -> bool:
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    return subprocess.run([*drop, *argv], capture_output=True).returncode == 0


# What container/prompt_server.py imports beyond the standard library: aiohttp and its own
# requirements (importlib.metadata.requires("aiohttp"), without the optional speedups).
SERVER_PACKAGES = (
    "aiohttp",
    "aiohappyeyeballs",
    "aiosignal",
    "attr",
    "attrs",
    "frozenlist",
    "multidict",
    "propcache",
    "yarl",
    "idna",
    "typing_extensions",
)


def copy_for_users(folder: Path) -> Path:
    """The packages SERVER_PACKAGES name, copied into `folder`/site (readable by everyone): the
    venv that holds them may be in a folder other users cannot enter."""
    site = folder / "site"
    if site.exists():
        return site
    site.mkdir()
    for name in SERVER_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        source = Path(spec.origin)
        if spec.submodule_search_locations:  # a package: its whole folder
            shutil.copytree(source.parent, site / source.parent.name)
        else:
            shutil.copy2(source, site / source.name)
    for path in [site, *site.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return site


def python_for_users(folder: Path) -> str:
    """A python that AGENT_UID can run, with the prompt server's packages: a wrapper in `folder`
    that puts their copy (copy_for_users) on PYTHONPATH for this interpreter when others may run
    it, else for the system's of the same version (a pyenv build under /root is not open to
    others)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    wrapper = folder / "python"
    packages = shlex.quote(str(copy_for_users(folder)))
    for candidate in (os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        wrapper.write_text(
            f"#!/bin/sh\nexport PYTHONPATH={packages}${{PYTHONPATH:+:$PYTHONPATH}}\n"
            f'exec {shlex.quote(candidate)} "$@"\n'
        )
        wrapper.chmod(0o755)
        if runs_as(AGENT_UID, [str(wrapper), "-c", "import aiohttp"]):
            return str(wrapper)
    pytest.fail(f"no {version} that another user can run (the entrypoint tests need one)")


def readable_copy(source: Path, folder: Path) -> Path:
    """`source` copied into `folder`, readable by everyone."""
    copy = folder / source.name
    shutil.copy2(source, copy)
    copy.chmod(0o644)
    return copy


@dataclass
class Remote:
    url: str
    main: str
    feature: str
    path: Path  # the bare repo

    def commit_on(self, ref: str, name: str, parent: str) -> str:
        """A new commit adding `name` on top of `parent`, and `ref` moved to it (as GitHub
        moves refs/pull/<n>/head when the PR's branch, maybe a fork's, gets a push)."""
        tree = git(self.path, "rev-parse", f"{parent}^{{tree}}")
        blob = git(self.path, "hash-object", "-w", "--stdin", stdin=f"{name}\n")
        listing = git(self.path, "ls-tree", tree)
        new_tree = git(self.path, "mktree", stdin=f"{listing}\n100644 blob {blob}\t{name}\n")
        commit = git(self.path, "commit-tree", new_tree, "-p", parent, "-m", f"Add {name}")
        git(self.path, "update-ref", ref, commit)
        return commit


@pytest.fixture
def remote(tmp_path: Path, shared_dir: Path) -> Remote:
    """A bare repo with `main` and FEATURE (one commit ahead), reachable as a file:// URL, where
    GIT_REF (refs/pull/7/head, as GitHub keeps it for every PR) is at FEATURE's commit."""
    source = make_repo(tmp_path / "source")
    main = git(source, "rev-parse", "HEAD")
    git(source, "checkout", "-q", "-b", FEATURE)
    (source / "button.txt").write_text("blue\n")
    git(source, "add", "button.txt")
    git(source, "commit", "-q", "-m", "Make the button blue")
    feature = git(source, "rev-parse", "HEAD")
    bare = shared_dir / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(bare))
    git(bare, "update-ref", GIT_REF, feature)
    return Remote(f"file://{bare}", main, feature, bare)


@dataclass
class Container:
    """A running entrypoint.sh, its environment and its log."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path
    agent_log: Path  # the prompts the fake agent ran, one JSON string a line

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['PROMPT_PORT']}"

    def health(self) -> tuple[int, dict[str, Any]] | None:
        return answers(self.url + "/health")

    def wait_health(self, status: int, phase: str = "", timeout: float = 20) -> dict[str, Any]:
        """The /health body once it has `status` (and `phase`, when given)."""

        def check() -> dict[str, Any] | None:
            found = self.health()
            if found and found[0] == status and found[1]["phase"] == (phase or found[1]["phase"]):
                return found[1]
            return None

        try:
            return wait_until(check, timeout, f"/health {status}")
        except AssertionError:
            print(self.log.read_text(errors="replace"))
            raise

    def stop(self) -> int:
        """TERM the entrypoint (as `docker stop` does) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


Run = Callable[..., Container]


@pytest.fixture
def run_entrypoint(tmp_path: Path, shared_dir: Path, remote: Remote) -> Iterator[Run]:
    """Start entrypoint.sh in its own session with free ports; `run(VAR=value)` overrides env."""
    started: list[Container] = []

    def _run(**overrides: str) -> Container:
        home = shared_dir / "home"
        agent_log = shared_dir / "agent" / "agent.log"
        agent_log.parent.mkdir(exist_ok=True)
        python = python_for_users(shared_dir) if SEPARATED else sys.executable
        server = readable_copy(PROMPT_SERVER, shared_dir) if SEPARATED else PROMPT_SERVER
        agent = readable_copy(FAKE_CLAUDE, shared_dir) if SEPARATED else FAKE_CLAUDE
        entrypoint = readable_copy(ENTRYPOINT, shared_dir) if SEPARATED else ENTRYPOINT
        if SEPARATED:  # the agent clones it (git refuses a repo another user owns) and logs here
            for path in [remote.path, *remote.path.rglob("*"), agent_log.parent]:
                os.chown(path, AGENT_UID, AGENT_UID)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "REPO": remote.url,
            "BRANCH": FEATURE,
            "GIT_REF": GIT_REF,
            "HEAD_SHA": remote.feature,
            "SESSION_ID": "pr7-test",
            "AGENT_UID": str(AGENT_UID),
            "APP_UID": str(APP_UID) if SEPARATED else "",
            "APP_HOME": str(shared_dir / "app-home"),
            "WORK_DIR": str(shared_dir / "srv" / "app"),
            "PHASE_FILE": str(home / "phase.json"),
            "PROMPT_STATE": str(home / "prompts.json"),
            "PROMPT_HOST": "127.0.0.1",
            "PROMPT_PORT": str(free_port()),
            "APP_PORT": str(free_port()),
            "UAT_PROMPT_TOKEN": TOKEN,
            "GIT_TOKEN": "ghs_secret-git-token",
            "CLAUDE_CMD": shlex.join([python, str(agent), "--log", str(agent_log)]),
            "PYTHON": python,
            "PROMPT_SERVER": str(server),
            # Proves the operators' commands run in WORK_DIR without the two tokens.
            "APP_INSTALL_CMD": 'test -z "${UAT_PROMPT_TOKEN:-}${GIT_TOKEN:-}" && touch installed',
            "APP_START_CMD": (
                f"exec {shlex.quote(python)} -m http.server $APP_PORT --bind 127.0.0.1"
            ),
            **overrides,
        }
        log = tmp_path / f"entrypoint{len(started)}.log"
        with log.open("wb") as out:
            as_uid = env.pop("AS_UID", "")  # start it as this user instead of the test's
            drop = ["setpriv", f"--reuid={as_uid}", f"--regid={as_uid}", "--clear-groups"]
            proc = subprocess.Popen(
                [*(drop if as_uid else []), "bash", str(entrypoint)],
                env=env,
                cwd=shared_dir,  # not the checkout: its users may not be able to enter it
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        container = Container(proc, env, log, agent_log)
        started.append(container)
        return container

    yield _run
    for container in started:
        try:
            container.stop()
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(container.proc.pid, signal.SIGKILL)


def tool(name: str, install: str) -> str:
    """A command from the venv or PATH; missing, it skips locally and fails under CI=true."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing: {install}")
        pytest.skip(f"{name} is not installed ({install})")
    return found


@pytest.fixture
def alb(tmp_path: Path) -> Iterator[dict[str, str]]:
    """moto's server with a VPC, an ALB and a listener that has a rule at priority 1; the env
    the aws CLI needs to reach it, with `aws` wrapped so that another task takes the first
    priority the entrypoint picks just before its create-rule (the PriorityInUse race)."""
    real_aws = tool("aws", "pip install -e '.[dev]' installs awscli")
    if shutil.which("pyenv") and not real_aws.startswith(
        str(Path(sys.executable).parent)
    ):  # skip pyenv's shim: it makes every call 0.7 s slower
        real_aws = subprocess.run(
            ["pyenv", "which", "aws"], capture_output=True, text=True, check=True
        ).stdout.strip()
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws_env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    ec2, elb = moto_client(aws_env, "ec2"), moto_client(aws_env, "elbv2")
    _, listener = alb_listener(ec2, elb, 9)
    elb.create_rule(
        ListenerArn=listener,
        Priority=1,
        Conditions=[{"Field": "host-header", "Values": ["other.uat.example.com"]}],
        Actions=[
            {
                "Type": "fixed-response",
                "FixedResponseConfig": {"StatusCode": "200", "ContentType": "text/plain"},
            }
        ],
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "aws"
    wrapper.write_text(
        f"""#!/usr/bin/env bash
# Before the first create-rule, a competitor takes the same priority for another host.
set -euo pipefail
if [[ " $* " == *" create-rule "* && ! -e {tmp_path}/raced ]]; then
    touch {tmp_path}/raced
    args=("$@") listener="" priority="" type=text/plain
    for ((i = 0; i < ${{#args[@]}} - 1; i++)); do
        case ${{args[i]}} in
            --listener-arn) listener=${{args[i + 1]}} ;;
            --priority) priority=${{args[i + 1]}} ;;
        esac
    done
    {real_aws} elbv2 create-rule --listener-arn "$listener" --priority "$priority" \\
        --conditions Field=host-header,Values=racer.uat.example.com \\
        --actions "Type=fixed-response,FixedResponseConfig={{StatusCode=200,ContentType=$type}}" \\
        >/dev/null
fi
exec {real_aws} "$@"
"""
    )
    wrapper.chmod(0o755)
    yield {
        **aws_env,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ALB_LISTENER_ARN": listener,
        "UAT_DOMAIN": "uat.example.com",
        "TASK_IP": "127.0.0.1",  # recorded by moto only; nothing connects to it
    }
    server.stop()


def moto_client(alb: dict[str, str], service: str) -> Any:
    """A boto3 client for the `alb` fixture's moto server (with the fixture's test keys)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=alb["AWS_ENDPOINT_URL"],
        region_name=alb["AWS_DEFAULT_REGION"],
        aws_access_key_id=alb["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=alb["AWS_SECRET_ACCESS_KEY"],
    )
