"""The IAM policies under docs/iam allow every AWS call the code makes, and nothing broad.

The bot's calls are recorded as they happen (botocore's `_make_api_call`) while the main flows
run against moto; the container's are read from its entrypoint.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient

from bot.config import load_settings
from bot.store import AuditEntry, Environment, Relay
from bot.store.dynamodb import DynamoStore
from tests.harness.bot import DEPLOYER, ROOT, Bot, BotFactory
from tests.harness.pull_requests import label, pr_event
from tests.harness.uat_aws import Containers, set_up_account

IAM = ROOT / "docs" / "iam"
# Pushing layers is done by the docker engine with the ECR login the bot hands it.
DOCKER_PUSH = {
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
}


def allowed(policy: str) -> list[str]:
    document = json.loads((IAM / policy).read_text())
    actions: list[str] = []
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        found = statement["Action"]
        actions += [found] if isinstance(found, str) else found
    return actions


def permits(actions: list[str], call: str) -> bool:
    return any(fnmatch.fnmatchcase(call, pattern) for pattern in actions)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    calls: set[str] = set()
    real = BaseClient._make_api_call

    def record(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        calls.add(f"{self.meta.service_model.signing_name}:{operation}")
        return real(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return calls


def test_no_policy_grants_a_wildcard_action() -> None:
    for policy in IAM.glob("*policy.json"):
        for action in allowed(policy.name):
            assert "*" not in action, f"{policy.name} grants {action}"


async def test_every_call_the_bot_makes_is_allowed(
    make_bot: BotFactory, aws_env: dict[str, str], recorded: set[str], tmp_path: Path
) -> None:
    account = set_up_account(aws_env["AWS_ENDPOINT_URL"])
    containers = Containers()
    await containers.start()
    try:
        recorded.clear()  # only what the bot itself calls from here on
        bot: Bot = await make_bot(**account.env(containers.url))
        await bot.settle_startup()
        await label(bot)
        containers.ready(2)
        await bot.runtime.services.environments.poll()
        for text in ("images", "promote", "rollback", "status PR-2", "cleanup --dry-run"):
            await bot.slash(text, user=DEPLOYER)
        await bot.settle()
        pipeline = bot.runtime.services.pipeline
        await pipeline.promote(DEPLOYER)
        await pipeline.rollback(DEPLOYER, "1111111")
        await pipeline.ecr.authorization()
        await bot.github("pull_request", pr_event("closed"))
        await bot.settle()
        await bot.slash("cleanup", user=DEPLOYER)
        await bot.settle()
    finally:
        await containers.stop()
    settings = load_settings(
        {
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": aws_env["AWS_ENDPOINT_URL"],
            "UAT_STORE": "dynamodb",
            "UAT_DYNAMODB_TABLE": "uat-bot-iam",
        }
    )
    store = DynamoStore(settings)
    await store.open()
    await store.ping()
    await store.claim("d-1", "pull_request")
    saved = await store.save_environment(Environment(repo="a/b", pr=1, state="starting"))
    await store.get_environment("a/b", 1)
    await store.list_environments()
    await store.save_environment(saved)
    await store.acquire_lock("images", "U1", "x", 60)
    await store.get_lock("images")
    await store.release_lock("images", "U1")
    await store.hold_lease("watcher", "r1", 10)
    await store.append_audit(AuditEntry("U1", "promote", "ok"))
    await store.recent_audit()
    await store.open_relay(Relay("j", "a/b", 1, "U1", "1.1", "p"))
    await store.open_relays()
    await store.close_relay("a/b", 1, "j")
    await store.close()

    policy = allowed("bot-policy.json")
    assert {"ecs:RunTask", "ecr:PutImage", "dynamodb:PutItem"} <= recorded  # the flows ran
    missing = sorted(call for call in recorded if not permits(policy, call))
    assert missing == [], f"docs/iam/bot-policy.json does not allow {missing}"
    for call in DOCKER_PUSH:
        assert permits(policy, call), f"docker push needs {call}"
    assert permits(policy, "iam:PassRole")  # RunTask hands the task its roles


def test_every_call_the_container_makes_is_allowed() -> None:
    script = (ROOT / "container" / "entrypoint.sh").read_text()
    commands = set(re.findall(r"aws_elb ([a-z-]+)", script))
    assert {"create-target-group", "create-rule", "delete-rule"} <= commands
    policy = allowed("task-role-policy.json")
    for command in sorted(commands):
        action = "elasticloadbalancing:" + "".join(p.title() for p in command.split("-"))
        assert permits(policy, action), f"docs/iam/task-role-policy.json does not allow {action}"
    if "--tags" in script:
        assert permits(policy, "elasticloadbalancing:AddTags")


def test_the_execution_role_can_pull_the_image_and_log() -> None:
    policy = allowed("task-execution-role-policy.json")
    for call in ("ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"):
        assert permits(policy, call)
    assert permits(policy, "logs:PutLogEvents")
