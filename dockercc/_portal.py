"""One background event loop per process that runs the async core for the sync facade.

The loop is anyio's :class:`~anyio.from_thread.BlockingPortal` on its own thread
(:func:`anyio.from_thread.start_blocking_portal`). Sync calls submit coroutines to it and block
on the result. This works in plain scripts, in threads, and inside a running event loop
(Jupyter): the caller's loop is never used. What is added here: one portal per process,
started on first use; a sync call made *on* the portal's own thread (e.g. from an
``on_event`` callback) would wait on itself forever, so it raises
:class:`~dockercc.errors.DeadlockError` instead; Ctrl-C while waiting cancels the coroutine;
async iterators are read one item per round trip.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .errors import DeadlockError

T = TypeVar("T")


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Portal:
    def __init__(self) -> None:
        self._exit = contextlib.ExitStack()
        self.portal: BlockingPortal = self._exit.enter_context(
            start_blocking_portal(name="dockercc-loop"))
        self.thread: threading.Thread = self.portal.call(threading.current_thread)

    def _check(self) -> None:
        if threading.current_thread() is self.thread:
            raise DeadlockError(
                "a sync dockercc call was made from dockercc's own event-loop thread (for "
                "example inside an on_event callback); use the async API (AsyncPool / "
                "AsyncSession) there, or hand the work to another thread")

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        try:
            self._check()
        except DeadlockError:
            coro.close()  # (never run: no "never awaited" warning)
            raise
        return self.portal.start_task_soon(_await, coro)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the portal's loop and wait for it. On KeyboardInterrupt the
        coroutine is cancelled and the KeyboardInterrupt propagates."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from sync code, one item per round trip."""
        try:
            while True:
                try:
                    yield self.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and self.thread.is_alive():
                with contextlib.suppress(BaseException):  # best effort on the way out
                    self.portal.start_task_soon(_await, aclose()).result(10)

    def stop(self) -> None:
        """Cancel what still runs and stop the loop; wait for its thread up to 5 s (the
        thread is a daemon: a task that ignores cancellation does not hold up the exit)."""
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # (already stopping)
                self.portal.start_task_soon(self.portal.stop, True)
            self.thread.join(5)
        if not self.thread.is_alive():
            self._exit.close()


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


_portal: Portal | None = None
_lock = threading.Lock()


def portal() -> Portal:
    """The process's portal (started on first use)."""
    global _portal
    with _lock:
        if _portal is None or not _portal.thread.is_alive():
            _portal = Portal()
        return _portal


@atexit.register
def _shutdown() -> None:
    if _portal is not None:
        _portal.stop()
