"""Fixtures every test suite reuses: the Slack stub, moto's server, a running bot, corpora."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app import Runtime, build_runtime
from bot.config import Settings, load_settings
from bot.server import create_web_app
from tests.signing import github_headers, slack_headers, slash_command_body
from tests.slack_stub import SlackStub
from tests.uat_aws import Containers, UatAccount, set_up_account

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server request lines

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture
async def slack() -> AsyncIterator[SlackStub]:
    async with SlackStub(token=BOT_TOKEN) as stub:
        yield stub


@pytest.fixture
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 (a fresh one per test: state never leaks between tests)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto's backends are process-wide and outlive a server: start every test from nothing
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 (which reads its own variables) at moto's server with fake credentials."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_server,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def account(aws_env: dict[str, str]) -> UatAccount:
    """A UAT account in moto: network, cluster, base task definition, images; tasks held."""
    return set_up_account(aws_env["AWS_ENDPOINT_URL"])


@pytest.fixture
async def containers() -> AsyncIterator[Containers]:
    """Stand-in prompt servers for every PR, on 127.0.0.1."""
    stand_in = Containers()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


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
        environments = self.runtime.services.environments
        for _ in range(500):
            if environments.polls:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the watcher never ran its first round")
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


@pytest.fixture
async def make_bot(slack: SlackStub, tmp_path: Path) -> AsyncIterator[BotFactory]:
    """Start bots on ephemeral ports; `configure(runtime)` may swap handlers before start."""
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()

    async def start(configure: Callable[[Runtime], None] | None = None, **overrides: str) -> Bot:
        settings = load_settings(bot_env(slack, tmp_path, **overrides))
        runtime = build_runtime(settings)
        if configure is not None:
            configure(runtime)
        runner = web.AppRunner(create_web_app(runtime))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return Bot(f"http://{host}:{port}", runtime, slack, session)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()
        await session.close()


@pytest.fixture
async def bot(make_bot: BotFactory) -> Bot:
    result: Bot = await make_bot()
    return result
