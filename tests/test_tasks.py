"""TaskSupervisor: work deferred behind the acks being given, its order, its errors, shutdown."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings

import pytest

from bot.tasks import TaskSupervisor


async def test_deferred_work_waits_for_the_acks_in_flight_then_runs_in_order() -> None:
    tasks = TaskSupervisor(max_defer=5.0, lull=0.02)
    ran: list[str] = []

    async def work(name: str) -> None:
        ran.append(name)

    with tasks.answering(), tasks.answering():  # two requests at once: a burst
        tasks.defer(work("first"), name="first")
        tasks.defer(work("second"), name="second")
        await asyncio.sleep(0.1)
        assert ran == []  # acks are still being given
    answered = time.monotonic()
    await tasks.join()
    assert ran == ["first", "second"]
    assert time.monotonic() - answered >= 0.02  # in a burst, the lull after the last ack
    await tasks.close()


async def test_a_steady_stream_of_acks_delays_deferred_work_by_max_defer_at_most() -> None:
    tasks = TaskSupervisor(max_defer=0.2, lull=0.05)
    started = time.monotonic()
    done = asyncio.Event()

    async def work() -> None:
        done.set()

    async def acks() -> None:
        while not done.is_set():
            with tasks.answering():
                await asyncio.sleep(0.01)

    stream = asyncio.create_task(acks())
    tasks.defer(work(), name="work")
    await asyncio.wait_for(done.wait(), 2)
    waited = time.monotonic() - started
    assert 0.2 <= waited < 1.0
    await stream
    await tasks.close()


async def test_without_acks_deferred_work_starts_at_once() -> None:
    tasks = TaskSupervisor(max_defer=5.0, lull=0.02)
    done = asyncio.Event()

    async def work() -> None:
        done.set()

    started = time.monotonic()
    tasks.defer(work(), name="work")
    await asyncio.wait_for(done.wait(), 1)
    assert time.monotonic() - started < 0.5
    await tasks.close()


async def test_a_deferred_failure_is_reported() -> None:
    tasks = TaskSupervisor()
    reported: list[BaseException] = []

    async def boom() -> None:
        raise ValueError("broken")

    async def report(exc: BaseException) -> None:
        reported.append(exc)

    tasks.defer(boom(), name="boom", on_error=report)
    await tasks.join()
    assert [str(e) for e in reported] == ["broken"]
    await tasks.close()


async def test_close_cancels_deferred_work_that_never_started_without_leaking_it() -> None:
    tasks = TaskSupervisor(max_defer=60.0, lull=60.0)
    ran: list[str] = []

    async def work() -> None:
        ran.append("ran")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tasks.answering():
            task = tasks.defer(work(), name="work")
            await asyncio.sleep(0.05)
            await tasks.close()
        gc.collect()
    assert task.cancelled() and ran == []
    assert not [w for w in caught if "was never awaited" in str(w.message)]
    with pytest.raises(RuntimeError, match="shutting down"):
        tasks.defer(work(), name="late")


async def test_a_lone_commands_work_starts_as_soon_as_its_ack_is_out() -> None:
    tasks = TaskSupervisor(max_defer=5.0, lull=1.0)
    done = asyncio.Event()

    async def work() -> None:
        done.set()

    with tasks.answering():
        tasks.defer(work(), name="work")
        await asyncio.sleep(0.05)
        assert not done.is_set()
    answered = time.monotonic()
    await asyncio.wait_for(done.wait(), 2)
    assert time.monotonic() - answered < 0.5  # no lull: nothing else was being acknowledged
    await tasks.close()
