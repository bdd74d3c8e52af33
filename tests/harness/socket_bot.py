"""Talk to a bot running in Socket Mode as Slack does: envelopes on the stub's websocket."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from tests.harness.bot import CHANNEL, DEVELOPER, Bot
from tests.harness.signing import block_actions_body, event_body, slash_command_body
from tests.harness.slack_stub.socket_mode import APP_TOKEN


async def socket_bot(make_bot: Any, **overrides: str) -> Bot:
    """A bot started with SLACK_APP_TOKEN: it serves Slack over the stub's websocket."""
    bot: Bot = await make_bot(SLACK_APP_TOKEN=APP_TOKEN, **overrides)
    return bot


async def slash_over_socket(
    bot: Bot, text: str, *, user: str = DEVELOPER, channel: str = CHANNEL
) -> tuple[str, dict[str, Any]]:
    """Send `/uat <text>` as a slash_commands envelope; its envelope id and the bot's ack."""
    fields = dict(
        parse_qsl(
            slash_command_body(
                text,
                user_id=user,
                channel_id=channel,
                response_url=bot.slack.new_response_url(),
            ).decode()
        )
    )
    envelope_id = await bot.slack.send_envelope(
        "slash_commands", fields, accepts_response_payload=True
    )
    return envelope_id, await bot.slack.ack_of(envelope_id)


def click_payload(action_id: str, value: str, *, user: str, response_url: str) -> dict[str, Any]:
    body = block_actions_body(
        action_id, value, user_id=user, channel_id=CHANNEL, response_url=response_url
    )
    payload: dict[str, Any] = json.loads(dict(parse_qsl(body.decode()))["payload"])
    return payload


def event_payload(event: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(event_body(event))
    return payload
