"""Adopt, never reap, what the bot does not know: a bot that lost its store finds its running
tasks, their environments and their threads again; a bot acts only on its own installation's
(UAT_INSTANCE) tasks; only a confirmed `/uat cleanup` stops a task nobody owns.

Real moto ECS, the Slack stub and stand-in containers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.environments.context import ADOPTION_TAGS, launch_lease
from bot.slack import action_ids, slack_ui
from bot.store import Environment, State
from tests.harness.bot import CHANNEL, DEPLOYER, DEVELOPER, ROOT, Bot, BotFactory
from tests.harness.pull_requests import REPO, label, pr_event, root_messages
from tests.harness.uat_aws import CLUSTER, OWN_FAMILY, Containers, UatAccount, atomic_dynamodb

Body = dict[str, Any]


async def start(
    make_bot: BotFactory, account: UatAccount, containers: Containers, **env: str
) -> Bot:
    bot: Bot = await make_bot(**account.env(containers.url), **env)
    await bot.settle_startup()
    return bot


def forget_store(bot: Bot) -> None:
    """What a lost UAT_DB is: the file (and SQLite's journal beside it) gone."""
    db = Path(bot.settings.uat_db)
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)


async def environments(bot: Bot) -> dict[int, Environment]:
    found = await bot.runtime.services.store.list_environments()
    return {e.pr: e for e in found}


def running_arns(account: UatAccount) -> set[str]:
    return {t["taskArn"] for t in account.tasks(desired="RUNNING")}


def thread_texts(bot: Bot, ts: str) -> list[str]:
    return [m["text"] for m in bot.slack.thread(CHANNEL, ts) if m["ts"] != ts]


async def ask(bot: Bot, text: str, *, user: str = DEPLOYER) -> Body:
    seen = len(bot.slack.responses)
    status, _ = await bot.slash(text, user=user)
    assert status == 200
    await bot.settle()
    [answer] = bot.slack.responses[seen:]
    body: Body = answer.body
    return body


def cleanup_button(body: Body) -> dict[str, Any]:
    found: dict[str, Any]
    [found] = [
        element
        for block in body.get("blocks") or []
        if block["type"] == "actions"
        for element in block["elements"]
        if element["action_id"] == action_ids.CLEANUP_CONFIRM
    ]
    return found


def unadoptable_task(account: UatAccount, definition: str, installation: str) -> str:
    """A task of `installation` that carries none of the tags adoption needs."""
    task = account.ecs.run_task(
        cluster=CLUSTER,
        taskDefinition=definition,
        launchType="FARGATE",
        startedBy="by-hand",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [account.subnet],
                "securityGroups": [account.security_group],
            }
        },
        tags=[
            {"key": "managed-by", "value": "uat-bot"},
            {"key": "uat-instance", "value": installation},
        ],
    )["tasks"][0]
    return str(task["taskArn"])


# ---------------------------------------------------------------- a lost store


