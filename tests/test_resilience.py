"""Resilience: SIGKILLs at random points, replicas on one table, AWS throttling, hung containers.

Everything runs on 127.0.0.1: the real `uat-bot serve` (a subprocess, for the kills) or the
in-process app, moto's server (directly or behind a faulty proxy), the Slack stub and stand-in
containers; the 10.x addresses moto invents are never dialled.

The crashes and races the kill loop runs into are also pinned one at a time, deterministically,
below it. `UAT_RESILIENCE_SEED=<n>` replays the loop with another seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from botocore.retries.standard import ExponentialBackoff

from bot.aws.gateways import AwsError
from bot.environments import LAUNCH_LEASE_S, Environments
from bot.environments import launcher as launcher_module
from bot.environments import reconcile as reconcile_module
from bot.environments import thread as thread_module
from bot.environments.context import launch_lease
from bot.slack import slack_ui
from bot.slack.chat import Message
from bot.store import Environment, State, StoreUnavailable
from tests.harness.aws_proxy import ReverseProxy
from tests.harness.bot import (
    CHANNEL,
    DEPLOYER,
    Bot,
    BotFactory,
)
from tests.harness.ecr_seed import fresh_repository
from tests.harness.processes import BotProcess, deliver, eventually, read_store
from tests.harness.pull_requests import REPO, pr_event
from tests.harness.slack_stub import SlackStub
from tests.harness.uat_aws import CLUSTER, Containers, UatAccount

# ---------------------------------------------------------------- SIGKILL at random points

KILLS = 20
SEED = int(os.environ.get("UAT_RESILIENCE_SEED", "20261127"))
PRS = (2, 3, 4, 5, 6)
LABELS = ("uat", "uat-staging")
LIVE = ("starting", "provisioning", "running", "ready")


@dataclass
class Delivery:
    id: str
    pr: int
    action: str
    label: str | None

    @property
    def payload(self) -> dict[str, Any]:
        if self.label is None:
            return pr_event(self.action, number=self.pr)
        return pr_event(self.action, self.label, number=self.pr)

    def __str__(self) -> str:
        return (
            f"{self.action} {self.label} #{self.pr}" if self.label else f"{self.action} #{self.pr}"
        )


@dataclass
class Model:
    """What each PR's labels ask the bot to run (None: nothing), as GitHub would have it."""

    wanted: dict[int, str | None] = field(default_factory=lambda: dict.fromkeys(PRS))
    sent: int = 0

    def delivery(self, rng: random.Random, pr: int) -> Delivery:
        running = self.wanted[pr]
        if running is None:
            action, label = "labeled", rng.choice(LABELS)
        else:
            other = next(name for name in LABELS if name != running)
            action, label = rng.choice(
                [
                    ("unlabeled", running),
                    ("unlabeled", running),
                    ("closed", None),
                    ("labeled", other),
                    ("labeled", running),
                ]
            )
        self.sent += 1
        delivery = Delivery(f"kill-{SEED}-{self.sent}", pr, action, label)
        if action == "labeled":
            self.wanted[pr] = label
        elif action == "closed" or running == label:
            self.wanted[pr] = None
        return delivery


@dataclass
class Kill:
    """One SIGKILL: when, and what it interrupted."""

    at: float
    where: str
    line: str
    slack_calls: int = 0


async def send_all(
    http: aiohttp.ClientSession, url: str, deliveries: list[Delivery], gaps: list[float]
) -> list[Delivery]:
    """Send in order; return the ones that got no 2xx (the kill cut them)."""
    for index, (delivery, gap) in enumerate(zip(deliveries, gaps, strict=True)):
        await asyncio.sleep(gap)
        try:
            status = await deliver(http, url, delivery.payload, delivery.id)
        except (aiohttp.ClientError, OSError):
            return deliveries[index:]
        assert status in (200, 202), (str(delivery), status)
    return []


async def redeliver(http: aiohttp.ClientSession, url: str, deliveries: list[Delivery]) -> None:
    """GitHub's redelivery (same delivery id) of what a kill cut before its 2xx."""
    for delivery in deliveries:
        status = await deliver(http, url, delivery.payload, delivery.id)
        assert status in (200, 202), (str(delivery), status)


def classify(
    before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]], cut: bool, resumed: bool
) -> str:
    """What a kill interrupted: a delivery before its answer, launches, stops (or nothing).

    An environment counts when this process worked on it: it changed, or this process had
    reconciled (and so resumed whatever was left half done)."""
    touched = [
        env
        for pr, env in after.items()
        if resumed or pr not in before or before[pr]["version"] != env["version"]
    ]
    parts = ["delivery"] if cut else []
    if any(env["state"] in ("new", "starting") for env in touched):
        parts.append("launch")
    if any(env["state"] == "stopping" for env in touched):
        parts.append("stop")
    return "+".join(parts) or "idle"


async def first_poll(http: aiohttp.ClientSession, url: str, timeout: float = 8.0) -> None:  # noqa: ASYNC109
    """Wait until the bot's watcher has taken the lease, reconciled and polled once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith("uat_poll_duration_seconds_count") and float(line.split()[-1]):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the watcher did not poll within {timeout}s")


async def test_sigkill_at_random_points_converges_after_restart(
    bot_process: BotProcess, account: UatAccount, slack: SlackStub
) -> None:
    """20 SIGKILLs at random points during deliveries, launches and stops; after a restart
    every environment converges: one task per labelled PR, none for the rest, no orphan, one
    thread per PR whose card shows its state."""
    rng = random.Random(SEED)
    model = Model()
    kills: list[Kill] = []
    db = bot_process.env["UAT_DB"]
    cut: list[Delivery] = []
    async with aiohttp.ClientSession() as http:
        for number in range(KILLS):
            # Every other process first resumes what the previous one left (its watcher takes
            # the lease, reconciles and polls), so kills land in resumed launches and stops
            # too; the others get their deliveries while their watcher may be taking over.
            resumed = rng.random() < 0.5
            await bot_process.start()
            await redeliver(http, bot_process.url, cut)
            if resumed:
                await first_poll(http, bot_process.url)
            before = read_store(db)
            deliveries = [
                model.delivery(rng, rng.choice(PRS)) for _ in range(rng.choice((1, 2, 3)))
            ]
            gaps = [rng.uniform(0, 0.15) if i else 0.0 for i in range(len(deliveries))]
            delay = rng.uniform(0, 0.4)
            sender = asyncio.create_task(send_all(http, bot_process.url, deliveries, gaps))
            await asyncio.sleep(delay)
            await bot_process.kill()
            killed_at = time.time()
            cut = await sender
            where = classify(before, read_store(db), bool(cut), resumed)
            sent = ", ".join(map(str, deliveries)) or "nothing"
            kills.append(
                Kill(
                    killed_at,
                    where,
                    f"kill {number:2d}: {delay * 1000:3.0f} ms after sending {sent}"
                    f"{' (after its first poll)' if resumed else ''}: mid-{where}"
                    + (f", cut {', '.join(map(str, cut))}" if cut else ""),
                    len(slack.calls),
                ),
            )
        await bot_process.start()
        await redeliver(http, bot_process.url, cut)
        summary = summarize(kills)
        print(summary)
        # a launch the last kill cut waits for its dead lease to lapse: LAUNCH_LEASE_S at most
        problems = await converged(account, slack, db, model, kills, timeout=2 * LAUNCH_LEASE_S)
        assert not problems, "\n".join(
            [*problems, summary, slack_log(slack, kills), bot_process.logs()[-30000:]]
        )
        assert await bot_process.terminate() == 0


def slack_log(slack: SlackStub, kills: list[Kill]) -> str:
    """The bot's posts and card updates in order, with the kills between them."""
    lines = []
    marks = {k.slack_calls: n for n, k in enumerate(kills)}
    for index, call in enumerate(slack.calls):
        if index in marks:
            lines.append(f"  --- kill {marks[index]}")
        if call.method in ("chat.postMessage", "chat.update"):
            ts = (call.response or {}).get("ts")
            text = str(call.params.get("text", ""))[:70]
            lines.append(f"  {call.method} {ts} thread={call.params.get('thread_ts')} {text}")
    return "Slack:\n" + "\n".join(lines)


