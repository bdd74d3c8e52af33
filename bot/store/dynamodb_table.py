"""The DynamoDB table under `DynamoStore`: its key layout, creation and TTL, and the calls every
record's code shares (each run in a thread; a failed condition is an answer, not an error)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from bot import gateway_text
from bot.aws.gateways import RETRIES, AwsError, aws_call, boto3_session
from bot.config import Settings
from bot.store.records import RETENTION_S, Clock, StoreUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

TTL_ATTRIBUTE = "expires_at_ttl"
CLAIM_TTL_S = RETENTION_S
LOCK_TTL_GRACE_S = 3600  # DynamoDB's clock may run ahead of ours: never let TTL beat expiry

ENVIRONMENTS = "envs"
AUDIT = "audit"
RELAYS = "relays"
INBOX = "inbox"
POOL = "pool"

# Many concurrent calls (a burst of webhooks, asyncio.gather) share one client's pool.
CONFIG = RETRIES.merge(Config(max_pool_connections=50))

CONDITION_FAILED = "ConditionalCheckFailedException"

URGENT_THREADS = 16  # for the writes a Slack ack waits for (the inbox): a burst of them

HINTS = gateway_text.DYNAMODB_HINTS
PROBE_KEY = {"pk": {"S": "health"}, "sk": {"S": "probe"}}  # never written: see `ping`
NEVER = "attribute_not_exists(pk) AND attribute_exists(pk)"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def s_attr(value: str) -> dict[str, str]:
    return {"S": value}


def n_attr(value: float) -> dict[str, str]:
    return {"N": repr(value)}


def put_opt(item: dict[str, Any], name: str, value: str | None) -> None:
    if value is not None:
        item[name] = s_attr(value)


def str_of(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value is not None else None


def float_of(item: dict[str, Any], name: str) -> float:
    return float(item[name]["N"])


def int_of(item: dict[str, Any], name: str) -> int:
    return int(item[name]["N"])


def item_key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": s_attr(pk), "sk": s_attr(sk)}


def lock_key(name: str) -> dict[str, Any]:
    return item_key(f"lock#{name}", "lock")


def env_sk(repo: str, pr: int) -> str:
    return f"{repo}#{pr}"


class Table:
    """The bot's one DynamoDB table: created when missing, and the calls every record needs
    (run in a thread, errors translated, conditional writes answering True or False)."""

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
        self._urgent = ThreadPoolExecutor(URGENT_THREADS, thread_name_prefix="dynamodb-ack")

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("store is not open")
        return self._client

    async def _call(self, what: str, fn: Callable[[], T], *, urgent: bool = False) -> T:
        """Run `fn` in a thread; AWS failures become AwsError naming the table and a fix, and
        those botocore's retries could not wait out StoreUnavailable. `urgent` (a write a Slack
        ack waits for) runs on the table's own few threads, never queued behind the bot's other
        blocking calls in asyncio's default pool."""
        try:
            pool = self._urgent if urgent else None
            return await aws_call(f"DynamoDB {what}", fn, pool)
        except AwsError as exc:
            hint = HINTS.get(exc.code)
            error = exc
            if hint is not None:
                on_table = f"DynamoDB {what} on table {self.table}"
                error = AwsError(gateway_text.aws_failed(on_table, hint, exc.code), exc.code)
            # botocore has retried it already (RETRIES): a write it stops was not recorded, and
            # whoever asked for it is told so (StoreUnavailable)
            if exc.transient:
                raise self._unavailable(error) from None
            raise error from None

    def _unavailable(self, exc: AwsError) -> StoreUnavailable:
        line = gateway_text.dynamodb_unusable(self.table, str(exc))
        return StoreUnavailable(line, f"DynamoDB {exc.code or 'error'}")

    # lifecycle

    async def open(self) -> None:
        def run() -> None:
            if self._client is None:
                session = self._session or boto3_session(self._settings)
                self._client = session.client(
                    "dynamodb", endpoint_url=self._settings.aws_endpoint_url, config=CONFIG
                )
            self._ensure_table()

        try:
            await self._call("open", run)
        except AwsError as exc:  # a wrong table, no permission, no credentials: serve says so
            raise self._unavailable(exc) from None

    def _ensure_table(self) -> None:
        client = self._client
        try:
            table = client.describe_table(TableName=self.table)["Table"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            table = self._create_table()
        keys = {(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])}
        if keys != {("pk", "HASH"), ("sk", "RANGE")}:
            raise AwsError(gateway_text.not_the_bots_table(self.table), "WrongKeySchema")
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
            if error_code(exc) != "ResourceInUseException":
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
            code = error_code(exc)
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
        self._urgent.shutdown(wait=False)
        self._urgent = ThreadPoolExecutor(URGENT_THREADS, thread_name_prefix="dynamodb-ack")

    async def ping(self) -> None:
        """A read and a write: a GetItem, and a PutItem whose condition never holds (so nothing
        is written, but the call is authorized, throttled and answered as a real write)."""

        def run() -> None:
            self.client.get_item(TableName=self.table, Key=PROBE_KEY, ConsistentRead=True)
            self._put(dict(PROBE_KEY), NEVER)

        try:
            await self._call("health probe", run, urgent=True)  # never queued behind other calls
        except AwsError as exc:
            raise self._unavailable(exc) from None

    # conditional writes: True when written, False when the condition failed

    def _put(self, item: dict[str, Any], condition: str, **kwargs: Any) -> bool:
        return self._written(self.client.put_item, condition, Item=item, **kwargs)

    def _delete(self, key: dict[str, Any], condition: str, **kwargs: Any) -> bool:
        return self._written(self.client.delete_item, condition, Key=key, **kwargs)

    def _written(self, write: Callable[..., object], condition: str, **kwargs: Any) -> bool:
        """`write` (PutItem, DeleteItem, UpdateItem) on the table under `condition`."""
        try:
            write(TableName=self.table, ConditionExpression=condition, **kwargs)
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
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
            "ExpressionAttributeValues": {":pk": s_attr(pk), **(values or {})},
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
