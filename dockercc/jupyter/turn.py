"""Run one turn into a stream view, from sync or async notebook code.

The session's events come from its async core: for a sync :class:`~dockercc.Session` on
dockercc's background loop (the portal), for an :class:`~dockercc.AsyncSession` on the
caller's loop. The view is always updated from the caller's thread (outputs must carry the
running cell's parent header). Waiting for the next event has a deadline, so a throttled
update that is due is rendered even when the stream pauses.

Stopping:

* the view's Interrupt button sends an interrupt; the turn ends with an interrupted
  :class:`~dockercc.events.Result`, which is returned;
* Ctrl-C / the kernel's stop button (KeyboardInterrupt, or the cancellation ipykernel uses
  for async cells) interrupts the agent, drains the turn into the view so the session stays
  usable, then raises KeyboardInterrupt;
* a turn ``timeout`` does the same and raises TimeoutError.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
from collections.abc import AsyncIterator
from typing import Any

from .._portal import portal
from ..errors import AgentError
from ..events import Event, Result
from ..session import AsyncSession
from .view import StreamView

__all__ = ["TurnDriver", "DRAIN_TIMEOUT_S"]

log = logging.getLogger("dockercc.jupyter")

DRAIN_TIMEOUT_S = 20.0
_WAIT = object()
_END = object()


async def _anext(agen: AsyncIterator[Event]) -> Event:
    return await agen.__anext__()


class _PortalSource:
    """Events of an async iterator that runs on the portal loop, read from another thread."""

    def __init__(self, agen: AsyncIterator[Event]) -> None:
        self.portal = portal()
        self.agen = agen
        self.fut: concurrent.futures.Future[Event] | None = None
        self.afut: asyncio.Future[Event] | None = None

    def _future(self) -> concurrent.futures.Future[Event]:
        if self.fut is None:
            self.fut = self.portal.submit(_anext(self.agen))
            self.afut = None
        return self.fut

    def _take(self, fut: concurrent.futures.Future[Event] | asyncio.Future[Event]) -> object:
        self.fut = self.afut = None
        try:
            return fut.result()
        except StopAsyncIteration:
            return _END

    def get(self, timeout: float | None) -> object:
        fut = self._future()
        try:
            fut.result(timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            if not fut.done():
                return _WAIT
        except BaseException:
            if not fut.done():  # KeyboardInterrupt while waiting
                raise
        return self._take(fut)

    async def aget(self, timeout: float | None) -> object:
        fut = self._future()
        if self.afut is None:
            self.afut = asyncio.wrap_future(fut)
        afut = self.afut
        done, _ = await asyncio.wait({afut}, timeout=timeout)
        if not done:
            return _WAIT
        return self._take(afut)  # (read the asyncio future: its exception is then retrieved)

    def cancel(self) -> None:
        if self.afut is not None:
            self.afut.cancel()
        if self.fut is not None:
            self.fut.cancel()
        self.fut = self.afut = None

    def close(self) -> None:
        self.cancel()
        with contextlib.suppress(BaseException):
            aclose = getattr(self.agen, "aclose", None)
            if aclose is not None:
                self.portal.run(aclose(), timeout=10)

    async def aclose(self) -> None:
        self.cancel()
        aclose = getattr(self.agen, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(self.portal.submit(aclose()))


class _LoopSource:
    """Events of an async iterator on the running loop (an AsyncSession of the caller's)."""

    def __init__(self, agen: AsyncIterator[Event]) -> None:
        self.agen = agen
        self.task: asyncio.Task[Event] | None = None

    async def aget(self, timeout: float | None) -> object:
        if self.task is None:
            self.task = asyncio.ensure_future(_anext(self.agen))
        done, _ = await asyncio.wait({self.task}, timeout=timeout)
        if not done:
            return _WAIT
        task, self.task = self.task, None
        try:
            return task.result()
        except StopAsyncIteration:
            return _END

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.task = None

    async def aclose(self) -> None:
        task = self.task
        self.cancel()
        if task is not None:
            with contextlib.suppress(BaseException):
                await task
        aclose = getattr(self.agen, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(BaseException):
                await aclose()


class TurnDriver:
    """Sends one prompt and feeds the turn's events to ``view``.

    ``on_portal``: the session runs on dockercc's background loop (sync facade); otherwise
    on the caller's loop (only :meth:`arun` then)."""

    def __init__(self, session: AsyncSession, view: StreamView, *, on_portal: bool,
                 timeout: float | None = None) -> None:
        self.session = session
        self.view = view
        self.on_portal = on_portal
        self.timeout = timeout
        self.result: Result | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[Any] = set()
        view.on_interrupt = self.interrupt_soon

    # -- the Interrupt button --------------------------------------------------------------

    def interrupt_soon(self) -> None:
        """Ask the agent to stop the turn, without blocking (safe from any thread)."""
        if self.on_portal:
            fut = portal().submit(self.session.interrupt())
            fut.add_done_callback(_log_failure)
            return
        loop = self._loop
        if loop is None:
            return

        def go() -> None:
            task = loop.create_task(self.session.interrupt())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(go)

    # -- plumbing --------------------------------------------------------------------------

    def _feed(self, item: object) -> Result | None:
        lease = self.session.lease
        if lease is not None:
            self.view.state.set_container(lease.name)
        if isinstance(item, Result):
            return item
        self.view.feed(item)
        return None

    def _stream(self, prompt: Any) -> AsyncIterator[Event]:
        return self.session.stream(prompt, timeout=self.timeout)

    # -- sync ------------------------------------------------------------------------------

    def run(self, prompt: Any) -> Result:
        """Run the turn, blocking (sync facade sessions only)."""
        if not self.on_portal:
            raise TypeError("a session on the caller's event loop needs `await driver.arun()`")
        self.view.start()
        source = _PortalSource(self._stream(prompt))
        try:
            result = self._pump(source)
        except KeyboardInterrupt:
            source.cancel()
            self.view.finish(result=self._abort(), interrupted=True)
            raise
        except TimeoutError as exc:
            source.cancel()
            self.view.finish(result=self._abort(), error=exc)
            raise
        except BaseException as exc:
            self.view.finish(error=exc)
            raise
        finally:
            source.close()
        self.result = result
        self.view.finish(result=result)
        return result

    def _pump(self, source: _PortalSource) -> Result:
        while True:
            item = source.get(self.view.due_in())
            if item is _WAIT:
                self.view.tick()
                continue
            if item is _END:
                raise AgentError(f"session {self.session.id!r} ended the turn without a result")
            result = self._feed(item)
            if result is not None:
                return result

    def _abort(self) -> Result | None:
        """Interrupt the agent and read the rest of the turn into the view (from this thread:
        the session's :meth:`~dockercc.AsyncSession.stop` runs on the portal and hands the
        events over)."""
        self.view.interrupting()
        events: queue.SimpleQueue[object] = queue.SimpleQueue()
        fut = portal().submit(self.session.stop(DRAIN_TIMEOUT_S, on_event=events.put))
        fut.add_done_callback(lambda _: events.put(_END))
        try:
            while (item := events.get()) is not _END:
                self._feed(item)
            return fut.result()
        except BaseException:  # a second Ctrl-C
            fut.cancel()
            return None

    # -- async -----------------------------------------------------------------------------

    async def arun(self, prompt: Any) -> Result:
        """Run the turn without blocking the caller's loop (widget messages keep flowing)."""
        self._loop = asyncio.get_running_loop()
        self.view.start()
        source: _PortalSource | _LoopSource = (
            _PortalSource(self._stream(prompt)) if self.on_portal
            else _LoopSource(self._stream(prompt)))
        try:
            result = await self._apump(source)
        except (KeyboardInterrupt, asyncio.CancelledError):
            # Ctrl-C, or the cancellation ipykernel turns SIGINT into for an async cell:
            # stop the agent and end the turn before giving up
            source.cancel()
            self.view.finish(result=await self._aabort(), interrupted=True)
            raise
        except TimeoutError as exc:
            source.cancel()
            self.view.finish(result=await self._aabort(), error=exc)
            raise
        except BaseException as exc:
            self.view.finish(error=exc)
            raise
        finally:
            await source.aclose()
        self.result = result
        self.view.finish(result=result)
        return result

    async def _apump(self, source: _PortalSource | _LoopSource) -> Result:
        while True:
            item = await source.aget(self.view.due_in())
            if item is _WAIT:
                self.view.tick()
                continue
            if item is _END:
                raise AgentError(f"session {self.session.id!r} ended the turn without a result")
            result = self._feed(item)
            if result is not None:
                return result

    async def _aabort(self) -> Result | None:
        self.view.interrupting()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            if not self.on_portal:
                return await self.session.stop(DRAIN_TIMEOUT_S, on_event=self._feed)
            loop = asyncio.get_running_loop()

            def feed(event: Event) -> None:  # on the portal's thread: the view is fed on ours
                loop.call_soon_threadsafe(self._feed, event)

            fut = portal().submit(self.session.stop(DRAIN_TIMEOUT_S, on_event=feed))
            try:
                return await asyncio.wrap_future(fut)
            finally:
                fut.cancel()
        return None


def _log_failure(fut: concurrent.futures.Future[Any]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.warning("interrupt failed: %s", exc)
