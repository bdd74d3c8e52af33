"""One suite, both stores: SQLite and DynamoDB (on moto's server) must behave the same.

Every test takes `store` (run once per implementation) and, for the multi-replica cases,
`replica()`: another store on the same backing (the same SQLite file, the same table).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from bot.aws.gateways import AwsError
from bot.config import load_settings
from bot.store import (
    AuditEntry,
    Carried,
    Environment,
    Facts,
    InboxItem,
    Lock,
    LockHeld,
    PoolEntry,
    PoolState,
    Post,
    Relay,
    Replaced,
    SqliteStore,
    State,
    Store,
    StoreUnavailable,
    VersionConflict,
)
from bot.store.dynamodb import DynamoStore
from bot.store.dynamodb_table import CLAIM_TTL_S, TTL_ATTRIBUTE
from tests.harness.uat_aws import atomic_dynamodb


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[[], Awaitable[Store]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's conditional writes atomic, as DynamoDB's are (tests/harness/uat_aws.py)."""
    atomic_dynamodb(monkeypatch.setattr)


@pytest.fixture
def dynamo_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    aws_env: dict[str, str] = request.getfixturevalue("aws_env")
    request.getfixturevalue("atomic_moto")
    return {
        "AWS_REGION": aws_env["AWS_REGION"],
        "AWS_ENDPOINT_URL": aws_env["AWS_ENDPOINT_URL"],
        "UAT_STORE": "dynamodb",
        "UAT_DYNAMODB_TABLE": f"uat-bot-{uuid.uuid4().hex[:8]}",
    }


