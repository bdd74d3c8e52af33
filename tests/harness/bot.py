"""A real `uat-bot serve` application in the test's process, and how tests talk to it as Slack
and GitHub do (signed requests over real HTTP); the settings every test bot starts from."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import Runtime
from bot.config import Settings
from tests.harness.signing import (
    block_actions_body,
    github_headers,
    slack_headers,
    slash_command_body,
)
from tests.harness.slack_stub import SlackStub
from tests.harness.slack_stub.records import Response

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

SIGNING_SECRET = "test-signing-secret-0123456789"
BOT_TOKEN = "xoxb-test-token"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
CHANNEL = "C0UAT"
DEPLOYER = "U0DEPLOYER"
DEVELOPER = "U0DEVELOPER"


def reference(path: str) -> Any:
    """A file from tests/fixtures (written elsewhere; see its README), parsed when it is JSON."""
    file = FIXTURES / path
    return json.loads(file.read_text()) if file.suffix == ".json" else file.read_text()


@dataclass
class Bot:
    """A real `uat-bot serve` application on 127.0.0.1, and ways to talk to it as senders do."""

    url: str
    runtime: Runtime
    slack: SlackStub
    http: aiohttp.ClientSession

    @property
    def settings(self) -> Settings:
        return self.runtime.services.settings

    async def slash(
        self, text: str, *, user: str = DEVELOPER, channel: str = CHANNEL
    ) -> tuple[int, str]:
        body = slash_command_body(
            text, user_id=user, channel_id=channel, response_url=self.slack.new_response_url()
        )
        async with self.http.post(
            f"{self.url}/slack/events", data=body, headers=slack_headers(SIGNING_SECRET, body)
        ) as response:
            return response.status, await response.text()

    async def post_slack(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self.http.post(
            f"{self.url}/slack/events", data=body, headers=headers
        ) as response:
            return response.status, await response.text()

    async def click(self, action_id: str, value: str, *, user: str) -> list[Response]:
        """Click a button (a signed block_actions request), let the work settle; every answer
        that reached the click's response_url."""
        response_url = self.slack.new_response_url()
        body = block_actions_body(
            action_id, value, user_id=user, channel_id=CHANNEL, response_url=response_url
        )
        status, _ = await self.post_slack(body, slack_headers(SIGNING_SECRET, body))
        assert status == 200
        await self.settle()
        return [a for a in self.slack.responses if response_url.endswith(f"/{a.url_id}")]

    async def github(
        self, event: str, payload: Any, *, delivery: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = github_headers(WEBHOOK_SECRET, body, event, delivery)
        return await self.post_github(body, headers)

    async def post_github(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            f"{self.url}/github/webhook", data=body, headers=headers
        ) as response:
            return response.status, await response.json()

    async def settle(self) -> None:
        """Wait for the background work started so far to finish."""
        await self.runtime.services.tasks.join()

    async def settle_startup(self) -> None:
        """Wait for start-up reconciliation, the watcher's first round, and what they began."""
        first_round = self.runtime.services.environments.watcher.first_round
        try:
            await asyncio.wait_for(first_round.wait(), 5)
        except TimeoutError:
            raise AssertionError("the watcher never ran its first round") from None
        await self.settle()


BotFactory = Callable[..., Any]


def bot_env(slack: SlackStub, tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "UAT_CHANNEL": CHANNEL,
        "UAT_DEPLOYERS": DEPLOYER,
        "UAT_DB": str(tmp_path / "uat-bot.db"),
        "UAT_PROMPT_TOKEN": "test-prompt-token-0123456789",
    }
    env.update(overrides)
    return env
