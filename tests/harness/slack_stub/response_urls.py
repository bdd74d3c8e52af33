"""response_url endpoints: issued per command or click, replacing, deleting or adding messages."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.harness.slack_stub.records import Response, ResponseTarget
from tests.harness.slack_stub.server import RESPONSE_URL_METHOD, StubServer
from tests.harness.slack_stub.validation import SlackError


class ResponseUrls(StubServer):
    """The response_url endpoints Slack issues per command or click."""

    def new_response_url(self, channel: str | None = None, message_ts: str | None = None) -> str:
        """Issue a ``response_url`` (``http://127.0.0.1:<port>/response/<id>``).

        When bound to ``channel``/``message_ts``, ``replace_original``/``delete_original``
        posts act on that stored message, and ``response_type: in_channel`` posts (without
        replace) store a new message in ``channel``.
        """
        url_id = f"R{next(self._id_counter):06d}"
        self._response_targets[url_id] = ResponseTarget(channel, message_ts)
        self.response_url_limits.issued(url_id)
        return f"{self.base_url}response/{url_id}"

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
        refusal = self.response_url_limits.refusal(url_id)
        if refusal is not None:  # past 5 uses or 30 minutes (see `limits`)
            record.error = refusal
            return web.Response(status=404, text=refusal)
        if not isinstance(body, dict):
            record.error = "invalid_payload"
            return web.Response(status=400, text=record.error)
        try:
            self._apply_response(target, body)
        except SlackError as exc:
            record.error = exc.error
            record.errors = list(exc.extra.get("errors", []))
            return web.Response(status=400, text=exc.error)
        return web.Response(status=200, text="ok")

    def age_response_url(self, url: str, seconds: float) -> None:
        """Make the response_url `url` as if Slack issued it `seconds` ago."""
        self.response_url_limits.age(url.rsplit("/", 1)[-1], seconds)

    def _apply_response(self, target: ResponseTarget, body: dict[str, Any]) -> None:
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

    def _target_message(self, target: ResponseTarget) -> dict[str, Any] | None:
        if target.channel is None or target.message_ts is None:
            return None
        return self.message(target.channel, target.message_ts)

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_post("/response/{url_id}", self._handle_response_url)
