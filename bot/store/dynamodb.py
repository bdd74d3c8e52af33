"""The DynamoDB store: the same `Store` as SQLite, on one table several replicas share.

Single-table layout (every item has a string `pk` and `sk`; names below are the key values):

    what             pk                sk                     TTL (`expires_at_ttl`)
    environment      envs              <repo>#<pr>            -
    one-time key     claim#<key>       claim                  30 days after the claim
    lock / lease     lock#<name>       lock                   an hour after it expires
    audit entry      audit             <written at, zero-padded>#<ns>#<random>   -
    relay            relays            <repo>#<pr>#<job id>   -
    post             post#<key>        post                   30 days after it was reserved
    inbox item       inbox             <key>                  30 days after it was received
    warm-pool entry  pool              <pool id>              -

Every write that guards a side effect is a conditional write, so two replicas cannot both win;
a failed condition is an answer (False, VersionConflict, LockHeld), never an error. Expiry is
decided by comparing `expires_at` with the clock in code: DynamoDB's TTL only tidies up, days
late at worst. Every read is strongly consistent, so a replica sees what another just wrote.

boto3 is blocking, so each call runs in a thread; `ClientError` never leaves this module: it
becomes `AwsError`, whose message says what to check.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from bot import gateway_text
from bot.aws.gateways import AwsError
from bot.store.dynamodb_table import (
    AUDIT,
    CLAIM_TTL_S,
    CONDITION_FAILED,
    ENVIRONMENTS,
    INBOX,
    LOCK_TTL_GRACE_S,
    POOL,
    RELAYS,
    TTL_ATTRIBUTE,
    Table,
    env_sk,
    error_code,
    float_of,
    int_of,
    item_key,
    lock_key,
    n_attr,
    put_opt,
    s_attr,
    str_of,
)
from bot.store.records import (
    AuditEntry,
    Environment,
    Facts,
    InboxItem,
    Lock,
    LockHeld,
    PoolEntry,
    Post,
    Relay,
    State,
    VersionConflict,
    next_pool_version,
    next_version,
)

logger = logging.getLogger(__name__)


class DynamoStore(Table):
    """The store for several replicas: one DynamoDB table (`UAT_DYNAMODB_TABLE`), records as
    items (the layout is in this module's docstring)."""

    # one-time keys: webhook deliveries, card clicks

    async def claim(self, key: str, kind: str) -> bool:
        now = self._clock()
        item = {
            **item_key(f"claim#{key}", "claim"),
            "kind": s_attr("claim"),
            "event": s_attr(kind),
            "received_at": n_attr(now),
            TTL_ATTRIBUTE: n_attr(int(now) + CLAIM_TTL_S),
        }
        return await self._call(
            "PutItem (claim)", lambda: self._put(item, "attribute_not_exists(pk)")
        )

    async def claimed(self, key: str) -> bool:
        item = await self._call(
            "GetItem (claim)", lambda: self._get(item_key(f"claim#{key}", "claim"))
        )
        return item is not None

    # environments

    async def get_environment(self, repo: str, pr: int) -> Environment | None:
        item = await self._call(
            "GetItem (environment)", lambda: self._get(item_key(ENVIRONMENTS, env_sk(repo, pr)))
        )
        return _environment(item) if item else None

    async def list_environments(self, states: Collection[str] | None = None) -> list[Environment]:
        wanted = None if states is None else sorted({str(s) for s in states})
        values: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        if wanted is not None:
            if not wanted:
                return []
            if len(wanted) <= 100:  # IN takes at most 100 operands; filter the rest here
                values = {f":state{i}": s_attr(state) for i, state in enumerate(wanted)}
                kwargs = {
                    "FilterExpression": f"#state IN ({', '.join(values)})",
                    "ExpressionAttributeNames": {"#state": "state"},
                }

        def run() -> list[Environment]:
            items = self._query(ENVIRONMENTS, values, **kwargs)
            return [_environment(item) for item in items]

        found = await self._call("Query (environments)", run)
        if wanted is not None:
            found = [e for e in found if e.state in wanted]
        return sorted(found, key=lambda e: (e.repo, e.pr))

    async def save_environment(self, env: Environment) -> Environment:
        saved = next_version(env, self._clock())
        item: dict[str, Any] = {
            **item_key(ENVIRONMENTS, env_sk(saved.repo, saved.pr)),
            "kind": s_attr("environment"),
            "repo": s_attr(saved.repo),
            "pr": n_attr(saved.pr),
            "state": s_attr(str(saved.state)),
            "label": s_attr(saved.label),
            "data": s_attr(json.dumps(saved.facts.to_json(), sort_keys=True)),
            "created_at": n_attr(saved.created_at),
            "updated_at": n_attr(saved.updated_at),
            "version": n_attr(saved.version),
        }
        put_opt(item, "task_arn", saved.task_arn)
        put_opt(item, "thread_ts", saved.thread_ts)
        put_opt(item, "image_digest", saved.image_digest)

        def run() -> bool:
            if env.version == 0:
                return self._put(item, "attribute_not_exists(pk)")
            return self._put(
                item,
                "#version = :version",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":version": n_attr(env.version)},
            )

        if not await self._call("PutItem (environment)", run):
            raise VersionConflict(f"{env.repo}#{env.pr} changed since version {env.version}")
        return saved

    # warm-pool entries

    async def get_pool_entry(self, pool_id: str) -> PoolEntry | None:
        item = await self._call("GetItem (pool)", lambda: self._get(item_key(POOL, pool_id)))
        return _pool_entry(item) if item else None

    async def list_pool_entries(self) -> list[PoolEntry]:
        items = await self._call("Query (pool)", lambda: list(self._query(POOL)))
        return sorted((_pool_entry(i) for i in items), key=lambda e: (e.started_at, e.pool_id))

    async def save_pool_entry(self, entry: PoolEntry) -> PoolEntry:
        saved = next_pool_version(entry, self._clock())
        item: dict[str, Any] = {
            **item_key(POOL, saved.pool_id),
            "kind": s_attr("pool"),
            "state": s_attr(str(saved.state)),
            "data": s_attr(json.dumps(saved.to_json(), sort_keys=True)),
            "updated_at": n_attr(saved.updated_at),
            "version": n_attr(saved.version),
        }

        def run() -> bool:
            if entry.version == 0:
                return self._put(item, "attribute_not_exists(pk)")
            return self._put(
                item,
                "#version = :version",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":version": n_attr(entry.version)},
            )

        if not await self._call("PutItem (pool)", run):
            raise VersionConflict(f"pool entry {entry.pool_id} changed since {entry.version}")
        return saved

    async def delete_pool_entry(self, entry: PoolEntry) -> bool:
        return await self._call(
            "DeleteItem (pool)",
            lambda: self._delete(
                item_key(POOL, entry.pool_id),
                "#version = :version",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":version": n_attr(entry.version)},
            ),
        )

    # locks and leases

    async def acquire_lock(self, name: str, holder: str, reason: str, ttl_s: float) -> Lock:
        for _ in range(5):
            now = self._clock()
            lock = Lock(name, holder, reason, now, now + ttl_s)

            def run(lock: Lock = lock, now: float = now) -> Lock | None:
                """None when taken; the current holder's lock when not; Lock("") when gone."""
                try:
                    self.client.put_item(
                        TableName=self.table,
                        Item=_lock_item(lock),
                        ConditionExpression="attribute_not_exists(pk) OR #expires <= :now",
                        ExpressionAttributeNames={"#expires": "expires_at"},
                        ExpressionAttributeValues={":now": n_attr(now)},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                except ClientError as exc:
                    if error_code(exc) != CONDITION_FAILED:
                        raise
                    old: Any = exc.response.get("Item")
                    return _lock(old) if old else None
                return lock

            current = await self._call("PutItem (lock)", run)
            if current is lock:
                return lock
            if current is None:  # the old item was not returned: read it
                current = await self.get_lock(name)
            if current is not None:
                raise LockHeld(current)
            # released or lapsed between our write and our read: try again
        raise AwsError(gateway_text.lock_keeps_changing(name))

    async def release_lock(self, name: str, holder: str | None = None) -> bool:
        def run() -> bool:
            if holder is None:
                return self._delete(lock_key(name), "attribute_exists(pk)")
            return self._delete(
                lock_key(name),
                "#holder = :holder",
                ExpressionAttributeNames={"#holder": "holder"},
                ExpressionAttributeValues={":holder": s_attr(holder)},
            )

        return await self._call("DeleteItem (lock)", run)

    async def get_lock(self, name: str) -> Lock | None:
        item = await self._call("GetItem (lock)", lambda: self._get(lock_key(name)))
        if item is None:
            return None
        lock = _lock(item)
        return lock if lock.expires_at > self._clock() else None

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()
        expires = now + ttl_s

        def run() -> bool:
            # the holder renews: keep when it first took the lease
            if self._written(
                self.client.update_item,
                "#holder = :holder",
                Key=lock_key(name),
                UpdateExpression="SET #expires = :expires, #ttl = :ttl",
                ExpressionAttributeNames={
                    "#expires": "expires_at",
                    "#ttl": TTL_ATTRIBUTE,
                    "#holder": "holder",
                },
                ExpressionAttributeValues={
                    ":expires": n_attr(expires),
                    ":ttl": n_attr(_ttl(expires)),
                    ":holder": s_attr(holder),
                },
            ):
                return True
            # nobody holds it, or the holder let it lapse: take it over
            return self._put(
                _lock_item(Lock(name, holder, "lease", now, expires)),
                "attribute_not_exists(pk) OR #expires <= :now",
                ExpressionAttributeNames={"#expires": "expires_at"},
                ExpressionAttributeValues={":now": n_attr(now)},
            )

        return await self._call("UpdateItem (lease)", run)

    # audit

    async def append_audit(self, entry: AuditEntry) -> None:
        now = self._clock()
        at = entry.at or now
        # newest written first, as SQLite's row ids: by the clock when written (not `at`, which
        # a caller may backdate), then the wall clock's nanoseconds, then apart from other
        # replicas' entries of the same instant
        sk = f"{now:020.6f}#{time.time_ns():020d}#{uuid.uuid4().hex[:8]}"
        item: dict[str, Any] = {
            **item_key(AUDIT, sk),
            "kind": s_attr("audit"),
            "at": n_attr(at),
            "actor": s_attr(entry.actor),
            "action": s_attr(entry.action),
            "result": s_attr(entry.result),
            "detail": s_attr(entry.detail),
        }
        put_opt(item, "from_digest", entry.from_digest)
        put_opt(item, "to_digest", entry.to_digest)

        def run() -> None:
            self.client.put_item(TableName=self.table, Item=item)

        await self._call("PutItem (audit)", run)

    async def recent_audit(self, limit: int = 20) -> list[AuditEntry]:
        if limit <= 0:
            return []

        def run() -> list[AuditEntry]:
            found: list[AuditEntry] = []
            for item in self._query(AUDIT, ScanIndexForward=False, Limit=limit):
                found.append(_audit(item))
                if len(found) == limit:
                    break
            return found

        return await self._call("Query (audit)", run)

    # relays

    async def open_relay(self, relay: Relay) -> None:
        item = {
            **item_key(RELAYS, f"{relay.repo}#{relay.pr}#{relay.job_id}"),
            "kind": s_attr("relay"),
            "job_id": s_attr(relay.job_id),
            "repo": s_attr(relay.repo),
            "pr": n_attr(relay.pr),
            "user": s_attr(relay.user),
            "thread_ts": s_attr(relay.thread_ts),
            "prompt": s_attr(relay.prompt),
            "created_at": n_attr(relay.created_at or self._clock()),
        }
        await self._call("PutItem (relay)", lambda: self._put(item, "attribute_not_exists(pk)"))

    async def close_relay(self, repo: str, pr: int, job_id: str) -> bool:
        key = item_key(RELAYS, f"{repo}#{pr}#{job_id}")
        return await self._call(
            "DeleteItem (relay)", lambda: self._delete(key, "attribute_exists(pk)")
        )

    async def open_relays(self) -> list[Relay]:
        items = await self._call("Query (relays)", lambda: list(self._query(RELAYS)))
        return sorted((_relay(item) for item in items), key=lambda r: r.created_at)

    async def relay(self, repo: str, pr: int, job_id: str) -> Relay | None:
        key = item_key(RELAYS, f"{repo}#{pr}#{job_id}")
        item = await self._call("GetItem (relay)", lambda: self._get(key))
        return None if item is None else _relay(item)

    # messages posted at most once

    async def reserve_post(self, post: Post) -> tuple[Post, bool]:
        created_at = post.created_at or self._clock()
        item = {
            **item_key(f"post#{post.key}", "post"),
            "kind": s_attr("post"),
            "channel": s_attr(post.channel),
            "created_at": n_attr(created_at),
            TTL_ATTRIBUTE: n_attr(int(created_at) + CLAIM_TTL_S),
        }
        put_opt(item, "thread_ts", post.thread_ts)

        def run() -> tuple[Post, bool]:
            if self._put(item, "attribute_not_exists(pk)"):
                return replace(post, ts=None, created_at=created_at), True
            stored = self._get(item_key(f"post#{post.key}", "post")) or item
            return _post(post.key, stored), False

        return await self._call("PutItem (post)", run)

    async def posted(self, key: str, ts: str) -> None:
        def run() -> None:
            self.client.update_item(
                TableName=self.table,
                Key=item_key(f"post#{key}", "post"),
                UpdateExpression="SET ts = :ts",
                ExpressionAttributeValues={":ts": s_attr(ts)},
            )

        await self._call("UpdateItem (post)", run)

    # the inbox: commands and clicks acknowledged but not done yet

    async def inbox_put(self, item: InboxItem) -> None:
        record = {
            **item_key(INBOX, item.key),
            "kind": s_attr("inbox"),
            "item_kind": s_attr(item.kind),
            "payload": s_attr(json.dumps(dict(item.payload), sort_keys=True)),
            "received_at": n_attr(item.received_at),
            "holder": s_attr(item.holder),
            "held_until": n_attr(item.held_until),
            TTL_ATTRIBUTE: n_attr(int(item.received_at) + CLAIM_TTL_S),
        }

        def run() -> bool:
            return self._put(record, "attribute_not_exists(pk)")

        await self._call("PutItem (inbox)", run, urgent=True)  # a Slack ack waits for it

    async def inbox_claim(self, key: str, holder: str, until: float) -> bool:
        now = self._clock()

        def run() -> bool:
            return self._written(
                self.client.update_item,
                "attribute_exists(pk) AND (#holder = :holder OR #until <= :now)",
                Key=item_key(INBOX, key),
                UpdateExpression="SET #holder = :holder, #until = :until",
                ExpressionAttributeNames={"#holder": "holder", "#until": "held_until"},
                ExpressionAttributeValues={
                    ":holder": s_attr(holder),
                    ":until": n_attr(until),
                    ":now": n_attr(now),
                },
            )

        return await self._call("UpdateItem (inbox)", run)

    async def inbox_done(self, key: str) -> None:
        await self._call(
            "DeleteItem (inbox)", lambda: self._delete(item_key(INBOX, key), "attribute_exists(pk)")
        )

    async def inbox_items(self) -> list[InboxItem]:
        items = await self._call("Query (inbox)", lambda: list(self._query(INBOX)))
        return sorted((_inbox(item) for item in items), key=lambda i: (i.received_at, i.key))

    async def prune(self, before: float) -> int:
        return 0  # claims and posts carry a TTL attribute: DynamoDB removes them


def _ttl(expires_at: float) -> int:
    return int(expires_at) + LOCK_TTL_GRACE_S


def _lock_item(lock: Lock) -> dict[str, Any]:
    return {
        **lock_key(lock.name),
        "kind": s_attr("lock"),
        "name": s_attr(lock.name),
        "holder": s_attr(lock.holder),
        "reason": s_attr(lock.reason),
        "acquired_at": n_attr(lock.acquired_at),
        "expires_at": n_attr(lock.expires_at),
        TTL_ATTRIBUTE: n_attr(_ttl(lock.expires_at)),
    }


def _lock(item: dict[str, Any]) -> Lock:
    return Lock(
        name=str(item["name"]["S"]),
        holder=str(item["holder"]["S"]),
        reason=str(item["reason"]["S"]),
        acquired_at=float_of(item, "acquired_at"),
        expires_at=float_of(item, "expires_at"),
    )


def _environment(item: dict[str, Any]) -> Environment:
    return Environment(
        repo=str(item["repo"]["S"]),
        pr=int_of(item, "pr"),
        state=State(item["state"]["S"]),
        label=str(item["label"]["S"]),
        task_arn=str_of(item, "task_arn"),
        thread_ts=str_of(item, "thread_ts"),
        image_digest=str_of(item, "image_digest"),
        facts=Facts.from_json(json.loads(item["data"]["S"])),
        created_at=float_of(item, "created_at"),
        updated_at=float_of(item, "updated_at"),
        version=int_of(item, "version"),
    )


def _pool_entry(item: dict[str, Any]) -> PoolEntry:
    return PoolEntry.from_json(
        str(item["sk"]["S"]),
        str(item["state"]["S"]),
        int_of(item, "version"),
        float_of(item, "updated_at"),
        json.loads(item["data"]["S"]),
    )


def _audit(item: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        actor=str(item["actor"]["S"]),
        action=str(item["action"]["S"]),
        result=str(item["result"]["S"]),
        detail=str(item["detail"]["S"]),
        from_digest=str_of(item, "from_digest"),
        to_digest=str_of(item, "to_digest"),
        at=float_of(item, "at"),
    )


def _relay(item: dict[str, Any]) -> Relay:
    return Relay(
        job_id=str(item["job_id"]["S"]),
        repo=str(item["repo"]["S"]),
        pr=int_of(item, "pr"),
        user=str(item["user"]["S"]),
        thread_ts=str(item["thread_ts"]["S"]),
        prompt=str(item["prompt"]["S"]),
        created_at=float_of(item, "created_at"),
    )


def _inbox(item: dict[str, Any]) -> InboxItem:
    return InboxItem(
        key=str(item["sk"]["S"]),
        kind=str(item["item_kind"]["S"]),
        payload=json.loads(item["payload"]["S"]),
        received_at=float_of(item, "received_at"),
        holder=str(item["holder"]["S"]),
        held_until=float_of(item, "held_until"),
    )


def _post(key: str, item: dict[str, Any]) -> Post:
    return Post(
        key=key,
        channel=str_of(item, "channel") or "",
        thread_ts=str_of(item, "thread_ts"),
        ts=str_of(item, "ts"),
        created_at=float_of(item, "created_at"),
    )
