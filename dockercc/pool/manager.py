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
import functools
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from .. import metrics
from ..config import DockerCCConfig
from ..egress import EgressPolicy, EgressProxy, UnixRelay, Upstream
from ..egress.proxy import relay_target
from ..errors import ContainerLost, PoolError, PoolExhausted, StartupTimeout
from ..protocol import transcript as sealing
from ..protocol.envelope import encode_envelope, runner_event
from ..storage.acl import ContainerACL
from ..storage.connection import RedisTransport
from ..storage.records import ContainerRecord
from ..storage.registry import Rejected, Released
from ..storage.sentinel import current_primary, is_sentinel_url
from ..storage.values import now_ms
from ..transcript_key import load_key
from .backend import LABEL, Backend, ContainerInfo, DockerBackend
from .spec import (
    ContainerSpec,
    runner_env,
    scratch_volume_name,
    set_base,
    shareable_args,
    spec_for,
    warm_set_key,
)

log = logging.getLogger("dockercc.pool")

LostCallback = Callable[[str, str], Awaitable[None] | None]
WARM_CPU_SHARES = 128
"""CPU weight of a warm container while it starts (Docker's default is 1024), restored once it
is ready: refilling the warm set (a new container, its runner and a pre-started CLI, about a
CPU-second) then barely slows down the sessions that are running, which matters on a machine
with few cores."""
NORMAL_CPU_SHARES = 1024
REFILL_DELAY_S = 1.0
"""How long after a claim the warm set is topped up again (the claimed session goes first)."""
REFILL_CONCURRENCY = 2
"""Warm containers started at the same time (Docker's create/start work is not weighted)."""
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)



def backend_for(config: DockerCCConfig) -> Backend:
    """The backend ``docker.backend`` names (``docker`` unless set otherwise)."""
    if config.docker.backend == "local":
        from .local import LocalBackend

        return LocalBackend()
    return DockerBackend(config.docker.base_url)


class PoolStats(BaseModel):
    """Counts and figures for ``status`` and the health endpoint."""

    owner: str
    total: int = 0
    warm: int = 0
    busy: int = 0
    creating: int = 0
    stopping: int = 0
    owned: int = 0
    waiting: int = 0
    claims: int = 0
    warm_claims: int = 0
    cold_claims: int = 0
    waits: int = 0
    exhausted: int = 0
    replacements: int = 0
    lost: int = 0
    reaped: int = 0
    recycled: int = 0
    startup_failures: int = 0
    quarantined: int = 0
    claim_latency_ms: dict[str, int] = Field(default_factory=dict,
                                             description="histogram: bucket upper bound -> count")
    claim_p50_ms: float | None = None
    claim_p99_ms: float | None = None
    per_agent: dict[str, int] = Field(default_factory=dict)
    limits: dict[str, int] = Field(default_factory=dict)
    isolated: bool = Field(False, description="each container has a Redis ACL user of its own")
    isolation: str = Field("", description="how the containers are kept apart in Redis, or why "
                                          "they are not")


@dataclass
class Lease:
    """A container handed to one session."""

    container: str
    name: str
    warm: bool
    spec: str
    claim_ms: float


RESUME_TTL_S = 7 * 24 * 3600
"""How long a closed session stays resumable (its state, history, result and transcript)."""
RETAINED_KEYS = ("state", "history", "result", "transcript")


OOM_BEFORE_DIE_S = 5.0
DEATHS_KEPT = 1000
"""How many containers' death notes (exit code, OOM) a pool keeps from Docker's events."""


@dataclass
class Death:
    """What Docker's events said about a container that died."""

    died: bool = False
    exit_code: int | None = None
    died_at: float = 0.0
    oom_at: float | None = None

    @property
    def oom_killed(self) -> bool:
        """Died of the memory limit: an ``oom`` shortly before its ``die`` (an ``oom`` of a
        child process the container survived, long before, does not count)."""
        return self.died and self.oom_at is not None and \
            0 <= self.died_at - self.oom_at <= OOM_BEFORE_DIE_S


def _new_id() -> str:
    return secrets.token_hex(6)


