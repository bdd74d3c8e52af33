"""Sign requests exactly as Slack and GitHub do, for tests and benchmarks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": slack_signature(secret, ts, body),
    }


def slash_command_body(
    text: str,
    *,
    user_id: str = "U2147483697",
    channel_id: str = "C2147483705",
    response_url: str = "",
    command: str = "/uat",
    **extra: str,
) -> bytes:
    fields = {
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "team_id": "T0001",
        "team_domain": "example",
        "channel_id": channel_id,
        "channel_name": "uat",
        "user_id": user_id,
        "user_name": "steve",
        "command": command,
        "text": text,
        "api_app_id": "A123456",
        "response_url": response_url,
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        **extra,
    }
    return urlencode(fields).encode()


def block_actions_body(
    action_id: str,
    value: str,
    *,
    user_id: str,
    channel_id: str = "C2147483705",
    message_ts: str | None = None,
    response_url: str = "",
    block_id: str = "b",
) -> bytes:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": "T0001", "domain": "example"},
        "user": {"id": user_id, "username": "someone", "team_id": "T0001"},
        "api_app_id": "A123456",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "container": {"type": "message", "channel_id": channel_id, "is_ephemeral": False},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "channel": {"id": channel_id, "name": "uat"},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": block_id,
                "value": value,
                "text": {"type": "plain_text", "text": "x"},
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    if message_ts:
        payload["container"]["message_ts"] = message_ts
        payload["message"] = {"type": "message", "ts": message_ts, "text": ""}
    return urlencode({"payload": json.dumps(payload)}).encode()


def event_body(event: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO",
            "team_id": "T0001",
            "api_app_id": "A123456",
            "type": "event_callback",
            "event_id": "Ev" + uuid.uuid4().hex[:10].upper(),
            "event_time": int(time.time()),
            "event": event,
        }
    ).encode()


def github_headers(
    secret: str, body: bytes, event: str, delivery: str | None = None
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
