"""CodeBuild in moto, with the test playing the part moto cannot: running the build.

Real (moto's own API, over HTTP): CreateProject, StartBuild (the build is stored with the
`sourceVersion` the bot sent), StopBuild (moto marks the stored build STOPPED), and ECR.
Played: moto's builds never run, and its BatchGetBuilds marks every build it is asked about
SUCCEEDED on the spot. `PlayedCodeBuild.install` replaces that one read (moto's backend
`batch_get_builds`) with one that answers the stored build as it is, and the test moves the
stored build through its phases as CodeBuild would (`enter`, `end`) and pushes the `:<sha>` image
into moto's ECR as the buildspec would (`push`). It also records what StartBuild was sent
(moto keeps no environment variables), without changing moto's answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from moto.codebuild.models import CodeBuildBackend, codebuild_backends
from moto.codebuild.responses import CodeBuildResponse
from moto.core.utils import iso_8601_datetime_with_milliseconds

from tests.harness.bot import ROOT
from tests.harness.ecr_seed import tag_sha
from tests.harness.iam_context import ACCOUNT

REGION = "us-east-1"
PROJECT = "uat-image"


def project_spec(name: str = PROJECT) -> dict[str, Any]:
    """docs/codebuild-project.json as an operator fills it in for this account."""
    text = (ROOT / "docs" / "codebuild-project.json").read_text()
    text = text.replace("ACCOUNT", ACCOUNT).replace("REGION", REGION)
    spec: dict[str, Any] = json.loads(text)
    spec["name"] = name
    return spec


class PlayedCodeBuild:
    """The CodeBuild project `PROJECT` in moto; the test plays its builds (see the module)."""

    def __init__(self, endpoint: str) -> None:
        self.client = boto3.client("codebuild", endpoint_url=endpoint, region_name=REGION)
        self.client.create_project(**project_spec())
        self.started: list[dict[str, Any]] = []  # what StartBuild was sent, in order

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def stored(backend: CodeBuildBackend, ids: list[str]) -> list[dict[str, Any]]:
            return [
                build
                for history in backend.build_metadata_history.values()
                for build in history
                if build["id"] in ids
            ]

        real_start: Callable[[CodeBuildResponse], Any] = CodeBuildResponse.start_build

        def recorded_start(response: CodeBuildResponse) -> Any:
            self.started.append(json.loads(response.body))
            return real_start(response)

        monkeypatch.setattr(CodeBuildBackend, "batch_get_builds", stored)
        monkeypatch.setattr(CodeBuildResponse, "start_build", recorded_start)

    @property
    def builds(self) -> list[dict[str, Any]]:
        """The builds moto stores for the project (read without moto's read, which alters them)."""
        backend = codebuild_backends[ACCOUNT][REGION]
        return list(backend.build_metadata_history.get(PROJECT, []))

    def build_ids(self) -> list[str]:
        """The project's builds, through moto's API (ListBuildsForProject)."""
        return list(self.client.list_builds_for_project(projectName=PROJECT)["ids"])

    async def next_build(self, count: int = 1) -> dict[str, Any]:
        """Wait (15 s at most) until the project has `count` builds; the newest."""
        found: dict[str, Any] = await eventually(
            lambda: len(self.builds) >= count and self.builds[count - 1],
            f"build {count} of {PROJECT}",
            15.0,
        )
        return found

    @staticmethod
    def _close(build: dict[str, Any], status: str) -> None:
        now = iso_8601_datetime_with_milliseconds()
        for phase in build["phases"]:
            if "phaseStatus" not in phase:
                phase.update(phaseStatus=status, endTime=now, durationInSeconds=3)

    def enter(self, build: dict[str, Any], *phases: str) -> None:
        """The phases before these succeeded; the build runs each in turn and is in the last."""
        for kind in phases:
            self._close(build, "SUCCEEDED")
            build["phases"].append({"phaseType": kind, "startTime": build["startTime"]})
            build["currentPhase"] = kind

    def end(self, build: dict[str, Any], status: str, message: str = "") -> None:
        """The phase it is in ends `status` (with CodeBuild's context message, if any); then the
        build finishes as CodeBuild finishes one (FINALIZING, COMPLETED) with that status."""
        current = build["phases"][-1]
        if message:
            current["contexts"] = [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": message}]
        self._close(build, status)
        for kind in ("FINALIZING", "COMPLETED"):
            build["phases"].append({"phaseType": kind, "startTime": build["startTime"]})
            if kind != "COMPLETED":
                self._close(build, "SUCCEEDED")
        build["currentPhase"] = "COMPLETED"
        build["buildStatus"] = status
        build["buildComplete"] = True

    @staticmethod
    def push(ecr: Any, sha: str) -> str:
        """What the buildspec's `docker push $IMAGE_REPOSITORY_URI:$IMAGE_TAG` leaves in ECR."""
        return tag_sha(ecr, sha, sha)


async def eventually(check: Callable[[], Any], what: str, seconds: float = 10.0) -> Any:
    """Wait (without blocking the event loop) until `check()` is truthy; its value."""
    for _ in range(int(seconds / 0.05)):
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")
