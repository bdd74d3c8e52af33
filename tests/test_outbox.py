"""Keyed posts against the Slack stub and a real SQLite store: once, across a crash and beside
another poster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import slack_ui
from bot.slack.chat import ChatError, Message, SlackChat, Upload
from bot.slack.outbox import Outbox
from bot.store import Post, SqliteStore
from tests.harness.slack_stub import SlackStub

CHANNEL = "C0UAT"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "uat.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def chat(slack: SlackStub) -> SlackChat:
    return SlackChat(AsyncWebClient(token=slack.token, base_url=slack.api_url), patience_s=5)


async def test_a_post_whose_ts_was_never_recorded_is_found_not_repeated(
    store: SqliteStore, chat: SlackChat, slack: SlackStub
) -> None:
    outbox = Outbox(store, chat)
    for n in range(30):  # a busy channel
        slack.add_message(CHANNEL, f"human {n}", user="U0HUMAN")
    await store.reserve_post(Post("card:s1", CHANNEL))
    ts = await chat.post(
        Message(CHANNEL, "the card", key="card:s1")
    )  # posted, then the process died
    for n in range(30):
        slack.add_message(CHANNEL, f"later {n}", user="U0HUMAN")
    assert await outbox.post("card:s1", CHANNEL, "the card") == ts
    assert [m["text"] for m in slack.messages[CHANNEL]].count("the card") == 1
    assert (await store.reserve_post(Post("card:s1", CHANNEL)))[0].ts == ts  # recorded now
    assert await outbox.post("card:s1", CHANNEL, "the card") == ts  # and not searched again
    assert len(slack.calls_to("conversations.history")) == 1


async def test_a_reply_in_flight_elsewhere_is_waited_for_not_posted_twice(
    store: SqliteStore, chat: SlackChat, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.slack.outbox.IN_FLIGHT_POLL_S", 0.05)
    root = await chat.post(Message(CHANNEL, "the card"))
    slow, catch_up = Outbox(store, chat), Outbox(store, chat)
    release = asyncio.Event()
    real_post = chat.post

    async def slow_post(*args: object, **kwargs: object) -> str:
        await release.wait()  # Slack is slow for the replica that changed the state
        return await real_post(*args, **kwargs)  # type: ignore[arg-type]

    chat.post = slow_post  # type: ignore[method-assign]
    first = asyncio.create_task(slow.post("reply:s1:ready", CHANNEL, "ready", None, root))
    await asyncio.sleep(0.1)
    chat.post = real_post  # type: ignore[method-assign]
    second = asyncio.create_task(
        catch_up.post("reply:s1:ready", CHANNEL, "ready", None, root, exclusive=False)
    )
    await asyncio.sleep(0.3)
    assert not second.done()  # the young reservation is taken as a post in flight
    release.set()
    assert await first == await second
    assert [m["text"] for m in slack.thread(CHANNEL, root)] == ["ready"]


async def test_a_reply_waiting_past_in_flight_s_for_slacks_pace_in_this_process_is_posted_once(
    store: SqliteStore, chat: SlackChat, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state's own reply waits its turn for longer than IN_FLIGHT_S (a backlog of posts in
    the channel) while catch-ups in the same process come to it: they wait for that post and
    share its ts instead of looking in Slack, finding nothing yet, and posting it again (the
    soak's "reply:...#108:...:ready posted 4 times")."""
    monkeypatch.setattr("bot.slack.outbox.IN_FLIGHT_S", 0.2)
    monkeypatch.setattr("bot.slack.outbox.IN_FLIGHT_POLL_S", 0.05)
    root = await chat.post(Message(CHANNEL, "the card"))
    outbox = Outbox(store, chat)
    real_post = chat.post

    async def backlogged(message: Message) -> str:
        await asyncio.sleep(0.6)  # three times IN_FLIGHT_S
        return await real_post(message)

    chat.post = backlogged  # type: ignore[method-assign]
    posts = [
        outbox.post("reply:s1:ready", CHANNEL, "ready", None, root, exclusive=False)
        for _ in range(4)
    ]
    landed = await asyncio.gather(*posts)
    assert len(set(landed)) == 1
    assert [m["text"] for m in slack.thread(CHANNEL, root)] == ["ready"]


async def test_an_abandoned_reservation_is_posted_after_in_flight_s(
    store: SqliteStore, chat: SlackChat, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.slack.outbox.IN_FLIGHT_S", 0.3)
    monkeypatch.setattr("bot.slack.outbox.IN_FLIGHT_POLL_S", 0.05)
    root = await chat.post(Message(CHANNEL, "the card"))
    await store.reserve_post(Post("reply:s1:stopped", CHANNEL, root))  # its poster died first
    ts = await Outbox(store, chat).post(
        "reply:s1:stopped", CHANNEL, "stopped", None, root, exclusive=False
    )
    assert [m["ts"] for m in slack.thread(CHANNEL, root)] == [ts]


async def test_an_upload_cut_short_is_found_when_slack_shares_it_late_not_uploaded_twice(
    store: SqliteStore, chat: SlackChat, slack: SlackStub
) -> None:
    slack.share_delay_s = 0.6  # Slack shares the file after it answers
    outbox = Outbox(store, chat)
    upload = Upload(CHANNEL, None, "prompt-output.txt", "the output", "Output")
    await store.reserve_post(Post(upload.filename, CHANNEL))
    await chat.upload(upload)  # uploaded, then the process died before recording it
    assert CHANNEL not in slack.messages  # not shared yet when the relay resumes
    landed = await outbox.upload(upload)
    [shared] = slack.messages[CHANNEL]
    assert landed == shared["ts"]
    assert len(slack.calls_to("files.completeUploadExternal")) == 1
    assert len(slack.files) == 1


async def test_a_card_for_a_channel_the_bot_is_not_in_says_to_invite_it(
    store: SqliteStore, chat: SlackChat, slack: SlackStub
) -> None:
    slack.add_channel("C0NOTJOINED", member=False)
    with pytest.raises(ChatError) as refused:
        await Outbox(store, chat).post("card:s9", "C0NOTJOINED", "the card")
    assert str(refused.value) == slack_ui.slack_refused("chat.postMessage", "not_in_channel")
    assert "/invite" in str(refused.value)
    assert slack.messages == {}
