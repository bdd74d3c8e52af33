"""PR environments end to end: signed GitHub deliveries, moto's ECS/ECR, the Slack stub, and
stand-in containers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import boto3
import pytest

from bot.environments import Environments
from bot.prompt_tokens import environment_token
from bot.slack import slack_ui
from bot.slack.chat import Message
from bot.slack.pace import TIER_BURST, TIER_PER_MINUTE
from bot.store import Environment, Facts
from bot.tasks import DEFER_MAX_S
from tests.harness.bot import CHANNEL, DEPLOYER, SIGNING_SECRET, Bot, BotFactory
from tests.harness.pull_requests import PR, REPO, label, pr_event, root_messages
from tests.harness.signing import block_actions_body, event_body, slack_headers
from tests.harness.uat_aws import BASE_FAMILY, OWN_FAMILY, Containers, UatAccount


@pytest.fixture
async def uat(make_bot: BotFactory, account: UatAccount, containers: Containers) -> Bot:
    bot: Bot = await make_bot(**account.env(containers.url))
    await bot.settle_startup()
    return bot


def envs(bot: Bot) -> Environments:
    return bot.runtime.services.environments


def replies(bot: Bot) -> list[str]:
    [root] = root_messages(bot)
    return [m["text"] for m in bot.slack.thread(CHANNEL, root["ts"])]


async def state(bot: Bot) -> str:
    env = await bot.runtime.services.store.get_environment(REPO, PR)
    assert env is not None
    return env.state


# ---------------------------------------------------------------- starting


async def test_the_uat_label_starts_one_pinned_task_and_opens_the_thread(
    uat: Bot, account: UatAccount
) -> None:
    await label(uat, "uat")
    [task] = account.tasks()
    assert task["lastStatus"] == "RUNNING"
    # the image is pinned by digest, in the bot's own family; the base family is untouched
    assert task["taskDefinitionArn"] in account.revisions(OWN_FAMILY)
    assert account.image_of(task["taskDefinitionArn"]).endswith("@" + account.digests["latest"])
    assert len(account.revisions(BASE_FAMILY)) == 1
    # the task knows its PR, and carries the bot's tags
    [override] = task["overrides"]["containerOverrides"]
    environment = {e["name"]: e["value"] for e in override["environment"]}
    assert environment["PR_NUMBER"] == str(PR)
    assert environment["BRANCH"] == "changes"
    assert environment["HEAD_SHA"] == pr_event("labeled")["pull_request"]["head"]["sha"]
    assert environment["SESSION_ID"] == task["startedBy"]
    # its own prompt token, derived from the bot's UAT_PROMPT_TOKEN, never that itself
    master = "test-prompt-token-0123456789"
    own = environment_token(master, REPO, PR, environment["SESSION_ID"])
    assert environment["UAT_PROMPT_TOKEN"] == own and master not in str(task)
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags["managed-by"] == "uat-bot" and tags["pr"] == str(PR) and tags["label"] == "uat"
    assert tags["image-digest"] == account.digests["latest"]
    # one thread, whose card says what runs
    [root] = root_messages(uat)
    assert "#2" in root["text"]
    card = str(uat.slack.message(CHANNEL, root["ts"]))
    assert slack_ui.short(account.digests["latest"]) in card and "1111111" in card
    assert await state(uat) == "running"


async def test_a_ready_card_goes_ahead_of_routine_updates_under_slacks_limits(
    uat: Bot, containers: Containers
) -> None:
    uat.slack.real_rate_limits()
    await label(uat)
    await envs(uat).poll()
    assert await state(uat) == "running"
    chat = envs(uat).ctx.chat
    other = await chat.post(Message(CHANNEL, "another card"))
    for n in range(int(TIER_PER_MINUTE[3] * TIER_BURST)):  # chat.update's burst, spent
        await chat.update(CHANNEL, other, f"routine {n}")
    routine = [
        asyncio.create_task(chat.update(CHANNEL, other, f"routine, waiting {n}")) for n in range(5)
    ]
    await asyncio.sleep(0.1)  # the routine updates wait for the next turn
    containers.ready(PR)
    await envs(uat).poll()  # back once the card says ready
    assert not any(task.done() for task in routine)  # the card did not wait behind them
    await asyncio.gather(*routine)
    await uat.settle()

    env = await _env(uat)
    card = env.thread_ts or ""
    texts = [(c.params["ts"], c.params["text"]) for c in uat.slack.calls_to("chat.update")]
    ready_at = max(i for i, (ts, _) in enumerate(texts) if ts == card)
    assert texts[ready_at + 1 :] == [(other, "routine, waiting 4")]  # the latest of the five
    assert "https://pr-2.uat.example.com" in str(uat.slack.message(CHANNEL, card))
    thread = [m["text"] for m in uat.slack.thread(CHANNEL, card)]
    assert thread == [slack_ui.ready_reply(env, uat.settings)[0]]
    assert uat.slack.rate_limits.refused == 0


async def test_a_fork_prs_task_fetches_the_pull_ref_from_the_base_repository(
    uat: Bot, account: UatAccount
) -> None:
    # A fork's PR whose branch is `main`: the base repository has a `main` too, elsewhere.
    payload = pr_event("labeled", "uat")
    head = payload["pull_request"]["head"]
    fork = {**head["repo"], "full_name": "octocat-fork/Hello-World", "fork": True}
    fork["clone_url"] = "https://github.com/octocat-fork/Hello-World.git"
    head.update(ref="main", label="octocat-fork:main", repo=fork)
    status, body = await uat.github("pull_request", payload)
    assert status in (200, 202), body
    await uat.settle()
    [task] = account.tasks()
    [override] = task["overrides"]["containerOverrides"]
    environment = {e["name"]: e["value"] for e in override["environment"]}
    assert environment["REPO"] == payload["repository"]["clone_url"] != fork["clone_url"]
    assert environment["GIT_REF"] == f"refs/pull/{PR}/head"
    assert environment["HEAD_SHA"] == head["sha"]
    assert environment["BRANCH"] == "main"  # shown only; the container never fetches it


async def test_uat_staging_runs_the_staging_image(uat: Bot, account: UatAccount) -> None:
    await label(uat, "uat-staging")
    [task] = account.tasks()
    assert account.image_of(task["taskDefinitionArn"]).endswith("@" + account.digests["staging"])


async def test_the_card_follows_the_task_to_ready(
    uat: Bot, account: UatAccount, containers: Containers
) -> None:
    await label(uat)
    await envs(uat).poll()
    assert await state(uat) == "running"  # the app is still installing
    assert replies(uat) == []
    containers.ready(PR)
    await envs(uat).poll()
    assert await state(uat) == "ready"
    [root] = root_messages(uat)
    assert "https://pr-2.uat.example.com" in str(uat.slack.message(CHANNEL, root["ts"]))
    await uat.settle()  # the reply is posted in the background, after the card says ready
    assert replies(uat) == [slack_ui.ready_reply(await _env(uat), uat.settings)[0]]
    await envs(uat).poll()  # nothing new: no second reply
    assert len(replies(uat)) == 1
    assert (PR, "health") in containers.hits


async def _env(bot: Bot) -> Any:
    return await bot.runtime.services.store.get_environment(REPO, PR)


async def test_a_failing_container_marks_the_environment_failed(
    uat: Bot, containers: Containers, account: UatAccount
) -> None:
    await label(uat)
    containers.failing(PR, "branch changes not found")
    await envs(uat).poll()
    assert await state(uat) == "failed"
    assert "branch changes not found" in replies(uat)[-1]
    assert account.tasks(desired="RUNNING") == []


# ---------------------------------------------------------------- exactly once


async def test_redeliveries_and_repeats_start_one_task(uat: Bot, account: UatAccount) -> None:
    await label(uat, delivery="d-1")
    await label(uat, delivery="d-1")  # GitHub redelivers
    await label(uat, delivery="d-2")  # labeled again while it runs
    assert len(account.tasks()) == 1
    assert len(root_messages(uat)) == 1


async def test_simultaneous_deliveries_for_one_pr_start_one_task(
    uat: Bot, account: UatAccount
) -> None:
    results = await asyncio.gather(
        *(
            uat.github("pull_request", pr_event("labeled", "uat"), delivery=f"c-{i}")
            for i in range(6)
        )
    )
    assert all(status in (200, 202) for status, _ in results)
    await uat.settle()
    assert len(account.tasks()) == 1
    assert len(root_messages(uat)) == 1


class Launches:
    """When each launch the bot starts begins its work (the event loop's clock)."""

    def __init__(self, bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: list[float] = []
        self.begun = asyncio.Event()
        launcher = envs(bot).launcher
        launch = launcher.launch

        async def timed(repo: str, pr: int, session: str) -> None:
            self.started.append(asyncio.get_running_loop().time())
            self.begun.set()
            await launch(repo, pr, session)

        monkeypatch.setattr(launcher, "launch", timed)


async def test_a_webhooks_launch_waits_for_the_deliveries_being_acknowledged(
    uat: Bot, account: UatAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    launches = Launches(uat, monkeypatch)
    loop = asyncio.get_running_loop()
    handle, slow_answered = uat.runtime.on_pull_request, []

    async def slowly(event: Any) -> None:
        if event.action == "opened":  # a delivery that takes a while to record
            await asyncio.sleep(0.4)
            slow_answered.append(loop.time())
        await handle(event)

    uat.runtime.on_pull_request = slowly
    slow = asyncio.create_task(uat.github("pull_request", pr_event("opened"), delivery="slow"))
    await asyncio.sleep(0.1)  # the slow delivery is being acknowledged
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"), delivery="label")
    assert status == 202
    assert launches.started == []  # recorded; its AWS work waits for the other one's answer
    assert (await slow)[0] == 202
    await uat.settle()
    [launched] = launches.started
    assert launched >= slow_answered[0]
    assert len(account.tasks()) == 1
    assert await state(uat) == "running"


async def test_a_webhooks_launch_starts_within_defer_max_s_under_a_steady_stream_of_deliveries(
    uat: Bot, account: UatAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    launches = Launches(uat, monkeypatch)
    loop = asyncio.get_running_loop()
    with uat.runtime.services.tasks.answering():  # deliveries keep arriving, never a lull
        posted = loop.time()
        status, _ = await uat.github("pull_request", pr_event("labeled", "uat"), delivery="d")
        assert status == 202
        await asyncio.wait_for(launches.begun.wait(), 3 * DEFER_MAX_S)
    [launched] = launches.started
    assert DEFER_MAX_S - 0.05 <= launched - posted <= DEFER_MAX_S + 0.5
    await uat.settle()
    assert len(account.tasks()) == 1


async def test_other_labels_start_nothing(uat: Bot, account: UatAccount) -> None:
    await label(uat, "bug")
    assert account.tasks() == []
    assert root_messages(uat) == []


# ---------------------------------------------------------------- stopping


async def test_removing_the_label_stops_and_cleans_up(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    [task] = account.tasks()
    status, _ = await uat.github("pull_request", pr_event("unlabeled", "uat"))
    assert status == 202
    await uat.settle()
    [stopped] = account.tasks()
    assert stopped["lastStatus"] == "STOPPED"
    assert "`uat` removed by Codertocat" in stopped["stoppedReason"]
    assert task["taskDefinitionArn"] in account.revisions(OWN_FAMILY, status="INACTIVE")
    assert await state(uat) == "stopped"
    assert "stopped" in replies(uat)[-1]


async def test_closing_the_pr_stops_it(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    await uat.github("pull_request", pr_event("closed"))
    await uat.settle()
    assert account.tasks(desired="RUNNING") == []
    assert "PR closed by Codertocat" in replies(uat)[-1]


async def test_a_task_that_dies_is_reported_with_its_reason(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    [task] = account.tasks()
    account.ecs.stop_task(cluster="uat", task=task["taskArn"], reason="Essential container exited")
    await envs(uat).poll()
    assert await state(uat) == "failed"
    assert "Essential container exited" in replies(uat)[-1]


async def test_switching_labels_replaces_the_task(uat: Bot, account: UatAccount) -> None:
    await label(uat, "uat")
    await label(uat, "uat-staging")
    live = account.tasks(desired="RUNNING")
    assert len(live) == 1
    assert account.image_of(live[0]["taskDefinitionArn"]).endswith(account.digests["staging"])
    assert len(account.tasks()) == 2  # the first one is stopped
    assert len(root_messages(uat)) == 1  # still one thread


async def test_reopening_a_labelled_pr_starts_it_again(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    await uat.github("pull_request", pr_event("closed"))
    await uat.settle()
    await uat.github("pull_request", pr_event("reopened", "uat"))
    await uat.settle()
    assert len(account.tasks(desired="RUNNING")) == 1
    assert len(root_messages(uat)) == 1


async def test_new_commits_offer_a_restart(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    await uat.github("pull_request", pr_event("synchronize"))
    await uat.settle()
    [root] = root_messages(uat)
    note = uat.slack.thread(CHANNEL, root["ts"])[-1]
    assert "restart to pick them up" in note["text"]
    assert any(
        e.get("action_id") == "uat.env.restart"
        for b in note["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    )
    assert len(account.tasks()) == 1  # no automatic restart


async def test_a_missing_image_fails_with_a_clear_reason(uat: Bot, account: UatAccount) -> None:
    account.ecr.batch_delete_image(
        repositoryName="test-tickets-uat", imageIds=[{"imageTag": "latest"}]
    )
    await label(uat)
    assert await state(uat) == "failed"
    assert slack_ui.no_image("latest") in replies(uat)[-1]
    assert account.tasks() == []


async def test_launch_timeout_fails_instead_of_starting_forever(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    bot: Bot = await make_bot(**account.env(containers.url), UAT_LAUNCH_TIMEOUT_S="0.2")
    await bot.settle_startup()
    await label(bot)
    await asyncio.sleep(0.3)
    await envs(bot).poll()
    assert await state(bot) == "failed"
    assert "not ready in time (last seen: RUNNING, /health phase installing)" in replies(bot)[-1]


# ---------------------------------------------------------------- watching


async def test_one_describe_per_hundred_tasks(uat: Bot, account: UatAccount) -> None:
    for number in (2, 3, 4):
        payload = pr_event("labeled", "uat", number=number)
        await uat.github("pull_request", payload)
    await uat.settle()
    assert len(account.tasks()) == 3
    before = envs(uat).ecs.calls.get("DescribeTasks", 0)
    await envs(uat).poll()
    assert envs(uat).ecs.calls["DescribeTasks"] - before == 1


# ---------------------------------------------------------------- restarts


async def test_a_launch_interrupted_before_run_task_is_finished_after_restart(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    first: Bot = await make_bot(**account.env(containers.url))
    await first.settle_startup()
    # the bot dies right after accepting the delivery: its launch never ran
    first.runtime.services.environments.launcher.launch = _never  # type: ignore[method-assign]
    await label(first)
    assert account.tasks() == []
    await first.runtime.stop()
    second: Bot = await make_bot(**account.env(containers.url))
    await second.settle_startup()
    assert len(account.tasks()) == 1
    assert await state(second) == "running"


async def _never(*args: Any) -> None:
    return None


async def test_a_launch_interrupted_after_run_task_adopts_its_task(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    first: Bot = await make_bot(**account.env(containers.url))
    await first.settle_startup()
    environments = first.runtime.services.environments
    real_run = environments.ecs.run_task

    async def run_then_die(*args: Any, **kwargs: Any) -> Any:
        await real_run(*args, **kwargs)
        raise asyncio.CancelledError  # killed before recording the task

    environments.ecs.run_task = run_then_die  # type: ignore[method-assign]
    await label(first)
    await first.runtime.stop()
    assert len(account.tasks()) == 1
    second: Bot = await make_bot(**account.env(containers.url))
    await second.settle_startup()
    assert len(account.tasks()) == 1  # adopted, not started again
    env = await second.runtime.services.store.get_environment(REPO, PR)
    assert env is not None and env.task_arn == account.tasks()[0]["taskArn"]


# ---------------------------------------------------------------- commands


async def test_status_stop_and_extend_from_slack(
    uat: Bot, account: UatAccount, containers: Containers
) -> None:
    await label(uat)
    containers.ready(PR)
    await envs(uat).poll()
    await uat.slash("status")
    await uat.settle()
    assert "Codertocat/Hello-World#2" in json.dumps(uat.slack.responses[-1].body["blocks"])
    await uat.slash("status PR-2")
    await uat.settle()
    detail = str(uat.slack.responses[-1].body)
    assert "RUNNING" in detail and "ccccccc" in detail and "1 queued" in detail
    await uat.slash("extend #2 12")  # later than the 8 idle hours a launch gets
    await uat.settle()
    assert "now stops when idle" in uat.slack.responses[-1].body["text"]
    await uat.slash("status PR-99")
    await uat.settle()
    assert uat.slack.responses[-1].body["text"] == slack_ui.no_environment(99)
    await uat.slash("status pr_two")
    await uat.settle()
    assert uat.slack.responses[-1].body["text"] == slack_ui.bad_pr_ref("pr_two")
    await uat.slash(f"stop {REPO}#2")
    await uat.settle()
    assert account.tasks(desired="RUNNING") == []
    assert await state(uat) == "stopped"


async def test_idle_environments_are_warned_then_stopped(
    uat: Bot, account: UatAccount, containers: Containers
) -> None:
    await label(uat)
    containers.ready(PR)
    environments = envs(uat)
    await environments.poll()
    real_clock = environments.clock
    idle_until = (await _env(uat)).facts.idle_until
    environments.clock = lambda: idle_until - 60  # type: ignore[method-assign]
    await environments.poll()
    assert "Extend" in str(uat.slack.thread(CHANNEL, root_messages(uat)[0]["ts"])[-1]["blocks"])
    environments.clock = lambda: idle_until + 1  # type: ignore[method-assign]
    await environments.poll()
    await uat.settle()
    environments.clock = real_clock  # type: ignore[method-assign]
    assert await state(uat) == "stopped"
    assert "idle for 8h" in replies(uat)[-1]


async def test_run_task_refusals_show_awss_reason_on_the_card(
    make_bot: BotFactory, account: UatAccount, containers: Containers
) -> None:
    settings = {**account.env(containers.url), "UAT_SUBNETS": "subnet-doesnotexist"}
    bot: Bot = await make_bot(**settings)
    await bot.settle_startup()
    await label(bot)
    assert await state(bot) == "failed"
    assert "AWS RunTask failed (InvalidSubnetID.NotFound)" in replies(bot)[-1]
    assert account.tasks() == []


def _target_group(account: UatAccount, session: str) -> str:
    elb = boto3.client("elbv2", endpoint_url=account.endpoint, region_name="us-east-1")
    vpc = account.ec2.describe_subnets(SubnetIds=[account.subnet])["Subnets"][0]["VpcId"]
    group = elb.create_target_group(
        Name=f"uat-{session}"[:32],
        Protocol="HTTP",
        Port=3001,
        VpcId=vpc,
        TargetType="ip",
        Tags=[{"Key": "SESSION_ID", "Value": session}],
    )
    return str(group["TargetGroups"][0]["TargetGroupArn"])


def _target_groups(account: UatAccount) -> list[str]:
    elb = boto3.client("elbv2", endpoint_url=account.endpoint, region_name="us-east-1")
    return [g["TargetGroupArn"] for g in elb.describe_target_groups()["TargetGroups"]]


async def test_stopping_removes_the_routing_the_container_registered(
    uat: Bot, account: UatAccount
) -> None:
    await label(uat)
    session = (await _env(uat)).facts.session
    mine = _target_group(account, session)
    other = _target_group(account, "pr9-someoneelse")
    await uat.github("pull_request", pr_event("closed"))
    await uat.settle()
    assert mine not in _target_groups(account)
    assert other in _target_groups(account)


async def test_cleanup_finds_and_removes_what_nobody_owns(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    [task] = account.tasks()
    leftover_group = _target_group(account, "pr7-gone")
    # an orphan task of the bot's and a revision no live task uses
    orphan = account.ecs.run_task(
        cluster="uat",
        taskDefinition=task["taskDefinitionArn"],
        launchType="FARGATE",
        startedBy="pr7-gone",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [account.subnet],
                "securityGroups": [account.security_group],
            }
        },
        tags=[
            {"key": "managed-by", "value": "uat-bot"},
            {"key": "uat-instance", "value": uat.settings.installation},
        ],
    )["tasks"][0]["taskArn"]
    unused = account.ecs.register_task_definition(
        family=OWN_FAMILY,
        containerDefinitions=[{"name": "app", "image": "x@sha256:00", "memory": 512}],
    )["taskDefinition"]["taskDefinitionArn"]
    await uat.slash("cleanup --dry-run")
    await uat.settle()
    assert "Only deployers" in uat.slack.responses[-1].body["text"]  # a developer asked
    await uat.slash("cleanup --dry-run", user=DEPLOYER)
    await uat.settle()
    listed = uat.slack.responses[-1].body["text"]
    assert "Would remove 1 tasks" in listed and orphan.rsplit("/", 1)[-1] in listed
    assert unused.rsplit("/", 1)[-1] in listed and leftover_group.rsplit("/", 1)[-1] in listed
    assert len(account.tasks(desired="RUNNING")) == 2  # a dry run touches nothing
    await uat.slash("cleanup", user=DEPLOYER)
    await uat.settle()
    card = uat.slack.responses[-1].body
    assert "Would remove 1 tasks" in card["text"]
    assert len(account.tasks(desired="RUNNING")) == 2  # not before it is confirmed
    [button] = [e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]][:1]
    [answer] = await uat.click(button["action_id"], button["value"], user=DEPLOYER)
    assert "Removed 1 tasks" in answer.body["text"]
    assert [t["taskArn"] for t in account.tasks(desired="RUNNING")] == [task["taskArn"]]
    assert unused in account.revisions(OWN_FAMILY, status="INACTIVE")
    assert leftover_group not in _target_groups(account)
    await uat.slash("cleanup", user=DEPLOYER)
    await uat.settle()
    assert uat.slack.responses[-1].body["text"].startswith("Nothing to clean up")


async def test_app_home_shows_environments_and_images(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    body = event_body(
        {"type": "app_home_opened", "user": "U0HUMAN", "channel": "D0HOME", "tab": "home"}
    )
    headers = slack_headers(SIGNING_SECRET, body) | {"Content-Type": "application/json"}
    assert (await uat.post_slack(body, headers))[0] == 200
    view = await uat.slack.wait_for(lambda stub: stub.home_views.get("U0HUMAN"))
    shown = json.dumps(view)
    assert "Codertocat/Hello-World#2" in shown
    assert slack_ui.short(account.digests["latest"]) in shown
    assert slack_ui.short(account.digests["staging"]) in shown


async def test_the_restart_button_replaces_the_task_once(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    await uat.github("pull_request", pr_event("synchronize"))
    await uat.settle()
    [root] = root_messages(uat)
    note = uat.slack.thread(CHANNEL, root["ts"])[-1]
    [restart] = [e for b in note["blocks"] if b["type"] == "actions" for e in b["elements"]]
    for _ in range(2):  # a double click
        body = block_actions_body(
            restart["action_id"],
            restart["value"],
            user_id="U0HUMAN",
            channel_id=CHANNEL,  # changes are taken in the UAT channel only
            response_url=uat.slack.new_response_url(),
        )
        assert (await uat.post_slack(body, slack_headers(SIGNING_SECRET, body)))[0] == 200
        await uat.settle()
    assert len(account.tasks(desired="RUNNING")) == 1
    assert len(account.tasks()) == 2  # the first one was stopped, one replacement started
    assert uat.slack.responses[-1].body["text"] == slack_ui.CARD_USED


async def test_a_long_overview_still_fits_in_one_slack_answer(make_bot: BotFactory) -> None:
    bot: Bot = await make_bot()
    store = bot.runtime.services.store
    for number in range(1, 121):
        await store.save_environment(
            Environment(
                repo="acme/web",
                pr=number,
                state="running",
                label="uat",
                facts=Facts(launch_started=1.0, idle_until=2.0, image_tags=("abc1234",)),
            )
        )
    await bot.slash("status")
    await bot.settle()
    [answer] = bot.slack.responses
    assert answer.error is None, answer.errors  # Slack would accept it
    shown = json.dumps(answer.body["blocks"])
    assert "acme/web#100*" in shown and "acme/web#101*" not in shown
    assert "and 20 more (120 active)" in shown


# ---------------------------------------------------------------- first-day rough edges (#11)


def answer(bot: Bot) -> str:
    text: str = bot.slack.responses[-1].body["text"]
    return text


async def test_a_prompt_while_starting_says_it_is_starting_and_until_when(
    uat: Bot, account: UatAccount, containers: Containers
) -> None:
    environments = envs(uat)
    environments.launcher.launch = _never  # type: ignore[method-assign]  # stays "starting", no task yet
    await label(uat)
    await uat.slash("prompt PR-2 add a footer")
    await uat.settle()
    env = await _env(uat)
    assert env.state == "starting" and env.task_arn is None
    started = env.facts.launch_started
    said = answer(uat)
    assert said.startswith(f"{REPO}#2 is still starting (starting): it started ")
    assert slack_ui.when(started + uat.settings.uat_launch_timeout_s) in said
    assert "Label the PR" not in said
    del environments.launcher.launch  # the real launch again: the task runs, the app is not up yet
    await environments.launch(REPO, PR, env.facts.session)
    await uat.slash("prompt PR-2 add a footer")
    await uat.settle()
    assert await state(uat) == "running"
    assert answer(uat).startswith(f"{REPO}#2 is still starting (running — waiting for the app)")


async def test_extend_never_brings_the_idle_stop_earlier(uat: Bot) -> None:
    await label(uat)
    before = (await _env(uat)).facts.idle_until  # 8 hours from the launch
    await uat.slash("extend PR-2 1")
    await uat.settle()
    env = await _env(uat)
    assert env.facts.idle_until == before
    assert answer(uat) == slack_ui.extend_kept(env, 1)
    await uat.slash("extend PR-2 24")
    await uat.settle()
    later = await _env(uat)
    assert later.facts.idle_until > before + 15 * 3600
    assert answer(uat) == slack_ui.extended(later)


async def test_bad_hours_get_the_allowed_range_at_once(uat: Bot) -> None:
    await label(uat)
    before = (await _env(uat)).facts.idle_until
    for hours in ("-5", "abc", "0", "10000", "nan", "inf", "0.5", "`<!channel>`"):
        status, said = await uat.slash(f"extend PR-2 {hours}")  # answered in the ack
        usage = uat.runtime.dispatcher.table["extend"].usage
        assert status == 200 and said == slack_ui.usage_error(
            slack_ui.bad_hours(hours, 1, 72), usage
        ), hours
        assert "<!channel>" not in said
    await uat.settle()
    assert (await _env(uat)).facts.idle_until == before
    assert uat.slack.responses == []  # nothing ran after the ack


async def test_help_extend_shows_the_allowed_hours(uat: Bot) -> None:
    from commands import extend

    _, text = await uat.slash("help extend")
    assert f"{extend.MIN_HOURS:g} to {extend.MAX_HOURS:g}" in text
    assert "never brings the idle stop earlier" in text


async def test_after_a_stop_the_hints_say_restart_while_the_pr_keeps_its_label(
    uat: Bot, account: UatAccount
) -> None:
    await label(uat)
    await uat.slash("stop PR-2")
    await uat.settle()
    assert await state(uat) == "stopped"
    env = await _env(uat)
    assert replies(uat)[-1].endswith("`/uat restart PR-2` starts it again.")
    for command in ("stop PR-2", "extend PR-2 4", "prompt PR-2 add a footer"):
        await uat.slash(command)
        await uat.settle()
        assert answer(uat) == slack_ui.not_running_env(env), command
        assert "/uat restart PR-2" in answer(uat) and "Label the PR" not in answer(uat)
    await uat.slash("restart PR-2")
    await uat.settle()
    assert await state(uat) == "running"
    assert len(account.tasks(desired="RUNNING")) == 1


async def test_a_closed_pr_keeps_the_label_hint_and_cannot_be_restarted(
    uat: Bot, account: UatAccount
) -> None:
    await label(uat)
    await uat.github("pull_request", pr_event("closed"))
    await uat.settle()
    assert "restart" not in replies(uat)[-1]
    await uat.slash("stop PR-2")
    await uat.settle()
    assert answer(uat) == slack_ui.not_running(REPO, PR)
    await uat.slash("restart PR-2")
    await uat.settle()
    assert answer(uat) == slack_ui.not_running(REPO, PR)
    assert account.tasks(desired="RUNNING") == []
    await uat.github("pull_request", pr_event("reopened", "uat"))  # labelled again: restartable
    await uat.settle()
    await uat.slash("stop PR-2")
    await uat.settle()
    assert replies(uat)[-1].endswith("`/uat restart PR-2` starts it again.")


async def test_a_pr_can_be_named_by_the_link_slack_pastes(uat: Bot, account: UatAccount) -> None:
    await label(uat)
    await uat.slash(f"stop <https://github.com/{REPO}/pull/2|#2 Update the README>")
    await uat.settle()
    assert answer(uat) == slack_ui.stopping(await _env(uat))
    assert await state(uat) == "stopped"
    await uat.slash("status <https://github.com/o/r/issues/2|#2>")
    await uat.settle()
    assert answer(uat) == slack_ui.bad_pr_ref("<https://github.com/o/r/issues/2|#2>")
    assert "https://github.com/owner/repo/pull/123" in answer(uat)
