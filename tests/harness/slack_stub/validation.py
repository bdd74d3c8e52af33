"""What the stub checks the way Slack does: Block Kit, metadata, arguments, and the errors
it answers with."""

from __future__ import annotations

import base64
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from slack_sdk.models.blocks import Block

# https://docs.slack.dev/reference/methods/chat.postMessage: text is truncated past 40,000
# characters and ``msg_too_long`` refused; "up to 50 blocks" in a message.
MAX_TEXT_CHARS = 40_000
MAX_MESSAGE_BLOCKS = 50
# https://docs.slack.dev/reference/views: "up to 100 blocks" in a modal or Home tab view.
MAX_VIEW_BLOCKS = 100
# https://docs.slack.dev/reference/block-kit/blocks/section-block: text "Minimum length ... is 1
# and maximum length is 3000 characters"; fields: "Maximum number of items is 10. Maximum length
# for the text in each item is 2000 characters." slack_sdk checks the 3,000 and the 10 (and a
# header's 150, a button's text 75 / value 2,000 / url 3,000); the rest is checked here.
MIN_SECTION_TEXT_CHARS = 1
MAX_SECTION_FIELD_CHARS = 2_000
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
    # https://docs.slack.dev/messaging/message-metadata/designing-metadata-event-schema (was
    # https://api.slack.com/reference/metadata): event_type "should be an alphanumeric string"
    # (snake_case), but "none of these guidelines are enforced programmatically", so only its
    # presence is checked here; refusing e.g. "uat.card" would be stricter than Slack.
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
            continue
        errors += [f"{problem} {pointer}" for problem in _unchecked_by_slack_sdk(raw)]
    return errors + _duplicate_block_ids(blocks, where)


def _unchecked_by_slack_sdk(block: dict[str, Any]) -> list[str]:
    """What Slack refuses in one block that slack_sdk's models let through."""
    problems: list[str] = []
    if block["type"] == "section":
        text = block.get("text")
        if isinstance(text, dict) and len(str(text.get("text", ""))) < MIN_SECTION_TEXT_CHARS:
            problems.append(f"text must be at least {MIN_SECTION_TEXT_CHARS} character")
        for field_obj in block.get("fields") or []:
            if isinstance(field_obj, dict) and len(str(field_obj.get("text", ""))) > (
                MAX_SECTION_FIELD_CHARS
            ):
                problems.append(f"fields item cannot exceed {MAX_SECTION_FIELD_CHARS} characters")
    # https://docs.slack.dev/reference/block-kit/block-elements: an action_id "should be unique
    # among all other action_ids in the containing block" (Slack refuses a repeat).
    elements = [e for e in block.get("elements") or [] if isinstance(e, dict)]
    for key in ("accessory", "element"):
        if isinstance(block.get(key), dict):
            elements.append(block[key])
    action_ids = [e["action_id"] for e in elements if isinstance(e.get("action_id"), str)]
    for action_id in sorted({a for a in action_ids if action_ids.count(a) > 1}):
        problems.append(f"action_id {action_id!r} is not unique in its block")
    return problems


def _duplicate_block_ids(blocks: list[Any], where: str) -> list[str]:
    """https://docs.slack.dev/reference/block-kit/blocks: "block_id should be unique for each
    message and each iteration of a message" (Slack refuses a repeat with invalid_blocks)."""
    seen: set[str] = set()
    problems: list[str] = []
    for index, raw in enumerate(blocks):
        block_id = raw.get("block_id") if isinstance(raw, dict) else None
        if not isinstance(block_id, str):
            continue
        if block_id in seen:
            problems.append(
                f"block_id {block_id!r} is not unique [json-pointer:/{where}/{index}/block_id]"
            )
        seen.add(block_id)
    return problems


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
