"""Calls to Slack paced to Slack's rate limits, so a burst waits its turn instead of meeting 429s.

https://api.slack.com/apis/rate-limits: each Web API method has a tier, counted per method per
workspace (Tier 1: 1+ a minute, Tier 2: 20+, Tier 3: 50+, Tier 4: 100+, short bursts allowed);
chat.postMessage allows about 1 message a second per channel, with short bursts
(https://api.slack.com/methods/chat.postMessage). Each limit is a token bucket here; a call
takes its turn (a token) before it goes, turns are handed out in the order they are asked for,
and a 429's Retry-After holds that bucket back for as long as Slack asks.

A channel's posts are paced on their own, so one busy channel never slows another; only the
methods of one tier share a workspace-wide bucket, as they do in Slack.

Card updates (`Updates`) wait in a queue rather than in line: an update still waiting when a
newer one of the same message comes is replaced by it (Slack is sent only the latest state),
and an urgent update (a state a person acts on: ready, failed, stopped) takes the next turn
ahead of routine ones.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

TIER_PER_MINUTE = {1: 1.0, 2: 20.0, 3: 50.0, 4: 100.0}
METHOD_TIERS = {  # each method's page on https://api.slack.com/methods, "Rate limits"
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.update": 3,
    "conversations.history": 3,
    "conversations.replies": 3,
    "files.upload": 4,  # files_upload_v2: files.getUploadURLExternal + completeUploadExternal
    "usergroups.users.list": 2,
}
# A tier's bucket runs a little under Slack's: a call reaches Slack later than its turn (it may
# wait for its channel, and the network), and Slack's bucket refills from when a call arrives;
# the margin keeps those lags from adding up into 429s. Half a minute's calls at once.
TIER_MARGIN = 0.9
TIER_BURST = 0.5
POST_METHOD = "chat.postMessage"
POST_PER_S = 1.0
# Slack allows "short bursts" without saying how long: kept to 2, one turn in hand for a call
# that reaches Slack later than its turn came (Slack's bucket refills from when a call arrives)
POST_BURST = 2


@dataclass
class Bucket:
    """A token bucket that hands out turns: `capacity` at once, then `per_s` a second."""

    capacity: float
    per_s: float
    clock: Callable[[], float]
    tokens: float = field(init=False)
    at: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.capacity
        self.at = self.clock()

    def turn(self) -> float:
        """Take the next turn: how long from now until it comes (0 when at once)."""
        now = self.clock()
        if now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_s)
            self.at = now
        self.tokens -= 1  # a turn taken ahead: the next caller waits behind it
        return max(0.0, -self.tokens / self.per_s + (self.at - now))

    def hold(self, seconds: float) -> None:
        """Slack said to wait `seconds` (Retry-After): no turn comes before then."""
        until = self.clock() + seconds
        if until > self.at + max(0.0, 1 - self.tokens) / self.per_s:  # later than the next turn
            self.tokens, self.at = 1.0, until


class Pacer:
    """The buckets of one workspace's token: a call's `turn` waits until it may go."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def _bucket(self, method: str, channel: str | None) -> Bucket | None:
        if method == POST_METHOD:
            key = (method, channel or "")
            if key not in self._buckets:
                self._buckets[key] = Bucket(POST_BURST, POST_PER_S, self.clock)
        elif method in METHOD_TIERS:
            key = (method, "")
            if key not in self._buckets:
                per_minute = TIER_PER_MINUTE[METHOD_TIERS[method]]
                per_s = per_minute * TIER_MARGIN / 60
                self._buckets[key] = Bucket(max(1.0, per_minute * TIER_BURST), per_s, self.clock)
        else:
            return None
        return self._buckets[key]

    async def turn(self, method: str, channel: str | None) -> None:
        """Wait for this call's turn under Slack's limit for `method` (in `channel`)."""
        bucket = self._bucket(method, channel)
        wait = bucket.turn() if bucket is not None else 0.0
        if wait > 0:
            await self.sleep(wait)

    def hold(self, method: str, channel: str | None, seconds: float) -> None:
        """Slack answered 429 with Retry-After `seconds`: later turns wait it out."""
        bucket = self._bucket(method, channel)
        if bucket is not None:
            bucket.hold(seconds)


@dataclass
class _Waiting:
    call: Callable[[], Awaitable[object]]
    urgent: bool
    order: int
    done: asyncio.Future[None]


class Updates:
    """Updates of messages (`method`, chat.update) waiting for their turn under `pacer`: one
    per message, its latest, and urgent ones first (see the module docstring)."""

    def __init__(self, pacer: Pacer, method: str = "chat.update") -> None:
        self.pacer = pacer
        self.method = method
        self._waiting: dict[tuple[str, str], _Waiting] = {}
        self._order = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._drainer: asyncio.Task[None] | None = None

    async def send(
        self, channel: str, ts: str, call: Callable[[], Awaitable[object]], urgent: bool = False
    ) -> None:
        """Run `call` (an update of message `ts`) in its turn; returns once it, or a newer
        update of that message that replaced it while it waited, was sent (its error raised)."""
        waiting = self._waiting.get((channel, ts))
        if waiting is None:
            done = asyncio.get_running_loop().create_future()
            waiting = _Waiting(call, urgent, next(self._order), done)
            self._waiting[(channel, ts)] = waiting
        else:  # still waiting: only the latest state goes, in the older one's place in line
            waiting.call, waiting.urgent = call, waiting.urgent or urgent
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        await asyncio.shield(waiting.done)

    def __len__(self) -> int:
        return len(self._waiting)

    async def _drain(self) -> None:
        while self._waiting:
            await self.pacer.turn(self.method, None)  # a turn for whichever goes next
            key = min(self._waiting, key=lambda k: self._rank(self._waiting[k]))
            task = asyncio.create_task(self._run(self._waiting.pop(key)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _rank(waiting: _Waiting) -> tuple[bool, int]:
        return (not waiting.urgent, waiting.order)

    @staticmethod
    async def _run(waiting: _Waiting) -> None:
        try:
            await waiting.call()
        except Exception as exc:  # the callers get it
            waiting.done.set_exception(exc)
        else:
            waiting.done.set_result(None)
