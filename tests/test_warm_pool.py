"""The warm pool (UAT_WARM_POOL) end to end: a real bot on moto's ECS/ECR, the Slack stub, and
stand-in pool containers on 127.0.0.1 (tests/harness/pool_containers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.prompt_tokens import environment_token, pool_token
from bot.slack import slack_ui
from bot.store import PoolEntry, PoolState
from tests.harness.bot import CHANNEL, Bot, BotFactory
from tests.harness.pool_containers import PoolContainers
from tests.harness.pull_requests import PR, REPO, label, root_messages
from tests.harness.uat_aws import CLUSTER, UatAccount

MASTER = "test-prompt-token-0123456789"


def tags_of(task: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in task.get("tags", [])}


def environment_of(task: dict[str, Any]) -> dict[str, str]:
    [override] = task["overrides"]["containerOverrides"]
    return {e["name"]: e["value"] for e in override["environment"]}


def pool_tasks(account: UatAccount, state: str = "waiting") -> list[dict[str, Any]]:
    return [
        t
        for t in account.tasks(desired="RUNNING")
        if tags_of(t).get("pool") and tags_of(t).get("pool-state") == state
    ]


@pytest.fixture
async def pool_containers(account: UatAccount) -> AsyncIterator[PoolContainers]:
    def token_of(task_id: str) -> str | None:
        found = account.ecs.describe_tasks(cluster=CLUSTER, tasks=[task_id])["tasks"]
        return environment_of(found[0]).get("UAT_POOL_TOKEN") if found else None

    stand_in = PoolContainers(token_of)
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def pooled(make_bot: BotFactory, account: UatAccount, pool_containers: PoolContainers) -> Bot:
    bot: Bot = await make_bot(**account.env(pool_containers.url), UAT_WARM_POOL="latest=2")
    await bot.settle_startup()
    return bot


async def entries(bot: Bot) -> list[PoolEntry]:
    return await bot.runtime.services.store.list_pool_entries()


async def poll(bot: Bot) -> None:
    await bot.runtime.services.environments.poll()
    await bot.settle()


def replies(bot: Bot) -> list[str]:
    [root] = root_messages(bot)
    return [m["text"] for m in bot.slack.thread(CHANNEL, root["ts"])]


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "value", ["latest", "latest=two", "nightly=1", "latest=1,latest=2", "latest=99"]
)
def test_a_bad_warm_pool_setting_is_refused_saying_what_to_write(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"UAT_WARM_POOL": value, "UAT_PROMPT_TOKEN": MASTER})
    [problem] = refused.value.problems
    assert problem.startswith("UAT_WARM_POOL is invalid") and "latest=2,staging=0" in problem


def test_a_warm_pool_setting_reads_as_counts_per_tag() -> None:
    settings = load_settings({"UAT_WARM_POOL": " latest=2, staging=0 ", "UAT_PROMPT_TOKEN": MASTER})
    assert settings.warm_pool == {"latest": 2}
    assert load_settings({}).warm_pool == {}


def test_a_pool_with_a_container_url_naming_the_pr_or_session_is_refused() -> None:
    for template in ("http://{ip}:8080/{pr}", "https://{session}.uat.example.com"):
        with pytest.raises(ConfigError) as refused:
            load_settings(
                {
                    "UAT_WARM_POOL": "latest=1",
                    "UAT_PROMPT_TOKEN": MASTER,
                    "UAT_CONTAINER_URL": template,
                }
            )
        [problem] = refused.value.problems
        assert "UAT_CONTAINER_URL" in problem and "{task_id}" in problem
    with pytest.raises(ConfigError) as refused:
        load_settings({"UAT_WARM_POOL": "latest=1"})
    assert "UAT_PROMPT_TOKEN is not set but UAT_WARM_POOL is" in refused.value.problems[0]


# ---------------------------------------------------------------- refill


async def test_the_pool_is_filled_from_the_tags_digest_and_a_stopped_task_is_replaced(
    pooled: Bot, account: UatAccount
) -> None:
    waiting = pool_tasks(account)
    assert len(waiting) == 2
    for task in waiting:
        tags = tags_of(task)
        assert tags["managed-by"] == "uat-bot" and tags["pool-tag"] == "latest"
        assert tags["image-digest"] == account.digests["latest"]
        assert tags["pool"] == task["startedBy"] and tags["uat-instance"]
        assert account.image_of(task["taskDefinitionArn"]).endswith(account.digests["latest"])
        # the pool token alone: derived, never the master, and no PR to run yet
        environment = environment_of(task)
        installation = pooled.settings.installation
        assert environment == {"UAT_POOL_TOKEN": pool_token(MASTER, installation, tags["pool"])}
    stored = await entries(pooled)
    assert {e.task_arn for e in stored} == {t["taskArn"] for t in waiting}
    assert all(e.state == PoolState.WAITING for e in stored)
    token = environment_of(waiting[0])["UAT_POOL_TOKEN"]
    assert token not in str(stored)  # never stored

    await poll(pooled)  # full: nothing more started
    assert len(pool_tasks(account)) == 2 and len(account.tasks()) == 2

    account.ecs.stop_task(cluster=CLUSTER, task=waiting[0]["taskArn"], reason="spot reclaimed")
    await poll(pooled)
    now = pool_tasks(account)
    assert len(now) == 2 and waiting[0]["taskArn"] not in {t["taskArn"] for t in now}
    assert {e.task_arn for e in await entries(pooled)} == {t["taskArn"] for t in now}


# ---------------------------------------------------------------- claiming


async def test_a_label_claims_a_waiting_task_instead_of_running_one(
    pooled: Bot, account: UatAccount, pool_containers: PoolContainers
) -> None:
    waiting = {t["taskArn"] for t in pool_tasks(account)}
    await label(pooled)
    env = await pooled.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and env.task_arn in waiting and env.facts.pool_id
    # no task was started for the PR: it runs the claimed pool task, tagged as the PR's now
    assert not [t for t in account.tasks() if t["startedBy"] == env.facts.session]
    [task] = [t for t in account.tasks() if t["taskArn"] == env.task_arn]
    tags = tags_of(task)
    assert (tags["repo"], tags["pr"], tags["session"]) == (REPO, str(PR), env.facts.session)
    assert tags["pool-state"] == "claimed" and tags["label"] == "uat"
    # the claim carried the PR, and this environment's own prompt token
    [claim] = pool_containers.claims.values()
    assert claim.session_id == env.facts.session and claim.git_ref == f"refs/pull/{PR}/head"
    assert claim.prompt_token == environment_token(MASTER, REPO, PR, env.facts.session)
    assert claim.head_sha == env.facts.head_sha and claim.pr_number == PR
    # the pool refilled to two waiting tasks
    assert len(pool_tasks(account)) == 2
    # and the environment goes the normal way to Ready
    pool_containers.ready_all()
    await poll(pooled)
    env = await pooled.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and env.state == "ready"
    assert replies(pooled)[-1] == slack_ui.ready_reply(env, pooled.settings)[0]


async def test_a_refused_claim_falls_back_to_a_cold_launch_with_a_note(
    pooled: Bot, account: UatAccount, pool_containers: PoolContainers
) -> None:
    for task in pool_tasks(account):
        pool_containers.taken.add(task["taskArn"].rsplit("/", 1)[-1])
    await label(pooled)
    env = await pooled.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and not env.facts.pool_id
    [cold] = [t for t in account.tasks(desired="RUNNING") if t["startedBy"] == env.facts.session]
    assert env.task_arn == cold["taskArn"]
    assert slack_ui.warm_claim_failed(slack_ui.WARM_CLAIM_REFUSED) in replies(pooled)
    # the task that refused is stopped, and the pool is full again
    refused = pool_containers.attempts[0]
    assert refused not in {t["taskArn"].rsplit("/", 1)[-1] for t in account.tasks("RUNNING")}
    assert len(pool_tasks(account)) == 2
