"""Property-based fuzzing of every way in: `/uat` text, GitHub deliveries, buttons, events.

The pure parts (`Dispatcher.plan`, `parse_pull_request`, `cards.parse_value`) are fuzzed directly;
the HTTP parts go through the real server, one bot per test, every Hypothesis example a request
to that bot. AWS is unconfigured here (no region, no credentials, no config file), so whatever
reaches it must come back as a clear `UserError` ("set AWS_REGION"), never as "Something went
wrong".

The bugs this fuzzing found are pinned by the tests at the end (and in test_forgery.py).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import secrets
import shlex
import string
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.errors import UserError
from bot.github import BadPayload, parse_pull_request, signature
from bot.server import malformed_event
from bot.slack import slack_ui
from bot.slack.cards import card_value, parse_value
from bot.slack.dispatch import Dispatcher, Plan, load_commands
from tests.harness.bot import (
    CHANNEL,
    DEPLOYER,
    DEVELOPER,
    SIGNING_SECRET,
    WEBHOOK_SECRET,
    Bot,
    BotFactory,
    reference,
)
from tests.harness.signing import (
    block_actions_body,
    event_body,
    github_headers,
    slack_headers,
    slash_command_body,
)

TABLE, ACTIONS = load_commands()
DISPATCHER = Dispatcher(TABLE, ACTIONS)
NAMES = sorted(TABLE)

SOMETHING_WENT_WRONG = "Something went wrong"  # what an unexpected exception is answered with
assert slack_ui.SOMETHING_WENT_WRONG.startswith(SOMETHING_WENT_WRONG)
SLACK_ACK_S = 3.0  # Slack gives up on an acknowledgement after 3 s

PURE = settings(max_examples=300, deadline=None, database=None)
HTTP = settings(
    max_examples=100,
    deadline=None,
    database=None,  # no example database: every run starts from the strategies
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one bot per test, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No region, no credentials, no config file: AWS calls fail at once with a clear UserError."""
    for name in (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# ------------------------------------------------------------------ shared strategies

# What a form-encoded or JSON body can carry from Slack: any character but a lone surrogate.
SENDABLE = st.characters(exclude_categories=["Cs"])
# Anything a Python str can hold, lone surrogates included (for the pure parser).
ANY_CHAR = st.characters() | st.characters(categories=["Cs"])
# What an HTTP header value can carry.
HEADER_SAFE = string.ascii_letters + string.digits + string.punctuation + " "

JUNK_WORDS = [
    '"',
    "'",
    '"unterminated',
    "it's",
    "\\",
    "--",
    "-",
    "-h",
    "--help",
    "--cancel",
    "--cancel=",
    "--dry-run",
    "--dry",
    "--c",
    "--zz",
    "=",
    "\x00",
    "\n",
    "\t",
    "\r\n",
    "\u00a0",
    "\u3000",
    "\u202e",
    "PR-1",
    "#12",
    "owner/repo#3",
    "a/b#0",
    "PR-99999999999",
    "1e400",
    "nan",
    "inf",
    "-1",
    "-0.0",
    "0",
    "72",
    "72.0001",
    "1_0",
    "abcdef1",
    "G" * 41,
    "`",
    "```",
    "*bold*",
    "<@U0DEPLOYER>",
    "<!channel>",
    "🙂",
    "١٢٣",
    "x" * 3000,
]


def json_values(text: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """Random JSON values, integers of any size included."""
    text = text if text is not None else st.text(max_size=20)
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        text,
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )


async def post(bot: Bot, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST and return (status, body text), whatever the content type (a 500 is text/plain)."""
    async with bot.http.post(f"{bot.url}{path}", data=body, headers=headers) as response:
        return response.status, await response.text()


async def assert_healthy(bot: Bot) -> None:
    async with bot.http.get(f"{bot.url}/healthz") as response:
        assert response.status == 200, await response.text()


def clear(text: Any) -> bool:
    """A clear sentence for a person: text, not a crash reference, no traceback."""
    return (
        isinstance(text, str)
        and bool(text.strip())
        and SOMETHING_WENT_WRONG not in text
        and "Traceback" not in text
    )


def everything_said(bot: Bot, since: dict[str, int]) -> list[str]:
    """Every text the bot sent to Slack since `since` (response_urls, posts, ephemerals)."""
    said = [r.body.get("text") or "" for r in bot.slack.responses[since["responses"] :]]
    said += [
        str(c.params.get("text", ""))
        for c in bot.slack.calls[since["calls"] :]
        if c.method.startswith("chat.") and c.method != "chat.getPermalink"
    ]
    return said


def mark(bot: Bot) -> dict[str, int]:
    return {"responses": len(bot.slack.responses), "calls": len(bot.slack.calls)}


# ------------------------------------------------------------------ 1. the `/uat` parser


def _max_positionals(parser: argparse.ArgumentParser) -> float:
    total = 0.0
    for action in parser._actions:
        if action.option_strings:
            continue
        total += float("inf") if action.nargs in ("+", "*", argparse.REMAINDER) else 1
    return total


@st.composite
def uat_text(draw: st.DrawFn, chars: st.SearchStrategy[str] = ANY_CHAR) -> str:
    """Free text, or a command name (any case) followed by junk words."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.text(chars, max_size=300))
    name = draw(st.sampled_from([*NAMES, "help", "-h", "--help"]))
    name = draw(st.sampled_from([name, name.upper(), name.title(), f"  {name}"]))
    junk = draw(
        st.lists(st.one_of(st.sampled_from(JUNK_WORDS), st.text(chars, max_size=12)), max_size=6)
    )
    separator = draw(st.sampled_from([" ", "  ", " \t "]))
    return name + " " + separator.join(junk)


def _check_plan(text: str, plan: Plan) -> None:
    assert isinstance(plan, Plan)
    if plan.command is None:
        assert isinstance(plan.answer, str) and plan.answer.strip(), text
        assert plan.args is None
        head = text.strip().partition(" ")[0].lower()
        command = TABLE.get(head)
        if command is not None:
            # a known command that does not run: its usage, its help, or a quoting problem
            assert (
                f"Usage: `/uat {command.name}" in plan.answer
                or plan.answer == command.help
                or plan.answer.startswith("I could not read that:")
            ), (text, plan.answer)
    else:
        assert isinstance(plan.args, argparse.Namespace)
        assert plan.answer is None or isinstance(plan.answer, str)
        assert plan.command is TABLE[plan.command.name]


@PURE
@given(uat_text())
@example("")
@example("   ")
@example("\x00")
@example("help " + "x" * 100_000)
@example("x" * 100_000)
@example("status " + "PR-1 " * 20_000)
@example('prompt PR-1 "' + "'" * 10_000)
@example("rollback " + '"' * 10_001)
@example("lock " + "a " * 50_000)
@example("prompt --cancel")
@example("prompt PR-1 --cancel")
@example("prompt PR-1 --cancel a b")
@example("cleanup --dry")
@example("extend PR-1 nan")
@example("extend PR-1 -5")
@example("STATUS\u00a0PR-1")
@example("status\nPR-1")
def test_plan_never_raises_and_always_answers(text: str) -> None:
    _check_plan(text, DISPATCHER.plan(text))


@PURE
@given(
    st.sampled_from(NAMES),
    st.text(string.ascii_lowercase, min_size=1, max_size=8),
    st.lists(st.text(string.ascii_letters + string.digits, max_size=8), max_size=3),
)
def test_an_unknown_option_first_is_a_usage_error_for_every_command(
    name: str, flag: str, rest: list[str]
) -> None:
    text = " ".join([name, f"--zz{flag}", *rest])
    plan = DISPATCHER.plan(text)
    assert plan.command is None
    assert plan.answer is not None and f"Usage: `/uat {name}" in plan.answer, plan.answer


# commands that split shell-like and take at most two words (prose readers like prompt excluded)
BOUNDED = [
    n for n in NAMES if TABLE[n].splitter is shlex.split and _max_positionals(TABLE[n].parser) < 3
]


@PURE
@given(
    st.sampled_from(BOUNDED),
    st.lists(st.text(string.ascii_letters + string.digits, min_size=1, max_size=8), min_size=3),
)
def test_too_many_words_is_a_usage_error(name: str, words: list[str]) -> None:
    plan = DISPATCHER.plan(" ".join([name, *words]))
    assert plan.command is None
    assert plan.answer is not None and f"Usage: `/uat {name}" in plan.answer, plan.answer


@PURE
@given(st.floats() | st.integers(-(10**6), 10**6))
@example(0.0)
@example(0.99)
@example(1.0)
@example(72.0)
@example(72.00000000000001)
@example(5e-324)
def test_extend_takes_hours_in_1_to_72(hours: float) -> None:
    plan = DISPATCHER.plan(f"extend PR-1 {hours!r}")
    if 1 <= hours <= 72:
        assert plan.command is TABLE["extend"] and plan.args is not None
        assert plan.args.hours == hours
    else:
        assert plan.command is None and plan.answer is not None
        assert "Usage: `/uat extend" in plan.answer, plan.answer
        # the allowed range in one sentence; argparse takes `-1e-05` for an option, not hours
        range_said = plan.answer.startswith(slack_ui.bad_hours(repr(hours), 1, 72))
        assert range_said or plan.answer.startswith("Unexpected: -"), plan.answer


@PURE
@given(st.sampled_from(NAMES), st.sampled_from(["-h", "--help"]), st.lists(st.text(max_size=5)))
def test_help_flag_anywhere_shows_the_commands_help(name: str, flag: str, words: list[str]) -> None:
    if name == "prompt":  # prompt reads prose after the PR: only `prompt -h` is the flag
        words = []
    quoted = [json.dumps(w) for w in words]  # valid shell quoting for any word
    plan = DISPATCHER.plan(" ".join([name, flag, *quoted]))
    assert plan.command is None and plan.answer == TABLE[name].help


@HTTP
@given(
    text=uat_text(SENDABLE),
    user=st.sampled_from([DEVELOPER, DEPLOYER]) | st.from_regex(r"\AU[A-Z0-9]{1,10}\Z"),
)
@example(text="images", user=DEVELOPER)
@example(text="latest", user=DEPLOYER)
@example(text="cleanup --dry-run", user=DEPLOYER)
@example(text="rollback abcdef1", user=DEPLOYER)
@example(text="lock " + "x" * 3000, user=DEPLOYER)
async def test_slash_commands_over_http_never_crash(bot: Bot, text: str, user: str) -> None:
    since = mark(bot)
    body = slash_command_body(
        text, user_id=user, channel_id=CHANNEL, response_url=bot.slack.new_response_url()
    )
    began = time.monotonic()
    status, ack = await bot.post_slack(body, slack_headers(SIGNING_SECRET, body))
    assert status == 200, ack
    assert time.monotonic() - began < SLACK_ACK_S
    assert SOMETHING_WENT_WRONG not in ack
    await bot.settle()
    for said in everything_said(bot, since):
        assert clear(said), (text, said)
    assert all(r.error is None for r in bot.slack.responses[since["responses"] :]), text
    if user != DEPLOYER:  # nobody else moves images or takes the lock (failing is recorded)
        trail = await bot.runtime.services.store.recent_audit(50)
        assert all(e.actor == DEPLOYER or e.result != "ok" for e in trail)
    await assert_healthy(bot)


# ------------------------------------------------------------------ 2. the GitHub webhook

ACTIONS_PR = ("opened", "labeled", "unlabeled", "closed", "reopened", "synchronize")
IMPORTANT_PATHS: list[tuple[str, ...]] = [
    ("action",),
    ("label",),
    ("label", "name"),
    ("pull_request",),
    ("pull_request", "number"),
    ("pull_request", "labels"),
    ("pull_request", "title"),
    ("pull_request", "html_url"),
    ("pull_request", "user"),
    ("pull_request", "user", "login"),
    ("pull_request", "head"),
    ("pull_request", "head", "ref"),
    ("pull_request", "head", "sha"),
    ("pull_request", "state"),
    ("pull_request", "merged"),
    ("repository",),
    ("repository", "full_name"),
    ("repository", "clone_url"),
    ("sender",),
    ("sender", "login"),
]


@functools.cache
def labeled_payload() -> dict[str, Any]:
    payload: dict[str, Any] = reference("github_webhooks/pull_request/labeled.payload.json")
    return payload


def _paths(value: Any, prefix: tuple[str, ...] = (), depth: int = 3) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict) and depth:
        for key, inner in value.items():
            yield (*prefix, key)
            yield from _paths(inner, (*prefix, key), depth - 1)


def same_type(value: Any) -> st.SearchStrategy[Any]:
    """Another value of the same JSON type: valid in shape, random in content."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers()
    if isinstance(value, str):
        return st.text(max_size=40)
    if isinstance(value, list):
        return st.lists(json_values() | st.fixed_dictionaries({"name": st.text()}), max_size=4)
    if isinstance(value, dict):  # its keys are paths of their own
        return st.just(value)
    return json_values()


@st.composite
def mutated_payload(draw: st.DrawFn) -> dict[str, Any]:
    """The octokit `labeled` payload with keys deleted and values replaced by random JSON."""
    payload = copy.deepcopy(labeled_payload())
    payload["action"] = draw(st.sampled_from(ACTIONS_PR))
    payload["label"]["name"] = draw(st.sampled_from(["uat", "uat-staging", "bug"]))
    paths = st.sampled_from(IMPORTANT_PATHS) | st.sampled_from(list(_paths(labeled_payload())))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3, 4]))):
        *parents, key = draw(paths)
        parent: Any = payload
        for step in parents:
            parent = parent.get(step) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or key not in parent:
            continue
        choice = draw(st.sampled_from(["delete", "same type", "same type", "any JSON"]))
        if choice == "delete":
            del parent[key]
        elif choice == "same type":
            parent[key] = draw(same_type(parent[key]))
        else:
            parent[key] = draw(json_values())
    return payload


EVENTS = st.sampled_from(["pull_request", "pull_request", "ping", ""]) | st.text(
    HEADER_SAFE, max_size=20
)
DELIVERIES = st.builds(lambda: str(uuid.uuid4())) | st.text(HEADER_SAFE, max_size=40)


@st.composite
def delivery(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A body and its headers: mostly signed, with random events, deliveries and bodies."""
    kind = draw(st.integers(0, 4))
    if kind <= 1:
        body = json.dumps(draw(mutated_payload())).encode()
    elif kind == 2:
        body = json.dumps(draw(json_values())).encode()
    elif kind == 3:
        body = draw(st.binary(max_size=2000))
    else:
        body = draw(st.text(SENDABLE, max_size=500)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/fuzz"}
    event = draw(EVENTS)
    if event:
        headers["X-GitHub-Event"] = event
    guid = draw(DELIVERIES)
    if guid.strip():
        headers["X-GitHub-Delivery"] = guid
    signing = draw(st.sampled_from(["good", "good", "good", "wrong", "none"]))
    if signing == "good":
        headers["X-Hub-Signature-256"] = signature(WEBHOOK_SECRET, body)
    elif signing == "wrong":
        headers["X-Hub-Signature-256"] = signature("not-the-secret", body)
    return body, headers


@settings(PURE, max_examples=200)
@given(mutated_payload(), st.text(max_size=20))
def test_parse_pull_request_returns_an_event_or_bad_payload(
    payload: dict[str, Any], guid: str
) -> None:
    try:
        event = parse_pull_request(payload, guid)
    except BadPayload as exc:
        assert str(exc)
    else:
        assert isinstance(event.number, int) and not isinstance(event.number, bool)
        assert all(isinstance(label, str) for label in event.labels)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def hooked(make_bot: BotFactory, recorder: Recorder) -> Bot:
    """A bot whose pull_request handler only records: the endpoint itself is what is fuzzed."""

    def install(runtime: Any) -> None:
        runtime.on_pull_request = recorder

    started: Bot = await make_bot(install)
    return started


@HTTP
@given(delivery())
@example((b"", {"X-GitHub-Event": "pull_request"}))
@example((b"null", {"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": "sha256="}))
async def test_webhook_answers_2xx_or_4xx_to_anything(
    hooked: Bot, recorder: Recorder, sent: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = sent
    seen = len(recorder.events)
    status, answer = await post(hooked, "/github/webhook", body, headers)
    assert 200 <= status < 500, (status, answer, body[:200], headers)
    signed = headers.get("X-Hub-Signature-256") == signature(WEBHOOK_SECRET, body)
    if not signed:
        assert status == 401
    if status == 202 and "accepted" in answer:
        [event] = recorder.events[seen:]
        assert event.delivery_id == headers["X-GitHub-Delivery"].strip()
    else:
        assert recorder.events[seen:] == []
    await assert_healthy(hooked)


@HTTP
@given(mutated_payload(), st.sampled_from([True, True, True, False]))
async def test_webhook_with_the_real_handler_never_fails(
    bot: Bot, payload: dict[str, Any], fresh: bool
) -> None:
    """Through `Environments.on_pull_request` (PR environments are not configured here)."""
    body = json.dumps(payload).encode()
    delivery = None if fresh else "same-delivery"
    headers = github_headers(WEBHOOK_SECRET, body, "pull_request", delivery)
    status, answer = await post(bot, "/github/webhook", body, headers)
    not_configured = slack_ui.environments_not_configured(["UAT_ECS_CLUSTER"]).split(":")[0]
    # 503 is the designed answer when a `uat` label asks for environments nobody configured:
    # GitHub will redeliver once an operator does. Anything else >= 500 is a bug.
    assert status < 500 or (status == 503 and not_configured in answer), (status, answer)
    await bot.settle()
    await assert_healthy(bot)


# ------------------------------------------------------------------ 3. buttons and events

# The fields each button's handler reads from its value (beyond "card").
CARD_FIELDS: dict[str, dict[str, type]] = {
    "uat.cancel": {},
    "uat.cleanup.confirm": {"shown": str},
    "uat.env.extend": {"repo": str, "pr": int},
    "uat.env.logs": {"repo": str, "pr": int},
    "uat.env.restart": {"repo": str, "pr": int},
    "uat.latest.confirm": {"ref": str},
    "uat.prompt.cancel": {"repo": str, "pr": int, "job": str},
    "uat.promote.confirm": {"digest": str},
    "uat.rollback.pick": {"sha": str},
    "uat.rollback.confirm": {"sha": str, "digest": str},
    "uat.undo": {"digest": str, "latest": str},
}
DEPLOYERS_ONLY = {
    "uat.cleanup.confirm",
    "uat.latest.confirm",
    "uat.promote.confirm",
    "uat.rollback.pick",
    "uat.rollback.confirm",
    "uat.undo",
}
FRESH = "<fresh card id>"


def test_every_button_handler_is_fuzzed() -> None:
    assert set(CARD_FIELDS) == set(ACTIONS)


def _typed(kind: type) -> st.SearchStrategy[Any]:
    if kind is int:
        return st.integers()
    return st.text(max_size=40) | st.sampled_from(["abcdef1", "sha256:" + "a" * 64, "a/b"])


@st.composite
def button_value(draw: st.DrawFn, action_id: str) -> str:
    """A button value: well-formed for its handler, random JSON, not JSON, or huge."""
    kind = draw(st.integers(0, 5))
    if kind <= 2:
        fields = CARD_FIELDS.get(action_id, {})
        card = draw(st.just(FRESH) | st.text(max_size=20))
        value = {"card": card, **{k: draw(_typed(t)) for k, t in fields.items()}}
        extra = st.text(max_size=8).filter(lambda k: k != "card" and k not in fields)
        value.update(draw(st.dictionaries(extra, json_values(), max_size=2)))
        return json.dumps(value)
    if kind == 3:
        anything = json_values()
        return json.dumps(draw(anything | st.fixed_dictionaries({"card": json_values()})))
    if kind == 4:
        return draw(st.text(SENDABLE, max_size=200))
    return draw(st.sampled_from(["", "x" * 2000, "{" * 10, json.dumps(["card"] * 300)]))


ACTION_IDS = st.one_of(
    st.sampled_from(sorted(ACTIONS)),
    st.sampled_from(sorted(ACTIONS)),
    st.sampled_from(sorted(ACTIONS)),
    st.from_regex(r"\Auat\.[a-z.]{0,20}\Z"),
    st.text(HEADER_SAFE, max_size=20),
)


@st.composite
def click(draw: st.DrawFn) -> tuple[str, str, str]:
    action_id = draw(ACTION_IDS)
    user = draw(st.sampled_from([DEPLOYER, DEVELOPER]) | st.from_regex(r"\AU[A-Z0-9]{1,10}\Z"))
    return action_id, draw(button_value(action_id)), user


@HTTP
@given(click())
@example(("uat.promote.confirm", card_value(digest="sha256:" + "a" * 64), DEVELOPER))
@example(("uat.rollback.confirm", card_value(sha="abcdef1", digest="sha256:1"), DEVELOPER))
@example(("uat.undo", card_value(digest="sha256:1", latest="sha256:2"), DEVELOPER))
@example(("uat.undo", card_value(digest="sha256:1", latest="sha256:2"), DEPLOYER))
@example(("uat.latest.confirm", card_value(ref="main"), DEPLOYER))
@example(("uat.env.restart", card_value(repo="a/b", pr=1), DEVELOPER))
@example(("uat.prompt.cancel", card_value(repo="a/b", pr=1, job="j1"), DEVELOPER))
@example(("uat.cancel", "not json", DEVELOPER))
@example(("uat.cleanup.confirm", card_value(shown="0123456789abcdef"), DEVELOPER))
@example(("uat.cleanup.confirm", card_value(shown="0123456789abcdef"), DEPLOYER))
async def test_button_clicks_are_answered_clearly(bot: Bot, click_: tuple[str, str, str]) -> None:
    action_id, value, user = click_
    card = secrets.token_hex(8)
    value = value.replace(json.dumps(FRESH)[1:-1], card)
    response_url = bot.slack.new_response_url()
    since = mark(bot)
    body = block_actions_body(
        action_id, value, user_id=user, channel_id=CHANNEL, response_url=response_url
    )
    began = time.monotonic()
    status, answer = await post(bot, "/slack/events", body, slack_headers(SIGNING_SECRET, body))
    assert time.monotonic() - began < SLACK_ACK_S
    if action_id.startswith("uat."):
        assert status == 200, answer
    else:  # Bolt answers 404 to an action nothing listens for
        assert status in (200, 404), answer
    await bot.settle()
    said = everything_said(bot, since)
    for text in said:
        assert clear(text), (action_id, value[:200], text)
    assert bot.slack.calls_to("chat.postMessage") == [], "nothing may be announced"
    if user != DEPLOYER:
        assert all(e.actor == DEPLOYER for e in await bot.runtime.services.store.recent_audit(50))
        if action_id in DEPLOYERS_ONLY and card in value:
            assert said and said[0].startswith("Only deployers can "), said
            # the card stays usable for a deployer: a refusal claims nothing
            assert await bot.runtime.services.store.claim(f"card:{card}", "probe")


@st.composite
def slack_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["message", "message", "app_home_opened"]) | st.text(max_size=12))
    event: dict[str, Any] = {"type": kind}
    ts = draw(st.sampled_from(["1700000000.000100", "1.2"]) | st.text(max_size=12))
    optional = {
        "channel": st.sampled_from([CHANNEL, "C0OTHER"]) | st.text(max_size=10) | json_values(),
        "user": st.sampled_from([DEVELOPER, DEPLOYER]) | st.text(max_size=10) | json_values(),
        "text": st.text(SENDABLE, max_size=200) | json_values(),
        "ts": st.just(ts),
        "thread_ts": st.sampled_from([ts, "1699999999.000001"]) | json_values(),
        "subtype": st.sampled_from(["bot_message", "message_changed"]) | json_values(),
        "bot_id": st.just("B1"),
        "tab": st.sampled_from(["home", "messages"]) | json_values(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            event[key] = draw(strategy)
    return event


@settings(HTTP, max_examples=60)  # app_home_opened builds a boto3 client each time: slow-ish
@given(slack_event())
async def test_events_are_acknowledged(bot: Bot, event: dict[str, Any]) -> None:
    since = mark(bot)
    body = event_body(event)
    headers = slack_headers(SIGNING_SECRET, body) | {"Content-Type": "application/json"}
    status, answer = await post(bot, "/slack/events", body, headers)
    if malformed_event(json.loads(body)):  # a field Slack always sends as a string is not one
        assert status == 400, answer
    elif event["type"] in ("message", "app_home_opened"):
        assert status == 200, answer
    else:  # an event type the app does not subscribe to
        assert status in (200, 404), answer
    await bot.settle()
    for text in everything_said(bot, since):
        assert SOMETHING_WENT_WRONG not in text, (event, text)
    await assert_healthy(bot)


# ------------------------------------------------------------------ cards.parse_value


@PURE
@given(
    st.text(ANY_CHAR, max_size=300) | json_values(st.text(ANY_CHAR, max_size=20)).map(json.dumps)
)
@example("")
@example("null")
@example('{"card": 1}')
@example("x" * 2000)
def test_parse_value_returns_a_card_or_says_it_is_used(raw: str) -> None:
    try:
        value = parse_value(raw)
    except UserError as exc:
        assert str(exc) == slack_ui.CARD_USED
    else:
        assert isinstance(value, dict) and isinstance(value["card"], str)


# ------------------------------------------------------------------ bugs the fuzzing found, fixed


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"n": ' + b"1" * 5000 + b"}"],
    ids=["nested-100000-deep", "int-of-5000-digits"],
)
async def test_bug_webhook_unparseable_json_is_a_400(hooked: Bot, body: bytes) -> None:
    headers = github_headers(WEBHOOK_SECRET, body, "pull_request")
    status, answer = await post(hooked, "/github/webhook", body, headers)
    assert status == 400, (status, answer)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("pull_request", "number"), 2**63), (("repository", "full_name"), "a/b\ud800")],
    ids=["number-2**63", "lone-surrogate-in-repo"],
)
async def test_bug_webhook_values_the_store_cannot_hold_are_a_400(
    bot: Bot, path: tuple[str, str], value: Any
) -> None:
    payload = copy.deepcopy(reference("github_webhooks/pull_request/closed.payload.json"))
    payload[path[0]][path[1]] = value
    body = json.dumps(payload).encode()  # ensure_ascii: the surrogate travels as \ud800
    headers = github_headers(WEBHOOK_SECRET, body, "pull_request")
    status, answer = await post(bot, "/github/webhook", body, headers)
    assert status == 400, (status, answer)


