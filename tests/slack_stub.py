"""A local stand-in for the Slack Web API that test suites drive through real HTTP.

``SlackStub`` runs an aiohttp server on 127.0.0.1 (ephemeral port) that answers the Web API
methods uat-bot uses the way Slack does: it checks the bearer token, accepts form-encoded and
JSON bodies, validates Block Kit payloads with slack_sdk's own models, keeps the messages it
was sent (so ``chat.update``/threads/permalinks can be checked against them), and records every
call. It also serves ``response_url`` endpoints and can inject rate limits and server errors.

Beyond chat.*/views.*, it serves ``conversations.history``/``conversations.replies`` (newest-first
history without thread replies, threads parent-first, cursor pagination, ``include_all_metadata``),
message ``metadata`` (validated like Slack, stored on the message), the v2 file upload flow that
``files_upload_v2`` uses (``files.getUploadURLExternal``, a raw ``POST /upload/<file_id>`` that
needs no token, ``files.completeUploadExternal``; files land in :attr:`SlackStub.files`), and
OAuth scopes (put a scope in :attr:`SlackStub.missing_scopes` to get ``missing_scope``).

Point a real client at it::

    async with SlackStub() as stub:
        client = AsyncWebClient(token=stub.token, base_url=stub.api_url)
        await client.chat_postMessage(channel="C1", text="hi")
        assert stub.messages["C1"][0]["text"] == "hi"
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

__all__ = ["Call", "Response", "SlackStub", "StubFile", "validate_blocks"]

T = TypeVar("T")

BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "T0001"
TEAM_NAME = "uat-test"
WORKSPACE_URL = f"https://{TEAM_NAME}.slack.com/"
APP_ID = "A0001"

MAX_TEXT_CHARS = 40_000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_ATTACHMENTS = 100
# Fields Slack accepts as a JSON-encoded string inside form/query data.
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata", "files")
RESPONSE_URL_METHOD = "response_url"
# ``stub.fail(UPLOAD_METHOD)`` fails POSTs to upload URLs (``fail(None)`` leaves them alone).
UPLOAD_METHOD = "upload"
HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 999
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
# The bot token's scopes (manifest.yml plus files:write); ``missing_scopes`` removes some.
BOT_SCOPES = ("channels:history", "chat:write", "commands", "files:write", "groups:history")
# The scope each method needs (methods not listed need none, e.g. views.*, chat.getPermalink).
REQUIRED_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.delete": "chat:write",
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
}


@dataclass
class Call:
    """One HTTP call the stub received on ``/api/<method>``.

    ``params`` merges query string and body (form or JSON) with ``blocks``/``attachments``/
    ``view``/``metadata``/``files`` decoded from JSON strings. ``response`` is the JSON the stub
    answered (None when a fault was injected); ``failed_status`` is the HTTP status of an
    injected fault.
    """

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    failed_status: int | None = None
    response: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether the stub answered ``{"ok": true, ...}``."""
        return self.response is not None and self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        """The Slack error name the stub answered, if any."""
        if self.response is None:
            return None
        err = self.response.get("error")
        return err if isinstance(err, str) else None


@dataclass
class Response:
    """One POST to a ``response_url`` issued by :meth:`SlackStub.new_response_url`.

    ``error`` is None when the stub accepted the payload (HTTP 200 "ok"); otherwise it is the
    error body Slack would send (e.g. ``invalid_blocks``, ``no_text``). ``failed_status`` is set
    when a fault was injected with ``stub.fail("response_url")``.
    """

    url_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    error: str | None = None
    errors: list[str] = field(default_factory=list)
    failed_status: int | None = None


@dataclass
class StubFile:
    """A file issued by ``files.getUploadURLExternal`` (one entry of :attr:`SlackStub.files`).

    ``content`` is the bytes POSTed to the upload URL (``uploaded`` tells an empty upload from
    none). ``completed`` is set by ``files.completeUploadExternal``, which also sets ``title``
    and, when it shared the file, ``channel``, ``thread_ts`` (the thread root) and
    ``message_ts`` (the message carrying the file; the first one when shared to several
    channels).
    """

    id: str
    name: str
    title: str
    length: int
    content: bytes = b""
    channel: str | None = None
    thread_ts: str | None = None
    message_ts: str | None = None
    completed: bool = False
    uploaded: bool = False


