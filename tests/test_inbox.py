"""The durable inbox: what Slack was told was received (acked) is done or answered, even when the
bot is SIGKILLed right after the ack; none twice. The real `uat-bot serve` runs as a subprocess
against moto, the Slack stub and stand-in containers, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.slack import inbox as inbox_module
from bot.slack import slack_ui
from bot.slack.inbox import AnsweredOnce, Inbox, Invocation
from bot.slack.listeners.inbox import take_over
from bot.store import Environment, Facts, InboxItem, SqliteStore, State, StoreUnavailable
from bot.store import sqlite as sqlite_store
from tests.harness.bot import CHANNEL, DEPLOYER, DEVELOPER, SIGNING_SECRET, Bot, BotFactory
from tests.harness.processes import BotProcess, deliver, eventually, read_store
from tests.harness.pull_requests import pr_event
from tests.harness.signing import slack_headers, slash_command_body
from tests.harness.slack_stub import SlackStub
from tests.test_store_failures import locked_for

LIVE = ("starting", "provisioning", "running", "ready")
REPO = "Codertocat/Hello-World"


async def slash(
    http: aiohttp.ClientSession, url: str, slack: SlackStub, text: str, user: str
) -> tuple[str, int]:
    """A signed `/uat <text>`: its response_url's id, and the HTTP status of its ack."""
    response_url = slack.new_response_url()
    body = slash_command_body(text, user_id=user, channel_id=CHANNEL, response_url=response_url)
    headers = slack_headers(SIGNING_SECRET, body)
    async with http.post(f"{url}/slack/events", data=body, headers=headers) as response:
        await response.read()
        return response_url.rsplit("/", 1)[-1], response.status


async def test_commands_acked_before_a_sigkill_are_done_or_answered_after_restart_none_twice(
    bot_process: BotProcess, slack: SlackStub
) -> None:
    db = bot_process.env["UAT_DB"]
    await bot_process.start()
    async with aiohttp.ClientSession() as http:
        for pr in (2, 3, 4, 5):
            payload = pr_event("labeled", "uat", number=pr)
            assert await deliver(http, bot_process.url, payload, f"inbox-{pr}") == 202
        await eventually(
            lambda: all(
                read_store(db).get(pr, {}).get("state") == "running" for pr in (2, 3, 4, 5)
            ),
            30,
        )
        commands: list[tuple[str, str]] = [
            ("stop PR-2", DEVELOPER),
            ("stop PR-3", DEVELOPER),
            ("extend PR-4 24", DEVELOPER),
            ("extend PR-5 24", DEVELOPER),
            *((f"stop PR-{100 + i}", DEVELOPER) for i in range(40)),
            *(("images", DEVELOPER) for _ in range(4)),
            *(("staging", DEPLOYER) for _ in range(2)),
        ]
        sent = await asyncio.gather(
            *(slash(http, bot_process.url, slack, text, user) for text, user in commands)
        )
        await bot_process.kill()  # right after the last ack
        killed_at = time.time()
        assert {status for _, status in sent} == {200}
        answered_before = len({r.url_id for r in slack.responses})
        urls = {url: text for (url, _), (text, _) in zip(sent, commands, strict=True)}

        await bot_process.start()

        def every_one_answered() -> bool:
            return urls.keys() <= {r.url_id for r in slack.responses}

        await eventually(every_one_answered, 40)
        await asyncio.sleep(2)  # anything said twice would come now
    answers = Counter(r.url_id for r in slack.responses if r.url_id in urls)
    interrupted = [r for r in slack.responses if r.body.get("text", "").startswith("I restarted")]
    print(
        f"\n{len(commands)} commands acked, SIGKILL right after the last ack: "
        f"{answered_before} answered before the kill, all {len(urls)} answered after restart, "
        f"{len(interrupted)} told they were interrupted"
    )
    twice = {urls[u]: n for u, n in answers.items() if n > 1 and urls[u] != "staging"}
    assert not twice, twice
    staging_told = Counter(r.url_id for r in interrupted if urls.get(r.url_id) == "staging")
    assert all(n == 1 for n in staging_told.values())
    # what the answers said took effect
    envs = read_store(db)
    assert envs[2]["state"] in ("stopping", "stopped") and envs[3]["state"] in (
        "stopping",
        "stopped",
    )
    for pr in (4, 5):
        assert envs[pr]["data"]["idle_until"] >= killed_at + 23 * 3600
    # nothing the bot posted was posted twice
    posts = Counter(
        (c.params.get("channel"), c.params.get("thread_ts"), c.params.get("text"))
        for c in slack.calls
        if c.method in ("chat.postMessage", "chat.postEphemeral")
    )
    assert not [p for p, n in posts.items() if n > 1]
    assert await bot_process.terminate() == 0


