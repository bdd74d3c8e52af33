"""End-to-end proof that tests/harness/services.py gives a working docker engine and registry.

Builds a FROM-scratch image with the docker SDK, pushes it to the local registry over plain
http, and checks the registry serves the very manifest the push reported.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

try:
    from tests.harness.services import (
        docker_client,
        ensure_dockerd,
        ensure_registry,
        fetch_manifest,
        require,
    )
except ModuleNotFoundError:  # plain `pytest` without pythonpath=["."]: tests/ is on sys.path
    from services import (  # type: ignore[no-redef]
        docker_client,
        ensure_dockerd,
        ensure_registry,
        fetch_manifest,
        require,
    )

pytestmark = pytest.mark.docker

REPOSITORY = "test-repo"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    require(ensure_dockerd)
    c = docker_client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def registry() -> str:
    return require(ensure_registry)


def _push(client: docker.DockerClient, repository: str, tag: str) -> str:
    """Push and return the digest the engine reports; fail on any error in the stream."""
    events: list[dict[str, Any]] = list(
        client.images.push(repository, tag=tag, stream=True, decode=True)
    )
    errors = [e for e in events if "error" in e or "errorDetail" in e]
    assert not errors, f"push of {repository}:{tag} failed: {errors}"
    digests = [e["aux"]["Digest"] for e in events if "Digest" in e.get("aux", {})]
    assert len(digests) == 1, f"expected exactly one digest in the push stream: {events}"
    assert digests[0].startswith("sha256:") and len(digests[0]) == 71
    return str(digests[0])


def _get_blob(registry: str, repository: str, digest: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{registry}/v2/{repository}/blobs/{digest}", timeout=10) as resp:
        body: bytes = resp.read()
    return body


def test_build_push_and_fetch_manifest(
    client: docker.DockerClient, registry: str, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex  # fresh content each run, so the push really uploads a layer
    (tmp_path / "hello.txt").write_text(f"hello from uat-bot {marker}\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY hello.txt /hello.txt\n"
        f'LABEL org.opencontainers.image.revision="abc1234" uat-bot.test.marker="{marker}"\n'
    )
    name = f"{registry}/{REPOSITORY}"

    started = time.monotonic()
    image, _logs = client.images.build(
        path=str(tmp_path), tag=f"{name}:abc1234", platform="linux/amd64", rm=True
    )
    built = time.monotonic()
    try:
        assert image.labels["uat-bot.test.marker"] == marker
        digest = _push(client, name, "abc1234")
        pushed = time.monotonic()

        served, media_type, body = fetch_manifest(registry, REPOSITORY, "abc1234")
        assert served == digest
        assert media_type in (DOCKER_V2, OCI_MANIFEST)
        manifest = json.loads(body)
        assert manifest["schemaVersion"] == 2
        assert manifest["config"]["digest"] == image.id  # the image id is its config's digest
        assert len(manifest["layers"]) == 1
        config = json.loads(_get_blob(registry, REPOSITORY, manifest["config"]["digest"]))
        assert config["config"]["Labels"]["uat-bot.test.marker"] == marker
        assert config["architecture"] == "amd64"

        # A second tag by retagging, without a rebuild: same manifest, same digest.
        assert image.tag(name, tag="pr-42")
        assert _push(client, name, "pr-42") == digest
        assert fetch_manifest(registry, REPOSITORY, "pr-42")[0] == digest
        assert fetch_manifest(registry, REPOSITORY, "abc1234")[0] == digest
        print(f"build {built - started:.2f}s, push {pushed - built:.2f}s")
    finally:
        for tag in ("abc1234", "pr-42"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(f"{name}:{tag}", force=True)


def test_require_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> str:
        raise RuntimeError("nope")

    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match=r"CI=true.*broken.*nope"):
        require(broken)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match=r"broken unavailable.*nope"):
        require(broken)