class ContainerPool:
    """Async pool of agent containers, shared through Redis."""

    def __init__(self, config: DockerCCConfig, transport: RedisTransport, *,
                 backend: Backend | None = None, owner: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self.transport = transport
        self.backend: Backend = backend or backend_for(config)
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.pk = transport.pool_keys
        self.registry = transport.registry
        self._env = env
        self._specs: dict[str, ContainerSpec] = {}
        self._warm_specs: dict[str, int] = {}
        self._prestart: dict[str, dict[str, Any]] = {}
        #: demand warm sets this process can make: set key -> last demand (ms), recomputed
        #: from ``pool:demand`` at every top-up (see :meth:`_demand_sets`)
        self._demand: dict[str, int] = {}
        #: what this process's own sessions asked for (set key -> spec, pre-start): a demand
        #: set whose recipe is not in Redis (not shareable) is made from here
        self._seen: dict[str, tuple[ContainerSpec, dict[str, Any]]] = {}
        self._refill_slots = asyncio.Semaphore(REFILL_CONCURRENCY)
        self._refill_due = False
        self._monitor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._creating: set[asyncio.Future[str]] = set()
        self._wake = asyncio.Event()
        self._lost_callbacks: list[LostCallback] = []
        self._api_request_callbacks: list[Callable[[str], None]] = []
        self._counters: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._started = False
        self._closed = False
        self.instance = ""
        self._checked_ms = 0  # when the last health pass looked at the heartbeats
        #: the egress proxy of the containers this process creates on the `none` network
        #: (they keep using it after another process claims them: it lives as long as we do)
        self.egress: EgressProxy | None = None
        #: the unix-socket relay to a TCP Redis for those containers
        self.relay: UnixRelay | None = None
        self._grace_until = 0  # no "heartbeat stale" verdicts before this (ms)
        #: the Docker events stream (die, oom, destroy of this pool's containers)
        self._watch: Any = None
        #: containers this process is ending on purpose, or already reporting as lost: an
        #: event about them is no (new) loss
        self._ending: set[str] = set()
        #: what Docker's events said about a container's death (pool id -> Death): containers
        #: remove themselves when they exit (AutoRemove), so an inspect after the fact finds
        #: nothing; the exit code and the OOM verdict are kept from the events instead
        self._deaths: dict[str, Death] = {}
        #: the containers' own Redis users (None with ``redis.containerAcl: false``)
        self.acl: ContainerACL | None = (transport.container_acl()
                                         if config.redis.container_acl else None)

    @property
    def isolation(self) -> tuple[bool, str]:
        """Are the containers kept apart in Redis, and how (or why not)."""
        if not self.backend.isolated:
            return False, self.backend.isolation_note
        if self.acl is None:
            return False, ("redis.containerAcl is false: every runner has the pool's own Redis "
                           "rights and can reach every session's keys")
        return True, ("each container's runner has a Redis ACL user of its own, limited to its "
                      "pool record and its session's keys and channels")

    # -- settings --------------------------------------------------------------------------

    @property
    def interval_s(self) -> float:
        return self.config.timeouts.health_interval_ms / 1000

    @property
    def stale_ms(self) -> int:
        t = self.config.timeouts
        return t.health_interval_ms * t.stale_after_misses

    @property
    def labels_base(self) -> dict[str, str]:
        """Labels that select this pool's containers: the seed's label, the key prefix and
        the Redis instance (two Redis servers with one prefix on one engine stay apart)."""
        labels = {LABEL: "1", f"{LABEL}.prefix": self.transport.prefix}
        if self.instance:
            labels[f"{LABEL}.instance"] = self.instance
        return labels

    async def _load_instance(self, *, create: bool = True) -> None:
        """The pool's identity in this Redis (made by the first pool that starts on it)."""
        self.instance = await self.registry.instance(create=create)

    def on_lost(self, callback: LostCallback) -> None:
        """``callback(session, reason)`` runs when a busy container is lost."""
        self._lost_callbacks.append(callback)

    def on_api_request(self, callback: Callable[[str], None]) -> None:
        """``callback(container)`` runs (on the loop) as a container's API request leaves
        through the egress proxy (containers on the ``none`` network only)."""
        self._api_request_callbacks.append(callback)

    def _api_request(self, container: str) -> None:
        for cb in self._api_request_callbacks:
            cb(container)

    def register_spec(self, spec: ContainerSpec, *, warm: int | None = None,
                      prestart: dict[str, Any] | None = None) -> str:
        """Make a warm set known (and keep ``warm`` containers of it ready); returns its key.

        ``prestart`` (``{"args", "tools", "tools_digest"}``: the agent's default session)
        makes warm containers of this spec start their CLI before the claim. The set's key is
        the spec key plus a fingerprint of those arguments (:func:`.spec.warm_set_key`): a
        session is served from the set whose CLI was pre-started for its arguments.
        """
        key = warm_set_key(spec.key(), prestart)
        self._specs[key] = spec
        if warm is not None:
            self._warm_specs[key] = warm
        if prestart is not None:
            self._prestart[key] = prestart
        return key

    # -- life ------------------------------------------------------------------------------

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

    async def _start_egress(self) -> None:
        """The egress proxy (and Redis relay) for containers on the `none` network."""
        if self.config.docker.network != "none" or self.egress is not None:
            return
        e = self.config.egress
        proxy = EgressProxy(runtime_dir=e.runtime_dir, max_connections=e.max_connections,
                            connect_timeout=e.connect_timeout_ms / 1000,
                            idle_timeout=e.idle_timeout_ms / 1000,
                            on_api_request=self._api_request)
        await proxy.start()
        self.egress = proxy
        url = self.config.redis.url_secret()
        if self.config.redis.container_url is None and is_sentinel_url(url):
            # the runners keep one unix:// URL; the relay asks the sentinels for the primary
            # on every connection, so a fail-over is followed by reconnecting
            self.relay = await UnixRelay(proxy.directory / "redis.sock", "", 0,
                                         resolve=functools.partial(current_primary, url)).start()
        elif self.config.redis.container_url is None and url.startswith("redis://"):
            host, port = relay_target(url)
            self.relay = await UnixRelay(proxy.directory / "redis.sock", host, port).start()

    async def _close_egress(self) -> None:
        relay, self.relay = self.relay, None
        if relay is not None:
            await relay.close()
        proxy, self.egress = self.egress, None
        if proxy is not None:
            await proxy.close()

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

    async def _sweep_own_containers(self, *, redis_ok: bool) -> None:
        """Remove every container this owner created that is still on the engine.

        The registry is not asked: a Redis that stopped (or lost its data) must not leave
        containers behind. The owner label is set at create time and only this process
        knows its owner id, so this never touches another process's containers.
        """
        try:
            found = await self.backend.list({**self.labels_base, f"{LABEL}.owner": self.owner})
        except Exception as exc:
            log.warning("listing this owner's containers failed: %s", exc)
            return
        for info in found:
            if info.labels.get(f"{LABEL}.owner") != self.owner:
                continue
            cid = info.labels.get(f"{LABEL}.container", "")
            if cid and redis_ok:  # (without Redis its users went with it, or gc takes them)
                await self._drop_user(cid)
            try:
                await self.backend.remove(info.id)
            except Exception as exc:
                log.warning("removing %s failed: %s", info.name, exc)
            if cid and redis_ok:
                await self._drop_scratch_volume(cid)
            if self.egress is not None and cid:
                with contextlib.suppress(Exception):
                    await self.egress.remove(cid)

    def _start_events(self) -> None:
        """Docker's ``die``/``oom``/``destroy`` events make a loss known at once; the health
        pass keeps polling as the fallback (a backend without events, a stream that broke)."""
        if self._watch is not None:
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_event(event: dict[str, Any]) -> None:  # (the watcher's thread)
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(queue.put_nowait, event)

        self._watch = self.backend.watch(self.labels_base, on_event)
        self._spawn(self._events_loop(queue))

    async def _events_loop(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._on_docker_event(event)
            except Exception as exc:  # the health pass will see it
                log.warning("handling Docker event %s failed: %s", event.get("Action"), exc)

    def _note_death(self, cid: str, action: str, attrs: dict[str, Any]) -> None:
        """Keep what a ``oom`` / ``die`` event says (the container may be gone by the time
        anyone asks Docker: it removes itself)."""
        death = self._deaths.pop(cid, None) or Death()
        if action == "oom":
            death.oom_at = time.monotonic()
        elif action == "die":
            death.died, death.died_at = True, time.monotonic()
            with contextlib.suppress(TypeError, ValueError):
                death.exit_code = int(attrs.get("exitCode"))  # type: ignore[arg-type]
        self._deaths[cid] = death
        while len(self._deaths) > DEATHS_KEPT:  # oldest first (insertion order)
            del self._deaths[next(iter(self._deaths))]

    async def _on_docker_event(self, event: dict[str, Any]) -> None:
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        action = str(event.get("Action") or event.get("status") or "")
        cid = attrs.get(f"{LABEL}.container", "")
        if not cid:
            return
        if action in ("oom", "die") and attrs.get(f"{LABEL}.prefix") == self.transport.prefix:
            self._note_death(cid, action, attrs)
        if action == "oom" or cid in self._ending:
            return  # (an OOM kill is followed by its `die`: the loss is reported then)
        rec = await self.record(cid)
        if rec is None or rec.owner != self.owner or rec.status != "busy":
            return  # warm and other owners' containers: the health pass replaces them
        info = None
        if action == "die":
            found = await self.backend.inspect(str(event.get("id") or attrs.get("name", "")))
            info = found if self._is_ours(found, cid) else None
            if info is not None and info.running:
                return  # (restarted meanwhile)
        self._counters["lost_by_event"] += 1
        await self._lost(rec, self._lost_reason(info, stale=False, death=self._deaths.get(cid)))

    # -- budgets (the ledger's rules are in dockercc.budget) ---------------------------------

    async def admit_turn(self, hold: str, agent: str,
                         limits: list[tuple[str, float, float, str]]
                         ) -> tuple[bool, str, float, float]:
        """Admit one turn under ``limits`` (scope, window s, limit USD, agent filter or ``""``)
        and hold its place, atomically across processes (:data:`BUDGET_ADMIT`): ``(True, "",
        estimate, 0)`` or ``(False, scope, spent, held)``."""
        from ..budget import HOLD_MS

        await self._heartbeat_owner()  # (our own holds count as alive in any case)
        return await self.transport.budget.admit(
            hold=hold, agent=agent, owner=self.owner, stale_ms=max(self.stale_ms, 1000),
            hold_ms=HOLD_MS, limits=limits)

    async def settle_turn(self, hold: str, member: str = "", entry: str = "") -> bool:
        """End a turn's hold and put its cost in the ledger (``member`` ``session:seq``,
        ``entry`` its JSON), atomically and idempotently (:data:`BUDGET_SETTLE`); no
        ``member``: release the hold only. True when the cost was new."""
        from ..budget import KEEP_S

        return await self.transport.budget.settle(hold, member, entry, KEEP_S * 1000)

    async def _heartbeat_owner(self) -> None:
        await self.registry.heartbeat_owner(self.owner)

    # -- registry --------------------------------------------------------------------------

    async def records(self) -> list[ContainerRecord]:
        records, rejected = await self.registry.records()
        self._note_rejected(rejected)
        return records

    async def record(self, container: str) -> ContainerRecord | None:
        rec, rejected = await self.registry.record(container)
        self._note_rejected([rejected] if rejected is not None else [])
        return rec

    def _note_rejected(self, rejected: list[Rejected]) -> None:
        """A record that fails validation (forged or corrupted: anything that can write the
        registry can write one) is moved to ``pool:quarantine`` by the reader and logged,
        never used to remove or claim anything."""
        for bad in rejected:
            if bad.moved:
                self._counters["quarantined"] += 1
                log.warning("registry record %r quarantined: %s", bad.field[:64], bad.why)

    def _is_ours(self, info: ContainerInfo | None, container: str | None = None) -> bool:
        """A container the pool may remove or rename: labelled with this pool's prefix and
        instance (and with ``container`` as its registry id, when given). A record's name
        alone proves nothing: anyone who can write the registry can name any container."""
        if info is None or not info.id:
            return False
        want = dict(self.labels_base)
        if container is not None:
            want[f"{LABEL}.container"] = container
        return all(info.labels.get(k) == v for k, v in want.items())

    async def _update(self, rec: ContainerRecord) -> None:
        await self.registry.put_record(rec)

    async def _notify(self) -> None:
        with contextlib.suppress(Exception):
            await self.registry.notify_released()
        self._wake.set()

    # -- claim / release -------------------------------------------------------------------

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
            res = await self.registry.claim_container(
                warm_set=key, base=base, agent=agent, session=session,
                max_total=self.config.pool.max_total,
                max_per_agent=self.config.pool.max_per_agent, owner=self.owner, new_id=new_id,
                ticket=ticket, ticket_deadline=now_ms() + int(max(3 * self.interval_s, 5) * 1000),
                name=name)
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
            try:
                if kind == "warm":
                    if self.acl is not None:  # the session's keys, before it is told of them
                        await self.acl.grant(container, session, restore_from=restore)
                    await self.transport.assign(container, assignment)
                    await self._confirm_started(session, container, warm=True)
                    lease = Lease(container, res[2], True, key,
                                  (time.monotonic() - t0) * 1000)
                    self._spawn(self._rename(res[2], name, container))
                else:
                    if kind == "evict":
                        old = await self.record(res[2])
                        if old is not None:
                            await self._destroy(old)
                    if self.acl is not None:
                        await self.acl.create(container, session=session, restore_from=restore)
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
                rec = await self.record(container)
                if rec is not None:
                    await self._destroy(rec)
                else:
                    await self._drop_user(container)
                self._counters["startup_failures"] += 1
                metrics.on_error("startup_failure")
                if attempts >= 2 or isinstance(exc, StartupTimeout) and kind != "warm":
                    raise
                continue
            except BaseException:
                rec = await self.record(container)
                if rec is not None:
                    await self._destroy(rec)
                else:
                    await self._drop_user(container)
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

    async def _rename(self, old: str, new: str, container: str) -> None:
        """Warm containers get the session's name, so ``docker logs clawdbot-cc-<session>``
        works as the seed says."""
        if old == new:
            return
        try:
            # the Docker id of the container labelled for this record, not the record's name
            found = [i for i in await self.backend.list(
                {**self.labels_base, f"{LABEL}.container": container})
                if self._is_ours(i, container)]
            if len(found) != 1:
                return
            await self.backend.rename(found[0].id, new)
        except Exception as exc:  # a stale container of that name: keep the warm name
            log.debug("rename %s -> %s skipped: %s", old, new, exc)
            return
        rec = await self.record(container)
        if rec is not None:
            rec.name = new
            await self._update(rec)

    async def _create(self, container: str, spec: ContainerSpec, *, name: str, agent: str = "",
                      session: str = "", prestart: dict[str, Any] | None = None,
                      cpu_shares: int | None = None) -> str:
        labels = {**self.labels_base, f"{LABEL}.owner": self.owner,
                  f"{LABEL}.container": container, f"{LABEL}.spec": spec.key(),
                  f"{LABEL}.agent": agent, f"{LABEL}.session": session}
        env = runner_env(spec, container=container, prefix=self.transport.prefix,
                         health_interval_ms=self.config.timeouts.health_interval_ms,
                         prestart=prestart, orphan_ms=self.config.timeouts.orphan_ms,
                         permission_ms=self.config.timeouts.permission_ms)
        if self.config.logging.format == "json":  # the runner logs like its gateway
            env["DOCKERCC_LOG_FORMAT"] = "json"
        if self.config.logging.level != "INFO":
            env["DOCKERCC_LOG_LEVEL"] = self.config.logging.level
        if self.acl is not None:
            if not self.acl.has_password(container):  # a warm container: its record only
                await self.acl.create(container)
            env["DOCKERCC_REDIS_URL"] = self.acl.runner_url(env["DOCKERCC_REDIS_URL"], container)
        if spec.egress is not None:
            await self._start_egress()
            if self.egress is None:
                raise PoolError("containers on the `none` network need the egress proxy, "
                                "which runs only with docker.network: none")
            directory = await self.egress.add(container, EgressPolicy(spec.egress),
                                              spec.upstream or Upstream(), agent=agent)
            update: dict[str, Any] = {"egress_dir": str(directory)}
            if spec.redis_relay:
                if self.relay is None:
                    raise PoolError("no Redis relay for a container on the `none` network "
                                    "(set redis.containerUrl, or use a redis:// URL)")
                update["redis_relay_socket"] = str(self.relay.path)
            spec = spec.model_copy(update=update)
        made = asyncio.ensure_future(self.backend.create(spec, name=name, labels=labels,
                                                         env=env, cpu_shares=cpu_shares))
        # a create cancelled midway (the pool closing) still finishes in its thread: close()
        # waits for it, so its sweep finds the container
        self._creating.add(made)
        made.add_done_callback(self._creating.discard)
        return await asyncio.shield(made)

    async def _restore_cpu(self, docker_id: str, name: str) -> None:
        """A warm container that is ready gets the normal CPU weight (see WARM_CPU_SHARES)."""
        if not docker_id:
            return
        try:
            await self.backend.set_cpu_shares(docker_id, NORMAL_CPU_SHARES)
        except Exception as exc:
            log.debug("restoring the CPU weight of %s failed: %s", name, exc)

    async def retiring(self, container: str) -> None:
        """Its session is about to stop this container on purpose: its exit is no loss."""
        rec = await self.record(container)
        if rec is not None and rec.status == "busy":
            rec.status = "stopping"
            await self._update(rec)

    async def release(self, container: str, *, reason: str = "closed") -> None:
        """Remove a container and free its slot."""
        rec = await self.record(container)
        if rec is not None:
            await self._destroy(rec)

    async def _drop_user(self, container: str) -> None:
        """Delete a container's Redis user (its connections end with it)."""
        if self.acl is None:
            return
        try:
            await self.acl.delete(container)
        except Exception as exc:  # gc and reconcile repeat it
            log.warning("deleting the Redis user of container %s failed: %s", container, exc)

    async def _destroy(self, rec: ContainerRecord) -> None:
        lost = rec.id in self._ending  # (_lost removes what it reports: it stays marked)
        self._ending.add(rec.id)
        try:
            await self._destroy_now(rec)
        finally:
            if not lost:
                self._ending.discard(rec.id)

    async def _drop_scratch_volume(self, container: str) -> None:
        """Remove a removed container's scratch workspace volume (``docker.scratchVolumes``)
        unless a session took it (``{p}pool:scratch``): never claimed, or claimed by a
        session that failed before it adopted the volume (a start-up timeout, ...). A
        session's own volume stays for it (docs/workspaces.md#persistence)."""
        if not self.config.docker.scratch_volumes:
            return
        volume = scratch_volume_name(container)
        with contextlib.suppress(Exception):
            if await self.transport.sessions.scratch_owner(volume) is not None:
                return
            await self.backend.remove_volume(volume)

    async def _destroy_now(self, rec: ContainerRecord) -> None:
        # its Redis rights go first: nothing it does while Docker removes it reaches Redis
        await self._drop_user(rec.id)
        if rec.status == "warm":
            await self.registry.retire_warm(rec.id, rec.spec)
        try:
            # by label and Docker id, never by the record's name: a warm container may be
            # renamed for its session meanwhile, and a forged record may name any container
            # on the engine; only one carrying this pool's labels for this id is removed
            found = await self.backend.list({**self.labels_base, f"{LABEL}.container": rec.id})
            for ref in {i.id for i in found if self._is_ours(i, rec.id)}:
                await self.backend.remove(ref)
        except Exception as exc:
            log.warning("removing %s failed: %s", rec.name, exc)
        await self._drop_scratch_volume(rec.id)
        if self.egress is not None:
            await self.egress.remove(rec.id)
        await self.registry.remove_container(rec.id, rec.spec)
        await self._notify()

    # -- warm sets -------------------------------------------------------------------------

    def _warm_targets(self) -> dict[str, int]:
        """Every warm set's target: the configured ones, then the demand sets."""
        out = {k: v for k, v in self._warm_specs.items() if v > 0}
        want = self.config.pool.demand_warm
        for key in self._demand:
            if want > out.get(key, 0):
                out[key] = want
        return out

    # -- demand warm sets ------------------------------------------------------------------

    async def _record_demand(self, key: str, spec: ContainerSpec, agent: str,
                             prestart: dict[str, Any]) -> None:
        """Count one session's demand for warm set ``key`` in ``pool:demand`` (shared by every
        process on this Redis). The recipe (spec key, agent, mounts, pre-start) is stored
        only when it holds no secret: the spec's environment never goes (another process
        rebuilds the spec from its own config and checks the key), and arguments go only when
        :func:`.spec.shareable_args` says so; else only this process can make the set."""
        self._seen[key] = (spec, prestart)
        while len(self._seen) > 256:
            self._seen.pop(next(iter(self._seen)))
        recipe = ""
        if shareable_args(prestart.get("args") or []):
            recipe = json.dumps({"base": spec.key(), "agent": agent,
                                 "mounts": [list(m) for m in spec.mounts],
                                 "prestart": prestart}, separators=(",", ":"), default=str)
            if len(recipe) > 256 * 1024:
                recipe = ""
        try:
            await self.registry.record_demand(key, self.config.pool.demand_window_ms, recipe)
        except Exception as exc:
            log.warning("recording warm-set demand failed: %s", exc)

    def _recipe(self, key: str, entry: dict[str, Any]) -> tuple[ContainerSpec, dict[str, Any]
                                                                 ] | None:
        """The spec and pre-start of a demand set, if this process can make it."""
        if key in self._seen:
            return self._seen[key]
        recipe = entry.get("recipe")
        if not isinstance(recipe, dict):
            return None
        try:
            prestart = recipe["prestart"]
            agent = recipe.get("agent") or "main"
            if not isinstance(prestart, dict) or not isinstance(prestart.get("args"), list):
                return None
            spec = spec_for(self.config, str(agent), env=self._env)
            mounts = tuple((str(k), str(s), str(t), bool(ro))
                           for k, s, t, ro in recipe.get("mounts") or [])
            if mounts:
                spec = spec.model_copy(update={"mounts": mounts})
        except Exception:
            return None
        if warm_set_key(spec.key(), prestart) != key or set_base(key) != recipe.get("base"):
            return None  # (this process's config makes another container: not ours to make)
        return spec, prestart

    async def _demand_sets(self) -> None:
        """Which demand sets to keep warm now: seen ``demandMinHits`` times within
        ``demandWindowMs``, at most ``demandMaxSets``, the most recently demanded first."""
        p = self.config.pool
        if not p.demand_min_hits or not p.demand_warm or not p.demand_max_sets:
            self._demand = {}
            return
        raw = await self.registry.demand()
        now = now_ms()
        hot: list[tuple[int, str]] = []
        for key, value in raw.items():
            try:
                entry = json.loads(value)
                hits = [t for t in entry.get("hits") or [] if isinstance(t, int | float)
                        and t > now - p.demand_window_ms]
            except (ValueError, AttributeError, TypeError):
                continue
            if len(hits) < p.demand_min_hits:
                continue
            made = self._recipe(key, entry)
            if made is None:
                continue
            self._specs.setdefault(key, made[0])
            self._prestart.setdefault(key, made[1])
            hot.append((int(max(hits)), key))
        hot.sort(reverse=True)
        self._demand = {key: last for last, key in hot[:p.demand_max_sets]}

    async def _make_room(self, key: str) -> bool:
        """The pool is full and demand set ``key`` has no warm container: retire one warm
        container of this owner that matters less (a set with no target, else a demand set
        demanded longer ago). Never a busy one, nor one of a configured set."""
        if await self.registry.waiting():
            return False  # (claims wait: they go first)
        records = await self.records()
        if len(records) < self.config.pool.max_total:
            return False
        targets = self._warm_targets()
        have = sum(1 for r in records if r.spec == key and r.warm
                   and r.status in ("warm", "creating"))
        if have >= targets.get(key, 0):
            return False
        mine = self._demand.get(key, 0)

        def rank(rec: ContainerRecord) -> int | None:
            if rec.spec not in targets:
                return -1
            if rec.spec in self._demand and self._demand[rec.spec] < mine and \
                    self._warm_specs.get(rec.spec, 0) == 0:
                return self._demand[rec.spec]
            return None

        victims = sorted((r for r in records if r.status == "warm" and r.owner == self.owner
                          and rank(r) is not None), key=lambda r: (rank(r), r.created))
        for rec in victims:
            if await self.registry.retire_warm(rec.id, rec.spec):
                rec.status = "stopping"
                self._counters["evicted"] += 1
                await self._destroy(rec)
                return True
        return False

    async def _refill_later(self) -> None:
        """Top up after a claim, a moment later: the claimed session's first turn gets the
        CPU first (claims close together share one top-up)."""
        self._refill_due = True
        await asyncio.sleep(REFILL_DELAY_S)
        if self._refill_due:
            self._refill_due = False
            await self.top_up()

    async def top_up(self) -> None:
        """Start warm containers until every warm set has its target."""
        if self._closed:
            return
        try:
            await self._demand_sets()
        except Exception as exc:
            log.warning("reading warm-set demand failed: %s", exc)
        targets = self._warm_targets()
        # configured sets first, then demand sets, the most recently demanded first
        order = sorted(targets, key=lambda k: (k in self._demand and not self._warm_specs.get(k),
                                               -self._demand.get(k, 0)))
        for key in order:
            target = targets[key]
            spec = self._specs[key]
            created: list[asyncio.Task[Any]] = []
            room = key in self._demand and not self._warm_specs.get(key)
            while True:
                new_id = _new_id()
                name = f"{self.config.docker.container_prefix}warm-{new_id}"
                got = await self.registry.reserve_warm(
                    warm_set=key, max_total=self.config.pool.max_total, target=target,
                    owner=self.owner, new_id=new_id, name=name)
                if not got:
                    if room and not created:
                        room = False
                        if await self._make_room(key):
                            continue
                    break
                created.append(self._spawn(self._start_warm(new_id, name, spec, key)))
            if created:
                await asyncio.gather(*created, return_exceptions=True)

    async def _start_warm(self, container: str, name: str, spec: ContainerSpec, key: str) -> None:
        async with self._refill_slots:  # a few at a time: each costs a CPU-second or so
            rec = await self.record(container)
            if rec is None or rec.status != "creating":  # given up on while it waited
                return
            await self._start_warm_now(container, name, spec, key)

    async def _start_warm_now(self, container: str, name: str, spec: ContainerSpec,
                              key: str) -> None:
        try:
            prestart = self._prestart.get(key)
            if prestart is not None:  # the runner registers after it: within startupMs
                prestart = {**prestart,
                            "timeout_s": self.config.timeouts.startup_ms / 2000}
            docker_id = await self._create(container, spec, name=name, prestart=prestart,
                                           cpu_shares=WARM_CPU_SHARES)
            deadline = time.monotonic() + self.config.timeouts.startup_ms / 1000
            while time.monotonic() < deadline:
                if await self.registry.runner_status(container) is not None:
                    # the runner registers once its CLI is up: the heavy part is over
                    await self._restore_cpu(docker_id, name)
                    if await self.registry.mark_warm(container, key):
                        await self._notify()
                    elif await self.record(container) is None:
                        # taken out of the registry while it started (evicted for another
                        # spec, or reaped): whoever did may have found no container yet
                        await self._destroy(ContainerRecord(
                            id=container, name=name, spec=key, status="gone",
                            owner=self.owner, created=now_ms()))
                    return
                await asyncio.sleep(0.02)
            raise StartupTimeout(f"warm container {name} did not report ready in time")
        except Exception as exc:
            log.warning("warm container %s failed: %s", name, exc)
            self._counters["startup_failures"] += 1
            metrics.on_error("startup_failure")
            rec = await self.record(container)
            if rec is not None:
                await self._destroy(rec)
            else:
                await self._drop_user(container)

    async def wait_warm(self, count: int | None = None, timeout: float = 60) -> None:
        """Wait until the warm sets hold ``count`` (default their targets) ready containers."""
        deadline = time.monotonic() + timeout
        while True:
            records = await self.records()
            ready = Counter(r.spec for r in records if r.status == "warm")
            targets = {k: v for k, v in self._warm_specs.items() if v > 0}
            if all(ready[k] >= (count if count is not None else v) for k, v in targets.items()):
                return
            if time.monotonic() > deadline:
                raise StartupTimeout(f"warm pool not ready within {timeout:.0f}s: {dict(ready)}")
            await asyncio.sleep(0.05)

    # -- health ----------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _monitor_loop(self) -> None:
        events: Released | None
        try:
            events = await self.registry.released()
        except Exception:
            events = None
        next_check = 0.0
        while True:
            try:
                timeout = max(0.01, next_check - time.monotonic())
                if events is not None:
                    if await events.wait(min(timeout, 1.0)):
                        self._wake.set()
                else:
                    await asyncio.sleep(min(timeout, 1.0))
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.interval_s
                    await self.check()
            except asyncio.CancelledError:
                if events is not None:
                    await events.aclose()
                raise
            except Exception as exc:
                log.warning("pool monitor: %s", exc)
                await asyncio.sleep(min(self.interval_s, 1.0))

    async def check(self) -> None:
        """One health pass: heartbeats, lost containers, idle reaping, max age, top-up."""
        await self._heartbeat_owner()
        everyone = await self.records()
        metrics.on_pool_sizes(Counter(rec.status for rec in everyone))
        records = [rec for rec in everyone if rec.owner == self.owner]
        if self.egress is not None:
            # containers we made and handed over keep our proxy until they are gone
            known = {rec.id for rec in everyone}
            for cid in self.egress.containers():
                if cid not in known:
                    await self.egress.remove(cid)
        if self.acl is not None:
            try:
                # users a Redis restart (or fail-over) lost come back; users of removed
                # containers go
                await self.acl.restore(records)
                await self.acl.gc()
            except Exception as exc:
                log.warning("repairing the containers' Redis users failed: %s", exc)
        if not records:
            await self.top_up()
            return
        listed = await self.backend.list(self.labels_base)
        infos = {i.name: i for i in listed}
        by_id = {i.labels.get(f"{LABEL}.container", ""): i for i in listed}
        now = now_ms()
        warm_by_spec: dict[str, list[ContainerRecord]] = {}
        t = self.config.timeouts
        if self._checked_ms and now - self._checked_ms > 2 * t.health_interval_ms:
            # we could not look for a while (Redis restarting, a stalled loop): whatever kept
            # us away may have kept the heartbeats away too; give them one window to resume
            self._grace_until = now + self.stale_ms + 2 * t.health_interval_ms
        self._checked_ms = now
        for rec in records:
            if rec.status in ("creating", "stopping"):
                if rec.status == "creating" and now - rec.created > t.startup_ms * 2:
                    await self._destroy(rec)
                continue
            info = by_id.get(rec.id) or infos.get(rec.name)
            if not self._is_ours(info, rec.id):
                info = None
            if info is None or not info.running:
                # double-check before declaring a loss (a list can race a rename); what the
                # name points at counts only if it carries this record's labels
                found = await self.backend.inspect(rec.name)
                info = found if self._is_ours(found, rec.id) else info
            heartbeat = await self.registry.runner_heartbeat(rec.id)
            dead = info is None or not info.running
            stale = heartbeat and now - heartbeat > self.stale_ms and now >= self._grace_until
            if dead or stale:
                reason = self._lost_reason(info, stale=bool(stale),
                                           death=self._deaths.get(rec.id))
                await self._lost(rec, reason)
                continue
            if rec.status == "warm":
                warm_by_spec.setdefault(rec.spec, []).append(rec)
                # what an unclaimed runner checks its owner by (it may read only its own
                # record): no owner heartbeat for timeouts.orphanMs and it exits by itself
                await self.registry.beat_for_owner(rec.id, now)
            elif rec.status == "busy" and now - rec.created > t.max_age_ms and rec.session:
                if await self.transport.sessions.state_field(rec.session, "status") == "idle":
                    self._counters["recycled"] += 1
                    await self._park(rec, "maxAgeMs")
        targets = self._warm_targets()
        for key, warm in warm_by_spec.items():
            target = targets.get(key, 0)
            warm.sort(key=lambda x: x.created)
            extra = len(warm) - target
            for rec in warm:
                age = now - rec.created
                idle = now - (rec.ready or rec.created)
                if age > t.max_age_ms or (extra > 0 and idle > t.idle_ms):
                    if await self.registry.retire_warm(rec.id, rec.spec):
                        self._counters["reaped" if age <= t.max_age_ms else "recycled"] += 1
                        extra -= 1
                        rec.status = "stopping"
                        await self._destroy(rec)
        await self.top_up()

    @staticmethod
    def _lost_reason(info: ContainerInfo | None, *, stale: bool,
                     death: Death | None = None) -> str:
        """Why a container is lost: from Docker's view of it (``info``) and what its events
        said (``death``; a container that exited has removed itself, so ``info`` is then
        ``None``)."""
        if info is None:
            if death is not None and death.died:
                if death.oom_killed:
                    return "out of memory (killed by the memory limit)"
                code = "unknown" if death.exit_code is None else death.exit_code
                return f"container exited (exit code {code})"
            # no event seen (the stream was reconnecting, or another backend): only polling
            # found it, after Docker had removed it with its exit code
            return "container removed"
        if info.oom_killed:
            return "out of memory (killed by the memory limit)"
        if not info.running:
            # "removing": it exited and Docker is removing it (AutoRemove)
            status = "exited" if info.status == "removing" else info.status or "stopped"
            return f"container {status} (exit code {info.exit_code})"
        if stale:
            return "heartbeat stale"
        return "unknown"

    async def _lost(self, rec: ContainerRecord, reason: str) -> None:
        if rec.id in self._ending:
            return  # (the event and the health pass may both see one death)
        self._ending.add(rec.id)
        try:
            await self._lost_once(rec, reason)
        finally:
            self._ending.discard(rec.id)

    async def _lost_once(self, rec: ContainerRecord, reason: str) -> None:
        now = await self.record(rec.id)
        if now is None or now.status == "stopping":
            return  # its session released it meanwhile: an exit on purpose, not a loss
        self._counters["lost"] += 1
        metrics.on_lost(reason)
        log.warning("container %s lost: %s", rec.name, reason,
                    extra={"session": rec.session, "container": rec.id})
        # a runner that only looks dead (stale heartbeat, still running) goes for good before
        # the session hears of it: it must not take a prompt sent after the loss; a dead
        # one is reported first (sooner) and removed after
        alive = reason == "heartbeat stale"
        if alive:
            await self._destroy(rec)
        if rec.session and rec.status == "busy":
            # the caller hears "turn lost, send again" (ContainerLost): prompts the lost
            # container never started must not run later on top of the one sent again
            dropped = await self.transport.sessions.take_pending_input(rec.session)
            note = f"; {dropped} prompt(s) not yet answered were dropped" if dropped else ""
            await self.report_error(rec.session, "container_lost",
                                    f"container {rec.name} lost: {reason}{note}",
                                    container=rec.id, dropped=dropped)
            for cb in self._lost_callbacks:
                with contextlib.suppress(Exception):
                    res = cb(rec.session, reason)
                    if asyncio.iscoroutine(res):
                        await res
        if not alive:
            await self._destroy(rec)
        self._counters["replacements"] += 1

    async def _park(self, rec: ContainerRecord, reason: str) -> None:
        """Take an idle session's container away; the session resumes in a new one."""
        self._ending.add(rec.id)  # its runner exits on the stop: no loss
        try:
            await self.transport.send_control(rec.session, "stop")
            await self._destroy(rec)
        finally:
            self._ending.discard(rec.id)
        await self.transport.sessions.set_state(rec.session, status="parked",
                                                parked_reason=reason)

    async def report_error(self, session: str, error: str, message: str, **fields: Any) -> None:
        """Write an error event into a session's output (when its runner cannot)."""
        seq = await self.transport.sessions.last_seq(session)
        env = encode_envelope(seq + 1, now_ms(), runner_event(
            "error", error=error, message=message, restart=False, **fields))
        # only into a session that is still open (see storage.scripts.REPORT_EVENT)
        await self.transport.sessions.report_event(session, env, status="lost", error=message)

    async def reconcile(self) -> int:
        """Remove containers (and registry entries) whose owner stopped heartbeating."""
        if not self.instance:
            await self._load_instance(create=False)  # gc: read it, don't make one
        owners = await self.registry.owners()
        now = now_ms()
        alive = {o for o, hb in owners.items() if now - hb <= max(self.stale_ms, 1000)}
        alive.add(self.owner)
        removed = 0
        # ours: this Redis's instance, or made before instances were labelled
        infos = [i for i in await self.backend.list({LABEL: "1",
                                                     f"{LABEL}.prefix": self.transport.prefix})
                 if i.labels.get(f"{LABEL}.instance", "") in ("", self.instance)]
        records = {rec.id: rec for rec in await self.records()}
        for info in infos:
            cid = info.labels.get(f"{LABEL}.container", "")
            rec = records.get(cid)
            owner = rec.owner if rec else info.labels.get(f"{LABEL}.owner", "")
            if owner not in alive and info.id:
                await self.backend.remove(info.id)
                if cid:
                    await self._drop_scratch_volume(cid)
                removed += 1
        for rec in records.values():
            labelled = any(i.labels.get(f"{LABEL}.container") == rec.id for i in infos)
            if rec.owner not in alive or (rec.status != "creating" and not labelled):
                await self._destroy(rec)  # removes only a container labelled for rec.id
                if rec.session and rec.owner not in alive:
                    # its owner died without closing it: close it as its owner would have
                    # (resumable, sealed; its live keys and its record gone)
                    with contextlib.suppress(Exception):
                        await self.end_session(rec.session)
        for owner in owners:
            if owner not in alive:
                await self.registry.drop_owner(owner)
        if self.acl is not None:
            try:
                await self.acl.gc()  # users whose container is gone (a crashed owner's)
            except Exception as exc:
                log.warning("removing stale container Redis users failed: %s", exc)
        return removed

    async def end_session(self, session: str, claude_session_id: str = "") -> None:
        """Close a session's keys once no container of it runs: its record and live keys go,
        what a resume needs (state, history, result, the sealed transcript) stays for
        ``RESUME_TTL_S``. Used by ``close()`` and for sessions of owners that died."""
        sessions = self.transport.sessions
        await sessions.unregister(session)
        await self.transport.delete_session(session, keep=RETAINED_KEYS)
        with contextlib.suppress(Exception):
            await self.seal_transcript(session)
        if not claude_session_id:
            claude_session_id = await sessions.state_field(session, "claude_session_id") or ""
        await sessions.retain(session, keep=RETAINED_KEYS, ttl_s=RESUME_TTL_S,
                              claude_session_id=claude_session_id, closed_ms=now_ms())

    async def seal_transcript(self, session: str) -> None:
        """Seal a session's saved transcript once no container of it runs any more (see
        :mod:`dockercc.protocol.transcript`): only sealed transcripts are ever restored."""
        sessions = self.transport.sessions
        tag = sealing.seal(load_key(), session, await sessions.transcript(session))
        if tag is not None:
            await sessions.seal_transcript(session, tag)

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