async def test_a_bot_whose_store_was_deleted_shows_every_environment_again(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    first = await start(make_bot, account, containers)
    await label(first, "uat")
    await label(first, "uat-staging", number=3)
    containers.ready(2)
    await first.runtime.services.environments.poll()
    await first.settle()
    before = await environments(first)
    cards = {m["ts"] for m in root_messages(first)}
    ready_replies = thread_texts(first, before[2].thread_ts or "")
    tasks = running_arns(account)
    assert len(tasks) == 2 and len(cards) == 2
    await first.runtime.stop()
    forget_store(first)

    second = await start(make_bot, account, containers)

    assert running_arns(account) == tasks  # nothing stopped, nothing started
    after = await environments(second)
    assert sorted(after) == [2, 3]
    for pr in (2, 3):
        old, new = before[pr], after[pr]
        assert (new.repo, new.label, new.task_arn, new.image_digest) == (
            old.repo,
            old.label,
            old.task_arn,
            old.image_digest,
        )
        assert new.facts.session == old.facts.session
        assert new.facts.head_sha == old.facts.head_sha and new.facts.branch == old.facts.branch
        assert new.thread_ts == old.thread_ts  # its card found again by its metadata
        assert new.state in ("running", "ready")
    assert {m["ts"] for m in root_messages(second)} == cards  # no new card
    adopted = slack_ui.adopted_note(after[2], True)[0]
    assert thread_texts(second, after[2].thread_ts or "") == [*ready_replies, adopted]
    # the status lists both, and following them goes on without a second ready reply
    status = json.dumps(await ask(second, "status", user=DEVELOPER))
    assert f"{REPO}#2" in status and f"{REPO}#3" in status
    await second.runtime.services.environments.poll()
    await second.settle()
    assert (await environments(second))[2].state == "ready"
    assert thread_texts(second, after[2].thread_ts or "") == [*ready_replies, adopted]
    # a restart with the store intact adopts nothing more
    assert await second.runtime.services.environments.adopt_unknown() == []


async def test_an_adopted_environment_whose_card_is_gone_gets_a_new_card_saying_so(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    first = await start(make_bot, account, containers)
    await label(first)
    [task] = account.tasks()
    await first.runtime.stop()
    forget_store(first)
    first.slack.messages[CHANNEL] = []  # the channel's history no longer has the card

    second = await start(make_bot, account, containers)

    [card] = root_messages(second)
    env = (await environments(second))[2]
    assert env.thread_ts == card["ts"] and env.task_arn == task["taskArn"]
    assert thread_texts(second, card["ts"]) == [slack_ui.adopted_note(env, False)[0]]
    assert running_arns(account) == {task["taskArn"]}


async def test_a_task_of_this_installation_missing_its_tags_is_reported_not_stopped(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    first = await start(make_bot, account, containers)
    await label(first)
    [task] = account.tasks()
    stray = unadoptable_task(account, task["taskDefinitionArn"], "uat/test-tickets-uat")
    await first.runtime.services.environments.reconcile()
    await first.settle()
    await first.runtime.services.environments.reconcile()  # said once, not every round
    await first.settle()

    assert running_arns(account) == {task["taskArn"], stray}
    report = slack_ui.cannot_adopt_tags(stray.rsplit("/", 1)[-1], list(ADOPTION_TAGS))
    assert [m["text"] for m in root_messages(first)].count(report) == 1
    assert sorted(await environments(first)) == [2]


# ---------------------------------------------------------------- two installations


async def test_two_installations_on_one_cluster_never_act_on_each_others_tasks(
    make_bot: BotFactory, account: UatAccount, containers: Containers, tmp_path: Path
) -> None:
    team_a = await start(make_bot, account, containers, UAT_INSTANCE="team-a")
    await label(team_a)
    [a_task] = account.tasks()
    assert {t["key"]: t["value"] for t in a_task["tags"]}["uat-instance"] == "team-a"
    posted_by_a = len(team_a.slack.messages.get(CHANNEL, []))

    team_b = await start(
        make_bot, account, containers, UAT_INSTANCE="team-b", UAT_DB=str(tmp_path / "b.db")
    )
    # B neither adopts nor reports A's task, and its cleanup does not list it
    assert await environments(team_b) == {}
    assert len(team_b.slack.messages.get(CHANNEL, [])) == posted_by_a
    listed = await ask(team_b, "cleanup", user=DEPLOYER)
    assert listed["text"].startswith("Nothing to clean up")
    assert "blocks" not in listed or not any(b["type"] == "actions" for b in listed["blocks"])

    # B runs PR 3; A's start-up, rounds and cleanup leave B's task alone
    await label(team_b, number=3)
    b_task = (await environments(team_b))[3].task_arn
    await team_a.runtime.services.environments.reconcile()
    await team_a.runtime.services.environments.poll()
    await team_a.settle()
    assert sorted(await environments(team_a)) == [2]
    assert (await ask(team_a, "cleanup --dry-run"))["text"].startswith("Nothing to clean up")

    # even B's store holding A's record (a replica pointed at the wrong table) stops nothing
    a_env = (await environments(team_a))[2]
    store_b = team_b.runtime.services.store
    await store_b.save_environment(replace(a_env, version=0, thread_ts=None))
    await team_b.runtime.services.environments.poll()
    await team_b.settle()
    assert (await environments(team_b))[2].state == a_env.state  # not failed, not idled out
    await ask(team_b, "stop PR-2", user=DEVELOPER)
    await team_b.settle()
    assert running_arns(account) == {a_task["taskArn"], b_task}
    assert a_env.facts.task_definition in account.revisions(OWN_FAMILY)


# ---------------------------------------------------------------- /uat cleanup


async def test_cleanup_lists_what_it_would_stop_and_only_a_deployer_can_confirm(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot = await start(make_bot, account, containers)
    await label(bot)
    [task] = account.tasks()
    stray = unadoptable_task(account, task["taskDefinitionArn"], "uat/test-tickets-uat")
    stray_id = stray.rsplit("/", 1)[-1]

    refused = await ask(bot, "cleanup", user=DEVELOPER)
    assert refused["text"] == slack_ui.deployers_only("clean up", (DEPLOYER,))
    card = await ask(bot, "cleanup")
    assert stray_id in card["text"] and task["taskArn"].rsplit("/", 1)[-1] not in card["text"]
    assert running_arns(account) == {task["taskArn"], stray}  # listed, not stopped
    button = cleanup_button(card)

    [answer] = await bot.click(button["action_id"], button["value"], user=DEVELOPER)
    assert answer.body["text"] == slack_ui.deployers_only("clean up", (DEPLOYER,))
    assert running_arns(account) == {task["taskArn"], stray}

    [done] = await bot.click(button["action_id"], button["value"], user=DEPLOYER)
    assert "Removed 1 tasks" in done.body["text"] and stray_id in done.body["text"]
    assert running_arns(account) == {task["taskArn"]}
    [again] = await bot.click(button["action_id"], button["value"], user=DEPLOYER)
    assert again.body["text"] == slack_ui.CARD_USED


async def test_a_cleanup_card_confirmed_after_things_changed_removes_nothing(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot = await start(make_bot, account, containers)
    await label(bot)
    [task] = account.tasks()
    first = unadoptable_task(account, task["taskDefinitionArn"], "uat/test-tickets-uat")
    card = await ask(bot, "cleanup")
    second = unadoptable_task(account, task["taskDefinitionArn"], "uat/test-tickets-uat")

    [answer] = await bot.click(**_click(cleanup_button(card)), user=DEPLOYER)

    assert answer.body["text"].startswith(slack_ui.CLEANUP_CHANGED)
    assert second.rsplit("/", 1)[-1] in answer.body["text"]
    assert running_arns(account) == {task["taskArn"], first, second}


def _click(button: dict[str, Any]) -> dict[str, str]:
    return {"action_id": button["action_id"], "value": button["value"]}


@pytest.mark.parametrize("value", ["", "has a comma,", "x" * 257])
def test_uat_instance_must_be_a_valid_tag_value(value: str) -> None:
    from bot.config import load_settings
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match="UAT_INSTANCE"):
        load_settings({"UAT_INSTANCE": value})


def test_the_installation_defaults_to_the_cluster_and_the_repository() -> None:
    from bot.config import load_settings

    settings = load_settings({"UAT_ECS_CLUSTER": "uat", "UAT_ECR_REPOSITORY": "images"})
    assert settings.installation == "uat/images"
    assert load_settings({"UAT_INSTANCE": "team-a"}).installation == "team-a"


async def test_a_task_outliving_its_recorded_stop_is_stopped_on_reconcile(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    """A launch cut short after RunTask while a stop ran: the environment is stopped on record
    but knows no task; the task of that very session is stopped, not adopted."""
    bot = await start(make_bot, account, containers)
    await label(bot)
    [task] = account.tasks()
    store = bot.runtime.services.store
    env = await store.get_environment(REPO, 2)
    assert env is not None
    await store.save_environment(replace(env, state=State.STOPPED, task_arn=None))

    await bot.runtime.services.environments.reconcile()
    await bot.settle()

    assert running_arns(account) == set()
    assert (await environments(bot))[2].state == "stopped"
    assert task["taskArn"] not in {e.task_arn for e in (await environments(bot)).values()}


# ---------------------------------------------------------------- the terminal


def uat_bot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "cleanup", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_uat_bot_cleanup_lists_and_stops_only_with_yes(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot = await start(make_bot, account, containers)
    await label(bot)
    [task] = account.tasks()
    stray = unadoptable_task(account, task["taskDefinitionArn"], bot.settings.installation)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("UAT_", "SLACK_", "GITHUB_"))
    }
    env |= {**account.env(containers.url), "UAT_DB": bot.settings.uat_db, "PYTHONPATH": str(ROOT)}

    asked = await asyncio.to_thread(uat_bot, env)
    assert asked.returncode == 1 and "--yes" in asked.stderr, asked
    listed = await asyncio.to_thread(uat_bot, env, "--dry-run")
    assert listed.returncode == 0 and stray.rsplit("/", 1)[-1] in listed.stdout, listed
    assert task["taskArn"].rsplit("/", 1)[-1] not in listed.stdout
    assert running_arns(account) == {task["taskArn"], stray}

    done = await asyncio.to_thread(uat_bot, env, "--yes")

    assert done.returncode == 0 and "Removed 1 tasks" in done.stdout, done
    assert running_arns(account) == {task["taskArn"]}


# ---------------------------------------------------------------- replaced launches


@pytest.fixture(params=["sqlite", "dynamodb"])
def store_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The bot's store: SQLite in the test's directory, or a fresh DynamoDB table on moto."""
    if request.param == "sqlite":
        return {}
    atomic_dynamodb(monkeypatch.setattr)
    return {"UAT_STORE": "dynamodb", "UAT_DYNAMODB_TABLE": f"uat-{uuid.uuid4().hex[:8]}"}


async def unrecorded_launch(bot: Bot, account: UatAccount) -> dict[str, Any]:
    """PR 2's launch ran its task, then was cut short before recording it (killed, or AWS
    failing): the store says starting, with no task. The task it ran."""
    await label(bot)
    [task] = account.tasks(desired="RUNNING")
    store = bot.runtime.services.store
    env = await store.get_environment(REPO, 2)
    assert env is not None and env.facts.session == task["startedBy"]
    await store.save_environment(replace(env, state=State.STARTING, task_arn=None))
    return task


async def test_a_task_of_a_replaced_launch_is_stopped_when_its_replacement_launches(
    store_env: dict[str, str], make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot = await start(make_bot, account, containers, **store_env)
    old = await unrecorded_launch(bot, account)

    await label(bot, "uat-staging")  # relabelled before the old launch recorded its task

    env = (await environments(bot))[2]
    assert env.label == "uat-staging" and env.task_arn is not None
    assert running_arns(account) == {env.task_arn}  # the replaced launch's task is stopped
    assert env.facts.superseded == (old["startedBy"],)  # until ECS shows it gone
    await bot.runtime.services.environments.poll()
    assert (await environments(bot))[2].facts.superseded == ()
    assert running_arns(account) == {env.task_arn}


async def test_a_task_of_a_replaced_launch_is_stopped_after_its_environment_stopped(
    store_env: dict[str, str], make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    """Relabelled, then stopped before the new launch ran: the stop knows no task, and the
    old launch's task is neither adopted nor left running; it is the bot's own, not a guess."""
    bot = await start(make_bot, account, containers, **store_env)
    old = await unrecorded_launch(bot, account)
    store = bot.runtime.services.store
    lease = launch_lease(REPO, 2)
    assert await store.hold_lease(lease, "elsewhere/pr2-busy", 3600)  # a launch on another replica
    status, _ = await bot.github("pull_request", pr_event("labeled", "uat-staging"))
    assert status in (200, 202)  # its launch waits for the lease
    assert await bot.runtime.services.environments.request_stop(REPO, 2, "stopped", DEPLOYER)
    await bot.settle()
    assert (await environments(bot))[2].state == "stopped"

    environments_ = bot.runtime.services.environments
    await environments_.reconcile()
    await environments_.poll()
    await bot.settle()
    assert running_arns(account) == {old["taskArn"]}  # a launch holds the PR: left to it
    assert (await environments(bot))[2].state == "stopped"  # not adopted
    assert not any("did not adopt" in m["text"] for m in bot.slack.messages.get(CHANNEL, []))

    await store.release_lock(lease, "elsewhere/pr2-busy")
    await environments_.poll()
    assert running_arns(account) == set()
    await environments_.poll()
    assert (await environments(bot))[2].facts.superseded == ()
