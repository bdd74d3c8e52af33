"""Fixtures every test suite reuses: the Slack stub, moto's server, the UAT account, a running bot.

What the fixtures are made of lives in tests/harness/."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web

from bot.app import Runtime, build_runtime
from bot.config import load_settings
from bot.server import create_web_app
from tests.harness.bot import BOT_TOKEN, Bot, BotFactory, bot_env
from tests.harness.ecr_seed import REPOSITORY
from tests.harness.entrypoint import (  # noqa: F401 (fixtures)
    alb,
    remote,
    run_entrypoint,
    shared_dir,
)
from tests.harness.processes import BotProcess
from tests.harness.slack_stub import SlackStub
from tests.harness.uat_aws import Containers, UatAccount, set_up_account

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server request lines


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


@pytest.fixture
def bot_process(
    slack: SlackStub,
    account: UatAccount,
    containers: Containers,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[BotProcess]:
    """The real `uat-bot serve` as a process, on the Slack stub, moto's UAT account and the
    stand-in containers, polling every half second; started by the test (`start()`)."""
    overrides = {**aws_env, **account.env(containers.url), "UAT_POLL_SECONDS": "0.5"}
    process = BotProcess(bot_env(slack, tmp_path, **overrides), tmp_path)
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
def ecr(aws_env: dict[str, str]) -> Any:
    """A boto3 ECR client on moto: how the tests arrange and inspect the repository."""
    return boto3.client(
        "ecr", region_name=aws_env["AWS_REGION"], endpoint_url=aws_env["AWS_ENDPOINT_URL"]
    )


@pytest.fixture
async def ecr_bot(make_bot: BotFactory, aws_env: dict[str, str]) -> Bot:
    """The bot, its Ecr gateway pointed at the same moto server's seeded repository."""
    started: Bot = await make_bot(
        AWS_REGION=aws_env["AWS_REGION"],
        AWS_ENDPOINT_URL=aws_env["AWS_ENDPOINT_URL"],
        UAT_ECR_REPOSITORY=REPOSITORY,
    )
    return started
