"""Who builds the UAT image (`UAT_BUILDER`: the local docker engine, or AWS CodeBuild) and where
its tags live (ECR, or an auth-less UAT_REGISTRY alone).

A builder makes `:<sha>` and nothing else. The pipeline moves `:staging` / `:latest` afterwards by
copying the sha image's manifest (`ImageTags.copy`), so a moving tag never points at an image
that is still being pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bot.aws.codebuild import Build, CodeBuild
from bot.aws.gateways import Ecr
from bot.config import Settings
from bot.errors import UserError
from bot.images import registry
from bot.images.docker_build import BuildError, Commit, Docker
from bot.slack import slack_ui

logger = logging.getLogger(__name__)


class BuildProgress:
    """What a build is doing now; written from docker's thread, read by whoever displays it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.step = "starting"
        self.link = ""  # where the build's own log is (CodeBuild's), once known
        self.lines: deque[str] = deque(maxlen=6)
        self.began = time.monotonic()
        self.version = 0
        self.started = asyncio.Event()  # set on the event loop once the lock is taken
        self._mutex = threading.Lock()

    def set_step(self, step: str) -> None:
        """Called on the event loop between the build's phases."""
        with self._mutex:
            self.step = step
            self.version += 1
        self.started.set()

    def set_link(self, link: str) -> None:
        with self._mutex:
            self.link = link
            self.version += 1

    def log(self, line: str) -> None:
        with self._mutex:
            if line.startswith("Step "):
                self.step = line
            self.lines.append(line[:200])
            self.version += 1

    def snapshot(self) -> tuple[str, list[str], float]:
        with self._mutex:
            return self.step, list(self.lines), time.monotonic() - self.began


class Builder(Protocol):
    """Builds `:<short sha>` of a commit into the repository the tags live in."""

    async def ready(self) -> None:
        """Raise a UserError saying what to do when builds cannot run (before the lock)."""

    async def build(self, commit: Commit, tree: Path, progress: BuildProgress, target: str) -> None:
        """Build `commit` (exported at `tree`) and push `:<commit.short>` only; `target` is the
        tag the pipeline moves afterwards (for messages). A failure raises BuildError."""


class ImageTags(Protocol):
    """Where the sha images and the moving tags live."""

    in_ecr: bool
    where: str  # for messages: "ECR repository x", "registry 127.0.0.1:5000/x"

    async def digest(self, tag: str) -> str | None:
        """The manifest digest `tag` points at, or None when there is no such tag."""

    async def copy(self, source: str, target: str) -> str:
        """Point `target` at the manifest `source` points at; returns that digest."""


class EcrTags:
    """Tags in ECR: BatchGetImage + PutImage, as promote does."""

    in_ecr = True

    def __init__(self, ecr: Ecr) -> None:
        self.ecr = ecr
        self.where = f"ECR repository {ecr.repository}"

    async def digest(self, tag: str) -> str | None:
        image = await self.ecr.describe(tag)
        return image.digest if image else None

    async def copy(self, source: str, target: str) -> str:
        manifest = await self.ecr.manifest(tag=source)
        await self.ecr.put_tag(manifest, target)
        after = await self.ecr.describe(target)
        if after is None or after.digest != manifest.digest:
            raise UserError(slack_ui.retag_not_applied(manifest.digest, after))
        return manifest.digest


class RegistryTags:
    """Tags in an auth-less registry (UAT_REGISTRY, when ECR does not see its pushes): the
    registry API's own manifest GET and PUT."""

    in_ecr = False

    def __init__(self, address: str, repository: str) -> None:
        self.address = address
        self.repository = repository
        self.where = f"registry {address}/{repository}"

    async def digest(self, tag: str) -> str | None:
        try:
            found = await asyncio.to_thread(
                registry.fetch_manifest, self.address, self.repository, tag
            )
        except (LookupError, OSError) as exc:
            # not there, or the registry does not answer: the push will say which
            logger.info("no :%s in %s (%s)", tag, self.where, exc)
            return None
        return found[0]

    async def copy(self, source: str, target: str) -> str:
        def run() -> str:
            digest, media_type, body = registry.fetch_manifest(
                self.address, self.repository, source
            )
            registry.put_manifest(self.address, self.repository, target, media_type, body)
            after = registry.fetch_manifest(self.address, self.repository, target)[0]
            if after != digest:
                raise UserError(slack_ui.registry_retag_not_applied(target, digest, after))
            return digest

        try:
            return await asyncio.to_thread(run)
        except (LookupError, OSError) as exc:
            raise UserError(slack_ui.retag_failed(target, self.where, str(exc))) from None


