"""Tests for the loopback Slack Web API stub, driven through a real slack_sdk AsyncWebClient."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.harness.slack_stub import SlackStub, StubFile

SECTION: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}
METADATA: dict[str, Any] = {"event_type": "uat_run", "event_payload": {"pr": 42, "ok": True}}


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
    assert resp["url"] == "https://uat-test.slack.com/"  # the workspace, as Slack says
    [call] = stub.calls_to("auth.test")
    assert call.headers["Authorization"] == f"Bearer {stub.token}"


async def test_wrong_token_is_refused(stub: SlackStub) -> None:
    bad = AsyncWebClient(token="xoxb-wrong", base_url=stub.api_url)
    await expect_error(bad.chat_postMessage(channel="C1", text="hi"), "invalid_auth")
    assert stub.messages == {}
    assert stub.calls_to("chat.postMessage")[0].error == "invalid_auth"


async def test_auth_test_with_a_wrong_token_is_invalid_auth(stub: SlackStub) -> None:
    bad = AsyncWebClient(token="xoxb-wrong", base_url=stub.api_url)
    await expect_error(bad.auth_test(), "invalid_auth")
    assert stub.calls_to("auth.test")[0].response == {"ok": False, "error": "invalid_auth"}


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
    stub.add_channel("C2")
    await expect_error(
        client.chat_postMessage(channel="C2", text="x", thread_ts=parent), "thread_not_found"
    )


async def test_reply_to_seeded_human_message(stub: SlackStub, client: AsyncWebClient) -> None:
    stub.add_channel("C9")
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


async def test_an_ambiguous_fault_stores_the_message_then_answers_the_error(
    stub: SlackStub,
) -> None:
    client = AsyncWebClient(token=stub.token, base_url=stub.api_url, retry_handlers=[])
    stub.fail_after_storing("chat.postMessage", status=500)
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="C1", text="kept anyway")
    assert info.value.response.status_code == 500
    assert [m["text"] for m in stub.messages["C1"]] == ["kept anyway"]
    [call] = stub.calls_to("chat.postMessage")
    assert call.failed_status == 500


async def test_an_ambiguous_fault_can_answer_after_the_client_gave_up(stub: SlackStub) -> None:
    client = AsyncWebClient(token=stub.token, base_url=stub.api_url, timeout=1, retry_handlers=[])
    stub.fail_after_storing("chat.postMessage", status=200, delay_s=2.0)
    with pytest.raises(TimeoutError):
        await client.chat_postMessage(channel="C1", text="kept anyway")
    assert [m["text"] for m in stub.messages["C1"]] == ["kept anyway"]


async def test_a_plain_fault_on_a_post_leaves_its_channel_there_and_empty(stub: SlackStub) -> None:
    client = AsyncWebClient(token=stub.token, base_url=stub.api_url, retry_handlers=[])
    stub.fail("chat.postMessage", status=503, retry_after=None)
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C1", text="x")
    assert (await client.conversations_history(channel="C1"))["messages"] == []


async def test_a_fault_window_fails_every_call_until_it_lapses(stub: SlackStub) -> None:
    client = AsyncWebClient(token=stub.token, base_url=stub.api_url, retry_handlers=[])
    stub.fail_for(0.3, status=503)
    for _ in range(3):
        with pytest.raises(SlackApiError) as info:
            await client.auth_test()
        assert info.value.response.status_code == 503
    await asyncio.sleep(0.35)
    assert (await client.auth_test())["ok"] is True
    assert [c.failed_status for c in stub.calls] == [503, 503, 503, None]


async def test_a_window_after_storing_keeps_the_post_and_answers_the_failure(
    stub: SlackStub,
) -> None:
    client = AsyncWebClient(token=stub.token, base_url=stub.api_url, retry_handlers=[])
    stub.fail_for(5, status=500, method="chat.postMessage", after_storing=True)
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="C1", text="stored anyway")
    assert info.value.response.status_code == 500
    [message] = stub.messages["C1"]
    [call] = stub.calls_to("chat.postMessage")
    assert message["text"] == "stored anyway"
    assert (call.failed_status, (call.response or {}).get("ts")) == (500, message["ts"])


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


# ----------------------------------------------------------------------------- message metadata


async def test_metadata_is_stored_and_returned_only_with_include_all_metadata(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C1", text="run", metadata=METADATA)
    stored = stub.message("C1", posted["ts"])
    assert stored is not None and stored["metadata"] == METADATA
    assert "metadata" not in posted["message"]

    plain = await client.conversations_history(channel="C1")
    assert [m["ts"] for m in plain["messages"]] == [posted["ts"]]
    assert "metadata" not in plain["messages"][0]

    full = await client.conversations_history(channel="C1", include_all_metadata=True)
    assert full["messages"][0]["metadata"] == METADATA
    assert full["messages"][0]["text"] == "run"

    replaced = {"event_type": "uat_run_done", "event_payload": {"pr": 42}}
    updated = await client.chat_update(
        channel="C1", ts=posted["ts"], text="done", metadata=replaced
    )
    assert "metadata" not in updated["message"]
    stored = stub.message("C1", posted["ts"])
    assert stored is not None and stored["metadata"] == replaced
    await client.chat_update(channel="C1", ts=posted["ts"], text="again")
    assert stored["metadata"] == replaced  # an update without metadata keeps it


async def test_metadata_as_json_string_in_form_data(stub: SlackStub) -> None:
    form = {"channel": "C1", "text": "form", "metadata": json.dumps(METADATA)}
    headers = {"Authorization": f"Bearer {stub.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(stub.api_url + "chat.postMessage", data=form, headers=headers) as resp,
    ):
        body = await resp.json()
    assert body["ok"] is True
    assert stub.messages["C1"][0]["metadata"] == METADATA


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ("not json", "invalid_metadata_format"),
        ([METADATA], "invalid_metadata_format"),
        ('"a json string"', "invalid_metadata_format"),
        ({"event_payload": {}}, "invalid_metadata_schema"),
        ({"event_type": "", "event_payload": {}}, "invalid_metadata_schema"),
        ({"event_type": 7, "event_payload": {}}, "invalid_metadata_schema"),
        ({"event_type": "x"}, "invalid_metadata_schema"),
        ({"event_type": "x", "event_payload": "{}"}, "invalid_metadata_schema"),
    ],
)
async def test_invalid_metadata_is_rejected(
    stub: SlackStub, client: AsyncWebClient, metadata: Any, error: str
) -> None:
    args = {"channel": "C1", "text": "x", "metadata": metadata}
    await expect_error(client.api_call("chat.postMessage", json=args), error)
    assert stub.messages == {}

    ts = (await client.chat_postMessage(channel="C1", text="kept", metadata=METADATA))["ts"]
    await expect_error(
        client.api_call("chat.update", json={**args, "ts": ts, "text": "changed"}), error
    )
    stored = stub.message("C1", ts)
    assert stored is not None
    assert (stored["text"], stored["metadata"]) == ("kept", METADATA)


# ----------------------------------------------------------------------------- history/replies


async def test_history_paginates_newest_first(stub: SlackStub, client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text=str(i)))["ts"] for i in range(5)]
    await client.chat_postMessage(channel="C1", text="reply", thread_ts=stamps[0])
    stub.add_channel("C2")
    stub.add_message("C2", "other channel")

    pages: list[list[str]] = []
    more: list[bool] = []
    cursor: str | None = None
    while True:
        resp = await client.conversations_history(channel="C1", limit=2, cursor=cursor)
        pages.append([m["text"] for m in resp["messages"]])
        more.append(resp["has_more"])
        cursor = resp["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert pages == [["4", "3"], ["2", "1"], ["0"]]
    assert more == [True, True, False]
    # the thread root carries its reply count; the reply itself is not in history
    last = await client.conversations_history(channel="C1", oldest=stamps[0], inclusive=True)
    assert last["messages"][-1]["reply_count"] == 1
    assert "reply" not in [m["text"] for m in last["messages"]]

    await client.chat_delete(channel="C1", ts=stamps[2])
    resp = await client.conversations_history(channel="C1")
    assert [m["text"] for m in resp["messages"]] == ["4", "3", "1", "0"]
    assert resp["has_more"] is False and resp["response_metadata"]["next_cursor"] == ""


async def test_history_oldest_latest_inclusive(stub: SlackStub, client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text=str(i)))["ts"] for i in range(5)]

    def texts(resp: Any) -> list[str]:
        return [m["text"] for m in resp["messages"]]

    assert texts(await client.conversations_history(channel="C1", oldest=stamps[1])) == [
        "4",
        "3",
        "2",
    ]
    assert texts(
        await client.conversations_history(channel="C1", oldest=stamps[1], inclusive=True)
    ) == ["4", "3", "2", "1"]
    assert texts(
        await client.conversations_history(channel="C1", oldest=stamps[1], latest=stamps[3])
    ) == ["2"]
    # POST with a JSON body, inclusive as "true"
    resp = await client.api_call(
        "conversations.history",
        json={"channel": "C1", "latest": stamps[1], "inclusive": "true"},
    )
    assert texts(resp) == ["1", "0"]
    resp = await client.api_call(
        "conversations.history", json={"channel": "C1", "latest": stamps[1], "inclusive": "false"}
    )
    assert texts(resp) == ["0"]


async def test_history_errors_and_limit_clamp(stub: SlackStub, client: AsyncWebClient) -> None:
    await expect_error(client.conversations_history(channel="C-nope"), "channel_not_found")
    await expect_error(client.api_call("conversations.history", json={}), "channel_not_found")
    for _ in range(1000):
        stub.add_message("C1", "m")
    await expect_error(
        client.conversations_history(channel="C1", cursor="not-a-cursor"), "invalid_cursor"
    )
    await expect_error(
        client.conversations_history(channel="C1", oldest="soon"), "invalid_ts_oldest"
    )
    await expect_error(client.conversations_history(channel="C1", latest="x"), "invalid_ts_latest")
    await expect_error(
        client.conversations_history(channel="C1", latest="nan"), "invalid_ts_latest"
    )
    default = await client.conversations_history(channel="C1")
    assert len(default["messages"]) == 100 and default["has_more"] is True
    clamped = await client.conversations_history(channel="C1", limit=5000)
    assert len(clamped["messages"]) == 999 and clamped["has_more"] is True
    rest = await client.conversations_history(
        channel="C1", limit=5000, cursor=clamped["response_metadata"]["next_cursor"]
    )
    assert len(rest["messages"]) == 1 and rest["has_more"] is False


async def test_replies_parent_first_then_oldest_first(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    parent = (await client.chat_postMessage(channel="C1", text="parent", metadata=METADATA))["ts"]
    r1 = (await client.chat_postMessage(channel="C1", text="r1", thread_ts=parent))["ts"]
    lone = (await client.chat_postMessage(channel="C1", text="lone"))["ts"]
    stub.add_message("C1", "r2", thread_ts=parent)
    await client.chat_postMessage(channel="C1", text="r3", thread_ts=parent)

    def texts(resp: Any) -> list[str]:
        return [m["text"] for m in resp["messages"]]

    resp = await client.conversations_replies(channel="C1", ts=parent)
    assert texts(resp) == ["parent", "r1", "r2", "r3"]
    assert resp["messages"][0]["reply_count"] == 3
    assert "metadata" not in resp["messages"][0]
    assert resp["has_more"] is False and resp["response_metadata"]["next_cursor"] == ""
    # a reply's ts fetches its whole thread
    assert texts(await client.conversations_replies(channel="C1", ts=r1)) == texts(resp)
    # an unthreaded message is returned alone
    assert texts(await client.conversations_replies(channel="C1", ts=lone)) == ["lone"]

    full = await client.conversations_replies(channel="C1", ts=parent, include_all_metadata=True)
    assert full["messages"][0]["metadata"] == METADATA

    first = await client.conversations_replies(channel="C1", ts=parent, limit=2)
    assert texts(first) == ["parent", "r1"] and first["has_more"] is True
    second = await client.conversations_replies(
        channel="C1", ts=parent, limit=2, cursor=first["response_metadata"]["next_cursor"]
    )
    assert texts(second) == ["r2", "r3"] and second["has_more"] is False

    # oldest filters replies; the parent still leads the first page
    assert texts(await client.conversations_replies(channel="C1", ts=parent, oldest=r1)) == [
        "parent",
        "r2",
        "r3",
    ]

    await expect_error(
        client.conversations_replies(channel="C1", ts="1111111111.000001"), "thread_not_found"
    )
    await expect_error(
        client.conversations_replies(channel="C-nope", ts=parent), "channel_not_found"
    )


# ----------------------------------------------------------------------------- file uploads


async def test_files_upload_v2_into_a_thread(stub: SlackStub, client: AsyncWebClient) -> None:
    parent = (await client.chat_postMessage(channel="C1", text="prompt"))["ts"]
    resp = await client.files_upload_v2(
        channel="C1",
        thread_ts=parent,
        content="x" * 100_000,
        filename="out.txt",
        title="Output",
        initial_comment="hi",
    )
    assert resp["ok"] is True
    [answered] = resp["files"]
    assert resp["file"] == answered
    assert (answered["name"], answered["title"], answered["size"]) == ("out.txt", "Output", 100_000)
    assert answered["mimetype"] == "text/plain"

    stored = stub.files[answered["id"]]
    assert isinstance(stored, StubFile)
    assert stored.content == b"x" * 100_000
    assert (stored.length, stored.name, stored.title) == (100_000, "out.txt", "Output")
    assert stored.completed and stored.uploaded
    [reply] = await stub.wait_for(lambda s: s.thread("C1", parent))
    assert (stored.channel, stored.thread_ts) == ("C1", parent)
    assert reply["ts"] == stored.message_ts
    assert reply["text"] == "hi"
    assert reply["files"] == [{"id": stored.id, "name": "out.txt", "title": "Output"}]
    root = stub.message("C1", parent)
    assert root is not None and root["reply_count"] == 1
    replies = await client.conversations_replies(channel="C1", ts=parent)
    assert replies["messages"][1]["files"][0]["id"] == stored.id

    assert [c.method for c in stub.calls] == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
        "conversations.replies",
    ]
    assert stub.calls[1].params["length"] == "100000"


async def test_file_upload_without_channel_is_not_shared(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    resp = await client.files_upload_v2(content=b"\x00\x01binary", filename="dump.bin")
    stored = stub.files[resp["file"]["id"]]
    assert stored.content == b"\x00\x01binary"
    assert stored.completed is True
    assert (stored.channel, stored.thread_ts, stored.message_ts) == (None, None, None)
    assert stored.title == "dump.bin"
    assert stub.messages == {}


async def test_file_shared_to_another_channel_top_level(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    stub.add_channel("C7")
    resp = await client.files_upload_v2(channel="C7", content="log", filename="log.txt")
    [msg] = await stub.wait_for(lambda s: s.messages["C7"])
    assert msg["text"] == ""
    assert msg["files"][0]["id"] == resp["file"]["id"]
    assert stub.files[resp["file"]["id"]].message_ts == msg["ts"]
    history = await client.conversations_history(channel="C7")
    assert history["messages"][0]["files"][0]["name"] == "log.txt"


async def test_get_upload_url_argument_errors(stub: SlackStub, client: AsyncWebClient) -> None:
    exc = await expect_error(
        client.api_call("files.getUploadURLExternal", params={"length": 3}), "invalid_arguments"
    )
    assert "filename" in exc.response["response_metadata"]["messages"][0]
    exc = await expect_error(
        client.api_call("files.getUploadURLExternal", params={"filename": "a"}),
        "invalid_arguments",
    )
    assert "length" in exc.response["response_metadata"]["messages"][0]
    for bad in (0, -5, "ten", "1.5"):
        await expect_error(
            client.api_call("files.getUploadURLExternal", params={"filename": "a", "length": bad}),
            "invalid_arguments",
        )
    assert stub.files == {}
    ok = await client.files_getUploadURLExternal(filename="a.txt", length=3)
    assert ok["upload_url"] == f"{stub.base_url}upload/{ok['file_id']}"
    assert ok["file_id"].startswith("F")
    assert stub.files[ok["file_id"]].uploaded is False


async def test_upload_url_raw_and_multipart(stub: SlackStub, client: AsyncWebClient) -> None:
    issued = await client.files_getUploadURLExternal(filename="a.txt", length=5)
    url = issued["upload_url"]
    async with aiohttp.ClientSession() as session:  # no token, like files.slack.com
        async with session.post(url, data=b"123456") as resp:
            assert resp.status == 400
        assert stub.files[issued["file_id"]].uploaded is False
        async with session.post(f"{stub.base_url}upload/F-unknown", data=b"1") as resp:
            assert resp.status == 404
        form = aiohttp.FormData()
        form.add_field("file", b"hello", filename="a.txt")
        async with session.post(url, data=form) as resp:
            assert (resp.status, await resp.text()) == (200, "OK - 5")
    stored = stub.files[issued["file_id"]]
    assert (stored.content, stored.uploaded, stored.completed) == (b"hello", True, False)


async def test_complete_upload_errors(stub: SlackStub, client: AsyncWebClient) -> None:
    await expect_error(
        client.api_call("files.completeUploadExternal", params={"channel_id": "C1"}),
        "invalid_arguments",
    )
    await expect_error(
        client.files_completeUploadExternal(files=[{"id": "F-nope"}], channel_id="C1"),
        "file_not_found",
    )
    issued = await client.files_getUploadURLExternal(filename="a.txt", length=3)
    file_id = issued["file_id"]
    exc = await expect_error(
        client.files_completeUploadExternal(files=[{"id": file_id}], channel_id="C1"),
        "invalid_arguments",
    )
    assert "not uploaded" in exc.response["response_metadata"]["messages"][0]

    async with aiohttp.ClientSession() as session, session.post(issued["upload_url"], data=b"abc"):
        pass
    await expect_error(
        client.files_completeUploadExternal(
            files=[{"id": file_id}], channel_id="C1", thread_ts="1111111111.000001"
        ),
        "thread_not_found",
    )
    assert stub.messages == {}
    assert stub.files[file_id].completed is False

    done = await client.files_completeUploadExternal(
        files=[{"id": file_id, "title": "T"}], channel_id="C1"
    )
    assert done["files"][0]["title"] == "T"
    await expect_error(
        client.files_completeUploadExternal(files=[{"id": file_id}], channel_id="C1"),
        "invalid_arguments",
    )
    assert len(await stub.wait_for(lambda s: s.messages["C1"])) == 1


async def test_upload_fault_injection(stub: SlackStub, client: AsyncWebClient) -> None:
    stub.fail(None, status=500, times=1)  # API-wide faults skip the upload URL ...
    stub.fail("upload", status=500)
    with pytest.raises(SlackApiError):
        await client.files_upload_v2(channel="C1", content="x", filename="a.txt")
    with pytest.raises(SlackRequestError, match="status: 500"):
        await client.files_upload_v2(channel="C1", content="x", filename="a.txt")
    assert [f.uploaded for f in stub.files.values()] == [False]
    assert stub.calls_to("files.completeUploadExternal") == []
    resp = await client.files_upload_v2(channel="C1", content="x", filename="a.txt")
    assert stub.files[resp["file"]["id"]].content == b"x"


# ----------------------------------------------------------------------------- scopes


async def test_missing_scope(stub: SlackStub, client: AsyncWebClient) -> None:
    stub.missing_scopes.add("files:write")
    exc = await expect_error(
        client.files_upload_v2(channel="C1", content="x", filename="a.txt"), "missing_scope"
    )
    assert exc.response["needed"] == "files:write"
    provided = exc.response["provided"].split(",")
    assert "files:write" not in provided and "chat:write" in provided
    assert stub.files == {}
    await expect_error(client.files_completeUploadExternal(files=[{"id": "F1"}]), "missing_scope")

    stub.missing_scopes.update({"chat:write", "channels:history"})
    exc = await expect_error(client.chat_postMessage(channel="C1", text="x"), "missing_scope")
    assert exc.response["needed"] == "chat:write"
    stub.add_message("C1", "seeded")
    exc = await expect_error(client.conversations_history(channel="C1"), "missing_scope")
    assert exc.response["needed"] == "channels:history"
    await expect_error(client.conversations_replies(channel="C1", ts="1.0"), "missing_scope")
    assert (await client.auth_test())["ok"] is True  # needs no scope
    assert [m["text"] for m in stub.messages["C1"]] == ["seeded"]

    stub.reset()
    assert stub.missing_scopes == set()
    assert (await client.chat_postMessage(channel="C1", text="x"))["ok"] is True


async def test_reset_clears_files(stub: SlackStub, client: AsyncWebClient) -> None:
    await client.files_upload_v2(content="x", filename="a.txt")
    assert len(stub.files) == 1
    stub.reset()
    assert stub.files == {}


# ----------------------------------------------------------------------------- Block Kit limits


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def fields(count: int, length: int) -> dict[str, Any]:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * length}] * count}


def button(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": "go",
        "text": {"type": "plain_text", "text": "Go"},
        **overrides,
    }


def actions(*elements: dict[str, Any], block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "actions", "elements": list(elements)}
    if block_id is not None:
        block["block_id"] = block_id
    return block


def header(length: int) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": "h" * length}}


# (what, the largest Slack accepts, one past it)
BLOCK_LIMITS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("section text 1-3000", [section("x"), section("x" * 3000)], [section("x" * 3001)]),
    ("empty section text", [section("x")], [section("")]),
    ("10 fields", [fields(10, 1)], [fields(11, 1)]),
    ("field of 2000", [fields(1, 2000)], [fields(1, 2001)]),
    ("header of 150", [header(150)], [header(151)]),
    (
        "button text of 75",
        [actions(button(text={"type": "plain_text", "text": "b" * 75}))],
        [actions(button(text={"type": "plain_text", "text": "b" * 76}))],
    ),
    (
        "button value of 2000",
        [actions(button(value="v" * 2000))],
        [actions(button(value="v" * 2001))],
    ),
    (
        "button url of 3000",
        [actions(button(url="https://e.x/" + "u" * 2988))],
        [actions(button(url="https://e.x/" + "u" * 2989))],
    ),
    (
        "unique action_ids in a block",
        [actions(button(), block_id="a"), actions(button(), block_id="b")],
        [actions(button(), button())],
    ),
    (
        "unique block_ids in a message",
        [actions(button(), block_id="a"), actions(button(), block_id="b")],
        [actions(button(), block_id="a"), actions(button(), block_id="a")],
    ),
    ("50 blocks", [{"type": "divider"}] * 50, [{"type": "divider"}] * 51),
]


@pytest.mark.parametrize(
    ("accepted", "refused"),
    [(a, r) for _, a, r in BLOCK_LIMITS],
    ids=[w for w, _, _ in BLOCK_LIMITS],
)
async def test_blocks_past_a_slack_limit_are_refused_and_at_the_limit_accepted(
    stub: SlackStub,
    client: AsyncWebClient,
    accepted: list[dict[str, Any]],
    refused: list[dict[str, Any]],
) -> None:
    await expect_error(
        client.chat_postMessage(channel="C1", text="x", blocks=refused), "invalid_blocks"
    )
    assert stub.messages == {}
    assert (await client.chat_postMessage(channel="C1", text="x", blocks=accepted))["ok"] is True


async def test_a_home_tab_takes_100_blocks_and_refuses_101(client: AsyncWebClient) -> None:
    def home(count: int) -> dict[str, Any]:
        return {"type": "home", "blocks": [{"type": "divider"}] * count}

    assert (await client.views_publish(user_id="U1", view=home(100)))["ok"] is True
    await expect_error(client.views_publish(user_id="U1", view=home(101)), "invalid_blocks")


async def test_text_past_40000_characters_is_refused(client: AsyncWebClient) -> None:
    await expect_error(client.chat_postMessage(channel="C1", text="x" * 40_001), "msg_too_long")
    assert (await client.chat_postMessage(channel="C1", text="x" * 40_000))["ok"] is True


# ----------------------------------------------------------------------------- targets


async def test_a_channel_that_does_not_exist_is_channel_not_found(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    await expect_error(client.chat_postMessage(channel="C0NONE", text="x"), "channel_not_found")
    await expect_error(client.conversations_history(channel="C0NONE"), "channel_not_found")
    await expect_error(
        client.files_upload_v2(channel="C0NONE", content="x", filename="a.txt"),
        "channel_not_found",
    )
    assert stub.messages == {}


async def test_a_public_channel_the_bot_is_not_in_is_not_in_channel(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    stub.add_channel("C0OUT", member=False)
    await expect_error(client.chat_postMessage(channel="C0OUT", text="x"), "not_in_channel")
    await expect_error(client.conversations_history(channel="C0OUT"), "not_in_channel")
    await expect_error(
        client.chat_postEphemeral(channel="C0OUT", user="U1", text="x"), "not_in_channel"
    )
    stub.add_channel("C0OUT")  # invited
    assert (await client.chat_postMessage(channel="C0OUT", text="x"))["ok"] is True


async def test_a_private_channel_the_bot_is_not_in_is_invisible(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    stub.add_channel("G0SECRET", private=True, member=False)
    await expect_error(client.chat_postMessage(channel="G0SECRET", text="x"), "channel_not_found")


async def test_an_archived_channel_takes_no_posts_but_can_be_read(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel="C1", text="before"))["ts"]
    stub.channels["C1"].archived = True
    await expect_error(client.chat_postMessage(channel="C1", text="x"), "is_archived")
    await expect_error(client.chat_update(channel="C1", ts=ts, text="y"), "is_archived")
    history = await client.conversations_history(channel="C1")
    assert [m["text"] for m in history["messages"]] == ["before"]


async def test_another_users_message_cannot_be_updated_or_deleted(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    ts = stub.add_message("C1", "a human's words")
    await expect_error(
        client.chat_update(channel="C1", ts=ts, text="mine now"), "cant_update_message"
    )
    await expect_error(client.chat_delete(channel="C1", ts=ts), "cant_delete_message")
    stored = stub.message("C1", ts)
    assert stored is not None and stored["text"] == "a human's words"


async def test_an_unknown_message_is_message_not_found(client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="C1", text="x")
    await expect_error(
        client.chat_update(channel="C1", ts="1.000001", text="y"), "message_not_found"
    )
    await expect_error(client.chat_delete(channel="C1", ts="1.000001"), "message_not_found")


async def test_an_ephemeral_for_someone_outside_the_channel_is_user_not_in_channel(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    stub.add_channel("C0TEAM", members={"U0IN"})
    await expect_error(
        client.chat_postEphemeral(channel="C0TEAM", user="U0OUT", text="x"), "user_not_in_channel"
    )
    assert (await client.chat_postEphemeral(channel="C0TEAM", user="U0IN", text="x"))["ok"]
    assert [e["user"] for e in stub.ephemerals] == ["U0IN"]


async def test_an_edit_past_the_workspaces_edit_window_is_edit_window_closed(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    stub.edit_window_s = 60
    assert (await client.chat_update(channel="C1", ts=ts, text="fresh"))["ok"] is True
    stub.edit_window_s = 0
    await asyncio.sleep(0.01)
    await expect_error(client.chat_update(channel="C1", ts=ts, text="late"), "edit_window_closed")


async def test_reset_brings_back_the_default_channels_only(stub: SlackStub) -> None:
    stub.add_channel("C0EXTRA")
    stub.channels["C1"].member = False
    stub.reset()
    assert "C0EXTRA" not in stub.channels and stub.channels["C1"].member
    with pytest.raises(ValueError, match="add_channel"):
        stub.add_message("C0EXTRA", "x")


async def test_a_private_channels_history_needs_groups_history(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    stub.add_channel("G0PRIVATE", private=True)
    stub.add_message("G0PRIVATE", "secret")
    stub.missing_scopes.add("groups:history")
    exc = await expect_error(client.conversations_history(channel="G0PRIVATE"), "missing_scope")
    assert exc.response["needed"] == "groups:history"
    await expect_error(client.conversations_replies(channel="G0PRIVATE", ts="1.0"), "missing_scope")
    stub.add_message("C1", "public")
    assert (await client.conversations_history(channel="C1"))["messages"][0]["text"] == "public"
    stub.missing_scopes.clear()
    history = await client.conversations_history(channel="G0PRIVATE")
    assert [m["text"] for m in history["messages"]] == ["secret"]


async def test_a_completed_upload_is_shared_only_after_slack_answers(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    stub.share_delay_s = 0.3
    resp = await client.files_upload_v2(channel="C1", content="log", filename="log.txt")
    stored = stub.files[resp["file"]["id"]]
    assert stored.completed and "C1" not in stub.messages and stored.message_ts is None
    assert (await client.conversations_history(channel="C1"))["messages"] == []
    [msg] = await stub.wait_for(lambda s: s.messages["C1"])
    assert msg["files"][0]["id"] == stored.id and stored.message_ts == msg["ts"]


async def test_a_pending_share_is_dropped_by_reset(stub: SlackStub, client: AsyncWebClient) -> None:
    stub.share_delay_s = 0.05
    await client.files_upload_v2(channel="C1", content="log", filename="log.txt")
    stub.reset()
    await asyncio.sleep(0.15)
    assert stub.messages == {}
