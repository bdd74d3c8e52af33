"""The soak's world on 127.0.0.1: an AWS proxy that throttles and fails for a window, stand-in
prompt servers for every PR, and the bot replicas (`uat-bot serve` processes) pointed at them.

moto itself runs in a subprocess (bench/environments.py `moto_server`) and the Slack stub in
this process (tests/harness/slack_stub/), as the other benchmarks run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from bench import AWS_ENV
from tests.harness.aws_proxy import ReverseProxy
from tests.harness.bot import bot_env
from tests.harness.processes import BotProcess
from tests.harness.slack_stub import SlackStub
from tests.harness.uat_aws import UatAccount

THROTTLED = {"__type": "ThrottlingException", "message": "Rate exceeded"}
UNAVAILABLE = {"__type": "ServiceUnavailableException", "message": "Service Unavailable"}
DYNAMODB = "DynamoDB_"  # the X-Amz-Target prefix of DynamoDB's operations


@dataclass
class Window:
    """Until `until` (monotonic), requests whose X-Amz-Target starts with one of `targets`
    (any request when empty) are answered `kind`: "throttle" (400 ThrottlingException) or
    "unavailable" (503)."""

    kind: str
    until: float
    targets: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    def matches(self, target: str) -> bool:
        if any(target.startswith(t) for t in self.excluded):
            return False
        return not self.targets or any(target.startswith(t) for t in self.targets)


@dataclass
class AwsFaults(ReverseProxy):
    """A reverse proxy in front of moto whose faults come in windows: AWS throttling (ECS and
    ECR, not the store) or a store outage (DynamoDB only)."""

    windows: list[Window] = field(default_factory=list)
    failed: int = 0

    def throttle(self, seconds: float, kind: str = "throttle") -> None:
        self.windows.append(Window(kind, time.monotonic() + seconds, excluded=(DYNAMODB,)))

    def store_outage(self, seconds: float) -> None:
        self.windows.append(Window("unavailable", time.monotonic() + seconds, (DYNAMODB,)))

    def clear(self) -> None:
        self.windows.clear()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        now = time.monotonic()
        self.windows = [w for w in self.windows if w.until > now]
        window = next((w for w in self.windows if w.matches(target)), None)
        if window is not None:
            self.failed += 1
            return failure(window.kind, json_protocol=bool(target))
        return (await self.forward(request, body)).response()


def failure(kind: str, json_protocol: bool) -> web.Response:
    """AWS's answer to a throttled or failed call, in the caller's protocol: JSON for the
    X-Amz-Target services (ECS, ECR, DynamoDB), XML for the query ones (ELBv2, EC2)."""
    error = THROTTLED if kind == "throttle" else UNAVAILABLE
    status = 400 if kind == "throttle" else 503
    if json_protocol:
        return web.json_response(
            error,
            status=status,
            content_type="application/x-amz-json-1.1",
            headers={"x-amzn-ErrorType": str(error["__type"])},
        )
    code = "Throttling" if kind == "throttle" else "ServiceUnavailable"
    body = (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{error['message']}</Message></Error><RequestId>soak</RequestId></ErrorResponse>"
    )
    return web.Response(text=body, status=status, content_type="text/xml")


@dataclass
class Job:
    pr: int
    prompt: str
    created: float
    cancelled: bool = False


@dataclass
class PromptServers:
    """Every PR's prompt server, ready at once: /health, /version, /status, /prompt (any bearer:
    the tokens are the bot's business), /prompts/{id} (succeeded a second after it came,
    unless cancelled), DELETE /prompts/{id}. It keeps what reached it: that is the effect of
    `/uat prompt` and of a Cancel click."""

    jobs: dict[str, Job] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)  # prompt text -> times it came
    cancelled: set[str] = field(default_factory=set)
    url: str = ""
    runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _job_json(self, job_id: str, job: Job) -> dict[str, object]:
        done = job.cancelled or time.time() - job.created > 1.0
        state = "cancelled" if job.cancelled else "succeeded" if done else "running"
        return {
            "id": job_id,
            "state": state,
            "created_at": job.created,
            "started_at": job.created,
            "finished_at": job.created + 1.0 if done else None,
            "summary": "Done (a stand-in agent: nothing was changed)" if done else "",
            "output_tail": "",
            "cost_usd": 0.0,
            "duration_s": 1.0 if done else None,
            "commit": None,
        }

    async def start(self) -> None:
        async def health(request: web.Request) -> web.Response:
            return web.json_response({"ready": True, "phase": "ready"})

        async def version(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "commit": "c" * 40,
                    "short": "ccccccc",
                    "branch": "soak",
                    "date": "2026-11-30",
                    "subject": "Soak",
                }
            )

        async def status(request: web.Request) -> web.Response:
            return web.json_response({"running": None, "queue": [], "recent": []})

        async def prompt(request: web.Request) -> web.Response:
            body = json.loads(await request.read())
            job_id = f"job{next(self._ids):06d}"
            self.jobs[job_id] = Job(int(request.match_info["pr"]), str(body["prompt"]), time.time())
            self.received[str(body["prompt"])] += 1
            return web.json_response({"id": job_id, "position": 0}, status=202)

        async def job(request: web.Request) -> web.Response:
            job_id = request.match_info["id"]
            found = self.jobs.get(job_id)
            if found is None:
                return web.json_response({"error": "no such job"}, status=404)
            if request.method == "DELETE":
                self.cancelled.add(job_id)
                found.cancelled = True
            return web.json_response(self._job_json(job_id, found))

        async def output(request: web.Request) -> web.Response:
            return web.Response(text="")

        app = web.Application()
        app.router.add_get("/pr/{pr}/health", health)
        app.router.add_get("/pr/{pr}/version", version)
        app.router.add_get("/pr/{pr}/status", status)
        app.router.add_post("/pr/{pr}/prompt", prompt)
        app.router.add_get("/pr/{pr}/prompts/{id}/output", output)
        app.router.add_route("GET", "/pr/{pr}/prompts/{id}", job)
        app.router.add_route("DELETE", "/pr/{pr}/prompts/{id}", job)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/pr/{{pr}}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def replica_env(
    slack: SlackStub,
    account: UatAccount,
    prompts: PromptServers,
    aws_url: str,
    folder: Path,
    store: dict[str, str],
) -> dict[str, str]:
    """A replica's whole configuration: every AWS call through `aws_url` (the faulty proxy),
    Slack at the stub, containers at the stand-ins, a one-second poll."""
    settings = {
        **AWS_ENV,
        **account.env(prompts.url),
        "AWS_ENDPOINT_URL": aws_url,
        "UAT_POLL_SECONDS": "1",
        **store,
    }
    return bot_env(slack, folder, **settings)


@dataclass
class Replicas:
    """The bot processes of a phase; each a `BotProcess` (its log in its own folder)."""

    bots: list[BotProcess]
    kills: int = 0

    @classmethod
    def make(cls, env: dict[str, str], folder: Path, count: int) -> Replicas:
        bots = []
        for index in range(count):
            cwd = folder / f"replica{index}"
            cwd.mkdir(parents=True, exist_ok=True)
            bots.append(BotProcess(env, cwd))
        return cls(bots)

    async def start(self) -> None:
        for bot in self.bots:  # one after the other: the first creates the DynamoDB table
            await bot.start(timeout=60)

    def up(self) -> list[BotProcess]:
        return [b for b in self.bots if b.proc is not None and b.proc.poll() is None]

    async def kill_and_restart(self, index: int, down_s: float) -> None:
        """SIGKILL replica `index`, leave it down `down_s`, start it again."""
        bot = self.bots[index]
        await bot.kill()
        self.kills += 1
        await asyncio.sleep(down_s)
        await bot.start(timeout=60)

    async def ensure_up(self) -> None:
        for bot in self.bots:
            if bot.proc is None or bot.proc.poll() is not None:
                await bot.start(timeout=60)

    async def stop(self) -> None:
        for bot in self.bots:
            with contextlib.suppress(AssertionError):
                if bot.proc is not None and bot.proc.poll() is None:
                    await bot.terminate(15)
            bot.cleanup()
