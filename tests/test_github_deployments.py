"""The PR page shows its environment: GitHub deployments and the `uat` commit status, against a
GitHub stub that checks every request with GitHub's own OpenAPI description (tests/harness/
github_stub.py), with moto's ECS, the Slack stub and stand-in containers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.config import load_settings
from bot.environments import Environments
from bot.environments.deployments import Deployments
from bot.github_api import DEPLOYMENTS, STATUSES, GitHubApi, GitHubUnavailable
from bot.slack import slack_ui
from bot.store import Post
from tests.harness.bot import CHANNEL, Bot, BotFactory
from tests.harness.github_stub import REFUSED, Fault, GitHubStub
from tests.harness.processes import BotProcess, deliver, eventually, read_store
from tests.harness.pull_requests import PR, REPO, label, pr_event, root_messages
from tests.harness.slack_stub import SlackStub
from tests.harness.uat_aws import Containers, UatAccount

SHA = pr_event("labeled")["pull_request"]["head"]["sha"]
APP_LINK = f"https://pr-{PR}.uat.example.com"


@pytest.fixture
async def github() -> AsyncIterator[GitHubStub]:
    async with GitHubStub() as stub:
        yield stub
        assert stub.problems == [], "requests GitHub's API description refuses"


class Sleeps:
    """Stands in for asyncio.sleep in the GitHub client: records the waits, waits not."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def deployments(bot: Bot) -> Deployments:
    return bot.runtime.services.environments.deployments


async def start(
    make_bot: BotFactory,
    account: UatAccount,
    containers: Containers,
    github: GitHubStub,
    sleeps: Sleeps,
    **overrides: str,
) -> Bot:
    env = {
        **account.env(containers.url),
        "UAT_GITHUB_TOKEN": github.token,
        "UAT_GITHUB_API_URL": github.url,
        **overrides,
    }
    bot: Bot = await make_bot(**env)
    client = deployments(bot).github
    if client is not None:
        client.sleep = sleeps
    await bot.settle_startup()
    return bot


@pytest.fixture
async def uat(
    make_bot: BotFactory,
    account: UatAccount,
    containers: Containers,
    github: GitHubStub,
    sleeps: Sleeps,
) -> Bot:
    return await start(make_bot, account, containers, github, sleeps)


def envs(bot: Bot) -> Environments:
    return bot.runtime.services.environments


async def ready(bot: Bot, containers: Containers) -> None:
    containers.ready(PR)
    await envs(bot).poll()
    await bot.settle()


async def unlabel(bot: Bot) -> None:
    status, _ = await bot.github("pull_request", pr_event("unlabeled", "uat"))
    assert status == 202
    await bot.settle()


def only_deployment(github: GitHubStub) -> dict[str, Any]:
    [deployment] = github.deployments[REPO.lower()]
    return deployment


def thread_texts(bot: Bot) -> list[str]:
    [root] = root_messages(bot)
    return [m["text"] for m in bot.slack.thread(CHANNEL, root["ts"])]


def commit_states(github: GitHubStub) -> list[tuple[str, str]]:
    return [(s["state"], s["context"]) for s in github.commit_statuses.get(SHA, [])]


# ---------------------------------------------------------------- the life of a deployment


async def test_a_labelled_pr_gets_one_deployment_that_follows_it_to_ready_and_to_stopped(
    uat: Bot, github: GitHubStub, containers: Containers
) -> None:
    await label(uat)
    deployment = only_deployment(github)
    assert deployment["sha"] == SHA and deployment["environment"] == f"uat/pr-{PR}"
    assert deployment["transient_environment"] is True
    assert deployment["production_environment"] is False
    [create] = github.calls("repos/create-deployment")
    assert create.body["auto_merge"] is False and create.body["required_contexts"] == []
    session = (await uat.runtime.services.store.get_environment(REPO, PR)).facts.session  # type: ignore[union-attr]
    assert deployment["payload"]["uat_session"] == session
    assert github.deployment_states(deployment["id"]) == ["in_progress"]

    await ready(uat, containers)
    success = github.statuses[deployment["id"]][-1]
    assert success["state"] == "success"
    assert success["environment_url"] == APP_LINK
    [root] = root_messages(uat)
    permalink = f"{uat.slack.base_url}archives/{CHANNEL}/p{root['ts'].replace('.', '')}"
    assert success["log_url"] == permalink

    await unlabel(uat)
    assert github.deployment_states(deployment["id"]) == ["in_progress", "success", "inactive"]
    assert commit_states(github) == [("pending", "uat"), ("success", "uat"), ("success", "uat")]
    assert github.commit_statuses[SHA][-1]["description"] == slack_ui.GITHUB_STATUS_TEXT["inactive"]


