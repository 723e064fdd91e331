"""The container pool: warm sets, fair limits, health, reaping and shared state in Redis.

Many processes (and later machines) may run a :class:`ContainerPool` on the same Redis and
Docker engine: the registry and every claim live in Redis (see :mod:`.registry`), so they
never hand out one container twice and together respect ``maxTotal``.

Each process is an *owner*: it heartbeats ``pool:owners``, watches the containers it owns
(the ones it created and not handed over, and the ones it claimed), replaces lost ones,
reaps idle ones and tops up its warm sets. At start it removes containers whose owner stopped
heartbeating (a process that was SIGKILLed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from .. import metrics
from ..errors import ContainerLost, PoolError, PoolExhausted, StartupTimeout
from ..storage.values import now_ms
from .core import (
    DEATHS_KEPT,
    LATENCY_BUCKETS_MS,
    NORMAL_CPU_SHARES,
    OOM_BEFORE_DIE_S,
    REFILL_CONCURRENCY,
    REFILL_DELAY_S,
    RESUME_TTL_S,
    RETAINED_KEYS,
    WARM_CPU_SHARES,
    Death,
    Lease,
    LostCallback,
    PoolStats,
    _new_id,
    backend_for,
    finished,
    log,
)
from .health import PoolHealth
from .spec import ContainerSpec, warm_set_key

__all__ = ["ContainerPool", "PoolStats", "Lease", "Death", "LostCallback", "backend_for",
           "RESUME_TTL_S", "RETAINED_KEYS", "WARM_CPU_SHARES", "NORMAL_CPU_SHARES",
           "REFILL_DELAY_S", "REFILL_CONCURRENCY", "LATENCY_BUCKETS_MS", "OOM_BEFORE_DIE_S",
           "DEATHS_KEPT"]


class ContainerPool(PoolHealth):
    """Async pool of agent containers, shared through Redis: starts and closes the pool and
    hands out containers (claims); the parts it builds on are in its bases (see :mod:`.core`)."""

    async def start(self) -> None:
        if self._started:
            return
        await self.transport.ping()
        if self.acl is not None:
            await self.acl.check()
        await self.backend.ping()
        await self._start_egress()
        await self._load_instance()
        await self._heartbeat_owner()
        await self.reconcile()
        self._started = True
        self._monitor = asyncio.create_task(self._monitor_loop(), name="dockercc-pool-monitor")
        self._start_events()
        await self.top_up()

    async def close(self) -> None:
        """Remove every container this process owns and leave the registry clean."""
        try:
            await self._close()
        finally:  # also when Redis is gone: the sockets and their directory go
            with contextlib.suppress(Exception):
                await self._close_egress()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._started and not self._tasks:
            # never started: nothing was created (and Redis may not even be there)
            with contextlib.suppress(Exception):
                await self._close_egress()
            with contextlib.suppress(Exception):
                await self.backend.close()
            return
        watch, self._watch = self._watch, None
        if watch is not None:
            await asyncio.to_thread(watch.close)
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(BaseException):
                await self._monitor
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._creating:  # creates under way in their threads: let them land, then sweep
            await asyncio.wait(list(self._creating), timeout=60)
        try:
            records = await self.records()
        except Exception as exc:  # Redis gone: Docker's labels still say what is ours
            log.warning("pool registry unreadable at close (%s): removing this owner's "
                        "containers by their Docker labels", exc)
            records = None
        await asyncio.gather(*(self._destroy(rec) for rec in records or []
                               if rec.owner == self.owner), return_exceptions=True)
        await self._sweep_own_containers(redis_ok=records is not None)
        with contextlib.suppress(Exception):
            await self.registry.drop_owner(self.owner)
            await self.registry.clear_if_empty()
        with contextlib.suppress(Exception):
            await self._close_egress()
        with contextlib.suppress(Exception):
            await self.backend.close()

    async def claim(self, *, session: str, agent: str, spec: ContainerSpec,
                    assignment: dict[str, Any], timeout: float | None = None,
                    prestart: dict[str, Any] | None = None) -> Lease:
        """Hand a container to ``session``; waits in a fair queue at a limit.

        ``prestart`` (the session's CLI arguments and tools, see :meth:`register_spec`) lets a
        new container start the CLI as its first act, before the runner's own start-up.

        Raises :class:`PoolExhausted` (naming the limit and the counts) when no container
        frees within ``timeout`` (default ``acquireTimeoutMs``), :class:`StartupTimeout` when a
        new container does not come up within ``startupMs``.
        """
        if self._closed:
            raise PoolError("the pool is closed")
        await self.start()
        t0 = time.monotonic()
        base = spec.key()
        key = warm_set_key(base, prestart)
        self._specs.setdefault(key, spec)
        limit_s = self.config.pool.acquire_timeout_ms / 1000 if timeout is None else timeout
        deadline = t0 + limit_s
        ticket = f"{self.owner}:{_new_id()}"
        attempts = 0
        waited = False
        while True:
            new_id = _new_id()
            name = f"{self.config.docker.container_prefix}{session}"
            step = asyncio.ensure_future(self.registry.claim_container(
                warm_set=key, base=base, agent=agent, session=session,
                max_total=self.config.pool.max_total,
                max_per_agent=self.config.pool.max_per_agent, owner=self.owner, new_id=new_id,
                ticket=ticket, ticket_deadline=now_ms() + int(max(3 * self.interval_s, 5) * 1000),
                name=name))
            try:
                res = await asyncio.shield(step)
            except asyncio.CancelledError:
                # the script may have run (its reply was on its way): what it handed this
                # session goes back, else that container stays busy for no one
                await finished(asyncio.ensure_future(self._take_back(step, ticket)))
                raise
            kind = res[0]
            if kind == "wait":
                if not waited:
                    waited = True
                    self._counters["waits"] += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await self.registry.leave_queue(ticket)
                    self._counters["exhausted"] += 1
                    metrics.on_error("PoolExhausted")
                    limit = res[1]
                    limit = "maxTotal" if limit == "queue" else limit
                    total, mine = int(res[2]), int(res[3])
                    raise PoolExhausted(
                        f"no container for session {session!r} (agent {agent!r}) within "
                        f"{limit_s:.1f}s: {limit} reached (total {total}/"
                        f"{self.config.pool.max_total}, agent {mine}/"
                        f"{self.config.pool.max_per_agent}); close sessions or raise the limit",
                        limit=limit, counts={"total": total, "agent": mine,
                                             "maxTotal": self.config.pool.max_total,
                                             "maxPerAgent": self.config.pool.max_per_agent})
                await self._wait_for_release(min(remaining, 0.25))
                continue
            container = res[1]
            restore = assignment.get("restore_from") or None
            renaming: asyncio.Future[str] | None = None
            try:
                if kind == "warm":
                    self._claimed.add(container)
                    # the session's keys, before it is told of them (one round trip)
                    await self.transport.assign(container, assignment, before=() if self.acl is None
                                                else self.acl.grant_command(
                                                    container, session, restore_from=restore))
                    await self._confirm_started(session, container, warm=True)
                    claim_ms = (time.monotonic() - t0) * 1000
                    # renamed for its session in the background (Docker's work is on neither
                    # the first prompt's nor the claim's way); the lease names the container by
                    # the name it gets, and by the warm one if the rename is skipped or fails
                    renaming = self._spawn(self._rename(res[2], name, container))
                    lease = Lease(container, name, True, key, claim_ms, renamed=renaming)
                else:
                    if kind == "evict":
                        old = await self.record(res[2])
                        if old is not None:
                            await self._destroy(old)
                    if self.acl is not None:
                        await self.acl.create(container, session=session, restore_from=restore)
                    self._claimed.add(container)
                    await self.transport.assign(container, assignment)
                    await self._create(container, spec, name=name, agent=agent, session=session,
                                       prestart=None if prestart is None else
                                       {**prestart, "prime": False, "wait": False})
                    await self._confirm_started(session, container, warm=False)
                    lease = Lease(container, name, False, key, (time.monotonic() - t0) * 1000)
                    rec = await self.record(container)
                    if rec is not None and rec.status == "creating":
                        rec.status = "busy"
                        await self._update(rec)
            except (StartupTimeout, ContainerLost) as exc:
                attempts += 1
                await finished(asyncio.ensure_future(self._give_back(res, renaming)))
                self._counters["startup_failures"] += 1
                metrics.on_error("startup_failure")
                if attempts >= 2 or isinstance(exc, StartupTimeout) and kind != "warm":
                    raise
                continue
            except BaseException:
                # in a task of its own: a second cancel of the caller cannot cut it short
                await finished(asyncio.ensure_future(
                    self._give_back(res, renaming, creates=True)))
                raise
            self._counters["claims"] += 1
            self._counters["warm_claims" if lease.warm else "cold_claims"] += 1
            self._latencies.append(lease.claim_ms)
            metrics.on_claim(agent, lease.warm, lease.claim_ms)
            if len(self._latencies) > 10000:
                del self._latencies[:5000]
            if prestart is not None and self.config.pool.demand_min_hits:
                self._spawn(self._record_demand(key, spec, agent, prestart))
            self._spawn(self._refill_later())
            return lease

    async def _take_back(self, step: asyncio.Future[list[str]], ticket: str) -> None:
        """A claim cancelled during its Redis step: once the step has answered, give back
        what it handed over, or leave the fair queue it joined."""
        with contextlib.suppress(BaseException):
            res = await step
            if res[0] == "wait":
                await self.registry.leave_queue(ticket)
            else:
                await self._give_back(res)

    async def _give_back(self, res: list[str], renaming: asyncio.Future[str] | None = None,
                         *, creates: bool = False) -> None:
        """Remove the container a failed or cancelled claim was handed (``res``, the claim
        script's answer; an ``evict`` also the warm container it marked to make room), or
        only its Redis user when its record is gone. ``creates``: the claim may have been
        cancelled during its create."""
        if renaming is not None:  # it rewrites the record: done before the record goes
            await asyncio.wait([renaming])
        if creates and res[0] != "warm" and self._creating:
            # a create cancelled midway goes on in its thread: let it land, then remove it
            await asyncio.wait(list(self._creating), timeout=60)
        for container in [res[1]] + ([res[2]] if res[0] == "evict" else []):
            try:
                rec = await self.record(container)
                if rec is not None:
                    await self._destroy(rec)
                elif container == res[1]:
                    await self._drop_user(container)
            except Exception as exc:  # reconcile and `dockercc gc` find it later
                log.warning("giving back container %s after a failed claim failed: %s",
                            container, exc)

    async def _wait_for_release(self, timeout: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _confirm_started(self, session: str, container: str, *, warm: bool) -> None:
        """Wait until the runner has taken the session (its state names this container)."""
        limit = self.config.timeouts.startup_ms / 1000
        deadline = time.monotonic() + limit
        delay = 0.001
        fast_until = time.monotonic() + 0.1  # a warm runner answers within ms: poll finely
        while time.monotonic() < deadline:
            if await self.transport.sessions.state_field(session, "container") == container:
                return
            await asyncio.sleep(delay)
            delay = 0.001 if time.monotonic() < fast_until else min(delay * 2, 0.05)
            if not warm and delay >= 0.05:
                info = await self.backend.inspect(
                    f"{self.config.docker.container_prefix}{session}")
                if info is None:  # it exited and removed itself (AutoRemove)
                    for _ in range(10):  # its `die` event may be a moment behind
                        if container in self._deaths or self._watch is None:
                            break
                        await asyncio.sleep(0.1)
                    death = self._deaths.get(container)
                    code = death.exit_code if death is not None else None
                    raise ContainerLost(f"container for {session!r} exited during start-up "
                                        f"and was removed (exit code "
                                        f"{'unknown' if code is None else code})")
                if not info.running and info.status in ("exited", "dead"):
                    raise ContainerLost(f"container for {session!r} exited during start-up "
                                        f"(exit code {info.exit_code})")
        raise StartupTimeout(
            f"container {container} did not take session {session!r} within {limit:.1f}s "
            "(startupMs); check `docker logs` of the container and the image")

    async def stats(self) -> PoolStats:
        records = await self.records()
        status = Counter(r.status for r in records)
        metrics.on_pool_sizes(status)
        lat = sorted(self._latencies)
        hist: dict[str, int] = {}
        for b in LATENCY_BUCKETS_MS:
            hist[str(b)] = sum(1 for x in lat if x <= b)
        hist["+Inf"] = len(lat)
        return PoolStats(
            owner=self.owner, total=len(records), warm=status["warm"], busy=status["busy"],
            creating=status["creating"], stopping=status["stopping"],
            owned=sum(1 for r in records if r.owner == self.owner),
            waiting=await self.registry.waiting(),
            claims=self._counters["claims"], warm_claims=self._counters["warm_claims"],
            cold_claims=self._counters["cold_claims"], waits=self._counters["waits"],
            exhausted=self._counters["exhausted"], replacements=self._counters["replacements"],
            lost=self._counters["lost"], reaped=self._counters["reaped"],
            recycled=self._counters["recycled"],
            startup_failures=self._counters["startup_failures"],
            quarantined=await self.registry.quarantined(),
            claim_latency_ms=hist,
            claim_p50_ms=lat[len(lat) // 2] if lat else None,
            claim_p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            per_agent=dict(Counter(r.agent for r in records if r.agent)),
            limits={"maxTotal": self.config.pool.max_total,
                    "maxPerAgent": self.config.pool.max_per_agent,
                    "minWarm": self.config.pool.min_warm},
            isolated=self.isolation[0], isolation=self.isolation[1])