class DockerBuilder:
    """The docker engine the bot runs beside: build, then push `:<sha>` to UAT_REGISTRY or ECR."""

    def __init__(self, settings: Settings, docker: Docker, ecr: Ecr) -> None:
        self.settings = settings
        self.docker = docker
        self.ecr = ecr

    async def ready(self) -> None:
        await self.docker.ready()

    async def build(self, commit: Commit, tree: Path, progress: BuildProgress, target: str) -> None:
        settings = self.settings
        if settings.uat_registry:
            repository = f"{settings.uat_registry}/{settings.uat_ecr_repository}"
            auth = None
        else:
            auth = await self.ecr.authorization()
            repository = f"{auth.registry}/{settings.uat_ecr_repository}"
        progress.set_step("building")
        image = await self.docker.build(
            tree,
            settings.uat_build_path,
            settings.uat_platform,
            f"uat-bot-build:{commit.short}",
            progress.log,
        )
        progress.set_step(f"pushing :{commit.short}")
        await self.docker.push(image, repository, [commit.short], auth, progress.log, [target])


Clock = Callable[[], float]


class CodeBuildBuilder:
    """AWS CodeBuild (`UAT_CODEBUILD_PROJECT`): StartBuild for the commit's sha, follow it with
    BatchGetBuilds (its phases are the progress), stop it past UAT_BUILD_TIMEOUT_S. The project's
    buildspec (container/buildspec.yml) pushes `$IMAGE_REPOSITORY_URI:$IMAGE_TAG` to ECR."""

    poll_s = 5.0

    def __init__(
        self, settings: Settings, codebuild: CodeBuild, ecr: Ecr, clock: Clock = time.monotonic
    ) -> None:
        self.settings = settings
        self.codebuild = codebuild
        self.ecr = ecr
        self.clock = clock

    async def ready(self) -> None:
        return None  # Settings refuses codebuild without a project

    async def build(self, commit: Commit, tree: Path, progress: BuildProgress, target: str) -> None:
        settings = self.settings
        progress.set_step("starting a CodeBuild build")
        environment = {
            "IMAGE_REPOSITORY_URI": await self.ecr.repository_uri(),
            "IMAGE_TAG": commit.short,
            "UAT_BUILD_PATH": settings.uat_build_path,
            "UAT_PLATFORM": settings.uat_platform,
        }
        limit = settings.uat_build_timeout_s
        deadline = self.clock() + limit
        build = await self.codebuild.start(commit.sha, environment, limit)
        logged: set[str] = set()
        try:
            while True:
                self._show(build, progress, logged)
                if build.done:
                    break
                if self.clock() >= deadline:
                    await self.codebuild.stop(build.id)
                    raise BuildError(
                        slack_ui.codebuild_timed_out(limit, build.current_phase, build.log_link),
                        build.current_phase,
                    )
                await asyncio.sleep(self.poll_s)
                build = await self.codebuild.get(build.id)
        except asyncio.CancelledError:  # the bot is stopping: leave no build running for nobody
            with contextlib.suppress(Exception):
                await asyncio.shield(self.codebuild.stop(build.id))
            raise
        if not build.succeeded:
            phase = build.failed_phase
            name = phase.kind if phase else build.current_phase
            tail = list(phase.messages) if phase else []  # escaped where shown
            raise BuildError(
                slack_ui.codebuild_failed(build.status, name, build.log_link), name, tail
            )

    @staticmethod
    def _show(build: Build, progress: BuildProgress, logged: set[str]) -> None:
        """The current phase as the step, each phase that ended as one log line."""
        if build.log_link and build.log_link != progress.link:
            progress.set_link(build.log_link)
        step = f"CodeBuild: {build.current_phase or 'starting'}"
        if step != progress.step:
            progress.set_step(step)
        for phase in build.phases:
            if phase.status and phase.kind not in logged:
                logged.add(phase.kind)
                took = f" ({phase.seconds}s)" if phase.seconds is not None else ""
                progress.log(f"{phase.kind}: {phase.status}{took}")


def builder_for(settings: Settings, ecr: Ecr, docker: Docker, codebuild: CodeBuild) -> Builder:
    """The builder UAT_BUILDER names."""
    if settings.uat_builder == "codebuild":
        return CodeBuildBuilder(settings, codebuild, ecr)
    return DockerBuilder(settings, docker, ecr)


def tags_for(settings: Settings, ecr: Ecr, docker: Docker) -> ImageTags:
    """Where builds' tags live: ECR, unless the docker builder pushes to UAT_REGISTRY alone."""
    if settings.uat_builder == "docker" and settings.uat_registry and not docker.puts_into_ecr:
        return RegistryTags(settings.uat_registry, settings.uat_ecr_repository)
    return EcrTags(ecr)


__all__ = [
    "BuildProgress",
    "Builder",
    "CodeBuildBuilder",
    "DockerBuilder",
    "EcrTags",
    "ImageTags",
    "RegistryTags",
]
