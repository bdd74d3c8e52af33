"""Slack over Socket Mode: the Bolt app fed by a websocket instead of /slack/events.

slack_sdk's aiohttp client speaks the protocol (apps.connections.open, `hello`, acks by
`envelope_id`, `disconnect` -> a new connection, a dead connection found by ping and replaced).
On top of it this module:

- dedupes envelopes: Slack sends an envelope again when its ack did not arrive (a connection
  dropped between the work and the ack), so each `envelope_id` (and each Events API `event_id`)
  is handled once; a repeat gets the first ack again, and no second run;
- backs off when Slack cannot be reached for a new connection (1 s, doubling, at most 30 s);
- asks `apps.connections.open` for a new link when one fails to open: slack_sdk would try the
  same link again every ping interval, and Slack's links are temporary, one connection each;
- tells /healthz whether the websocket is connected or since when it has been reconnecting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import aiohttp
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

PING_INTERVAL_S = 5.0  # a dead connection is noticed within about this long
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
REMEMBERED = 10_000  # envelope and event ids kept for dedupe (Slack retries within minutes)


class _Links:
    """The session slack_sdk opens its websockets with: a link that fails to open is forgotten,
    so the next attempt asks Slack for a new one instead of trying the spent one again."""

    def __init__(self, client: SocketModeClient, session: aiohttp.ClientSession) -> None:
        self._client = client
        self._session = session

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def close(self) -> None:
        await self._session.close()

    async def ws_connect(self, url: str, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
        try:
            websocket: aiohttp.ClientWebSocketResponse = await self._session.ws_connect(
                url, **kwargs
            )
        except Exception:
            self._client.wss_uri = None
            raise
        return websocket


class _Client(SocketModeClient):
    """slack_sdk's client, with a backoff between failed attempts to open a connection, and a
    new link after one failed to open."""

    def __init__(self, link: SocketMode, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.link = link
        self.failures = 0
        self.aiohttp_client_session = _Links(self, self.aiohttp_client_session)  # type: ignore[assignment]

    async def connect(self) -> None:
        self.link.went_down()
        await super().connect()  # type: ignore[no-untyped-call]

    async def issue_new_wss_url(self) -> str:
        try:
            url: str = await super().issue_new_wss_url()
        except Exception as exc:
            self.failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1))
            delay *= 0.5 + random.random() / 2
            logger.warning(
                "Socket Mode: no new connection from Slack (%s); trying again in %.1fs",
                type(exc).__name__,
                delay,
            )
            await self.link.sleep(delay)
            raise
        self.failures = 0
        return url


class SocketMode:
    """The Bolt app served over one Socket Mode connection (replaced as Slack asks)."""

    def __init__(
        self,
        bolt: AsyncApp,
        app_token: str,
        web_client: AsyncWebClient,
        tasks: TaskSupervisor,
        *,
        ping_interval: float | None = None,
    ) -> None:
        self._bolt = bolt
        self._tasks = tasks
        self._acks: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._down_since: float | None = time.time()
        self.client = _Client(
            self,
            app_token=app_token,
            web_client=web_client,
            ping_interval=PING_INTERVAL_S if ping_interval is None else ping_interval,
            logger=logger,
        )
        self.client.socket_mode_request_listeners.append(self._handle)

    async def connect(self) -> None:
        await self.client.connect()
        logger.info("connected to Slack over Socket Mode")

    async def close(self) -> None:
        await self.client.close()  # type: ignore[no-untyped-call]

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def went_down(self) -> None:
        if self._down_since is None:
            self._down_since = time.time()
            logger.info("Socket Mode: reconnecting to Slack")

    def problem(self) -> str | None:
        """None while the websocket is open; else since when it has been reconnecting."""
        session = self.client.current_session
        if session is not None and not session.closed and not self.client.stale:
            self._down_since = None
            return None
        self.went_down()
        since = datetime.fromtimestamp(self._down_since or time.time(), UTC)
        return f"Socket Mode reconnecting since {since.isoformat(timespec='seconds')}"

    async def _handle(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        keys = [req.envelope_id]
        event_id = req.payload.get("event_id") if req.type == "events_api" else None
        if isinstance(event_id, str):
            keys.append(f"event:{event_id}")
        seen = next((k for k in keys if k in self._acks), None)
        if seen is not None:  # Slack sent it again: its ack was lost; the work is done or under way
            first = self._acks[seen]
            if first is not None:
                await client.send_socket_mode_response({**first, "envelope_id": req.envelope_id})
            logger.info("Socket Mode: envelope %s again, not handled twice", req.envelope_id)
            return
        for key in keys:
            self._remember(key, None)
        with self._tasks.answering():  # work after earlier acks waits for this one
            response = await run_async_bolt_app(self._bolt, req)
        ack: dict[str, Any] = {"envelope_id": req.envelope_id}
        if response.status == 200 and response.body:
            content_type = (response.headers.get("content-type") or [""])[0]
            if content_type.startswith("application/json"):
                ack["payload"] = json.loads(response.body)
            else:
                ack["payload"] = {"text": response.body}
        elif response.status != 200:
            logger.error("Socket Mode: Bolt answered %d to a %s", response.status, req.type)
        for key in keys:
            self._remember(key, ack)
        await client.send_socket_mode_response(ack)

    def _remember(self, key: str, ack: dict[str, Any] | None) -> None:
        self._acks[key] = ack
        self._acks.move_to_end(key)
        while len(self._acks) > REMEMBERED:
            self._acks.popitem(last=False)
