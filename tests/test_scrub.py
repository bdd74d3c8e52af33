"""Nothing secret is posted: every kind of credential, fed into the message builders and the
file-upload path, reaches Slack only as `[redacted]`, with the text around it kept; the same for
logged outside values."""

from __future__ import annotations

import logging
import string
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.web.async_client import AsyncWebClient

from bot.logs import RedactSecrets, outside
from bot.prompt_tokens import environment_token
from bot.scrub import MARKER, Scrubber, scrub
from bot.slack import slack_ui
from bot.slack.chat import Message, ScrubbedChat, SlackChat, Upload
from bot.store.records import Environment, Facts, State
from tests.harness.slack_stub import SlackStub

MASTER = "the-bots-master-prompt-token-0123"
ENV_TOKEN = environment_token(MASTER, "acme/shop", 7, "pr7-0a1b2c3d")

# (kind, as it appears in text, the part replaced by MARKER: all of a token, the value after
# what names it)
CREDENTIALS = [
    ("environment prompt token", ENV_TOKEN, ENV_TOKEN),
    ("GitHub classic PAT", "ghp_" + "aB3dE5gH7jK9" * 3, "ghp_" + "aB3dE5gH7jK9" * 3),
    ("GitHub OAuth token", "gho_" + "Zy8Xw7Vu6Ts5" * 3, "gho_" + "Zy8Xw7Vu6Ts5" * 3),
    ("GitHub user-to-server", "ghu_" + "q1W2e3R4t5Y6" * 3, "ghu_" + "q1W2e3R4t5Y6" * 3),
    ("GitHub server-to-server", "ghs_" + "Mn0Bv9Cx8Za7" * 3, "ghs_" + "Mn0Bv9Cx8Za7" * 3),
    ("GitHub refresh token", "ghr_" + "Lk4Jh3Gf2Ds1" * 3, "ghr_" + "Lk4Jh3Gf2Ds1" * 3),
    (
        "GitHub fine-grained PAT",
        "github_pat_11ABCDEFG0" + "x1_Y2z3" * 11,
        "github_pat_11ABCDEFG0" + "x1_Y2z3" * 11,
    ),
    (
        "Slack bot token",
        "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOp",
        "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOp",
    ),
    (
        "Slack user token",
        "xoxp-1234567890-9876543210-QwErTyUiOp",
        "xoxp-1234567890-9876543210-QwErTyUiOp",
    ),
    ("Slack workspace token", "xoxa-2-1234567890-AsDfGhJkL0", "xoxa-2-1234567890-AsDfGhJkL0"),
    ("Slack refresh token", "xoxr-1234567890-ZxCvBnMqWe", "xoxr-1234567890-ZxCvBnMqWe"),
    (
        "Slack app token",
        "xapp-1-A0123BCDE-1234567890-f00dbabe1234",
        "xapp-1-A0123BCDE-1234567890-f00dbabe1234",
    ),
    ("AWS access key id", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("AWS temporary key id", "ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
    (
        "AWS secret access key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("Anthropic key", "sk-ant-api03-" + "Ab1_Cd2-Ef3" * 4, "sk-ant-api03-" + "Ab1_Cd2-Ef3" * 4),
    (
        "Authorization Bearer",
        "Authorization: Bearer eyJhbGciOi.eyJzdWIi.SflKxwRJ",
        "eyJhbGciOi.eyJzdWIi.SflKxwRJ",
    ),
    ("Authorization Basic", "authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("Authorization token", "-H 'Authorization: token s3cr3tv4lu3'", "s3cr3tv4lu3"),
    (
        "URL userinfo",
        "https://deploy:hunter2hunter2@git.example.com/a.git",
        "deploy:hunter2hunter2",
    ),
]
IDS = [kind for kind, _, _ in CREDENTIALS]

ENV = Environment(
    repo="acme/shop",
    pr=7,
    state=State.READY,
    label="uat",
    facts=Facts(session="pr7-0a1b2c3d", title="t", branch="b", url="https://github.com/x"),
)
RELAY = SimpleNamespace(
    job_id="0123456789ab", repo="acme/shop", pr=7, user="U0DEV", thread_ts="1.1", prompt="go"
)
NO_APP = SimpleNamespace(uat_app_url=None)
TASK = SimpleNamespace(stopped_reason="", stop_code=None, exit_code=None)


def built_by_every_builder(text: str) -> list[str]:
    """`text` as each builder that takes outside text shows it (texts and blocks, flattened)."""
    job = {"state": "failed", "summary": text, "files_changed": [text]}
    return [
        slack_ui.mrkdwn(text),
        slack_ui.code(text),
        slack_ui.code_block(["line one", text, "line three"]),
        slack_ui.link_label(text),
        str(slack_ui.plain_text(text, limit=10_000)),
        *slack_ui.split_escaped(text),
        *slack_ui.prompt_result(RELAY, job),
        slack_ui.container_refused(ENV, text),
        slack_ui.prompt_file_failed(RELAY.job_id, text),
        str(slack_ui.build_failed(text, "it broke", [text])),
        str(slack_ui.build_progress(text, text, [text], 3.0)),
        slack_ui.stop_reason(SimpleNamespace(**{**vars(TASK), "stopped_reason": text})),
        str(slack_ui.environment_card(ENV.with_facts(title=text, author=text), NO_APP, 0.0)),
    ]


@pytest.mark.parametrize(("kind", "credential", "secret"), CREDENTIALS, ids=IDS)
@pytest.mark.parametrize(
    "where",
    ["{}", "before {} after", "({})", "`{}`", "line\n{}\nline", '"{}",', "x={}&y=1"],
    ids=["alone", "in prose", "in brackets", "in backticks", "on its own line", "quoted", "query"],
)
def test_no_credential_survives_a_message_builder(
    kind: str, credential: str, secret: str, where: str
) -> None:
    text = where.format(credential)
    for shown in built_by_every_builder(text):
        assert secret not in shown, (kind, shown)
        assert MARKER in shown, (kind, shown)


@pytest.mark.parametrize(("kind", "credential", "secret"), CREDENTIALS, ids=IDS)
def test_a_credential_across_a_split_point_is_redacted_whole(
    kind: str, credential: str, secret: str
) -> None:
    """Long agent text is cut into messages: a credential straddling a cut is still found,
    because the whole text is scrubbed before it is split."""
    for offset in range(1, len(credential), max(1, len(credential) // 6)):
        body = "x" * (slack_ui.SPLIT_AT - offset) + f" {credential} " + "y" * 200
        parts = slack_ui.split_escaped(body)
        assert len(parts) == 2
        assert not any(secret[:8] in part for part in parts), (kind, offset)
        assert secret not in "".join(parts) and MARKER in "".join(parts)
        result = slack_ui.prompt_result(RELAY, {"state": "succeeded", "summary": body})
        assert not any(secret[:8] in message for message in result), (kind, offset)


SURROUNDING = st.text(alphabet=string.ascii_letters + string.digits + " .,!?<>&\n", max_size=80)


@settings(max_examples=300, deadline=None)
@given(
    before=SURROUNDING,
    after=SURROUNDING,
    credential=st.sampled_from(CREDENTIALS),
    limit=st.integers(min_value=20, max_value=400),
)
def test_scrubbing_keeps_every_other_character(
    before: str, after: str, credential: tuple[str, str, str], limit: int
) -> None:
    """Whatever surrounds a credential comes through exactly, however the text is split."""
    _, shown, secret = credential
    text = f"{before} {shown} {after}"
    expected = text.replace(secret, MARKER)
    assert scrub(text) == expected
    parts = slack_ui.split_escaped(text, limit)
    joined = "".join(parts).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert joined == expected


def test_the_configured_secrets_are_redacted_where_messages_leave() -> None:
    scrubber = Scrubber([MASTER])
    assert scrubber.text(f"token={MASTER}!") == f"token={MARKER}!"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"a {MASTER} b"}}]
    assert scrubber.value(blocks)[0]["text"]["text"] == f"a {MARKER} b"


@pytest.fixture
async def chat(slack: SlackStub) -> ScrubbedChat:
    client = AsyncWebClient(token=slack.token, base_url=slack.api_url)
    return ScrubbedChat(SlackChat(client, patience_s=5), Scrubber([MASTER]))


@pytest.mark.parametrize(("kind", "credential", "secret"), CREDENTIALS, ids=IDS)
async def test_an_uploaded_file_carries_no_credential(
    chat: ScrubbedChat, slack: SlackStub, kind: str, credential: str, secret: str
) -> None:
    content = slack_ui.prompt_file(
        RELAY, {"state": "succeeded", "summary": credential}, f"out\n{credential}\nend", None
    )
    await chat.upload(
        Upload("C1", None, "prompt-out.txt", content + MASTER, f"title {credential}", credential)
    )
    [file] = slack.files.values()
    sent = file.content.decode() + str([c.params for c in slack.calls])
    assert secret not in sent and MASTER not in sent
    assert MARKER in file.content.decode(), kind
    assert file.content.decode().endswith(f"end\n{MARKER}")


async def test_posts_updates_and_ephemerals_carry_no_credential(
    chat: ScrubbedChat, slack: SlackStub
) -> None:
    said = " ".join(credential for _, credential, _ in CREDENTIALS) + f" {MASTER}"
    blocks: list[dict[str, Any]] = [slack_ui.text_block(said)]
    ts = await chat.post(Message("C1", said, blocks))
    await chat.update("C1", ts, said, blocks)
    await chat.ephemeral("C1", "U1", said, blocks)
    sent = str([c.params for c in slack.calls])
    for _, _, secret in CREDENTIALS:
        assert secret not in sent
    assert MASTER not in sent and sent.count(MARKER) >= 3 * len(CREDENTIALS)


def test_logged_outside_values_carry_no_credential() -> None:
    for kind, credential, secret in CREDENTIALS:
        assert secret not in outside(f"x {credential} y", limit=1000), kind
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "sent %s", (ENV_TOKEN,), None)
    RedactSecrets([MASTER]).filter(record)
    assert ENV_TOKEN not in record.getMessage() and MARKER in record.getMessage()


@pytest.mark.parametrize(
    "text",
    ["a" * 1_000_000, "https://x:" * 100_000, "Authorization: " * 60_000, "ghp_" * 250_000],
    ids=["letters", "schemes and colons", "headers", "prefixes"],
)
def test_scrubbing_a_megabyte_takes_linear_time(text: str) -> None:
    """An agent's output file may be megabytes without a space: no pattern backtracks over it
    (the URL pattern once took 44 s for 32,000 letters)."""
    started = time.perf_counter()
    scrub(text)
    assert time.perf_counter() - started < 5.0
