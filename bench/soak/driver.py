"""The soak's driver: a mix of GitHub storms, prompts, commands and clicks sent as GitHub and
Slack send them (signed, over HTTP, to a random live replica), faults injected on a schedule,
and the record of all of it the checker reads.

The driver keeps its own model of what should run: a storm PR wants what its labels say, in
the order its deliveries were acknowledged (one PR's deliveries are sent one after another, as
GitHub sends them); a steady PR is labelled once and wants `uat` throughout; a stop PR is
labelled once and wants nothing from the moment a `/uat stop` for it was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.soak.checker import Command, EnvRow, History, Posted, Task
from bench.soak.world import AwsFaults, PromptServers, Replicas
from bot.slack import action_ids, slack_ui
from bot.store import Environment, State
from bot.store.protocol import Store
from tests.harness.bot import CHANNEL, DEPLOYER, SIGNING_SECRET, WEBHOOK_SECRET
from tests.harness.pull_requests import REPO, pr_event
from tests.harness.signing import (
    block_actions_body,
    github_headers,
    slack_headers,
    slash_command_body,
)
from tests.harness.slack_stub import SlackStub
from tests.harness.uat_aws import CLUSTER

LABELS = ("uat", "uat-staging")
REDELIVER_FOR_S = 60.0  # GitHub redelivers a delivery that got no 2xx; we do for this long
SLACK_WINDOW_S = 3.0
AWS_WINDOW_S = 3.0
STORE_OUTAGE_S = 6.0  # longer than SQLite's busy timeout (5 s), so writes do fail


@dataclass
class Phase:
    """One phase's set-up: a name, its store, how many replicas, its PR numbers."""

    name: str
    store: str  # "dynamodb" or "sqlite"
    replicas: int
    first_pr: int
    storm: int = 4
    steady: int = 3
    stops: int = 2

    @property
    def storm_prs(self) -> list[int]:
        return list(range(self.first_pr, self.first_pr + self.storm))

    @property
    def steady_prs(self) -> list[int]:
        start = self.first_pr + self.storm
        return list(range(start, start + self.steady))

    @property
    def stop_prs(self) -> list[int]:
        start = self.first_pr + self.storm + self.steady
        return list(range(start, start + self.stops))


