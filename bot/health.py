"""What `/healthz` (ready: serve me traffic) and `/livez` (alive: do not restart me) answer.

`/healthz` is 200 only while the store takes a read and a write (`Store.ping`) and Slack answers
`auth.test` for the bot token; otherwise 503 with the reason, so a load balancer waits for this
replica instead of sending it work it cannot record or answer. Each check is cached (the store's
for STORE_TTL_S, Slack's for SLACK_TTL_S), so a health check every few seconds costs a probe
every few seconds at most, and concurrent requests share one probe. `/livez` is 200 whenever the
process serves HTTP: a store or Slack outage is a reason to wait, not to restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.chat import SlackUnreachable, TokenRefused, one_line, who_am_i
from bot.store import Store, StoreUnavailable

logger = logging.getLogger(__name__)

STORE_TTL_S = 5.0
SLACK_TTL_S = 30.0
PROBE_TIMEOUT_S = 5.0

Probe = Callable[[], Awaitable[str | None]]  # None: healthy; else why not


class Check:
    """One cached probe: its last answer is reused for `ttl_s` (read at each call, so tests can
    shorten it), and one probe runs at a time. A change of answer is logged once."""

    def __init__(self, name: str, probe: Probe, ttl_s: Callable[[], float]) -> None:
        self.name = name
        self._probe = probe
        self._ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._answer: str | None = None
        self._at: float | None = None

    def record(self, problem: str | None) -> None:
        """Take `problem` as the probe's answer now (start-up's own check counts as one)."""
        if problem != self._answer:
            if problem is None:
                logger.info("health: %s is ok again", self.name)
            else:
                logger.warning("health: %s failing: %s", self.name, problem)
        self._answer, self._at = problem, time.monotonic()

    async def __call__(self) -> str | None:
        async with self._lock:
            if self._at is None or time.monotonic() - self._at >= self._ttl_s():
                try:
                    async with asyncio.timeout(PROBE_TIMEOUT_S):
                        problem = await self._probe()
                except TimeoutError:
                    problem = f"no answer in {PROBE_TIMEOUT_S:.0f}s"
                self.record(problem)
            return self._answer


class Health:
    """The readiness checks of one running bot: the store, and Slack when it has a client."""

    def __init__(self, store: Store, slack: AsyncWebClient | None) -> None:
        self._store = store
        self._slack = slack
        self.store = Check("the store", self._store_problem, lambda: STORE_TTL_S)
        self.slack = Check("Slack", self._slack_problem, lambda: SLACK_TTL_S)
        # Under Socket Mode: None while the websocket is open, else since when it reconnects.
        self.socket_mode: Callable[[], str | None] | None = None

    async def problems(self) -> dict[str, str]:
        """Each check's name and its answer: "ok" or why not."""
        store, slack = await asyncio.gather(self.store(), self.slack())
        checks = {"store": store or "ok", "slack": slack or "ok"}
        if self.socket_mode is not None:
            checks["socket_mode"] = self.socket_mode() or "connected"
        return checks

    async def _store_problem(self) -> str | None:
        try:
            await self._store.ping()
        except StoreUnavailable as exc:
            return exc.cause
        except Exception as exc:  # a closed store, a bug: still a reason not to send work
            return f"{type(exc).__name__}: {one_line(exc)}"
        return None

    async def _slack_problem(self) -> str | None:
        if self._slack is None:
            return None
        try:
            await who_am_i(self._slack)
        except TokenRefused as exc:
            return f"Slack refuses the bot token ({exc.error})"
        except SlackUnreachable as exc:
            return exc.line
        return None
