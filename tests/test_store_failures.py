"""A store that cannot be used says so.

At start, `uat-bot serve` with a corrupt, truncated, read-only, locked or full `UAT_DB`, or a
DynamoDB table that is not the bot's, prints one line naming it, the cause and what to do, and
exits with status 1 within 5 s (each case is the real CLI in a subprocess). While running,
`/healthz` answers 503 with the reason when the store or Slack fails and `/livez` stays 200; a
write SQLite answers "busy" is retried with backoff, and an operation that could not be recorded
is said to its user.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from bot import gateway_text, health
from bot.config import load_settings
from bot.store import (
    Environment,
    InboxItem,
    SqliteStore,
    State,
    StoreUnavailable,
    dynamodb_table,
)
from bot.store import sqlite as sqlite_store
from bot.store.dynamodb import DynamoStore
from tests.harness.bot import DEPLOYER, Bot, bot_env
from tests.harness.processes import Exited, eventually, serve_until_exit
from tests.harness.slack_stub import SlackStub

STARTS_WITHIN_S = 5.0


async def made_store(path: Path) -> None:
    """A real store file, as a bot that ran and stopped leaves it."""
    store = SqliteStore(path)
    await store.open()
    await store.save_environment(Environment(repo="acme/web", pr=7, state=State.READY))
    await store.close()


# A log record: "2026-11-30 07:21:54,332 INFO bot.app: ..." (start-up's sign-in with Slack)
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO [\w.]+: ")


def said_once(exited: Exited, within_s: float = STARTS_WITHIN_S) -> str:
    """The one line a refused start printed (besides INFO log records), having stopped with
    status 1 within 5 s."""
    assert exited.status == 1, exited.stderr
    said = [line for line in exited.stderr_lines if not LOG_RECORD.match(line)]
    assert len(said) == 1, exited.stderr
    assert "Traceback" not in exited.stderr + exited.stdout
    assert exited.seconds < within_s, f"{exited.seconds:.1f}s"
    return said[0]


def fix(problem: str) -> str:
    return f": {gateway_text.STORE_FIXES[problem]}."


async def test_serve_with_a_corrupt_uat_db_says_so_in_one_line_and_exits_1(
    slack: SlackStub, tmp_path: Path
) -> None:
    db = tmp_path / "uat-bot.db"
    db.write_bytes(b"this is no database; " * 500)
    line = said_once(await serve_until_exit(bot_env(slack, tmp_path), tmp_path))
    assert line == gateway_text.sqlite_unusable(
        str(db), gateway_text.STORE_CORRUPT, "file is not a database"
    )


async def test_serve_with_a_truncated_uat_db_says_it_is_corrupt(
    slack: SlackStub, tmp_path: Path
) -> None:
    db = tmp_path / "uat-bot.db"
    await made_store(db)
    with db.open("r+b") as file:
        file.truncate(db.stat().st_size // 2)
    line = said_once(await serve_until_exit(bot_env(slack, tmp_path), tmp_path))
    assert line.startswith(f"UAT_DB {db} {gateway_text.STORE_CORRUPT} (")
    assert line.endswith(fix(gateway_text.STORE_CORRUPT))


CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3
PR_CAPBSET_DROP = 24


def without_root_overrides() -> None:
    """In the child: as root, give up the capabilities that ignore file modes (dropped from the
    bounding set, they are gone after exec), so a read-only file is read-only to it too."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    modes = {path: path.stat().st_mode for path in paths}
    try:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


async def test_serve_with_a_read_only_uat_db_says_it_cannot_be_written(
    slack: SlackStub, tmp_path: Path
) -> None:
    folder = tmp_path / "state"
    db = folder / "uat-bot.db"
    await made_store(db)
    env = bot_env(slack, tmp_path, UAT_DB=str(db))
    with read_only(db, folder):
        exited = await serve_until_exit(env, tmp_path, preexec_fn=without_root_overrides)
    line = said_once(exited)
    assert line.startswith(f"UAT_DB {db} {gateway_text.STORE_READ_ONLY} (")
    assert line.endswith(fix(gateway_text.STORE_READ_ONLY))


HOLD_EXCLUSIVE = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_exclusively(db: Path) -> Iterator[None]:
    """Another process holding the file with BEGIN EXCLUSIVE until the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_EXCLUSIVE, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"locked\n"
        yield
    finally:
        child.kill()
        child.wait(10)


async def test_serve_with_a_uat_db_another_process_holds_says_it_is_locked(
    slack: SlackStub, tmp_path: Path
) -> None:
    db = tmp_path / "uat-bot.db"
    await made_store(db)
    with held_exclusively(db):
        exited = await serve_until_exit(bot_env(slack, tmp_path), tmp_path)
    line = said_once(exited)
    assert line == gateway_text.sqlite_unusable(
        str(db), gateway_text.STORE_LOCKED, "database is locked"
    )


def small_file_limit() -> None:
    """In the child: no file may grow past 1 KiB (a full disk, as the child sees it)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