@dataclass
class Driver:
    phase: Phase
    slack: SlackStub
    replicas: Replicas
    aws: AwsFaults
    prompts: PromptServers
    http: aiohttp.ClientSession
    rng: random.Random
    sqlite_db: str | None = None
    history: History = field(default_factory=lambda: History(REPO, CHANNEL))
    operations: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    _busy: set[int] = field(default_factory=set)
    _clicked: set[str] = field(default_factory=set)
    _work: set[asyncio.Task[None]] = field(default_factory=set)

    # ------------------------------------------------------------------ sending

    def _url(self) -> str | None:
        up = self.replicas.up()
        return self.rng.choice(up).url if up else None

    async def deliver(self, pr: int, action: str, label: str | None) -> None:
        """One `pull_request` delivery, redelivered (same id) until a replica answers 2xx;
        the model follows once it is acknowledged."""
        payload = pr_event(action, label, number=pr) if label else pr_event(action, number=pr)
        body = json.dumps(payload).encode()
        delivery = str(uuid.uuid4())
        deadline = time.monotonic() + REDELIVER_FOR_S
        first = True
        while time.monotonic() < deadline:
            url = self._url()
            if url is not None:
                if not first:
                    self.operations["webhook redelivery"] += 1
                first = False
                headers = github_headers(WEBHOOK_SECRET, body, "pull_request", delivery)
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with self.http.post(
                        f"{url}/github/webhook", data=body, headers=headers
                    ) as response:
                        if response.status in (200, 202):
                            self.operations[f"webhook {action}"] += 1
                            self._follow(pr, action, label)
                            return
            await asyncio.sleep(0.5)
        self.operations["webhook never acked"] += 1

    def _follow(self, pr: int, action: str, label: str | None) -> None:
        self.history.webhooks.append((time.time(), pr, f"{action} {label or ''}".strip()))
        wanted = self.history.wanted
        if action == "labeled":
            wanted[pr] = label
        elif action == "closed" or wanted.get(pr) == label:
            wanted[pr] = None

    async def _slack(
        self, kind: str, pr: int, body: bytes, response_url: str, url: str | None = None
    ) -> Command:
        command = Command(
            id=response_url.rsplit("/", 1)[-1],
            kind=kind,
            pr=pr,
            acked=False,
            response_url=response_url.rsplit("/", 1)[-1],
        )
        self.history.commands.append(command)
        command.at = time.time()
        url = url or self._url()
        if url is None:
            self.operations[f"{kind} (no replica up)"] += 1
            return command
        self.operations[kind] += 1
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with self.http.post(
                f"{url}/slack/events",
                data=body,
                headers=slack_headers(SIGNING_SECRET, body),
                timeout=aiohttp.ClientTimeout(total=3),  # Slack's own limit
            ) as response:
                command.acked = response.status == 200
                command.ack_body = await response.text() if command.acked else ""
        if not command.acked:
            self.operations[f"{kind} not acked"] += 1
        return command

    async def slash(self, kind: str, pr: int, text: str, url: str | None = None) -> Command:
        response_url = self.slack.new_response_url(CHANNEL)
        body = slash_command_body(
            text, user_id=DEPLOYER, channel_id=CHANNEL, response_url=response_url
        )
        return await self._slack(kind, pr, body, response_url, url)

    async def click(self, kind: str, pr: int, action_id: str, value: str) -> Command:
        response_url = self.slack.new_response_url(CHANNEL)
        body = block_actions_body(
            action_id, value, user_id=DEPLOYER, channel_id=CHANNEL, response_url=response_url
        )
        return await self._slack(kind, pr, body, response_url)

    # ------------------------------------------------------------------ the mix

    async def storm(self) -> None:
        free = [pr for pr in self.phase.storm_prs if pr not in self._busy]
        if not free:
            return
        pr = self.rng.choice(free)
        self._busy.add(pr)
        try:
            for _ in range(self.rng.choice((1, 2, 3))):  # a burst for one PR, in order
                running = self.history.wanted.get(pr)
                label: str | None
                if running is None:
                    action, label = "labeled", self.rng.choice(LABELS)
                else:
                    other = next(name for name in LABELS if name != running)
                    action, label = self.rng.choice(
                        [
                            ("unlabeled", running),
                            ("closed", None),
                            ("labeled", other),
                            ("labeled", running),
                        ]
                    )
                await self.deliver(pr, action, label)
                await asyncio.sleep(self.rng.uniform(0, 0.15))
        finally:
            self._busy.discard(pr)

    async def prompt(self, url: str | None = None) -> None:
        pr = self.rng.choice(self.phase.steady_prs)
        marker = f"soak prompt {uuid.uuid4().hex[:12]}"
        command = await self.slash("/uat prompt", pr, f"prompt PR-{pr} {marker}", url)
        command.effect, command.marker = "prompt", marker

    async def status(self) -> None:
        pr = self.rng.choice(self.phase.steady_prs)
        await self.slash("/uat status", pr, f"status PR-{pr}")

    async def extend(self) -> None:
        pr = self.rng.choice(self.phase.steady_prs)
        await self.slash("/uat extend", pr, f"extend PR-{pr} {self.rng.randint(1, 72)}")

    async def cancel_click(self) -> None:
        """Click Cancel on a prompt card the bot posted (one not clicked yet), if any."""
        for message in reversed(self.slack.messages.get(CHANNEL, [])):
            for block in message.get("blocks") or []:
                for element in block.get("elements") or []:
                    if element.get("action_id") != action_ids.PROMPT_CANCEL:
                        continue
                    value = json.loads(element["value"])
                    if value["job"] in self._clicked:
                        continue
                    self._clicked.add(value["job"])
                    command = await self.click(
                        "click Cancel", int(value["pr"]), action_ids.PROMPT_CANCEL, element["value"]
                    )
                    command.effect, command.marker = "cancel", str(value["job"])
                    return

    async def extend_click(self) -> None:
        pr = self.rng.choice(self.phase.steady_prs)
        value = json.dumps({"card": f"extend-soak-{uuid.uuid4().hex[:8]}", "repo": REPO, "pr": pr})
        await self.click("click Extend", pr, action_ids.ENV_EXTEND, value)

    async def stop(self, pr: int) -> None:
        command = await self.slash("/uat stop", pr, f"stop PR-{pr}")
        command.effect = "stop"

    def _fault(self, what: str) -> None:
        self.faults[what] += 1
        self.history.faults.append((time.time(), what))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def run(self, seconds: float) -> None:
        """Label the steady and stop PRs, then the mix and the faults for `seconds`."""
        for pr in self.phase.steady_prs + self.phase.stop_prs:
            self._spawn(self.deliver(pr, "labeled", "uat"))
        for pr in self.phase.storm_prs:
            self.history.wanted[pr] = None
        started = time.monotonic()
        deadline = started + seconds
        stops = {pr: started + self.rng.uniform(0.3, 0.7) * seconds for pr in self.phase.stop_prs}
        faults = asyncio.create_task(self.inject(seconds))
        mix: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (4, self.storm),
            (2, self.prompt),
            (1, self.status),
            (1, self.extend),
            (1, self.cancel_click),
            (0.5, self.extend_click),
        ]
        weights = [w for w, _ in mix]
        while time.monotonic() < deadline:
            for pr, at in list(stops.items()):
                if time.monotonic() >= at:
                    del stops[pr]
                    self._spawn(self.stop(pr))
            [(_, action)] = self.rng.choices(mix, weights)
            self._spawn(action())
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
        await faults
        if self._work:
            await asyncio.gather(*self._work)

    # ------------------------------------------------------------------ faults

    async def inject(self, seconds: float) -> None:
        """Every fault kind at least once, in a random order, spread over the phase; the last
        one ends before the phase does, so the system is left to settle."""
        kinds = ["kill", "kill after acks", "slack", "aws", "store"]
        rounds = max(1, int(seconds // 40))
        plan = [kind for _ in range(rounds) for kind in self.rng.sample(kinds, len(kinds))]
        gap = seconds / (len(plan) + 1)
        for kind in plan:
            await asyncio.sleep(gap * self.rng.uniform(0.7, 1.0))
            if kind == "kill after acks":
                await self.kill_after_acks(self.rng.randrange(len(self.replicas.bots)))
            elif kind == "kill":
                index = self.rng.randrange(len(self.replicas.bots))
                self._fault(f"SIGKILL replica {index}")
                await self.replicas.kill_and_restart(index, self.rng.uniform(0.5, 2.0))
            elif kind == "slack":
                status, stored = self.rng.choice([(429, False), (503, False), (500, True)])
                name = f"Slack {status}" + (" after storing the message" if stored else "")
                self._fault(f"{name} window ({SLACK_WINDOW_S:g} s)")
                self.slack.fail_for(SLACK_WINDOW_S, status, after_storing=stored)
            elif kind == "aws":
                which = self.rng.choice(["throttle", "unavailable"])
                what = "ThrottlingException" if which == "throttle" else "503"
                self._fault(f"AWS {what} window ({AWS_WINDOW_S:g} s)")
                self.aws.throttle(AWS_WINDOW_S, which)
            else:
                await self.store_outage()

    async def kill_after_acks(self, index: int, burst: int = 5) -> None:
        """A burst of commands to replica `index`, and SIGKILL the moment their acks are back:
        each ack was a promise the restarted replica (or the other one) has to keep."""
        bot = self.replicas.bots[index]
        if bot.proc is None or bot.proc.poll() is not None:
            return
        self._fault(f"SIGKILL replica {index} right after {burst} acks")
        sends: list[Awaitable[object]] = []
        for _ in range(burst):
            pr = self.rng.choice(self.phase.steady_prs)
            if self.rng.random() < 0.5:
                sends.append(self.prompt(bot.url))
            else:
                sends.append(self.slash("/uat extend", pr, f"extend PR-{pr} 4", bot.url))
        await asyncio.gather(*sends)
        await self.replicas.kill_and_restart(index, self.rng.uniform(0.5, 2.0))

    async def store_outage(self) -> None:
        if self.sqlite_db is None:
            self._fault(f"DynamoDB outage ({STORE_OUTAGE_S:g} s of 503)")
            self.aws.store_outage(STORE_OUTAGE_S)
            return
        self._fault(f"SQLite locked ({STORE_OUTAGE_S:g} s, writes refused)")
        await asyncio.to_thread(hold_write_lock, self.sqlite_db, STORE_OUTAGE_S)

    # ------------------------------------------------------------------ the record

    async def record(self, store: Store, ecs: Any) -> History:
        """The history with the world as it is now: tasks, environments, messages, answers."""
        history = self.history
        history.tasks = await asyncio.to_thread(tasks_of, ecs)
        envs = await store.list_environments()
        history.envs = {
            env.pr: EnvRow(
                env.pr,
                str(env.state),
                env.label,
                env.task_arn,
                env.facts.session,
                env.thread_ts,
                env.facts.reason,
            )
            for env in envs
            if env.repo == REPO
        }
        history.messages = posted(self.slack)
        landed = [r for r in self.slack.responses if r.error is None and r.failed_status is None]
        history.answers = dict(Counter(r.url_id for r in landed))
        texts: dict[str, list[str]] = {}
        for response in landed:
            texts.setdefault(response.url_id, []).append(str(response.body.get("text", "")))
        follow_stops(history, texts)
        history.prompts_received = Counter(self.prompts.received)
        history.cancels_received = set(self.prompts.cancelled)
        return history


def follow_stops(history: History, answers: dict[str, list[str]]) -> None:
    """A stop PR wants nothing once a stop for it was answered "Stopping" (even one whose ack
    came too late for Slack: its sender was told), or acked and never answered (an ack is a
    promise); a stop answered otherwise (refused, failed, or in its ack: "not recorded" while
    the store fails, so it was never run) changed nothing its sender was not told."""
    for command in history.commands:
        if command.kind != "/uat stop" or command.ack_body.strip():
            continue
        said = answers.get(command.response_url, [])
        stopping = slack_ui.stopping(Environment(REPO, command.pr, State.RUNNING))
        if stopping in said or (command.acked and not said):
            history.wanted[command.pr] = None


def hold_write_lock(db: str, seconds: float) -> None:
    """Take SQLite's write lock on `db` and keep it `seconds`: every writer is refused meanwhile
    ("database is locked" once its busy timeout runs out). A lock, not file modes: root, as CI
    runs, writes read-only files."""
    connection = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def tasks_of(ecs: Any) -> list[Task]:
    arns: list[str] = []
    for status in ("RUNNING", "STOPPED"):
        for page in ecs.get_paginator("list_tasks").paginate(cluster=CLUSTER, desiredStatus=status):
            arns += page["taskArns"]
    found: list[Task] = []
    for start in range(0, len(arns), 100):
        described = ecs.describe_tasks(
            cluster=CLUSTER, tasks=arns[start : start + 100], include=["TAGS"]
        )
        for task in described["tasks"]:
            tags = {t["key"]: t["value"] for t in task.get("tags", [])}
            pr = tags.get("pr", "")
            found.append(
                Task(
                    arn=task["taskArn"],
                    pr=int(pr) if pr.isdigit() else None,
                    session=str(task.get("startedBy", "")),
                    running=task["desiredStatus"] == "RUNNING" and task["lastStatus"] != "STOPPED",
                    managed=tags.get("managed-by") == "uat-bot",
                )
            )
    return found


def posted(slack: SlackStub) -> list[Posted]:
    """Every message the stub stored in the UAT channel, with its key and whether its post was
    answered with a failure."""
    failed = {
        str((call.response or {}).get("ts"))
        for call in slack.calls
        if call.method == "chat.postMessage" and call.failed_status is not None and call.response
    }
    found = []
    for message in slack.messages.get(CHANNEL, []):
        metadata = message.get("metadata") or {}
        key = str((metadata.get("event_payload") or {}).get("key") or "")
        found.append(
            Posted(
                channel=CHANNEL,
                ts=message["ts"],
                thread_ts=message.get("thread_ts"),
                text=str(message.get("text") or ""),
                key=key,
                answered_failure=message["ts"] in failed,
            )
        )
    return found
