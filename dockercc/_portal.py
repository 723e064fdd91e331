"""One background event loop per process that runs the async core for the sync facade.

Sync calls submit coroutines to it and block on the result. This works in plain scripts, in
threads, and inside a running event loop (Jupyter): the caller's loop is never used. A sync
call made *on* the portal's own thread (e.g. from an ``on_event`` callback) would wait on
itself forever, so it raises :class:`~dockercc.errors.DeadlockError` instead.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from .errors import DeadlockError

T = TypeVar("T")


class Portal:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dockercc-loop", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def _check(self) -> None:
        if threading.current_thread() is self.thread:
            raise DeadlockError(
                "a sync dockercc call was made from dockercc's own event-loop thread (for "
                "example inside an on_event callback); use the async API (AsyncPool / "
                "AsyncSession) there, or hand the work to another thread")

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        self._check()
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

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
            if aclose is not None and self.loop.is_running():
                fut = asyncio.run_coroutine_threadsafe(aclose(), self.loop)
                try:
                    fut.result(10)
                except BaseException:  # noqa: S110 - best effort on the way out
                    pass

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


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
