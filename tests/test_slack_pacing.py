"""Posts paced to Slack's rate limits: a burst meets no 429, lands in the order it came and near
the limit's own floor, without holding up other channels; a spent response_url's answer goes
ephemeral instead of being lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.chat import Message, SlackChat
from bot.slack.listeners.reply import SlackReply
from bot.slack.pace import POST_BURST, TIER_MARGIN, Bucket, Pacer
from tests.harness.bot import CHANNEL, DEVELOPER, Bot
from tests.harness.slack_stub import SlackStub
from tests.harness.slack_stub import limits as slack_limits

CARDS = 30


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stub() -> AsyncIterator[SlackStub]:
    async with SlackStub() as s:
        s.real_rate_limits()
        s.add_channel("C2")
        yield s


def test_a_channel_bucket_gives_a_short_burst_then_a_turn_a_second() -> None:
    clock = Clock()
    bucket = Bucket(POST_BURST, 1.0, clock)
    waits = [bucket.turn() for _ in range(POST_BURST + 3)]
    assert waits == [0.0] * POST_BURST + [1.0, 2.0, 3.0]
    clock.now += 10  # the turns taken ahead have come and gone; the bucket refills to its cap
    assert [bucket.turn() for _ in range(POST_BURST + 1)] == [0.0] * POST_BURST + [1.0]


def test_a_retry_after_holds_back_the_turns_after_it() -> None:
    clock = Clock()
    pacer = Pacer(clock)
    bucket = pacer._bucket("chat.update", None)
    assert bucket is not None and bucket.turn() == 0.0
    pacer.hold("chat.update", None, 30.0)
    assert bucket.turn() == 30.0
    assert bucket.turn() == pytest.approx(30.0 + 60 / (50 * TIER_MARGIN))  # Tier 3, a bit under
    other = pacer._bucket("chat.postMessage", "C1")
    assert other is not None and other.turn() == 0.0  # another method's limit is its own


async def test_a_burst_of_cards_meets_no_429_in_order_near_the_floor_and_spares_other_channels(
    stub: SlackStub,
) -> None:
    chat = SlackChat(AsyncWebClient(token=stub.token, base_url=stub.api_url), patience_s=60)
    started = time.monotonic()
    burst = [asyncio.create_task(chat.post(Message("C1", f"card {n}"))) for n in range(CARDS)]
    await asyncio.sleep(3)  # mid-burst: another channel and an ephemeral in this one
    aside = time.monotonic()
    await chat.post(Message("C2", "another channel"))
    await chat.ephemeral("C1", DEVELOPER, "only you")
    assert time.monotonic() - aside < 1.0
    await asyncio.gather(*burst)
    elapsed = time.monotonic() - started

    floor = (CARDS - slack_limits.POST_BURST) / slack_limits.POST_PER_S
    assert stub.rate_limits.refused == 0
    assert [m["text"] for m in stub.messages["C1"]] == [f"card {n}" for n in range(CARDS)]
    assert floor <= elapsed <= floor * 1.1, (elapsed, floor)


async def test_a_spent_response_url_answer_goes_ephemeral(bot: Bot) -> None:
    url = bot.slack.new_response_url()
    reply = SlackReply(url, bot.runtime, CHANNEL, DEVELOPER)
    for n in range(slack_limits.RESPONSE_URL_USES):
        await reply(f"answer {n}")
    await reply("the sixth answer")
    assert [r.error for r in bot.slack.responses] == [None] * 5 + ["used_url"]
    assert [(e["channel"], e["user"], e["text"]) for e in bot.slack.ephemerals] == [
        (CHANNEL, DEVELOPER, "the sixth answer")
    ]


async def test_an_expired_response_url_answer_goes_ephemeral(bot: Bot) -> None:
    url = bot.slack.new_response_url()
    bot.slack.age_response_url(url, slack_limits.RESPONSE_URL_S + 1)
    await SlackReply(url, bot.runtime, CHANNEL, DEVELOPER)("an answer half an hour late")
    assert bot.slack.responses[-1].error == "expired_url"
    assert [(e["channel"], e["user"], e["text"]) for e in bot.slack.ephemerals] == [
        (CHANNEL, DEVELOPER, "an answer half an hour late")
    ]
