"""The life of the UAT image: build to :staging or :latest, promote, roll back, undo, freeze.

One code path for Slack and the terminal. Every operation takes the `images` lock in the store
(one at a time, across replicas; it expires if the bot dies) and writes one audit entry,
refusals and failures included. A build makes `:<sha>` (with either builder, see
bot/images/builders.py; skipped when that image exists) and then moves `:staging` / `:latest` by
copying its manifest, as promote and rollback do (BatchGetImage + PutImage): no pull, no rebuild.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

from bot.aws.gateways import SHA_TAG, Ecr, ImageInfo, Manifest
from bot.config import Settings
from bot.errors import UserError
from bot.images.builders import Builder, BuildProgress, ImageTags
from bot.images.docker_build import BuildError, Commit, fetched
from bot.slack import slack_ui
from bot.store import AuditEntry, Lock, LockHeld, Store

logger = logging.getLogger(__name__)

LOCK = "images"
LOCK_TTL_S = 45 * 60
FREEZE_TTL_S = 30 * 24 * 3600
FREEZE_PREFIX = "freeze:"
SHA = re.compile(r"^[0-9a-f]{7,40}$")

Started = Callable[[], Awaitable[None]]
"""Called once an operation holds the lock, before it changes anything (to show progress)."""


class Recorded(UserError):
    """A refusal or failure already written to the audit trail (not to be written twice)."""


@dataclass(frozen=True)
class BuildResult:
    commit: Commit
    digest: str
    tags: list[str]
    seconds: float
    previous_digest: str | None = None
    rebuilt: bool = True  # False: `:<sha>` was already there, only the tag moved


@dataclass(frozen=True)
class RetagResult:
    """`:latest` moved (or not) from `previous` to `current`."""

    action: str
    previous: ImageInfo | None
    current: Manifest
    changed: bool
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Overview:
    latest: ImageInfo | None
    staging: ImageInfo | None
    recent: list[ImageInfo] = field(default_factory=list)


class ImagePipeline:
    """The image operations; the caller says who is acting."""

    def __init__(
        self, settings: Settings, store: Store, ecr: Ecr, builder: Builder, tags: ImageTags
    ) -> None:
        self.settings = settings
        self.store = store
        self.ecr = ecr
        self.builder = builder
        self.tags = tags

    @property
    def tags_in_ecr(self) -> bool:
        """Whether ECR holds the tags builds make: yes, unless they go to UAT_REGISTRY alone."""
        return self.tags.in_ecr

    # locking and audit

    async def check_unlocked(self, actor: str, action: str) -> None:
        """Refuse `action` at once while the lock is held (frozen, or another operation runs),
        before any card, prompt or progress is shown; the refusal is audited."""
        lock = await self.store.get_lock(LOCK)
        if lock is not None:
            await self._refuse_locked(actor, action, lock)

    async def _refuse_locked(self, actor: str, action: str, lock: Lock) -> NoReturn:
        await self._audit(actor, action, "refused", slack_ui.lock_refusal(lock))
        raise Recorded(slack_ui.lock_held(lock))

    @asynccontextmanager
    async def _exclusive(
        self, actor: str, action: str, reason: str, started: Started | None = None
    ) -> AsyncIterator[None]:
        """Hold the lock (its reason is what others are told is running) for the block."""
        try:
            await self.store.acquire_lock(LOCK, actor, reason, LOCK_TTL_S)
        except LockHeld as held:
            await self._refuse_locked(actor, action, held.lock)
        try:
            if started is not None:
                await started()
            yield
        finally:
            await self.store.release_lock(LOCK, actor)

    @asynccontextmanager
    async def _recorded(self, actor: str, action: str) -> AsyncIterator[None]:
        """Write any failure of the block to the audit trail, with its reason."""
        try:
            yield
        except Recorded:
            raise
        except UserError as exc:
            await self._audit(actor, action, "failed", str(exc))
            raise
        except Exception as exc:
            await self._audit(actor, action, "failed", f"unexpected {type(exc).__name__}")
            raise

    async def _audit(
        self,
        actor: str,
        action: str,
        result: str,
        detail: str = "",
        from_digest: str | None = None,
        to_digest: str | None = None,
    ) -> None:
        """Record what was done; `detail` is mrkdwn (`/uat history` shows it as it is), so any
        outside text in it is escaped by the caller."""
        await self.store.append_audit(
            AuditEntry(actor, action, result, detail[:500], from_digest, to_digest)
        )

    async def freeze(self, actor: str, reason: str) -> None:
        try:
            await self.store.acquire_lock(LOCK, FREEZE_PREFIX + actor, reason, FREEZE_TTL_S)
        except LockHeld as held:
            await self._refuse_locked(actor, "lock", held.lock)
        await self._audit(actor, "lock", "ok", slack_ui.mrkdwn(reason))

    async def unfreeze(self, actor: str) -> None:
        lock = await self.store.get_lock(LOCK)
        if lock is None or not lock.holder.startswith(FREEZE_PREFIX):
            await self._audit(actor, "unlock", "refused", "not frozen")
            raise Recorded(slack_ui.NOT_FROZEN if lock is None else slack_ui.lock_held(lock))
        await self.store.release_lock(LOCK, lock.holder)
        await self._audit(actor, "unlock", "ok", f"was: {slack_ui.mrkdwn(lock.reason)}")

    # building

    async def build(
        self, actor: str, ref: str | None, target: str, progress: BuildProgress
    ) -> BuildResult:
        """Build `ref` from UAT_SOURCE_REPO as `:<short-sha>` (unless that image exists), then
        point `:<target>` at it by manifest copy."""
        ref = ref or self.settings.uat_source_ref
        action = f"build :{target} from {ref}"
        async with self._recorded(actor, action):
            if not self.settings.uat_source_repo:
                raise UserError(slack_ui.NO_SOURCE_REPO)
            await self.builder.ready()
            async with self._exclusive(actor, action, action):
                previous = None
                if target == "latest" and self.tags_in_ecr:
                    previous = await self.ecr.describe("latest")
                result = await self._build(ref, target, progress)
        prev_digest = previous.digest if previous else None
        detail = slack_ui.mrkdwn(result.commit.subject) + (
            "" if result.rebuilt else " (not rebuilt)"
        )
        await self._audit(
            actor,
            f"build :{target} {result.commit.short}",
            "ok",
            detail,
            prev_digest,
            result.digest,
        )
        return BuildResult(
            result.commit,
            result.digest,
            result.tags,
            result.seconds,
            prev_digest,
            result.rebuilt,
        )

    async def _build(self, ref: str, target: str, progress: BuildProgress) -> BuildResult:
        source = self.settings.uat_source_repo or ""
        progress.set_step(f"fetching {ref}")
        async with fetched(source, ref) as (commit, tree):
            progress.title = f"{commit.short} for :{target}"
            rebuilt = await self.tags.digest(commit.short) is None
            if rebuilt:
                await self.builder.build(commit, tree, progress, target)
                if await self.tags.digest(commit.short) is None:
                    raise BuildError(slack_ui.built_image_missing(commit.short, self.tags.where))
            else:
                progress.set_step(f":{commit.short} is already built")
        progress.set_step(f"moving :{target} to :{commit.short}")
        digest = await self.tags.copy(commit.short, target)
        _, _, seconds = progress.snapshot()
        return BuildResult(commit, digest, [commit.short, target], seconds, rebuilt=rebuilt)

    # re-tagging :latest

    async def promote_plan(self, actor: str) -> Overview:
        """What a promote would change; a failure (no :staging, AWS) is audited."""
        async with self._recorded(actor, "promote"):
            staging = await self.ecr.describe("staging")
            if staging is None:
                raise UserError(slack_ui.NO_STAGING)
            return Overview(latest=await self.ecr.describe("latest"), staging=staging)

    async def promote(
        self, actor: str, expected_digest: str | None = None, started: Started | None = None
    ) -> RetagResult:
        reason = "promote :staging to :latest"
        async with (
            self._recorded(actor, "promote"),
            self._exclusive(actor, "promote", reason, started),
        ):
            manifest = await self.ecr.manifest(tag="staging")
            if expected_digest and manifest.digest != expected_digest:
                await self._audit(actor, "promote", "refused", "staging changed since the card")
                raise Recorded(slack_ui.STAGING_MOVED)
            return await self._retag(actor, "promote", manifest)

    async def rollback_choices(self, actor: str) -> Overview:
        """The recent sha images to roll back to; a failure to list them is audited."""
        async with self._recorded(actor, "rollback"):
            return await self.overview(recent=10)

    async def rollback_plan(self, actor: str, sha: str) -> tuple[ImageInfo, ImageInfo | None]:
        """The image tagged `sha` and what :latest is now; a bad or unknown sha is audited."""
        async with self._recorded(actor, f"rollback to {sha}"):
            return await self.find_sha(sha), await self.ecr.describe("latest")

    async def rollback(self, actor: str, sha: str, started: Started | None = None) -> RetagResult:
        action = f"rollback to {sha}"
        async with self._recorded(actor, action):
            image = await self.find_sha(sha)
            async with self._exclusive(actor, action, f"roll back :latest to {sha}", started):
                manifest = await self.ecr.manifest(digest=image.digest)
                return await self._retag(actor, action, manifest)

    async def undo(
        self, actor: str, digest: str, expected_latest: str | None = None
    ) -> RetagResult:
        """Put :latest back to `digest`, unless it moved on since the Undo was offered."""
        reason = "undo the last change of :latest"
        async with self._recorded(actor, "undo"), self._exclusive(actor, "undo", reason):
            if expected_latest:
                now = await self.ecr.describe("latest")
                if now is None or now.digest != expected_latest:
                    await self._audit(
                        actor,
                        "undo",
                        "refused",
                        ":latest changed since",
                        now.digest if now else None,
                        digest,
                    )
                    raise Recorded(slack_ui.LATEST_MOVED)
            manifest = await self.ecr.manifest(digest=digest)
            return await self._retag(actor, "undo", manifest)

    async def _retag(self, actor: str, action: str, manifest: Manifest) -> RetagResult:
        before = await self.ecr.describe("latest")
        if before is not None and before.digest == manifest.digest:
            await self._audit(actor, action, "unchanged", "", before.digest, manifest.digest)
            return RetagResult(action, before, manifest, changed=False, tags=before.tags)
        try:
            await self.ecr.put_tag(manifest, "latest")
            after = await self.ecr.describe("latest")
            if after is None or after.digest != manifest.digest:
                raise UserError(slack_ui.retag_not_applied(manifest.digest, after))
        except UserError as exc:
            await self._audit(
                actor,
                action,
                "failed",
                str(exc),
                before.digest if before else None,
                manifest.digest,
            )
            raise Recorded(str(exc)) from exc
        await self._audit(
            actor, action, "ok", "", before.digest if before else None, manifest.digest
        )
        return RetagResult(action, before, manifest, changed=True, tags=after.tags)

    # reading

    async def overview(self, recent: int = 10) -> Overview:
        images = await self.ecr.images()
        by_tag = {tag: image for image in images for tag in image.tags}
        shas = [image for image in images if image.sha_tags]
        return Overview(by_tag.get("latest"), by_tag.get("staging"), shas[:recent])

    async def find_sha(self, sha: str) -> ImageInfo:
        """The image tagged `sha` (or whose sha tag it prefixes); suggests the nearest if none."""
        sha = sha.lower()
        if not SHA.match(sha):
            raise UserError(slack_ui.bad_sha(sha))
        images = [image for image in await self.ecr.images() if image.sha_tags]
        for image in images:
            if any(
                tag == sha or tag.startswith(sha) or sha.startswith(tag) for tag in image.sha_tags
            ):
                return image
        tags = [tag for image in images for tag in image.sha_tags]
        nearest = difflib.get_close_matches(sha[:7], tags, n=3, cutoff=0.3) or tags[:3]
        raise UserError(slack_ui.no_such_sha(sha, nearest))


def age(moment: datetime | None) -> str:
    """`3h ago` style age of a timestamp, for cards."""
    if moment is None:
        return "unknown"
    seconds = (datetime.now(UTC) - moment.astimezone(UTC)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


__all__ = ["SHA_TAG", "BuildError", "BuildProgress", "ImagePipeline"]
