"""Ack latency of a signed `/uat help` (answered in the ack itself) vs a bare Bolt app that only
acks, both served through the same aiohttp adapter; 200 sequential requests each, interleaved.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bench import Row
from bot.app import build_runtime
from bot.config import load_settings
from bot.server import create_web_app
from tests.harness.bot import BOT_TOKEN, SIGNING_SECRET, bot_env
from tests.harness.signing import slack_headers, slash_command_body
from tests.harness.slack_stub import SlackStub

REQUESTS = 200


def bare_app(api_url: str) -> web.Application:
    bolt = AsyncApp(
        client=AsyncWebClient(token=BOT_TOKEN, base_url=api_url), signing_secret=SIGNING_SECRET
    )

    @bolt.command("/uat")
    async def only_ack(ack: AsyncAck) -> None:
        await ack()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", events)
    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/slack/events"


async def measure() -> tuple[list[float], list[float]]:
    async with SlackStub(token=BOT_TOKEN) as stub:
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(bot_env(stub, Path(tmp)))
            bot_runner, bot_url = await serve(create_web_app(build_runtime(settings)))
            bare_runner, bare_url = await serve(bare_app(stub.api_url))
            times: dict[str, list[float]] = {bot_url: [], bare_url: []}
            async with aiohttp.ClientSession() as http:
                for i in range(REQUESTS + 10):  # the first 10 of each warm up (auth.test)
                    for url in (bot_url, bare_url):
                        body = slash_command_body("help", response_url=stub.new_response_url())
                        headers = slack_headers(SIGNING_SECRET, body)
                        started = time.perf_counter()
                        async with http.post(url, data=body, headers=headers) as response:
                            await response.read()
                            assert response.status == 200
                        if i >= 10:
                            times[url].append(time.perf_counter() - started)
            await bot_runner.cleanup()
            await bare_runner.cleanup()
    return times[bot_url], times[bare_url]


def run() -> list[Row]:
    bot, bare = asyncio.run(measure())
    median_bot, median_bare = statistics.median(bot), statistics.median(bare)
    return [
        Row(
            "ack /uat help sequential median",
            f"{median_bot * 1000:.2f} ms",
            f"{median_bare * 1000:.2f} ms",
            median_bot / median_bare,
            f"goal: none (context); met: n/a; n={REQUESTS} each, interleaved; the bot answers "
            "the help text in the ack, the bare Bolt app acks empty; same process, same adapter",
        )
    ]
