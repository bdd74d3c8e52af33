"""Hostile requests are bounded before they are trusted.

The middleware in front of `POST /slack/events` and `POST /github/webhook` refuses a compressed
body (415) and a body over the endpoint's limit (413, from `Content-Length` or while streaming,
never buffering more than the limit), and cuts off a sender that does not deliver its body within
BODY_DEADLINE (408); a connection without a whole request's headers within HEADER_DEADLINE is
closed (server.py sets it as aiohttp's keep-alive timeout). What it read is handed to the
handler under BODY. Every refusal, here and in the handlers' signature checks, is counted in
`uat_rejected_requests_total{endpoint,reason}` and logged as at most one summary line per
SUMMARY_INTERVAL, never line by line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bot.metrics import Metrics

logger = logging.getLogger(__name__)

SLACK_MAX_BODY = 1024 * 1024  # Slack's payloads fit in 1 MiB
GITHUB_MAX_BODY = 25 * 1000 * 1000  # GitHub caps webhook payloads at 25 MB
LIMITS = {"/slack/events": SLACK_MAX_BODY, "/github/webhook": GITHUB_MAX_BODY}
BODY_DEADLINE = 10.0  # seconds a sender has to deliver a whole body
# Seconds a connection may go without a whole request's headers, at its start and between
# requests (aiohttp's keep-alive timer closes it): above an ALB's 60 s idle timeout, so the
# load balancer never reuses a connection the bot has just closed.
HEADER_DEADLINE = 75.0
SUMMARY_INTERVAL = 60.0  # seconds between two summary lines of refused requests

BODY = web.RequestKey("body", bytes)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Rejections:
    """Counts refused requests in /metrics and logs them as one summary line per interval."""

    def __init__(self, metrics: Metrics, interval: float = SUMMARY_INTERVAL) -> None:
        self.metrics = metrics
        self.interval = interval
        self.pending: Counter[tuple[str, str]] = Counter()
        self.last_summary: float | None = None

    def refuse(
        self, endpoint: str, reason: str, status: int, error: str, *, close: bool = False
    ) -> web.Response:
        """Count the refusal, perhaps log the summary, and answer `status` with `error` (closing
        the connection when the rest of the body is not worth reading)."""
        self.metrics.rejected.labels(endpoint=endpoint, reason=reason).inc()
        self.pending[(endpoint, reason)] += 1
        now = time.monotonic()
        if self.last_summary is None or now - self.last_summary >= self.interval:
            self.last_summary = now
            counts = ", ".join(f"{e} {r}: {n}" for (e, r), n in sorted(self.pending.items()))
            self.pending.clear()
            logger.warning("refused requests since the last summary (%s)", counts)
        response = web.json_response({"error": error}, status=status)
        if close:
            response.force_close()
        return response


REJECTIONS = web.AppKey("rejections", Rejections)


async def read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` (what came so far is dropped)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    limit = LIMITS.get(request.path)
    if limit is None or request.method != "POST":
        return await handler(request)
    rejections = request.app[REJECTIONS]
    endpoint = request.path
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return rejections.refuse(endpoint, "encoded", 415, "send the body uncompressed", close=True)
    if request.content_length is not None and request.content_length > limit:
        return rejections.refuse(
            endpoint, "too_large", 413, f"the body is over {limit} bytes", close=True
        )
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            body = await read_bounded(request, limit)
    except TimeoutError:
        return rejections.refuse(endpoint, "too_slow", 408, "the body came too slowly", close=True)
    except (ConnectionError, HttpProcessingError):  # gone mid-body, or a broken chunked body
        return rejections.refuse(endpoint, "broken_body", 400, "the body broke off", close=True)
    if body is None:
        return rejections.refuse(
            endpoint, "too_large", 413, f"the body is over {limit} bytes", close=True
        )
    request[BODY] = body
    return await handler(request)
