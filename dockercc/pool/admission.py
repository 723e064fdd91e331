"""Admission of first turns under a burst (``pool.firstTurnAdmission``).

A new session's first turn costs the CLI 80-150 ms of CPU before its first request. When many
start at once on few cores they share the CPU fairly and all get their first tokens together,
at the end. With admission at most ``limit`` first turns of this process run their CPU-heavy
start at a time, in arrival order: a turn holds its slot until its CLI's API request leaves
through the egress proxy (``ContainerPool.on_api_request``: the CPU-heavy part is done, and the
model's thinking time holds nothing), its first model event (a token, a tool call, a result,
an error or an API retry), or for ``hold_s`` at most.
Process-local: sessions opened by other processes are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class FirstTurnGate:
    """At most ``limit`` holders at a time, served in arrival order; ``limit`` 0: no gate."""

    def __init__(self, limit: int, hold_s: float) -> None:
        self.limit = limit
        self.hold_s = hold_s
        self._held: dict[str, asyncio.TimerHandle | None] = {}
        self._waiting: deque[tuple[str, asyncio.Future[None]]] = deque()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    async def acquire(self, who: str) -> None:
        """Wait for a slot (FIFO); it is released by :meth:`release` or after ``hold_s``."""
        if not self.enabled or who in self._held:
            return
        if len(self._held) < self.limit and not self._waiting:
            self._take(who)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((who, fut))
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(who)  # granted as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove((who, fut))
            raise

    def _take(self, who: str) -> None:
        loop = asyncio.get_running_loop()
        self._held[who] = loop.call_later(self.hold_s, self.release, who)

    def release(self, who: str) -> None:
        """``who``'s first turn is past its CPU-heavy start (or ended): the next one goes."""
        if who not in self._held:
            return
        timer = self._held.pop(who)
        if timer is not None:
            timer.cancel()
        while self._waiting and len(self._held) < self.limit:
            nxt, fut = self._waiting.popleft()
            if fut.done():
                continue
            self._take(nxt)
            fut.set_result(None)

    def holds(self, who: str) -> bool:
        return who in self._held
