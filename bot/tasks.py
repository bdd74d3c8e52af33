"""Background work the application owns: tracked, reported on failure, cancelled on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

ErrorReporter = Callable[[BaseException], Awaitable[None]]


class TaskSupervisor:
    """Starts tasks the app owns; `close()` cancels and awaits every one still running."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._services: set[asyncio.Task[Any]] = set()
        self._closed = False

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

    async def _guard(
        self, coro: Coroutine[Any, Any, Any], name: str, on_error: ErrorReporter | None
    ) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_error is None:
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
        tasks = [*self._tasks, *self._services]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            logger.info("cancelled %d background task(s)", len(tasks))
