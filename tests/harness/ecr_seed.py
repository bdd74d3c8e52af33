"""Seed moto's ECR with realistic UAT images: one per git sha, plus :staging and :latest.

Each image is a docker v2 manifest (a config and one layer, with distinct fake digests), pushed
by the console's own `put_image` (bot.devtools.local), which passes `imageDigest` = sha256 of the
manifest bytes, as a registry computes it: without it moto derives the digest from the layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from bot.devtools.local import put_image, space_out_pushes

REPOSITORY = "test-tickets-uat"


def fresh_repository(ecr: Any, repository: str = REPOSITORY) -> None:
    """An empty repository (moto's backends outlive one server, so drop any earlier one)."""
    with contextlib.suppress(ecr.exceptions.RepositoryNotFoundException):
        ecr.delete_repository(repositoryName=repository, force=True)
    ecr.create_repository(repositoryName=repository)


def tag_sha(ecr: Any, sha: str, tag: str, repository: str = REPOSITORY) -> str:
    """Move `tag` (staging, latest) onto the image of `sha`, as `docker push` would."""
    return put_image(ecr, repository, sha, tag)


def digest_at(ecr: Any, tag: str, repository: str = REPOSITORY) -> str | None:
    """The digest `tag` points at in moto, or None."""
    try:
        response = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ecr.exceptions.ImageNotFoundException:
        return None
    details = response["imageDetails"]
    return str(details[0]["imageDigest"]) if details else None


def seed(
    ecr: Any,
    shas: Sequence[str],
    *,
    staging: str | None = None,
    latest: str | None = None,
    repository: str = REPOSITORY,
) -> dict[str, str]:
    """A fresh repository with one image per sha (oldest first), then :staging and :latest.

    Returns {sha: digest}. Images are tagged with the sha's first 7 characters.
    """
    fresh_repository(ecr, repository)
    digests = {sha: tag_sha(ecr, sha, sha[:7], repository) for sha in shas}
    space_out_pushes(ecr, repository, [digests[sha] for sha in shas])
    if staging is not None:
        tag_sha(ecr, staging, "staging", repository)
    if latest is not None:
        tag_sha(ecr, latest, "latest", repository)
    return digests
