"""`uat-bot serve` as a real process: what it checks at start, and Slack not answering.

A wrong channel, subnet or security group, or a token Slack refuses, stops it with one line per
problem and exit status 1. Slack not answering at all is one warning: it serves anyway, and a
command whose answer cannot reach Slack is one line in the log, not a traceback.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from bot import app
from bot.config import FIND_CHANNEL_ID, token_refused
from tests.harness.bot import SIGNING_SECRET, Bot, BotFactory, bot_env
from tests.harness.processes import BotProcess, free_port, serve_until_exit
from tests.harness.signing import slack_headers, slash_command_body
from tests.harness.slack_stub import SlackStub

HEADER = "uat-bot is not configured correctly:"
# A log line: "2026-11-30 07:21:54,332 WARNING bot.app: ..." -> "WARNING bot.app: ..."
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+ [\w.]+: .*)$")


def problems(*lines: str) -> list[str]:
    return [HEADER, *(f"  - {line}" for line in lines)]


def logged(text: str, *levels: str) -> list[str]:
    """The log's lines at `levels`, without their timestamps."""
    found = [m.group(1) for m in map(LOG_LINE.match, text.splitlines()) if m]
    return [line for line in found if line.split(" ", 1)[0] in levels]


async def refused_at_start(slack: SlackStub, tmp_path: Path, **settings: str) -> list[str]:
    """What `serve` prints to stderr when it stops at start (status 1) on `settings`, having
    asked nothing of Slack: the settings alone were enough."""
    exited = await serve_until_exit(bot_env(slack, tmp_path, **settings), tmp_path)
    assert exited.status == 1
    assert slack.calls == []
    return exited.stderr_lines


async def test_serve_stops_on_a_channel_name_and_on_subnets_and_groups_that_are_not_ids(
    slack: SlackStub, tmp_path: Path
) -> None:
    lines = await refused_at_start(
        slack,
        tmp_path,
        UAT_CHANNEL="#uat",
        UAT_SUBNETS="subnet-0123456789abcdef0,private-a",
        UAT_SECURITY_GROUPS="default",
    )
    assert lines == problems(
        "UAT_CHANNEL is '#uat', a channel name, not its ID: set it to the channel's ID (like "
        f"C0123ABCD, uppercase letters and digits); {FIND_CHANNEL_ID}",
        "UAT_SUBNETS has 'private-a', not a subnet ID: list IDs like subnet-0123456789abcdef0 "
        "(VPC console), comma-separated",
        "UAT_SECURITY_GROUPS has 'default', not a security group ID: list IDs like "
        "sg-0123456789abcdef0 (VPC console), comma-separated",
    )


async def test_serve_stops_on_an_unknown_url_placeholder_and_a_label_ecs_cannot_tag(
    slack: SlackStub, tmp_path: Path
) -> None:
    [header, label, app_url] = await refused_at_start(
        slack,
        tmp_path,
        UAT_APP_URL="https://{branch}.uat.example.com",
        UAT_LABEL_STAGING="uat, staging",
    )
    assert header == HEADER
    assert label.startswith("  - UAT_LABEL_STAGING is invalid (ECS refuses it as a task tag")
    assert app_url.startswith(
        "  - UAT_APP_URL is invalid (has {branch}, which is not a placeholder"
    )


async def test_serve_stops_when_slack_refuses_the_token(slack: SlackStub, tmp_path: Path) -> None:
    env = bot_env(slack, tmp_path, SLACK_BOT_TOKEN="xoxb-not-the-apps-token")
    exited = await serve_until_exit(env, tmp_path)
    assert exited.status == 1
    assert exited.stderr_lines == problems(token_refused("invalid_auth"))
    assert exited.stderr_lines[1].startswith(
        "  - SLACK_BOT_TOKEN is refused by Slack: invalid_auth: set it to the app's Bot User"
    )
    assert "xoxb-not-the-apps-token" not in exited.stderr + exited.stdout
    [call] = slack.calls
    assert (call.method, call.error) == ("auth.test", "invalid_auth")
    assert not (tmp_path / "uat-bot.db").exists()  # it stopped before opening the store


async def test_serve_with_a_good_token_starts_without_bolts_token_warning_and_answers(
    slack: SlackStub, tmp_path: Path
) -> None:
    process = BotProcess(bot_env(slack, tmp_path), tmp_path)
    try:
        await process.start()
        status, _ = await slash(process, "status", slack.new_response_url())
        await slack.wait_for(lambda s: bool(s.responses), timeout=10)
        await process.terminate()
    finally:
        process.cleanup()
    assert status == 200
    log = process.logs()
    assert "will be unused" not in log and "will be ignored" not in log, log
    assert logged(log, "WARNING", "ERROR", "CRITICAL") == []
    assert "INFO bot.app: Slack: signed in as uat-bot (UBOT) in uat-test (T0001)" in logged(
        log, "INFO"
    )
    assert [c.method for c in slack.calls] == ["auth.test"]  # once, at start; not per request
    assert slack.responses[0].body["text"]  # the status answer reached the response_url


