"""Socket Mode end to end: `uat-bot serve` with SLACK_APP_TOKEN takes Slack's commands, clicks and
events over the stub's websocket (apps.connections.open, hello, envelopes acked by envelope_id)
and answers them exactly as over /slack/events."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

import bot.slack.socket_mode
from bot.app import Runtime
from bot.slack import action_ids, slack_ui
from bot.slack.cards import card_value
from tests.harness.bot import CHANNEL, DEPLOYER, DEVELOPER, ROOT, Bot, BotFactory
from tests.harness.pull_requests import label, root_messages
from tests.harness.slack_stub import SlackStub
from tests.harness.slack_stub.socket_mode import APP_TOKEN
from tests.harness.socket_bot import (
    click_payload,
    event_payload,
    slash_over_socket,
    socket_bot,
)
from tests.harness.uat_aws import Containers, UatAccount


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
    status, _ = await bot.post_slack(b"command=/uat&text=help", {})
    assert status == 404  # no public /slack/events to sign requests for in Socket Mode
    status, over_http = await (await make_bot()).slash("help")
    assert status == 200
    assert slack_ui.HELP_HEADER in ack["payload"]["text"]
    assert ack["payload"] == _as_payload(over_http)
    assert slack.late_acks == []


def _as_payload(http_body: str) -> object:
    """What Bolt puts in a Socket Mode ack for an HTTP answer's body (none for an empty one)."""
    if not http_body:
        return None
    try:
        return json.loads(http_body)
    except ValueError:
        return {"text": http_body}


async def test_every_uat_command_acks_and_answers_over_socket_mode_as_over_http(
    make_bot: BotFactory, slack: SlackStub
) -> None:
    over_socket = await socket_bot(make_bot)
    over_http = await make_bot()
    names = sorted(c.name for c in over_http.runtime.dispatcher.table.values())
    assert len(names) > 5
    for name in names:
        before = len(slack.responses)
        status, http_ack = await over_http.slash(name)
        await over_http.settle()
        http_answers = [r.body for r in slack.responses[before:]]
        before = len(slack.responses)
        _, ack = await slash_over_socket(over_socket, name)
        await over_socket.settle()
        socket_answers = [r.body for r in slack.responses[before:]]
        assert status == 200
        assert ack.get("payload") == _as_payload(http_ack), name
        assert socket_answers == http_answers, name
    assert slack.late_acks == []


def counting_dispatches(seen: Counter[str]) -> Any:
    """A configure hook: count every request Bolt runs, by its response_url."""

    def configure(runtime: Runtime) -> None:
        assert runtime.bolt is not None
        original = runtime.bolt.async_dispatch

        async def counted(req: AsyncBoltRequest) -> BoltResponse:
            seen[str(req.body.get("response_url"))] += 1
            return await original(req)

        runtime.bolt.async_dispatch = counted  # type: ignore[method-assign]

    return configure


async def burst_with(bot: Bot, interruption: Any, n: int = 20) -> list[str]:
    """Send `n` /uat help commands, interrupting the connection halfway; their envelope ids."""
    sent = []
    for i in range(n):
        if i == n // 2:
            await interruption()
        fields = {"command": "/uat", "text": "help", "user_id": "U0DEVELOPER"}
        fields |= {"channel_id": "C0UAT", "response_url": bot.slack.new_response_url()}
        fields |= {"team_id": "T0001", "api_app_id": "A0001", "trigger_id": f"t.{i}"}
        sent.append(
            await bot.slack.send_envelope("slash_commands", fields, accepts_response_payload=True)
        )
    return sent