async def test_an_abandoned_command_too_old_for_its_response_url_is_told_in_the_channel_once(
    make_bot: BotFactory,
) -> None:
    bot: Bot = await make_bot()
    store = bot.runtime.services.store
    response_url = bot.slack.new_response_url()
    invocation = Invocation(
        "command", DEVELOPER, CHANNEL, response_url=response_url, text="staging main"
    )
    received = time.time() - 45 * 60  # a replica died 45 minutes ago, mid-build
    item = InboxItem("old1", "command", invocation.to_json(), received, "dead", received + 10)
    await store.inbox_put(item)
    took = await asyncio.gather(take_over(bot.runtime), take_over(bot.runtime))
    assert sum(took) <= 1  # each item is claimed by one taker (the bot's own loop may win)
    text = slack_ui.interrupted_in_channel(DEVELOPER, invocation.what, slack_ui.INTERRUPTED_STALE)
    await bot.slack.wait_for(lambda s: any(m["text"] == text for m in s.messages.get(CHANNEL, [])))
    await asyncio.sleep(0.2)
    await take_over(bot.runtime)
    assert [m["text"] for m in bot.slack.messages[CHANNEL]].count(text) == 1
    assert await store.inbox_items() == []
    assert not [r for r in bot.slack.responses if response_url.endswith(f"/{r.url_id}")]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def _failing() -> None:
    raise StoreUnavailable("UAT_DB is locked", "locked")


async def test_an_item_whose_run_failed_is_let_go_and_taken_again_once_it_lapses(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "uat.db")
    await store.open()
    try:
        clock = Clock()
        inbox = Inbox(store, clock)
        invocation = Invocation("command", DEVELOPER, CHANNEL, text="extend PR-4")
        key = (await inbox.receive(invocation)).key
        with pytest.raises(StoreUnavailable):
            await inbox.finish(key, _failing())  # not even its answer could be recorded
        assert len(inbox) == 0  # no longer renewed by this replica
        clock.now += inbox_module.LEASE_S + 1
        assert [item.key for item in await inbox.abandoned()] == [key]  # even by itself
    finally:
        await store.close()


class FailingClaims(SqliteStore):
    """A real SQLite store whose inbox claims fail (the store down) from the `fail_from`th on."""

    def __init__(self, path: Path, fail_from: int) -> None:
        super().__init__(path)
        self.claims = 0
        self.fail_from = fail_from

    async def inbox_claim(self, key: str, holder: str, until: float) -> bool:
        self.claims += 1
        if self.claims >= self.fail_from:
            raise StoreUnavailable("UAT_DB is locked", "locked")
        return await super().inbox_claim(key, holder, until)


async def test_a_takeover_cut_short_by_the_store_resumes_what_it_claimed_and_retries_the_rest(
    tmp_path: Path,
) -> None:
    store = FailingClaims(tmp_path / "uat.db", fail_from=2)
    await store.open()
    try:
        invocation = Invocation("command", DEVELOPER, CHANNEL, text="extend PR-4")
        for key in ("k1", "k2"):
            await store.inbox_put(InboxItem(key, "command", invocation.to_json(), 1.0, "dead", 2.0))
        inbox = Inbox(store)
        assert [item.key for item in await inbox.abandoned()] == ["k1"]  # k2's claim failed
        assert len(inbox) == 1  # only k1 is held (and will be renewed) by this replica
        store.fail_from = 99  # the store is back
        assert [item.key for item in await inbox.abandoned()] == ["k2"]
    finally:
        await store.close()


class SlowRenewals(SqliteStore):
    """A real SQLite store whose first inbox claim (a renewal) waits for `go` (a busy store)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.stalled: str | None = None
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    async def inbox_claim(self, key: str, holder: str, until: float) -> bool:
        if self.stalled is None:
            self.stalled = key
            self.waiting.set()
            await self.go.wait()
        return await super().inbox_claim(key, holder, until)


async def test_an_item_let_go_while_a_slow_renewal_round_runs_is_not_renewed_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SlowRenewals(tmp_path / "uat.db")
    await store.open()
    monkeypatch.setattr(inbox_module, "RENEW_S", 0.01)
    clock = Clock()
    keeper = None
    try:
        invocation = Invocation("command", DEVELOPER, CHANNEL, text="extend PR-4")
        inbox = Inbox(store, clock)
        keys = {(await inbox.receive(invocation)).key for _ in range(2)}
        keeper = asyncio.create_task(inbox.keep())
        await asyncio.wait_for(store.waiting.wait(), 5)  # a round is renewing, slowly
        [late] = keys - {store.stalled}
        with pytest.raises(StoreUnavailable):
            await inbox.finish(late, _failing())  # its run failed: let go
        clock.now += inbox_module.LEASE_S + 1
        store.go.set()  # the store answers again
        await asyncio.sleep(0.1)
        other = Inbox(store, clock)  # the other replica's next takeover round
        assert late in [item.key for item in await other.abandoned()]
    finally:
        if keeper is not None:
            keeper.cancel()
        await store.close()


class CountedClaims(SqliteStore):
    """A real SQLite store whose inbox claims each take a while (a slow store), counted."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.in_flight = 0
        self.most_in_flight = 0

    async def inbox_claim(self, key: str, holder: str, until: float) -> bool:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
            return await super().inbox_claim(key, holder, until)
        finally:
            self.in_flight -= 1