@pytest.fixture(params=["sqlite", "dynamodb"])
async def replica(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[StoreFactory]:
    """Open stores on one shared backing: each call is another replica."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def make() -> Store:
            return SqliteStore(tmp_path / "state" / "uat.db", clock=clock)

    else:
        settings = load_settings(request.getfixturevalue("dynamo_settings"))

        def make() -> Store:
            return DynamoStore(settings, clock=clock)

    async def open_one() -> Store:
        store = make()
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def store(replica: StoreFactory) -> Store:
    return await replica()


# one-time keys


async def test_a_delivery_is_claimed_once_even_concurrently(store: Store) -> None:
    results = await asyncio.gather(*(store.claim("d-7", "pull_request") for _ in range(20)))
    assert results.count(True) == 1
    assert await store.claimed("d-7")


async def test_claims_are_per_key(store: Store) -> None:
    assert await store.claim("d-1", "pull_request")
    assert not await store.claimed("d-2")
    assert await store.claim("d-2", "pull_request")
    assert not await store.claim("d-1", "card")  # the kind does not make it another key
    assert not await store.claim("d-2", "pull_request")


async def test_claimed_answers_for_its_own_key_only(store: Store) -> None:
    assert not await store.claimed("d-1")
    assert await store.claim("d-1", "pull_request")
    assert await store.claimed("d-1")
    assert not await store.claimed("d-2")
    assert not await store.claimed("d-")
    assert await store.claim("d-2", "card")
    assert await store.claimed("d-1") and await store.claimed("d-2")


# warm-pool entries


async def test_pool_entries_round_trip_and_are_written_by_compare_and_set(
    replica: StoreFactory, clock: Clock
) -> None:
    one, two = await replica(), await replica()
    entry = PoolEntry("pool-latest-0a1b2c3d", "latest", "sha256:" + "a" * 64, task_arn="arn:t/1")
    saved = await one.save_pool_entry(entry)
    assert saved.version == 1 and saved.started_at == clock.now
    assert await two.get_pool_entry(entry.pool_id) == saved
    claiming = replace(saved, state=PoolState.CLAIMING, repo="o/r", pr=7, session="pr7-1")
    # two replicas claim the same waiting entry: exactly one wins
    results = await asyncio.gather(
        one.save_pool_entry(claiming),
        two.save_pool_entry(replace(claiming, session="pr8-2", pr=8)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["PoolEntry", "VersionConflict"]
    [stored] = await two.list_pool_entries()
    assert stored.state == PoolState.CLAIMING and stored.version == 2
    assert (stored.repo, stored.pr, stored.session) in (("o/r", 7, "pr7-1"), ("o/r", 8, "pr8-2"))
    with pytest.raises(VersionConflict):
        await one.save_pool_entry(entry)  # a second insert of the same pool id
    assert not await one.delete_pool_entry(saved)  # not at version 1 any more
    assert await one.delete_pool_entry(stored)
    assert await two.list_pool_entries() == []


# environments


async def test_environment_writes_are_compare_and_set(store: Store) -> None:
    env = Environment(
        repo="acme/web", pr=12, state=State.STARTING, label="uat", facts=Facts(title="x")
    )
    saved = await store.save_environment(env)
    assert saved.version == 1 and saved.created_at == saved.updated_at
    with pytest.raises(VersionConflict):
        await store.save_environment(env)  # a second insert of the same PR
    running = await store.save_environment(replace(saved, state="running", task_arn="arn:t"))
    assert running.version == 2
    with pytest.raises(VersionConflict):
        await store.save_environment(replace(saved, state="stopped"))  # stale version
    loaded = await store.get_environment("acme/web", 12)
    assert loaded == running
    assert loaded is not None and loaded.facts == Facts(title="x")


async def test_every_environment_field_round_trips(store: Store, clock: Clock) -> None:
    assert await store.get_environment("acme/web", 1) is None
    clock.now = 1_700_000_000.123456
    env = Environment(
        repo="acme/web",
        pr=1,
        state="running",
        label="",
        task_arn="arn:aws:ecs:us-east-1:1:task/c/abc",
        thread_ts="1700000000.000100",
        image_digest="sha256:" + "a" * 64,
        facts=Facts(
            title="Add a footer",
            url="https://github.com/acme/web/pull/1",
            author="octocat",
            branch="changes",
            head_sha="1" * 40,
            clone_url="https://github.com/acme/web.git",
            label_gone=True,
            session="pr1-0a1b2c3d",
            launch_started=1_700_000_000.5,
            requested_by="U0DEPLOYER",
            task_definition="arn:aws:ecs:us-east-1:1:task-definition/app-uat-bot:3",
            image_tags=("latest", "abc1234"),
            replace=Replaced("arn:aws:ecs:us-east-1:1:task/c/old", None, "pr1-99999999"),
            idle_until=1_700_028_800.0,
            warned=True,
            health={"phase": "ready", "ready": True},
            last_seen="RUNNING",
            task_ip="10.0.1.23",
            reason="`uat` removed by <@U0X>",
            stopped_at=1_700_000_900.0,
            shown="running",
            prompt_cancels={"job-1": "U0SOMEONE"},
            carry=(Carried("add a footer", "U0SOMEONE", "job-0"),),
            extra={"nested": {"list": [1, 2.5, None, "é"]}, "flag": True},
        ),
    )
    saved = await store.save_environment(env)
    assert saved.created_at == clock.now
    assert await store.get_environment("acme/web", 1) == saved
    clock.now += 10
    cleared = await store.save_environment(
        replace(saved, task_arn=None, thread_ts=None, image_digest=None, facts=Facts())
    )
    assert cleared.created_at == saved.created_at and cleared.updated_at == clock.now
    assert await store.get_environment("acme/web", 1) == cleared
    assert await store.get_environment("acme/web", 2) is None
    assert await store.get_environment("acme/other", 1) is None


async def test_only_one_of_many_concurrent_updates_wins(store: Store) -> None:
    saved = await store.save_environment(Environment(repo="acme/web", pr=1, state="starting"))
    outcomes = await asyncio.gather(
        *(store.save_environment(replace(saved, label=f"s{i}")) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert all(isinstance(o, VersionConflict) for o in outcomes if isinstance(o, Exception))


async def test_only_one_of_many_concurrent_inserts_and_updates_wins(store: Store) -> None:
    inserts = await asyncio.gather(
        *(
            store.save_environment(
                Environment(repo="acme/web", pr=2, state=State.NEW, label=f"s{i}")
            )
            for i in range(20)
        ),
        return_exceptions=True,
    )
    [won] = [o for o in inserts if isinstance(o, Environment)]
    assert all(isinstance(o, VersionConflict) for o in inserts if o is not won)
    assert await store.get_environment("acme/web", 2) == won
    updates = await asyncio.gather(
        *(store.save_environment(replace(won, label=f"l{i}")) for i in range(20)),
        return_exceptions=True,
    )
    [updated] = [o for o in updates if isinstance(o, Environment)]
    assert all(isinstance(o, VersionConflict) for o in updates if o is not updated)
    assert updated.version == 2
    assert await store.get_environment("acme/web", 2) == updated


async def test_list_environments_by_state(store: Store) -> None:
    await store.save_environment(Environment(repo="a/b", pr=1, state="running"))
    await store.save_environment(Environment(repo="a/b", pr=2, state="stopped"))
    await store.save_environment(Environment(repo="a/b", pr=3, state="ready"))
    active = await store.list_environments({"running", "ready"})
    assert [e.pr for e in active] == [1, 3]
    assert len(await store.list_environments()) == 3
    assert await store.list_environments([]) == []


async def test_environments_are_listed_by_repo_then_pr_number(store: Store) -> None:
    for repo, pr in [("a/b-c", 1), ("a/b", 10), ("a/b", 2), ("a/a", 99), ("a/b", 1)]:
        await store.save_environment(Environment(repo=repo, pr=pr, state="running"))
    listed = [(e.repo, e.pr) for e in await store.list_environments()]
    assert listed == [("a/a", 99), ("a/b", 1), ("a/b", 2), ("a/b", 10), ("a/b-c", 1)]
    assert await store.list_environments(["gone"]) == []
    assert len(await store.list_environments(("running",))) == 5


# locks and leases


async def test_lock_is_exclusive_released_and_expires(store: Store, clock: Clock) -> None:
    lock = await store.acquire_lock("images", "U1", "staging abc1234", ttl_s=600)
    assert lock.holder == "U1"
    with pytest.raises(LockHeld) as held:
        await store.acquire_lock("images", "U2", "promote", ttl_s=600)
    assert held.value.lock.holder == "U1" and held.value.lock.reason == "staging abc1234"
    assert not await store.release_lock("images", "U2")  # not theirs to release
    assert await store.release_lock("images", "U1")
    assert await store.get_lock("images") is None
    await store.acquire_lock("images", "U2", "promote", ttl_s=60)
    clock.now += 61  # the holder died: the lock expires
    assert await store.get_lock("images") is None
    taken = await store.acquire_lock("images", "U3", "rollback", ttl_s=60)
    assert taken.holder == "U3"


async def test_a_lock_reads_back_as_taken_and_expires_exactly_at_its_time(
    store: Store, clock: Clock
) -> None:
    assert await store.get_lock("images") is None
    assert not await store.release_lock("images")  # nothing to release
    taken = await store.acquire_lock("images", "U1", "promote", ttl_s=30)
    assert taken == Lock("images", "U1", "promote", clock.now, clock.now + 30)
    assert await store.get_lock("images") == taken
    assert await store.get_lock("other") is None
    with pytest.raises(LockHeld):
        await store.acquire_lock("images", "U1", "again", ttl_s=30)  # not re-entrant
    clock.now += 29.5
    with pytest.raises(LockHeld) as held:
        await store.acquire_lock("images", "U2", "rollback", ttl_s=30)
    assert held.value.lock == taken
    clock.now = taken.expires_at
    assert await store.get_lock("images") is None
    again = await store.acquire_lock("images", "U2", "rollback", ttl_s=30)
    assert not await store.release_lock("images", "U1")  # U1's hold lapsed and was taken over
    assert await store.get_lock("images") == again
    assert await store.release_lock("images")  # any holder
    assert not await store.release_lock("images")


async def test_only_one_of_many_concurrent_lock_takers_wins(store: Store) -> None:
    outcomes = await asyncio.gather(
        *(store.acquire_lock("images", f"U{i}", f"op{i}", ttl_s=60) for i in range(20)),
        return_exceptions=True,
    )
    [won] = [o for o in outcomes if isinstance(o, Lock)]
    refused = [o for o in outcomes if not isinstance(o, Lock)]
    assert len(refused) == 19
    assert all(isinstance(o, LockHeld) and o.lock == won for o in refused)
    assert await store.get_lock("images") == won


async def test_a_lease_is_renewed_by_its_holder_and_taken_over_when_it_lapses(
    store: Store, clock: Clock
) -> None:
    assert await store.hold_lease("watcher", "replica-a", ttl_s=20)
    assert not await store.hold_lease("watcher", "replica-b", ttl_s=20)
    clock.now += 15
    assert await store.hold_lease("watcher", "replica-a", ttl_s=20)  # renewed
    clock.now += 15
    assert not await store.hold_lease("watcher", "replica-b", ttl_s=20)  # still a's
    clock.now += 6  # a stopped renewing
    assert await store.hold_lease("watcher", "replica-b", ttl_s=20)
    assert not await store.hold_lease("watcher", "replica-a", ttl_s=20)


async def test_a_lease_keeps_its_start_when_renewed_and_restarts_when_taken_over(
    store: Store, clock: Clock
) -> None:
    start = clock.now
    assert await store.hold_lease("watcher", "replica-a", ttl_s=20)
    clock.now += 10
    assert await store.hold_lease("watcher", "replica-a", ttl_s=20)
    assert await store.get_lock("watcher") == Lock(
        "watcher", "replica-a", "lease", start, clock.now + 20
    )
    clock.now += 20  # lapsed exactly now
    assert await store.hold_lease("watcher", "replica-b", ttl_s=5)
    assert await store.get_lock("watcher") == Lock(
        "watcher", "replica-b", "lease", clock.now, clock.now + 5
    )
    assert await store.release_lock("watcher", "replica-b")
    assert await store.hold_lease("watcher", "replica-a", ttl_s=5)  # free again


async def test_only_one_of_many_concurrent_lease_takers_wins(store: Store) -> None:
    outcomes = await asyncio.gather(
        *(store.hold_lease("watcher", f"replica-{i}", ttl_s=20) for i in range(20))
    )
    assert outcomes.count(True) == 1
    lock = await store.get_lock("watcher")
    assert lock is not None and lock.holder == f"replica-{outcomes.index(True)}"


async def test_a_lease_and_a_lock_share_one_name_space(store: Store) -> None:
    await store.acquire_lock("images", "U1", "promote", ttl_s=60)
    assert not await store.hold_lease("images", "replica-a", ttl_s=20)
    assert await store.hold_lease("watcher", "replica-a", ttl_s=20)
    with pytest.raises(LockHeld):
        await store.acquire_lock("watcher", "U1", "promote", ttl_s=60)


# audit


async def test_audit_is_newest_first_and_limited(store: Store, clock: Clock) -> None:
    for i in range(25):
        clock.now += 1
        await store.append_audit(
            AuditEntry(actor="U1", action=f"op{i}", result="ok", from_digest="sha256:a")
        )
    recent = await store.recent_audit(20)
    assert len(recent) == 20
    assert recent[0].action == "op24" and recent[-1].action == "op5"
    assert recent[0].at == clock.now and recent[0].from_digest == "sha256:a"


async def test_audit_keeps_every_field_and_the_order_entries_were_written_in(
    store: Store, clock: Clock
) -> None:
    assert await store.recent_audit() == []
    first = AuditEntry("U1", "promote", "ok", "staging -> latest", "sha256:a", "sha256:b")
    await store.append_audit(first)
    await store.append_audit(AuditEntry("U2", "rollback", "refused"))  # same instant
    await store.append_audit(AuditEntry("U3", "lock", "ok", at=clock.now - 100))
    recent = await store.recent_audit()  # newest written first, whatever their `at`
    assert [e.action for e in recent] == ["lock", "rollback", "promote"]
    assert recent[0].at == clock.now - 100
    assert recent[1] == AuditEntry("U2", "rollback", "refused", "", None, None, clock.now)
    assert recent[2] == replace(first, at=clock.now)
    assert [e.action for e in await store.recent_audit(1)] == ["lock"]
    assert len(await store.recent_audit(50)) == 3


# messages posted at most once


async def test_a_post_is_reserved_once_and_keeps_the_ts_it_was_given(
    store: Store, clock: Clock
) -> None:
    first, fresh = await store.reserve_post(Post("card:s1", "C1"))
    assert fresh and first == Post("card:s1", "C1", None, None, clock.now)
    clock.now += 5
    again, fresh = await store.reserve_post(Post("card:s1", "C9", "1.1"))  # a resumed attempt
    assert not fresh and again == first  # what the first attempt recorded, ts still unknown
    await store.posted("card:s1", "1700.0002")
    done, fresh = await store.reserve_post(Post("card:s1", "C1"))
    assert not fresh and done.ts == "1700.0002" and done.channel == "C1"
    reply, fresh = await store.reserve_post(Post("prompt:j:0", "C1", "1700.0002"))
    assert fresh and reply.thread_ts == "1700.0002" and reply.created_at == clock.now


async def test_posted_records_the_ts_of_its_own_key_only(store: Store, clock: Clock) -> None:
    for key in ("card:a", "card:b", "card:c"):
        await store.reserve_post(Post(key, "C1"))
    await store.posted("card:b", "1700.0002")
    posts = {key: (await store.reserve_post(Post(key, "C1")))[0] for key in ("card:a", "card:b")}
    assert posts["card:b"] == Post("card:b", "C1", None, "1700.0002", clock.now)
    assert posts["card:a"] == Post("card:a", "C1", None, None, clock.now)
    assert (await store.reserve_post(Post("card:c", "C1")))[0].ts is None


async def test_a_post_reserved_by_one_replica_is_seen_by_another(replica: StoreFactory) -> None:
    one, two = await replica(), await replica()
    results = await asyncio.gather(*(s.reserve_post(Post("k", "C1")) for s in (one, two)))
    assert sorted(fresh for _, fresh in results) == [False, True]
    await one.posted("k", "1.5")
    assert (await two.reserve_post(Post("k", "C1")))[0].ts == "1.5"


# relays


async def test_relays_are_remembered_until_closed_once(store: Store) -> None:
    relay = Relay("job-1", "acme/web", 7, "U1", "1700.0001", "add a button")
    await store.open_relay(relay)
    await store.open_relay(relay)  # idempotent
    [kept] = await store.open_relays()
    assert kept.job_id == "job-1" and kept.prompt == "add a button" and kept.created_at > 0
    assert await store.relay("acme/web", 7, "job-1") == kept
    assert await store.relay("acme/web", 8, "job-1") is None  # the key is repo, PR and job id
    assert await store.close_relay("acme/web", 7, "job-1")
    assert not await store.close_relay("acme/web", 7, "job-1")
    assert await store.open_relays() == []
    assert await store.relay("acme/web", 7, "job-1") is None


async def test_relays_are_listed_oldest_first_and_closed_one_by_one(
    store: Store, clock: Clock
) -> None:
    await store.open_relay(Relay("job-2", "acme/web", 7, "U1", "1.2", "second"))
    clock.now -= 10
    await store.open_relay(Relay("job-1", "acme/web", 7, "U1", "1.1", "first"))
    await store.open_relay(Relay("job-1", "acme/web", 8, "U2", "2.1", "other pr", 5.0))
    await store.open_relay(Relay("job-1", "acme/web", 7, "U9", "9.9", "a retry"))  # kept first
    relays = await store.open_relays()
    assert [(r.pr, r.job_id, r.prompt) for r in relays] == [
        (8, "job-1", "other pr"),
        (7, "job-1", "first"),
        (7, "job-2", "second"),
    ]
    assert relays[0] == Relay("job-1", "acme/web", 8, "U2", "2.1", "other pr", 5.0)
    assert relays[1].created_at == clock.now and relays[1].user == "U1"
    assert not await store.close_relay("acme/web", 9, "job-1")
    assert await store.close_relay("acme/web", 7, "job-1")
    assert [r.prompt for r in await store.open_relays()] == ["other pr", "second"]


# several replicas on one backing


async def test_two_replicas_see_each_others_writes_and_honour_each_others_holds(
    replica: StoreFactory, clock: Clock
) -> None:
    a, b = await replica(), await replica()
    await a.ping()
    await b.ping()

    assert await a.claim("d-1", "pull_request")
    assert not await b.claim("d-1", "pull_request")

    saved = await a.save_environment(Environment(repo="acme/web", pr=3, state="starting"))
    assert await b.get_environment("acme/web", 3) == saved
    running = await b.save_environment(replace(saved, state="running"))
    with pytest.raises(VersionConflict):
        await a.save_environment(replace(saved, state="stopped"))
    assert await a.list_environments(["running"]) == [running]

    lock = await a.acquire_lock("images", "U1", "promote", ttl_s=60)
    with pytest.raises(LockHeld) as held:
        await b.acquire_lock("images", "U2", "rollback", ttl_s=60)
    assert held.value.lock == lock
    assert await b.get_lock("images") == lock
    assert not await b.release_lock("images", "U2")
    assert await b.release_lock("images", "U1")
    assert await a.get_lock("images") is None

    assert await a.hold_lease("watcher", "replica-a", ttl_s=20)
    assert not await b.hold_lease("watcher", "replica-b", ttl_s=20)
    clock.now += 21
    assert await b.hold_lease("watcher", "replica-b", ttl_s=20)
    assert not await a.hold_lease("watcher", "replica-a", ttl_s=20)

    await a.append_audit(AuditEntry("U1", "promote", "ok"))
    clock.now += 1
    await b.append_audit(AuditEntry("U2", "rollback", "ok"))
    assert [e.actor for e in await a.recent_audit()] == ["U2", "U1"]

    await a.open_relay(Relay("job-1", "acme/web", 3, "U1", "1.1", "hi"))
    assert [r.job_id for r in await b.open_relays()] == ["job-1"]
    assert await b.close_relay("acme/web", 3, "job-1")
    assert await a.relay("acme/web", 3, "job-1") is None
    assert not await a.close_relay("acme/web", 3, "job-1")


async def test_claims_across_replicas_race_to_one_winner(replica: StoreFactory) -> None:
    a, b = await replica(), await replica()
    results = await asyncio.gather(
        *(s.claim("d-9", "pull_request") for _ in range(10) for s in (a, b))
    )
    assert results.count(True) == 1


# DynamoDB only: the table, its items, and errors


@pytest.fixture
def table_client(aws_env: dict[str, str]) -> Any:
    return boto3.client("dynamodb", endpoint_url=aws_env["AWS_ENDPOINT_URL"])


@pytest.fixture
async def dynamo(dynamo_settings: dict[str, str], clock: Clock) -> AsyncIterator[DynamoStore]:
    store = DynamoStore(load_settings(dynamo_settings), clock=clock)
    await store.open()
    yield store
    await store.close()


async def test_open_creates_an_on_demand_table_with_ttl_once(
    dynamo: DynamoStore, dynamo_settings: dict[str, str], table_client: Any
) -> None:
    table = table_client.describe_table(TableName=dynamo.table)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {
        ("pk", "HASH"),
        ("sk", "RANGE"),
    }
    ttl = table_client.describe_time_to_live(TableName=dynamo.table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED" and ttl["AttributeName"] == TTL_ATTRIBUTE
    await dynamo.claim("d-1", "pull_request")
    again = DynamoStore(load_settings(dynamo_settings))  # the table exists: keep it
    await again.open()
    assert not await again.claim("d-1", "pull_request")
    await again.open()  # opening twice is harmless
    await again.close()
    await again.close()


async def test_items_follow_the_single_table_layout(
    dynamo: DynamoStore, clock: Clock, table_client: Any
) -> None:
    await dynamo.claim("d-1", "pull_request")
    await dynamo.save_environment(Environment(repo="acme/web", pr=5, state="running"))
    await dynamo.acquire_lock("images", "U1", "promote", ttl_s=60)
    await dynamo.append_audit(AuditEntry("U1", "promote", "ok"))
    await dynamo.open_relay(Relay("job-1", "acme/web", 5, "U1", "1.1", "hi"))
    items = table_client.scan(TableName=dynamo.table)["Items"]
    keys = {(i["pk"]["S"], i["sk"]["S"].split("#")[0]): i for i in items}
    assert set(keys) == {
        ("claim#d-1", "claim"),
        ("envs", "acme/web"),
        ("lock#images", "lock"),
        ("audit", f"{clock.now:020.6f}"),
        ("relays", "acme/web"),
    }
    claim = keys["claim#d-1", "claim"]
    assert int(claim[TTL_ATTRIBUTE]["N"]) == int(clock.now) + CLAIM_TTL_S
    lock = keys["lock#images", "lock"]
    assert int(lock[TTL_ATTRIBUTE]["N"]) > clock.now + 60
    assert keys["envs", "acme/web"]["sk"]["S"] == "acme/web#5"
    assert keys["relays", "acme/web"]["sk"]["S"] == "acme/web#5#job-1"


async def test_a_table_that_is_not_the_bots_is_refused(
    dynamo_settings: dict[str, str], table_client: Any
) -> None:
    table_client.create_table(
        TableName=dynamo_settings["UAT_DYNAMODB_TABLE"],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    store = DynamoStore(load_settings(dynamo_settings))
    with pytest.raises(StoreUnavailable, match="UAT_DYNAMODB_TABLE"):
        await store.open()


async def test_aws_failures_are_aws_errors_that_say_what_to_check(
    dynamo: DynamoStore, table_client: Any
) -> None:
    table_client.delete_table(TableName=dynamo.table)
    with pytest.raises(StoreUnavailable, match="UAT_DYNAMODB_TABLE") as failed:
        await dynamo.ping()
    assert failed.value.cause == "DynamoDB ResourceNotFoundException"
    for call in (
        dynamo.claim("d-1", "pull_request"),
        dynamo.save_environment(Environment(repo="a/b", pr=1, state=State.NEW)),
        dynamo.acquire_lock("images", "U1", "promote", ttl_s=60),
        dynamo.hold_lease("watcher", "replica-a", ttl_s=20),
        dynamo.recent_audit(),
        dynamo.close_relay("a/b", 1, "job-1"),
    ):
        with pytest.raises(AwsError, match=dynamo.table):
            await call


async def test_without_a_region_open_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    store = DynamoStore(load_settings({"UAT_STORE": "dynamodb"}), clock=clock)
    with pytest.raises(RuntimeError, match="not open"):
        await store.ping()
    with pytest.raises(StoreUnavailable, match="AWS_REGION"):
        await store.open()


# the inbox: commands and clicks acknowledged but not done yet


def _inbox_item(key: str, at: float, holder: str = "replica-a") -> InboxItem:
    payload = {"text": "stop PR-7", "user_id": "U1", "response_url": "http://127.0.0.1:1/r/1"}
    return InboxItem(key, "command", payload, at, holder, at + 10)


async def test_an_inbox_item_reads_back_until_it_is_done(store: Store, clock: Clock) -> None:
    await store.inbox_put(_inbox_item("b", clock.now + 1))
    await store.inbox_put(_inbox_item("a", clock.now))
    await store.inbox_put(_inbox_item("a", clock.now, holder="someone-else"))  # idempotent
    assert await store.inbox_items() == [
        _inbox_item("a", clock.now),
        _inbox_item("b", clock.now + 1),
    ]
    await store.inbox_done("a")
    await store.inbox_done("a")  # done twice is still done
    assert [item.key for item in await store.inbox_items()] == ["b"]


async def test_an_inbox_item_is_claimed_by_its_holder_or_once_its_time_has_passed(
    store: Store, clock: Clock
) -> None:
    await store.inbox_put(_inbox_item("a", clock.now))  # replica-a holds it for 10 s
    assert await store.inbox_claim("a", "replica-a", clock.now + 20)  # renewed
    clock.now += 15
    assert not await store.inbox_claim("a", "replica-b", clock.now + 10)
    clock.now += 5  # replica-a died and stopped renewing
    assert await store.inbox_claim("a", "replica-b", clock.now + 10)
    assert not await store.inbox_claim("a", "replica-a", clock.now + 10)
    [item] = await store.inbox_items()
    assert (item.holder, item.held_until) == ("replica-b", clock.now + 10)
    await store.inbox_done("a")
    assert not await store.inbox_claim("a", "replica-b", clock.now + 10)  # gone


async def test_only_one_of_many_replicas_claims_an_abandoned_inbox_item(
    replica: StoreFactory, clock: Clock
) -> None:
    stores = [await replica() for _ in range(5)]
    await stores[0].inbox_put(_inbox_item("a", clock.now, holder="dead"))
    clock.now += 11
    outcomes = await asyncio.gather(
        *(s.inbox_claim("a", f"replica-{i}", clock.now + 10) for i, s in enumerate(stores))
    )
    assert outcomes.count(True) == 1
    [item] = await stores[0].inbox_items()
    assert item.holder == f"replica-{outcomes.index(True)}"
