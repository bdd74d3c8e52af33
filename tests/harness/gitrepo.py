"""Source repositories for build tests: real git repos in temp dirs, no network, no global config.

A repo holds what UAT_SOURCE_REPO points at: a `container/Dockerfile` (FROM scratch: no base
image can be pulled in the sandbox) and the files it copies. Commits and branches return shas.

    repo = SourceRepo.create(tmp_path / "src", marker="abc")
    sha = repo.commit({"container/extra.txt": "x"}, "Add extra", branch="feature")
    repo.short(sha)  # what `git rev-parse --short=7` prints
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.harness.container_helpers import GIT_ENV

DEFAULT_BRANCH = "main"
BUILD_PATH = "container"


def dockerfile(*lines: str) -> str:
    """A FROM-scratch Dockerfile with `lines` after the FROM."""
    return "\n".join(["FROM scratch", *lines]) + "\n"


def simple_files(marker: str | None = None) -> dict[str, str]:
    """A buildable container/: one COPY and a LABEL carrying a unique marker (no stale cache)."""
    marker = marker or uuid.uuid4().hex
    return {
        f"{BUILD_PATH}/Dockerfile": dockerfile(
            "COPY hello.txt /hello.txt", f'LABEL uat-bot.test.marker="{marker}"'
        ),
        f"{BUILD_PATH}/hello.txt": f"hello from uat-bot {marker}\n",
    }


@dataclass(frozen=True)
class SourceRepo:
    path: Path

    @classmethod
    def create(
        cls,
        path: Path,
        files: Mapping[str, str] | None = None,
        message: str = "Initial UAT image",
        *,
        marker: str | None = None,
    ) -> SourceRepo:
        """`git init -b main` at `path` and commit `files` (default: `simple_files(marker)`)."""
        path.mkdir(parents=True, exist_ok=True)
        repo = cls(path)
        repo.git("init", "-q", "-b", DEFAULT_BRANCH)
        repo.commit(simple_files(marker) if files is None else files, message)
        return repo

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env={**os.environ, **GIT_ENV},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def commit(
        self,
        files: Mapping[str, str],
        message: str,
        *,
        branch: str | None = None,
        start: str | None = None,
        remove: tuple[str, ...] = (),
    ) -> str:
        """Write `files` (paths relative to the repo) and commit them; returns the full sha.

        With `branch`, switch to it first (creating it from `start`, default HEAD, if new); the
        repo stays on that branch afterwards.
        """
        if branch is not None:
            self.checkout(branch, start=start)
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        for name in remove:
            self.git("rm", "-q", "--", name)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.sha()

    def checkout(self, branch: str, *, start: str | None = None) -> None:
        """Switch to `branch`, creating it from `start` (default HEAD) when it does not exist."""
        exists = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
            cwd=self.path,
            env={**os.environ, **GIT_ENV},
            capture_output=True,
            check=False,
        )
        if exists.returncode == 0:
            self.git("checkout", "-q", branch)
        else:
            self.git("checkout", "-q", "-b", branch, *([start] if start else []))

    def sha(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", "--verify", f"{ref}^{{commit}}")

    def short(self, ref: str = "HEAD") -> str:
        """What `git rev-parse --short=7` prints (7 hex digits in a small repo)."""
        return self.git("rev-parse", "--short=7", ref)

    def subject(self, ref: str = "HEAD") -> str:
        return self.git("log", "-1", "--format=%s", ref)

    @property
    def url(self) -> str:
        """The value for UAT_SOURCE_REPO (a plain path; git fetches from it directly)."""
        return str(self.path)


def remove_built_images(root: Path, repository: str) -> None:
    """Remove what builds of the repos under `root` left in the docker engine.

    That is every tag of `<registry>/<repository>` (any registry) and `uat-bot-build:<short sha>`
    for the commits of the git repos directly under `root`. Quietly does nothing without docker.
    """
    import docker

    from tests.harness.services import docker_client

    shorts: set[str] = set()
    for git_dir in root.glob("*/.git"):
        shorts.update(SourceRepo(git_dir.parent).git("log", "--all", "--format=%h").split())
    try:
        client = docker_client()
    except Exception:
        return
    try:
        for image in client.images.list():
            for tag in image.tags:
                name, _, version = tag.rpartition(":")
                if name.endswith("/" + repository) or (
                    name == "uat-bot-build" and version in shorts
                ):
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(tag, force=True)
    finally:
        client.close()