async def test_a_takeover_round_claims_its_lapsed_items_at_once_not_one_after_another(
    tmp_path: Path,
) -> None:
    store = CountedClaims(tmp_path / "uat.db")
    await store.open()
    try:
        invocation = Invocation("command", DEVELOPER, CHANNEL, text="extend PR-4")
        keys = ["k1", "k2", "k3"]
        for key in keys:
            await store.inbox_put(InboxItem(key, "command", invocation.to_json(), 1.0, "dead", 2.0))
        inbox = Inbox(store)
        assert sorted(item.key for item in await inbox.abandoned()) == keys
        assert store.most_in_flight == len(keys)
        assert len(inbox) == len(keys)  # all three held (and renewed) by this replica
    finally:
        await store.close()


async def test_an_answer_given_whose_record_failed_is_not_a_failure_of_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "uat.db"
    store = SqliteStore(db)
    await store.open()
    try:
        await store.db.execute("PRAGMA busy_timeout=0")
        monkeypatch.setattr(sqlite_store, "BUSY_RETRIES", (0.01, 0.01))
        given: list[str] = []

        async def reply(text: str, blocks: Any = None, **_: Any) -> None:
            given.append(text)

        answer = AnsweredOnce(store, "k1", reply)
        with locked_for(db, 1.0):
            await answer(slack_ui.NOT_RECORDED)
        assert given == [slack_ui.NOT_RECORDED]
    finally:
        await store.close()


async def test_a_stop_resumed_after_its_pr_was_labelled_again_says_so_and_stops_nothing(
    make_bot: BotFactory,
) -> None:
    bot: Bot = await make_bot()
    store = bot.runtime.services.store
    received = time.time() - 15  # acked, then its replica died before running it
    relabelled = Facts(session="pr6-0001", wanted_at=received + 5)  # labelled 5 s after
    env = Environment(REPO, 6, State.RUNNING, "uat", "arn:aws:ecs:task/uat/6", facts=relabelled)
    await store.save_environment(env)
    response_url = bot.slack.new_response_url()
    url_id = response_url.rsplit("/", 1)[-1]
    invocation = Invocation("command", DEVELOPER, CHANNEL, response_url=response_url, text="stop 6")
    item = InboxItem("stop1", "command", invocation.to_json(), received, "dead", received + 10)
    await store.inbox_put(item)
    await take_over(bot.runtime)
    await bot.slack.wait_for(lambda s: any(r.url_id == url_id for r in s.responses))
    [answer] = [r.body["text"] for r in bot.slack.responses if r.url_id == url_id]
    assert answer == slack_ui.not_stopped_relaunched(env)
    stored = await store.get_environment(REPO, 6)
    assert stored is not None and stored.state == State.RUNNING


async def test_a_takeover_resumes_its_items_together_not_one_after_another(
    make_bot: BotFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica killed after acking a burst leaves many items; telling each user takes a few
    round trips to a store that is slow just then. One after another, the soak's backlog took
    minutes and its users were still waiting when it stopped looking."""
    bot: Bot = await make_bot()
    store = bot.runtime.services.store
    in_flight = most_in_flight = 0
    real_claimed = store.claimed

    async def slow_claimed(key: str) -> bool:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            await asyncio.sleep(0.3)  # a slow store
            return await real_claimed(key)
        finally:
            in_flight -= 1

    monkeypatch.setattr(store, "claimed", slow_claimed)
    urls = [bot.slack.new_response_url() for _ in range(4)]
    received = time.time() - 60  # a replica died a minute ago, mid-build
    for n, url in enumerate(urls):
        invocation = Invocation("command", DEVELOPER, CHANNEL, response_url=url, text="staging x")
        item = InboxItem(f"k{n}", "command", invocation.to_json(), received, "dead", received + 10)
        await store.inbox_put(item)
    await take_over(bot.runtime)
    await eventually(lambda: not in_flight, 5)
    assert most_in_flight == len(urls)
    assert await store.inbox_items() == []
    told = {r.url_id for r in bot.slack.responses}
    assert all(url.rsplit("/", 1)[-1] in told for url in urls)