async def test_serve_starts_when_slack_is_unreachable_and_a_failed_answer_is_one_line(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there: connection refused
    dead_api = f"http://127.0.0.1:{closed}/api/"
    refused = (
        rf"Cannot connect to host 127\.0\.0\.1:{closed} ssl:default "
        rf"\[Connect call failed \('127\.0\.0\.1', {closed}\)\]"
    )
    async with SlackStub() as stub:
        env = bot_env(stub, tmp_path, SLACK_API_URL=dead_api)
    process = BotProcess(env, tmp_path)
    try:
        await process.start(ready="/livez")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{process.url}/livez") as answer:
                assert answer.status == 200  # alive: no reason to restart it
            async with http.get(f"{process.url}/healthz") as answer:
                health = await answer.json()
                assert answer.status == 503  # not ready: Slack does not answer
                assert health["store"] == "ok"
                assert re.fullmatch(
                    rf"Slack unreachable \(POST auth\.test\): {refused}", health["slack"]
                )
        started = time.monotonic()
        status, _ = await slash(process, "status", f"http://127.0.0.1:{closed}/response/1")
        acked_in = time.monotonic() - started
        deadline = time.monotonic() + 20
        while "the answer to" not in process.log().read_text():
            assert time.monotonic() < deadline, process.logs()
            await asyncio.sleep(0.1)
        await process.terminate()
    finally:
        process.cleanup()
    assert status == 200 and acked_in < 3.0  # acknowledged without asking Slack anything
    log = process.logs()
    assert "Traceback" not in log, log
    warnings = logged(log, "WARNING", "ERROR", "CRITICAL")
    said_by_health = [w for w in warnings if w.startswith("WARNING bot.health: ")]
    assert said_by_health == [f"WARNING bot.health: health: Slack failing: {health['slack']}"]
    warnings = [w for w in warnings if w not in said_by_health]
    assert len(warnings) == 2, log
    assert re.fullmatch(
        rf"WARNING bot\.app: Slack unreachable \(POST auth\.test\): {refused}; "
        r"serving anyway and checking again in the background",
        warnings[0],
    ), warnings[0]
    assert re.fullmatch(
        rf"WARNING bot\.slack\.listeners\.reply: Slack unreachable \(POST chat\.postEphemeral\): "
        rf"{refused}; "
        r"the answer to U0DEVELOPER is lost",
        warnings[1],
    ), warnings[1]


async def slash(process: BotProcess, text: str, response_url: str) -> tuple[int, str]:
    body = slash_command_body(
        text, user_id="U0DEVELOPER", channel_id="C0UAT", response_url=response_url
    )
    headers = slack_headers(SIGNING_SECRET, body)
    url = f"{process.url}/slack/events"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers=headers) as answer,
    ):
        return answer.status, await answer.text()


async def test_slack_answering_later_is_noticed_by_the_background_check(
    make_bot: BotFactory, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "SLACK_RECHECK_S", (0.05, 0.2))
    bot: Bot = await make_bot(SLACK_API_URL=f"http://127.0.0.1:{free_port()}/api/")
    assert bot.runtime.slack_identity is None  # Slack did not answer at start; it serves anyway
    assert bot.runtime.web_client is not None
    bot.runtime.web_client.base_url = slack.api_url  # Slack is back
    for _ in range(200):
        if bot.runtime.slack_identity is not None:
            break
        await asyncio.sleep(0.05)
    me = bot.runtime.slack_identity
    assert me is not None, "the background check never asked Slack again"
    assert (me.team_id, me.user_id, me.bot_id) == ("T0001", "UBOT", "BBOT")
    assert [c.method for c in slack.calls] == ["auth.test"]


async def test_serve_logs_where_its_tasks_wait_on_sigusr1_and_keeps_serving(
    slack: SlackStub, tmp_path: Path
) -> None:
    process = BotProcess(bot_env(slack, tmp_path), tmp_path)
    try:
        proc = await process.start()
        proc.send_signal(signal.SIGUSR1)
        for _ in range(50):
            if "SIGUSR1:" in process.logs():
                break
            await asyncio.sleep(0.1)
        status, _ = await slash(process, "help", slack.new_response_url())
        assert proc.poll() is None and status == 200  # nothing stopped
        await process.terminate()
    finally:
        process.cleanup()
    log = process.logs()
    assert re.search(r"WARNING bot\.server: SIGUSR1: \d+ tasks, \d+ threads", log), log
    # a task the bot runs, by its name, down to the line it waits on (inbox renewals sleep)
    held = log.split("task hold inbox items waits on", 1)[1].split(" WARNING ", 1)[0]
    assert re.search(r'bot/tasks\.py", line \d+, in _guard', held), held
    assert re.search(r'bot/slack/inbox\.py", line \d+, in keep\n +await asyncio.sleep', held), held
    assert "thread MainThread:" in log, log
