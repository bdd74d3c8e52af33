"""The stub's server: lifecycle, recording, fault injection, auth and scopes, and the message
store every surface shares."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from tests.harness.slack_stub.limits import RateLimits, ResponseUrlLimits
from tests.harness.slack_stub.records import (
    Call,
    Fault,
    Response,
    ResponseTarget,
    StubChannel,
    StubFile,
    UserGroup,
)
from tests.harness.slack_stub.validation import (
    JSON_FIELDS,
    MAX_ATTACHMENTS,
    MAX_MESSAGE_BLOCKS,
    MAX_TEXT_CHARS,
    SlackError,
    decode_json_field,
    invalid_blocks,
    missing,
    short,
    validate_blocks,
)

T = TypeVar("T")

BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "T0001"
TEAM_NAME = "uat-test"
APP_ID = "A0001"
WORKSPACE_URL = f"https://{TEAM_NAME}.slack.com/"

RESPONSE_URL_METHOD = "response_url"
# ``stub.fail(UPLOAD_METHOD)`` fails POSTs to upload URLs (``fail(None)`` leaves them alone).
UPLOAD_METHOD = "upload"
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
# The bot token's scopes (manifest.yml plus files:write); ``missing_scopes`` removes some.
BOT_SCOPES = (
    "channels:history",
    "chat:write",
    "commands",
    "files:write",
    "groups:history",
    "usergroups:read",
)
# The scope each method needs (methods not listed need none, e.g. views.*, chat.getPermalink);
# conversations.history/replies need the scope of the channel's type, see HISTORY_SCOPES.
# https://docs.slack.dev/reference/methods/chat.postMessage (chat:write),
# https://docs.slack.dev/reference/methods/files.getUploadURLExternal (files:write),
# https://docs.slack.dev/reference/methods/usergroups.users.list (usergroups:read).
REQUIRED_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.delete": "chat:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "usergroups.users.list": "usergroups:read",
}
# https://docs.slack.dev/reference/methods/conversations.history: "channels:history" for public
# channels, "groups:history" for private ones (im:/mpim: for DMs, which the bot does not read).
HISTORY_SCOPES = {False: "channels:history", True: "groups:history"}
# The channels every stub starts with, the bot a member of each: the UAT channel the test
# harness uses (tests/harness/bot.py), the one the signing fixtures name, and "C1".
DEFAULT_CHANNELS = ("C0UAT", "C2147483705", "C1")
# files.completeUploadExternal shares its file this long after answering (see files.py).
SHARE_DELAY_S = 0.2
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class StubServer:
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
        self.usergroups: dict[str, UserGroup] = {}
        self.channels: dict[str, StubChannel] = {}
        # Set to refuse chat.update of a message older than this many seconds (edit_window_closed).
        self.edit_window_s: float | None = None
        self._add_default_channels()
        # How long after files.completeUploadExternal answers its share message appears.
        self.share_delay_s = SHARE_DELAY_S
        self._timers: list[asyncio.TimerHandle] = []
        self._faults: list[Fault] = []
        self.rate_limits = RateLimits()
        self.response_url_limits = ResponseUrlLimits()
        self._response_targets: dict[str, ResponseTarget] = {}
        self._last_ts_micros = 0
        self._id_counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def start(self) -> None:
        """Bind 127.0.0.1 on an ephemeral port and start serving."""
        if self._runner is not None:
            raise RuntimeError("SlackStub already started")
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        self._add_routes(app)
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
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
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
        unknown ``thread_ts`` is allowed). Nothing is recorded in :attr:`calls`. The channel must
        exist (a default one, or see :meth:`add_channel`).
        """
        if channel not in self.channels:
            raise ValueError(f"no channel {channel!r} in the stub: add_channel({channel!r}) first")
        ts = self._next_ts()
        msg = self._new_message(channel, ts, text, blocks, None, thread_ts)
        msg["user"] = user
        msg.pop("bot_id", None)
        self._store_post(msg)  # a reply bumps its (existing) root's reply_count
        return ts

    def add_channel(
        self,
        channel: str,
        *,
        private: bool = False,
        archived: bool = False,
        member: bool = True,
        members: set[str] | None = None,
    ) -> StubChannel:
        """Make ``channel`` exist (replacing one of that id): see :class:`StubChannel`."""
        record = StubChannel(channel, private, archived, member, members)
        self.channels[channel] = record
        return record

    def _add_default_channels(self) -> None:
        self.channels.clear()
        for channel in DEFAULT_CHANNELS:
            self.add_channel(channel)

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
        self._faults.append(Fault(method, status, retry_after, times))

    def real_rate_limits(self) -> None:
        """From now on, answer 429 past Slack's own rate limits (see `limits`); the number of
        429s answered so is `rate_limits.refused`."""
        self.rate_limits.on()

    def fail_after_storing(
        self, method: str, status: int = 500, times: int = 1, delay_s: float = 0.0
    ) -> None:
        """Make the next ``times`` calls to ``method`` ambiguous: the stub does what they ask
        (``chat.postMessage`` stores the message, as Slack may before failing), then answers
        ``status`` (a plain 5xx body) after ``delay_s`` seconds. A ``delay_s`` past the client's
        timeout is a call that hangs: the client gives up without an answer."""
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults.append(Fault(method, status, None, times, after_storing=True, delay_s=delay_s))

    def fail_for(
        self,
        seconds: float,
        status: int = 429,
        *,
        method: str | None = None,
        retry_after: int | None = 1,
        after_storing: bool = False,
    ) -> None:
        """A fault window: for the next ``seconds`` every call to ``method`` (any API method when
        None) fails as :meth:`fail` describes. With ``after_storing`` each call is handled first
        (a post is stored and recorded in :attr:`messages`) and then answered with ``status``,
        as when Slack stored a message but the answer was lost; its :class:`Call` keeps both
        the ``response`` it would have had and the ``failed_status``."""
        until = time.monotonic() + seconds
        self._faults.append(
            Fault(method, status, retry_after, 1, after_storing=after_storing, until=until)
        )

    def reset(self) -> None:
        """Forget calls, messages, ephemerals, responses, views, files, faults, missing scopes,
        channels added (the default ones are back, joined), Slack's rate limits (off again, their
        buckets full).

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
        self.usergroups.clear()
        self._faults.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.edit_window_s = None
        self.rate_limits = RateLimits(self.rate_limits.clock)
        self._add_default_channels()

    async def wait_for(
        self,
        predicate: Callable[[Self], T],
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
            lines.append(f"  {call.method} -> {outcome} {short(params)}")
        if not self.calls:
            lines.append("  (none)")
        lines.append(f"response_url posts ({len(self.responses)} total):")
        for resp in self.responses[-last:]:
            outcome = resp.error or "ok"
            lines.append(f"  {resp.url_id} -> {outcome} {short(resp.body)}")
        if not self.responses:
            lines.append("  (none)")
        return "\n".join(lines)

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

    def _take_fault(self, method: str) -> Fault | None:
        now = time.monotonic()
        self._faults = [f for f in self._faults if f.until is None or f.until > now]
        for fault in self._faults:
            matches = fault.method == method or (
                fault.method is None and method not in (RESPONSE_URL_METHOD, UPLOAD_METHOD)
            )
            if matches and fault.until is not None:
                return fault
            if matches:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
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
        for key in JSON_FIELDS:
            if key in params:
                params[key] = decode_json_field(params[key])
        return params

    @staticmethod
    async def _read_body(request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if request.content_type == "application/json":
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise SlackError("invalid_json") from exc
            if not isinstance(body, dict):
                raise SlackError("json_not_object")
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
            raise SlackError("invalid_post_type")
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
            raise SlackError("not_authed")
        if token != self.token:
            raise SlackError("invalid_auth")

    def _check_scope(self, method: str) -> None:
        needed = REQUIRED_SCOPES.get(method)
        if needed is not None:
            self._require_scope(needed)

    def _require_scope(self, needed: str) -> None:
        """``missing_scope`` naming the scope ``needed`` and those the token has
        (https://docs.slack.dev/authentication/tokens: the error says what was needed)."""
        if needed in self.missing_scopes:
            provided = ",".join(s for s in BOT_SCOPES if s not in self.missing_scopes)
            raise SlackError("missing_scope", needed=needed, provided=provided)

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        headers = dict(request.headers)
        try:
            params = await self._read_params(request)
        except SlackError as exc:
            call = Call(method=method, params={}, headers=headers)
            self.calls.append(call)
            return self._answer(call, {"ok": False, "error": exc.error, **exc.extra})
        call = Call(method=method, params=params, headers=headers)
        self.calls.append(call)
        fault = self._take_fault(method)
        if fault is not None and not fault.after_storing:
            call.failed_status = fault.status
            return self._fault_response(fault)
        retry_after = self.rate_limits.retry_after(method, self._str_param(params, "channel"))
        if retry_after is not None:
            call.failed_status = 429
            return self._fault_response(Fault(method, 429, retry_after, 1))
        try:
            handler = self._handlers().get(method)
            if handler is None:
                raise SlackError("unknown_method", req_method=method)
            self._check_auth(request, params)
            self._check_scope(method)
            body = handler(params)
        except SlackError as exc:
            body = {"ok": False, "error": exc.error, **exc.extra}
        if fault is not None:  # done, and now the answer fails (or never comes in time)
            call.response, call.failed_status = body, fault.status
            await asyncio.sleep(fault.delay_s)
            return self._fault_response(fault)
        return self._answer(call, body)

    @staticmethod
    def _answer(call: Call, body: dict[str, Any]) -> web.Response:
        call.response = body
        return web.json_response(body)

    def _add_routes(self, app: web.Application) -> None:
        """Each surface adds its own routes after the Web API's."""
        app.router.add_route("*", "/api/{method}", self._handle_api)

    def _handlers(self) -> dict[str, Handler]:
        """Web API method -> handler; each surface adds its own methods."""
        return {"auth.test": self._auth_test}

    @staticmethod
    def _str_param(params: dict[str, Any], name: str) -> str | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        return str(value)

    @classmethod
    def _required_param(cls, params: dict[str, Any], name: str) -> str:
        """The string parameter `name`, or Slack's invalid_arguments when it is absent or empty."""
        value = cls._str_param(params, name)
        if value is None:
            raise missing(name)
        return value

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
                raise SlackError("invalid_blocks_format")
            errors = validate_blocks(blocks, limit=MAX_MESSAGE_BLOCKS)
            if errors:
                raise invalid_blocks(errors)
        if attachments is not None:
            if not isinstance(attachments, list) or not all(
                isinstance(a, dict) for a in attachments
            ):
                raise SlackError("invalid_attachments")
            if len(attachments) > MAX_ATTACHMENTS:
                raise SlackError("too_many_attachments")
            errors = []
            for index, attachment in enumerate(attachments):
                if "blocks" in attachment:
                    errors += validate_blocks(
                        attachment["blocks"],
                        limit=MAX_MESSAGE_BLOCKS,
                        where=f"attachments/{index}/blocks",
                    )
            if errors:
                raise invalid_blocks(errors)
        if require and not (text or blocks or attachments):
            raise SlackError("no_text")
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise SlackError("msg_too_long")
        return text, blocks, attachments

    def _target(self, channel: str | None, *, write: bool = False) -> StubChannel:
        """The channel a call names, refused as Slack refuses it.

        https://docs.slack.dev/reference/methods/chat.postMessage (and chat.update,
        chat.postEphemeral, conversations.history): ``channel_not_found`` for a channel that does
        not exist or a private one the bot is not in (it cannot see it), ``not_in_channel`` for a
        public one it has not joined (the bot has no chat:write.public), ``is_archived`` for a
        post into an archived one.
        """
        record = self.channels.get(channel) if channel is not None else None
        if record is None or (record.private and not record.member):
            raise SlackError("channel_not_found")
        if not record.member:
            raise SlackError("not_in_channel")
        if write and record.archived:
            raise SlackError("is_archived")
        return record

    def _channel_messages(
        self, params: dict[str, Any], *, write: bool = False
    ) -> tuple[str, list[dict[str, Any]]]:
        record = self._target(self._str_param(params, "channel"), write=write)
        return record.id, self.messages.get(record.id, [])

    def _existing(
        self, params: dict[str, Any], ts_field: str, *, write: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """The stored message ``ts_field`` names: ``message_not_found`` when there is none
        (https://docs.slack.dev/reference/methods/chat.update)."""
        channel, _ = self._channel_messages(params, write=write)
        ts = self._str_param(params, ts_field)
        msg = self.message(channel, ts) if ts is not None else None
        if msg is None:
            raise SlackError("message_not_found")
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
            raise SlackError("thread_not_found")
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
