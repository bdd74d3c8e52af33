"""Forged, replayed and stale requests: what Slack's and GitHub's signing do and do not stop.

Slack's v0 signature covers the timestamp and the body, and Bolt refuses a timestamp more than
5 minutes from now; it has no nonce, so the same signed request replayed inside those 5 minutes
is accepted again. What keeps that harmless for buttons is the single-use card claim; a slash
command replayed within the window runs again (as a double submit by the person would).

GitHub's X-Hub-Signature-256 covers the body only: X-GitHub-Delivery is not signed. The bot
dedupes on the delivery id, so GitHub's redeliveries and a replay of a captured delivery with its
id are acted on once; a captured body replayed under a *new* id is acted on again.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.github import PullRequestEvent
from bot.slack import slack_ui
from bot.slack.cards import card_value
from tests.harness.bot import (
    CHANNEL,
    DEPLOYER,
    DEVELOPER,
    SIGNING_SECRET,
    Bot,
    BotFactory,
    reference,
)
from tests.harness.ecr_seed import digest_at, seed
from tests.harness.signing import (
    block_actions_body,
    slack_headers,
    slack_signature,
    slash_command_body,
)

HTTP = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
WINDOW_S = 5 * 60
FORM = "application/x-www-form-urlencoded"


async def post(bot: Bot, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with bot.http.post(f"{bot.url}/slack/events", data=body, headers=headers) as response:
        return response.status, await response.text()


def signed_at(body: bytes, timestamp: str, secret: str = SIGNING_SECRET) -> dict[str, str]:
    return {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(secret, timestamp, body),
    }


def answers_at(bot: Bot, response_url: str) -> list[str]:
    return [
        r.body.get("text") or ""
        for r in bot.slack.responses
        if response_url.endswith("/" + r.url_id)
    ]


# ------------------------------------------------------------------ Slack: stale and forged


@st.composite
def slack_body(draw: st.DrawFn) -> bytes:
    """A slash command or a button click, as Slack would send it."""
    if draw(st.booleans()):
        return slash_command_body(draw(st.sampled_from(["help", "stop PR-1", "lock now"])))
    action = draw(st.sampled_from(["uat.cancel", "uat.promote.confirm", "uat.undo"]))
    return block_actions_body(action, card_value(digest="sha256:1"), user_id=DEPLOYER)


@HTTP
@given(
    body=slack_body(),
    offset=st.integers(WINDOW_S + 10, 10 * 365 * 24 * 3600),
    future=st.booleans(),
)
async def test_a_correctly_signed_request_outside_the_5_minute_window_is_401(
    bot: Bot, body: bytes, offset: int, future: bool
) -> None:
    seen = len(bot.slack.calls), len(bot.slack.responses)
    timestamp = str(int(time.time()) + (offset if future else -offset))
    status, _ = await post(bot, body, signed_at(body, timestamp))
    assert status == 401
    await bot.settle()
    assert (len(bot.slack.calls), len(bot.slack.responses)) == seen  # nothing ran


@HTTP
@given(offset=st.integers(-(WINDOW_S - 20), WINDOW_S - 20))
async def test_a_request_inside_the_window_is_accepted(bot: Bot, offset: int) -> None:
    body = slash_command_body("help")
    status, answer = await post(bot, body, signed_at(body, str(int(time.time()) + offset)))
    assert status == 200 and slack_ui.HELP_HEADER in answer


@HTTP
@given(
    body=slack_body(),
    forged=st.sampled_from(["", "v0=", "v1=00", "v0=" + "0" * 64])
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    secret=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30),
)
async def test_unsigned_wrongly_signed_or_tampered_requests_are_401(
    bot: Bot, body: bytes, forged: str, secret: str
) -> None:
    now = str(int(time.time()))
    headers = {"Content-Type": FORM, "X-Slack-Request-Timestamp": now, "X-Slack-Signature": forged}
    assert (await post(bot, body, headers))[0] == 401
    if secret != SIGNING_SECRET:
        assert (await post(bot, body, signed_at(body, now, secret)))[0] == 401
    tampered = body + b"&text=stop+PR-1"
    assert (await post(bot, tampered, signed_at(body, now)))[0] == 401
    await bot.settle()
    assert bot.slack.responses == [] and bot.slack.calls_to("chat.postMessage") == []


async def test_replaying_a_signed_request_within_the_window_is_accepted(bot: Bot) -> None:
    """Documented: Slack's scheme has no nonce. A replayed slash command runs again."""
    response_url = bot.slack.new_response_url()
    body = slash_command_body("status", user_id=DEVELOPER, response_url=response_url)
    headers = slack_headers(SIGNING_SECRET, body)
    assert (await post(bot, body, headers))[0] == 200
    assert (await post(bot, body, headers))[0] == 200
    await bot.settle()
    assert len(answers_at(bot, response_url)) == 2


async def test_a_replayed_button_click_acts_once(bot: Bot) -> None:
    """The card claim is what makes a replay inside the window harmless."""
    response_url = bot.slack.new_response_url()
    body = block_actions_body(
        "uat.cancel", card_value(), user_id=DEVELOPER, channel_id=CHANNEL, response_url=response_url
    )
    headers = slack_headers(SIGNING_SECRET, body)
    statuses = await asyncio.gather(*(post(bot, body, headers) for _ in range(5)))
    assert [s for s, _ in statuses] == [200] * 5
    await bot.settle()
    assert sorted(answers_at(bot, response_url)) == sorted(
        [slack_ui.CANCELLED] + [slack_ui.CARD_USED] * 4
    )


