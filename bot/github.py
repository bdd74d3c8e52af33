"""GitHub webhooks: signature verification, delivery dedupe, `pull_request` events made typed.

The HTTP handler answers GitHub; what a pull_request event means for environments is the
business of the handler the composition root passes in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.errors import UserError
from bot.guard import BODY, Rejections
from bot.logs import outside
from bot.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullRequestEvent:
    """The parts of a `pull_request` delivery the bot acts on."""

    delivery_id: str
    action: str
    repo: str
    number: int
    title: str
    url: str
    author: str
    sender: str
    branch: str
    head_sha: str
    clone_url: str
    state: str
    merged: bool
    labels: tuple[str, ...]
    label: str | None = None  # the label added or removed, for labeled / unlabeled


PullRequestHandler = Callable[[PullRequestEvent], Awaitable[None]]


class BadPayload(ValueError):
    """A delivery we cannot act on; the message says what is missing."""


def signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of `X-Hub-Signature-256`."""
    if not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode())


def _get(payload: Any, *path: str) -> Any:
    value = payload
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise BadPayload(f"missing {'.'.join(path)}")
        value = value[key]
    return value


def _str(payload: Any, *path: str) -> str:
    value = _get(payload, *path)
    if not isinstance(value, str):
        raise BadPayload(f"{'.'.join(path)} must be a string")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadPayload(f"{'.'.join(path)} is not valid UTF-8") from None
    return value


def parse_pull_request(payload: Any, delivery_id: str) -> PullRequestEvent:
    """Build the typed event from a `pull_request` payload, or raise BadPayload."""
    number = _get(payload, "pull_request", "number")
    if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 2**31:
        raise BadPayload("pull_request.number must be a positive integer")
    labels = _get(payload, "pull_request", "labels")
    if not isinstance(labels, list):
        raise BadPayload("pull_request.labels must be a list")
    label_name: str | None = None
    if isinstance(payload.get("label"), dict):
        label_name = _str(payload, "label", "name")
    return PullRequestEvent(
        delivery_id=delivery_id,
        action=_str(payload, "action"),
        repo=_str(payload, "repository", "full_name"),
        number=number,
        title=_str(payload, "pull_request", "title"),
        url=_str(payload, "pull_request", "html_url"),
        author=_str(payload, "pull_request", "user", "login"),
        sender=_str(payload, "sender", "login"),
        branch=_str(payload, "pull_request", "head", "ref"),
        head_sha=_str(payload, "pull_request", "head", "sha"),
        clone_url=_str(payload, "repository", "clone_url"),
        state=_str(payload, "pull_request", "state"),
        merged=bool(payload["pull_request"].get("merged")),
        labels=tuple(
            str(item["name"]) for item in labels if isinstance(item, dict) and "name" in item
        ),
        label=label_name,
    )


def _answer(status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=status)


class WebhookEndpoint:
    """`POST /github/webhook`: verify, dedupe, parse, hand over; answer GitHub quickly."""

    def __init__(
        self,
        secret: str | None,
        store: Store,
        on_pull_request: PullRequestHandler,
        repositories: Collection[str] = (),
        count: Callable[[str, str], None] | None = None,
        rejections: Rejections | None = None,
    ) -> None:
        self.rejections = rejections
        self.count = count
        self.secret = secret
        self.store = store
        self.on_pull_request = on_pull_request
        self.repositories = {r.lower() for r in repositories}

    async def handle(self, request: web.Request) -> web.Response:
        response, result = await self._handle(request)
        if self.count is not None:
            event = request.headers.get("X-GitHub-Event", "")
            known = event if event in ("ping", "pull_request") else "other"
            self.count(known, result)
        return response

    async def _handle(self, request: web.Request) -> tuple[web.Response, str]:
        if not self.secret:
            return _answer(503, error="GITHUB_WEBHOOK_SECRET is not set on the bot"), "unconfigured"
        body = request[BODY]  # read within its limit by bot.guard
        signatures = request.headers.getall("X-Hub-Signature-256", [])
        if len(signatures) != 1 or not verify_signature(self.secret, body, signatures[0]):
            error = "bad or missing X-Hub-Signature-256"
            if self.rejections is None:
                return _answer(401, error=error), "bad_signature"
            refused = self.rejections.refuse("/github/webhook", "bad_signature", 401, error)
            return refused, "bad_signature"
        event = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 4300+ digits
            return _answer(400, error=f"body is not JSON: {exc}"), "bad_json"
        if not isinstance(payload, dict):
            return _answer(400, error="body must be a JSON object"), "bad_json"
        if event == "ping":
            return _answer(200, ok=True, zen=payload.get("zen", "")), "ok"
        if event != "pull_request":
            return _answer(202, ignored=f"event {event or '(none)'} is not handled"), "ignored"
        if not delivery:
            return _answer(400, error="missing X-GitHub-Delivery"), "bad_payload"
        try:
            parsed = parse_pull_request(payload, delivery)
        except BadPayload as exc:
            return _answer(400, error=f"pull_request payload: {exc}"), "bad_payload"
        if self.repositories and parsed.repo.lower() not in self.repositories:
            return _answer(202, ignored=f"repository {parsed.repo} is not handled"), "ignored"
        # A delivery counts as handled once its effect is recorded: the handler is idempotent
        # (every state change is a compare-and-set), so a delivery cut short by a crash, or
        # the same one arriving twice at once, is simply handled again.
        if await self.store.claimed(f"done:{delivery}"):
            logger.info("delivery %s was already handled", outside(delivery))
            return _answer(200, duplicate=True), "duplicate"
        try:
            await self.on_pull_request(parsed)
        except UserError as exc:
            logger.warning("delivery %s not handled: %s", outside(delivery), outside(exc))
            return _answer(503, error=str(exc)), "refused"
        except Exception:
            logger.exception("handling delivery %s failed", outside(delivery))
            return _answer(500, error="handling failed; GitHub may redeliver"), "error"
        await self.store.claim(f"done:{delivery}", event)
        return _answer(202, accepted=delivery), "accepted"
