"""Socket Mode as Slack serves it: `apps.connections.open` and the websocket it points to.

Protocol (https://api.slack.com/apis/socket-mode, https://api.slack.com/methods/apps.connections.open):

- `apps.connections.open` takes only an app-level token (`xapp-…`, scope `connections:write`);
  a bot or user token is answered `not_allowed_token_type`, an unknown one `invalid_auth`. It
  answers `{"ok": true, "url": "wss://…/link/?ticket=…&app_id=…"}` (here ws:// on 127.0.0.1):
  "a temporary Socket Mode WebSocket URL", whose ticket opens one connection; a ticket used
  before is refused (401), so every connection needs a new call.
- On connect Slack sends `{"type": "hello", …}`; then envelopes `{"envelope_id", "type":
  "slash_commands" | "interactive" | "events_api", "payload", "accepts_response_payload",
  "retry_attempt", "retry_reason"}`. The app acks each with `{"envelope_id": …}` (plus
  `"payload"` where `accepts_response_payload` is true) within 3 seconds.
- Slack asks the app to reconnect with `{"type": "disconnect", "reason": "warning" |
  "refresh_requested"}`; envelopes not acked are sent again, with `retry_attempt` raised, on the
  app's next connection.

Tests call :meth:`SocketModeMethods.send_envelope`, :meth:`SocketModeMethods.ack_of`,
:meth:`SocketModeMethods.ask_to_reconnect` and :meth:`SocketModeMethods.drop_connections`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.harness.slack_stub.server import APP_ID, Handler, StubServer
from tests.harness.slack_stub.validation import SlackError

APP_TOKEN = "xapp-1-A0001-1-0123456789abcdef"
ACK_DEADLINE_S = 3.0  # https://api.slack.com/apis/socket-mode#acknowledge
CONNECTIONS_OPEN = "apps.connections.open"
ENVELOPE_TYPES = ("slash_commands", "interactive", "events_api")


@dataclass
class Envelope:
    """One envelope Slack sent (or will send) the app, and the ack it got."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    sent_at: float = 0.0
    deliveries: int = 0
    acked: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def frame(self) -> str:
        return json.dumps(
            {
                "envelope_id": self.envelope_id,
                "type": self.type,
                "payload": self.payload,
                "accepts_response_payload": self.accepts_response_payload,
                "retry_attempt": max(self.deliveries - 1, 0),
                "retry_reason": "timeout" if self.deliveries > 1 else "",
            }
        )