def summarize(kills: list[Kill]) -> str:
    count = {part: sum(part in k.where for k in kills) for part in ("delivery", "launch", "stop")}
    return "\n".join(
        [
            *(k.line for k in kills),
            f"{len(kills)} kills: {count['launch']} mid-launch, {count['stop']} mid-stop, "
            f"{count['delivery']} before a delivery's answer, "
            f"{sum(k.where == 'idle' for k in kills)} while idle",
        ]
    )


def check(
    account: UatAccount,
    slack: SlackStub,
    db: str,
    model: Model,
    kills: list[Kill],
) -> list[str]:
    """Everything that differs from the converged state (nothing, once converged)."""
    problems: list[str] = []
    envs = read_store(db)
    running = account.tasks(desired="RUNNING")
    live = {e["data"].get("session"): pr for pr, e in envs.items() if e["state"] in LIVE}
    for task in running:
        tags = {t["key"]: t["value"] for t in task.get("tags", [])}
        if tags.get("managed-by") == "uat-bot" and task["startedBy"] not in live:
            problems.append(f"orphan task {task['taskArn']} ({task['startedBy']})")
    roots = [m for m in slack.messages.get(CHANNEL, []) if m.get("thread_ts") in (None, m["ts"])]
    for pr in PRS:
        env = envs.get(pr)
        wanted = model.wanted[pr]
        tasks = [t for t in running if {"key": "pr", "value": str(pr)} in t.get("tags", [])]
        if wanted is None:
            if env is not None and env["state"] != "stopped":
                problems.append(f"#{pr}: wants nothing, but the store says {env['state']}")
            if tasks:
                problems.append(f"#{pr}: wants nothing, but {len(tasks)} task(s) run")
        else:
            if env is None or (env["state"], env["label"]) != ("running", wanted):
                seen = env and (env["state"], env["label"])
                problems.append(f"#{pr}: wants {wanted} running, but the store says {seen}")
            if len(tasks) != 1:
                problems.append(f"#{pr}: wants one task, but {len(tasks)} run")
            elif env is not None and (
                (tasks[0]["taskArn"], tasks[0]["startedBy"])
                != (env["task_arn"], env["data"].get("session"))
            ):
                problems.append(f"#{pr}: the task running is not the one the store knows")
        mine = [m for m in roots if m["text"].startswith(f"{REPO}#{pr} ")]
        thread = env["thread_ts"] if env else None
        if thread is None:
            if mine:
                problems.append(f"#{pr}: no thread in the store, but {len(mine)} root message(s)")
            elif wanted is not None:
                problems.append(f"#{pr}: runs without a thread")
            continue
        if [m["ts"] for m in mine] != [thread]:
            problems.append(f"#{pr}: thread {thread}, but root messages {[m['ts'] for m in mine]}")
        else:
            card = next(m for m in mine if m["ts"] == thread)["text"]
            if not card.endswith(f"— {env['state']}"):
                problems.append(f"#{pr}: the card says {card!r}, the store {env['state']!r}")
    strangers = [m for m in roots if not any(m["text"].startswith(f"{REPO}#{pr} ") for pr in PRS)]
    if strangers:
        problems.append(f"root messages of no PR: {[m['text'] for m in strangers]}")
    return problems