async def test_serve_with_uat_db_on_a_full_disk_says_it_cannot_grow(
    slack: SlackStub, tmp_path: Path
) -> None:
    db = tmp_path / "uat-bot.db"
    await made_store(db)
    env = bot_env(slack, tmp_path)
    line = said_once(await serve_until_exit(env, tmp_path, preexec_fn=small_file_limit))
    assert line.startswith(f"UAT_DB {db} {gateway_text.STORE_FULL} (")
    assert line.endswith(fix(gateway_text.STORE_FULL))


async def test_serve_with_a_dynamodb_table_that_is_not_the_bots_names_it_in_one_line(
    slack: SlackStub, tmp_path: Path, aws_env: dict[str, str]
) -> None:
    boto3.client("dynamodb", endpoint_url=aws_env["AWS_ENDPOINT_URL"]).create_table(
        TableName="someone-elses",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    env = bot_env(
        slack, tmp_path, **aws_env, UAT_STORE="dynamodb", UAT_DYNAMODB_TABLE="someone-elses"
    )
    line = said_once(await serve_until_exit(env, tmp_path))
    assert line == gateway_text.dynamodb_unusable(
        "someone-elses", gateway_text.not_the_bots_table("someone-elses")
    )


async def test_the_console_on_aws_with_a_corrupt_uat_db_says_so_in_one_line_and_exits_1(
    tmp_path: Path, aws_env: dict[str, str]
) -> None:
    db = tmp_path / "console.db"
    db.write_bytes(b"this is no database; " * 500)
    env = {**aws_env, "UAT_DB": str(db)}
    exited = await serve_until_exit(env, tmp_path, command=("console", "--aws"))
    # the console asks AWS who it is (STS) before it opens the store: a little longer
    assert said_once(exited, within_s=2 * STARTS_WITHIN_S) == gateway_text.sqlite_unusable(
        str(db), gateway_text.STORE_CORRUPT, "file is not a database"
    )


# While running: /healthz and /livez


async def get(bot: Bot, path: str) -> tuple[int, dict[str, Any]]:
    async with bot.http.get(f"{bot.url}{path}") as response:
        return response.status, await response.json()


async def test_healthz_is_503_with_the_reason_while_slack_refuses_the_token_and_livez_stays_200(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await get(bot, "/healthz") == (
        200,
        {"ok": True, "store": "ok", "slack": "ok", "tasks": 0},
    )
    monkeypatch.setattr(health, "SLACK_TTL_S", 0.0)
    bot.slack.token = "xoxb-revoked-meanwhile"
    status, body = await get(bot, "/healthz")
    assert status == 503
    assert body["slack"] == "Slack refuses the bot token (invalid_auth)"
    assert body["store"] == "ok" and body["ok"] is False
    assert await get(bot, "/livez") == (200, {"ok": True})


async def test_healthz_is_503_while_another_process_holds_the_store_and_200_once_it_lets_go(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "STORE_TTL_S", 0.0)
    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 1.0)
    with held_exclusively(Path(bot.settings.uat_db)):
        status, body = await get(bot, "/healthz")
        assert await get(bot, "/livez") == (200, {"ok": True})
    assert (status, body["store"], body["slack"]) == (503, "no answer in 1s", "ok")
    for _ in range(100):  # the probe still waiting on the lock finishes first
        status, body = await get(bot, "/healthz")
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert (status, body["store"]) == (200, "ok")


async def test_the_store_probe_is_cached_for_a_few_seconds(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = bot.runtime.services.store
    pings = 0
    real_ping = store.ping

    async def counted() -> None:
        nonlocal pings
        pings += 1
        await real_ping()

    monkeypatch.setattr(store, "ping", counted)
    for _ in range(20):
        assert (await get(bot, "/healthz"))[0] == 200
    assert pings <= 1


# Writes SQLite answers "busy": retried, and else said


@contextlib.contextmanager
def locked_for(db: Path, seconds: float) -> Iterator[None]:
    """Another connection holds the file exclusively for `seconds` (from a thread)."""
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(seconds, lambda: other.execute("COMMIT"))
    timer.start()
    try:
        yield
    finally:
        timer.join()
        other.close()


async def impatient_store(path: Path) -> SqliteStore:
    """A store whose SQLite gives up on a lock at once, so only our retries wait."""
    store = SqliteStore(path)
    await store.open()
    await store.db.execute("PRAGMA busy_timeout=0")
    return store


async def test_a_write_sqlite_answers_busy_is_retried_until_the_lock_is_released(
    tmp_path: Path,
) -> None:
    store = await impatient_store(tmp_path / "uat-bot.db")
    try:
        with locked_for(tmp_path / "uat-bot.db", 0.3):
            assert await store.claim("delivery-1", "pull_request") is True
        assert await store.claimed("delivery-1")
    finally:
        await store.close()


async def test_a_write_still_busy_after_the_retries_is_store_unavailable_naming_uat_db(
    tmp_path: Path,
) -> None:
    db = tmp_path / "uat-bot.db"
    store = await impatient_store(db)
    try:
        long_enough = sum(sqlite_store.BUSY_RETRIES) * 2 + 0.5
        with locked_for(db, long_enough), pytest.raises(StoreUnavailable) as failed:
            await store.claim("delivery-1", "pull_request")
        assert failed.value.line == gateway_text.sqlite_unusable(
            str(db), gateway_text.STORE_LOCKED, "database is locked"
        )
    finally:
        await store.close()


async def test_a_command_the_inbox_cannot_store_is_acked_as_not_recorded_and_not_run(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.slack import slack_ui

    store = bot.runtime.services.store
    assert isinstance(store, SqliteStore)
    await store.db.execute("PRAGMA busy_timeout=0")
    monkeypatch.setattr(sqlite_store, "BUSY_RETRIES", (0.01, 0.01))
    with locked_for(Path(bot.settings.uat_db), 1.0):
        status, body = await bot.slash("lock release freeze", user=DEPLOYER)
    assert status == 200
    assert slack_ui.NOT_RECORDED in body, body
    await asyncio.sleep(0.5)  # nothing was started that could still take the lock
    assert await store.get_lock("images") is None
    assert await store.inbox_items() == []


async def test_a_command_stored_too_late_for_its_ack_is_acked_as_not_recorded_and_never_run(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is locked longer than Slack waits for an ack, and SQLite's own wait lands the
    write after the ack: the ack says it was not recorded, so the item stored late is removed
    at once instead of being taken over and run (the soak's "#208 stopped" by a /uat stop
    whose ack Slack never got)."""
    from bot.slack import inbox as inbox_module
    from bot.slack import slack_ui
    from bot.slack.listeners.inbox import take_over

    store = bot.runtime.services.store
    assert isinstance(store, SqliteStore)
    monkeypatch.setattr(inbox_module, "RECEIVE_S", 0.3)
    monkeypatch.setattr(inbox_module, "LEASE_S", 0.1)  # a late item is up for takeover at once
    stored: list[str] = []
    real_put = store.inbox_put

    async def put(item: InboxItem) -> None:
        await real_put(item)
        stored.append(item.key)

    monkeypatch.setattr(store, "inbox_put", put)
    with locked_for(Path(bot.settings.uat_db), 1.0):
        status, body = await bot.slash("lock release freeze", user=DEPLOYER)
        assert status == 200
        assert slack_ui.NOT_RECORDED in body, body
    await eventually(lambda: len(stored) == 1, 5)  # SQLite's busy wait stored it after all
    for _ in range(50):
        if not await store.inbox_items():
            break
        await asyncio.sleep(0.05)
    assert await store.inbox_items() == []
    await take_over(bot.runtime)  # its lease (LEASE_S, patched short) has long lapsed
    await asyncio.sleep(0.3)
    assert await store.get_lock("images") is None


async def test_a_click_the_inbox_cannot_store_is_answered_as_not_recorded(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.slack import action_ids, slack_ui

    store = bot.runtime.services.store
    assert isinstance(store, SqliteStore)
    await store.db.execute("PRAGMA busy_timeout=0")
    monkeypatch.setattr(sqlite_store, "BUSY_RETRIES", (0.01, 0.01))
    with locked_for(Path(bot.settings.uat_db), 1.0):
        answers = await bot.click(action_ids.ENV_EXTEND, "{}", user=DEPLOYER)
    assert [a.body["text"] for a in answers] == [slack_ui.NOT_RECORDED]


async def test_a_command_whose_own_write_is_not_recorded_tells_its_user_so(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.slack import slack_ui

    store = bot.runtime.services.store
    assert isinstance(store, SqliteStore)
    monkeypatch.setattr(bot.runtime.dispatcher, "inbox", None)  # only the command's own write
    await store.db.execute("PRAGMA busy_timeout=0")
    monkeypatch.setattr(sqlite_store, "BUSY_RETRIES", (0.01, 0.01))
    with locked_for(Path(bot.settings.uat_db), 1.0):
        status, _ = await bot.slash("lock release freeze", user=DEPLOYER)
        await bot.slack.wait_for(lambda s: s.responses, timeout=5)
    assert status == 200
    assert [r.body["text"] for r in bot.slack.responses] == [slack_ui.NOT_RECORDED]
    assert await store.get_lock("images") is None


# DynamoDB throttling: botocore retries it with backoff; past its attempts, StoreUnavailable

THROTTLED = json.dumps(
    {
        "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "message": "The level of configured provisioned throughput for the table was exceeded.",
    }
).encode()


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


UNAVAILABLE = json.dumps(
    {"__type": "com.amazonaws.dynamodb.v20120810#ServiceUnavailableException", "message": ""}
).encode()


def throttle(client: Any, times: int, answer: bytes = THROTTLED, status: int = 400) -> list[str]:
    """The next `times` PutItem requests get DynamoDB's throttling answer (or `answer`, sent as
    if by AWS, before the request leaves); which answered what is recorded."""
    answered: list[str] = []

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        if len([a for a in answered if a == "throttled"]) < times:
            answered.append("throttled")
            return AWSResponse(request.url, status, {}, _Raw(answer))
        answered.append("sent")
        return None

    client.meta.events.register("before-send.dynamodb.PutItem", before_send)
    return answered


async def opened_dynamo(aws_env: dict[str, str]) -> DynamoStore:
    env = {**aws_env, "UAT_STORE": "dynamodb", "UAT_DYNAMODB_TABLE": "uat-bot-throttled"}
    store = DynamoStore(load_settings(env))
    await store.open()
    return store


async def test_a_throttled_dynamodb_write_is_retried_with_backoff_and_lands(
    aws_env: dict[str, str],
) -> None:
    store = await opened_dynamo(aws_env)
    try:
        answered = throttle(store.client, times=2)
        assert await store.claim("delivery-1", "pull_request") is True
        assert answered == ["throttled", "throttled", "sent"]
        assert await store.claimed("delivery-1")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (THROTTLED, 400, "ProvisionedThroughputExceededException"),
        # DynamoDB's 5xx is a store outage too, not a crash in the caller
        (UNAVAILABLE, 503, "ServiceUnavailableException"),
    ],
)
async def test_a_dynamodb_write_failing_past_the_retries_is_store_unavailable(
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    answer: bytes,
    status: int,
    code: str,
) -> None:
    # the bot's own retry settings, with 3 retries instead of 6 (a test in seconds)
    fewer = Config(retries={"max_attempts": 3, "mode": "standard"})
    monkeypatch.setattr(dynamodb_table, "CONFIG", dynamodb_table.CONFIG.merge(fewer))
    store = await opened_dynamo(aws_env)
    try:
        answered = throttle(store.client, times=100, answer=answer, status=status)
        with pytest.raises(StoreUnavailable) as failed:
            await store.claim("delivery-1", "pull_request")
        assert answered == ["throttled"] * 4  # the first attempt and 3 retries: bounded
        assert failed.value.line.startswith("UAT_DYNAMODB_TABLE uat-bot-throttled cannot be used")
        assert failed.value.cause == f"DynamoDB {code}"
    finally:
        await store.close()


async def test_a_thread_reply_the_store_cannot_claim_is_answered_in_its_thread_as_not_recorded(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.slack import slack_ui
    from tests.harness.bot import CHANNEL, SIGNING_SECRET
    from tests.harness.signing import event_body, slack_headers

    store = bot.runtime.services.store
    assert isinstance(store, SqliteStore)
    root = bot.slack.add_message(CHANNEL, "Codertocat/Hello-World#2", user="UBOT")
    ts = bot.slack.add_message(CHANNEL, "add a dark mode", user="U0HUMAN", thread_ts=root)
    event = {"type": "message", "channel": CHANNEL, "user": "U0HUMAN", "text": "add a dark mode"}
    body = event_body(event | {"ts": ts, "thread_ts": root})
    headers = slack_headers(SIGNING_SECRET, body) | {"Content-Type": "application/json"}
    await store.db.execute("PRAGMA busy_timeout=0")
    monkeypatch.setattr(sqlite_store, "BUSY_RETRIES", (0.01, 0.01))
    with locked_for(Path(bot.settings.uat_db), 1.0):
        assert (await bot.post_slack(body, headers))[0] == 200
        said = await bot.slack.wait_for(
            lambda s: [m for m in s.messages[CHANNEL] if m["text"] == slack_ui.NOT_RECORDED],
            timeout=5,
        )
    assert [m.get("thread_ts") for m in said] == [root]
