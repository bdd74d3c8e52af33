"""Hostile requests over real HTTP on 127.0.0.1: bodies are bounded before they are trusted, and
refusals are counted in /metrics without flooding or forging the log."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import time
from urllib.parse import urlencode, urlsplit

import pytest
from multidict import CIMultiDict

from bot import guard
from bot.logs import outside
from tests.harness.bot import SIGNING_SECRET, WEBHOOK_SECRET, Bot, BotFactory
from tests.harness.signing import github_headers, slack_headers, slack_signature, slash_command_body

FORM = "application/x-www-form-urlencoded"
ENDPOINTS = {"/slack/events": guard.SLACK_MAX_BODY, "/github/webhook": guard.GITHUB_MAX_BODY}


async def raw_request(bot: Bot, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the bot with `head` (request line and headers) already sent."""
    address = urlsplit(bot.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(head.encode() + b"\r\n")
    await writer.drain()
    return reader, writer


async def status_line(reader: asyncio.StreamReader, within: float) -> str:
    return (await asyncio.wait_for(reader.readline(), within)).decode()


async def rejected(bot: Bot, endpoint: str, reason: str) -> float:
    async with bot.http.get(f"{bot.url}/metrics") as response:
        text = await response.text()
    labels = f'endpoint="{endpoint}",reason="{reason}"'
    pattern = r"uat_rejected_requests_total\{" + re.escape(labels) + r"\} (\S+)"
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


# ------------------------------------------------------------------ bounded before trusted


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
async def test_a_compressed_body_is_415(bot: Bot, endpoint: str) -> None:
    body = gzip.compress(slash_command_body("help"))
    headers = {**slack_headers(SIGNING_SECRET, body), "Content-Encoding": "gzip"}
    async with bot.http.post(f"{bot.url}{endpoint}", data=body, headers=headers) as response:
        assert response.status == 415
    assert await rejected(bot, endpoint, "encoded") == 1


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
async def test_an_oversize_content_length_is_413_before_the_body_is_sent(
    bot: Bot, endpoint: str
) -> None:
    limit = ENDPOINTS[endpoint]
    reader, writer = await raw_request(
        bot,
        f"POST {endpoint} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {FORM}\r\n"
        f"Content-Length: {limit + 1}\r\n",
    )
    try:
        assert (await status_line(reader, 5)).startswith("HTTP/1.1 413")
    finally:
        writer.close()
    assert await rejected(bot, endpoint, "too_large") == 1


async def test_a_chunked_body_over_the_limit_is_413_while_streaming(bot: Bot) -> None:
    reader, writer = await raw_request(
        bot,
        "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n",
    )
    chunk = b"a" * 65536
    sent = 0
    try:
        while sent <= guard.SLACK_MAX_BODY + len(chunk):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            sent += len(chunk)
        assert (await status_line(reader, 5)).startswith("HTTP/1.1 413")
    finally:
        writer.close()
    assert await rejected(bot, "/slack/events", "too_large") == 1


async def test_a_client_that_stalls_mid_body_is_cut_off_within_the_deadline(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "BODY_DEADLINE", 0.5)
    reader, writer = await raw_request(
        bot,
        f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {FORM}\r\n"
        "Content-Length: 100\r\n",
    )
    started = time.monotonic()
    try:
        writer.write(b"command=%2Fuat")  # then nothing more
        await writer.drain()
        assert (await status_line(reader, 5)).startswith("HTTP/1.1 408")
        await asyncio.wait_for(reader.read(), 5)  # and the connection is closed
    finally:
        writer.close()
    assert time.monotonic() - started < 3
    assert await rejected(bot, "/slack/events", "too_slow") == 1


async def test_a_client_that_never_finishes_its_headers_is_cut_off(
    make_bot: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "HEADER_DEADLINE", 0.5)
    bot = await make_bot()
    started = time.monotonic()
    reader, writer = await raw_request(bot, "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1")
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
    finally:
        writer.close()
    assert time.monotonic() - started < 3


async def test_a_client_gone_mid_body_is_counted_without_a_traceback(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, writer = await raw_request(
        bot,
        f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {FORM}\r\n"
        "Content-Length: 100\r\n",
    )
    writer.write(b"command=%2Fuat")
    await writer.drain()
    writer.close()
    for _ in range(50):
        if await rejected(bot, "/slack/events", "broken_body") == 1:
            break
        await asyncio.sleep(0.05)
    assert await rejected(bot, "/slack/events", "broken_body") == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_signed_requests_still_work_behind_the_guard(bot: Bot) -> None:
    status, text = await bot.slash("help")
    assert status == 200 and "/uat help" in text
    status, answer = await bot.github("ping", {"zen": "Keep it logically awesome."})
    assert status == 200 and answer["zen"] == "Keep it logically awesome."


# ------------------------------------------------------------------ logs


def test_outside_text_is_escaped_and_cut() -> None:
    assert outside("a\nCRITICAL forged\r\x1b[31m") == "a\\nCRITICAL forged\\r\\x1b[31m"
    assert outside("x" * 500) == "x" * 200 + "…"
    assert "\n" not in outside("\n" * 1000)


async def test_an_unsigned_body_cannot_forge_a_log_line(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = b"text=hi\n2026-01-01 00:00:00 CRITICAL bot: forged"
    headers = {"Content-Type": FORM, "X-Slack-Request-Timestamp": str(int(time.time()))}
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    async with bot.http.post(f"{bot.url}/slack/events", data=body, headers=headers) as response:
        assert response.status == 401
    logged = caplog.text
    assert "forged" not in logged
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


async def test_a_flood_of_bad_requests_is_counted_not_logged_line_by_line(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = slash_command_body("help")
    for _ in range(100):
        async with bot.http.post(
            f"{bot.url}/slack/events", data=body, headers=slack_headers("wrong-secret", body)
        ) as response:
            assert response.status == 401
        async with bot.http.post(
            f"{bot.url}/github/webhook", data=body, headers=github_headers("wrong", body, "ping")
        ) as response:
            assert response.status == 401
    # `uat-bot serve` runs without the access log (a line per request); the test server has it.
    lines = [r for r in caplog.records if r.name != "aiohttp.access"]
    assert len(lines) <= 2, caplog.text
    assert await rejected(bot, "/slack/events", "bad_signature") == 100
    assert await rejected(bot, "/github/webhook", "bad_signature") == 100


# ------------------------------------------------------------------ malformed but never 500


@pytest.mark.parametrize("timestamp", ["abc", "1" * 20, " ", "１２３"])
async def test_a_non_numeric_or_overlong_timestamp_is_401(bot: Bot, timestamp: str) -> None:
    body = slash_command_body("help")
    headers = {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(SIGNING_SECRET, timestamp, body),
    }
    async with bot.http.post(f"{bot.url}/slack/events", data=body, headers=headers) as response:
        assert response.status == 401


async def test_duplicated_signature_headers_are_401(bot: Bot) -> None:
    body = slash_command_body("help", response_url=bot.slack.new_response_url())
    signed = slack_headers(SIGNING_SECRET, body)
    for name in ("X-Slack-Signature", "X-Slack-Request-Timestamp"):
        headers = CIMultiDict(signed)
        headers.add(name, signed[name])
        async with bot.http.post(f"{bot.url}/slack/events", data=body, headers=headers) as response:
            assert response.status == 401, name
    ping = json.dumps({"zen": "z"}).encode()
    hub = CIMultiDict(github_headers(WEBHOOK_SECRET, ping, "ping"))
    hub.add("X-Hub-Signature-256", hub["X-Hub-Signature-256"])
    async with bot.http.post(f"{bot.url}/github/webhook", data=ping, headers=hub) as response:
        assert response.status == 401


@pytest.mark.parametrize(
    "payload",
    [
        "{not json",
        "[1]",
        '"text"',
        json.dumps({"type": "block_actions", "user": 5, "actions": []}),
        json.dumps({"type": "block_actions", "user": {"id": "U1"}, "actions": "click"}),
        json.dumps({"type": "block_actions", "user": {"id": "U1"}, "actions": [1]}),
        json.dumps({"type": 7, "user": {"id": "U1"}}),
        json.dumps({"type": "view_submission", "view": []}),
        json.dumps({"type": "block_actions", "channel": "C1", "actions": []}),
    ],
)
async def test_a_signed_malformed_interactivity_payload_is_400(bot: Bot, payload: str) -> None:
    body = urlencode({"payload": payload}).encode()
    async with bot.http.post(
        f"{bot.url}/slack/events", data=body, headers=slack_headers(SIGNING_SECRET, body)
    ) as response:
        assert response.status == 400, await response.text()
