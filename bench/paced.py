"""Posting paced to Slack's rate limits: a burst of 500 `labeled` webhooks into one channel with
the Slack stub's real-Slack limits on (tests/harness/slack_stub/limits.py).

The stub answers 429 past Slack's limits, as Slack does: chat.postMessage about one message a
second per channel after a short burst, other methods by their tier. The bot (the real HTTP
server, `create_web_app(build_runtime(...))`, moto's server and the containers' stand-in as in
bench/environments.py) must post the 500 cards without meeting a 429. The figure is the time
from the first delivery until the 500th card (a root message naming its PR) is in the stub; the
baseline is the limit's own floor: the burst Slack allows at once, then a second a card. Goals:
within 10% of the floor, and 0 429s (any method, the whole run). Then the bot is stopped; the
card updates and thread replies still waiting their turns are not measured.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import Row, alone, compared, fmt_s, met
from bench.environments import (
    ROOT_PR,
    Sender,
    _start_bot,
    labeled_payload,
    moto_server,
    reset_moto,
)

BURST = 500
CONCURRENCY = 50
GOAL = 1.10  # within 10% of the floor


async def _paced(endpoint: str, workdir: Path) -> list[Row]:
    import aiohttp

    from bot.config import load_settings
    from tests.harness.bot import BOT_TOKEN, CHANNEL, FIXTURES, bot_env
    from tests.harness.slack_stub import SlackStub
    from tests.harness.slack_stub import limits as slack_limits
    from tests.harness.uat_aws import Containers, set_up_account

    reset_moto(endpoint)
    account = set_up_account(endpoint)
    template = json.loads(
        (FIXTURES / "github_webhooks" / "pull_request" / "labeled.payload.json").read_text()
    )
    deliveries = [
        (labeled_payload(template, pr, "uat"), str(uuid.uuid4())) for pr in range(1, BURST + 1)
    ]
    containers = Containers()
    await containers.start()
    runner: Any = None

    def cards(stub: SlackStub) -> set[str]:
        roots = [m for m in stub.messages.get(CHANNEL, []) if m.get("thread_ts") in (None, m["ts"])]
        return {m.group(1) for r in roots if (m := ROOT_PR.search(r.get("text", "")))}

    try:
        async with (
            SlackStub(token=BOT_TOKEN) as stub,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4 * CONCURRENCY, keepalive_timeout=600)
            ) as session,
        ):
            stub.real_rate_limits()
            settings = load_settings(bot_env(stub, workdir, **account.env(containers.url)))
            runtime, runner, url = await _start_bot(settings)
            await asyncio.wait_for(runtime.services.environments.watcher.first_round.wait(), 10)
            started = time.perf_counter()
            _, statuses, answered = await Sender(session, url).burst(deliveries, CONCURRENCY)
            floor = (BURST - slack_limits.POST_BURST) / slack_limits.POST_PER_S
            await stub.wait_for(lambda s: len(cards(s)) >= BURST, timeout=3 * floor, interval=0.2)
            elapsed = time.perf_counter() - started
            refused = stub.rate_limits.refused
            by_method: dict[str, int] = {}
            for call in stub.calls:
                if call.failed_status == 429:
                    by_method[call.method] = by_method.get(call.method, 0) + 1
    finally:
        if runner is not None:
            await asyncio.wait_for(runner.cleanup(), 60)
        await containers.stop()

    accepted = statuses.get(202, 0)
    within = elapsed <= floor * GOAL
    name = f"paced burst: {BURST} labeled, Slack's limits on"
    print(
        f"  paced burst: last of {BURST} cards after {elapsed:.1f} s, floor {floor:.1f} s "
        f"({elapsed / floor:.3f}x), 429s: {refused} (by method: {by_method or 'none'}), "
        f"{accepted} accepted in {answered:.2f} s",
        flush=True,
    )
    return [
        compared(
            f"{name}: last card",
            elapsed,
            floor,
            f"goal: within 10% of the limit's floor ({POST_NOTE}); met: {met(within)}; "
            f"{accepted}/{BURST} deliveries accepted (202) in {answered:.2f} s",
            fmt=fmt_s,
        ),
        alone(
            f"{name}: 429s",
            str(refused),
            f"goal: 0; met: {met(refused == 0)}; by method: {by_method or 'none'}",
        ),
    ]


POST_NOTE = "a burst, then 1 card/s in one channel"


def run() -> list[Row]:
    with (
        moto_server() as endpoint,
        tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp,
    ):
        return asyncio.run(_paced(endpoint, Path(tmp)))
