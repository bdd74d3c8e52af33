"""The doors hold at their edges: what mutation testing (`make mutate`) found no test watching.

Socket Mode has no HTTP door for Slack, the `:latest` confirm button is a deployer's, the
repositories the bot handles are named in any letter case, a PR number is a positive 32-bit
integer, and a delivery's fields reach the handler as GitHub sent them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app import build_runtime
from bot.config import load_settings
from bot.github import PullRequestEvent
from bot.server import create_web_app
from bot.slack import action_ids, slack_ui
from bot.slack.cards import card_value
from tests.harness.bot import (
    CHANNEL,
    DEPLOYER,
    DEVELOPER,
    SIGNING_SECRET,
    Bot,
    BotFactory,
    bot_env,
    reference,
)
from tests.harness.signing import slack_headers, slash_command_body
from tests.harness.slack_stub import SlackStub
from tests.test_github_http import Recorder

OPENED = "github_webhooks/pull_request/opened.payload.json"
FORM = "application/x-www-form-urlencoded"


async def test_in_socket_mode_slack_events_over_http_are_404(
    slack: SlackStub, tmp_path: Path
) -> None:
    settings = load_settings(bot_env(slack, tmp_path, SLACK_APP_TOKEN="xapp-1-test"))
    assert settings.socket_mode
    app = create_web_app(build_runtime(settings))
    # start-up would connect to Slack over Socket Mode, which the stub does not speak: the
    # routes are what is tested here
    app.cleanup_ctx.clear()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    body = slash_command_body("help", user_id=DEVELOPER, channel_id=CHANNEL)
    try:
        async with aiohttp.ClientSession() as http:
            # signed or not: Bolt does not verify requests in Socket Mode, so none may reach it
            for headers in (slack_headers(SIGNING_SECRET, body), {"Content-Type": FORM}):
                url = f"http://{host}:{port}/slack/events"
                async with http.post(url, data=body, headers=headers) as response:
                    assert response.status == 404
    finally:
        await runner.cleanup()


async def test_over_http_slack_events_are_routed(bot: Bot) -> None:
    status, _ = await bot.slash("help")
    assert status == 200


async def test_a_non_deployers_click_on_the_latest_confirm_button_is_refused(bot: Bot) -> None:
    value = card_value(ref="main")
    card = json.loads(value)["card"]
    answers = await bot.click(action_ids.LATEST_CONFIRM, value, user=DEVELOPER)
    assert [a.body.get("text") for a in answers] == [
        slack_ui.deployers_only("build straight to :latest", [DEPLOYER])
    ]
    assert bot.slack.calls_to("chat.postMessage") == []
    assert not await bot.runtime.services.store.claimed(f"card:{card}")  # left for a deployer
    assert await bot.runtime.services.store.recent_audit(5) == []


async def test_an_allowed_repository_named_in_another_letter_case_is_accepted(
    make_bot: BotFactory,
) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install, UAT_REPOSITORIES="acme/web, CODERTOCAT/hello-world")
    status, body = await bot.github("pull_request", reference(OPENED))
    assert status == 202, body
    [event] = recorder.events
    assert event.repo == "Codertocat/Hello-World"


def with_number(number: Any) -> dict[str, Any]:
    payload = copy.deepcopy(reference(OPENED))
    payload["pull_request"]["number"] = number
    return payload


@pytest.mark.parametrize("number", [0, -1, 2**31, True, "7", 1.0])
async def test_a_pr_number_that_is_not_a_positive_32_bit_integer_is_400(
    make_bot: BotFactory, number: Any
) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    status, body = await bot.github("pull_request", with_number(number))
    assert status == 400
    assert body["error"] == "pull_request payload: pull_request.number must be a positive integer"
    assert recorder.events == []


@pytest.mark.parametrize("number", [1, 2**31 - 1])
async def test_the_smallest_and_largest_pr_numbers_pass(make_bot: BotFactory, number: int) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    status, _ = await bot.github("pull_request", with_number(number), delivery=f"n-{number}")
    assert status == 202
    assert [e.number for e in recorder.events] == [number]


@pytest.mark.parametrize("merged", [False, True])
async def test_the_parsed_event_is_the_payload_field_by_field(
    make_bot: BotFactory, merged: bool
) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    payload = copy.deepcopy(reference(OPENED))
    payload["pull_request"]["merged"] = merged
    pr = payload["pull_request"]
    status, _ = await bot.github("pull_request", payload, delivery="field-by-field")
    assert status == 202
    assert recorder.events == [
        PullRequestEvent(
            delivery_id="field-by-field",
            action="opened",
            repo=payload["repository"]["full_name"],
            number=pr["number"],
            title=pr["title"],
            url=pr["html_url"],
            author=pr["user"]["login"],
            sender=payload["sender"]["login"],
            branch=pr["head"]["ref"],
            head_sha=pr["head"]["sha"],
            clone_url=payload["repository"]["clone_url"],
            state=pr["state"],
            merged=merged,
            labels=tuple(label["name"] for label in pr["labels"]),
        )
    ]
    assert recorder.events[0].label is None
