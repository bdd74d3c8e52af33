"""The warm pool (UAT_WARM_POOL) end to end: a real bot on moto's ECS/ECR, the Slack stub, and
stand-in pool containers on 127.0.0.1 (tests/harness/pool_containers.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.config import load_settings
from bot.environments import Environments
from bot.errors import ConfigError
from bot.prompt_tokens import environment_token, pool_token
from bot.slack import slack_ui
from bot.store import Environment, Facts, PoolEntry, PoolState, State
from container.prompt_server import Claim, create_app
from container.prompt_server import Config as PromptConfig
from tests.harness.bot import CHANNEL, Bot, BotFactory
from tests.harness.container_helpers import free_port
from tests.harness.ecr_seed import tag_sha
from tests.harness.pool_containers import PoolContainers
from tests.harness.pull_requests import PR, REPO, label, pr_event, root_messages
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


def envs(bot: Bot) -> Environments:
    return bot.runtime.services.environments


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


async def test_a_claim_whose_answer_was_lost_but_landed_is_used_not_sent_again(
    pooled: Bot, account: UatAccount, pool_containers: PoolContainers
) -> None:
    for task in pool_tasks(account):
        pool_containers.lost.add(task["taskArn"].rsplit("/", 1)[-1])
    await label(pooled)
    env = await pooled.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and env.facts.pool_id
    assert len(pool_containers.attempts) == 1
    [task_id] = pool_containers.claims
    assert env.task_arn is not None and env.task_arn.endswith(task_id)
    assert not [t for t in account.tasks() if t["startedBy"] == env.facts.session]
    assert not [r for r in replies(pooled) if "warm task could not be claimed" in r]


# ---------------------------------------------------------------- exactly once


async def test_two_replicas_and_a_redelivered_label_claim_one_task_for_one_pr(
    make_bot: BotFactory, account: UatAccount, pool_containers: PoolContainers
) -> None:
    settings = {**account.env(pool_containers.url), "UAT_WARM_POOL": "latest=2"}
    one: Bot = await make_bot(**settings)
    await one.settle_startup()
    two: Bot = await make_bot(**settings)  # another replica on the same store (not watching)
    payload = pr_event("labeled", "uat")
    answers = await asyncio.gather(
        one.github("pull_request", payload),
        two.github("pull_request", payload),  # another delivery of the same label
        one.github("pull_request", payload),
    )
    assert all(status in (200, 202) for status, _ in answers)
    await asyncio.gather(one.settle(), two.settle())
    env = await one.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and env.facts.pool_id
    assert len(pool_containers.attempts) == 1 and len(pool_containers.claims) == 1
    claimed = [e for e in await entries(one) if e.state != PoolState.WAITING]
    assert [(e.pool_id, e.state, e.session) for e in claimed] == [
        (env.facts.pool_id, PoolState.CLAIMED, env.facts.session)
    ]
    assert not [t for t in account.tasks() if t["startedBy"].startswith(f"pr{PR}-")]


async def test_a_crash_after_the_claim_landed_is_carried_on_not_leaked(
    pooled: Bot, account: UatAccount, pool_containers: PoolContainers
) -> None:
    """The launch recorded its claim (entry claiming, the environment naming it), the task took
    it, and the process died before it heard back: the resumed launch runs that task."""
    store = pooled.runtime.services.store
    entry = (await entries(pooled))[0]
    session = f"pr{PR}-0a1b2c3d"
    facts = Facts(session=session, pool_id=entry.pool_id, head_sha="a" * 40, branch="changes")
    await store.save_environment(
        Environment(REPO, PR, State.STARTING, label="uat", facts=replace(facts, launch_started=1.0))
    )
    await store.save_pool_entry(
        replace(entry, state=PoolState.CLAIMING, repo=REPO, pr=PR, session=session)
    )
    task_id = (entry.task_arn or "").rsplit("/", 1)[-1]
    pool_containers.claims[task_id] = Claim(
        REPO,
        f"refs/pull/{PR}/head",
        "a" * 40,
        session,
        environment_token(MASTER, REPO, PR, session),
    )
    await envs(pooled).reconcile()  # as after a restart
    await pooled.settle()
    env = await store.get_environment(REPO, PR)
    assert env is not None and env.task_arn == entry.task_arn and env.state == "running"
    assert pool_containers.attempts == []  # the landed claim was not sent again
    assert not [t for t in account.tasks() if t["startedBy"] == session]
    assert (
        tags_of(next(t for t in account.tasks() if t["taskArn"] == entry.task_arn))["session"]
        == session
    )
    assert len(pool_tasks(account)) == 2  # refilled


async def test_a_crash_before_the_environment_named_its_claim_carries_that_claim_on(
    pooled: Bot, account: UatAccount, pool_containers: PoolContainers
) -> None:
    """The entry says this launch claims it but the environment was never told: the resumed
    launch claims that entry, not a second one."""
    store = pooled.runtime.services.store
    first, second = await entries(pooled)
    session = f"pr{PR}-0a1b2c3d"
    facts = Facts(session=session, head_sha="a" * 40, branch="changes", launch_started=1.0)
    await store.save_environment(Environment(REPO, PR, State.STARTING, label="uat", facts=facts))
    await store.save_pool_entry(
        replace(second, state=PoolState.CLAIMING, repo=REPO, pr=PR, session=session)
    )
    await envs(pooled).reconcile()
    await pooled.settle()
    env = await store.get_environment(REPO, PR)
    assert env is not None and env.task_arn == second.task_arn
    assert env.facts.pool_id == second.pool_id
    assert list(pool_containers.claims) == [(second.task_arn or "").rsplit("/", 1)[-1]]
    assert (await store.get_pool_entry(first.pool_id)) == first  # still waiting, untouched


async def test_waiting_pool_tasks_are_neither_adopted_reported_nor_cleaned_up(
    pooled: Bot, account: UatAccount
) -> None:
    assert await envs(pooled).adopt_unknown() == []
    assert not [m for m in pooled.slack.messages.get(CHANNEL, []) if "adopt" in m["text"]]
    found = await envs(pooled).leftovers()
    assert found.tasks == [] and found.revisions == []
    assert len(pool_tasks(account)) == 2


async def test_a_bot_that_lost_its_store_takes_the_pool_back_and_adopts_a_claimed_task(
    make_bot: BotFactory,
    tmp_path: Path,
    pooled: Bot,
    account: UatAccount,
    pool_containers: PoolContainers,
) -> None:
    await label(pooled)
    claimed = await pooled.runtime.services.store.get_environment(REPO, PR)
    assert claimed is not None and claimed.facts.pool_id
    waiting = {t["taskArn"] for t in pool_tasks(account)}
    fresh: Bot = await make_bot(
        **account.env(pool_containers.url),
        UAT_WARM_POOL="latest=2",
        UAT_DB=str(tmp_path / "lost" / "uat-bot.db"),
    )
    await fresh.settle_startup()
    env = await fresh.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and env.task_arn == claimed.task_arn
    assert env.facts.session == claimed.facts.session
    assert {e.task_arn for e in await entries(fresh)} == waiting  # none started, none stopped
    assert {t["taskArn"] for t in pool_tasks(account)} == waiting
    found = await envs(fresh).leftovers()
    assert found.tasks == []


# ---------------------------------------------------------------- tag moves, age, status


async def test_a_promote_that_moves_the_tag_replaces_its_pool(
    pooled: Bot, account: UatAccount
) -> None:
    old = {t["taskArn"] for t in pool_tasks(account)}
    moved = tag_sha(account.ecr, "2222222", "latest")  # as a promote of :staging does
    assert moved != account.digests["latest"]
    await poll(pooled)
    now = pool_tasks(account)
    assert len(now) == 2 and not old & {t["taskArn"] for t in now}
    assert all(tags_of(t)["image-digest"] == moved for t in now)
    assert all(account.image_of(t["taskDefinitionArn"]).endswith(moved) for t in now)
    assert not old & {t["taskArn"] for t in account.tasks(desired="RUNNING")}
    assert {e.digest for e in await entries(pooled)} == {moved}


async def test_pool_tasks_older_than_the_idle_hours_are_recycled(
    pooled: Bot, account: UatAccount
) -> None:
    old = {t["taskArn"] for t in pool_tasks(account)}
    later = time.time() + pooled.settings.uat_idle_hours * 3600 + 60
    envs(pooled).clock = lambda: later
    await poll(pooled)
    now = {t["taskArn"] for t in pool_tasks(account)}
    assert len(now) == 2 and not old & now


async def test_status_and_metrics_show_the_pool(pooled: Bot, account: UatAccount) -> None:
    await label(pooled)
    await poll(pooled)
    await pooled.slash("status")
    await pooled.settle()
    shown = json.dumps(pooled.slack.responses[-1].body["blocks"])
    line = slack_ui.pool_line({"latest": {"waiting": 2, "claimed": 1}}, {"latest": 2})
    assert json.dumps(line)[1:-1] in shown
    async with pooled.http.get(f"{pooled.url}/metrics") as response:
        metrics = await response.text()
    assert 'uat_warm_pool_tasks{state="waiting",tag="latest"} 2.0' in metrics
    assert 'uat_warm_pool_tasks{state="claimed",tag="latest"} 1.0' in metrics
    assert 'uat_warm_pool_claims_total{result="claimed"} 1.0' in metrics


async def test_a_claim_whose_launch_was_replaced_has_its_task_stopped(
    pooled: Bot, account: UatAccount
) -> None:
    """A launch claimed a task, then a relabel replaced it before it recorded the task: the
    task is nobody's, so the refill stops it (after a grace) and the pool is full again."""
    store = pooled.runtime.services.store
    entry = (await entries(pooled))[0]
    facts = Facts(session=f"pr{PR}-22222222", launch_started=time.time())
    await store.save_environment(Environment(REPO, PR, State.STARTING, label="uat", facts=facts))
    await store.save_pool_entry(
        replace(entry, state=PoolState.CLAIMING, repo=REPO, pr=PR, session=f"pr{PR}-11111111")
    )
    await poll(pooled)  # within the grace: left to its launch
    assert entry.task_arn in {t["taskArn"] for t in account.tasks(desired="RUNNING")}
    later = time.time() + 120
    envs(pooled).clock = lambda: later
    await poll(pooled)
    assert entry.task_arn not in {t["taskArn"] for t in account.tasks(desired="RUNNING")}
    assert await store.get_pool_entry(entry.pool_id) is None
    assert len(pool_tasks(account)) == 2


