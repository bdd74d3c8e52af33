"""`/uat staging` with UAT_BUILDER=codebuild, against moto's CodeBuild and ECR.

A signed slash command reaches the real bot; git resolves the ref in a real repository in a temp
dir; StartBuild, StopBuild and every ECR call are moto's own. moto never runs a build, so the test
plays CodeBuild (tests/harness/codebuild.py): it moves the stored build through its phases and
pushes the `:<sha>` image into moto's ECR as the buildspec would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.app import Runtime
from bot.images.builders import CodeBuildBuilder
from bot.images.operations import LOCK
from bot.slack import slack_ui
from tests.harness.bot import CHANNEL, Bot, BotFactory
from tests.harness.codebuild import PROJECT, PlayedCodeBuild, eventually
from tests.harness.ecr_seed import digest_at
from tests.harness.gitrepo import SourceRepo
from tests.harness.uat_aws import UatAccount

MOTO_LOG_LINK = "https://console.aws.amazon.com/cloudwatch/home?region=eu-west-2#logEvent:group=null;stream=null"


@pytest.fixture
def codebuild(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> PlayedCodeBuild:
    played = PlayedCodeBuild(aws_env["AWS_ENDPOINT_URL"])
    played.install(monkeypatch)
    return played


@pytest.fixture
def source(tmp_path: Path) -> SourceRepo:
    return SourceRepo.create(tmp_path / "source", message="Say hello from CodeBuild")


def quick_polls(runtime: Runtime) -> None:
    builder = runtime.services.pipeline.builder
    assert isinstance(builder, CodeBuildBuilder)
    builder.poll_s = 0.05


async def codebuild_bot(
    make_bot: BotFactory, account: UatAccount, source: SourceRepo, **env: str
) -> Bot:
    bot: Bot = await make_bot(
        quick_polls,
        **account.env("http://127.0.0.1:9/pr/{pr}"),
        UAT_BUILDER="codebuild",
        UAT_CODEBUILD_PROJECT=PROJECT,
        UAT_SOURCE_REPO=source.url,
        **env,
    )
    return bot


def channel_texts(bot: Bot) -> list[str]:
    """Every version of every channel message: posts and updates, text and blocks."""
    calls = bot.slack.calls_to("chat.postMessage") + bot.slack.calls_to("chat.update")
    return [
        str(c.params.get("text", "")) + json.dumps(c.params.get("blocks") or "")
        for c in calls
        if c.params.get("channel") == CHANNEL
    ]


def final_message(bot: Bot) -> dict[str, Any]:
    [post] = [p for p in bot.slack.calls_to("chat.postMessage") if p.params["channel"] == CHANNEL]
    message = bot.slack.message(CHANNEL, post.response["ts"])
    assert message is not None
    return message


async def test_staging_with_codebuild_ends_with_staging_on_the_new_shas_digest(
    make_bot: BotFactory, account: UatAccount, source: SourceRepo, codebuild: PlayedCodeBuild
) -> None:
    bot = await codebuild_bot(make_bot, account, source)
    short = source.short()

    status, ack = await bot.slash("staging")
    assert (status, ack) == (200, "")
    build = await codebuild.next_build()
    assert build["sourceVersion"] == source.sha()
    [sent] = codebuild.started
    variables = {v["name"]: v["value"] for v in sent["environmentVariablesOverride"]}
    assert variables["IMAGE_TAG"] == short
    assert variables["IMAGE_REPOSITORY_URI"].endswith("/test-tickets-uat")
    assert sent["timeoutInMinutesOverride"] == 31  # UAT_BUILD_TIMEOUT_S 1800, a minute's margin

    codebuild.enter(build, "PROVISIONING", "DOWNLOAD_SOURCE", "PRE_BUILD", "BUILD")
    progress = await eventually(
        lambda: [t for t in channel_texts(bot) if "CodeBuild: BUILD" in t], "BUILD shown"
    )
    assert slack_ui.log_link(MOTO_LOG_LINK) in progress[-1]
    assert "PRE_BUILD: SUCCEEDED" in progress[-1]
    assert digest_at(account.ecr, "staging") == account.digests["staging"]  # not yet moved
    pushed = codebuild.push(account.ecr, short)
    codebuild.enter(build, "POST_BUILD")
    codebuild.end(build, "SUCCEEDED")
    await bot.settle()

    assert digest_at(account.ecr, "staging") == pushed
    assert digest_at(account.ecr, short) == pushed
    message = final_message(bot)
    assert f"`:staging` is now `{short}` — Say hello from CodeBuild" in message["text"]
    assert pushed in json.dumps(message["blocks"])
    [entry] = await bot.runtime.services.store.recent_audit(5)
    assert (entry.action, entry.result, entry.to_digest) == (
        f"build :staging {short}",
        "ok",
        pushed,
    )
    assert await bot.runtime.services.store.get_lock(LOCK) is None


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("FAILED", "Error while executing command: docker build <none>. Reason: exit status 1"),
        ("STOPPED", ""),
    ],
)
async def test_a_failed_or_stopped_build_says_which_phase_and_links_its_log(
    make_bot: BotFactory,
    account: UatAccount,
    source: SourceRepo,
    codebuild: PlayedCodeBuild,
    status: str,
    message: str,
) -> None:
    bot = await codebuild_bot(make_bot, account, source)

    await bot.slash("staging")
    build = await codebuild.next_build()
    codebuild.enter(build, "PROVISIONING", "PRE_BUILD", "BUILD")
    codebuild.end(build, status, message)
    await bot.settle()

    said = slack_ui.codebuild_failed(status, "BUILD", MOTO_LOG_LINK)
    assert "in its BUILD phase" in said and slack_ui.log_link(MOTO_LOG_LINK) in said
    final = final_message(bot)
    assert said in final["text"]
    if message:
        assert slack_ui.escape(message) in json.dumps(final["blocks"], ensure_ascii=False)
    assert digest_at(account.ecr, "staging") == account.digests["staging"]  # no tag moved
    [entry] = await bot.runtime.services.store.recent_audit(5)
    assert entry.result == "failed" and said[:60] in entry.detail
    assert await bot.runtime.services.store.get_lock(LOCK) is None


async def test_a_build_past_the_time_limit_is_stopped_and_reported(
    make_bot: BotFactory, account: UatAccount, source: SourceRepo, codebuild: PlayedCodeBuild
) -> None:
    bot = await codebuild_bot(make_bot, account, source, UAT_BUILD_TIMEOUT_S="1")

    await bot.slash("staging")
    build = await codebuild.next_build()
    codebuild.enter(build, "PROVISIONING", "BUILD")  # and it stays there
    await bot.settle()

    assert build["buildStatus"] == "STOPPED"  # moto's StopBuild, called by the bot
    said = slack_ui.codebuild_timed_out(1, "BUILD", MOTO_LOG_LINK)
    assert said in final_message(bot)["text"]
    assert "UAT_BUILD_TIMEOUT_S" in said
    assert digest_at(account.ecr, "staging") == account.digests["staging"]
    assert await bot.runtime.services.store.get_lock(LOCK) is None


async def test_a_sha_already_in_ecr_is_not_rebuilt_and_the_answer_says_so(
    make_bot: BotFactory, account: UatAccount, source: SourceRepo, codebuild: PlayedCodeBuild
) -> None:
    short = source.short()
    earlier = codebuild.push(account.ecr, short)  # built before, by an earlier build
    bot = await codebuild_bot(make_bot, account, source)

    await bot.slash("staging")
    await bot.settle()

    assert codebuild.build_ids() == []  # no build started
    assert digest_at(account.ecr, "staging") == earlier
    final = final_message(bot)
    assert f"`:staging` is now `{short}`" in final["text"]
    assert slack_ui.not_rebuilt(short) in final["text"]
    [entry] = await bot.runtime.services.store.recent_audit(5)
    assert entry.result == "ok" and "(not rebuilt)" in entry.detail


async def test_a_build_that_succeeds_without_pushing_the_sha_moves_no_tag(
    make_bot: BotFactory, account: UatAccount, source: SourceRepo, codebuild: PlayedCodeBuild
) -> None:
    bot = await codebuild_bot(make_bot, account, source)

    await bot.slash("staging")
    build = await codebuild.next_build()
    codebuild.enter(build, "BUILD")
    codebuild.end(build, "SUCCEEDED")  # but nothing was pushed
    await bot.settle()

    said = slack_ui.built_image_missing(source.short(), "ECR repository test-tickets-uat")
    assert said in final_message(bot)["text"]
    assert digest_at(account.ecr, "staging") == account.digests["staging"]
