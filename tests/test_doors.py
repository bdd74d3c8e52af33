"""The doors hold at their edges: what mutation testing (`make mutate`) found no test watching.

Socket Mode has no HTTP door for Slack, the `:latest` confirm button is a deployer's, the
repositories the bot handles are named in any letter case, a PR number is a positive 32-bit
integer, and a delivery's fields reach the handler as GitHub sent them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from bot import guard
from bot.app import Runtime, build_runtime
from bot.config import load_settings
from bot.errors import UserError
from bot.github import PullRequestEvent, WebhookEndpoint, signature, verify_signature
from bot.server import create_web_app, malformed_event, malformed_payload, slack_signature_problem
from bot.slack import action_ids, slack_ui
from bot.slack.cards import card_value
from bot.slack.context import CommandContext
from bot.slack.dispatch import Dispatcher, Plan, command_from_module, load_commands
from bot.store import SqliteStore
from tests.harness.bot import (
    CHANNEL,
    DEPLOYER,
    DEVELOPER,
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    Bot,
    BotFactory,
    bot_env,
    reference,
)
from tests.harness.signing import github_headers, slack_headers, slash_command_body
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


def deliveries(bot: Bot, event: str, result: str) -> float:
    value = bot.runtime.services.metrics.registry.get_sample_value(
        "uat_webhook_deliveries_total", {"event": event, "result": result}
    )
    return value or 0.0


def refused(bot: Bot, endpoint: str, reason: str) -> float:
    value = bot.runtime.services.metrics.registry.get_sample_value(
        "uat_rejected_requests_total", {"endpoint": endpoint, "reason": reason}
    )
    return value or 0.0


def test_a_signature_is_checked_whole_and_surrounding_blanks_do_not_matter() -> None:
    body = b'{"zen": "x"}'
    good = signature(WEBHOOK_SECRET, body)
    assert verify_signature(WEBHOOK_SECRET, body, f"  {good} ")
    assert not verify_signature(WEBHOOK_SECRET, body, good[:-1])
    assert verify_signature(WEBHOOK_SECRET, body, "") is False
    assert verify_signature(WEBHOOK_SECRET, body, None) is False


async def test_deliveries_are_counted_by_event_and_result(bot: Bot) -> None:
    await bot.github("ping", reference("github_webhooks/ping.payload.json"))
    await bot.github("issues", {"action": "opened"})
    await bot.github("pull_request", reference(OPENED))
    assert deliveries(bot, "ping", "ok") == 1
    assert deliveries(bot, "other", "ignored") == 1
    assert deliveries(bot, "pull_request", "accepted") == 1


async def test_a_ping_is_answered_ok_with_its_zen(bot: Bot) -> None:
    status, body = await bot.github("ping", {"zen": "Keep it logically awesome."})
    assert (status, body) == (200, {"ok": True, "zen": "Keep it logically awesome."})


async def test_a_delivery_with_two_signatures_is_401_and_counted(bot: Bot) -> None:
    body = json.dumps(reference(OPENED)).encode()
    headers = github_headers(WEBHOOK_SECRET, body, "pull_request")
    twice = CIMultiDict(headers)
    twice.add("X-Hub-Signature-256", headers["X-Hub-Signature-256"])
    async with bot.http.post(f"{bot.url}/github/webhook", data=body, headers=twice) as response:
        assert response.status == 401
    assert (await bot.post_github(body, headers))[0] == 202
    assert refused(bot, "/github/webhook", "bad_signature") == 1
    assert deliveries(bot, "pull_request", "bad_signature") == 1


async def test_without_a_refusal_counter_a_bad_signature_is_still_401(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "uat.db")
    await store.open()
    recorder = Recorder()
    endpoint = WebhookEndpoint(WEBHOOK_SECRET, store, recorder)
    body = json.dumps(reference(OPENED)).encode()
    headers = github_headers("another-secret", body, "pull_request")
    request = make_mocked_request("POST", "/github/webhook", headers=headers)
    request[guard.BODY] = body
    try:
        response = await endpoint.handle(request)
    finally:
        await store.close()
    assert isinstance(response, web.Response) and response.status == 401
    assert recorder.events == []


async def test_a_signed_body_that_is_not_an_object_is_400(bot: Bot) -> None:
    status, body = await bot.github("pull_request", b"[1, 2]")
    assert (status, body) == (400, {"error": "body must be a JSON object"})


async def test_a_pull_request_without_a_delivery_id_is_400(bot: Bot) -> None:
    body = json.dumps(reference(OPENED)).encode()
    headers = github_headers(WEBHOOK_SECRET, body, "pull_request")
    del headers["X-GitHub-Delivery"]
    assert await bot.post_github(body, headers) == (400, {"error": "missing X-GitHub-Delivery"})


async def test_without_a_webhook_secret_every_delivery_is_503(make_bot: BotFactory) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install, GITHUB_WEBHOOK_SECRET="")
    status, body = await bot.github("pull_request", reference(OPENED))
    assert (status, body) == (503, {"error": "GITHUB_WEBHOOK_SECRET is not set on the bot"})
    assert recorder.events == []


async def test_a_delivery_the_handler_refuses_is_503_with_its_reason(make_bot: BotFactory) -> None:
    async def refuse(event: PullRequestEvent) -> None:
        raise UserError("Slack is not answering; GitHub may redeliver.")

    def install(runtime: Runtime) -> None:
        runtime.on_pull_request = refuse

    bot: Bot = await make_bot(install)
    status, body = await bot.github("pull_request", reference(OPENED), delivery="refused-1")
    assert (status, body) == (503, {"error": "Slack is not answering; GitHub may redeliver."})
    assert not await bot.runtime.services.store.claimed("done:refused-1")


async def test_an_accepted_delivery_is_answered_with_its_id(bot: Bot) -> None:
    status, body = await bot.github("pull_request", reference(OPENED), delivery="guid-a")
    assert (status, body) == (202, {"accepted": "guid-a"})
    assert await bot.runtime.services.store.claimed("done:guid-a")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda p: p["pull_request"].update(title=7), "pull_request.title must be a string"),
        (
            lambda p: p["pull_request"].update(title="\ud800"),
            "pull_request.title is not valid UTF-8",
        ),
        (lambda p: p.update(pull_request=["number", "labels"]), "missing pull_request.number"),
        (lambda p: p["pull_request"].update(labels={}), "pull_request.labels must be a list"),
        (
            lambda p: p["pull_request"]["head"].update(ref=None),
            "pull_request.head.ref must be a string",
        ),
    ],
)
async def test_a_malformed_pull_request_is_400_saying_what_is_wrong(
    make_bot: BotFactory, change: Any, problem: str
) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    payload = copy.deepcopy(reference(OPENED))
    change(payload)
    status, body = await bot.github("pull_request", payload)
    assert (status, body) == (400, {"error": f"pull_request payload: {problem}"})
    assert recorder.events == []


async def test_labels_without_a_name_are_skipped(make_bot: BotFactory) -> None:
    recorder = Recorder()
    bot: Bot = await make_bot(recorder.install)
    payload = copy.deepcopy(reference(OPENED))
    payload["pull_request"]["labels"] = [{"name": "uat"}, "name", {"color": "fff"}, {"name": 5}]
    assert (await bot.github("pull_request", payload))[0] == 202
    assert recorder.events[0].labels == ("uat", "5")


# ------------------------------------------------------------------ /uat dispatch, decided at once


def echo_module() -> types.ModuleType:
    module = types.ModuleType("commands.echo")
    module.NAME = "echo"  # type: ignore[attr-defined]
    module.__doc__ = "Say it back.\n\nSays the words back."
    module.configure = lambda parser: parser.add_argument("words", nargs="*")  # type: ignore[attr-defined]
    module.ack = lambda args: f"echo: {' '.join(args.words)}"  # type: ignore[attr-defined]
    module.run = lambda ctx, args: None  # type: ignore[attr-defined]
    return module


@pytest.fixture(scope="module")
def dispatcher() -> Dispatcher:
    table, actions = load_commands()
    echo = command_from_module(echo_module())
    return Dispatcher({**table, echo.name: echo}, actions)


@pytest.mark.parametrize("text", ["", "  ", "help", "-h", "--help"])
def test_help_in_any_spelling_is_the_overview(dispatcher: Dispatcher, text: str) -> None:
    plan = dispatcher.plan(text)
    overview = dispatcher.help_text()
    assert "/uat stop" in overview and "/uat help" in overview
    assert plan.answer == overview
    assert plan.command is None


def test_help_for_a_command_is_its_help_whatever_the_case(dispatcher: Dispatcher) -> None:
    stop = dispatcher.table["stop"].help
    assert stop.startswith("`/uat stop PR`\n")
    for text in ("help stop", "help STOP", "  help   stop  ", "stop -h", "STOP --help"):
        assert dispatcher.plan(text) == Plan(stop), text
    assert dispatcher.plan("help help").answer == slack_ui.command_help(
        "/uat help [command]", slack_ui.HELP_SUMMARY
    )
    assert dispatcher.plan("help stp").answer == slack_ui.unknown_command("stp", ["stop"])


def test_an_unknown_word_is_answered_with_the_nearest_commands(dispatcher: Dispatcher) -> None:
    assert dispatcher.plan("stp 12") == Plan(slack_ui.unknown_command("stp", ["stop"]))
    assert dispatcher.plan("zzzz").answer == slack_ui.unknown_command("zzzz", [])


def test_a_command_word_in_capitals_runs_the_command(dispatcher: Dispatcher) -> None:
    plan = dispatcher.plan("  STOP 12 ")
    assert plan.answer is None and plan.command is dispatcher.table["stop"]
    assert plan.args is not None and plan.args.pr == "12"


def test_usage_errors_are_one_capitalised_sentence_and_the_usage(dispatcher: Dispatcher) -> None:
    assert dispatcher.plan("stop") == Plan(
        slack_ui.usage_error("The following arguments are required: PR.", "/uat stop PR")
    )
    assert dispatcher.plan("stop 12 x") == Plan(
        slack_ui.usage_error("Unexpected: x.", "/uat stop PR")
    )
    assert dispatcher.plan('stop "12') == Plan(slack_ui.bad_quoting("no closing quotation"))


def test_an_option_missing_its_value_is_a_usage_error(dispatcher: Dispatcher) -> None:
    usage = dispatcher.table["prompt"].usage
    assert dispatcher.plan("prompt 12 --cancel") == Plan(
        slack_ui.usage_error("argument --cancel: expected one argument.", usage)
    )


def test_after_a_double_dash_a_help_flag_is_prose(dispatcher: Dispatcher) -> None:
    for prose in ("explain what -h does", "-h", "--help"):
        plan = dispatcher.plan(f"prompt 12 {prose}")
        assert plan.command is dispatcher.table["prompt"] and plan.args is not None
        assert plan.args.text == prose


def test_an_arguments_own_check_is_a_usage_error(dispatcher: Dispatcher) -> None:
    plan = dispatcher.plan("extend 12 abc")
    assert plan.command is None and plan.answer is not None
    assert plan.answer.startswith("`abc` is not a number of hours I can extend by")
    assert plan.answer.endswith(f"\nUsage: `{dispatcher.table['extend'].usage}`")


def test_a_commands_own_acknowledgement_is_the_answer(dispatcher: Dispatcher) -> None:
    plan = dispatcher.plan("echo hello there")
    assert plan.answer == "echo: hello there" and plan.command is dispatcher.table["echo"]


def commands_counted(bot: Bot, command: str, outcome: str) -> float:
    value = bot.runtime.services.metrics.registry.get_sample_value(
        "uat_commands_total", {"command": command, "outcome": outcome}
    )
    return value or 0.0


async def test_answers_given_in_the_ack_are_counted_by_command(bot: Bot) -> None:
    for text in ("", "  HELP stop", "  stop", "Stop 1 2", "nosuch"):
        assert (await bot.slash(text))[0] == 200
    assert commands_counted(bot, "help", "answered") == 2
    assert commands_counted(bot, "stop", "answered") == 2
    assert commands_counted(bot, "(unknown)", "answered") == 1


async def test_work_after_the_ack_is_counted_by_outcome(bot: Bot) -> None:
    await bot.slash("stop 12", channel="C0ELSEWHERE")  # refused: not from the UAT channel
    await bot.settle()
    assert bot.slack.responses[-1].body["text"] == slack_ui.changes_in_channel_only(CHANNEL)
    assert commands_counted(bot, "/uat stop", "refused") == 1
    assert commands_counted(bot, "/uat stop", "ok") == 0
    await bot.slash("history")
    await bot.settle()
    assert commands_counted(bot, "/uat history", "ok") == 1
    assert commands_counted(bot, "/uat history", "refused") == 0


# ------------------------------------------------------------------ Slack's door and the guard


def slack_events(bot: Bot) -> str:
    return f"{bot.url}/slack/events"


def fresh_headers(body: bytes, **more: str) -> CIMultiDict[str]:
    headers = CIMultiDict(slack_headers(SIGNING_SECRET, body))
    for name, value in more.items():
        headers[name] = value
    return headers


def test_a_signature_needs_exactly_one_fresh_timestamp_and_signature_and_a_secret() -> None:
    body = slash_command_body("help")
    good = fresh_headers(body)
    assert slack_signature_problem(SIGNING_SECRET, good, body) is None
    spaced = fresh_headers(
        body,
        **{
            "X-Slack-Request-Timestamp": f" {good['X-Slack-Request-Timestamp']} ",
            "X-Slack-Signature": f" {good['X-Slack-Signature']} ",
        },
    )
    assert slack_signature_problem(SIGNING_SECRET, spaced, body) is None
    assert slack_signature_problem(None, good, body) == "unconfigured"
    assert slack_signature_problem("another-secret", good, body) == "bad_signature"
    assert slack_signature_problem(SIGNING_SECRET, dict(good), body) == "bad_signature"
    no_timestamp = fresh_headers(body)
    del no_timestamp["X-Slack-Request-Timestamp"]
    assert slack_signature_problem(SIGNING_SECRET, no_timestamp, body) == "bad_signature"
    no_signature = fresh_headers(body)
    del no_signature["X-Slack-Signature"]
    assert slack_signature_problem(SIGNING_SECRET, no_signature, body) == "bad_signature"
    worded = fresh_headers(body, **{"X-Slack-Request-Timestamp": "now"})
    assert slack_signature_problem(SIGNING_SECRET, worded, body) == "bad_timestamp"


@pytest.mark.parametrize(
    ("body", "malformed"),
    [
        (
            {"type": "event_callback", "event": {"type": "message", "text": "hi", "user": "U1"}},
            False,
        ),
        ({"type": "event_callback", "event": {"type": "message", "thread_ts": None}}, False),
        ({"type": "event_callback", "event": {"type": "message", "text": 5}}, True),
        ({"type": "event_callback", "event": {"type": "message", "user": ["U1"]}}, True),
        ({"type": "event_callback", "event": "message"}, True),
        ({"type": "event_callback"}, True),
        ({"type": "url_verification", "event": "not an event"}, False),
        ({"event": 5}, False),
    ],
)
def test_an_event_slack_would_never_send_is_malformed(
    body: dict[str, Any], malformed: bool
) -> None:
    assert malformed_event(body) is malformed


@pytest.mark.parametrize(
    ("body", "malformed"),
    [
        ({}, False),
        ({"user": {"id": "U1"}, "channel": None, "trigger_id": "t", "actions": [{}]}, False),
        ({"actions": None, "token": None}, False),
        ([], True),
        ("payload", True),
        ({"user": "U1"}, True),
        ({"view": []}, True),
        ({"trigger_id": 5}, True),
        ({"type": {"block_actions": 1}}, True),
        ({"actions": "click"}, True),
        ({"actions": [{"action_id": "a"}, "b"]}, True),
    ],
)
def test_a_payload_slack_would_never_send_is_malformed(body: Any, malformed: bool) -> None:
    assert malformed_payload(body) is malformed


async def test_a_body_that_is_not_utf8_is_401_and_counted_without_a_traceback(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    body = b"text=\xff\xfe&command=/uat"
    async with bot.http.post(slack_events(bot), data=body, headers=fresh_headers(body)) as r:
        assert r.status == 401
    assert refused(bot, "/slack/events", "unreadable") == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_signed_event_slack_would_never_send_is_400_and_counted(bot: Bot) -> None:
    body = json.dumps(
        {"type": "event_callback", "event": {"type": "message", "text": {"x": 1}}}
    ).encode()
    headers = fresh_headers(body, **{"Content-Type": "application/json"})
    async with bot.http.post(slack_events(bot), data=body, headers=headers) as r:
        assert r.status == 400
    assert refused(bot, "/slack/events", "malformed") == 1


async def test_an_unsigned_request_is_401_and_counted(bot: Bot) -> None:
    body = slash_command_body("help")
    async with bot.http.post(slack_events(bot), data=body, headers={"Content-Type": FORM}) as r:
        assert r.status == 401
    assert refused(bot, "/slack/events", "bad_signature") == 1


@pytest.mark.parametrize("encoding", ["identity", "Identity", "IDENTITY", ""])
async def test_an_identity_encoding_in_any_case_is_read(bot: Bot, encoding: str) -> None:
    body = slash_command_body("help")
    headers = fresh_headers(body, **{"Content-Encoding": encoding})
    async with bot.http.post(slack_events(bot), data=body, headers=headers) as r:
        assert r.status == 200 and "/uat help" in await r.text()


@pytest.mark.parametrize("encoding", ["GZIP", "deflate", "x-unknown"])
async def test_a_compressed_body_in_any_spelling_is_415_and_the_connection_closed(
    bot: Bot, encoding: str
) -> None:
    body = slash_command_body("help")
    headers = fresh_headers(body, **{"Content-Encoding": encoding})
    async with bot.http.post(slack_events(bot), data=body, headers=headers) as r:
        assert r.status == 415
        assert r.headers.get("Connection", "").lower() == "close"


async def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413(bot: Bot) -> None:
    at_limit = b"a" * guard.SLACK_MAX_BODY
    over = at_limit + b"a"
    async with bot.http.post(slack_events(bot), data=at_limit, headers={"Content-Type": FORM}) as r:
        assert r.status == 401  # read in full, then refused as unsigned
    async with bot.http.post(slack_events(bot), data=over, headers={"Content-Type": FORM}) as r:
        assert r.status == 413
        assert r.headers.get("Connection", "").lower() == "close"

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    for body, status in ((at_limit, 401), (over, 413)):
        async with bot.http.post(
            slack_events(bot), data=chunks(body), headers={"Content-Type": FORM}
        ) as r:
            assert r.status == status
            if status == 413:
                assert r.headers.get("Connection", "").lower() == "close"


async def raw_head(bot: Bot, head: bytes, then: bytes = b"") -> str:
    """Send `head`, then `then`, over a raw connection; the answer's status line and headers."""
    address = urlsplit(bot.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading when the rest arrives
        writer.write(then)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # read until the bot closes
    finally:
        writer.close()
    return answer.decode(errors="replace").split("\r\n\r\n", 1)[0].lower()


async def test_a_slow_body_is_408_and_the_connection_closed(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "BODY_DEADLINE", 0.3)
    head = (
        b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    )
    answer = await raw_head(bot, head, b"text=")
    assert answer.startswith("http/1.1 408") and "connection: close" in answer


async def test_a_signed_command_sent_in_chunks_is_read_whole(bot: Bot) -> None:
    body = slash_command_body("help")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    async with bot.http.post(slack_events(bot), data=chunks(), headers=fresh_headers(body)) as r:
        assert r.status == 200 and "/uat help" in await r.text()


async def test_other_paths_and_methods_pass_the_guard_untouched(bot: Bot) -> None:
    async with bot.http.get(f"{bot.url}/healthz") as r:
        assert r.status == 200
    async with bot.http.get(f"{bot.url}/metrics") as r:
        assert r.status == 200 and "uat_rejected_requests" in await r.text()
    async with bot.http.get(slack_events(bot)) as r:
        assert r.status == 405


async def test_a_crash_after_the_ack_is_counted_and_told_with_an_eight_digit_reference(
    make_bot: BotFactory,
) -> None:
    async def explode(ctx: CommandContext, args: object) -> None:
        raise RuntimeError("boom")

    def install(runtime: Runtime) -> None:
        module = types.ModuleType("commands.explode")
        module.NAME = "explode"  # type: ignore[attr-defined]
        module.__doc__ = "Fail on purpose."
        module.run = explode  # type: ignore[attr-defined]
        command = command_from_module(module)
        runtime.dispatcher.table[command.name] = command

    bot: Bot = await make_bot(install)
    await bot.slash("explode")
    await bot.settle()
    [answer] = bot.slack.responses
    assert re.fullmatch(
        re.escape(slack_ui.something_went_wrong("R")).replace("R", "[0-9a-f]{8}"),
        answer.body["text"],
    )
    assert commands_counted(bot, "/uat explode", "error") == 1


async def test_deployers_and_only_deployers_pass_the_deployer_check(bot: Bot) -> None:
    async def reply(text: str, blocks: Any = None, **kwargs: Any) -> None:
        return None

    deployer = CommandContext(bot.runtime.services, DEPLOYER, CHANNEL, reply)
    developer = CommandContext(bot.runtime.services, DEVELOPER, CHANNEL, reply)
    assert deployer.is_deployer is True and developer.is_deployer is False
    deployer.require_deployer("promote")
    with pytest.raises(UserError) as refused_:
        developer.require_deployer("promote")
    assert str(refused_.value) == slack_ui.deployers_only("promote", [DEPLOYER])