async def test_a_failed_environment_shows_the_reason_on_its_deployment_and_commit(
    uat: Bot, github: GitHubStub, containers: Containers
) -> None:
    await label(uat)
    containers.failing(PR, "npm install exploded")
    await envs(uat).poll()
    await uat.settle()
    failure = github.statuses[only_deployment(github)["id"]][-1]
    assert failure["state"] == "failure"
    assert "npm install exploded" in failure["description"]
    assert failure["log_url"].startswith(f"{uat.slack.base_url}archives/{CHANNEL}/")
    assert commit_states(github)[-1] == ("failure", "uat")


async def test_redeliveries_and_repeated_rounds_create_no_second_deployment_or_status(
    uat: Bot, github: GitHubStub, containers: Containers
) -> None:
    await label(uat, delivery="same-delivery")
    await label(uat, delivery="same-delivery")
    await label(uat)  # another delivery of the same label
    for _ in range(3):
        await envs(uat).poll()
        await uat.settle()
    deployment = only_deployment(github)
    assert github.deployment_states(deployment["id"]) == ["in_progress"]
    await ready(uat, containers)
    await ready(uat, containers)
    assert github.deployment_states(deployment["id"]) == ["in_progress", "success"]
    assert len(github.calls("repos/create-commit-status")) == 2


async def test_a_deployment_created_just_before_a_crash_is_found_again_by_its_session(
    uat: Bot, github: GitHubStub
) -> None:
    """The bot reserved the key and GitHub created the deployment, but the bot died before
    recording its id: the next sync finds it by its payload and creates none."""
    github.fail(Fault(503, {"message": "Service Unavailable"}, times=-1))
    await label(uat)
    env = await uat.runtime.services.store.get_environment(REPO, PR)
    assert env is not None
    key = f"github-deployment:{REPO}#{PR}:{env.facts.session}"
    stored, fresh = await uat.runtime.services.store.reserve_post(Post(key, "github"))
    assert not fresh and stored.ts is None  # reserved, never recorded
    github.faults.clear()
    github.deployments[REPO.lower()] = [
        {"id": 77, "sha": SHA, "environment": f"uat/pr-{PR}", "payload": {"uat_session": "other"}},
        {
            "id": 78,
            "sha": SHA,
            "environment": f"uat/pr-{PR}",
            "payload": {"uat_session": env.facts.session},
        },
    ]
    tried = len(github.calls("repos/create-deployment"))  # each answered 503
    await deployments(uat).catch_up(REPO, PR)
    assert len(github.calls("repos/create-deployment")) == tried
    assert github.deployment_states(78) == ["in_progress"]


async def test_a_deployment_another_replica_may_be_creating_is_waited_for_not_duplicated(
    uat: Bot, github: GitHubStub
) -> None:
    """A reservation younger than a minute that GitHub does not know yet may be another
    replica's creation under way: nothing is created until it is older."""
    github.fail(Fault(503, {"message": "Service Unavailable"}, times=-1))
    await label(uat)
    deployments(uat).reserved.clear()  # as if another replica had reserved it
    github.faults.clear()
    await deployments(uat).catch_up(REPO, PR)
    assert github.deployments == {}
    envs(uat).ctx.clock = lambda: time.time() + 61
    await deployments(uat).catch_up(REPO, PR)
    assert github.deployment_states(only_deployment(github)["id"]) == ["in_progress"]


async def test_a_restart_makes_the_old_deployment_inactive_and_starts_a_new_one(
    uat: Bot, github: GitHubStub, containers: Containers
) -> None:
    await label(uat)
    await ready(uat, containers)
    await envs(uat).restart(REPO, PR, "U0DEPLOYER")
    await uat.settle()
    new, old = github.deployments[REPO.lower()]
    assert new["payload"]["uat_session"] != old["payload"]["uat_session"]
    assert github.deployment_states(old["id"]) == ["in_progress", "success", "inactive"]
    assert github.deployment_states(new["id"]) == ["in_progress"]


