"""What the stub checks the way Slack does: Block Kit, metadata, arguments, and the errors
it answers with."""

from __future__ import annotations

import base64
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from slack_sdk.models.blocks import Block

MAX_TEXT_CHARS = 40_000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_ATTACHMENTS = 100
# Fields Slack accepts as a JSON-encoded string inside form/query data.
JSON_FIELDS = ("blocks", "attachments", "view", "metadata", "files")


class SlackError(Exception):
    """Raised inside a handler to answer ``{"ok": false, "error": name, ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def missing(field_name: str) -> SlackError:
    return invalid_arguments(f"missing required field: {field_name}")


def invalid_arguments(problem: str) -> SlackError:
    return SlackError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {problem}"]})


def flag(value: Any) -> bool:
    """Slack's reading of a boolean argument: true, "true" and "1" (any case) are true."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1")


def is_reply(msg: dict[str, Any]) -> bool:
    thread_ts = msg.get("thread_ts")
    return thread_ts is not None and thread_ts != msg["ts"]


def ts_key(msg: dict[str, Any]) -> Decimal:
    return Decimal(msg["ts"])


def ts_value(raw: str, error: str) -> Decimal:
    """A Slack ts (or oldest/latest bound) as a number; ``error`` when it is not one."""
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SlackError(error) from None
    if not value.is_finite():
        raise SlackError(error)
    return value


def encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def checked_metadata(params: dict[str, Any]) -> dict[str, Any] | None:
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
    raise SlackError(error, response_metadata={"messages": [f"[ERROR] {problem}"]})


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


def decode_json_field(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_blocks(errors: list[str]) -> SlackError:
    return SlackError("invalid_blocks", errors=errors, response_metadata={"messages": list(errors)})