@pytest.mark.parametrize(
    ("action_id", "user", "value"),
    [
        ("uat.env.extend", DEVELOPER, {}),  # extend.on_click: KeyError 'repo'
        ("uat.env.restart", DEVELOPER, {"repo": "a/b", "pr": "x"}),  # restart.on_click: int('x')
        ("uat.env.restart", DEVELOPER, {"repo": "a/b", "pr": 2**63}),  # store OverflowError
        ("uat.env.extend", DEVELOPER, {"repo": "a/b", "pr": float("inf")}),  # int(inf)
        ("uat.prompt.cancel", DEVELOPER, {"repo": "a/b"}),  # prompt.cancel_click: KeyError
        ("uat.latest.confirm", DEPLOYER, {}),  # latest.confirm: KeyError 'ref'
        ("uat.rollback.pick", DEPLOYER, {}),  # rollback.pick: KeyError 'sha'
        ("uat.rollback.confirm", DEPLOYER, {}),  # rollback.confirm: KeyError 'sha'
        ("uat.undo", DEPLOYER, {}),  # rollback.undo: KeyError 'digest'
        ("uat.cancel", DEVELOPER, {"card": "\ud800"}),  # store.claim UnicodeEncodeError
        ("uat.cancel", DEVELOPER, "[" * 2000),  # parse_value: RecursionError; 2000 is Slack's max
    ],
)
async def test_bug_a_malformed_button_value_is_answered_clearly(
    bot: Bot, action_id: str, user: str, value: dict[str, Any] | str
) -> None:
    raw = value if isinstance(value, str) else json.dumps({"card": secrets.token_hex(8), **value})
    since = mark(bot)
    body = block_actions_body(
        action_id, raw, user_id=user, channel_id=CHANNEL, response_url=bot.slack.new_response_url()
    )
    status, _ = await post(bot, "/slack/events", body, slack_headers(SIGNING_SECRET, body))
    assert status == 200
    await bot.settle()
    said = everything_said(bot, since)
    assert said and all(clear(text) for text in said), said
