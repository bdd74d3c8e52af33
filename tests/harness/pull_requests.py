"""GitHub pull_request deliveries as tests send them: octokit's real payloads (tests/fixtures)
with a UAT label, and what the PR's Slack thread shows."""

from __future__ import annotations

import copy
from typing import Any

from tests.harness.bot import CHANNEL, Bot, reference

REPO = "Codertocat/Hello-World"
PR = 2


def pr_event(action: str, label: str | None = None, **pull: Any) -> dict[str, Any]:
    """An octokit payload from the corpora, with the label renamed to a UAT one."""
    payload = copy.deepcopy(reference(f"github_webhooks/pull_request/{action}.payload.json"))
    if label is not None:
        payload["label"] = {**payload.get("label", {}), "name": label}
        if action != "unlabeled":
            payload["pull_request"]["labels"] = [{"name": label}]
        else:
            payload["pull_request"]["labels"] = []
    payload["pull_request"].update(pull)
    return payload


async def label(bot: Bot, name: str = "uat", *, delivery: str | None = None, **pull: Any) -> int:
    status, body = await bot.github(
        "pull_request", pr_event("labeled", name, **pull), delivery=delivery
    )
    assert status in (200, 202), body
    await bot.settle()
    return status


def root_messages(bot: Bot) -> list[dict[str, Any]]:
    messages = bot.slack.messages.get(CHANNEL, [])
    return [m for m in messages if m.get("thread_ts") in (None, m["ts"])]
