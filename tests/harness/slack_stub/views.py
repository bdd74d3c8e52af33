"""views.publish (App Home) and views.open (modals)."""

from __future__ import annotations

import time
from typing import Any

from slack_sdk.models.views import View

from tests.harness.slack_stub.server import APP_ID, BOT_ID, TEAM_ID, Handler, StubServer
from tests.harness.slack_stub.validation import (
    MAX_VIEW_BLOCKS,
    SlackError,
    invalid_blocks,
    missing,
    validate_blocks,
)


class ViewMethods(StubServer):
    """views.publish (App Home) and views.open (modals)."""

    def _checked_view(self, params: dict[str, Any], expected_type: str) -> dict[str, Any]:
        view = params.get("view")
        if view is None or view == "":
            raise missing("view")
        if not isinstance(view, dict):
            raise SlackError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] view must be a JSON object"]},
            )
        if view.get("type") != expected_type:
            message = f"[ERROR] view.type must be {expected_type!r} [json-pointer:/view/type]"
            raise SlackError("invalid_arguments", response_metadata={"messages": [message]})
        blocks = view.get("blocks")
        if blocks is None:
            raise missing("blocks")
        errors = validate_blocks(blocks, limit=MAX_VIEW_BLOCKS, where="view/blocks", min_items=1)
        if errors:
            raise invalid_blocks(errors)
        if expected_type == "modal" and not view.get("title"):
            raise missing("title")
        try:
            View(**view).validate_json()
        except Exception as exc:
            raise SlackError(
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
        user_id = self._required_param(params, "user_id")
        view = self._checked_view(params, "home")
        expected_hash = self._str_param(params, "hash")
        current = self.home_views.get(user_id)
        if expected_hash is not None and current is not None and current["hash"] != expected_hash:
            raise SlackError("hash_conflict")
        stored = self._stored_view(view)
        self.home_views[user_id] = stored
        return {"ok": True, "view": stored}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        self._required_param(params, "trigger_id")
        view = self._checked_view(params, "modal")
        stored = self._stored_view(view)
        self.opened_views.append(stored)
        return {"ok": True, "view": stored}

    def _handlers(self) -> dict[str, Handler]:
        return {
            **super()._handlers(),
            "views.publish": self._views_publish,
            "views.open": self._views_open,
        }