class SocketModeMethods(StubServer):
    """apps.connections.open and the Socket Mode websocket it issues tickets for."""

    app_token = APP_TOKEN

    def __init__(self, token: str = "xoxb-test-token") -> None:
        super().__init__(token)
        self.envelopes: dict[str, Envelope] = {}
        self.socket_connections: list[web.WebSocketResponse] = []
        self.hellos = 0  # connections Slack greeted
        self.late_acks: list[str] = []  # envelope ids acked after ACK_DEADLINE_S
        self._tickets: set[str] = set()
        self._refused_links = 0

    # --- what tests do as Slack ---------------------------------------------------------------

    async def send_envelope(
        self, type: str, payload: dict[str, Any], *, accepts_response_payload: bool = False
    ) -> str:
        """Send an envelope on the newest connection (or on the next one, when none is open);
        its envelope id."""
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"Slack sends no {type!r} envelopes")
        envelope = Envelope(
            f"E{next(self._id_counter):08d}-socket", type, payload, accepts_response_payload
        )
        self.envelopes[envelope.envelope_id] = envelope
        live = self._live()
        if live is not None:
            await self._deliver(live, envelope)
        return envelope.envelope_id

    async def ack_of(self, envelope_id: str, timeout: float = ACK_DEADLINE_S) -> dict[str, Any]:  # noqa: ASYNC109
        """The app's ack of an envelope (`{"envelope_id": …, "payload"?: …}`); AssertionError
        when it does not come within Slack's 3 seconds (or ``timeout``)."""
        envelope = self.envelopes[envelope_id]
        try:
            return await asyncio.wait_for(asyncio.shield(envelope.acked), timeout)
        except TimeoutError:
            raise AssertionError(f"envelope {envelope_id} not acked within {timeout}s") from None

    async def ask_to_reconnect(self, reason: str = "refresh_requested") -> None:
        """Send `disconnect` on every open connection, as Slack does before it refreshes one
        (``refresh_requested``) or a few seconds ahead of it (``warning``)."""
        if reason not in ("refresh_requested", "warning"):
            raise ValueError(f"Slack sends no disconnect reason {reason!r}")
        frame = json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-stub"}}
        )
        for ws in list(self.socket_connections):
            if not ws.closed:
                await ws.send_str(frame)

    def refuse_links(self, times: int = 1) -> None:
        """The next `times` websocket handshakes fail (503), spending their tickets, as when
        Slack's link host has an outage."""
        self._refused_links += times

    def drop_connections(self) -> None:
        """Cut every open connection's TCP stream without a close frame (a network failure)."""
        for ws in self.socket_connections:
            transport = ws._req.transport if ws._req is not None else None
            if transport is not None:
                transport.abort()

    @property
    def unacked(self) -> list[str]:
        return [e.envelope_id for e in self.envelopes.values() if not e.acked.done()]

    def connected(self) -> bool:
        return self._live() is not None

    async def stop(self) -> None:
        for ws in list(self.socket_connections):  # a server shutting down closes its sockets
            if not ws.closed:
                await ws.close()
        await super().stop()

    # --- Slack's side ------------------------------------------------------------------------

    def _live(self) -> web.WebSocketResponse | None:
        open_ = [ws for ws in self.socket_connections if not ws.closed]
        return open_[-1] if open_ else None

    async def _deliver(self, ws: web.WebSocketResponse, envelope: Envelope) -> None:
        envelope.deliveries += 1
        envelope.sent_at = time.monotonic()
        with contextlib.suppress(ConnectionError):  # not delivered: sent on the next connection
            await ws.send_str(envelope.frame())

    def _check_auth(self, request: web.Request, params: dict[str, Any]) -> None:
        if request.match_info.get("method") != CONNECTIONS_OPEN:
            super()._check_auth(request, params)
            return
        auth = request.headers.get("Authorization", "")
        token = auth[len("bearer ") :].strip() if auth.lower().startswith("bearer ") else ""
        token = token or str(params.get("token") or "")
        if not token:
            raise SlackError("not_authed")
        if not token.startswith("xapp-"):
            raise SlackError("not_allowed_token_type")
        if token != self.app_token:
            raise SlackError("invalid_auth")

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = f"T{next(self._id_counter):08d}"
        self._tickets.add(ticket)
        url = f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={APP_ID}"
        return {"ok": True, "url": url}

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)  # one connection per ticket
        if self._refused_links > 0:
            self._refused_links -= 1
            return web.Response(status=503, text="link unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.socket_connections.append(ws)
        self.hellos += 1
        hello = {
            "type": "hello",
            "num_connections": len([w for w in self.socket_connections if not w.closed]),
            "debug_info": {"host": "applink-stub", "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        }
        await ws.send_str(json.dumps(hello))
        for envelope in list(self.envelopes.values()):  # unacked ones again, oldest first
            if not envelope.acked.done():
                await self._deliver(ws, envelope)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self._take_ack(message.data)
        return ws

    def _take_ack(self, data: str) -> None:
        try:
            ack = json.loads(data)
        except ValueError:
            return
        envelope = self.envelopes.get(ack.get("envelope_id")) if isinstance(ack, dict) else None
        if envelope is None or envelope.acked.done():
            return
        if time.monotonic() - envelope.sent_at > ACK_DEADLINE_S:
            self.late_acks.append(envelope.envelope_id)
        envelope.acked.set_result(ack)

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_get("/link/", self._link)

    def _handlers(self) -> dict[str, Handler]:
        return {**super()._handlers(), CONNECTIONS_OPEN: self._connections_open}