@dataclass
class _Fault:
    method: str | None
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class _ResponseTarget:
    channel: str | None
    message_ts: str | None


class _SlackError(Exception):
    """Raised inside a handler to answer ``{"ok": false, "error": name, ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _missing(field_name: str) -> _SlackError:
    return _invalid_arguments(f"missing required field: {field_name}")


def _invalid_arguments(problem: str) -> _SlackError:
    return _SlackError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {problem}"]})


def _flag(value: Any) -> bool:
    """Slack's reading of a boolean argument: true, "true" and "1" (any case) are true."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1")


def _is_reply(msg: dict[str, Any]) -> bool:
    thread_ts = msg.get("thread_ts")
    return thread_ts is not None and thread_ts != msg["ts"]


def _ts_key(msg: dict[str, Any]) -> Decimal:
    return Decimal(msg["ts"])


def _ts_value(raw: str, error: str) -> Decimal:
    """A Slack ts (or oldest/latest bound) as a number; ``error`` when it is not one."""
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _SlackError(error) from None
    if not value.is_finite():
        raise _SlackError(error)
    return value


def _encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _checked_metadata(params: dict[str, Any]) -> dict[str, Any] | None:
    """Validate message ``metadata`` the way Slack does; None when absent."""
    value = params.get("metadata")
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        return _raise_metadata("invalid_metadata_format", "metadata must be a JSON object")
    event_type = value.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        return _raise_metadata("invalid_metadata_schema", "event_type must be a non-empty string")
    payload = value.get("event_payload")
    if not isinstance(payload, dict):
        return _raise_metadata("invalid_metadata_schema", "event_payload must be an object")
    return {"event_type": event_type, "event_payload": payload}


def _raise_metadata(error: str, problem: str) -> dict[str, Any]:
    raise _SlackError(error, response_metadata={"messages": [f"[ERROR] {problem}"]})


def validate_blocks(
    blocks: Any, *, limit: int, where: str = "blocks", min_items: int = 0
) -> list[str]:
    """Return Block Kit problems in ``blocks`` (empty list when valid).

    Each block is parsed with slack_sdk's ``Block.parse`` (what ``Block.parse_all`` does per
    item), then ``validate_json()`` and ``to_dict()`` (which validates nested elements).
    """
    if not isinstance(blocks, list):
        return [f"{where} must be an array of block objects"]
    errors: list[str] = []
    if not min_items <= len(blocks) <= limit:
        errors.append(f"{where}: must have {min_items} to {limit} items (got {len(blocks)})")
    for index, raw in enumerate(blocks):
        pointer = f"[json-pointer:/{where}/{index}]"
        if not isinstance(raw, dict):
            errors.append(f"must be an object {pointer}")
            continue
        block_type = raw.get("type")
        if not isinstance(block_type, str) or not block_type:
            errors.append(f"missing required field: type {pointer}")
            continue
        try:
            parsed = Block.parse_all([raw])[0]
            if parsed is None:
                errors.append(f"unsupported type: {block_type} {pointer}")
                continue
            parsed.validate_json()
            parsed.to_dict()
        except Exception as exc:  # slack_sdk raises SlackObjectFormationError, TypeError, ...
            errors.append(f"{exc} {pointer}")
    return errors