async def test_a_pool_task_ecs_still_provisions_is_not_claimed(
    pooled: Bot, account: UatAccount, pool_containers: PoolContainers, monkeypatch: Any
) -> None:
    """Its container cannot answer yet: the launch goes cold and the task stays in the pool."""
    ecs = pooled.runtime.services.environments.ecs
    describe = ecs.describe
    waiting = {e.task_arn for e in await entries(pooled)}

    async def provisioning(arns: list[str]) -> dict[str, Any]:
        found = await describe(arns)
        return {
            a: replace(t, last_status="PENDING") if a in waiting else t for a, t in found.items()
        }

    monkeypatch.setattr(ecs, "describe", provisioning)
    await label(pooled)
    env = await pooled.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and not env.facts.pool_id
    assert [t["taskArn"] for t in account.tasks() if t["startedBy"] == env.facts.session] == [
        env.task_arn
    ]
    assert pool_containers.attempts == []
    assert {e.task_arn for e in await entries(pooled) if e.state == PoolState.WAITING} == waiting
    assert not [r for r in replies(pooled) if "warm task could not be claimed" in r]


async def test_the_real_prompt_server_in_pool_mode_takes_the_bots_claim(
    make_bot: BotFactory, account: UatAccount, tmp_path: Path
) -> None:
    """The bot's claim against container/prompt_server.py itself, started in pool mode with the
    pool token ECS gave the task: the claim file the entrypoint reads names the PR, and from then
    on the environment's own prompt token opens the server."""
    port = free_port()
    bot: Bot = await make_bot(**account.env(f"http://127.0.0.1:{port}"), UAT_WARM_POOL="latest=1")
    await bot.settle_startup()
    [task] = pool_tasks(account)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    config = PromptConfig.from_env(
        {
            "WORK_DIR": str(tmp_path),
            "UAT_POOL_TOKEN": environment_of(task)["UAT_POOL_TOKEN"],
            "UAT_CLAIM_FILE": str(secrets / "claim"),
            "UAT_PROMPT_TOKEN_FILE": str(secrets / "prompt-token"),
        }
    )
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await label(bot)
    finally:
        await runner.cleanup()
    env = await bot.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and env.task_arn == task["taskArn"] and env.facts.pool_id
    claim = dict(
        line.split("=", 1) for line in (secrets / "claim").read_text().splitlines() if line
    )
    assert claim["GIT_REF"] == f"refs/pull/{PR}/head" and claim["PR_NUMBER"] == str(PR)
    assert claim["SESSION_ID"] == env.facts.session and claim["HEAD_SHA"] == env.facts.head_sha
    assert claim["REPO"] == env.facts.clone_url
    token = environment_token(MASTER, REPO, PR, env.facts.session)
    assert (secrets / "prompt-token").read_text().strip() == token
    assert not [t for t in account.tasks() if t["startedBy"] == env.facts.session]
