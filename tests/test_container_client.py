"""The bot's container gateway (bot/container.py) against the real prompt server
(container/prompt_server.py) on 127.0.0.1, with tests/harness/fake_claude.py as the agent."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot import container
from bot.container import (
    AlreadyClaimed,
    ContainerClient,
    ContainerRefused,
    ContainerUnreachable,
    JobEnded,
    NoSuchJob,
    PoolTokenRefused,
    Submitted,
    TokenRefused,
)
from container import prompt_server
from tests.harness.container_helpers import TOKEN, fake_claude_cmd, free_port, make_repo

FINAL_STATES = ("succeeded", "failed", "cancelled", "timed_out")
UNKNOWN_JOB = "0123456789ab"  # well formed, but no job has it


@dataclass
class Served:
    base: str
    client: ContainerClient


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """A prompt server in this test's loop, and a ContainerClient on one session for it."""
    config = prompt_server.Config(
        work_dir=make_repo(tmp_path / "work"),
        host="127.0.0.1",
        port=0,
        app_port=free_port(),
        token=TOKEN,
        claude_cmd=tuple(shlex.split(fake_claude_cmd())),
        timeout_s=30,
    )
    async for found in serve(config):
        yield found


POOL_TOKEN = "pool-token-0123456789abcdef"
PROMPT_TOKEN = "uatp_" + "Ab3-_" * 8 + "xyz"
SHA = "0123456789abcdef0123456789abcdef01234567"


