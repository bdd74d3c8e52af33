"""No configured secret reaches the logs, Slack or /metrics; /metrics counts what happened."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.logs import configure_logging
from tests.harness.bot import BOT_TOKEN, DEPLOYER, SIGNING_SECRET, WEBHOOK_SECRET, Bot, BotFactory
from tests.harness.pull_requests import label, pr_event
from tests.harness.uat_aws import Containers, UatAccount, set_up_account

PROMPT_TOKEN = "prompt-token-that-must-stay-hidden-42"
AWS_SECRET = "aws-secret-key-that-must-stay-hidden-42"
SECRETS = [BOT_TOKEN, SIGNING_SECRET, WEBHOOK_SECRET, PROMPT_TOKEN, AWS_SECRET]


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """The bot's own logging set-up, at DEBUG (botocore logs request bodies there)."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging(SECRETS, level=logging.DEBUG, stream=stream)
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


async def test_secrets_never_leave_the_bot(
    make_bot: BotFactory,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    captured_logs: io.StringIO,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    account: UatAccount = set_up_account(aws_env["AWS_ENDPOINT_URL"])
    containers = Containers()
    await containers.start()
    try:
        bot: Bot = await make_bot(**account.env(containers.url), UAT_PROMPT_TOKEN=PROMPT_TOKEN)
        await bot.settle_startup()
        await label(bot)  # the task gets the prompt token in its environment
        await bot.runtime.services.environments.poll()
        for text in ("help", "status", "status PR-2", "images", "promote", "nonsense", "history"):
            await bot.slash(text, user=DEPLOYER)
        await bot.github("pull_request", b"{broken")
        await bot.github("pull_request", pr_event("closed"))
        await bot.settle()
        async with bot.http.get(f"{bot.url}/metrics") as response:
            metrics = await response.text()
    finally:
        await containers.stop()
    slack = json.dumps([c.params for c in bot.slack.calls]) + json.dumps(
        [r.body for r in bot.slack.responses]
    )
    logs = captured_logs.getvalue()
    assert "RunTask" in logs or "run_task" in logs.lower()  # the logs did capture AWS traffic
    for secret in SECRETS:
        assert secret not in logs, "a secret reached the logs"
        assert secret not in slack, "a secret reached Slack"
        assert secret not in metrics, "a secret reached /metrics"


async def test_metrics_count_commands_deliveries_environments_and_polls(
    make_bot: BotFactory, aws_env: dict[str, str]
) -> None:
    account = set_up_account(aws_env["AWS_ENDPOINT_URL"])
    containers = Containers()
    await containers.start()
    try:
        bot: Bot = await make_bot(**account.env(containers.url))
        await bot.settle_startup()
        await label(bot)
        await bot.github("pull_request", pr_event("labeled", "uat"), delivery="x-1")
        await bot.github("pull_request", pr_event("labeled", "uat"), delivery="x-1")
        await bot.slash("help")
        await bot.slash("frobnicate")
        await bot.slash("promote")  # a developer: refused
        await bot.settle()
        await bot.runtime.services.environments.poll()
        async with bot.http.get(f"{bot.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    finally:
        await containers.stop()
    assert 'uat_webhook_deliveries_total{event="pull_request",result="accepted"} 2.0' in text
    assert 'uat_webhook_deliveries_total{event="pull_request",result="duplicate"} 1.0' in text
    assert 'uat_commands_total{command="help",outcome="answered"} 1.0' in text
    assert 'uat_commands_total{command="(unknown)",outcome="answered"} 1.0' in text
    assert 'uat_commands_total{command="/uat promote",outcome="refused"} 1.0' in text
    assert 'uat_environments{state="running"} 1.0' in text
    assert "uat_poll_duration_seconds_count" in text
