"""conversations.history and conversations.replies: newest-first history, threads parent-first,
cursor pagination, metadata on request."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tests.harness.slack_stub.server import HISTORY_SCOPES, Handler, StubServer
from tests.harness.slack_stub.validation import (
    SlackError,
    encode_cursor,
    flag,
    is_reply,
    ts_key,
    ts_value,
)

HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 999


class ConversationMethods(StubServer):
    """The conversations.* methods the bot reads its own messages back with."""

    def _history_window(self, params: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
        """A predicate for ``oldest``/``latest``/``inclusive`` (bounds exclusive by default)."""
        bounds: dict[str, Decimal | None] = {}
        for name in ("oldest", "latest"):
            raw = self._str_param(params, name)
            bounds[name] = ts_value(raw, f"invalid_ts_{name}") if raw is not None else None
        oldest, latest = bounds["oldest"], bounds["latest"]
        inclusive = flag(params.get("inclusive", False))

        def inside(msg: dict[str, Any]) -> bool:
            ts = ts_key(msg)
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
                raise SlackError("invalid_limit") from None
            limit = HISTORY_DEFAULT_LIMIT if limit == 0 else max(1, min(limit, HISTORY_MAX_LIMIT))
        cursor = self._str_param(params, "cursor")
        if cursor is None:
            return limit, None
        try:
            decoded = base64.b64decode(cursor.encode(), validate=True).decode()
        except (ValueError, binascii.Error):
            raise SlackError("invalid_cursor") from None
        prefix, _, ts = decoded.partition(":")
        if prefix != "next_ts":
            raise SlackError("invalid_cursor")
        return limit, ts_value(ts, "invalid_cursor")

    def _page(
        self, items: list[dict[str, Any]], limit: int, params: dict[str, Any]
    ) -> dict[str, Any]:
        with_metadata = flag(params.get("include_all_metadata", False))
        page, rest = items[:limit], items[limit:]
        return {
            "ok": True,
            "messages": [self._public(m, metadata=with_metadata) for m in page],
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": encode_cursor(rest[0]["ts"]) if rest else ""},
        }

    def _readable(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """The channel to read, with the history scope its type needs (groups:history for a
        private one: https://docs.slack.dev/reference/methods/conversations.history)."""
        channel, messages = self._channel_messages(params)
        self._require_scope(HISTORY_SCOPES[self.channels[channel].private])
        return channel, messages

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        _, messages = self._readable(params)
        inside = self._history_window(params)
        limit, cursor = self._page_args(params)
        top = [m for m in messages if not is_reply(m) and inside(m)]
        top.sort(key=ts_key, reverse=True)
        if cursor is not None:
            top = [m for m in top if ts_key(m) <= cursor]
        return self._page(top, limit, params)

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, _ = self._readable(params)
        ts = self._str_param(params, "ts")
        msg = self.message(channel, ts) if ts is not None else None
        if msg is None:
            raise SlackError("thread_not_found")
        root_ts = msg.get("thread_ts") or msg["ts"]
        inside = self._history_window(params)
        limit, cursor = self._page_args(params)
        replies = sorted((m for m in self.thread(channel, root_ts) if inside(m)), key=ts_key)
        if cursor is not None:
            # continuation pages carry only replies, like Slack's
            return self._page([m for m in replies if ts_key(m) >= cursor], limit, params)
        root = self.message(channel, root_ts)
        # the first page always starts with the parent, whatever oldest/latest say
        return self._page(([root] if root is not None else []) + replies, limit, params)

    def _handlers(self) -> dict[str, Handler]:
        return {
            **super()._handlers(),
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
        }
