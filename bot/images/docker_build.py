"""Building the UAT image: resolve a ref with git, export it to a clean dir, docker build, push.

git runs as an argument list (never a shell); docker goes through the SDK's low-level API, whose
build and push streams feed a progress callback line by line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot import gateway_text
from bot.aws.gateways import RegistryAuth
from bot.errors import UserError

logger = logging.getLogger(__name__)

REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
STEP = re.compile(r"^Step \d+/\d+ : ")

LogSink = Callable[[str], None]


class BuildError(UserError):
    """The build or push failed; the message says at which step, with the log's tail."""

    def __init__(self, message: str, step: str = "", tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.step = step
        self.tail = list(tail)


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str

    @property
    def short(self) -> str:
        return self.sha[:7]


def _git(args: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, args, result.stdout, result.stderr)
    return result.stdout.strip()


@contextmanager
def checkout(source: str, ref: str) -> Iterator[tuple[Commit, Path]]:
    """Fetch `ref` of `source` (a git URL or path) into a fresh temp dir; yield commit and dir.

    A shallow fetch of just that ref; the temp dir is removed afterwards.
    """
    if not REF.match(ref) or ".." in ref:
        raise UserError(gateway_text.bad_ref(ref))
    work = Path(tempfile.mkdtemp(prefix="uat-build-"))
    try:
        _git(["init", "-q", str(work)])
        try:
            _git(["fetch", "-q", "--depth=1", "--", source, ref], cwd=work)
        except subprocess.CalledProcessError as exc:
            if not re.fullmatch(r"[0-9a-f]{7,40}", ref):
                raise UserError(_fetch_problem(source, ref, exc.stderr)) from None
            # a commit sha the server will not serve directly: fetch the branches, then find it
            try:
                _git(["fetch", "-q", "--", source, "+refs/heads/*:refs/remotes/src/*"], cwd=work)
                _git(["rev-parse", "--verify", "-q", f"{ref}^{{commit}}"], cwd=work)
            except subprocess.CalledProcessError:
                raise UserError(_fetch_problem(source, ref, exc.stderr)) from None
            target = ref
        else:
            target = "FETCH_HEAD"
        _git(["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", target], cwd=work)
        sha, subject, author = _git(["log", "-1", "--format=%H%x00%s%x00%an"], cwd=work).split(
            "\x00"
        )
        shutil.rmtree(work / ".git")
        yield Commit(sha=sha, subject=subject, author=author), work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@asynccontextmanager
async def fetched(source: str, ref: str) -> AsyncIterator[tuple[Commit, Path]]:
    """`checkout` with git and the clean-up in a thread: never blocks the event loop."""
    manager = checkout(source, ref)
    commit_and_tree = await asyncio.to_thread(manager.__enter__)
    try:
        yield commit_and_tree
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


def _fetch_problem(source: str, ref: str, stderr: str) -> str:
    if "couldn't find remote ref" in stderr or "not our ref" in stderr:
        return gateway_text.no_such_ref(ref)
    if "does not appear to be a git repository" in stderr or "not found" in stderr:
        return gateway_text.UNREADABLE_SOURCE
    lines = stderr.strip().splitlines()
    return gateway_text.fetch_failed(ref, lines[-1] if lines else "no reason given")


class Docker:
    """The docker engine, through the SDK's low-level client."""

    puts_into_ecr = False  # a push to UAT_REGISTRY also lands in ECR (the console's)

    def __init__(self, base_url: str | None = None) -> None:
        self._base_url = base_url
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            import docker

            try:
                if self._base_url:
                    self._api = docker.APIClient(base_url=self._base_url, timeout=600)
                else:
                    self._api = docker.from_env(timeout=600).api
                self._api.ping()
            except Exception as exc:
                self._api = None
                logger.info("no docker engine at %s (%s)", self.where, type(exc).__name__)
                raise UserError(gateway_text.docker_unreachable(self.where)) from None
        return self._api

    @property
    def where(self) -> str:
        """The engine's address as docker reads it (DOCKER_HOST, or the default socket)."""
        if self._base_url:
            return self._base_url
        from docker.utils import kwargs_from_env

        return str(kwargs_from_env().get("base_url") or "unix:///var/run/docker.sock")

    async def ready(self) -> None:
        """Raise a UserError saying what to do when builds cannot run here (no engine answers)."""
        await asyncio.to_thread(self._client)

    async def build(
        self, context: Path, dockerfile_dir: str, platform: str, tag: str, log: LogSink
    ) -> str:
        """Build `context/dockerfile_dir`; returns the image id."""
        return await asyncio.to_thread(self._build, context, dockerfile_dir, platform, tag, log)

    def _build(
        self, context: Path, dockerfile_dir: str, platform: str, tag: str, log: LogSink
    ) -> str:
        path = (context / dockerfile_dir).resolve()
        if not path.is_relative_to(context.resolve()) or not (path / "Dockerfile").is_file():
            raise UserError(gateway_text.no_dockerfile(dockerfile_dir))
        api = self._client()
        tail: list[str] = []
        step = ""
        image_id = ""
        for chunk in api.build(
            path=str(path), tag=tag, platform=platform, rm=True, forcerm=True, decode=True
        ):
            if "stream" in chunk:
                for line in str(chunk["stream"]).splitlines():
                    if not line.strip():
                        continue
                    if STEP.match(line):
                        step = line
                    tail = [*tail[-19:], line]
                    log(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk or "errorDetail" in chunk:
                error = str(chunk.get("error") or chunk["errorDetail"].get("message", ""))
                tail = [*tail[-19:], error.strip()]
                log(error.strip())
                raise BuildError(gateway_text.build_failed_at(step), step, tail)
        if not image_id:
            image_id = api.inspect_image(tag)["Id"]
        return str(image_id)

    async def push(
        self,
        image: str,
        repository: str,
        tags: Sequence[str],
        auth: RegistryAuth | None,
        log: LogSink,
        then: Sequence[str] = (),
    ) -> tuple[str, list[str]]:
        """Tag `image` as `repository:<tag>` and push each tag in order.

        Returns the manifest digest and the tags pushed. A failure part way raises BuildError
        naming exactly which tags moved; `then` are the tags that were to be moved after the
        push (by manifest copy), named among those that did not.
        """
        digest, pushed = await asyncio.to_thread(
            self._push, image, repository, list(tags), auth, log, list(then)
        )
        return await self._pushed(repository, digest, pushed, log)

    async def _pushed(
        self, repository: str, digest: str, pushed: list[str], log: LogSink
    ) -> tuple[str, list[str]]:
        """What a push returns, once its tags are in `repository` (where a subclass may copy
        them on to)."""
        return digest, pushed

    def _push(
        self,
        image: str,
        repository: str,
        tags: list[str],
        auth: RegistryAuth | None,
        log: LogSink,
        then: list[str],
    ) -> tuple[str, list[str]]:
        api = self._client()
        auth_config = {"username": auth.username, "password": auth.password} if auth else None
        pushed: list[str] = []
        digest = ""
        for tag in tags:
            api.tag(image, repository, tag)
            try:
                for chunk in api.push(
                    repository, tag=tag, stream=True, decode=True, auth_config=auth_config
                ):
                    if "error" in chunk or "errorDetail" in chunk:
                        raise RuntimeError(chunk.get("error") or chunk["errorDetail"]["message"])
                    if "aux" in chunk and "Digest" in chunk["aux"]:
                        digest = chunk["aux"]["Digest"]
                    elif chunk.get("status") and chunk.get("id") is None:
                        log(str(chunk["status"]))
            except Exception as exc:
                problem = _push_problem(exc)
                not_pushed = tags[len(pushed) :] + then
                raise BuildError(
                    gateway_text.push_failed(tag, repository, problem, pushed, not_pushed),
                    f"push :{tag}",
                ) from None
            pushed.append(tag)
            log(f"pushed :{tag}")
        return digest, pushed


def _push_problem(exc: Exception) -> str:
    text = str(exc)
    lowered = text.lower()
    if "denied" in lowered or "unauthorized" in lowered or "authentication required" in lowered:
        return gateway_text.PUSH_DENIED
    if "connection refused" in lowered or "no such host" in lowered or "dial tcp" in lowered:
        return gateway_text.REGISTRY_UNREACHABLE
    return text.strip().splitlines()[-1][:300] if text.strip() else type(exc).__name__
