"""Thin typed gateways over boto3: small dataclasses out, domain errors out.

boto3 is blocking, so each call runs in a thread; `ClientError` and friends never leave this
module: they become `AwsError`, whose message says what to check.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from bot.config import Settings
from bot.errors import UserError

logger = logging.getLogger(__name__)

T = TypeVar("T")

SHA_TAG = re.compile(r"^[0-9a-f]{7,40}$")

RETRIES = Config(
    retries={"max_attempts": 6, "mode": "adaptive"}, connect_timeout=5, read_timeout=30
)

HINTS = {
    "RepositoryNotFoundException": "check UAT_ECR_REPOSITORY names an ECR repository in AWS_REGION",
    "ImageNotFoundException": "that image is not in the repository",
    "AccessDeniedException": "the bot's IAM role lacks this permission (see docs/iam)",
    "UnrecognizedClientException": "the AWS credentials are invalid",
    "ExpiredTokenException": "the AWS credentials have expired",
    "ThrottlingException": "AWS is throttling requests; try again in a minute",
}


class AwsError(UserError):
    """An AWS call failed; the message names the call and what to check."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ImageInfo:
    """One image in the repository."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime | None
    size_bytes: int = 0

    @property
    def sha_tags(self) -> tuple[str, ...]:
        return tuple(t for t in self.tags if SHA_TAG.match(t))

    @property
    def short_digest(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class Manifest:
    """An image manifest as ECR stores it: promote and rollback copy these, nothing else."""

    digest: str
    media_type: str
    body: str


@dataclass(frozen=True)
class RegistryAuth:
    """Where to push, and the credentials docker needs for it."""

    registry: str
    username: str
    password: str


def boto3_session(settings: Settings) -> boto3.session.Session:
    return boto3.session.Session(region_name=settings.aws_region)


async def _call(what: str, fn: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(fn)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        hint = HINTS.get(code, str(error.get("Message", "")) or "see the bot's log")
        raise AwsError(f"AWS {what} failed ({code}): {hint}.", code) from None
    except NoCredentialsError:
        raise AwsError(
            f"AWS {what} failed: no AWS credentials. Give the bot a role, or set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
            "NoCredentials",
        ) from None
    except NoRegionError:
        raise AwsError(f"AWS {what} failed: set AWS_REGION.", "NoRegion") from None
    except EndpointConnectionError as exc:
        raise AwsError(
            f"AWS {what} failed: cannot reach {exc.kwargs.get('endpoint_url', 'AWS')}; "
            "check the network and AWS_ENDPOINT_URL.",
            "EndpointConnection",
        ) from None
    except BotoCoreError as exc:
        raise AwsError(f"AWS {what} failed: {exc}.", type(exc).__name__) from None


def _image(detail: Any) -> ImageInfo:
    return ImageInfo(
        digest=detail["imageDigest"],
        tags=tuple(detail.get("imageTags", ())),
        pushed_at=detail.get("imagePushedAt"),
        size_bytes=int(detail.get("imageSizeInBytes", 0)),
    )


class Ecr:
    """The image repository (`UAT_ECR_REPOSITORY`) through ECR's API."""

    def __init__(self, settings: Settings, session: boto3.session.Session | None = None) -> None:
        self._settings = settings
        self._session = session
        self._ecr: Any = None
        self.repository = settings.uat_ecr_repository
        self.calls: dict[str, int] = {}

    @property
    def _client(self) -> Any:
        """Made on first use (inside `_call`), so a missing region is a clear AwsError."""
        if self._ecr is None:
            session = self._session or boto3_session(self._settings)
            self._ecr = session.client(
                "ecr", endpoint_url=self._settings.aws_endpoint_url, config=RETRIES
            )
        return self._ecr

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def describe(self, tag: str) -> ImageInfo | None:
        """The image a tag points at, or None when no image has that tag."""

        def run() -> ImageInfo | None:
            self._count("DescribeImages")
            try:
                response = self._client.describe_images(
                    repositoryName=self.repository, imageIds=[{"imageTag": tag}]
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ImageNotFoundException":
                    return None
                raise
            details = response.get("imageDetails", [])
            return _image(details[0]) if details else None

        return await _call("DescribeImages", run)

    async def images(self) -> list[ImageInfo]:
        """Every image in the repository, newest push first."""

        def run() -> list[ImageInfo]:
            found: list[ImageInfo] = []
            paginator = self._client.get_paginator("describe_images")
            for page in paginator.paginate(repositoryName=self.repository):
                self._count("DescribeImages")
                found += [_image(d) for d in page.get("imageDetails", [])]
            return sorted(found, key=lambda i: i.pushed_at or datetime.min, reverse=True)

        return await _call("DescribeImages", run)

    async def manifest(self, *, tag: str | None = None, digest: str | None = None) -> Manifest:
        """The manifest behind a tag or digest (BatchGetImage)."""
        image_id = {"imageTag": tag} if tag else {"imageDigest": digest or ""}

        def run() -> Manifest:
            self._count("BatchGetImage")
            response = self._client.batch_get_image(
                repositoryName=self.repository,
                imageIds=[image_id],
                acceptedMediaTypes=[
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                ],
            )
            images = response.get("images", [])
            if not images:
                raise AwsError(f"There is no image {tag or digest} in {self.repository}.")
            image = images[0]
            return Manifest(
                digest=image["imageId"]["imageDigest"],
                media_type=image.get("imageManifestMediaType", ""),
                body=image["imageManifest"],
            )

        return await _call("BatchGetImage", run)

    async def put_tag(self, manifest: Manifest, tag: str) -> None:
        """Point `tag` at `manifest` (PutImage): no pull, no layers moved."""

        def run() -> None:
            self._count("PutImage")
            kwargs: dict[str, Any] = {
                "repositoryName": self.repository,
                "imageManifest": manifest.body,
                "imageTag": tag,
                "imageDigest": manifest.digest,
            }
            if manifest.media_type:
                kwargs["imageManifestMediaType"] = manifest.media_type
            try:
                self._client.put_image(**kwargs)
            except ClientError as exc:
                # The tag already points at exactly this manifest: nothing to change.
                if exc.response.get("Error", {}).get("Code") != "ImageAlreadyExistsException":
                    raise

        await _call("PutImage", run)

    async def authorization(self) -> RegistryAuth:
        """The registry ECR names, and a docker login for it (GetAuthorizationToken)."""

        def run() -> RegistryAuth:
            self._count("GetAuthorizationToken")
            data = self._client.get_authorization_token()["authorizationData"][0]
            user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
            registry = data["proxyEndpoint"].removeprefix("https://").removeprefix("http://")
            return RegistryAuth(registry=registry, username=user, password=password)

        return await _call("GetAuthorizationToken", run)
