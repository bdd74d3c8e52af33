"""The stub refuses past Slack's rate limits (when asked to) and past a response_url's 5 uses or
30 minutes (always), as Slack does (tests/harness/slack_stub/limits.py cites the pages)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.harness.slack_stub import SlackStub
from tests.harness.slack_stub.limits import POST_BURST, RESPONSE_URL_S, RESPONSE_URL_USES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stub() -> AsyncIterator[SlackStub]:
    async with SlackStub() as s:
        yield s


@pytest.fixture
def clock(stub: SlackStub) -> Clock:
    clock = Clock()
    stub.rate_limits.clock = clock
    stub.response_url_limits.clock = clock
    return clock


@pytest.fixture
def client(stub: SlackStub) -> AsyncWebClient:
    return AsyncWebClient(token=stub.token, base_url=stub.api_url)


async def refused(call: object) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call  # type: ignore[misc]
    assert info.value.response.status_code == 429
    assert info.value.response["error"] == "ratelimited"
    return info.value


async def test_without_real_limits_a_channel_takes_any_number_of_posts(
    stub: SlackStub, client: AsyncWebClient
) -> None:
    for n in range(POST_BURST + 5):
        await client.chat_postMessage(channel="C1", text=str(n))
    assert len(stub.messages["C1"]) == POST_BURST + 5
    assert stub.rate_limits.refused == 0


async def test_a_channel_takes_a_short_burst_then_one_post_a_second(
    stub: SlackStub, client: AsyncWebClient, clock: Clock
) -> None:
    stub.real_rate_limits()
    stub.add_channel("C2")
    for n in range(POST_BURST):
        await client.chat_postMessage(channel="C1", text=str(n))
    error = await refused(client.chat_postMessage(channel="C1", text="too soon"))
    assert error.response.headers["Retry-After"] == "1"
    assert [m["text"] for m in stub.messages["C1"]] == ["0", "1", "2"]
    await client.chat_postMessage(channel="C2", text="another channel has its own second")
    clock.now += 1.0
    await client.chat_postMessage(channel="C1", text="a second later")
    await refused(client.chat_postMessage(channel="C1", text="and again too soon"))
    assert stub.rate_limits.refused == 2
    assert [c.failed_status for c in stub.calls_to("chat.postMessage")].count(429) == 2


async def test_reset_turns_the_real_limits_off_again(
    stub: SlackStub, client: AsyncWebClient, clock: Clock
) -> None:
    stub.real_rate_limits()
    for n in range(POST_BURST):
        await client.chat_postMessage(channel="C1", text=str(n))
    await refused(client.chat_postMessage(channel="C1", text="too soon"))
    stub.reset()
    for n in range(POST_BURST + 5):
        await client.chat_postMessage(channel="C1", text=str(n))
    assert stub.rate_limits.refused == 0
    assert len(stub.messages["C1"]) == POST_BURST + 5


async def test_a_tier_3_method_takes_50_calls_a_minute(
    stub: SlackStub, client: AsyncWebClient, clock: Clock
) -> None:
    ts = (await client.chat_postMessage(channel="C1", text="card"))["ts"]
    stub.real_rate_limits()
    for n in range(50):
        await client.chat_update(channel="C1", ts=ts, text=f"v{n}")
    error = await refused(client.chat_update(channel="C1", ts=ts, text="v50"))
    assert error.response.headers["Retry-After"] == "2"  # 1.2 s, in whole seconds
    assert stub.message("C1", ts)["text"] == "v49"  # type: ignore[index]
    clock.now += 1.2
    await client.chat_update(channel="C1", ts=ts, text="v50")


async def test_a_tier_2_method_takes_20_calls_a_minute(
    stub: SlackStub, client: AsyncWebClient, clock: Clock
) -> None:
    stub.add_usergroup("S1", ["U1"])
    stub.real_rate_limits()
    for _ in range(20):
        await client.usergroups_users_list(usergroup="S1")
    error = await refused(client.usergroups_users_list(usergroup="S1"))
    assert error.response.headers["Retry-After"] == "3"


async def respond(url: str, text: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"text": text}) as response,
    ):
        return response.status, await response.text()


async def test_a_response_url_is_refused_after_five_uses(stub: SlackStub, clock: Clock) -> None:
    url = stub.new_response_url()
    for n in range(RESPONSE_URL_USES):
        assert await respond(url, f"answer {n}") == (200, "ok")
    assert await respond(url, "a sixth") == (404, "used_url")
    assert stub.responses[-1].error == "used_url"
    assert await respond(stub.new_response_url(), "a new url") == (200, "ok")


async def test_a_response_url_is_refused_after_thirty_minutes(
    stub: SlackStub, clock: Clock
) -> None:
    url = stub.new_response_url()
    assert await respond(url, "in time") == (200, "ok")
    clock.now += RESPONSE_URL_S + 1
    assert await respond(url, "too late") == (404, "expired_url")
