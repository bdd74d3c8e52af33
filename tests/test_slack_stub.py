"""Tests for the loopback Slack Web API stub, driven through a real slack_sdk AsyncWebClient."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.slack_stub import SlackStub

SECTION: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}


@pytest.fixture
async def stub() -> AsyncIterator[SlackStub]:
    async with SlackStub() as s:
        yield s


@pytest.fixture
def client(stub: SlackStub) -> AsyncWebClient:
    return AsyncWebClient(token=stub.token, base_url=stub.api_url)


async def expect_error(coro: Any, error: str) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await coro
    assert info.value.response["ok"] is False
    assert info.value.response["error"] == error, info.value.response.data
    return info.value


# ----------------------------------------------------------------------------- lifecycle/auth


async def test_binds_loopback_ephemeral_port_and_stops() -> None:
    stub = SlackStub()
    await stub.start()
    assert stub.api_url == f"http://127.0.0.1:{stub.port}/api/"
    assert stub.port > 0
    await stub.stop()
    client = AsyncWebClient(token=stub.token, base_url=stub.api_url)
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.auth_test()


async def test_auth_test_identity(stub: SlackStub, client: AsyncWebClient) -> None:
    resp = await client.auth_test()
    assert resp["ok"] is True
    assert (resp["user_id"], resp["bot_id"], resp["team_id"]) == ("UBOT", "BBOT", "T0001")
    assert resp["url"] == stub.base_url
    [call] = stub.calls_to("auth.test")
    assert call.headers["Authorization"] == f"Bearer {stub.token}"


async def test_wrong_token_is_refused(stub: SlackStub) -> None:
    bad = AsyncWebClient(token="xoxb-wrong", base_url=stub.api_url)
    await expect_error(bad.chat_postMessage(channel="C1", text="hi"), "invalid_auth")
    assert stub.messages == {}
    assert stub.calls_to("chat.postMessage")[0].error == "invalid_auth"


async def test_missing_token_is_not_authed(stub: SlackStub) -> None:
    anonymous = AsyncWebClient(base_url=stub.api_url)
    await expect_error(anonymous.auth_test(), "not_authed")


async def test_token_in_form_field_is_accepted(stub: SlackStub) -> None:
    blocks = json.dumps([SECTION])
    form = {"token": stub.token, "channel": "C1", "text": "form", "blocks": blocks}
    async with aiohttp.ClientSession() as session:
        async with session.post(stub.api_url + "chat.postMessage", data=form) as resp:
            body = await resp.json()
        async with session.post(
            stub.api_url + "chat.postMessage", data={**form, "token": "nope"}
        ) as resp:
            refused = await resp.json()
    assert body["ok"] is True
    assert refused == {"ok": False, "error": "invalid_auth"}
    # blocks sent as a JSON string inside form data are decoded in the record and the store
    assert stub.calls[0].params["blocks"] == [SECTION]
    assert stub.messages["C1"][0]["blocks"] == [SECTION]


async def test_unknown_method(client: AsyncWebClient) -> None:
    await expect_error(client.api_call("chat.doesNotExist", json={"x": 1}), "unknown_method")


# ----------------------------------------------------------------------------- messages


async def test_post_message_and_update_round_trip(stub: SlackStub, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="deploying", blocks=[SECTION])
    ts = posted["ts"]
    assert posted["channel"] == "C1"
    assert posted["message"]["text"] == "deploying"
    assert stub.message("C1", ts) is not None

    new_blocks = [{"type": "section", "text": {"type": "plain_text", "text": "done"}}]
    updated = await client.chat_update(channel="C1", ts=ts, text="deployed", blocks=new_blocks)
    assert updated["ts"] == ts
    assert updated["text"] == "deployed"

    stored = stub.message("C1", ts)
    assert stored is not None
    assert stored["text"] == "deployed"
    assert stored["blocks"] == new_blocks
    assert stored["user"] == "UBOT"
    assert len(stub.messages["C1"]) == 1
    assert [c.method for c in stub.calls] == ["chat.postMessage", "chat.update"]


async def test_update_without_blocks_keeps_previous_blocks(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel="C1", text="a", blocks=[SECTION]))["ts"]
    await client.chat_update(channel="C1", ts=ts, text="b")
    stored = stub.message("C1", ts)
    assert stored is not None
    assert (stored["text"], stored["blocks"]) == ("b", [SECTION])


async def test_ts_values_are_unique_increasing_and_slack_shaped(client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text=str(i)))["ts"] for i in range(5)]
    assert len(set(stamps)) == 5
    assert stamps == sorted(stamps, key=float)
    for ts in stamps:
        seconds, micros = ts.split(".")
        assert len(seconds) == 10 and len(micros) == 6 and seconds.isdigit() and micros.isdigit()


async def test_update_of_unknown_ts_is_message_not_found(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    await client.chat_postMessage(channel="C1", text="x")
    await expect_error(
        client.chat_update(channel="C1", ts="1234567890.000001", text="y"), "message_not_found"
    )
    await expect_error(
        client.chat_update(channel="C-unknown", ts="1234567890.000001", text="y"),
        "channel_not_found",
    )
    assert stub.messages["C1"][0]["text"] == "x"


async def test_post_message_argument_errors(stub: SlackStub, client: AsyncWebClient) -> None:
    await expect_error(client.api_call("chat.postMessage", json={"text": "x"}), "channel_not_found")
    await expect_error(client.api_call("chat.postMessage", json={"channel": "C1"}), "no_text")
    await expect_error(client.chat_postMessage(channel="C1", text="x" * 40_001), "msg_too_long")
    assert stub.messages == {}


async def test_invalid_blocks_are_rejected(stub: SlackStub, client: AsyncWebClient) -> None:
    no_text = [{"type": "section"}]
    exc = await expect_error(
        client.chat_postMessage(channel="C1", text="x", blocks=no_text), "invalid_blocks"
    )
    assert any("text or fields" in e for e in exc.response["errors"])

    unknown = [{"type": "not_a_block", "text": "x"}]
    exc = await expect_error(
        client.chat_postMessage(channel="C1", text="x", blocks=unknown), "invalid_blocks"
    )
    assert any("not_a_block" in e for e in exc.response["errors"])

    too_long = [{"type": "header", "text": {"type": "plain_text", "text": "h" * 200}}]
    await expect_error(
        client.chat_postMessage(channel="C1", text="x", blocks=too_long), "invalid_blocks"
    )

    fifty_one = [{"type": "divider"}] * 51
    await expect_error(
        client.chat_postMessage(channel="C1", text="x", blocks=fifty_one), "invalid_blocks"
    )
    assert stub.messages == {}

    ts = (await client.chat_postMessage(channel="C1", text="ok", blocks=[SECTION]))["ts"]
    await expect_error(
        client.chat_update(channel="C1", ts=ts, text="t", blocks=no_text), "invalid_blocks"
    )
    stored = stub.message("C1", ts)
    assert stored is not None and stored["blocks"] == [SECTION]


async def test_thread_replies_are_recorded(stub: SlackStub, client: AsyncWebClient) -> None:
    parent = (await client.chat_postMessage(channel="C1", text="parent"))["ts"]
    r1 = await client.chat_postMessage(channel="C1", text="one", thread_ts=parent)
    r2 = await client.chat_postMessage(channel="C1", text="two", thread_ts=parent)
    await client.chat_postMessage(channel="C1", text="top level")

    replies = stub.thread("C1", parent)
    assert [m["text"] for m in replies] == ["one", "two"]
    assert [m["ts"] for m in replies] == [r1["ts"], r2["ts"]]
    assert all(m["thread_ts"] == parent for m in replies)
    assert r1["message"]["thread_ts"] == parent
    root = stub.message("C1", parent)
    assert root is not None and root["reply_count"] == 2

    await expect_error(
        client.chat_postMessage(channel="C1", text="x", thread_ts="1111111111.000001"),
        "thread_not_found",
    )
    await expect_error(
        client.chat_postMessage(channel="C2", text="x", thread_ts=parent), "thread_not_found"
    )


async def test_reply_to_seeded_human_message(stub: SlackStub, client: AsyncWebClient) -> None:
    human_ts = stub.add_message("C9", "deploy pr 42 please", user="U123")
    await client.chat_postMessage(channel="C9", text="on it", thread_ts=human_ts)
    assert [m["text"] for m in stub.thread("C9", human_ts)] == ["on it"]
    assert stub.calls_to("chat.postMessage")[0].ok


async def test_ephemeral_delete_and_permalink(stub: SlackStub, client: AsyncWebClient) -> None:
    eph = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert stub.ephemerals[0]["user"] == "U1"
    assert stub.ephemerals[0]["message_ts"] == eph["message_ts"]
    await expect_error(
        client.api_call("chat.postEphemeral", json={"channel": "C1", "text": "x"}),
        "invalid_arguments",
    )

    ts = (await client.chat_postMessage(channel="C1", text="bye"))["ts"]
    link = await client.chat_getPermalink(channel="C1", message_ts=ts)
    assert link["permalink"].startswith(f"{stub.base_url}archives/C1/p")
    await client.chat_delete(channel="C1", ts=ts)
    assert stub.message("C1", ts) is None
    assert stub.deleted[0]["ts"] == ts
    await expect_error(client.chat_delete(channel="C1", ts=ts), "message_not_found")


# ----------------------------------------------------------------------------- views


async def test_views_publish_and_open(stub: SlackStub, client: AsyncWebClient) -> None:
    home = {"type": "home", "blocks": [SECTION]}
    resp = await client.views_publish(user_id="U1", view=home)
    assert resp["view"]["type"] == "home"
    assert stub.home_views["U1"]["blocks"] == [SECTION]

    await expect_error(
        client.views_publish(user_id="U1", view={"type": "modal", "blocks": []}),
        "invalid_arguments",
    )
    await expect_error(
        client.views_publish(user_id="U1", view={"type": "home", "blocks": [{"type": "x"}]}),
        "invalid_blocks",
    )
    await expect_error(
        client.views_publish(user_id="U1", view={"type": "home", "blocks": []}), "invalid_blocks"
    )
    await expect_error(
        client.views_publish(
            user_id="U1", view={"type": "home", "blocks": [{"type": "divider"}] * 101}
        ),
        "invalid_blocks",
    )

    modal = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Deploy"},
        "blocks": [SECTION],
    }
    opened = await client.views_open(trigger_id="123.456.abc", view=modal)
    assert opened["view"]["id"].startswith("V")
    assert stub.opened_views[0]["title"]["text"] == "Deploy"
    await expect_error(client.api_call("views.open", json={"view": modal}), "invalid_arguments")


# ----------------------------------------------------------------------------- faults


async def test_rate_limit_then_success_with_retry_handler(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    stub.fail("chat.postMessage", status=429, retry_after=0)

    resp = await client.chat_postMessage(channel="C1", text="after retry")
    assert resp["ok"] is True
    calls = stub.calls_to("chat.postMessage")
    assert [c.failed_status for c in calls] == [429, None]
    assert calls[0].params["text"] == "after retry"
    assert len(stub.messages["C1"]) == 1


async def test_rate_limit_without_retry_handler_surfaces_retry_after(
    stub: SlackStub,
) -> None:
    client = AsyncWebClient(token=stub.token, base_url=stub.api_url, retry_handlers=[])
    stub.fail(None, status=429, retry_after=7, times=2)
    for _ in range(2):
        exc = await expect_error(client.auth_test(), "ratelimited")
        assert exc.response.status_code == 429
        assert exc.response.headers["Retry-After"] == "7"
    assert (await client.auth_test())["ok"] is True
    assert [c.failed_status for c in stub.calls] == [429, 429, None]


async def test_server_error_injection(stub: SlackStub) -> None:
    client = AsyncWebClient(token=stub.token, base_url=stub.api_url, retry_handlers=[])
    stub.fail("chat.postMessage", status=503, retry_after=None)
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="C1", text="x")
    assert info.value.response.status_code == 503
    # other methods are unaffected, and the fault was consumed
    assert (await client.auth_test())["ok"] is True
    assert (await client.chat_postMessage(channel="C1", text="x"))["ok"] is True
    assert stub.calls_to("chat.postMessage")[0].failed_status == 503


# ----------------------------------------------------------------------------- response_url


async def test_response_url_posts_are_recorded(stub: SlackStub) -> None:
    url = stub.new_response_url()
    assert url.startswith(f"http://127.0.0.1:{stub.port}/response/")
    webhook = AsyncWebhookClient(url)
    resp = await webhook.send(text="working on it", response_type="ephemeral")
    assert (resp.status_code, resp.body) == (200, "ok")

    bad = await webhook.send(text="x", blocks=[{"type": "section"}])
    assert bad.status_code == 400 and bad.body == "invalid_blocks"

    assert [r.body.get("text") for r in stub.responses] == ["working on it", "x"]
    assert stub.responses[0].error is None
    assert stub.responses[0].body["response_type"] == "ephemeral"
    assert stub.responses[1].error == "invalid_blocks"
    assert url.endswith(stub.responses[0].url_id)

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stub.base_url}response/nope", json={"text": "x"}) as r,
    ):
        assert r.status == 404


async def test_response_url_replace_original(stub: SlackStub, client: AsyncWebClient) -> None:
    ts = (await client.chat_postMessage(channel="C1", text="pick one", blocks=[SECTION]))["ts"]
    webhook = AsyncWebhookClient(stub.new_response_url(channel="C1", message_ts=ts))
    resp = await webhook.send(text="picked", replace_original=True)
    assert resp.status_code == 200
    stored = stub.message("C1", ts)
    assert stored is not None
    assert (stored["text"], stored["blocks"]) == ("picked", None)


# ----------------------------------------------------------------------------- helpers


async def test_wait_for_returns_value_and_times_out_readably(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    async def post_later() -> None:
        await asyncio.sleep(0.05)
        await client.chat_postMessage(channel="C1", text="late")

    task = asyncio.create_task(post_later())
    msg = await stub.wait_for(lambda s: s.messages["C1"][0])
    await task
    assert msg["text"] == "late"

    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        await stub.wait_for(lambda s: len(s.calls) > 5, timeout=0.1)
    assert time.monotonic() - started < 2
    assert "chat.postMessage -> ok" in str(info.value)
    assert '"text": "late"' in str(info.value)


async def test_reset_clears_records(stub: SlackStub, client: AsyncWebClient) -> None:
    first = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    await client.chat_postEphemeral(channel="C1", user="U1", text="x")
    stub.fail("auth.test")
    stub.reset()
    assert (stub.calls, stub.messages, stub.ephemerals, stub.responses) == ([], {}, [], [])
    assert (await client.auth_test())["ok"] is True  # pending fault cleared too
    second = (await client.chat_postMessage(channel="C1", text="y"))["ts"]
    assert float(second) > float(first)