def _decode_json_field(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SlackStub:
    """A loopback Slack Web API server with recording, validation and fault injection."""

    def __init__(self, token: str = "xoxb-test-token") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.deleted: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.responses: list[Response] = []
        self.home_views: dict[str, dict[str, Any]] = {}
        self.opened_views: list[dict[str, Any]] = []
        self.files: dict[str, StubFile] = {}
        self.missing_scopes: set[str] = set()
        self._faults: list[_Fault] = []
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._last_ts_micros = 0
        self._id_counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on an ephemeral port and start serving."""
        if self._runner is not None:
            raise RuntimeError("SlackStub already started")
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{url_id}", self._handle_response_url)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        addresses = runner.addresses
        if not addresses:
            await runner.cleanup()
            raise RuntimeError("SlackStub could not bind a port")
        self._port = int(addresses[0][1])

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SlackStub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (only after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("SlackStub not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/``."""
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        """Base URL for slack_sdk clients: ``http://127.0.0.1:<port>/api/``."""
        return f"{self.base_url}api/"

    # ----------------------------------------------------------------- test helpers

    def calls_to(self, method: str) -> list[Call]:
        """All recorded calls to ``method`` (including failed ones), oldest first."""
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The stored message ``ts`` in ``channel`` (top-level or reply), or None."""
        for msg in self.messages.get(channel, []):
            if msg["ts"] == ts:
                return msg
        return None

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Replies in the thread rooted at ``thread_ts`` (the parent excluded), in post order."""
        return [
            m
            for m in self.messages.get(channel, [])
            if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts
        ]

    def add_message(
        self,
        channel: str,
        text: str = "",
        *,
        user: str = "U0USER",
        thread_ts: str | None = None,
        blocks: list[dict[str, Any]] | None = None,
    ) -> str:
        """Store a message as if a human posted it (e.g. to reply in its thread); return its ts.

        A reply updates its root's ``reply_count``/``latest_reply`` when the root is stored (an
        unknown ``thread_ts`` is allowed). Nothing is recorded in :attr:`calls`.
        """
        ts = self._next_ts()
        msg = self._new_message(channel, ts, text, blocks, None, thread_ts)
        msg["user"] = user
        msg.pop("bot_id", None)
        self._store_post(msg)  # a reply bumps its (existing) root's reply_count
        return ts

    def new_response_url(self, channel: str | None = None, message_ts: str | None = None) -> str:
        """Issue a ``response_url`` (``http://127.0.0.1:<port>/response/<id>``).

        When bound to ``channel``/``message_ts``, ``replace_original``/``delete_original``
        posts act on that stored message, and ``response_type: in_channel`` posts (without
        replace) store a new message in ``channel``.
        """
        url_id = f"R{next(self._id_counter):06d}"
        self._response_targets[url_id] = _ResponseTarget(channel, message_ts)
        return f"{self.base_url}response/{url_id}"

    def fail(
        self,
        method: str | None = None,
        status: int = 429,
        retry_after: int | None = 1,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls to ``method`` (any API method when None) fail.

        429 answers ``{"ok": false, "error": "ratelimited"}``; other statuses answer a plain-text
        body. ``Retry-After`` is sent on 429/503 unless ``retry_after`` is None. Use
        ``method="response_url"`` to fail posts to response URLs and ``method="upload"`` to fail
        POSTs to file upload URLs (``method=None`` affects neither). Faults queue in order.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults.append(_Fault(method, status, retry_after, times))

    def reset(self) -> None:
        """Forget calls, messages, ephemerals, responses, views, files, faults, missing scopes.

        The server keeps running; issued response URLs stay valid; ts values keep increasing.
        """
        self.calls.clear()
        self.files.clear()
        self.missing_scopes.clear()
        self.messages.clear()
        self.deleted.clear()
        self.ephemerals.clear()
        self.responses.clear()
        self.home_views.clear()
        self.opened_views.clear()
        self._faults.clear()

    async def wait_for(
        self,
        predicate: Callable[[SlackStub], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - the documented helper signature
        interval: float = 0.01,
    ) -> T:
        """Poll until ``predicate(stub)`` is truthy and return its value.

        A ``LookupError`` (KeyError/IndexError) from the predicate counts as "not yet". On
        timeout raises AssertionError listing the most recent calls and response_url posts.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate(self)
            except LookupError:
                pass
            else:
                if value:
                    return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"condition not met within {timeout}s\n{self.dump()}")
            await asyncio.sleep(interval)

    def dump(self, last: int = 20) -> str:
        """Readable summary of the last ``last`` calls and response_url posts."""
        lines = [f"recent Slack API calls ({len(self.calls)} total):"]
        for call in self.calls[-last:]:
            params = {k: v for k, v in call.params.items() if k != "token"}
            if call.failed_status is not None:
                outcome = f"HTTP {call.failed_status} (injected)"
            else:
                outcome = "ok" if call.ok else f"error={call.error}"
            lines.append(f"  {call.method} -> {outcome} {_short(params)}")
        if not self.calls:
            lines.append("  (none)")
        lines.append(f"response_url posts ({len(self.responses)} total):")
        for resp in self.responses[-last:]:
            outcome = resp.error or "ok"
            lines.append(f"  {resp.url_id} -> {outcome} {_short(resp.body)}")
        if not self.responses:
            lines.append("  (none)")
        return "\n".join(lines)

    # ----------------------------------------------------------------- internals

    def _next_ts(self) -> str:
        """Slack's ts is its clock when the message arrived (microseconds), unique per channel:
        here the wall clock, nudged forward so two messages never share one."""
        micros = max(int(time.time() * 1_000_000), self._last_ts_micros + 1)
        self._last_ts_micros = micros
        seconds, fraction = divmod(micros, 1_000_000)
        return f"{seconds}.{fraction:06d}"

    def _new_message(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: list[dict[str, Any]] | None,
        attachments: list[dict[str, Any]] | None,
        thread_ts: str | None,
    ) -> dict[str, Any]:
        return {
            "type": "message",
            "channel": channel,
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "ts": ts,
            "text": text,
            "blocks": blocks,
            "attachments": attachments,
            "thread_ts": thread_ts,
        }

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            matches = fault.method == method or (
                fault.method is None and method not in (RESPONSE_URL_METHOD, UPLOAD_METHOD)
            )
            if matches:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> web.Response:
        headers: dict[str, str] = {}
        if fault.retry_after is not None and fault.status in (429, 503):
            headers["Retry-After"] = str(fault.retry_after)
        if fault.status == 429:
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers=headers
            )
        return web.Response(status=fault.status, text="", headers=headers)

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            params.update(await self._read_body(request))
        # JSON fields are decoded wherever they came from (slack_sdk sends ``params=`` in the query)
        for key in _JSON_FIELDS:
            if key in params:
                params[key] = _decode_json_field(params[key])
        return params

    @staticmethod
    async def _read_body(request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if request.content_type == "application/json":
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise _SlackError("invalid_json") from exc
            if not isinstance(body, dict):
                raise _SlackError("json_not_object")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    params[key] = value
                elif isinstance(value, (bytes, bytearray)):
                    params[key] = bytes(value).decode("utf-8", "replace")
                else:
                    params[key] = value.filename
        else:
            await request.read()
            raise _SlackError("invalid_post_type")
        return params

    def _check_auth(self, request: web.Request, params: dict[str, Any]) -> None:
        token: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[len("bearer ") :].strip() or None
        if token is None:
            body_token = params.get("token")
            token = body_token if isinstance(body_token, str) and body_token else None
        if token is None:
            raise _SlackError("not_authed")
        if token != self.token:
            raise _SlackError("invalid_auth")

    def _check_scope(self, method: str) -> None:
        needed = REQUIRED_SCOPES.get(method)
        if needed is not None and needed in self.missing_scopes:
            provided = ",".join(s for s in BOT_SCOPES if s not in self.missing_scopes)
            raise _SlackError("missing_scope", needed=needed, provided=provided)

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        headers = dict(request.headers)
        try:
            params = await self._read_params(request)
        except _SlackError as exc:
            call = Call(method=method, params={}, headers=headers)
            self.calls.append(call)
            return self._answer(call, {"ok": False, "error": exc.error, **exc.extra})
        call = Call(method=method, params=params, headers=headers)
        self.calls.append(call)
        fault = self._take_fault(method)
        if fault is not None:
            call.failed_status = fault.status
            return self._fault_response(fault)
        try:
            handler = self._handlers().get(method)
            if handler is None:
                raise _SlackError("unknown_method", req_method=method)
            self._check_auth(request, params)
            self._check_scope(method)
            body = handler(params)
        except _SlackError as exc:
            body = {"ok": False, "error": exc.error, **exc.extra}
        return self._answer(call, body)

    @staticmethod
    def _answer(call: Call, body: dict[str, Any]) -> web.Response:
        call.response = body
        return web.json_response(body)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
        }

    # ----------------------------------------------------------------- content checks

    @staticmethod
    def _str_param(params: dict[str, Any], name: str) -> str | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        return str(value)

    def _checked_content(
        self, params: dict[str, Any], *, require: bool = True
    ) -> tuple[str | None, list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
        """Validate text/blocks/attachments; return them (None when absent)."""
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        blocks = params.get("blocks")
        attachments = params.get("attachments")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise _SlackError("invalid_blocks_format")
            errors = validate_blocks(blocks, limit=MAX_MESSAGE_BLOCKS)
            if errors:
                raise _invalid_blocks(errors)
        if attachments is not None:
            if not isinstance(attachments, list) or not all(
                isinstance(a, dict) for a in attachments
            ):
                raise _SlackError("invalid_attachments")
            if len(attachments) > MAX_ATTACHMENTS:
                raise _SlackError("too_many_attachments")
            errors = []
            for index, attachment in enumerate(attachments):
                if "blocks" in attachment:
                    errors += validate_blocks(
                        attachment["blocks"],
                        limit=MAX_MESSAGE_BLOCKS,
                        where=f"attachments/{index}/blocks",
                    )
            if errors:
                raise _invalid_blocks(errors)
        if require and not (text or blocks or attachments):
            raise _SlackError("no_text")
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise _SlackError("msg_too_long")
        return text, blocks, attachments

    def _channel_messages(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        channel = self._str_param(params, "channel")
        if channel is None or channel not in self.messages:
            raise _SlackError("channel_not_found")
        return channel, self.messages[channel]

    def _existing(self, params: dict[str, Any], ts_field: str) -> tuple[str, dict[str, Any]]:
        channel, _ = self._channel_messages(params)
        ts = self._str_param(params, ts_field)
        msg = self.message(channel, ts) if ts is not None else None
        if msg is None:
            raise _SlackError("message_not_found")
        return channel, msg

    @staticmethod
    def _public(msg: dict[str, Any], *, metadata: bool = False) -> dict[str, Any]:
        """A copy of a stored message as Slack shows it (``metadata`` only when asked for)."""
        hidden = ("channel",) if metadata else ("channel", "metadata")
        return {k: v for k, v in msg.items() if v is not None and k not in hidden}

    def _thread_root(self, channel: str, thread_ts: str | None) -> str | None:
        """The root ts of the thread ``thread_ts`` belongs to (raises thread_not_found)."""
        if thread_ts is None:
            return None
        parent = self.message(channel, thread_ts)
        if parent is None:
            raise _SlackError("thread_not_found")
        root = parent.get("thread_ts") or parent["ts"]
        return str(root)

    def _store_post(self, msg: dict[str, Any]) -> None:
        """Store a posted message; a reply bumps its root's reply_count/latest_reply."""
        channel = msg["channel"]
        self.messages.setdefault(channel, []).append(msg)
        thread_ts = msg.get("thread_ts")
        if thread_ts is not None:
            root = self.message(channel, thread_ts)
            if root is not None:
                root["thread_ts"] = thread_ts
                root["reply_count"] = int(root.get("reply_count") or 0) + 1
                root["latest_reply"] = msg["ts"]

    # ----------------------------------------------------------------- methods

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        # https://docs.slack.dev/reference/methods/auth.test: "checks authentication and tells
        # you who you are": ok, url (the workspace's, not the API's), team, user, team_id,
        # user_id, and bot_id for a bot token. A wrong token gets invalid_auth and no token
        # not_authed (_check_auth, as for every method); no scope is needed.
        return {
            "ok": True,
            "url": WORKSPACE_URL,
            "team": TEAM_NAME,
            "user": "uat-bot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._str_param(params, "channel")
        if channel is None:
            raise _SlackError("channel_not_found")
        text, blocks, attachments = self._checked_content(params)
        metadata = _checked_metadata(params)
        thread_ts = self._thread_root(channel, self._str_param(params, "thread_ts"))
        ts = self._next_ts()
        msg = self._new_message(channel, ts, text or "", blocks, attachments, thread_ts)
        if metadata is not None:
            msg["metadata"] = metadata
        self._store_post(msg)
        return {"ok": True, "channel": channel, "ts": ts, "message": self._public(msg)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, msg = self._existing(params, "ts")
        text, blocks, attachments = self._checked_content(params)
        metadata = _checked_metadata(params)
        # Slack keeps fields that the update omits; an empty list clears blocks/attachments.
        if metadata is not None:
            msg["metadata"] = metadata
        if text is not None:
            msg["text"] = text
        if blocks is not None:
            msg["blocks"] = blocks or None
        if attachments is not None:
            msg["attachments"] = attachments or None
        msg["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {
            "ok": True,
            "channel": channel,
            "ts": msg["ts"],
            "text": msg["text"],
            "message": self._public(msg),
        }

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._str_param(params, "channel")
        if channel is None:
            raise _SlackError("channel_not_found")
        user = self._str_param(params, "user")
        if user is None:
            raise _missing("user")
        text, blocks, attachments = self._checked_content(params)
        message_ts = self._next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": text or "",
                "blocks": blocks,
                "attachments": attachments,
                "thread_ts": self._str_param(params, "thread_ts"),
                "message_ts": message_ts,
            }
        )
        return {"ok": True, "message_ts": message_ts}

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, msg = self._existing(params, "ts")
        self.messages[channel].remove(msg)
        self.deleted.append(msg)
        return {"ok": True, "channel": channel, "ts": msg["ts"]}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, msg = self._existing(params, "message_ts")
        link = f"{self.base_url}archives/{channel}/p{msg['ts'].replace('.', '')}"
        root = msg.get("thread_ts")
        if root and root != msg["ts"]:
            link += "?" + urlencode({"thread_ts": root, "cid": channel})
        return {"ok": True, "channel": channel, "permalink": link}

    # ----------------------------------------------------------------- conversations

    def _history_window(self, params: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
        """A predicate for ``oldest``/``latest``/``inclusive`` (bounds exclusive by default)."""
        bounds: dict[str, Decimal | None] = {}
        for name in ("oldest", "latest"):
            raw = self._str_param(params, name)
            bounds[name] = _ts_value(raw, f"invalid_ts_{name}") if raw is not None else None
        oldest, latest = bounds["oldest"], bounds["latest"]
        inclusive = _flag(params.get("inclusive", False))

        def inside(msg: dict[str, Any]) -> bool:
            ts = _ts_key(msg)
            if oldest is not None and (ts < oldest or (ts == oldest and not inclusive)):
                return False
            return latest is None or ts < latest or (ts == latest and inclusive)

        return inside

    def _page_args(self, params: dict[str, Any]) -> tuple[int, Decimal | None]:
        """``limit`` (0/absent -> 100, clamped to 1..999) and the decoded ``cursor`` ts."""
        raw_limit = params.get("limit")
        limit = HISTORY_DEFAULT_LIMIT
        if raw_limit is not None and raw_limit != "":
            try:
                limit = int(str(raw_limit))
            except ValueError:
                raise _SlackError("invalid_limit") from None
            limit = HISTORY_DEFAULT_LIMIT if limit == 0 else max(1, min(limit, HISTORY_MAX_LIMIT))
        cursor = self._str_param(params, "cursor")
        if cursor is None:
            return limit, None
        try:
            decoded = base64.b64decode(cursor.encode(), validate=True).decode()
        except (ValueError, binascii.Error):
            raise _SlackError("invalid_cursor") from None
        prefix, _, ts = decoded.partition(":")
        if prefix != "next_ts":
            raise _SlackError("invalid_cursor")
        return limit, _ts_value(ts, "invalid_cursor")

    def _page(
        self, items: list[dict[str, Any]], limit: int, params: dict[str, Any]
    ) -> dict[str, Any]:
        with_metadata = _flag(params.get("include_all_metadata", False))
        page, rest = items[:limit], items[limit:]
        return {
            "ok": True,
            "messages": [self._public(m, metadata=with_metadata) for m in page],
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": _encode_cursor(rest[0]["ts"]) if rest else ""},
        }

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        _, messages = self._channel_messages(params)
        inside = self._history_window(params)
        limit, cursor = self._page_args(params)
        top = [m for m in messages if not _is_reply(m) and inside(m)]
        top.sort(key=_ts_key, reverse=True)
        if cursor is not None:
            top = [m for m in top if _ts_key(m) <= cursor]
        return self._page(top, limit, params)

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, _ = self._channel_messages(params)
        ts = self._str_param(params, "ts")
        msg = self.message(channel, ts) if ts is not None else None
        if msg is None:
            raise _SlackError("thread_not_found")
        root_ts = msg.get("thread_ts") or msg["ts"]
        inside = self._history_window(params)
        limit, cursor = self._page_args(params)
        replies = sorted((m for m in self.thread(channel, root_ts) if inside(m)), key=_ts_key)
        if cursor is not None:
            # continuation pages carry only replies, like Slack's
            return self._page([m for m in replies if _ts_key(m) >= cursor], limit, params)
        root = self.message(channel, root_ts)
        # the first page always starts with the parent, whatever oldest/latest say
        return self._page(([root] if root is not None else []) + replies, limit, params)

    # ----------------------------------------------------------------- files

    def _files_get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = self._str_param(params, "filename")
        if filename is None:
            raise _missing("filename")
        raw_length = self._str_param(params, "length")
        if raw_length is None:
            raise _missing("length")
        try:
            length = int(raw_length)
        except ValueError:
            length = 0
        if length < 1:
            raise _invalid_arguments("length must be a positive integer")
        file_id = f"F{next(self._id_counter):010d}"
        self.files[file_id] = StubFile(id=file_id, name=filename, title=filename, length=length)
        return {"ok": True, "upload_url": f"{self.base_url}upload/{file_id}", "file_id": file_id}

    def _files_complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        entries = params.get("files")
        if entries is None or entries == "":
            raise _missing("files")
        if (
            not isinstance(entries, list)
            or not entries
            or not all(isinstance(e, dict) and isinstance(e.get("id"), str) for e in entries)
        ):
            raise _invalid_arguments("files must be a non-empty array of objects with an id")
        completing: list[tuple[StubFile, str]] = []
        for entry in entries:
            stub_file = self.files.get(entry["id"])
            if stub_file is None:
                raise _SlackError("file_not_found")
            if stub_file.completed:
                raise _invalid_arguments(f"file {stub_file.id} was already completed")
            if not stub_file.uploaded:
                raise _invalid_arguments(f"file {stub_file.id} was not uploaded")
            title = entry.get("title")
            completing.append((stub_file, title if isinstance(title, str) and title else ""))
        targets = self._share_targets(params)
        thread_ts = self._str_param(params, "thread_ts")
        if thread_ts is not None and len(targets) != 1:
            raise _invalid_arguments("thread_ts needs exactly one channel")
        roots = {channel: self._thread_root(channel, thread_ts) for channel in targets}

        comment = params.get("initial_comment")
        text = comment if isinstance(comment, str) else ""
        shared = [{"id": f.id, "name": f.name, "title": title or f.name} for f, title in completing]
        posted: list[dict[str, Any]] = []
        for channel in targets:
            msg = self._new_message(channel, self._next_ts(), text, None, None, roots[channel])
            msg["files"] = [dict(item) for item in shared]
            self._store_post(msg)
            posted.append(msg)
        created = int(time.time())
        answer: list[dict[str, Any]] = []
        for stub_file, title in completing:
            stub_file.title = title or stub_file.name
            stub_file.completed = True
            if posted:
                stub_file.channel = posted[0]["channel"]
                stub_file.thread_ts = posted[0]["thread_ts"]
                stub_file.message_ts = posted[0]["ts"]
            extension = stub_file.name.rpartition(".")[2].lower() if "." in stub_file.name else ""
            answer.append(
                {
                    "id": stub_file.id,
                    "created": created,
                    "timestamp": created,
                    "name": stub_file.name,
                    "title": stub_file.title,
                    "mimetype": mimetypes.guess_type(stub_file.name)[0]
                    or "application/octet-stream",
                    "filetype": extension or "binary",
                    "user": BOT_USER_ID,
                    "size": len(stub_file.content),
                }
            )
        return {"ok": True, "files": answer}

    def _share_targets(self, params: dict[str, Any]) -> list[str]:
        """``channel_id`` then the comma-separated ``channels``, without duplicates."""
        targets: list[str] = []
        channel_id = self._str_param(params, "channel_id")
        if channel_id is not None:
            targets.append(channel_id)
        channels = params.get("channels")
        if isinstance(channels, str):
            channels = channels.split(",")
        if isinstance(channels, list):
            for channel in channels:
                name = str(channel).strip()
                if name and name not in targets:
                    targets.append(name)
        return targets

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = form.get("file")
            if isinstance(part, web.FileField):
                content = part.file.read()
            elif isinstance(part, (str, bytes, bytearray)):
                content = part.encode() if isinstance(part, str) else bytes(part)
            else:
                content = None
        else:
            content = await request.read()
        stub_file = self.files.get(file_id)
        if stub_file is None:
            return web.Response(status=404, text="Not Found")
        fault = self._take_fault(UPLOAD_METHOD)
        if fault is not None:
            return self._fault_response(fault)
        if content is None:
            return web.Response(status=400, text="missing file field")
        if len(content) > stub_file.length:
            return web.Response(
                status=400, text=f"upload is {len(content)} bytes, declared {stub_file.length}"
            )
        stub_file.content = content
        stub_file.uploaded = True
        return web.Response(status=200, text=f"OK - {len(content)}")

    # ----------------------------------------------------------------- views

    def _checked_view(self, params: dict[str, Any], expected_type: str) -> dict[str, Any]:
        view = params.get("view")
        if view is None or view == "":
            raise _missing("view")
        if not isinstance(view, dict):
            raise _SlackError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] view must be a JSON object"]},
            )
        if view.get("type") != expected_type:
            message = f"[ERROR] view.type must be {expected_type!r} [json-pointer:/view/type]"
            raise _SlackError("invalid_arguments", response_metadata={"messages": [message]})
        blocks = view.get("blocks")
        if blocks is None:
            raise _missing("blocks")
        errors = validate_blocks(blocks, limit=MAX_VIEW_BLOCKS, where="view/blocks", min_items=1)
        if errors:
            raise _invalid_blocks(errors)
        if expected_type == "modal" and not view.get("title"):
            raise _missing("title")
        try:
            View(**view).validate_json()
        except Exception as exc:
            raise _SlackError(
                "invalid_arguments", response_metadata={"messages": [f"[ERROR] {exc}"]}
            ) from exc
        return view

    def _stored_view(self, view: dict[str, Any]) -> dict[str, Any]:
        view_id = f"V{next(self._id_counter):08d}"
        return {
            "id": view_id,
            "team_id": TEAM_ID,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
            "root_view_id": view_id,
            "previous_view_id": None,
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{next(self._id_counter):08d}",
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            **view,
        }

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user_id = self._str_param(params, "user_id")
        if user_id is None:
            raise _missing("user_id")
        view = self._checked_view(params, "home")
        expected_hash = self._str_param(params, "hash")
        current = self.home_views.get(user_id)
        if expected_hash is not None and current is not None and current["hash"] != expected_hash:
            raise _SlackError("hash_conflict")
        stored = self._stored_view(view)
        self.home_views[user_id] = stored
        return {"ok": True, "view": stored}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger_id = self._str_param(params, "trigger_id")
        if trigger_id is None:
            raise _missing("trigger_id")
        view = self._checked_view(params, "modal")
        stored = self._stored_view(view)
        self.opened_views.append(stored)
        return {"ok": True, "view": stored}

    # ----------------------------------------------------------------- response_url

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        url_id = request.match_info["url_id"]
        target = self._response_targets.get(url_id)
        if target is None:
            await request.read()
            return web.Response(status=404, text="no_service")
        headers = dict(request.headers)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        record = Response(
            url_id=url_id, body=body if isinstance(body, dict) else {}, headers=headers
        )
        self.responses.append(record)
        fault = self._take_fault(RESPONSE_URL_METHOD)
        if fault is not None:
            record.failed_status = fault.status
            return self._fault_response(fault)
        if not isinstance(body, dict):
            record.error = "invalid_payload"
            return web.Response(status=400, text=record.error)
        try:
            self._apply_response(target, body)
        except _SlackError as exc:
            record.error = exc.error
            record.errors = list(exc.extra.get("errors", []))
            return web.Response(status=400, text=exc.error)
        return web.Response(status=200, text="ok")

    def _apply_response(self, target: _ResponseTarget, body: dict[str, Any]) -> None:
        if body.get("delete_original") is True:
            original = self._target_message(target)
            if original is not None and target.channel is not None:
                self.messages[target.channel].remove(original)
                self.deleted.append(original)
            return
        text, blocks, attachments = self._checked_content(body)
        if body.get("replace_original") is True:
            original = self._target_message(target)
            if original is not None:
                if text is not None:
                    original["text"] = text
                original["blocks"] = blocks or None
                original["attachments"] = attachments or None
            return
        if body.get("response_type") == "in_channel" and target.channel is not None:
            thread_ts = body.get("thread_ts")
            msg = self._new_message(
                target.channel,
                self._next_ts(),
                text or "",
                blocks,
                attachments,
                thread_ts if isinstance(thread_ts, str) else None,
            )
            self.messages.setdefault(target.channel, []).append(msg)

    def _target_message(self, target: _ResponseTarget) -> dict[str, Any] | None:
        if target.channel is None or target.message_ts is None:
            return None
        return self.message(target.channel, target.message_ts)


def _invalid_blocks(errors: list[str]) -> _SlackError:
    return _SlackError(
        "invalid_blocks", errors=errors, response_metadata={"messages": list(errors)}
    )