async def converged(
    account: UatAccount,
    slack: SlackStub,
    db: str,
    model: Model,
    kills: list[Kill],
    timeout: float,  # noqa: ASYNC109
) -> list[str]:
    """Poll until converged: the problems left when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        problems = await asyncio.to_thread(check, account, slack, db, model, kills)
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(0.25)


# ---------------------------------------------------------------- crashes and races, one at a time


async def test_a_launch_cut_by_a_kill_is_resumed_after_restart(
    bot_process: BotProcess, account: UatAccount
) -> None:
    """The killed launcher's lease is left behind; it lapses (LAUNCH_LEASE_S after its last
    renewal) and the restarted bot carries on with the launch."""
    db = bot_process.env["UAT_DB"]
    await bot_process.start()
    async with aiohttp.ClientSession() as http:
        assert await deliver(http, bot_process.url, pr_event("labeled", "uat"), "cut-1") == 202
    # the launch is under way: it holds its lease and has posted the card
    await eventually(lambda: (read_store(db).get(2) or {}).get("thread_ts"), 10, 0.002)
    await bot_process.kill()
    env = read_store(db)[2]
    assert (env["state"], env["task_arn"]) == ("starting", None), "the kill came too late"
    killed = time.monotonic()
    await bot_process.start()
    await eventually(lambda: read_store(db)[2]["state"] != "starting", 1.5 * LAUNCH_LEASE_S + 5)
    print(f"resumed and launched {time.monotonic() - killed:.1f}s after the kill")
    assert read_store(db)[2]["state"] == "running"
    assert len(account.tasks(desired="RUNNING")) == 1
    assert await bot_process.terminate() == 0


StartBot = Callable[[], Awaitable[Bot]]


@pytest.fixture
def start_bot(account: UatAccount, containers: Containers, make_bot: BotFactory) -> StartBot:
    """Start an in-process bot on moto's UAT account and the stand-in containers, once its
    start-up (the watcher's reconcile and catch-up) is done; each call starts another on the
    same store, as a restart after a kill does."""

    async def start() -> Bot:
        bot: Bot = await make_bot(**account.env(containers.url))
        await bot.settle_startup()
        return bot

    return start


@pytest.fixture
async def uat(start_bot: StartBot) -> Bot:
    return await start_bot()


def root_messages(slack: SlackStub) -> list[dict[str, Any]]:
    return [m for m in slack.messages.get(CHANNEL, []) if m.get("thread_ts") in (None, m["ts"])]


async def env_of(bot: Bot, pr: int = 2) -> Environment:
    env = await bot.runtime.services.store.get_environment(REPO, pr)
    assert env is not None
    return env


async def killed(*args: Any, **kwargs: Any) -> None:
    """What the rest of the work looks like when the process dies here (in place of any step)."""
    raise asyncio.CancelledError


async def assert_one_card(bot: Bot, slack: SlackStub, state: str) -> None:
    """PR 2 is `state` in the store, with one card, the one its thread is on, saying so."""
    env = await env_of(bot)
    [root] = root_messages(slack)
    assert env.state == state and env.thread_ts == root["ts"]
    assert root["text"].endswith(f"— {state}"), root["text"]


async def test_a_delivery_cut_before_its_effect_was_recorded_is_acted_on_when_redelivered(
    uat: Bot, account: UatAccount
) -> None:
    real = uat.runtime.on_pull_request
    uat.runtime.on_pull_request = killed
    with contextlib.suppress(aiohttp.ClientError):
        await uat.github("pull_request", pr_event("labeled", "uat"), delivery="cut-2")
    uat.runtime.on_pull_request = real
    status, body = await uat.github("pull_request", pr_event("labeled", "uat"), delivery="cut-2")
    await uat.settle()
    assert (status, body) == (202, {"accepted": "cut-2"})
    assert len(account.tasks(desired="RUNNING")) == 1
    status, body = await uat.github("pull_request", pr_event("labeled", "uat"), delivery="cut-2")
    assert (status, body) == (200, {"duplicate": True})


async def test_a_kill_between_posting_a_thread_and_saving_it_opens_no_second(
    start_bot: StartBot, slack: SlackStub
) -> None:
    """The card is posted, then its ts saved. Killed in between (the task already running: the
    card goes out beside the AWS work), the restarted bot finds the card by the key it carries
    in its metadata and carries on in that thread."""
    first = await start_bot()
    chat = first.runtime.services.environments.chat
    real_post = chat.post

    async def post_then_die(*args: Any, **kwargs: Any) -> str:
        await real_post(*args, **kwargs)
        await killed()
        return ""

    chat.post = post_then_die  # type: ignore[method-assign]
    status, _ = await first.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await first.settle()
    await first.runtime.stop()
    second = await start_bot()
    await second.settle()
    await assert_one_card(second, slack, "running")


async def test_a_task_a_kill_left_without_its_card_gets_one_on_start(
    start_bot: StartBot, slack: SlackStub
) -> None:
    """The card waits for Slack's pace while the task starts: killed before it was posted, the
    environment runs with no card, and the restarted bot posts it (once) showing its state."""
    first = await start_bot()
    first.runtime.services.environments.chat.post = killed  # type: ignore[method-assign]
    status, _ = await first.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await first.settle()
    assert (await env_of(first)).state == "running"
    await first.runtime.stop()
    assert root_messages(slack) == []
    second = await start_bot()
    await second.settle()
    await assert_one_card(second, slack, "running")


async def test_a_missing_card_two_catch_ups_post_at_once_is_posted_once(
    uat: Bot, slack: SlackStub
) -> None:
    """A start's catch-up and the watcher's sweep both find a running environment a kill left
    without its card, and post it at the same time: one card (the soak's "#208: 2 threads",
    SQLite; both held the PR's launch lease, as one holder)."""
    environments = uat.runtime.services.environments
    real_post = environments.chat.post
    environments.chat.post = killed  # type: ignore[method-assign]
    await uat.github("pull_request", pr_event("labeled", "uat"))
    await uat.settle()
    env = await env_of(uat)
    assert env.state == "running" and env.thread_ts is None

    async def slow_post(message: Message) -> str:
        await asyncio.sleep(0.2)  # both are in flight before either is stored
        return await real_post(message)

    environments.chat.post = slow_post  # type: ignore[method-assign]
    launcher = environments.launcher
    await asyncio.gather(launcher.post_missing_card(env), launcher.post_missing_card(env))
    await uat.settle()
    await assert_one_card(uat, slack, "running")


async def test_a_card_a_kill_left_behind_is_brought_up_to_date_on_start(
    start_bot: StartBot, slack: SlackStub
) -> None:
    """The state was written, the card not updated yet when the process died."""
    first = await start_bot()
    await first.github("pull_request", pr_event("labeled", "uat"))
    await first.settle()
    first.runtime.services.environments.thread.show = killed  # type: ignore[method-assign]
    await first.github("pull_request", pr_event("unlabeled", "uat"))
    await first.settle()
    await first.runtime.stop()
    [root] = root_messages(slack)
    assert root["text"].endswith("— running")
    second = await start_bot()
    await assert_one_card(second, slack, "stopped")
    [root] = root_messages(slack)
    assert "stopped" in slack.thread(CHANNEL, root["ts"])[-1]["text"]


async def test_a_reply_a_kill_cut_before_it_was_recorded_is_not_repeated_on_start(
    start_bot: StartBot, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "stopped" reply reached Slack, the process died before recording that the thread
    shows it: the catch-up on start finds the reply by its key instead of posting it again
    (once the reservation is old enough not to be a post under way elsewhere)."""
    monkeypatch.setattr("bot.slack.outbox.IN_FLIGHT_S", 0.5)
    monkeypatch.setattr("bot.slack.outbox.IN_FLIGHT_POLL_S", 0.05)
    first = await start_bot()
    await first.github("pull_request", pr_event("labeled", "uat"))
    await first.settle()
    chat = first.runtime.services.environments.chat
    real_post = chat.post

    async def post_then_die(message: Message) -> str:
        ts = await real_post(message)
        if str(message.key).startswith("reply:"):
            await killed()
        return ts

    chat.post = post_then_die  # type: ignore[method-assign]
    await first.github("pull_request", pr_event("unlabeled", "uat"))
    await first.settle()
    assert (await env_of(first)).facts.shown != "stopped"  # the kill came in time
    await first.runtime.stop()
    second = await start_bot()
    await second.settle()
    [root] = root_messages(slack)
    replies = [m["text"] for m in slack.thread(CHANNEL, root["ts"])]
    assert len([r for r in replies if "stopped" in r]) == 1, replies
    assert root["text"].endswith("— stopped")
    assert (await env_of(second)).facts.shown == "stopped"


async def test_a_ready_reply_a_catch_up_reserved_first_is_not_posted_again_by_the_watcher(
    start_bot: StartBot, containers: Containers, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that takes the watcher lease over catches threads up while its watcher moves
    an environment to ready: the catch-up saw `ready` in the store and reserved the reply's key
    first, its post still under way, when the watcher came to post the same reply. Whoever
    reserved first posts it; the other waits for it (the soak's "#100 ready reply posted twice")."""
    monkeypatch.setattr("bot.slack.outbox.IN_FLIGHT_POLL_S", 0.05)
    bot = await start_bot()
    await bot.github("pull_request", pr_event("labeled", "uat"))
    await bot.settle()
    assert (await env_of(bot)).state == "running"
    environments = bot.runtime.services.environments
    chat = environments.chat
    real_update, real_post = chat.update, chat.post
    watcher_updating, catch_up_posting = asyncio.Event(), asyncio.Event()
    release_watcher, release_catch_up = asyncio.Event(), asyncio.Event()

    async def slow_update(
        channel: str, ts: str, text: str, blocks: Any = None, **kwargs: Any
    ) -> None:
        if not watcher_updating.is_set():  # the watcher's card update, after its move to ready
            watcher_updating.set()
            await release_watcher.wait()
        await real_update(channel, ts, text, blocks, **kwargs)

    async def slow_post(message: Message) -> str:
        if str(message.key).endswith(":ready") and not catch_up_posting.is_set():
            catch_up_posting.set()  # the catch-up's post, its key reserved
            await release_catch_up.wait()
        return await real_post(message)

    chat.update = slow_update  # type: ignore[method-assign]
    chat.post = slow_post  # type: ignore[method-assign]
    containers.ready(2)
    watching = asyncio.create_task(environments.poll())
    await asyncio.wait_for(watcher_updating.wait(), 5)
    assert (await env_of(bot)).state == "ready"
    await environments.reconciler.catch_up()
    await asyncio.wait_for(catch_up_posting.wait(), 5)
    release_watcher.set()
    await asyncio.sleep(0.5)  # the watcher comes to its reply while the catch-up's is under way
    release_catch_up.set()
    await asyncio.wait_for(watching, 10)
    await bot.settle()
    [root] = root_messages(slack)
    keys = [
        ((m.get("metadata") or {}).get("event_payload") or {}).get("key", "")
        for m in slack.thread(CHANNEL, root["ts"])
    ]
    assert len([k for k in keys if k.endswith(":ready")]) == 1, keys
    assert (await env_of(bot)).facts.shown == "ready"


async def test_a_card_shown_from_a_stale_environment_ends_showing_the_stores_state(
    uat: Bot, slack: SlackStub
) -> None:
    """A launch read its environment as running, then a stop landed and updated the card before
    the launch's own update did: the card must not end saying `running` while the store says
    stopped (the soak's "#102: the card says starting, the store stopped")."""
    await uat.github("pull_request", pr_event("labeled", "uat"))
    await uat.settle()
    stale = await env_of(uat)
    assert stale.state == "running"
    await uat.github("pull_request", pr_event("unlabeled", "uat"))
    await uat.settle()
    assert (await env_of(uat)).state == "stopped"
    await uat.runtime.services.environments.thread.show(stale)  # the late, stale update
    [root] = root_messages(slack)
    assert root["text"].endswith("— stopped"), root["text"]


async def test_a_stop_landing_while_the_launchs_card_waits_for_slack_ends_on_the_card(
    uat: Bot, account: UatAccount, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card waits for Slack's pace while the launch works; the label is removed meanwhile
    and the stop completes before the card is posted, so the stop has no card to show itself on,
    and the launch, stopped, gives up before it shows anything. The card posted after it (built
    as `starting`) must end saying stopped, with the stopped reply (the soak's "#201: the card
    says starting, the store stopped", SQLite phase)."""
    environments = uat.runtime.services.environments
    chat, ecs = environments.chat, environments.ctx.ecs
    real_post, real_run = chat.post, ecs.run_task
    card_waiting, release_card = asyncio.Event(), asyncio.Event()
    running_task, release_task = asyncio.Event(), asyncio.Event()

    async def card_at_slacks_pace(message: Message) -> str:
        if str(message.key).startswith("card:"):
            card_waiting.set()
            await release_card.wait()
        return await real_post(message)

    async def slow_run_task(*args: Any, **kwargs: Any) -> Any:
        running_task.set()
        await release_task.wait()
        return await real_run(*args, **kwargs)

    monkeypatch.setattr(chat, "post", card_at_slacks_pace)
    monkeypatch.setattr(ecs, "run_task", slow_run_task)
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"), delivery="s-1")
    assert status == 202
    await asyncio.wait_for(asyncio.gather(card_waiting.wait(), running_task.wait()), 5)
    status, _ = await uat.github("pull_request", pr_event("unlabeled", "uat"), delivery="s-2")
    assert status == 202

    for _ in range(100):  # the stop completes; its card update finds no card to update
        if (await env_of(uat)).state == "stopped":
            break
        await asyncio.sleep(0.05)
    assert (await env_of(uat)).state == "stopped"
    release_task.set()  # the launch sees the stop and gives up, its card still waiting
    await asyncio.sleep(0.3)
    release_card.set()
    await asyncio.wait_for(uat.settle(), 10)
    env = await env_of(uat)
    [root] = root_messages(slack)
    assert env.state == "stopped" and env.thread_ts == root["ts"]
    assert root["text"].endswith("— stopped"), root["text"]
    replies = [m["text"] for m in slack.thread(CHANNEL, root["ts"])]
    assert len([r for r in replies if "stopped" in r]) == 1, replies
    assert account.tasks(desired="RUNNING") == []


async def test_a_card_shown_during_a_store_outage_still_ends_showing_the_stores_state(
    uat: Bot, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The late, stale update of the test above, sent while the store fails: its second look at
    the store waits for the store instead of giving up, so the card still ends saying stopped
    (the soak's "#101: the card says starting, the store stopped", DynamoDB outage)."""
    await uat.github("pull_request", pr_event("labeled", "uat"))
    await uat.settle()
    stale = await env_of(uat)
    await uat.github("pull_request", pr_event("unlabeled", "uat"))
    await uat.settle()
    store = uat.runtime.services.store
    real_get = store.get_environment
    failures = 0

    async def failing_get(repo: str, pr: int) -> Environment | None:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise StoreUnavailable("DynamoDB answers 503", "DynamoDB 503")
        return await real_get(repo, pr)

    monkeypatch.setattr(thread_module, "REREAD_PAUSES_S", (0.01,) * 5)
    monkeypatch.setattr(store, "get_environment", failing_get)
    await uat.runtime.services.environments.thread.show(stale)
    assert failures == 3
    [root] = root_messages(slack)
    assert root["text"].endswith("— stopped"), root["text"]


async def test_a_card_put_right_by_its_second_look_looks_again_after_that_update(
    uat: Bot, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale `running` update finds the store `stopping` and puts the card right; the stop
    finishes (elsewhere, its `stopped` update already sent) while that `stopping` update waits
    for its turn: the card looks again after it, and ends saying stopped (the soak's "#101: the
    card says stopping, the store stopped", seed 1796085108)."""
    await uat.github("pull_request", pr_event("labeled", "uat"))
    await uat.settle()
    stale = await env_of(uat)
    store = uat.runtime.services.store
    await store.save_environment(replace(stale, state=State.STOPPING))
    thread = uat.runtime.services.environments.thread
    real_update = thread.ctx.chat.update
    sent: list[str] = []

    async def update(channel: str, ts: str, text: str, *args: Any, **kwargs: Any) -> None:
        await real_update(channel, ts, text, *args, **kwargs)
        sent.append(text.rsplit("— ", 1)[-1])
        if sent == ["running", "stopping"]:  # the stop finished meanwhile
            stopping = await env_of(uat)
            await store.save_environment(replace(stopping, state=State.STOPPED))

    monkeypatch.setattr(thread.ctx.chat, "update", update)
    await thread.show(stale)
    assert sent == ["running", "stopping", "stopped"]
    [root] = root_messages(slack)
    assert root["text"].endswith("— stopped"), root["text"]


async def test_a_stop_a_killed_replica_recorded_is_carried_out_by_the_watcher(
    uat: Bot, account: UatAccount, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica recorded a stop and was killed before carrying it out, while this one
    held the watcher lease: no takeover follows, so no `reconcile`. The watcher's sweep carries
    the stop out once it has been left alone for LEFT_BEHIND_S (and not before: its replica may
    still be at it)."""
    monkeypatch.setattr(reconcile_module, "LEFT_BEHIND_S", 1.0)
    await uat.github("pull_request", pr_event("labeled", "uat"))
    await uat.settle()
    env = await env_of(uat)
    assert env.state == "running" and len(account.tasks(desired="RUNNING")) == 1
    store = uat.runtime.services.store
    stopping = env.with_facts(reason=f"stopped by {slack_ui.person(DEPLOYER)}")
    await store.save_environment(replace(stopping, state=State.STOPPING))  # then the kill
    environments = uat.runtime.services.environments
    environments.watcher.swept = None
    await environments.poll()
    await uat.settle()
    assert (await env_of(uat)).state == "stopping"  # just recorded: its replica may be at it
    await asyncio.sleep(1.1)
    environments.watcher.swept = None
    await environments.poll()
    await uat.settle()
    env = await env_of(uat)
    assert env.state == "stopped" and account.tasks(desired="RUNNING") == []
    [root] = root_messages(slack)
    assert root["text"].endswith("— stopped"), root["text"]
    replies = [m["text"] for m in slack.thread(CHANNEL, root["ts"])]
    assert len([r for r in replies if "stopped" in r]) == 1, replies


async def test_a_left_behind_stop_that_does_not_finish_is_tried_every_sweep_and_logged_once(
    uat: Bot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop the sweep carries out but that cannot finish yet (ECS refusing, say) is tried
    again at every sweep; the log says so once, not every SWEEP_EVERY_S."""
    monkeypatch.setattr(reconcile_module, "LEFT_BEHIND_S", 1.0)
    await uat.github("pull_request", pr_event("labeled", "uat"))
    await uat.settle()
    env = await env_of(uat)
    store = uat.runtime.services.store
    await store.save_environment(replace(env, state=State.STOPPING))  # then the kill
    environments = uat.runtime.services.environments
    tries: list[int] = []

    async def not_yet(repo: str, pr: int) -> None:
        tries.append(pr)

    monkeypatch.setattr(environments.stopper, "finish_stop", not_yet)
    await asyncio.sleep(1.1)
    for _ in range(3):
        environments.watcher.swept = None
        await environments.poll()
        await uat.settle()
    assert tries == [env.pr] * 3
    said = [r for r in caplog.records if "carrying out the stop" in r.getMessage()]
    assert len(said) == 1, said


async def test_a_state_a_killed_replica_recorded_but_never_showed_is_shown_by_the_watcher(
    uat: Bot, account: UatAccount, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica recorded that the environment failed and was killed before its card said
    so, while this one held the watcher lease: the sweep brings the card up to date at once, and
    the thread once the reply can no longer be on its way from that replica; once each."""
    monkeypatch.setattr(reconcile_module, "LEFT_BEHIND_S", 1.0)
    await uat.github("pull_request", pr_event("labeled", "uat"))
    await uat.settle()
    env = await env_of(uat)
    [task] = account.tasks(desired="RUNNING")
    account.ecs.stop_task(cluster=CLUSTER, task=task["taskArn"], reason="died")
    store = uat.runtime.services.store
    failed = replace(env.with_facts(reason="the app exited"), state=State.FAILED)
    await store.save_environment(failed)  # then the kill: the card still says running
    await asyncio.sleep(1.1)
    environments = uat.runtime.services.environments

    async def sweep() -> list[str]:
        environments.watcher.swept = None
        await environments.poll()
        await uat.settle()
        [root] = root_messages(slack)
        assert root["text"].endswith("— failed"), root["text"]
        return [m["text"] for m in slack.thread(CHANNEL, root["ts"]) if "failed" in m["text"]]

    # the card at once; the reply not yet: its replica may still be waiting to post it
    assert await sweep() == []
    assert (await env_of(uat)).facts.shown != "failed"
    monkeypatch.setattr(reconcile_module, "REPLY_LEFT_BEHIND_S", 1.0)
    assert len(await sweep()) == 1
    assert len(await sweep()) == 1
    assert (await env_of(uat)).facts.shown == "failed"


async def test_a_launch_whose_launcher_died_while_another_replica_watched_is_resumed(
    uat: Bot, account: UatAccount, slack: SlackStub
) -> None:
    """A replica recorded a launch and was killed before running its task, while another held
    the watcher lease: no takeover follows (the holder lives on), and a redelivered label finds
    the PR live already. The holder's next round resumes the launch once its lease is free (the
    soak's "#101 wants uat-staging, the store says starting, its task does not run")."""
    environments = uat.runtime.services.environments
    real_spawn = environments.launcher.spawn
    environments.launcher.spawn = lambda *args, **kwargs: None  # type: ignore[method-assign]
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"), delivery="dies-1")
    assert status == 202
    await uat.settle()
    environments.launcher.spawn = real_spawn  # type: ignore[method-assign]
    store = uat.runtime.services.store
    env = await env_of(uat)
    assert env.state == "starting" and not account.tasks(desired="RUNNING")
    await environments.poll()  # a launch younger than its lease may still be taking it
    await uat.settle()
    assert (await env_of(uat)).state == "starting"
    started = (env.facts.launch_started or 0) - LAUNCH_LEASE_S - 1  # the launcher died long ago
    await store.save_environment(env.with_facts(launch_started=started))
    await environments.poll()
    await uat.settle()
    env = await env_of(uat)
    [task] = account.tasks(desired="RUNNING")
    assert env.state == "running" and task["startedBy"] == env.facts.session
    assert len(root_messages(slack)) == 1


async def test_a_launch_waiting_for_its_lease_through_a_store_outage_starts_once_it_is_back(
    uat: Bot, account: UatAccount, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another launch of the PR holds the lease, and the store fails while this one waits its
    turn: the launch waits for the store too, instead of crashing and failing an environment
    nothing is wrong with (the soak's "#100 launch failed" in hold_lease during an outage)."""
    monkeypatch.setattr(launcher_module, "LAUNCH_LEASE_S", 2.0)
    store = uat.runtime.services.store
    lease = launch_lease(REPO, 2)
    assert await store.hold_lease(lease, "another replica/pr2-older", 60)
    real_hold = store.hold_lease
    outages = 0

    async def failing_hold(name: str, holder: str, ttl_s: float) -> bool:
        nonlocal outages
        if name == lease and outages < 2:
            outages += 1
            raise StoreUnavailable("UAT_DB is locked", "locked")
        return await real_hold(name, holder, ttl_s)

    monkeypatch.setattr(store, "hold_lease", failing_hold)
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await eventually(lambda: outages == 2, 10)
    assert (await env_of(uat)).state == "starting"
    await store.release_lock(lease, "another replica/pr2-older")
    await uat.settle()
    env = await env_of(uat)
    [task] = account.tasks(desired="RUNNING")
    assert env.state == "running" and task["startedBy"] == env.facts.session


def fail_the_first_launch(uat: Bot, monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[str]:
    """The first launch's look for a task its session started already (ListTasks) raises `error`;
    a launch tries again after a minute and holds its lease for 2 s. The session it failed
    (filled in when it does)."""
    monkeypatch.setattr(launcher_module, "LAUNCH_RETRIES_S", (60.0,))
    monkeypatch.setattr(launcher_module, "LAUNCH_LEASE_S", 2.0)
    ecs = uat.runtime.services.environments.ctx.ecs
    real = ecs.tasks_started_by
    failed: list[str] = []

    async def fail_the_first(session: str) -> list[str]:
        if not failed:
            failed.append(session)
            raise error
        return await real(session)

    monkeypatch.setattr(ecs, "tasks_started_by", fail_the_first)
    return failed


async def test_a_launch_replaced_while_it_waits_to_try_again_makes_way_for_its_replacement(
    uat: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch throttled by AWS waits before trying again, holding its PR's launch lease; a
    label switch meanwhile replaces it. It gives the lease up as soon as it sees that, not after
    its whole pause (up to a minute), so the new label's launch starts at once (the soak's
    "#100 still starting": its launch waited for a replaced one's pause)."""
    throttled = fail_the_first_launch(
        uat,
        monkeypatch,
        AwsError("AWS ListTasks failed (ThrottlingException).", "ThrottlingException"),
    )
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"), delivery="p-1")
    assert status == 202
    await eventually(lambda: throttled, 5)
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat-staging"), delivery="p-2")
    assert status == 202
    await asyncio.wait_for(uat.settle(), 15)
    env = await env_of(uat)
    assert (env.state, env.label) == ("running", "uat-staging")
    assert env.facts.session != throttled[0]


async def test_a_launch_cut_by_a_store_outage_tries_again_once_the_store_answers(
    uat: Bot, account: UatAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that failed mid-launch is back within seconds (the soak's 6 s outages): the launch
    is tried again once the store answers, not after the pause AWS throttling gets (a minute)."""
    failed = fail_the_first_launch(uat, monkeypatch, StoreUnavailable("UAT_DB is locked", "locked"))
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await asyncio.wait_for(uat.settle(), 15)
    env = await env_of(uat)
    [task] = account.tasks(desired="RUNNING")
    assert failed and env.state == "running" and task["startedBy"] == env.facts.session


async def test_a_label_switch_during_a_launch_runs_the_new_label_in_one_thread(
    uat: Bot, account: UatAccount, slack: SlackStub
) -> None:
    """The switch arrives while the first launch waits on Slack (a 429): two launches of one PR
    in one process, one after the other."""
    slack.fail("chat.postMessage", status=429, retry_after=1)
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"), delivery="q-1")
    assert status == 202
    await slack.wait_for(lambda s: s.calls_to("chat.postMessage"))  # launch 1 posts its card
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat-staging"), delivery="q-2")
    assert status == 202
    await uat.settle()
    env = await env_of(uat)
    assert (env.state, env.label) == ("running", "uat-staging")
    [task] = account.tasks(desired="RUNNING")
    assert task["startedBy"] == env.facts.session
    assert len(root_messages(slack)) == 1


async def test_a_reconcile_during_a_launch_does_not_run_it_twice(
    uat: Bot, account: UatAccount, slack: SlackStub
) -> None:
    """A reconcile (the watcher taking the lease) lands while a delivery's launch waits on a
    slow store round trip: it must not start the same session again."""
    environments = uat.runtime.services.environments
    store = uat.runtime.services.store
    real_hold = store.hold_lease

    async def slow_hold(name: str, holder: str, ttl_s: float) -> bool:
        if name.startswith("launch:"):
            await asyncio.sleep(0.2)
        return await real_hold(name, holder, ttl_s)

    store.hold_lease = slow_hold  # type: ignore[method-assign]
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await environments.reconcile()
    await uat.settle()
    tasks = account.tasks(desired="RUNNING")
    assert len(tasks) == 1, [t["startedBy"] for t in tasks]
    assert len(root_messages(slack)) == 1


# ---------------------------------------------------------------- AWS throttling and 5xx

THROTTLED = {"__type": "ThrottlingException", "message": "Rate exceeded"}
UNAVAILABLE = {"__type": "ServiceUnavailableException", "message": "Service Unavailable"}


@dataclass
class Fault:
    kind: str  # "throttle" (400), "unavailable" (503), "lost" (forwarded, then 503)
    times: int
    operation: str | None = None  # the X-Amz-Target's operation; None: any request


@dataclass
class AwsProxy(ReverseProxy):
    """A reverse proxy on 127.0.0.1 in front of moto that fails requests as AWS may."""

    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (operation, what happened)
    ran: dict[str, bytes] = field(default_factory=dict)  # RunTask's answers by clientToken

    def fail(self, kind: str, times: int, operation: str | None = None) -> None:
        self.faults.append(Fault(kind, times, operation))

    def outcomes(self, operation: str) -> list[str]:
        return [what for op, what in self.seen if op == operation]

    def _fault(self, operation: str) -> Fault | None:
        for fault in self.faults:
            if fault.operation in (None, operation):
                fault.times -= 1
                if not fault.times:
                    self.faults.remove(fault)
                return fault
        return None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        operation = request.headers.get("X-Amz-Target", "?").rsplit(".", 1)[-1]
        token = json.loads(body).get("clientToken") if operation == "RunTask" else None
        if token in self.ran:  # ECS answers a retried clientToken with the task it started
            self.seen.append((operation, "idempotent"))
            return web.Response(body=self.ran[token], content_type="application/x-amz-json-1.1")
        fault = self._fault(operation)
        if fault is not None and fault.kind != "lost":
            throttled = fault.kind == "throttle"
            self.seen.append((operation, fault.kind))
            error = THROTTLED if throttled else UNAVAILABLE
            return web.json_response(
                error,
                status=400 if throttled else 503,
                content_type="application/x-amz-json-1.1",
                headers={"x-amzn-ErrorType": str(error["__type"])},
            )
        answer = await self.forward(request, body)
        if token and answer.status == 200:
            self.ran[token] = answer.body
        if fault is not None:  # done upstream, but the answer never reaches the caller
            self.seen.append((operation, "lost"))
            return web.json_response(
                UNAVAILABLE, status=503, content_type="application/x-amz-json-1.1"
            )
        self.seen.append((operation, str(answer.status)))
        return answer.response()


@pytest.fixture
async def aws_proxy(account: UatAccount) -> AsyncIterator[AwsProxy]:
    proxy = AwsProxy(account.endpoint)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def proxied(
    account: UatAccount, containers: Containers, aws_proxy: AwsProxy, make_bot: BotFactory
) -> Bot:
    """A bot whose every AWS call goes through `aws_proxy`."""
    bot: Bot = await make_bot(**{**account.env(containers.url), "AWS_ENDPOINT_URL": aws_proxy.url})
    await bot.settle_startup()
    return bot


async def test_throttling_and_5xx_are_retried_and_one_task_starts(
    proxied: Bot, aws_proxy: AwsProxy, account: UatAccount, slack: SlackStub
) -> None:
    aws_proxy.seen.clear()  # what start-up asked
    aws_proxy.fail("throttle", 2)
    aws_proxy.fail("unavailable", 2)
    aws_proxy.fail("throttle", 1, operation="RunTask")
    aws_proxy.fail("unavailable", 1, operation="RunTask")
    started = time.monotonic()
    status, _ = await proxied.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await proxied.settle()
    print(f"launched in {time.monotonic() - started:.1f}s through {aws_proxy.seen}")
    assert [kind for _, kind in aws_proxy.seen[:4]] == ["throttle"] * 2 + ["unavailable"] * 2
    assert aws_proxy.outcomes("RunTask") == ["throttle", "unavailable", "200"]
    assert not aws_proxy.faults
    [task] = account.tasks(desired="RUNNING")
    env = await env_of(proxied)
    assert (env.state, env.task_arn) == ("running", task["taskArn"])
    assert len(root_messages(slack)) == 1


async def test_throttling_past_the_retry_budget_fails_the_card_with_awss_reason(
    proxied: Bot,
    aws_proxy: AwsProxy,
    account: UatAccount,
    slack: SlackStub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # botocore's own attempts (RETRIES: 6), with its sleeps scaled down from 1 s * 2^n
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.05)
    monkeypatch.setattr(launcher_module, "LAUNCH_RETRIES_S", ())  # no launch-level tries after
    aws_proxy.seen.clear()
    aws_proxy.fail("throttle", 50)
    status, _ = await proxied.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await proxied.settle()
    aws_proxy.faults.clear()
    # RETRIES' max_attempts=6 counts retries: botocore tries 7 times, then gives up
    assert aws_proxy.seen == [("ListTasks", "throttle")] * 7
    assert account.tasks() == []
    reason = (
        "AWS ListTasks failed (ThrottlingException): AWS is throttling requests; "
        "try again in a minute."
    )
    env = await env_of(proxied)
    assert (env.state, env.facts.reason) == ("failed", reason)
    [root] = root_messages(slack)
    assert root["text"].endswith("— failed") and reason in str(root["blocks"])
    [reply] = slack.thread(CHANNEL, root["ts"])
    assert reply["text"] == f"#2 failed: {reason}"
    said = json.dumps(slack.messages)
    assert "Traceback" not in said and "botocore" not in said
    assert not [r for r in caplog.records if r.name.startswith("bot") and r.exc_info]
    async with proxied.http.get(f"{proxied.url}/metrics") as response:
        metrics = await response.text()
    assert 'uat_aws_api_errors_total{code="ThrottlingException",method="ListTasks"} 1.0' in metrics


async def test_a_launch_throttled_past_botocores_retries_is_tried_again_and_starts(
    proxied: Bot,
    aws_proxy: AwsProxy,
    account: UatAccount,
    slack: SlackStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A throttling window longer than botocore's own attempts: the launch waits and resumes
    (the card never says failed), and one task starts."""
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.01)
    monkeypatch.setattr(launcher_module, "LAUNCH_RETRIES_S", (0.2, 0.2))
    aws_proxy.seen.clear()
    aws_proxy.fail("throttle", 10)  # botocore's 7 attempts, then 3 more for the second try
    status, _ = await proxied.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await proxied.settle()
    assert aws_proxy.outcomes("ListTasks")[:10] == ["throttle"] * 10
    assert not aws_proxy.faults
    [task] = account.tasks(desired="RUNNING")
    env = await env_of(proxied)
    assert (env.state, env.task_arn) == ("running", task["taskArn"])
    [root] = root_messages(slack)
    assert root["text"].endswith("— running")
    assert [r["text"] for r in slack.thread(CHANNEL, root["ts"]) if " failed" in r["text"]] == []


async def test_a_launch_refused_for_good_is_not_tried_again(
    proxied: Bot, aws_proxy: AwsProxy, account: UatAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AWS refusal that waiting cannot mend (no image to run) fails the card at once."""
    monkeypatch.setattr(launcher_module, "LAUNCH_RETRIES_S", (30.0,))
    fresh_repository(account.ecr)  # no :latest to run
    started = time.monotonic()
    status, _ = await proxied.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await proxied.settle()
    env = await env_of(proxied)
    assert env.state == "failed" and time.monotonic() - started < 20
    assert account.tasks() == []


async def test_a_run_task_retried_after_its_answer_was_lost_starts_one_task(
    proxied: Bot, aws_proxy: AwsProxy, account: UatAccount
) -> None:
    """ECS started the task but its answer was lost (a 503 after the fact): botocore retries,
    and the retry must not start a second task. It carries the first one's clientToken, which
    ECS (the proxy, here: moto ignores clientToken) answers with the task already started."""
    aws_proxy.fail("lost", 1, operation="RunTask")
    status, _ = await proxied.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await proxied.settle()
    assert aws_proxy.outcomes("RunTask") == ["lost", "idempotent"]
    [task] = account.tasks(desired="RUNNING")
    env = await env_of(proxied)
    assert (env.state, env.task_arn) == ("running", task["taskArn"])


async def test_bug_a_launch_lease_renewal_that_fails_once_fails_the_launch(
    uat: Bot, account: UatAccount, slack: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was a bug (bot/environments.py, `_keep_lease`): one renewal of the launch lease that
    fails (the store throttled past botocore's retries, a network blip) ends the heartbeat
    task with that error, and `launch()` re-raises it from its `finally` (`await heartbeat`)
    after `_launch` succeeded: the launch is reported failed and its running task stopped."""
    monkeypatch.setattr(launcher_module, "LAUNCH_LEASE_S", 0.3)  # renewals every 0.1 s
    store = uat.runtime.services.store
    real_hold = store.hold_lease
    calls: list[str] = []

    async def renewal_fails_once(name: str, holder: str, ttl_s: float) -> bool:
        if name.startswith("launch:"):
            calls.append(name)
            if len(calls) == 2:  # the first renewal
                raise AwsError("AWS DynamoDB UpdateItem (lease) failed: a blip.", "Blip")
        return await real_hold(name, holder, ttl_s)

    store.hold_lease = renewal_fails_once  # type: ignore[method-assign]
    slack.fail("chat.postMessage", status=429, retry_after=1)  # the launch takes a second
    status, _ = await uat.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await uat.settle()
    assert len(calls) >= 2
    env = await env_of(uat)
    assert (env.state, env.facts.reason) == ("running", "")
    assert len(account.tasks(desired="RUNNING")) == 1


# ---------------------------------------------------------------- replicas on one table

POLL_S = 0.5


@pytest.fixture
def replica_settings(account: UatAccount, containers: Containers) -> dict[str, str]:
    return {
        **account.env(containers.url),
        "UAT_STORE": "dynamodb",
        "UAT_DYNAMODB_TABLE": "uat-bot-replicas",
        "UAT_POLL_SECONDS": str(POLL_S),
    }


def environments_of(bot: Bot) -> Environments:
    return bot.runtime.services.environments


def rounds(bot: Bot) -> int:
    """The watcher rounds a replica ran, as its /metrics counts them."""
    registry = environments_of(bot).metrics.registry
    return int(registry.get_sample_value("uat_poll_duration_seconds_count") or 0)


async def test_two_replicas_on_one_table_act_once_and_hand_the_watcher_over(
    replica_settings: dict[str, str],  # before make_bot: moto outlives the bots
    make_bot: BotFactory,
    account: UatAccount,
    slack: SlackStub,
) -> None:
    replicas: list[Bot] = [await make_bot(**replica_settings) for _ in range(2)]
    await eventually(lambda: any(rounds(r) for r in replicas), 5)

    # the same delivery to both, then another one for the same PR: one task, one thread
    payload = pr_event("labeled", "uat")
    answers = await asyncio.gather(
        *(r.github("pull_request", payload, delivery="rep-1") for r in replicas)
    )
    assert {status for status, _ in answers} <= {200, 202}, answers
    status, _ = await replicas[1].github("pull_request", payload, delivery="rep-2")
    assert status == 202
    await asyncio.gather(*(r.settle() for r in replicas))
    assert len(account.tasks()) == 1
    assert len(root_messages(slack)) == 1
    env = await env_of(replicas[0])
    assert (env.state, env.task_arn) == ("running", account.tasks()[0]["taskArn"])

    # either answers /uat status from the shared table
    for replica in replicas:
        await replica.slash("status")
        await replica.settle()
        assert f"{REPO}#2" in str(slack.responses[-1].body["blocks"])

    # an image lock taken through one replica is held against the other
    lock = await replicas[0].runtime.services.store.acquire_lock(
        "images", "U0SOMEONE", "promote :staging to :latest", 60
    )
    await replicas[1].slash("lock x", user=DEPLOYER)
    await replicas[1].settle()
    assert slack.responses[-1].body["text"] == slack_ui.lock_held(lock)

    # one replica polls ECS at a time
    polls = [rounds(r) for r in replicas]
    described = [environments_of(r).ecs.calls.get("DescribeTasks", 0) for r in replicas]
    await asyncio.sleep(4 * POLL_S)
    more_polls = [rounds(r) - n for r, n in zip(replicas, polls, strict=True)]
    more_described = [
        environments_of(r).ecs.calls.get("DescribeTasks", 0) - n
        for r, n in zip(replicas, described, strict=True)
    ]
    assert sorted(more_polls)[0] == 0 and sorted(more_polls)[1] >= 2, more_polls
    assert sorted(more_described)[0] == 0 and sorted(more_described)[1] >= 2, more_described

    # the holder dies without a word (its tasks cancelled, the lease left as it was): the
    # other takes over once the lease lapses, poll + 1 s after its last renewal
    holder, other = replicas if more_polls[0] else replicas[::-1]
    await holder.runtime.services.tasks.close()
    died = time.monotonic()
    before = rounds(other)
    await eventually(lambda: rounds(other) > before, 10, 0.01)
    took = time.monotonic() - died
    print(f"the other replica polled {took:.2f}s after the holder died")
    assert took <= 2 * POLL_S + 1.0 + 1.0  # the lease lapses poll + 1 s after renewal
    env = await env_of(other)
    assert env.state == "running" and len(account.tasks(desired="RUNNING")) == 1


async def test_a_label_switch_landing_on_another_replica_mid_launch_is_launched(
    replica_settings: dict[str, str],
    make_bot: BotFactory,
    account: UatAccount,
    slack: SlackStub,
) -> None:
    """Replica A launches the PR (its card post waiting on a Slack 429) when the switch to
    uat-staging lands on replica B: B's launch waits for A's lease, then runs."""
    a: Bot = await make_bot(**replica_settings)
    b: Bot = await make_bot(**replica_settings)
    slack.fail("chat.postMessage", status=429, retry_after=1)
    status, _ = await a.github("pull_request", pr_event("labeled", "uat"), delivery="sw-1")
    assert status == 202
    await slack.wait_for(lambda s: s.calls_to("chat.postMessage"))  # A holds the lease
    status, _ = await b.github("pull_request", pr_event("labeled", "uat-staging"), delivery="sw-2")
    assert status == 202
    await asyncio.gather(a.settle(), b.settle())
    env = await env_of(a)
    assert (env.state, env.label) == ("running", "uat-staging")
    [task] = account.tasks(desired="RUNNING")
    assert task["startedBy"] == env.facts.session
    assert len(root_messages(slack)) == 1


# ---------------------------------------------------------------- a container that hangs


@pytest.fixture
async def hanging_container() -> AsyncIterator[str]:
    """A stand-in whose /health, /version and /status take 30 s to answer."""
    released = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), 30)
        return web.json_response({"ready": True, "phase": "ready"})

    app = web.Application()
    app.router.add_get("/pr/{pr}/{what}", hang)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/pr/{{pr}}"
    released.set()
    await runner.cleanup()


async def test_a_hanging_container_costs_a_poll_three_seconds_not_thirty(
    account: UatAccount, hanging_container: str, make_bot: BotFactory, slack: SlackStub
) -> None:
    bot: Bot = await make_bot(**account.env(hanging_container))
    await bot.settle_startup()
    status, _ = await bot.github("pull_request", pr_event("labeled", "uat"))
    assert status == 202
    await bot.settle()
    assert (await env_of(bot)).state == "running"

    started = time.monotonic()
    await environments_of(bot).poll()
    took = time.monotonic() - started
    assert 2.5 < took < 5, took  # HEALTH_TIMEOUT_S (3 s), once
    env = await env_of(bot)
    assert (env.state, env.facts.health) == ("running", None)

    started = time.monotonic()
    await bot.slash("status PR-2")
    answer = await slack.wait_for(lambda s: s.responses, timeout=8)
    took = time.monotonic() - started
    assert took < 5, took  # /health, /version and /status probed together
    detail = str(answer[-1].body)
    assert "not answering on /health" in detail and "RUNNING" in detail