async def test_a_push_then_a_restart_deploys_the_new_head_and_retires_the_old_deployment(
    uat: Bot, github: GitHubStub, containers: Containers, account: UatAccount
) -> None:
    await label(uat)
    await ready(uat, containers)
    pushed = "1234567890abcdef1234567890abcdef12345678"
    status, _ = await uat.github(
        "pull_request",
        pr_event(
            "synchronize",
            **{"head": {**pr_event("synchronize")["pull_request"]["head"], "sha": pushed}},
        ),
    )
    assert status == 202
    await uat.settle()
    assert len(github.deployments[REPO.lower()]) == 1  # a push alone changes nothing yet
    await envs(uat).restart(REPO, PR, "U0DEPLOYER")
    await uat.settle()
    new, old = github.deployments[REPO.lower()]
    assert (old["sha"], new["sha"]) == (SHA, pushed)
    assert github.deployment_states(old["id"]) == ["in_progress", "success", "inactive"]
    assert github.deployment_states(new["id"]) == ["in_progress"]
    assert [s["state"] for s in github.commit_statuses[pushed]] == ["pending"]
    running = account.tasks(desired="RUNNING")
    [override] = running[-1]["overrides"]["containerOverrides"]
    environment = {e["name"]: e["value"] for e in override["environment"]}
    assert environment["HEAD_SHA"] == pushed


async def test_without_github_access_nothing_is_sent_and_environments_still_work(
    make_bot: BotFactory,
    account: UatAccount,
    containers: Containers,
    github: GitHubStub,
) -> None:
    bot: Bot = await make_bot(**account.env(containers.url), UAT_GITHUB_API_URL=github.url)
    await bot.settle_startup()
    await label(bot)
    assert deployments(bot).github is None
    assert github.requests == []
    assert len(account.tasks()) == 1


async def test_the_commit_status_can_be_turned_off(
    make_bot: BotFactory,
    account: UatAccount,
    containers: Containers,
    github: GitHubStub,
    sleeps: Sleeps,
) -> None:
    bot = await start(make_bot, account, containers, github, sleeps, UAT_GITHUB_STATUS="false")
    await label(bot)
    assert len(github.deployments[REPO.lower()]) == 1
    assert github.calls("repos/create-commit-status") == []


# ---------------------------------------------------------------- GitHub failing


async def test_github_5xx_is_retried_with_a_growing_backoff(
    uat: Bot, github: GitHubStub, sleeps: Sleeps
) -> None:
    github.fail(
        Fault(502, {"message": "Bad Gateway"}, operation="repos/create-deployment", times=2)
    )
    await label(uat)
    assert len(github.deployments[REPO.lower()]) == 1
    assert sleeps.waits == [1.0, 2.0]


async def test_a_rate_limit_with_retry_after_waits_as_long_as_github_asks(
    uat: Bot, github: GitHubStub, sleeps: Sleeps
) -> None:
    limited = {"message": "You have exceeded a secondary rate limit."}
    github.fail(Fault(429, limited, {"Retry-After": "7"}, "repos/create-deployment"))
    github.fail(Fault(403, limited, {"Retry-After": "3"}, "repos/create-commit-status"))
    await label(uat)
    assert len(github.deployments[REPO.lower()]) == 1
    assert commit_states(github) == [("pending", "uat")]
    assert sleeps.waits == [7.0, 3.0]


async def test_an_exhausted_rate_limit_waits_until_it_resets(
    uat: Bot, github: GitHubStub, sleeps: Sleeps
) -> None:
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 20)}
    github.fail(
        Fault(403, {"message": "API rate limit exceeded"}, reset, "repos/create-deployment")
    )
    await label(uat)
    assert len(github.deployments[REPO.lower()]) == 1
    [wait] = sleeps.waits
    assert 18 <= wait <= 22


async def test_github_down_holds_up_neither_slack_nor_the_task_and_is_caught_up_later(
    uat: Bot, github: GitHubStub, account: UatAccount
) -> None:
    github.fail(Fault(503, {"message": "Service Unavailable"}, times=-1))
    await label(uat)
    assert len(root_messages(uat)) == 1 and len(account.tasks(desired="RUNNING")) == 1
    assert github.deployments == {}
    github.faults.clear()
    await envs(uat).poll()  # the next watcher round catches up
    await uat.settle()
    assert github.deployment_states(only_deployment(github)["id"]) == ["in_progress"]


