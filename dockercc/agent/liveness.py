"""Whether Redis answers the runner, and whether anyone still wants it: the Redis link with
its back-off and orphan deadline, and the heartbeat that keeps the container's records
fresh and notices an unclaimed runner whose pool owner is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ReadOnlyError

from ..protocol.keys import PoolKeys, SessionKeys
from .settings import RunnerSettings

log = logging.getLogger("dockercc.agent")

REDIS_DOWN = (OSError, aioredis.ConnectionError, aioredis.TimeoutError, ReadOnlyError)
"""What a Redis outage (or restart, or fail-over: a demoted primary answers READONLY) raises;
loops that meet it wait and go on."""
ORPHAN_EXIT = 75
"""The runner's exit code when it gave up on Redis (``timeouts.orphanMs``): EX_TEMPFAIL, so
``docker ps -a`` tells an orphan's exit from a crash."""
PipeOp = Callable[[Any], None]
"""One command added to a pipeline (the writer's MULTI batches, see :mod:`.relay`)."""
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0


class RedisLink:
    """Whether Redis answers the runner, shared by all its loops.

    Loops report each failure here and sleep the returned back-off (exponential, jittered,
    at most BACKOFF_MAX_S), so an outage costs a handful of tries a minute instead of five a
    second per loop. The log gets one line per change of state (lost, back, given up), never
    one per try: an orphan's log stays a few lines however long it waits. After ``orphan_s``
    without an answer the runner is an orphan (its owner, relay or Redis is gone for good)
    and ``on_orphan`` ends it; a Redis that is back sooner finds the runner (and its claimed
    session) going on as before.
    """

    def __init__(self, orphan_s: float, on_orphan: Callable[[], None],
                 max_backoff_s: float = BACKOFF_MAX_S) -> None:
        self.orphan_s = orphan_s
        self.max_backoff_s = max_backoff_s
        self.on_orphan = on_orphan
        self.down_since: float | None = None
        self.tries = 0
        self.orphaned = False

    def ok(self) -> None:
        if self.down_since is not None:
            log.warning("Redis reachable again after %.1fs (%d failed tries)",
                        time.monotonic() - self.down_since, self.tries)
            self.down_since, self.tries = None, 0

    def backoff(self, what: str, exc: BaseException) -> float:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning("Redis unreachable (%s: %s); retrying with back-off up to %.0fs, "
                        "exiting after %.0fs without it (timeouts.orphanMs)",
                        what, _short(exc), self.max_backoff_s, self.orphan_s)
        self.tries += 1
        if now - self.down_since >= self.orphan_s and not self.orphaned:
            self.orphaned = True
            log.error("Redis unreachable for %.0fs (%d tries): exiting as an orphan",
                      now - self.down_since, self.tries)
            self.on_orphan()
        delay = min(self.max_backoff_s, BACKOFF_FIRST_S * 2 ** min(self.tries, 10))
        return delay * random.uniform(0.5, 1.0)

    async def failed(self, what: str, exc: BaseException,
                     client: aioredis.Redis | None = None) -> None:
        if isinstance(exc, ReadOnlyError) and client is not None:
            # a fail-over demoted the primary this connection reached: drop the pooled
            # connections so the next command reconnects (the relay or Sentinel picks the
            # new primary)
            with contextlib.suppress(Exception):
                await client.connection_pool.disconnect()
        await asyncio.sleep(self.backoff(what, exc))


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]


def now_ms() -> int:
    return int(time.time() * 1000)


class Heartbeat:
    """Every ``healthIntervalMs``: the container's heartbeat (and, once claimed, the session
    state's). It runs in every state, so it is what notices an orphan with nothing else to do:
    Redis gone for ``orphanMs`` (through the link), or an unclaimed runner's pool owner gone."""

    def __init__(self, r: aioredis.Redis, link: RedisLink, settings: RunnerSettings,
                 pool_keys: PoolKeys, claimed: Callable[[], SessionKeys | None],
                 on_orphan: Callable[[], None]) -> None:
        self.r = r
        self.link = link
        self.s = settings
        self.pool_keys = pool_keys
        self.claimed = claimed  # the session's keys once the runner took an assignment
        self.on_orphan = on_orphan

    async def loop(self) -> None:
        ckey = self.pool_keys.container_state(self.s.container)
        interval = max(0.05, self.s.health_interval_ms / 1000)
        while True:
            await asyncio.sleep(interval)
            keys = self.claimed()
            try:
                pipe = self.r.pipeline(transaction=False)
                pipe.hset(ckey, "heartbeat", now_ms())
                if keys is not None:
                    pipe.hset(keys.state, "heartbeat", now_ms())
                else:
                    pipe.hgetall(ckey)
                replies = await pipe.execute()
                self.link.ok()
                if keys is None and self.claimed() is None:
                    self.check_owner(replies[-1])
            except REDIS_DOWN as exc:
                # (this loop runs in every state: it is what notices an orphan that has
                # nothing else to do)
                await self.link.failed("heartbeat", exc, self.r)

    def check_owner(self, record: Any) -> None:
        """An unclaimed runner whose owner stopped refreshing ``owner_heartbeat`` for
        ``orphanMs`` is useless (no one will hand it a session it was made for, and no one
        removes it): it exits. A claimed one never does this (its session owns it now)."""
        raw = record.get(b"owner_heartbeat") if isinstance(record, dict) else None
        try:
            owner_hb = int(raw) if raw else 0
        except ValueError:
            return
        if owner_hb and now_ms() - owner_hb > self.s.orphan_ms and not self.link.orphaned:
            log.error("the pool's owner has not been seen for %.0fs (timeouts.orphanMs): "
                      "exiting as an orphan", (now_ms() - owner_hb) / 1000)
            self.link.orphaned = True
            self.on_orphan()
