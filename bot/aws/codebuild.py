"""A thin typed gateway over AWS CodeBuild: start a build, read it, stop it.

As in bot/aws/gateways.py, each boto3 call runs in a thread and `ClientError` never leaves
this module: it becomes an `AwsError` saying what to check. What comes out is a small frozen
`Build`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3

from bot import gateway_text
from bot.aws.gateways import AwsError, _Gateway
from bot.config import Settings

IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
# CodeBuild's minimum and maximum for timeoutInMinutesOverride (StartBuild API reference)
TIMEOUT_MINUTES = (5, 2160)


@dataclass(frozen=True)
class Phase:
    """One of a build's phases (SUBMITTED, PROVISIONING, … BUILD, POST_BUILD, … COMPLETED)."""

    kind: str
    status: str  # "" while the phase runs; then SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED …
    seconds: int | None = None
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Build:
    """What CodeBuild says about one build."""

    id: str
    status: str  # IN_PROGRESS, SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED
    current_phase: str
    phases: tuple[Phase, ...]
    log_link: str  # the console link to the build's log (logs.deepLink), "" when not known yet

    @property
    def done(self) -> bool:
        return self.status != IN_PROGRESS

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    @property
    def failed_phase(self) -> Phase | None:
        """The phase that did not succeed (the last such), or None."""
        failed = [p for p in self.phases if p.status and p.status != SUCCEEDED]
        return failed[-1] if failed else None


def _build(raw: Any) -> Build:
    phases = tuple(
        Phase(
            kind=str(p.get("phaseType", "")),
            status=str(p.get("phaseStatus", "")),
            seconds=p.get("durationInSeconds"),
            messages=tuple(
                str(c.get("message", "")) for c in p.get("contexts", []) if c.get("message")
            ),
        )
        for p in raw.get("phases", [])
    )
    return Build(
        id=str(raw["id"]),
        status=str(raw.get("buildStatus", IN_PROGRESS)),
        current_phase=str(raw.get("currentPhase", "")),
        phases=phases,
        log_link=str((raw.get("logs") or {}).get("deepLink", "")),
    )


class CodeBuild(_Gateway):
    """The CodeBuild project that builds the UAT image (`UAT_CODEBUILD_PROJECT`)."""

    def __init__(self, settings: Settings, session: boto3.session.Session | None = None) -> None:
        super().__init__(settings, session)
        self.project = settings.uat_codebuild_project or ""

    async def start(
        self, source_version: str, environment: dict[str, str], timeout_s: float
    ) -> Build:
        """Start a build of `source_version` (a commit sha) with these environment variables;
        CodeBuild itself stops it a little after `timeout_s` if nobody else has."""
        low, high = TIMEOUT_MINUTES
        minutes = min(high, max(low, int(timeout_s // 60) + 1))

        def run() -> Build:
            self._count("StartBuild")
            response = self._client("codebuild").start_build(
                projectName=self.project,
                sourceVersion=source_version,
                environmentVariablesOverride=[
                    {"name": k, "value": v, "type": "PLAINTEXT"} for k, v in environment.items()
                ],
                timeoutInMinutesOverride=minutes,
            )
            return _build(response["build"])

        return await self._guarded("StartBuild", run)

    async def get(self, build_id: str) -> Build:
        """The build as CodeBuild sees it now (BatchGetBuilds)."""

        def run() -> Build:
            self._count("BatchGetBuilds")
            response = self._client("codebuild").batch_get_builds(ids=[build_id])
            builds = response.get("builds", [])
            if not builds:
                raise AwsError(gateway_text.no_such_build(build_id))
            return _build(builds[0])

        return await self._guarded("BatchGetBuilds", run)

    async def stop(self, build_id: str) -> None:
        """Stop the build (StopBuild); one that has already ended is left as it is."""

        def run() -> None:
            self._count("StopBuild")
            self._client("codebuild").stop_build(id=build_id)

        await self._guarded("StopBuild", run)