async def test_a_rate_limit_lifting_in_an_hour_is_left_to_a_later_round(
    uat: Bot, github: GitHubStub, sleeps: Sleeps
) -> None:
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 3600)}
    github.fail(Fault(403, {"message": "API rate limit exceeded"}, reset, times=-1))
    await label(uat)
    assert sleeps.waits == [] and github.deployments == {}
    github.faults.clear()
    await envs(uat).poll()
    await uat.settle()
    assert len(github.deployments[REPO.lower()]) == 1


@pytest.mark.parametrize(
    ("operation", "permission", "status"),
    [
        ("repos/create-deployment", DEPLOYMENTS, 403),
        ("repos/create-deployment", DEPLOYMENTS, 404),
        ("repos/create-commit-status", STATUSES, 403),
    ],
)
async def test_a_missing_permission_is_said_once_in_the_thread(
    uat: Bot,
    github: GitHubStub,
    containers: Containers,
    operation: str,
    permission: str,
    status: int,
) -> None:
    github.fail(Fault(status, {"message": REFUSED}, operation=operation, times=-1))
    await label(uat)
    await envs(uat).poll()
    await ready(uat, containers)
    await unlabel(uat)
    said = slack_ui.github_permission_missing(permission, status)
    assert thread_texts(uat).count(said) == 1
    assert f"`{permission}`" in said
    assert len(root_messages(uat)) == 1  # the environment itself went on as usual


# ---------------------------------------------------------------- a GitHub App


def app_key() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


async def test_a_github_app_uses_one_installation_token_per_installation_until_it_expires(
    github: GitHubStub,
) -> None:
    private, public = app_key()
    github.app = ("424242", public)
    github.installations = {REPO.lower(): 7, "octo/other": 8}
    settings = load_settings(
        {
            "UAT_GITHUB_APP_ID": "424242",
            "UAT_GITHUB_PRIVATE_KEY": private,
            "UAT_GITHUB_API_URL": github.url,
        }
    )
    now = [time.time()]
    async with aiohttp.ClientSession() as session:
        api = GitHubApi(settings, lambda: session, clock=lambda: now[0])
        await api.commit_status(REPO, SHA, "pending", "starting", None)
        await api.commit_status(REPO, SHA, "success", "ready", None)
        assert [i for i, _, _ in github.issued] == [7]
        await api.commit_status("octo/other", SHA, "pending", "starting", None)
        assert [i for i, _, _ in github.issued] == [7, 8]
        now[0] += github.token_ttl_s  # the first token is about to expire: a new one
        await api.commit_status(REPO, SHA, "success", "ready", None)
    assert [i for i, _, _ in github.issued] == [7, 8, 7]
    assert len(github.calls("apps/get-repo-installation")) == 2  # one per repository


async def test_a_github_app_shows_the_environment_and_says_once_where_it_is_not_installed(
    make_bot: BotFactory,
    account: UatAccount,
    containers: Containers,
    github: GitHubStub,
    sleeps: Sleeps,
) -> None:
    private, public = app_key()
    github.app = ("424242", public)
    app = {"UAT_GITHUB_APP_ID": "424242", "UAT_GITHUB_PRIVATE_KEY": private}
    bot = await start(make_bot, account, containers, github, sleeps, UAT_GITHUB_TOKEN="", **app)
    await label(bot)  # not installed on the repository yet
    await envs(bot).poll()
    await bot.settle()
    said = slack_ui.github_app_not_installed(REPO)
    assert thread_texts(bot).count(said) == 1
    assert github.deployments == {}
    github.installations = {REPO.lower(): 7}  # installed: the next state is shown
    await ready(bot, containers)
    deployment = only_deployment(github)
    assert github.deployment_states(deployment["id"]) == ["success"]
    assert [i for i, _, _ in github.issued] == [7]
    assert thread_texts(bot).count(said) == 1


async def test_a_5xx_past_the_retries_leaves_it_to_the_next_round(github: GitHubStub) -> None:
    """A 5xx from GitHub past the retries is GitHubUnavailable (the next round tries again)."""
    github.fail(Fault(500, {"message": "Server Error"}, times=-1))
    settings = load_settings({"UAT_GITHUB_TOKEN": github.token, "UAT_GITHUB_API_URL": github.url})
    waits = Sleeps()
    async with aiohttp.ClientSession() as session:
        api = GitHubApi(settings, lambda: session, sleep=waits)
        with pytest.raises(GitHubUnavailable):
            await api.commit_status(REPO, SHA, "pending", "starting", None)
    assert waits.waits == [1.0, 2.0, 4.0, 8.0]
    assert len(github.requests) == 5