@pytest.mark.parametrize("reason", ["refresh_requested", "warning"])
async def test_a_disconnect_mid_burst_reconnects_and_loses_and_duplicates_nothing(
    make_bot: BotFactory, slack: SlackStub, reason: str
) -> None:
    seen: Counter[str] = Counter()
    socket = await socket_bot(make_bot, configure=counting_dispatches(seen))
    sent = await burst_with(socket, lambda: slack.ask_to_reconnect(reason))
    acks = [await slack.ack_of(e, timeout=10) for e in sent]
    assert all(slack_ui.HELP_HEADER in a["payload"]["text"] for a in acks)
    await slack.wait_for(lambda s: s.hellos == 2 and s.connected())
    assert len(seen) == len(sent) and set(seen.values()) == {1}
    assert slack.late_acks == []
    assert slack.calls_to("apps.connections.open")[-1].response["ok"] is True


async def test_a_dropped_connection_is_reconnected_and_unacked_envelopes_run_once(
    make_bot: BotFactory, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.slack.socket_mode, "PING_INTERVAL_S", 0.2)
    seen: Counter[str] = Counter()
    socket = await socket_bot(make_bot, configure=counting_dispatches(seen))

    async def drop() -> None:
        slack.drop_connections()

    sent = await burst_with(socket, drop)
    acks = [await slack.ack_of(e, timeout=15) for e in sent]
    assert all(slack_ui.HELP_HEADER in a["payload"]["text"] for a in acks)
    assert slack.hellos >= 2
    assert len(seen) == len(sent) and set(seen.values()) == {1}


async def test_a_link_that_fails_to_open_is_replaced_by_a_new_one_not_tried_again(
    make_bot: BotFactory, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.slack.socket_mode, "PING_INTERVAL_S", 0.2)
    socket = await socket_bot(make_bot)
    slack.refuse_links(times=1)  # the next link's handshake fails, and its ticket is spent
    await slack.ask_to_reconnect()
    await slack.wait_for(lambda s: s.hellos == 2 and s.connected(), timeout=10)
    # the first link, the one that failed, then a new one (the spent one is never tried again)
    assert len(slack.calls_to("apps.connections.open")) == 3
    _, ack = await slash_over_socket(socket, "help")
    assert slack_ui.HELP_HEADER in ack["payload"]["text"]


async def test_an_envelope_sent_again_is_acked_again_but_handled_once(
    make_bot: BotFactory, slack: SlackStub
) -> None:
    seen: Counter[str] = Counter()
    socket = await socket_bot(make_bot, configure=counting_dispatches(seen))
    envelope_id, first = await slash_over_socket(socket, "help")
    envelope = slack.envelopes[envelope_id]
    envelope.acked = asyncio.get_running_loop().create_future()  # as if the ack was lost
    await slack.ask_to_reconnect()  # Slack sends it again on the next connection
    again = await slack.ack_of(envelope_id, timeout=10)
    assert again == first and envelope.deliveries == 2
    assert list(seen.values()) == [1]


async def test_healthz_reports_the_websocket_connected_then_reconnecting_then_connected(
    make_bot: BotFactory, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.slack.socket_mode, "PING_INTERVAL_S", 0.2)
    monkeypatch.setattr(bot.slack.socket_mode, "BACKOFF_FIRST_S", 0.2)
    socket = await socket_bot(make_bot)

    async def healthz() -> tuple[int, dict[str, Any]]:
        async with socket.http.get(f"{socket.url}/healthz") as response:
            return response.status, await response.json()

    assert await healthz() == (200, {**(await healthz())[1], "socket_mode": "connected"})
    slack.fail("apps.connections.open", status=503, times=3)  # Slack unreachable for a while
    slack.drop_connections()
    status, body = await healthz()
    for _ in range(50):
        if status == 503:
            break
        await asyncio.sleep(0.1)
        status, body = await healthz()
    assert status == 503 and body["socket_mode"].startswith("Socket Mode reconnecting since ")
    await slack.wait_for(lambda s: s.hellos == 2 and s.connected(), timeout=20)
    status, body = await healthz()
    assert (status, body["socket_mode"]) == (200, "connected")
    assert len(slack.calls_to("apps.connections.open")) == 5  # first, 3 refused, then one


