"""The pieces bench/readiness.py and bench/warm_pool.py both measure with: a recording reverse
proxy in front of moto (the bot's AWS_ENDPOINT_URL) that notes each ECS call and may rewrite its
answer, the PR cards sampled in the Slack stub (when each first said each state), and the real
`uat-bot serve` on its poll defaults, started against that stub, with signed `labeled` webhooks
to send it. Not a benchmark itself (the leading underscore keeps `python -m bench` off it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ECS_TARGET = "AmazonEC2ContainerServiceV20141113."
ROOT_PR = re.compile(r"#(\d+) ")
POLLS = re.compile(r"^uat_poll_duration_seconds_count (\S+)$", re.M)
SAMPLE_S = 0.005


def tags_of(body: dict[str, Any]) -> dict[str, str]:
    """An ECS request's or task's tags as key -> value."""
    return {tag["key"]: tag["value"] for tag in body.get("tags", [])}


@dataclass
class Recorder:
    """A reverse proxy in front of moto that notes each ECS call as it arrives: (when, action,
    JSON body); `answer` may rewrite moto's successful answer to it (as is, here)."""

    upstream: str
    seen: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list, kw_only=True)
    proxy: Any = field(default=None, kw_only=True)

    def answer(self, action: str, request: dict[str, Any], body: bytes) -> bytes:
        """moto's answer (200) to the ECS call `action` with `request`, as the bot gets it."""
        return body

    async def start(self) -> str:
        from aiohttp import web

        from tests.harness.aws_proxy import ReverseProxy

        recorder = self

        class Recording(ReverseProxy):
            async def handle(self, request: web.Request) -> web.Response:
                body = await request.read()
                target = request.headers.get("X-Amz-Target", "")
                if not target.startswith(ECS_TARGET):
                    return (await self.forward(request, body)).response()
                action = target[len(ECS_TARGET) :]
                parsed = json.loads(body or b"{}")
                recorder.seen.append((time.perf_counter(), action, parsed))
                forwarded = await self.forward(request, body)
                if forwarded.status == 200:
                    forwarded.body = recorder.answer(action, parsed, forwarded.body)
                return forwarded.response()

        self.proxy = Recording(self.upstream)
        await self.proxy.start()
        return str(self.proxy.url)

    async def stop(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop()

    def calls(self, action: str, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        return [(t, body) for t, name, body in self.seen if name == action and t >= since]

    def run_task_at(self) -> dict[int, float]:
        """PR number -> when its (first) RunTask arrived."""
        found: dict[int, float] = {}
        for t, body in self.calls("RunTask"):
            tags = tags_of(body)
            if "pr" in tags:
                found.setdefault(int(tags["pr"]), t)
        return found

    def run_tasks_for(self, pr: int) -> int:
        """How many RunTask calls carried `pr`'s tag (a cold launch of it)."""
        return sum(tags_of(body).get("pr") == str(pr) for _, body in self.calls("RunTask"))


@dataclass
class Cards:
    """When each PR's card (its root message in the stub) first showed each state."""

    stub: Any
    channel: str
    first: dict[tuple[int, str], float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _sample(self) -> None:
        while True:
            now = time.perf_counter()
            for message in self.stub.messages.get(self.channel, []):
                if message.get("thread_ts") not in (None, message["ts"]):
                    continue
                text = str(message.get("text", ""))
                pr = ROOT_PR.search(text)
                if pr is None or " — " not in text:
                    continue
                state = text.rsplit(" — ", 1)[1].strip()
                self.first.setdefault((int(pr.group(1)), state), now)
            await asyncio.sleep(SAMPLE_S)

    def at(self, pr: int, *states: str) -> float | None:
        times = [self.first[(pr, s)] for s in states if (pr, s) in self.first]
        return min(times) if times else None

    async def wait(self, prs: list[int], states: tuple[str, ...], timeout: float) -> None:  # noqa: ASYNC109
        deadline = time.perf_counter() + timeout
        while any(self.at(pr, *states) is None for pr in prs):
            if time.perf_counter() > deadline:
                missing = [pr for pr in prs if self.at(pr, *states) is None]
                raise RuntimeError(f"cards of PRs {missing} never said {'/'.join(states)}")
            await asyncio.sleep(0.05)


async def wait_for(check: Callable[[], Any], timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.perf_counter() + timeout
    while not await check():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what} did not happen in {timeout:.0f} s")
        await asyncio.sleep(0.05)


@dataclass
class Serving:
    """The running bot: its process, its cards in the stub, and a sender of its webhooks."""

    http: Any
    process: Any
    cards: Cards
    sender: Any
    template: dict[str, Any]

    async def polls(self) -> float:
        """The watcher's rounds so far (the bot's /metrics `uat_poll_duration_seconds_count`)."""
        async with self.http.get(f"{self.process.url}/metrics") as response:
            found = POLLS.search(await response.text())
        return float(found.group(1)) if found else 0.0

    async def label(self, pr: int) -> float:
        """Send PR `pr`'s signed `labeled` (uat) webhook; when it was sent."""
        from bench.environments import labeled_payload

        sent = time.perf_counter()
        body = labeled_payload(self.template, pr, "uat")
        _, status, _ = await self.sender.once(body, str(uuid.uuid4()))
        if status != 202:
            raise RuntimeError(f"the bot answered {status} to PR {pr}'s label")
        return sent


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], workdir: Path) -> AsyncIterator[Serving]:
    """`uat-bot serve` with `env` on the poll defaults against a fresh Slack stub, its cards
    sampled, once its watcher has done a first round; stopped after."""
    import aiohttp

    from bench.environments import Sender
    from tests.harness.bot import BOT_TOKEN, CHANNEL, FIXTURES, bot_env
    from tests.harness.processes import BotProcess
    from tests.harness.slack_stub import SlackStub

    template = json.loads(
        (FIXTURES / "github_webhooks" / "pull_request" / "labeled.payload.json").read_text()
    )
    env = dict(env)
    for tuned in ("UAT_POLL_SECONDS", "UAT_QUICK_POLL_SECONDS"):
        env.pop(tuned, None)  # the defaults
    async with SlackStub(token=BOT_TOKEN) as stub, aiohttp.ClientSession() as http:
        process = BotProcess(bot_env(stub, workdir, **env), workdir)
        cards = Cards(stub, CHANNEL)
        try:
            await process.start(timeout=60)
            cards.start()
            bot = Serving(http, process, cards, Sender(http, process.url), template)

            async def first_round() -> bool:
                return await bot.polls() >= 1

            await wait_for(first_round, 30, "the watcher's first round")
            yield bot
        finally:
            await cards.stop()
            with contextlib.suppress(Exception):
                await process.terminate()
            process.cleanup()