# ---------------------------------------------------------------- the real serve, killed


async def test_one_deployment_across_a_redelivery_and_a_sigkill_of_the_real_bot(
    bot_process: BotProcess, github: GitHubStub, containers: Containers, slack: SlackStub
) -> None:
    """GitHub creates the deployment but the bot is SIGKILLed before it hears the answer (so
    before it records the id); the restarted bot finds it by its session, a redelivered
    webhook changes nothing, and the one deployment goes in_progress -> success -> inactive."""
    bot_process.env.update(UAT_GITHUB_TOKEN=github.token, UAT_GITHUB_API_URL=github.url)
    db = bot_process.env["UAT_DB"]
    github.held.add("repos/create-deployment")
    labeled = pr_event("labeled", "uat")
    await bot_process.start()
    async with aiohttp.ClientSession() as http:
        assert await deliver(http, bot_process.url, labeled, "label-1") == 202
        # the task starts while GitHub holds its answer: GitHub never holds up the launch
        await eventually(lambda: (read_store(db).get(PR) or {}).get("state") == "running", 20)
        await eventually(lambda: github.deployments.get(REPO.lower()), 10)
        await bot_process.kill()
        github.held.clear()
        github.release.set()
        await bot_process.start()
        assert await deliver(http, bot_process.url, labeled, "label-1") == 200  # redelivered
        [deployment] = github.deployments[REPO.lower()]
        await eventually(lambda: github.deployment_states(deployment["id"]), 15)
        containers.ready(PR)
        await eventually(lambda: "success" in github.deployment_states(deployment["id"]), 15)
        unlabeled = pr_event("unlabeled", "uat")
        assert await deliver(http, bot_process.url, unlabeled, "unlabel-1") == 202
        await eventually(lambda: "inactive" in github.deployment_states(deployment["id"]), 15)
        await eventually(lambda: len(github.commit_statuses.get(SHA, [])) >= 3, 15)
    assert github.deployments[REPO.lower()] == [deployment]
    assert github.deployment_states(deployment["id"]) == ["in_progress", "success", "inactive"]
    success = github.statuses[deployment["id"]][1]
    [root] = [m for m in slack.messages[CHANNEL] if m.get("thread_ts") in (None, m["ts"])]
    assert success["environment_url"] == APP_LINK
    assert (
        success["log_url"] == f"{slack.base_url}archives/{CHANNEL}/p{root['ts'].replace('.', '')}"
    )
    assert [s["state"] for s in github.commit_statuses[SHA]] == ["pending", "success", "success"]
    assert await bot_process.terminate() == 0


# ---------------------------------------------------------------- the stub itself


async def test_the_stub_refuses_what_githubs_description_refuses() -> None:
    async with GitHubStub() as stub, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"token {stub.token}", "User-Agent": "test"}
        base = f"{stub.url}/repos/{REPO}"
        good = {"ref": SHA, "environment": "uat/pr-2", "payload": {"uat_session": "s"}}
        async with http.post(f"{base}/deployments", json=good, headers=headers) as response:
            assert response.status == 201
            created = await response.json()
            assert response.headers["X-RateLimit-Remaining"] == "4999"
        status = f"{base}/deployments/{created['id']}/statuses"
        async with http.post(status, json={"state": "ready"}, headers=headers) as response:
            assert response.status == 422  # not one of the description's states
        async with http.post(f"{base}/deployments", json={"sha": SHA}, headers=headers) as r:
            assert r.status == 422  # `ref` is required
        async with http.post(
            f"{base}/deployments/999/statuses", json={"state": "success"}, headers=headers
        ) as r:
            assert r.status == 404
        async with http.get(f"{base}/deployments?colour=red", headers=headers) as response:
            assert response.status == 422
        async with http.post(f"{base}/deploys", json=good, headers=headers) as response:
            assert response.status == 404
        async with http.get(f"{base}/deployments", headers={"User-Agent": "t"}) as response:
            assert response.status == 401
        assert len(stub.problems) == 5
        assert "'ready' is not one of" in stub.problems[0]
