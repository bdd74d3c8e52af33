"""Socket Mode end to end: `uat-bot serve` with SLACK_APP_TOKEN takes Slack's commands, clicks and
events over the stub's websocket (apps.connections.open, hello, envelopes acked by envelope_id)
and answers them exactly as over /slack/events."""

from __future__ import annotations

import json

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import slack_ui
from tests.harness.bot import BotFactory
from tests.harness.slack_stub import SlackStub
from tests.harness.slack_stub.socket_mode import APP_TOKEN
from tests.harness.socket_bot import APP_TOKEN_PLACEHOLDER, slash_over_socket, socket_bot


def test_the_harness_starts_bots_with_the_stubs_app_token() -> None:
    assert APP_TOKEN_PLACEHOLDER == APP_TOKEN


@pytest.mark.parametrize(
    ("token", "error"),
    [("xoxb-test-token", "not_allowed_token_type"), ("xapp-1-A0001-1-wrong", "invalid_auth")],
)
async def test_connections_open_takes_only_the_app_level_token(
    slack: SlackStub, token: str, error: str
) -> None:
    client = AsyncWebClient(token=token, base_url=slack.api_url)
    with pytest.raises(SlackApiError) as refused:
        await client.apps_connections_open(app_token=token)
    assert refused.value.response["error"] == error
    opened = await client.apps_connections_open(app_token=APP_TOKEN)
    assert str(opened["url"]).startswith(f"ws://127.0.0.1:{slack.port}/link/?ticket=")


async def test_serve_connects_says_hello_and_answers_help_in_its_ack(
    make_bot: BotFactory, slack: SlackStub
) -> None:
    bot = await socket_bot(make_bot)
    assert slack.hellos == 1 and slack.connected()
    assert [c.method for c in slack.calls].count("apps.connections.open") == 1
    envelope_id, ack = await slash_over_socket(bot, "help")
    assert ack["envelope_id"] == envelope_id
    status, over_http = await (await make_bot()).slash("help")
    assert status == 200
    assert slack_ui.HELP_HEADER in ack["payload"]["text"]
    assert ack["payload"] == _as_payload(over_http)
    assert slack.late_acks == []


def _as_payload(http_body: str) -> object:
    """What Bolt puts in a Socket Mode ack for an HTTP answer's body."""
    try:
        return json.loads(http_body)
    except ValueError:
        return {"text": http_body}
