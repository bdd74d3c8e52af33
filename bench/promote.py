"""Promote by manifest copy (the bot) vs promote by pull + tag + push (what it replaces).

* figure: `ImagePipeline.promote` (bot/images/operations.py, built by bot/app.py's `build_pipeline`)
  against moto's ECR server on 127.0.0.1: BatchGetImage of :staging, then PutImage of that
  manifest as :latest, with the DescribeImages checks, the store lock and the audit entry.
* baseline: the same move done with image bytes, through the real docker engine and the local
  registry on 127.0.0.1:5055 (tests/harness/services.py): `docker pull :staging`, tag `:latest`,
  `push :latest`, with no local copy of the image to start from. The image is FROM scratch
  with one ~20 MB layer of incompressible bytes.

The two alternate, five times each; before each run :latest is put back (moto: re-seeded to
the other manifest; docker: the local images are removed so the pull moves the layer). One
untimed manifest-copy promote first warms boto3's client and moto's backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import AWS_ENV, Row, alone, boto3_pointed_at, compared, fmt_s

RUNS = 5
REPOSITORY = "bench-promote"
LAYER_BYTES = 20 * 1024 * 1024
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
ACTOR = "UBENCH"
# ------------------------------------------------------------------------- manifest copy


def docker_v2_manifest(seed: str, layer_size: int = LAYER_BYTES) -> str:
    """A docker v2 image manifest (as `docker push` writes them) for a made-up image."""

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_V2,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": digest(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": layer_size,
                "digest": digest(f"layer {seed}".encode()),
            }
        ],
    }
    return json.dumps(manifest, indent=3)


def manifest_digest(body: str) -> str:
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


@contextlib.contextmanager
def moto_ecr() -> Iterator[str]:
    """moto's server on 127.0.0.1, with boto3's variables pointing at it for the duration."""
    from moto.server import ThreadedMotoServer

    # werkzeug (moto's HTTP server) would log every request to stderr.
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto's backends are process-wide and outlive a server: start from an empty ECR.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    opener.open(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10)
    try:
        with boto3_pointed_at(url):
            yield url
    finally:
        server.stop()
        werkzeug.setLevel(level)


class ManifestCopy:
    """ImagePipeline.promote against moto, with :latest put back before each run."""

    def __init__(self, endpoint: str, workdir: Path) -> None:
        import boto3

        from bot.app import build_pipeline
        from bot.config import load_settings
        from bot.store import SqliteStore

        settings = load_settings(
            {
                "AWS_REGION": AWS_ENV["AWS_REGION"],
                "AWS_ENDPOINT_URL": endpoint,
                "UAT_ECR_REPOSITORY": REPOSITORY,
                "UAT_DB": str(workdir / "uat-bot.db"),
            }
        )
        self.store = SqliteStore(settings.uat_db)
        self.pipeline = build_pipeline(settings, self.store)
        self.ecr = boto3.client("ecr", endpoint_url=endpoint, region_name=settings.aws_region)
        self.staging = docker_v2_manifest("staging")
        self.latest = docker_v2_manifest("latest")

    async def open(self) -> None:
        await self.store.open()
        self.ecr.create_repository(repositoryName=REPOSITORY)
        self._put(self.staging, "staging")
        self._put(self.latest, "latest")

    async def close(self) -> None:
        await self.store.close()

    def _put(self, body: str, tag: str) -> None:
        self.ecr.put_image(
            repositoryName=REPOSITORY,
            imageManifest=body,
            imageManifestMediaType=DOCKER_V2,
            imageTag=tag,
            imageDigest=manifest_digest(body),
        )

    def _latest_digest(self) -> str:
        response = self.ecr.describe_images(
            repositoryName=REPOSITORY, imageIds=[{"imageTag": "latest"}]
        )
        return str(response["imageDetails"][0]["imageDigest"])

    def reset(self) -> None:
        """Point :latest back at the other image (untimed)."""
        if self._latest_digest() != manifest_digest(self.latest):
            self._put(self.latest, "latest")
        if self._latest_digest() != manifest_digest(self.latest):
            raise RuntimeError("could not put :latest back in moto")

    async def promote(self) -> tuple[float, dict[str, int]]:
        self.pipeline.ecr.calls.clear()
        started = time.perf_counter()
        result = await self.pipeline.promote(ACTOR)
        elapsed = time.perf_counter() - started
        calls = dict(self.pipeline.ecr.calls)
        if not result.changed or result.current.digest != manifest_digest(self.staging):
            raise RuntimeError(f"promote did not move :latest to :staging: {result}")
        if self._latest_digest() != manifest_digest(self.staging):
            raise RuntimeError("moto's :latest is not :staging after promote")
        return elapsed, calls


# ------------------------------------------------------------------------- pull, tag, push


def _stream(events: Any, what: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = list(events)
    errors = [e for e in seen if "error" in e or "errorDetail" in e]
    if errors:
        raise RuntimeError(f"{what} failed: {errors[0]}")
    return seen


class PullTagPush:
    """`docker pull :staging`, tag `:latest`, `push :latest` through the engine and registry."""

    def __init__(self) -> None:
        from tests.harness.services import docker_client, ensure_registry

        self.client = docker_client(timeout=300)
        self.name = f"{ensure_registry()}/{REPOSITORY}"
        self.api = self.client.api

    def prepare(self) -> str:
        """Build and push :staging once, then drop the local copy; return the pushed digest."""
        with tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp:
            context = Path(tmp)
            payload = context / "payload.bin"
            # Fixed bytes and mtime: the layer (and its blob in the registry) is the same every
            # run, so repeated benchmarks do not grow the registry's storage.
            payload.write_bytes(random.Random(20).randbytes(LAYER_BYTES))
            os.utime(payload, (1_700_000_000, 1_700_000_000))
            (context / "Dockerfile").write_text("FROM scratch\nCOPY payload.bin /payload.bin\n")
            self.client.images.build(
                path=str(context), tag=f"{self.name}:staging", platform="linux/amd64", rm=True
            )
        pushed = _stream(
            self.api.push(self.name, tag="staging", stream=True, decode=True), "push :staging"
        )
        digests = [e["aux"]["Digest"] for e in pushed if "Digest" in e.get("aux", {})]
        if len(digests) != 1:
            raise RuntimeError(f"push :staging reported no digest: {pushed[-3:]}")
        self.reset()
        return str(digests[0])

    def reset(self) -> None:
        """Remove the local :staging and :latest (and so the layer): the pull must fetch it."""
        import docker

        for tag in ("latest", "staging"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                self.client.images.remove(f"{self.name}:{tag}", force=True)

    def promote(self) -> tuple[float, str]:
        started = time.perf_counter()
        _stream(self.api.pull(self.name, tag="staging", stream=True, decode=True), "pull")
        if not self.api.tag(f"{self.name}:staging", self.name, "latest"):
            raise RuntimeError("docker tag :latest failed")
        pushed = _stream(
            self.api.push(self.name, tag="latest", stream=True, decode=True), "push :latest"
        )
        elapsed = time.perf_counter() - started
        digests = [e["aux"]["Digest"] for e in pushed if "Digest" in e.get("aux", {})]
        return elapsed, digests[0] if digests else ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.reset()
        self.client.close()


# ------------------------------------------------------------------------- the benchmark


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def _calls_text(calls: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(calls.items()))


def run() -> list[Row]:
    copy_times: list[float] = []
    docker_times: list[float] = []
    calls_seen: list[dict[str, int]] = []
    docker_problem: str | None = None
    baseline: PullTagPush | None = None
    staging_digest = ""

    with (
        moto_ecr() as endpoint,
        tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp,
        asyncio.Runner() as loop,
    ):
        copy = ManifestCopy(endpoint, Path(tmp))
        loop.run(copy.open())
        try:
            loop.run(copy.promote())  # warm-up: boto3 client, moto's ECR backend, sqlite
            try:
                baseline = PullTagPush()
                staging_digest = baseline.prepare()
            except Exception as exc:
                docker_problem = _reason(exc)
                baseline = None
            for _ in range(RUNS):
                copy.reset()
                seconds, calls = loop.run(copy.promote())
                copy_times.append(seconds)
                calls_seen.append(calls)
                if baseline is not None and docker_problem is None:
                    try:
                        baseline.reset()
                        seconds, digest = baseline.promote()
                        if digest != staging_digest:
                            raise RuntimeError(f"pushed :latest {digest} != :staging")
                        docker_times.append(seconds)
                    except Exception as exc:
                        docker_problem = _reason(exc)
        finally:
            loop.run(copy.close())
            if baseline is not None:
                baseline.close()

    copy_median = statistics.median(copy_times)
    rows: list[Row] = []
    if docker_problem is None and len(docker_times) == RUNS:
        docker_median = statistics.median(docker_times)
        rows.append(
            compared(
                "promote :staging -> :latest (median)",
                copy_median,
                docker_median,
                f"goal: faster than pull+tag+push (ratio < 1); "
                f"met: {'yes' if copy_median < docker_median else 'NO'}; "
                f"manifest copy vs docker pull+tag+push of a {LAYER_BYTES >> 20} MB image; "
                f"{RUNS} runs each, alternating",
                fmt=fmt_s,
            )
        )
    else:
        rows.append(
            alone(
                "promote :staging -> :latest (median)",
                fmt_s(copy_median),
                f"goal: faster than pull+tag+push (ratio < 1); met: unknown (no baseline); "
                f"manifest copy, {RUNS} runs",
            )
        )
        rows.append(
            alone(
                "promote baseline (pull+tag+push)",
                "-",
                f"goal: n/a; met: n/a; baseline could not run: "
                f"{docker_problem or 'incomplete runs'}",
            )
        )

    first = calls_seen[0]
    same = all(calls == first for calls in calls_seen)
    expected = first.get("BatchGetImage") == 1 and first.get("PutImage") == 1
    extra = set(first) - {"BatchGetImage", "PutImage", "DescribeImages"}
    verdict = (
        "as expected: BatchGetImage 1, PutImage 1, plus DescribeImages"
        if expected and not extra
        else "UNEXPECTED: want BatchGetImage 1, PutImage 1, plus DescribeImages"
    )
    rows.append(
        alone(
            "promote ECR API calls (one promote)",
            f"{_calls_text(first)} ({sum(first.values())} total)",
            "goal: BatchGetImage 1 + PutImage 1 (no image bytes), DescribeImages allowed; "
            f"met: {'yes' if expected and not extra and same else 'NO'}; "
            + verdict
            + ("" if same else f"; runs differed: {calls_seen}"),
        )
    )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