async def claim(
    served: Served, pool_token: str, session: str = "pr7-0a1b2c3d", sha: str = SHA
) -> None:
    """`ContainerClient.claim` of PR 7's environment (`session`, at `sha`)."""
    await served.client.claim(
        served.base,
        pool_token,
        repo="https://github.com/acme/web.git",
        git_ref="refs/pull/7/head",
        head_sha=sha,
        session_id=session,
        prompt_token=PROMPT_TOKEN,
        branch="feature/blue-button",
        pr_number=7,
    )


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Served]:
    """A prompt server in pool mode (as a warm-pool task's entrypoint starts it), and a client."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    config = prompt_server.Config(
        work_dir=tmp_path / "not-cloned-yet",
        host="127.0.0.1",
        port=0,
        app_port=free_port(),
        pool_token=POOL_TOKEN,
        claim_file=secrets / "claim",
        token_file=secrets / "prompt-token",
        claude_cmd=tuple(shlex.split(fake_claude_cmd())),
    )
    async for found in serve(config):
        yield found


async def serve(config: prompt_server.Config) -> AsyncIterator[Served]:
    runner = web.AppRunner(prompt_server.create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield Served(f"http://127.0.0.1:{port}", ContainerClient(lambda: session))
    await runner.cleanup()


async def ended(served: Served, job_id: str) -> dict[str, object]:
    async with asyncio.timeout(15):
        while True:
            job = await served.client.job(served.base, TOKEN, job_id)
            if job["state"] in FINAL_STATES:
                return job
            await asyncio.sleep(0.05)


def test_the_bot_and_the_container_agree_on_the_prompt_limit() -> None:
    assert container.MAX_PROMPT == prompt_server.MAX_PROMPT_CHARS


async def test_a_prompt_goes_in_and_its_job_and_output_come_back(served: Served) -> None:
    submitted = await served.client.submit(
        served.base, TOKEN, prompt="Make the button blue", user="U1", thread="1.2"
    )
    assert submitted == Submitted(submitted.job_id, 0)
    job = await ended(served, submitted.job_id)
    assert (job["state"], job["summary"]) == ("succeeded", "Make the button blue")
    output = await served.client.output(served.base, TOKEN, submitted.job_id)
    assert output.rstrip().endswith("Make the button blue")


async def test_a_wrong_token_is_refused_and_the_error_says_which_token_to_give(
    served: Served,
) -> None:
    with pytest.raises(TokenRefused, match="UAT_PROMPT_TOKEN"):
        await served.client.submit(served.base, "not-the-token", prompt="hi", user="U1", thread="")


async def test_a_prompt_over_the_limit_is_refused_with_the_containers_reason(
    served: Served,
) -> None:
    with pytest.raises(ContainerRefused) as refused:
        await served.client.submit(
            served.base, TOKEN, prompt="x" * (container.MAX_PROMPT + 1), user="U1", thread=""
        )
    assert refused.value.status == 400
    assert f"the limit is {container.MAX_PROMPT}" in refused.value.reason


async def test_an_unknown_job_is_no_such_job_to_read_or_to_cancel(served: Served) -> None:
    with pytest.raises(NoSuchJob):
        await served.client.job(served.base, TOKEN, UNKNOWN_JOB)
    with pytest.raises(NoSuchJob):
        await served.client.cancel(served.base, TOKEN, UNKNOWN_JOB)


async def test_cancelling_a_job_that_ended_says_it_ended(served: Served) -> None:
    submitted = await served.client.submit(served.base, TOKEN, prompt="done", user="U1", thread="")
    await ended(served, submitted.job_id)
    with pytest.raises(JobEnded, match="already ended"):
        await served.client.cancel(served.base, TOKEN, submitted.job_id)


async def test_health_version_and_status_are_answered_whatever_their_status(
    served: Served,
) -> None:
    health = await served.client.health(served.base)  # 503: the app is not on its port
    assert health is not None and health["ready"] is False
    version = await served.client.version(served.base, TOKEN)
    assert version is not None and version["subject"] == "Start the app"
    status = await served.client.status(served.base, TOKEN)
    assert status is not None and status["queue"] == []


async def test_a_container_that_does_not_answer_is_unreachable_with_what_to_check() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    async with aiohttp.ClientSession() as session:
        client = ContainerClient(lambda: session)
        assert await client.health(base) is None
        with pytest.raises(ContainerUnreachable, match="UAT_CONTAINER_URL"):
            await client.submit(base, TOKEN, prompt="hi", user="U1", thread="")
        with pytest.raises(ContainerUnreachable):
            await client.job(base, TOKEN, UNKNOWN_JOB)


# ------------------------------------------------------------------------------ claim (warm pool)


async def test_a_claim_hands_a_warm_pool_task_to_the_environment_once(pool: Served) -> None:
    waiting = await pool.client.health(pool.base)
    assert waiting is not None and waiting["phase"] == "waiting"
    await claim(pool, POOL_TOKEN)
    status = await pool.client.status(pool.base, PROMPT_TOKEN)
    assert status is not None and status["queue"] == []  # the environment's token opens it now
    with pytest.raises(AlreadyClaimed, match="claimed already") as again:
        await claim(pool, POOL_TOKEN, session="pr8-ffffffff")
    assert "claim another warm-pool task or launch a cold one" in str(again.value)


async def test_a_claim_with_another_pool_token_is_refused_and_leaves_the_task_waiting(
    pool: Served,
) -> None:
    with pytest.raises(PoolTokenRefused, match="refused the pool token"):
        await claim(pool, "another-pool-token")
    await claim(pool, POOL_TOKEN)


async def test_a_claim_the_container_finds_wrong_is_refused_with_the_field(pool: Served) -> None:
    with pytest.raises(ContainerRefused) as refused:
        await claim(pool, POOL_TOKEN, sha="HEAD")
    assert refused.value.status == 400
    assert "head_sha must be the full commit id" in refused.value.reason


async def test_a_task_started_for_an_environment_cannot_be_claimed(served: Served) -> None:
    with pytest.raises(AlreadyClaimed, match="not a warm-pool member"):
        await claim(served, TOKEN)


async def test_a_claim_of_a_task_that_does_not_answer_is_unreachable() -> None:
    async with aiohttp.ClientSession() as session:
        nowhere = Served(f"http://127.0.0.1:{free_port()}", ContainerClient(lambda: session))
        with pytest.raises(ContainerUnreachable):
            await claim(nowhere, POOL_TOKEN)


async def test_whether_a_claim_whose_answer_was_lost_landed_is_told_by_the_prompt_token(
    pool: Served,
) -> None:
    assert await pool.client.claimed_for(pool.base, PROMPT_TOKEN) is False  # still waiting
    await claim(pool, POOL_TOKEN)
    assert await pool.client.claimed_for(pool.base, PROMPT_TOKEN) is True
    assert await pool.client.claimed_for(pool.base, "uatp_" + "o" * 43) is False  # another's
    async with aiohttp.ClientSession() as session:
        nowhere = f"http://127.0.0.1:{free_port()}"
        assert await ContainerClient(lambda: session).claimed_for(nowhere, PROMPT_TOKEN) is None