@pytest.mark.parametrize("timestamp", ["", "abc", "1e3", "12.5"])
async def test_bug_a_non_integer_timestamp_is_401(bot: Bot, timestamp: str) -> None:
    body = slash_command_body("help")
    headers = {"Content-Type": FORM, "X-Slack-Request-Timestamp": timestamp}
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    assert (await post(bot, body, headers))[0] == 401


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"event": {"user": false}}', "application/json"),
        (b'{"event": {"channel": 5}}', "application/json"),
        (b'{"user": 0}', "application/json"),
        (b"[1]", "application/json"),
        (b"{not json", "application/json"),
        (urlencode({"payload": json.dumps({"user": 5})}).encode(), FORM),
        (urlencode({"payload": "{not json"}).encode(), FORM),
        (b"\xff\xfe", FORM),
    ],
    ids=[
        "event-user-bool",
        "event-channel-int",
        "user-int",
        "json-list",
        "bad-json",
        "payload-user-int",
        "payload-bad-json",
        "not-utf8",
    ],
)
async def test_bug_an_unsigned_malformed_body_is_4xx(
    bot: Bot, body: bytes, content_type: str
) -> None:
    status, _ = await post(bot, body, {"Content-Type": content_type})
    assert 400 <= status < 500, status


# ------------------------------------------------------------------ GitHub: replays


class Recorder:
    def __init__(self) -> None:
        self.events: list[PullRequestEvent] = []

    async def __call__(self, event: PullRequestEvent) -> None:
        self.events.append(event)


async def test_a_replayed_github_delivery_is_acted_on_once(make_bot: BotFactory) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(lambda runtime: setattr(runtime, "on_pull_request", recorder))
    payload = reference("github_webhooks/pull_request/labeled.payload.json")
    body = json.dumps(payload).encode()
    guid = str(uuid.uuid4())
    assert (await bot.github("pull_request", body, delivery=guid))[0] == 202
    replays = await asyncio.gather(
        *(bot.github("pull_request", body, delivery=guid) for _ in range(5))
    )
    assert replays == [(200, {"duplicate": True})] * 5
    # another validly signed body under the same id is a duplicate too: the id is the key
    other = copy.deepcopy(payload)
    other["action"] = "closed"
    assert await bot.github("pull_request", json.dumps(other).encode(), delivery=guid) == (
        200,
        {"duplicate": True},
    )
    assert [e.delivery_id for e in recorder.events] == [guid]


async def test_a_captured_body_under_a_new_delivery_id_is_acted_on_again(
    make_bot: BotFactory,
) -> None:
    """Documented limitation: the delivery id is not signed, so it cannot prove a replay."""
    recorder = Recorder()
    bot: Bot = await make_bot(lambda runtime: setattr(runtime, "on_pull_request", recorder))
    body = json.dumps(reference("github_webhooks/pull_request/labeled.payload.json")).encode()
    assert (await bot.github("pull_request", body, delivery="first"))[0] == 202
    assert (await bot.github("pull_request", body, delivery="captured-and-renamed"))[0] == 202
    assert len(recorder.events) == 2


# ------------------------------------------------------------------ cards: who and how often

FIRST = "1f3c5a7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a"
SECOND = "2a4c6e8b0d1f3a5c7e9b2d4f6a8c0e1b3d5f7a9c"


async def click(bot: Bot, button: dict[str, Any], user: str) -> list[str]:
    answers = await bot.click(button["action_id"], button["value"], user=user)
    return [a.body.get("text") or "" for a in answers]


async def test_a_non_deployer_click_on_a_promote_card_changes_nothing_and_a_stale_card_is_used(
    ecr_bot: Bot, ecr: Any
) -> None:
    bot = ecr_bot
    digests = seed(ecr, [FIRST, SECOND], staging=SECOND, latest=FIRST)
    response_url = bot.slack.new_response_url()
    body = slash_command_body("promote", user_id=DEPLOYER, response_url=response_url)
    assert (await post(bot, body, slack_headers(SIGNING_SECRET, body)))[0] == 200
    await bot.settle()
    [card] = [r.body for r in bot.slack.responses if response_url.endswith("/" + r.url_id)]
    buttons = [
        e for b in card["blocks"] for e in b.get("elements", []) if e.get("type") == "button"
    ]
    [promote] = [b for b in buttons if b["action_id"] == "uat.promote.confirm"]

    for user in (DEVELOPER, "U0SOMEONE"):
        [answer] = await click(bot, promote, user)
        assert answer.startswith("Only deployers can promote.")
    assert digest_at(ecr, "latest") == digests[FIRST]
    assert bot.slack.calls_to("chat.postMessage") == []
    assert await bot.runtime.services.store.recent_audit(10) == []

    # the refusals claimed nothing: the deployer's click still works, once
    await click(bot, promote, DEPLOYER)
    assert digest_at(ecr, "latest") == digests[SECOND]
    assert len(bot.slack.calls_to("chat.postMessage")) == 1
    for user in (DEPLOYER, DEPLOYER):
        assert await click(bot, promote, user) == [slack_ui.CARD_USED]
    cancel = {"action_id": "uat.cancel", "value": promote["value"]}
    assert await click(bot, cancel, DEVELOPER) == [slack_ui.CARD_USED]
    assert len(bot.slack.calls_to("chat.postMessage")) == 1
    assert len(await bot.runtime.services.store.recent_audit(10)) == 1
