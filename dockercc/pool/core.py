"""The pool's shared state: what every part of :class:`~dockercc.pool.manager.ContainerPool` uses.

Its configuration, the Redis registry's reads and writes, the owner's heartbeat, the egress proxy
the containers reach the API through, and the counters behind :class:`PoolStats`. The parts
build on it in one line, each using only what is below it: ``PoolCore`` < ``PoolContainers``
(create, rename, remove) < ``PoolWarm`` (warm sets, demand, top-up) < ``PoolHealth`` (Docker's
events, loss detection, reaping, reconcile) < ``ContainerPool`` (start / close, claims).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from ..config import DockerCCConfig
from ..egress import EgressProxy, UnixRelay
from ..egress.proxy import relay_target
from ..protocol.envelope import encode_envelope, runner_event
from ..storage.acl import ContainerACL
from ..storage.connection import RedisTransport
from ..storage.records import ContainerRecord
from ..storage.registry import Rejected
from ..storage.sentinel import current_primary, is_sentinel_url
from ..storage.values import now_ms
from .backend import LABEL, Backend, ContainerInfo, DockerBackend
from .spec import (
    ContainerSpec,
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
    """A container handed to one session.

    ``name``: the container's name. A claimed warm container is renamed for its session
    (``clawdbot-cc-<session>``) in the background; the lease names it so from the claim on and
    goes back to the warm name if the rename is skipped or fails. ``renamed`` resolves (to the
    final name) when that is settled; :meth:`AsyncSession.start` waits for it."""

    container: str
    name: str
    warm: bool
    spec: str
    claim_ms: float
    renamed: asyncio.Future[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.renamed is not None:
            self.renamed.add_done_callback(self._settle_name)

    def _settle_name(self, done: asyncio.Future[str]) -> None:
        if not done.cancelled() and done.exception() is None:
            self.name = done.result()


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


async def finished(task: asyncio.Future[Any]) -> Any:
    """``await task``, but a cancel of the waiter does not reach the task: a clean-up run
    in a task of its own (a claim taken back: its container removed, its Redis user gone)
    finishes however often the caller is cancelled meanwhile; the caller's cancel is raised
    once it has."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
        except BaseException:
            break
    if cancelled:
        task.cancelled() or task.exception()  # retrieved: no "never retrieved" warning
        raise asyncio.CancelledError
    return task.result()


def _new_id() -> str:
    return secrets.token_hex(6)


class PoolCore:
    """The state and the registry I/O every part of the pool shares."""

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
        #: containers this process handed to a session (their scratch volume may hold the
        #: session's files): without Redis, only the others' volumes are removed
        self._claimed: set[str] = set()
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

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def report_error(self, session: str, error: str, message: str, **fields: Any) -> None:
        """Write an error event into a session's output (when its runner cannot)."""
        seq = await self.transport.sessions.last_seq(session)
        env = encode_envelope(seq + 1, now_ms(), runner_event(
            "error", error=error, message=message, restart=False, **fields))
        # only into a session that is still open (see storage.scripts.REPORT_EVENT)
        await self.transport.sessions.report_event(session, env, status="lost", error=message)
