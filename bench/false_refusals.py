"""False refusals: 100 `/uat prompt`s racing 100 `/uat extend`s on one PR.

Everything is loopback: the real prompt server (`python container/prompt_server.py`, with the fake
agent; bench/prompts.py's `PromptServer`), the Slack Web API stub, and the real bot
(`create_web_app(build_runtime(load_settings(bot_env(...))))`) whose store holds a `ready`
environment for acme/web#2 and whose UAT_CONTAINER_URL is the prompt server. The 200 signed
commands are sent at once, prompts and extends interleaved; every one's answer (its response_url)
is read. A false refusal is an answer that is neither "sent to the agent", nor the container's
own refusal (its queue holds 50), nor an extend's answer: above all "changing too often to
update; try again" after the container took the prompt. Every prompt the container took must have
its Cancel card in the PR's thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench import Row, alone, met
from bench.prompts import PR, REPO, TASK_ARN, PromptServer, until

RACERS = 100  # prompts, and as many extends


async def _race(tmp: Path) -> Row:
    from bot.app import build_runtime
    from bot.config import load_settings
    from bot.server import create_web_app
    from bot.slack import action_ids, slack_ui
    from bot.store import Environment, Facts
    from tests.harness.bot import BOT_TOKEN, CHANNEL, DEVELOPER, SIGNING_SECRET, bot_env
    from tests.harness.signing import slack_headers, slash_command_body
    from tests.harness.slack_stub import SlackStub

    server = PromptServer(tmp)
    runner: web.AppRunner | None = None
    try:
        async with aiohttp.ClientSession() as session, SlackStub(token=BOT_TOKEN) as stub:
            await server.wait_ready(session)
            settings = load_settings(bot_env(stub, tmp / "bot", UAT_CONTAINER_URL=server.url))
            runtime = build_runtime(settings)
            runner = web.AppRunner(create_web_app(runtime), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            events = f"http://{host}:{port}/slack/events"
            now = runtime.services.environments.clock()
            thread = stub.add_message(CHANNEL, f"{REPO}#{PR} Bench — ready", user="UBOT")
            await runtime.services.store.save_environment(
                Environment(
                    repo=REPO,
                    pr=PR,
                    state="ready",
                    label="uat",
                    task_arn=TASK_ARN,
                    thread_ts=thread,
                    facts=Facts.from_json(
                        {"title": "Bench", "launch_started": now - 60, "idle_until": now + 60}
                    ),
                )
            )

            async def slash(text: str) -> str:
                url = stub.new_response_url()
                body = slash_command_body(
                    text, user_id=DEVELOPER, channel_id=CHANNEL, response_url=url
                )
                headers = slack_headers(SIGNING_SECRET, body)
                async with session.post(events, data=body, headers=headers) as response:
                    await response.read()
                return url.rsplit("/", 1)[-1]

            texts = []
            for i in range(RACERS):
                texts.append(f"prompt PR-{PR} fake:slow 0 racer {i}")
                texts.append(f"extend PR-{PR}")  # UAT_IDLE_HOURS from now: each one writes
            started = time.perf_counter()
            urls = await asyncio.gather(*(slash(t) for t in texts))

            async def answered() -> bool:
                return set(urls) <= {r.url_id for r in stub.responses}

            await until(answered, "every command's answer", 120)
            elapsed = time.perf_counter() - started
            await runtime.services.tasks.join()
            answers = {r.url_id: str(r.body.get("text", "")) for r in stub.responses}
            accepted = {u for u in urls[0::2] if answers[u].startswith("Sent to the agent:")}
            full = {u for u in urls[0::2] if "already waiting" in answers[u]}
            extended = {u for u in urls[1::2] if answers[u].startswith(f"{REPO}#{PR} ")}
            false = 2 * RACERS - len(accepted) - len(full) - len(extended)
            too_often = slack_ui.changing_too_often(REPO, PR)
            told_too_often = sum(1 for u in urls if answers[u] == too_often)
            jobs = {m.group(1) for u in accepted if (m := re.search(r"job `(\w+)`", answers[u]))}
            cards = {  # as posted: a finished prompt's card loses its button later
                json.loads(e["value"])["job"]
                for c in stub.calls
                if c.method == "chat.postMessage" and c.params.get("thread_ts") == thread
                for b in c.params.get("blocks") or []
                for e in b.get("elements", [])
                if e.get("action_id") == action_ids.PROMPT_CANCEL
            }
            # the container took every prompt it did not refuse: each needs its card
            missing = max(len(jobs - cards), RACERS - len(full) - len(cards))
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(server.stop)
    return alone(
        f"{RACERS} prompts racing {RACERS} extends on one PR: false refusals",
        str(false),
        f"goal: 0 false refusals, a Cancel card for every prompt taken; "
        f"met: {met(false == 0 and missing == 0)}; {len(accepted)} prompts taken, "
        f"{len(full)} refused by the container (its queue holds 50), {len(extended)} extends "
        f"answered, {told_too_often} told 'changing too often', {missing} taken without a "
        f"Cancel card; all answered in {elapsed:.1f} s",
    )


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="uat-bot-bench-") as tmp:
        return [asyncio.run(_race(Path(tmp)))]


if __name__ == "__main__":
    for row in run():
        print(row)
    sys.exit(0)
