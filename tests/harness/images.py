"""The two images built for real (`make images`) and run with the docker CLI on the host network:
tags of the test's own (removed afterwards; the cached base stays), a bare repo served to the
container by a bind mount, and containers that are always removed."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness.container_helpers import ROOT, git, make_repo

BASE_TAG = "uat-base:bookworm"
# The uid the images run as (USER 1001 in both Dockerfiles): it must own what it reads from git.
IMAGE_UID = 1001
BUILD_TIMEOUT_S = 45 * 60


@dataclass(frozen=True)
class Images:
    bot: str
    container: str
    seconds: float


def docker(*args: str, timeout: float = 120) -> str:
    """Run the docker CLI; its stdout, or an AssertionError with what it said."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout.strip()


@contextlib.contextmanager
def built_images() -> Iterator[Images]:
    """`make images` with tags of this run's own; both images are removed at the end."""
    suffix = secrets.token_hex(4)
    images = {"BOT_TAG": f"uat-bot:test-{suffix}", "CONTAINER_TAG": f"uat-container:test-{suffix}"}
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["make", "--no-print-directory", "images"],
            cwd=ROOT,
            env={**os.environ, **images, "BASE_TAG": BASE_TAG},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        assert done.returncode == 0, f"make images failed:\n{done.stdout[-4000:]}{done.stderr}"
        yield Images(images["BOT_TAG"], images["CONTAINER_TAG"], time.monotonic() - started)
    finally:
        subprocess.run(["docker", "rmi", "--force", *images.values()], capture_output=True)


@dataclass(frozen=True)
class PullRequestRemote:
    """A bare repo where `branch` and refs/pull/<number>/head are both at `head_sha`."""

    path: Path
    branch: str
    number: int
    head_sha: str


def pull_request_remote(root: Path, branch: str, number: int) -> PullRequestRemote:
    """The repo a PR container clones: main, then one commit on `branch`, also refs/pull/N/head."""
    source = make_repo(root / "source")
    git(source, "checkout", "-q", "-b", branch)
    (source / "button.txt").write_text("blue\n")
    git(source, "add", "button.txt")
    git(source, "commit", "-q", "-m", "Make the button blue")
    head = git(source, "rev-parse", "HEAD")
    bare = root / "served" / "remote.git"
    git(root, "clone", "-q", "--bare", str(source), str(bare))
    git(bare, "update-ref", f"refs/pull/{number}/head", head)
    if os.geteuid() == 0:  # git refuses a repo another user owns ("dubious ownership")
        for path in [bare.parent, *bare.parent.rglob("*")]:
            os.chown(path, IMAGE_UID, IMAGE_UID)
    return PullRequestRemote(bare, branch, number, head)


@dataclass
class Running:
    """A detached container on the host network; `remove()` stops and deletes it."""

    name: str

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return done.stdout + done.stderr

    def exec(self, *argv: str) -> str:
        return docker("exec", self.name, *argv)

    def exec_as(self, user: str, script: str) -> subprocess.CompletedProcess[str]:
        """`bash -c script` as `user` in the container, whatever its exit status, with an empty
        environment (`docker exec` would give it the container's, tokens included)."""
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        argv = [
            "docker",
            "exec",
            "--user",
            user,
            self.name,
            "env",
            "-i",
            path,
            "bash",
            "-c",
            script,
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "--force", self.name], capture_output=True, timeout=60)


@contextlib.contextmanager
def run_container(
    image: str, env: dict[str, str], mounts: dict[Path, str] | None = None
) -> Iterator[Running]:
    """`docker run -d --network host` with `env` and read-only bind mounts (host path: target)."""
    name = f"uat-test-{secrets.token_hex(4)}"
    argv = ["run", "--detach", "--name", name, "--network", "host"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    for source, target in (mounts or {}).items():
        argv += ["--volume", f"{source}:{target}:ro"]
    running = Running(name)
    try:
        docker(*argv, image)
        yield running
    finally:
        running.remove()
