"""Slack having a bad time: 429 with Retry-After, then 5xx — everything arrives, in order."""

from __future__ import annotations

import asyncio

from bot.slack.chat import ChatError, Message
from tests.harness.bot import CHANNEL, Bot


async def test_messages_and_updates_arrive_in_order_after_429s_and_5xxs(bot: Bot) -> None:
    chat = bot.runtime.services.chat
    slack = bot.slack
    slack.fail("chat.postMessage", status=429, retry_after=0, times=7)  # past the client's 5
    slack.fail(None, status=503, times=5)

    async def card_life() -> None:
        ts = await chat.post(Message(CHANNEL, "starting"))
        for state in ("provisioning", "running", "ready"):
            await chat.update(CHANNEL, ts, state)
        await chat.post(Message(CHANNEL, "ready at https://pr-2.example.com", thread_ts=ts))

    await asyncio.wait_for(card_life(), timeout=60)
    delivered = [c for c in slack.calls if c.ok and c.method.startswith("chat.")]
    assert [c.params["text"] for c in delivered] == [
        "starting",
        "provisioning",
        "running",
        "ready",
        "ready at https://pr-2.example.com",
    ]
    [root] = [m for m in slack.messages[CHANNEL] if m["ts"] == delivered[0].response["ts"]]
    assert root["text"] == "ready"
    assert any(c.failed_status == 429 for c in slack.calls)
    assert any(c.failed_status == 503 for c in slack.calls)


async def test_updates_to_one_channel_never_overtake_each_other(bot: Bot) -> None:
    chat = bot.runtime.services.chat
    ts = await chat.post(Message(CHANNEL, "v0"))
    bot.slack.fail("chat.update", status=503, times=2)
    await asyncio.gather(*(chat.update(CHANNEL, ts, f"v{i}") for i in range(1, 6)))
    assert bot.slack.message(CHANNEL, ts)["text"] == "v5"  # type: ignore[index]
    ok = [c.params["text"] for c in bot.slack.calls_to("chat.update") if c.ok]
    # updates waiting their turn are merged into the newest (bot/slack/pace.py `Updates`): what
    # reaches Slack is in order, each once, and ends with the last
    assert ok == sorted(set(ok), key=lambda text: int(text[1:])) and ok[-1] == "v5", ok


async def test_a_real_refusal_is_not_retried(bot: Bot) -> None:
    chat = bot.runtime.services.chat
    try:
        await chat.update(CHANNEL, "1.000000", "nothing there")
    except ChatError as exc:
        assert "message_not_found" in str(exc) or "channel_not_found" in str(exc)
    else:
        raise AssertionError("an update of a message that does not exist must fail")
    assert len(bot.slack.calls_to("chat.update")) == 1
