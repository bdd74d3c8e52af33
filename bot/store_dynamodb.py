"""The DynamoDB store: the same `Store` as SQLite, on one table several replicas share.

Single-table layout (every item has a string `pk` and `sk`; names below are the key values):

    what             pk                sk                     TTL (`expires_at_ttl`)
    environment      envs              <repo>#<pr>            -
    one-time key     claim#<key>       claim                  30 days after the claim
    lock / lease     lock#<name>       lock                   an hour after it expires
    audit entry      audit             <written at, zero-padded>#<ns>#<random>   -
    relay            relays            <repo>#<pr>#<job id>   -
    post             post#<key>        post                   30 days after it was reserved

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
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from bot import slack_ui
from bot.aws import RETRIES, AwsError, boto3_session
from bot.aws import _call as aws_call
from bot.config import Settings
from bot.store import (
    RETENTION_S,
    AuditEntry,
    Clock,
    Environment,
    Lock,
    LockHeld,
    Post,
    Relay,
    VersionConflict,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

TTL_ATTRIBUTE = "expires_at_ttl"
CLAIM_TTL_S = RETENTION_S
LOCK_TTL_GRACE_S = 3600  # DynamoDB's clock may run ahead of ours: never let TTL beat expiry

ENVIRONMENTS = "envs"
AUDIT = "audit"
RELAYS = "relays"

# Many concurrent calls (a burst of webhooks, asyncio.gather) share one client's pool.
CONFIG = RETRIES.merge(Config(max_pool_connections=50))

CONDITION_FAILED = "ConditionalCheckFailedException"

HINTS = slack_ui.DYNAMODB_HINTS


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value)}


def _opt(item: dict[str, Any], name: str, value: str | None) -> None:
    if value is not None:
        item[name] = _s(value)


def _str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value is not None else None


def _float(item: dict[str, Any], name: str) -> float:
    return float(item[name]["N"])


def _int(item: dict[str, Any], name: str) -> int:
    return int(item[name]["N"])


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": _s(pk), "sk": _s(sk)}


def _lock_key(name: str) -> dict[str, Any]:
    return _key(f"lock#{name}", "lock")


def _env_sk(repo: str, pr: int) -> str:
    return f"{repo}#{pr}"


class DynamoStore:
    """The store for several replicas: one DynamoDB table (`UAT_DYNAMODB_TABLE`)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock = time.time,
        session: boto3.session.Session | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._session = session
        self._client: Any = None
        self.table = settings.uat_dynamodb_table

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("store is not open")
        return self._client

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread; AWS failures become AwsError naming the table and a fix."""
        try:
            return await aws_call(f"DynamoDB {what}", fn)
        except AwsError as exc:
            hint = HINTS.get(exc.code)
            if hint is None:
                raise
            raise AwsError(
                slack_ui.dynamodb_failed(what, self.table, exc.code, hint), exc.code
            ) from None

    # lifecycle

    async def open(self) -> None:
        def run() -> None:
            if self._client is None:
                session = self._session or boto3_session(self._settings)
                self._client = session.client(
                    "dynamodb", endpoint_url=self._settings.aws_endpoint_url, config=CONFIG
                )
            self._ensure_table()

        await self._call("open", run)

    def _ensure_table(self) -> None:
        client = self._client
        try:
            table = client.describe_table(TableName=self.table)["Table"]
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            table = self._create_table()
        keys = {(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])}
        if keys != {("pk", "HASH"), ("sk", "RANGE")}:
            raise AwsError(slack_ui.not_the_bots_table(self.table), "WrongKeySchema")
        if table.get("TableStatus") != "ACTIVE":
            client.get_waiter("table_exists").wait(
                TableName=self.table, WaiterConfig={"Delay": 2, "MaxAttempts": 90}
            )
        self._ensure_ttl()

    def _create_table(self) -> dict[str, Any]:
        logger.info("creating DynamoDB table %s", self.table)
        try:
            response = self._client.create_table(
                TableName=self.table,
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            return dict(response["TableDescription"])
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":
                raise
            # another replica is creating it right now
            return dict(self._client.describe_table(TableName=self.table)["Table"])

    def _ensure_ttl(self) -> None:
        """Let DynamoDB delete stale claims and locks; without the permission, just warn."""
        client = self._client
        try:
            described = client.describe_time_to_live(TableName=self.table)
            ttl = described.get("TimeToLiveDescription", {})
            if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
                if ttl.get("AttributeName") != TTL_ATTRIBUTE:
                    logger.warning(
                        "DynamoDB table %s expires items by %s, not %s: old claims and locks "
                        "will stay",
                        self.table,
                        ttl.get("AttributeName"),
                        TTL_ATTRIBUTE,
                    )
                return
            client.update_time_to_live(
                TableName=self.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
        except ClientError as exc:
            code = _code(exc)
            if code == "ValidationException":  # another replica enabled it meanwhile
                return
            if code == "AccessDeniedException":
                logger.warning(
                    "cannot enable TTL on DynamoDB table %s (%s): enable it on attribute %s, "
                    "or old claims and locks stay forever",
                    self.table,
                    code,
                    TTL_ATTRIBUTE,
                )
                return
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._call("close", client.close)

    async def ping(self) -> None:
        def run() -> None:
            self.client.describe_table(TableName=self.table)

        await self._call("DescribeTable", run)

    # conditional writes: True when written, False when the condition failed

    def _put(self, item: dict[str, Any], condition: str, **kwargs: Any) -> bool:
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression=condition, **kwargs
            )
        except ClientError as exc:
            if _code(exc) != CONDITION_FAILED:
                raise
            return False
        return True

    def _delete(self, key: dict[str, Any], condition: str, **kwargs: Any) -> bool:
        try:
            self.client.delete_item(
                TableName=self.table, Key=key, ConditionExpression=condition, **kwargs
            )
        except ClientError as exc:
            if _code(exc) != CONDITION_FAILED:
                raise
            return False
        return True

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        item = response.get("Item")
        return dict(item) if item else None

    def _query(
        self, pk: str, values: dict[str, Any] | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Every item of one partition, in sort-key order (reversed with ScanIndexForward)."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _s(pk), **(values or {})},
            "ConsistentRead": True,
            **kwargs,
        }
        while True:
            response = self.client.query(**request)
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    # one-time keys: webhook deliveries, card clicks

    async def claim(self, key: str, kind: str) -> bool:
        now = self._clock()
        item = {
            **_key(f"claim#{key}", "claim"),
            "kind": _s("claim"),
            "event": _s(kind),
            "received_at": _n(now),
            TTL_ATTRIBUTE: _n(int(now) + CLAIM_TTL_S),
        }
        return await self._call(
            "PutItem (claim)", lambda: self._put(item, "attribute_not_exists(pk)")
        )

    async def claimed(self, key: str) -> bool:
        item = await self._call("GetItem (claim)", lambda: self._get(_key(f"claim#{key}", "claim")))
        return item is not None

    async def forget(self, key: str) -> None:
        def run() -> None:
            self.client.delete_item(TableName=self.table, Key=_key(f"claim#{key}", "claim"))

        await self._call("DeleteItem (forget)", run)

    # environments

    async def get_environment(self, repo: str, pr: int) -> Environment | None:
        item = await self._call(
            "GetItem (environment)", lambda: self._get(_key(ENVIRONMENTS, _env_sk(repo, pr)))
        )
        return _environment(item) if item else None

    async def list_environments(self, states: Collection[str] | None = None) -> list[Environment]:
        wanted = None if states is None else sorted(set(states))
        values: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        if wanted is not None:
            if not wanted:
                return []
            if len(wanted) <= 100:  # IN takes at most 100 operands; filter the rest here
                values = {f":state{i}": _s(state) for i, state in enumerate(wanted)}
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
        now = self._clock()
        saved = replace(
            env,
            version=env.version + 1,
            updated_at=now,
            created_at=env.created_at or now,
        )
        item: dict[str, Any] = {
            **_key(ENVIRONMENTS, _env_sk(saved.repo, saved.pr)),
            "kind": _s("environment"),
            "repo": _s(saved.repo),
            "pr": _n(saved.pr),
            "state": _s(saved.state),
            "label": _s(saved.label),
            "data": _s(json.dumps(saved.data, sort_keys=True)),
            "created_at": _n(saved.created_at),
            "updated_at": _n(saved.updated_at),
            "version": _n(saved.version),
        }
        _opt(item, "task_arn", saved.task_arn)
        _opt(item, "thread_ts", saved.thread_ts)
        _opt(item, "image_digest", saved.image_digest)

        def run() -> bool:
            if env.version == 0:
                return self._put(item, "attribute_not_exists(pk)")
            return self._put(
                item,
                "#version = :version",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":version": _n(env.version)},
            )

        if not await self._call("PutItem (environment)", run):
            raise VersionConflict(f"{env.repo}#{env.pr} changed since version {env.version}")
        return saved

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
                        ExpressionAttributeValues={":now": _n(now)},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                except ClientError as exc:
                    if _code(exc) != CONDITION_FAILED:
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
        raise AwsError(slack_ui.lock_keeps_changing(name))

    async def release_lock(self, name: str, holder: str | None = None) -> bool:
        def run() -> bool:
            if holder is None:
                return self._delete(_lock_key(name), "attribute_exists(pk)")
            return self._delete(
                _lock_key(name),
                "#holder = :holder",
                ExpressionAttributeNames={"#holder": "holder"},
                ExpressionAttributeValues={":holder": _s(holder)},
            )

        return await self._call("DeleteItem (lock)", run)

    async def get_lock(self, name: str) -> Lock | None:
        item = await self._call("GetItem (lock)", lambda: self._get(_lock_key(name)))
        if item is None:
            return None
        lock = _lock(item)
        return lock if lock.expires_at > self._clock() else None

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()
        expires = now + ttl_s

        def run() -> bool:
            # the holder renews: keep when it first took the lease
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=_lock_key(name),
                    UpdateExpression="SET #expires = :expires, #ttl = :ttl",
                    ConditionExpression="#holder = :holder",
                    ExpressionAttributeNames={
                        "#expires": "expires_at",
                        "#ttl": TTL_ATTRIBUTE,
                        "#holder": "holder",
                    },
                    ExpressionAttributeValues={
                        ":expires": _n(expires),
                        ":ttl": _n(_ttl(expires)),
                        ":holder": _s(holder),
                    },
                )
                return True
            except ClientError as exc:
                if _code(exc) != CONDITION_FAILED:
                    raise
            # nobody holds it, or the holder let it lapse: take it over
            return self._put(
                _lock_item(Lock(name, holder, "lease", now, expires)),
                "attribute_not_exists(pk) OR #expires <= :now",
                ExpressionAttributeNames={"#expires": "expires_at"},
                ExpressionAttributeValues={":now": _n(now)},
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
            **_key(AUDIT, sk),
            "kind": _s("audit"),
            "at": _n(at),
            "actor": _s(entry.actor),
            "action": _s(entry.action),
            "result": _s(entry.result),
            "detail": _s(entry.detail),
        }
        _opt(item, "from_digest", entry.from_digest)
        _opt(item, "to_digest", entry.to_digest)

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
            **_key(RELAYS, f"{relay.repo}#{relay.pr}#{relay.job_id}"),
            "kind": _s("relay"),
            "job_id": _s(relay.job_id),
            "repo": _s(relay.repo),
            "pr": _n(relay.pr),
            "user": _s(relay.user),
            "thread_ts": _s(relay.thread_ts),
            "prompt": _s(relay.prompt),
            "created_at": _n(relay.created_at or self._clock()),
        }
        await self._call("PutItem (relay)", lambda: self._put(item, "attribute_not_exists(pk)"))

    async def close_relay(self, repo: str, pr: int, job_id: str) -> bool:
        key = _key(RELAYS, f"{repo}#{pr}#{job_id}")
        return await self._call(
            "DeleteItem (relay)", lambda: self._delete(key, "attribute_exists(pk)")
        )

    async def open_relays(self) -> list[Relay]:
        items = await self._call("Query (relays)", lambda: list(self._query(RELAYS)))
        return sorted((_relay(item) for item in items), key=lambda r: r.created_at)

    # messages posted at most once

    async def reserve_post(self, post: Post) -> tuple[Post, bool]:
        created_at = post.created_at or self._clock()
        item = {
            **_key(f"post#{post.key}", "post"),
            "kind": _s("post"),
            "channel": _s(post.channel),
            "created_at": _n(created_at),
            TTL_ATTRIBUTE: _n(int(created_at) + CLAIM_TTL_S),
        }
        _opt(item, "thread_ts", post.thread_ts)

        def run() -> tuple[Post, bool]:
            if self._put(item, "attribute_not_exists(pk)"):
                return replace(post, ts=None, created_at=created_at), True
            stored = self._get(_key(f"post#{post.key}", "post")) or item
            return _post(post.key, stored), False

        return await self._call("PutItem (post)", run)

    async def posted(self, key: str, ts: str) -> None:
        def run() -> None:
            self.client.update_item(
                TableName=self.table,
                Key=_key(f"post#{key}", "post"),
                UpdateExpression="SET ts = :ts",
                ExpressionAttributeValues={":ts": _s(ts)},
            )

        await self._call("UpdateItem (post)", run)

    async def prune(self, before: float) -> int:
        return 0  # claims and posts carry a TTL attribute: DynamoDB removes them


def _ttl(expires_at: float) -> int:
    return int(expires_at) + LOCK_TTL_GRACE_S


def _lock_item(lock: Lock) -> dict[str, Any]:
    return {
        **_lock_key(lock.name),
        "kind": _s("lock"),
        "name": _s(lock.name),
        "holder": _s(lock.holder),
        "reason": _s(lock.reason),
        "acquired_at": _n(lock.acquired_at),
        "expires_at": _n(lock.expires_at),
        TTL_ATTRIBUTE: _n(_ttl(lock.expires_at)),
    }


def _lock(item: dict[str, Any]) -> Lock:
    return Lock(
        name=str(item["name"]["S"]),
        holder=str(item["holder"]["S"]),
        reason=str(item["reason"]["S"]),
        acquired_at=_float(item, "acquired_at"),
        expires_at=_float(item, "expires_at"),
    )


def _environment(item: dict[str, Any]) -> Environment:
    return Environment(
        repo=str(item["repo"]["S"]),
        pr=_int(item, "pr"),
        state=str(item["state"]["S"]),
        label=str(item["label"]["S"]),
        task_arn=_str(item, "task_arn"),
        thread_ts=_str(item, "thread_ts"),
        image_digest=_str(item, "image_digest"),
        data=json.loads(item["data"]["S"]),
        created_at=_float(item, "created_at"),
        updated_at=_float(item, "updated_at"),
        version=_int(item, "version"),
    )


def _audit(item: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        actor=str(item["actor"]["S"]),
        action=str(item["action"]["S"]),
        result=str(item["result"]["S"]),
        detail=str(item["detail"]["S"]),
        from_digest=_str(item, "from_digest"),
        to_digest=_str(item, "to_digest"),
        at=_float(item, "at"),
    )


def _relay(item: dict[str, Any]) -> Relay:
    return Relay(
        job_id=str(item["job_id"]["S"]),
        repo=str(item["repo"]["S"]),
        pr=_int(item, "pr"),
        user=str(item["user"]["S"]),
        thread_ts=str(item["thread_ts"]["S"]),
        prompt=str(item["prompt"]["S"]),
        created_at=_float(item, "created_at"),
    )


def _post(key: str, item: dict[str, Any]) -> Post:
    return Post(
        key=key,
        channel=_str(item, "channel") or "",
        thread_ts=_str(item, "thread_ts"),
        ts=_str(item, "ts"),
        created_at=_float(item, "created_at"),
    )