async def test_a_button_click_over_socket_mode_is_answered_as_over_http(
    make_bot: BotFactory, slack: SlackStub
) -> None:
    socket = await socket_bot(make_bot)
    over_http = await make_bot()
    value = card_value(ref="main")
    http_answers = await over_http.click(action_ids.LATEST_CONFIRM, value, user=DEVELOPER)
    response_url = slack.new_response_url()
    payload = click_payload(
        action_ids.LATEST_CONFIRM, value, user=DEVELOPER, response_url=response_url
    )
    envelope_id = await slack.send_envelope("interactive", payload)
    assert await slack.ack_of(envelope_id) == {"envelope_id": envelope_id}
    await socket.settle()
    socket_answers = [a for a in slack.responses if response_url.endswith(f"/{a.url_id}")]
    assert [a.body for a in socket_answers] == [a.body for a in http_answers]
    assert [a.body.get("text") for a in socket_answers] == [
        slack_ui.deployers_only("build straight to :latest", [DEPLOYER])
    ]


async def test_a_label_posts_its_card_and_a_thread_reply_is_relayed_once_over_socket_mode(
    make_bot: BotFactory, slack: SlackStub, account: UatAccount, containers: Containers
) -> None:
    socket = await socket_bot(make_bot, **account.env(containers.url))
    await socket.settle_startup()
    await label(socket)  # GitHub's webhooks still come over HTTP
    [root] = root_messages(socket)
    assert "#2" in root["text"]
    before = len(slack.thread(CHANNEL, root["ts"]))
    reply_ts = slack.add_message(CHANNEL, "add a dark mode", user="U0HUMAN", thread_ts=root["ts"])
    event = {"type": "message", "channel": CHANNEL, "user": "U0HUMAN", "text": "add a dark mode"}
    payload = event_payload(event | {"ts": reply_ts, "thread_ts": root["ts"]})
    first = await slack.send_envelope("events_api", payload)
    again = await slack.send_envelope("events_api", payload)  # Slack retries the event
    assert await slack.ack_of(first) == {"envelope_id": first}
    assert await slack.ack_of(again) == {"envelope_id": again}
    # the reply reached the prompt relay (once): the environment is not ready, and it says so
    env = await socket.runtime.services.store.get_environment("Codertocat/Hello-World", 2)
    assert env is not None
    hint = slack_ui.not_ready(env).split(". ", 1)[1]  # "Its thread says when it is; …"

    def answers(stub: SlackStub) -> list[dict[str, Any]]:
        thread = stub.thread(CHANNEL, root["ts"])[before:]
        return [m for m in thread if m.get("bot_id") and hint in m["text"]]

    await slack.wait_for(answers)
    await socket.settle()
    await asyncio.sleep(0.5)  # time enough for a second answer, were the retry relayed too
    [answer] = answers(slack)
    assert answer["text"].startswith("Codertocat/Hello-World#2 is ")


def test_the_socket_mode_manifest_is_valid_and_differs_only_in_how_slack_reaches_the_bot() -> None:
    schema_dir = ROOT / "tests" / "fixtures" / "slack" / "manifest-schema" / "schemas"
    schema = json.loads((schema_dir / "manifest.schema.1.0.0.json").read_text())
    socket_mode = yaml.safe_load((ROOT / "manifest.socket-mode.yml").read_text())
    assert list(Draft7Validator(schema).iter_errors(socket_mode)) == []
    over_http = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert over_http["settings"]["socket_mode_enabled"] is False
    assert socket_mode["settings"].pop("socket_mode_enabled") is True
    over_http["settings"].pop("socket_mode_enabled")
    del over_http["settings"]["event_subscriptions"]["request_url"]
    del over_http["settings"]["interactivity"]["request_url"]
    for command in over_http["features"]["slash_commands"]:
        del command["url"]
    assert socket_mode == over_http
