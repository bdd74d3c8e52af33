"""The SQS queue an EventBridge rule fills with "ECS Task State Change" events (UAT_EVENTS_QUEUE):
a thin typed gateway that long-polls it, deletes what was applied, and checks it can be read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3

from bot.aws.gateways import AwsError, _Gateway, aws_call
from bot.config import Settings

# A long poll waits this long for a message (SQS allows up to 20 s). Short enough that a bot
# shutting down waits for its last poll no longer than this.
EVENTS_WAIT_S = 5
RECEIVE_MOST = 10  # SQS's largest batch


@dataclass(frozen=True)
class QueueMessage:
    """One message: SQS's id, the handle that deletes it, and its body (the event's JSON)."""

    message_id: str
    receipt: str
    body: str


class EventQueue(_Gateway):
    """UAT_EVENTS_QUEUE's messages, received and deleted in a thread of their own, so a long
    poll never holds one of the threads the other AWS calls run in."""

    def __init__(self, settings: Settings, session: boto3.session.Session | None = None) -> None:
        super().__init__(settings, session)
        self.url = settings.uat_events_queue or ""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="uat-events")

    async def _call(self, what: str, fn: Any) -> Any:
        try:
            return await aws_call(what, fn, self._executor)
        except AwsError as exc:
            if self.on_error is not None:
                self.on_error(what, exc.code)
            raise

    async def check(self) -> int:
        """How many messages wait in the queue (GetQueueAttributes): that it can be read."""

        def run() -> int:
            self._count("GetQueueAttributes")
            answer = self._client("sqs").get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
            )
            return int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

        result: int = await self._call("GetQueueAttributes", run)
        return result

    async def receive(self, wait_s: int = EVENTS_WAIT_S) -> list[QueueMessage]:
        """Up to RECEIVE_MOST messages, waiting up to `wait_s` for the first (a long poll)."""

        def run() -> list[QueueMessage]:
            self._count("ReceiveMessage")
            answer = self._client("sqs").receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=RECEIVE_MOST, WaitTimeSeconds=wait_s
            )
            return [
                QueueMessage(m["MessageId"], m["ReceiptHandle"], m.get("Body", ""))
                for m in answer.get("Messages", [])
            ]

        found: list[QueueMessage] = await self._call("ReceiveMessage", run)
        return found

    async def delete(self, receipts: list[str]) -> None:
        """Delete the messages whose receipt handles are given (each once applied)."""

        def run() -> None:
            for receipt in receipts:
                self._count("DeleteMessage")
                self._client("sqs").delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

        if receipts:
            await self._call("DeleteMessage", run)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
