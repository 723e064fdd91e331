"""The sync facade's background loop (dockercc._portal, anyio's BlockingPortal): sync calls
from scripts, threads and a running event loop; the deadlock guard; cancellation; iterators.
No Docker: plain coroutines stand in for the async core."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from dockercc._portal import portal
from dockercc.errors import DeadlockError


async def where() -> tuple[str, int]:
    await asyncio.sleep(0)
    return threading.current_thread().name, id(asyncio.get_running_loop())


def test_sync_calls_run_on_one_background_loop_from_any_thread() -> None:
    name, loop = portal().run(where())
    assert name == "dockercc-loop" and threading.current_thread().name != name
    with ThreadPoolExecutor(4) as workers:
        seen = set(workers.map(lambda _: portal().run(where()), range(8)))
    assert seen == {(name, loop)}


async def test_a_sync_call_inside_a_running_loop_uses_the_background_loop() -> None:
    # as in a Jupyter cell: the caller's loop is running and is not used
    name, loop = portal().run(where())
    assert name == "dockercc-loop" and loop != id(asyncio.get_running_loop())


def test_tasks_a_call_starts_keep_running_between_calls() -> None:
    """The core starts background tasks (pool monitor, relays) in one call and relies on
    them in the next: the loop runs on between calls."""
    ticks: list[int] = []

    async def start() -> asyncio.Task[None]:
        async def tick() -> None:
            while True:
                ticks.append(1)
                await asyncio.sleep(0.01)

        return asyncio.get_running_loop().create_task(tick())

    task = portal().run(start())
    time.sleep(0.2)
    assert len(ticks) > 3 and not task.done()
    portal().run(_cancel(task))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_sync_call_on_the_loop_thread_raises_deadlock_error() -> None:
    async def nested() -> None:
        portal().run(where())  # the sync API called from the loop's own thread

    with pytest.raises(DeadlockError, match="async API"):
        portal().run(nested())


def test_a_timeout_cancels_the_coroutine() -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        portal().run(slow(), timeout=0.2)
    assert cancelled.wait(5) and time.monotonic() - t0 < 5


def test_errors_propagate_with_their_type() -> None:
    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        portal().run(boom())


def test_iterate_reads_items_and_closes_the_iterator_when_left_early() -> None:
    closed = threading.Event()

    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(100):
                yield i
        finally:
            closed.set()

    out = []
    for n in portal().iterate(numbers()):
        out.append(n)
        if n == 2:
            break
    assert out == [0, 1, 2] and closed.is_set()
    assert list(portal().iterate(numbers())) == list(range(100))


def test_a_stopped_portal_is_replaced_on_next_use() -> None:
    old = portal()
    old.stop()
    assert not old.thread.is_alive()
    new = portal()
    assert new is not old and new.run(where())[0] == "dockercc-loop"
