"""ECS task state changes as they happen: with UAT_EVENTS_QUEUE (an SQS queue that an EventBridge
rule fills with the cluster's "ECS Task State Change" events, docs/ecs-events.json), the
watcher-lease holder long-polls the queue and applies each event at once, as a poll would have
applied the task's description.

An event is applied once: one already applied (by its id) or older than one applied for the same
task (by the task's `detail.version`, which ECS raises on every change) is dropped, and so is an
event that would move a running environment back to provisioning. A message is deleted only
after its event was applied or dropped; one whose application failed comes back after the
queue's visibility timeout. Polling carries on as the safety net, less often while events flow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from bot.aws.gateways import TaskInfo, task_info
from bot.aws.queue import EventQueue, QueueMessage
from bot.environments.context import ECS_PROVISIONING, LIVE, Context
from bot.environments.watcher import SLOW_POLL_FACTOR, Watcher
from bot.logs import outside
from bot.store import Environment, State

logger = logging.getLogger(__name__)

DETAIL_TYPE = "ECS Task State Change"
SEEN_MOST = 10_000  # event ids remembered (the newest), for dropping redeliveries
RETRY_S = (1.0, 30.0)  # after a failed receive: the first and the longest wait


@dataclass(frozen=True)
class TaskEvent:
    """What one "ECS Task State Change" event says: its id, the task's version, the task."""

    event_id: str
    cluster_arn: str
    version: int
    task: TaskInfo


def parse(body: str) -> TaskEvent | None:
    """The task state change in an SQS message's body (EventBridge puts the event there as it
    is); None for anything else."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("detail-type") != DETAIL_TYPE:
        return None
    detail = event.get("detail")
    if event.get("source") != "aws.ecs" or not isinstance(detail, dict):
        return None
    if not isinstance(detail.get("taskArn"), str) or not isinstance(detail.get("version"), int):
        return None
    return TaskEvent(
        str(event.get("id", "")),
        str(detail.get("clusterArn", "")),
        detail["version"],
        task_info(detail),
    )


def _is_cluster(arn: str, cluster: str) -> bool:
    """Whether `arn` (an event's clusterArn) is the cluster UAT_ECS_CLUSTER names (or its ARN)."""
    return arn == cluster or arn.endswith(f":cluster/{cluster}")


class Events:
    """Follows UAT_EVENTS_QUEUE while this replica holds the watcher lease."""

    def __init__(self, ctx: Context, watcher: Watcher, queue: EventQueue) -> None:
        self.ctx = ctx
        self.watcher = watcher
        self.queue = queue
        self.seen: OrderedDict[str, None] = OrderedDict()  # event ids applied or dropped
        # task ARN -> the newest version applied (the most recently changed SEEN_MOST tasks)
        self.versions: OrderedDict[str, int] = OrderedDict()
        self.last_event: float | None = None  # time.monotonic() of the last event applied

    def flowing(self) -> bool:
        """Whether an event was applied within the slower poll's interval: the poll can wait."""
        window = self.ctx.settings.uat_poll_seconds * SLOW_POLL_FACTOR
        return self.last_event is not None and time.monotonic() - self.last_event < window

    async def follow(self) -> None:
        """Long-poll the queue while this replica holds the watcher lease; a failure is logged
        and the queue asked again, waiting longer each time it fails in a row."""
        wait, longest = RETRY_S
        checked = False
        while True:
            if not self.watcher.holding:
                await asyncio.sleep(0.5)
                continue
            try:
                if not checked:
                    waiting = await self.queue.check()
                    logger.info("following ECS events in %s (%d waiting)", self.queue.url, waiting)
                    checked = True
                await self.apply(await self.queue.receive())
                wait = RETRY_S[0]
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reading ECS events failed; asking again in %.0f s", wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, longest)

    async def apply(self, messages: list[QueueMessage]) -> None:
        """Apply a batch's events in each task's version order; delete the messages whose
        event was applied or dropped."""
        if not messages:
            return
        parsed = [(m, parse(m.body)) for m in messages]
        done = [m.receipt for m, event in parsed if event is None]
        if done:
            logger.info("dropped %d queue message(s) that are no ECS task state change", len(done))
        events = sorted(
            ((m, e) for m, e in parsed if e is not None), key=lambda pair: pair[1].version
        )
        live: dict[str, Environment] = {}
        if events:
            envs = await self.ctx.store.list_environments(LIVE)
            live = {e.task_arn: e for e in envs if e.task_arn}
        for message, event in events:
            try:
                await self._apply(event, live.get(event.task.arn))
            except Exception:
                logger.exception(
                    "applying ECS event %s failed; it comes back from the queue",
                    outside(event.event_id),
                )
                continue
            done.append(message.receipt)
        await self.queue.delete(done)

    async def _apply(self, event: TaskEvent, env: Environment | None) -> None:
        task = event.task
        if event.event_id in self.seen or event.version <= self.versions.get(task.arn, -1):
            return  # a redelivery, or older than what was applied
        if not _is_cluster(event.cluster_arn, self.ctx.settings.uat_ecs_cluster or ""):
            self._applied(event)
            return
        backwards = (
            task.last_status in ECS_PROVISIONING
            and env is not None
            and env.state
            in (
                State.RUNNING,
                State.READY,
            )
        )
        if env is not None and not backwards:
            await self.watcher.observe(env, task, self.ctx.clock())
            if env.state != State.READY:
                self.watcher.follow(env.repo, env.pr)
            logger.info(
                "%s#%d: ECS says %s (event version %d)",
                outside(env.repo),
                env.pr,
                outside(task.last_status),
                event.version,
            )
        self._applied(event)
        self.last_event = time.monotonic()

    def _applied(self, event: TaskEvent) -> None:
        self.seen[event.event_id] = None
        while len(self.seen) > SEEN_MOST:
            self.seen.popitem(last=False)
        arn = event.task.arn
        self.versions[arn] = max(event.version, self.versions.get(arn, -1))
        self.versions.move_to_end(arn)
        while len(self.versions) > SEEN_MOST:
            self.versions.popitem(last=False)
