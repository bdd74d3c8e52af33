"""Posts paced to Slack's rate limits: a burst meets no 429, lands in the order it came and near
the limit's own floor, without holding up other channels; a spent response_url's answer goes
ephemeral instead of being lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.chat import Message, SlackChat
from bot.slack.listeners.reply import SlackReply
from bot.slack.pace import POST_BURST, TIER_MARGIN, Bucket, Pacer, Updates
from tests.harness.bot import CHANNEL, DEVELOPER, Bot
from tests.harness.slack_stub import SlackStub
from tests.harness.slack_stub import limits as slack_limits

CARDS = 30


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fake_time() -> tuple[Clock, Callable[[float], Awaitable[None]]]:
    """A clock and a sleep that moves it on at once (one sleeper at a time: the drainer)."""
    clock = Clock()

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        await asyncio.sleep(0)

    return clock, sleep


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


def spent_updates(pacer: Pacer) -> float:
    """The chat.update bucket emptied (its burst spent); the seconds between its turns now."""
    bucket = pacer._bucket("chat.update", None)
    assert bucket is not None
    while bucket.turn() == 0.0:
        pass
    return 1 / bucket.per_s


async def test_an_update_waiting_its_turn_is_replaced_by_a_newer_one_of_its_message() -> None:
    clock, sleep = fake_time()
    pacer = Pacer(clock, sleep)
    gap = spent_updates(pacer)
    updates, sent = Updates(pacer), []

    def update(text: str) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            sent.append(text)

        return call

    started = clock.now
    waiting = [
        asyncio.create_task(updates.send("C1", "1.0", update("card 1: provisioning"))),
        asyncio.create_task(updates.send("C1", "2.0", update("card 2: provisioning"))),
        asyncio.create_task(updates.send("C1", "1.0", update("card 1: running"))),
    ]
    await asyncio.gather(*waiting)  # the replaced update's caller returns once its newer one went

    assert sent == ["card 1: running", "card 2: provisioning"]  # card 1 kept its place in line
    assert len(updates) == 0
    assert clock.now - started == pytest.approx(3 * gap)  # two turns, after the spent one's


async def test_an_update_a_person_acts_on_goes_ahead_of_routine_ones_waiting() -> None:
    clock, sleep = fake_time()
    pacer = Pacer(clock, sleep)
    spent_updates(pacer)
    updates, sent = Updates(pacer), []

    def update(text: str) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            sent.append(text)

        return call

    routine = [
        asyncio.create_task(updates.send("C1", f"{n}.0", update(f"card {n}: running")))
        for n in range(5)
    ]
    ready = asyncio.create_task(updates.send("C1", "9.0", update("card 9: ready"), urgent=True))
    failed = asyncio.create_task(updates.send("C1", "8.0", update("card 8: failed"), urgent=True))
    await asyncio.gather(*routine, ready, failed)

    assert sent == ["card 9: ready", "card 8: failed"] + [f"card {n}: running" for n in range(5)]


async def test_an_update_that_fails_raises_to_every_caller_it_stood_for() -> None:
    clock, sleep = fake_time()
    pacer = Pacer(clock, sleep)
    spent_updates(pacer)
    updates = Updates(pacer)

    async def refused() -> None:
        raise RuntimeError("message_not_found")

    async def never() -> None:
        raise AssertionError("a replaced update is not sent")

    older = asyncio.create_task(updates.send("C1", "1.0", never))
    newer = asyncio.create_task(updates.send("C1", "1.0", refused))
    results = await asyncio.gather(older, newer, return_exceptions=True)
    assert [str(r) for r in results] == ["message_not_found", "message_not_found"]


async def test_card_updates_past_the_tier_limit_meet_no_429_send_the_latest_and_ready_first(
    stub: SlackStub,
) -> None:
    chat = SlackChat(AsyncWebClient(token=stub.token, base_url=stub.api_url), patience_s=60)
    routine_ts = await chat.post(Message("C1", "card 1: starting"))
    ready_ts = await chat.post(Message("C2", "card 2: starting"))
    stub.calls.clear()
    burst = slack_limits.TIER_PER_MINUTE[3] // 2  # SlackChat's own tier-3 burst (TIER_BURST)
    for n in range(burst):  # one at a time: the burst goes at once, nothing waits to coalesce
        await chat.update("C1", routine_ts, f"card 1: step {n}")
    routine = [
        asyncio.create_task(chat.update("C1", routine_ts, f"card 1: step {n}"))
        for n in range(burst, burst + 10)
    ]
    await asyncio.sleep(0.2)  # the ten wait for the next turn
    ready = asyncio.create_task(chat.update("C2", ready_ts, "card 2: ready", urgent=True))
    await asyncio.gather(*routine, ready)

    updates = [c.params["text"] for c in stub.calls_to("chat.update")]
    assert stub.rate_limits.refused == 0
    assert len(updates) == burst + 2, updates
    assert updates[burst:] == ["card 2: ready", f"card 1: step {burst + 9}"]
    shown = {m["ts"]: m["text"] for ch in ("C1", "C2") for m in stub.messages[ch]}
    assert shown[routine_ts] == f"card 1: step {burst + 9}"
    assert shown[ready_ts] == "card 2: ready"
