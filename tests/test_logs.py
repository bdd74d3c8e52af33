"""A PR container's log from CloudWatch Logs (moto): found from the task definition's awslogs
configuration, read by `/uat logs`, the card's Logs button and `uat-bot logs`, and the failure
card's last lines."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from bot import gateway_text
from bot.aws.gateways import _task
from bot.aws.logs import CloudWatchLogs, LogPlace, LogsAccessDenied, LogStreamGone, NoAwslogs
from bot.config import load_settings
from bot.devtools import terminal
from bot.slack import action_ids, slack_ui
from bot.store import Environment
from tests.harness.bot import CHANNEL, DEVELOPER, Bot, BotFactory
from tests.harness.container_logs import (
    GROUP,
    refusing_logs,
    stream_of,
    task_exits,
    write_log,
)
from tests.harness.pull_requests import PR, REPO, label, pr_event, root_messages
from tests.harness.uat_aws import BASE_FAMILY, CONTAINER, OWN_FAMILY, Containers, UatAccount


@pytest.fixture
async def uat(make_bot: BotFactory, account: UatAccount, containers: Containers) -> Bot:
    bot: Bot = await make_bot(**account.env(containers.url), UAT_OPERATORS="U0OPERATOR")
    await bot.settle_startup()
    return bot


async def env_of(bot: Bot) -> Environment:
    env = await bot.runtime.services.store.get_environment(REPO, PR)
    assert env is not None
    return env


def thread(bot: Bot) -> list[dict[str, Any]]:
    [root] = root_messages(bot)
    return [m for m in bot.slack.thread(CHANNEL, root["ts"]) if m["ts"] != root["ts"]]


def answers(bot: Bot) -> list[str]:
    return [str(r.body.get("text", "")) for r in bot.slack.responses]


def gateway(account: UatAccount, session: boto3.session.Session | None = None) -> CloudWatchLogs:
    return CloudWatchLogs(load_settings(account.env("http://127.0.0.1:9/{pr}")), session)


def run_task(account: UatAccount) -> tuple[str, str]:
    """A task of the base definition; (its ARN, the definition's ARN)."""
    definition = account.ecs.describe_task_definition(taskDefinition=BASE_FAMILY)
    arn = str(definition["taskDefinition"]["taskDefinitionArn"])
    return account.run_pr_task(arn, PR, "pr1-s"), arn


# ---------------------------------------------------------------- the reader (point 1)


async def test_the_stream_is_the_one_the_awslogs_configuration_names(account: UatAccount) -> None:
    task, definition = run_task(account)
    place = await gateway(account).locate(definition, CONTAINER, task)
    assert place == LogPlace(GROUP, "us-east-1", stream_of(task), "123456789012")


async def test_the_last_lines_are_read_from_the_end_oldest_first(account: UatAccount) -> None:
    task, definition = run_task(account)
    write_log(account.endpoint, task, [f"line {i}" for i in range(120)])
    logs = gateway(account)
    place = await logs.locate(definition, CONTAINER, task)
    lines = await logs.tail(place, 5)
    assert [line.text for line in lines] == [f"line {i}" for i in range(115, 120)]
    assert logs.calls == {"DescribeTaskDefinition": 1, "GetLogEvents": 1}


async def test_since_and_grep_keep_only_the_recent_matching_lines(account: UatAccount) -> None:
    task, definition = run_task(account)
    an_hour_ago = time.time() - 3600
    write_log(account.endpoint, task, ["old ERROR: db down", "old ok"], at=an_hour_ago)
    write_log(account.endpoint, task, ["ERROR: db down", "ok", 'ERROR: "quoted"'])
    logs = gateway(account)
    place = await logs.locate(definition, CONTAINER, task)
    recent = await logs.tail(place, 50, since=time.time() - 600)
    assert [line.text for line in recent] == ["ERROR: db down", "ok", 'ERROR: "quoted"']
    errors = await logs.tail(place, 50, grep="ERROR: db")
    assert [line.text for line in errors] == ["old ERROR: db down", "ERROR: db down"]
    quoted = await logs.tail(place, 50, grep='"quoted"', since=time.time() - 600)
    assert [line.text for line in quoted] == ['ERROR: "quoted"']
    assert logs.calls["FilterLogEvents"] >= 3


async def test_a_task_definition_without_awslogs_says_what_to_add(account: UatAccount) -> None:
    account.ecs.register_task_definition(
        family="plain",
        containerDefinitions=[{"name": CONTAINER, "image": "x", "memory": 512}],
    )
    with pytest.raises(NoAwslogs) as refused:
        await gateway(account).locate("plain", CONTAINER, "arn:aws:ecs:us-east-1:1:task/uat/abc")
    assert str(refused.value) == gateway_text.no_awslogs("plain:1", CONTAINER)
    assert "awslogs-stream-prefix" in str(refused.value)


async def test_a_stream_that_is_gone_says_so(account: UatAccount) -> None:
    task, definition = run_task(account)
    write_log(account.endpoint, "arn:aws:ecs:us-east-1:1:task/uat/another", ["x"])
    logs = gateway(account)
    place = await logs.locate(definition, CONTAINER, task)
    with pytest.raises(LogStreamGone) as gone:
        await logs.tail(place, 10)
    assert str(gone.value) == gateway_text.log_stream_gone(GROUP, stream_of(task))


async def test_access_denied_names_the_two_permissions_on_the_group(account: UatAccount) -> None:
    task, definition = run_task(account)
    logs = gateway(account, refusing_logs())
    place = await logs.locate(definition, CONTAINER, task)
    for grep in (None, "x"):
        with pytest.raises(LogsAccessDenied) as denied:
            await logs.tail(place, 10, grep=grep)
        arn = "arn:aws:logs:us-east-1:123456789012:log-group:/ecs/uat:*"
        assert str(denied.value) == gateway_text.logs_access_denied(arn)
        assert "logs:GetLogEvents" in str(denied.value)
        assert "logs:FilterLogEvents" in str(denied.value)


def test_the_bot_policy_grants_exactly_the_two_reads_on_the_log_group() -> None:
    from tests.harness.bot import ROOT

    policy = json.loads((ROOT / "docs" / "iam" / "bot-policy.json").read_text())
    logs = [s for s in policy["Statement"] if any(str(a).startswith("logs:") for a in s["Action"])]
    [statement] = logs
    assert sorted(statement["Action"]) == ["logs:FilterLogEvents", "logs:GetLogEvents"]
    assert all(":log-group:/ecs/uat" in r for r in statement["Resource"])


# ---------------------------------------------------------------- /uat logs (point 2)


async def test_uat_logs_posts_the_last_lines_in_the_prs_thread_for_anyone(
    uat: Bot, account: UatAccount
) -> None:
    await label(uat)
    env = await env_of(uat)
    assert env.task_arn
    write_log(account.endpoint, env.task_arn, [f"request {i} served" for i in range(80)])
    await uat.slash(f"logs PR-{PR}", user=DEVELOPER)  # not an operator: reading is open
    await uat.settle()
    [posted] = thread(uat)[-1:]
    text = json.dumps(posted["blocks"])
    assert "request 79 served" in text and "request 30 served" in text
    assert "request 29 served" not in text  # the last 50
    assert "```" in text
    assert answers(uat)[-1] == slack_ui.logs_posted(env, 50)


async def test_uat_logs_scrubs_and_escapes_the_lines(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    env = await env_of(uat)
    assert env.task_arn
    token = "ghp_" + "a" * 36
    write_log(account.endpoint, env.task_arn, [f"cloning with {token}", "<!channel> `done`"])
    await uat.slash(f"logs PR-{PR}")
    await uat.settle()
    text = json.dumps(thread(uat)[-1]["blocks"])
    assert token not in text and "[redacted]" in text
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text


async def test_long_output_comes_as_a_file(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    env = await env_of(uat)
    assert env.task_arn
    write_log(account.endpoint, env.task_arn, [f"{i:04d} " + "x" * 120 for i in range(400)])
    await uat.slash(f"logs PR-{PR} --lines 300")
    await uat.settle()
    # Slack shares a completed upload a moment later (the strict stub does the same)
    [file] = await uat.slack.wait_for(
        lambda s: [
            f for f in s.files.values() if f.name.startswith(f"logs-pr{PR}-") and f.thread_ts
        ]
    )
    content = file.content.decode()
    assert "0399 " in content and "0100 " in content and "0099 " not in content
    assert file.thread_ts == env.thread_ts


async def test_a_stopped_tasks_log_is_read_while_its_stream_exists(
    uat: Bot, account: UatAccount
) -> None:
    await label(uat)
    env = await env_of(uat)
    assert env.task_arn
    write_log(account.endpoint, env.task_arn, ["app: shutting down on SIGTERM"])
    await uat.github("pull_request", pr_event("unlabeled", "uat"))
    await uat.settle()
    stopped = await env_of(uat)
    assert stopped.state == "stopped"
    assert stopped.facts.task_definition in account.revisions(OWN_FAMILY, status="INACTIVE")
    await uat.slash(f"logs PR-{PR}")
    await uat.settle()
    assert "app: shutting down on SIGTERM" in json.dumps(thread(uat)[-1]["blocks"])


@pytest.mark.parametrize("lines", ["0", "99999", "-3", "ten"])
async def test_a_bad_line_count_is_refused_with_the_range(uat: Bot, lines: str) -> None:
    await label(uat)
    _, body = await uat.slash(f"logs PR-{PR} --lines {lines}")
    await uat.settle()
    said = body + " ".join(answers(uat))
    assert slack_ui.bad_lines(lines, 500) in said


async def test_a_bad_since_is_refused_with_an_example(uat: Bot) -> None:
    await label(uat)
    _, body = await uat.slash(f"logs PR-{PR} --since yesterday")
    await uat.settle()
    assert slack_ui.bad_since("yesterday") in body + " ".join(answers(uat))


async def test_an_unknown_pr_and_one_without_a_task_are_told_apart(uat: Bot) -> None:
    await uat.slash("logs PR-77")
    await uat.settle()
    assert answers(uat)[-1] == slack_ui.no_environment(77)
    store = uat.runtime.services.store
    waiting = await store.save_environment(Environment(REPO, 5, "starting", "uat"))
    await uat.slash("logs PR-5")
    await uat.settle()
    assert answers(uat)[-1] == slack_ui.no_task_for_logs(waiting)


async def test_the_cards_logs_button_posts_them_too(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    env = await env_of(uat)
    assert env.task_arn
    write_log(account.endpoint, env.task_arn, ["app: listening on 3001"])
    card = root_messages(uat)[0]
    [button] = [
        e
        for block in card["blocks"]
        if block["type"] == "actions"
        for e in block["elements"]
        if e["action_id"] == action_ids.ENV_LOGS
    ]
    await uat.click(button["action_id"], button["value"], user=DEVELOPER)
    assert "app: listening on 3001" in json.dumps(thread(uat)[-1]["blocks"])


async def test_uat_bot_logs_prints_them_and_follows(
    uat: Bot, account: UatAccount, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    await label(uat)
    env = await env_of(uat)
    assert env.task_arn
    write_log(account.endpoint, env.task_arn, ["first", "second"], at=time.time() - 5)
    monkeypatch.setattr(terminal, "FOLLOW_EVERY_S", 0.01)
    task_arn = env.task_arn

    async def later() -> None:
        write_log(account.endpoint, task_arn, ["third"])

    real_read = terminal.LogReader.read
    rounds = 0

    async def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal rounds
        rounds += 1
        if rounds == 2:
            await later()
        return await real_read(self, *args, **kwargs)

    monkeypatch.setattr(terminal.LogReader, "read", read)
    await terminal.logs(uat.settings, f"PR-{PR}", 50, None, None, True, polls=2)
    printed = [line.split(" ", 1)[1] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["first", "second", "third"]


# ---------------------------------------------------------------- failure cards (point 3)

CLONE_REFUSED = [
    "uat-entrypoint: fetching refs/pull/2/head from https://github.com/Codertocat/Hello-World.git",
    "remote: Repository not found.",
    "fatal: Authentication failed for 'https://x-access-token:ghs_"
    + "b" * 36
    + "@github.com/Codertocat/Hello-World.git/'",
    "uat-entrypoint: git fetch failed (exit 128)",
]
BRANCH_GONE = [
    "uat-entrypoint: fetching refs/pull/2/head from https://github.com/Codertocat/Hello-World.git",
    "fatal: couldn't find remote ref refs/pull/2/head",
    "uat-entrypoint: git fetch failed (exit 128)",
]
INSTALL_ERROR = [
    "uat-entrypoint: checked out 7638417 on changes",
    "uat-entrypoint: installing dependencies (npm ci)",
    "npm ERR! code ERESOLVE",
    "npm ERR! ERESOLVE could not resolve",
    'npm ERR! While resolving: hello-world@1.0.0 Found: react@18.2.0 <peer react@"^17">',
    "uat-entrypoint: npm ci failed (exit 1)",
]
APP_CRASHED = [
    "uat-entrypoint: starting the app on port 3001",
    "app: listening on http://0.0.0.0:3001",
    "app: TypeError: Cannot read properties of undefined (reading 'total')",
    "app:     at Cart.summary (/app/src/cart.js:42:17)",
    "uat-entrypoint: the app exited with code 1",
]
OUT_OF_MEMORY = [
    "app: listening on http://0.0.0.0:3001",
    "app: building the search index (1,200,000 documents)",
    "app: <--- Last few GCs --->",
    "app: FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
]


@pytest.mark.parametrize(
    ("log", "health_error", "stop"),
    [
        (CLONE_REFUSED, "git fetch refused: authentication failed", None),
        (BRANCH_GONE, "the PR's head refs/pull/2/head is gone", None),
        (INSTALL_ERROR, "installing dependencies failed (npm ci, exit 1)", None),
        (APP_CRASHED, None, ("Essential container in task exited", 1)),
        (
            OUT_OF_MEMORY,
            None,
            ("OutOfMemoryError: Container killed due to memory usage", 137),
        ),
    ],
    ids=["clone refused", "branch gone", "install error", "app crashed", "out of memory"],
)
async def test_a_failure_card_shows_the_reason_the_exit_code_and_the_logs_last_lines(
    uat: Bot,
    account: UatAccount,
    containers: Containers,
    log: list[str],
    health_error: str | None,
    stop: tuple[str, int] | None,
) -> None:
    await label(uat)
    env = await env_of(uat)
    assert env.task_arn
    noise = [f"app: GET /health 200 ({i})" for i in range(40)]
    write_log(account.endpoint, env.task_arn, noise + log)
    if health_error is not None:
        containers.failing(PR, health_error)
    else:
        assert stop is not None
        task_exits(account.endpoint, "uat", env.task_arn, *stop)
    await uat.runtime.services.environments.poll()
    await uat.settle()
    failed = await env_of(uat)
    assert failed.state == "failed"
    card = root_messages(uat)[0]
    shown = json.dumps(card["blocks"]) + json.dumps(thread(uat)[-1]["blocks"])
    if health_error is not None:
        assert slack_ui.mrkdwn(health_error) in failed.facts.reason
    else:
        assert stop is not None
        assert stop[0] in failed.facts.reason and f"exit code {stop[1]}" in failed.facts.reason
        assert f"exit code {stop[1]}" in shown
    # the last 15 lines, scrubbed: the failure's own lines, none of the noise before them
    assert len(failed.facts.log_tail) == slack_ui.FAILURE_LOG_LINES
    assert failed.facts.log_tail[-1].endswith(log[-1].replace("ghs_" + "b" * 36, "[redacted]"))
    assert "GET /health 200 (24)" not in shown
    for line in log:
        visible = slack_ui.mrkdwn(line).replace("`", "'")
        assert json.dumps(visible)[1:-1] in shown or "[redacted]" in visible
    assert "ghs_" + "b" * 36 not in shown


async def test_a_failure_whose_log_cannot_be_read_says_why(
    uat: Bot, account: UatAccount, containers: Containers
) -> None:
    await label(uat)
    containers.failing(PR, "the app exited")  # no stream was ever written
    await uat.runtime.services.environments.poll()
    await uat.settle()
    failed = await env_of(uat)
    assert failed.state == "failed" and failed.facts.log_tail == ()
    assert "is not in the log group" in failed.facts.log_problem
    assert "No log lines" in json.dumps(root_messages(uat)[0]["blocks"])


def test_the_exit_code_is_the_essential_containers_not_a_sidecars() -> None:
    raw = {
        "taskArn": "arn:aws:ecs:us-east-1:1:task/uat/abc",
        "lastStatus": "STOPPED",
        "stoppedReason": "OutOfMemoryError: Container killed due to memory usage",
        "containers": [
            {"name": "log-router", "exitCode": 0},
            {"name": CONTAINER, "exitCode": 137},
        ],
    }
    task = _task(raw, CONTAINER)
    assert task.exit_code == 137
    assert "exit code 137" in slack_ui.stop_reason(task)
    assert _task(raw).exit_code == 0  # without a name, the first container that has one
