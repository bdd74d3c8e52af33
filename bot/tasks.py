"""Background work the application owns: tracked, reported on failure, cancelled on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from bot.errors import UserError

logger = logging.getLogger(__name__)

ErrorReporter = Callable[[BaseException], Awaitable[None]]

DEFER_MAX_S = 1.0  # a deferred task runs at the latest this long after it was started
LULL_S = 0.02  # ...and before that once no request has been in acknowledgement for this long
RELEASE_BATCH = 8  # deferred tasks let go at a time before requests read meanwhile are served


@dataclass
class _Turn:
    started: asyncio.Future[None]  # resolved when the deferred task may run
    due: float  # time.monotonic(): start then even if requests are still being acknowledged


class TaskSupervisor:
    """Starts tasks the app owns; `close()` cancels and awaits every one still running.

    A task that `defer()` starts (what a command does after Slack's ack, a webhook's launch)
    yields to the acks: it runs once no request is in acknowledgement (see `answering()`) and,
    in a burst of requests, none has been for `lull` seconds; or `max_defer` seconds after it
    was started, whichever comes first. A lone command's work starts as soon as its ack is out.
    """

    def __init__(self, *, max_defer: float = DEFER_MAX_S, lull: float = LULL_S) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._services: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.max_defer = max_defer
        self.lull = lull
        self._turns: deque[_Turn] = deque()
        self._releaser: asyncio.Task[None] | None = None
        self._answering = 0
        self._answered_at = 0.0  # time.monotonic() when the last acknowledgement was given
        self._burst = False  # whether the last request came in a burst of them (see answering)
        self._quiet = asyncio.Event()
        self._quiet.set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str,
        on_error: ErrorReporter | None = None,
        service: bool = False,
    ) -> asyncio.Task[Any]:
        """Run `coro` in the background; an exception goes to `on_error` (and the log).

        A `service` runs for the app's lifetime (the watcher): `join()` does not wait for it.
        """
        if self._closed:
            coro.close()
            raise RuntimeError("the bot is shutting down")
        task = asyncio.create_task(self._guard(coro, name, on_error), name=name)
        group = self._services if service else self._tasks
        group.add(task)
        task.add_done_callback(group.discard)
        return task

    def defer(
        self, coro: Coroutine[Any, Any, Any], *, name: str, on_error: ErrorReporter | None = None
    ) -> asyncio.Task[Any]:
        """Like `spawn`, but `coro` waits until the requests being acknowledged are answered (at
        most `max_defer` seconds under a steady stream of them); deferred tasks run in order."""
        if self._closed:
            coro.close()
            raise RuntimeError("the bot is shutting down")
        turn = _Turn(asyncio.get_running_loop().create_future(), time.monotonic() + self.max_defer)
        self._turns.append(turn)
        if self._releaser is None:
            self._releaser = asyncio.create_task(self._release(), name="deferred work")
        return self.spawn(self._when_started(turn.started, coro), name=name, on_error=on_error)

    @staticmethod
    async def _when_started(started: asyncio.Future[None], coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            await started
        except BaseException:  # cancelled before its turn
            coro.close()
            raise
        return await coro

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Mark a request as being acknowledged: deferred tasks wait until none is."""
        # Part of a burst: it came while another was in flight or soon after the last ack.
        self._burst = bool(self._answering) or time.monotonic() - self._answered_at < self.lull
        self._answering += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._answering -= 1
            self._answered_at = time.monotonic()
            if not self._answering:
                self._quiet.set()

    async def _release(self) -> None:
        """Start deferred tasks in order, each once it is due or the acks are out."""
        released = 0
        try:
            while self._turns:
                turn = self._turns[0]
                now = time.monotonic()
                due = turn.due - now
                lull = self._answered_at + self.lull - now
                if turn.started.done():  # cancelled while it waited
                    self._turns.popleft()
                elif due > 0 and self._answering:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(due):
                            await self._quiet.wait()
                elif due > 0 and lull > 0 and self._burst:
                    await asyncio.sleep(min(due, lull))
                else:
                    self._turns.popleft()
                    turn.started.set_result(None)
                    released += 1
                    if released % RELEASE_BATCH == 0:
                        await asyncio.sleep(0)  # requests read meanwhile are acknowledged first
        finally:
            self._releaser = None

    async def _guard(
        self, coro: Coroutine[Any, Any, Any], name: str, on_error: ErrorReporter | None
    ) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_error is None:
                if isinstance(exc, UserError):  # expected, and says what it is: one line
                    logger.warning("background task %s failed: %s", name, exc)
                else:
                    logger.exception("background task %s failed", name)
                return
            try:
                await on_error(exc)
            except Exception:
                logger.exception("reporting the failure of %s failed too", name)

    async def join(self) -> None:
        """Wait for every task running now (tests use it to let work finish)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        if self._releaser is not None:
            self._releaser.cancel()
            await asyncio.gather(self._releaser, return_exceptions=True)
        tasks = [*self._tasks, *self._services]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            logger.info("cancelled %d background task(s)", len(tasks))
