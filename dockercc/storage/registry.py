"""The pool's shared registry in Redis (every process on one Redis and key prefix shares it).

Keys (built by :class:`dockercc.protocol.keys.PoolKeys`):

- ``pool:containers`` Hash: pool container id -> JSON record
  (:class:`~dockercc.storage.records.ContainerRecord`).
- ``pool:warm:{set}`` List: ids of warm containers of one warm set (``<spec key>-<fingerprint
  of the pre-started CLI's arguments>``, see :func:`dockercc.pool.spec.warm_set_key`); claimed
  with LPOP inside the claim script, so two processes never get the same container.
- ``pool:demand`` Hash: warm-set key -> JSON of recent demand (arrival times within the
  window and, when shareable, the recipe to pre-start such a container).
- ``pool:queue`` Sorted set + ``pool:tickets`` Hash + ``pool:ticket_seq``: waiting claims in
  arrival order (a fair queue); tickets expire unless their waiter refreshes them.
- ``pool:owners`` Hash: owner (process) id -> last heartbeat ms.
- ``pool:events`` Pub/Sub: "released" notices that wake waiters.
- ``pool:instance``, ``pool:quarantine``, ``pool:assign:{id}``, ``pool:container:{id}``.

Every decision that must be atomic is one Lua script (:mod:`dockercc.storage.scripts`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BadData
from ..protocol.keys import validate_id
from . import scripts
from .records import ContainerRecord
from .values import as_int, as_str, now_ms

if TYPE_CHECKING:
    from .connection import RedisTransport


class Released:
    """A subscription to ``pool:events``: :meth:`wait` returns True when a container was
    released (someone may now get one). Its own connection; :meth:`aclose` it."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def wait(self, timeout: float) -> bool:
        return await self._pubsub.get_message(timeout=timeout) is not None

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()


class PoolRegistry:
    """The registry's commands. One per :class:`~dockercc.storage.connection.RedisTransport`
    (``transport.registry``)."""

    def __init__(self, transport: RedisTransport) -> None:
        self._t = transport
        self.keys = transport.pool_keys
        self._scripts: dict[str, Any] = {}

    def _script(self, name: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._t.client.register_script(
                getattr(scripts, name))
        return script

    @property
    def _r(self) -> Any:
        return self._t.client

    # -- identity and owners ---------------------------------------------------------------

    async def instance(self, *, create: bool = True) -> str:
        """This Redis's pool identity (made by the first pool that starts on it, unless not
        ``create``); ``""`` when there is none."""
        if create:
            await self._r.set(self.keys.instance, secrets.token_hex(8), nx=True)
        raw = await self._r.get(self.keys.instance)
        return as_str(raw) if raw else ""

    async def heartbeat_owner(self, owner: str) -> None:
        await self._r.hset(self.keys.owners, owner, now_ms())

    async def owners(self) -> dict[str, int]:
        """Owner id -> its last heartbeat (ms)."""
        return {as_str(k): as_int(v) for k, v in (await self._r.hgetall(self.keys.owners)).items()}

    async def drop_owner(self, owner: str) -> None:
        await self._r.hdel(self.keys.owners, owner)

    async def clear_if_empty(self) -> bool:
        """Remove the registry's keys when no container is registered (the last owner left)."""
        k = self.keys
        if await self._r.hlen(k.containers):
            return False
        await self._r.delete(k.containers, k.owners, k.ticket_seq, k.instance, k.acl, k.demand,
                             k.queue, k.tickets)
        async for key in self._r.scan_iter(match=f"{k.warm_prefix}*", count=500):
            await self._r.delete(key)
        return True

    # -- records ---------------------------------------------------------------------------

    async def raw_records(self) -> dict[str, bytes]:
        """Every registry entry as stored, id -> value (not validated)."""
        return {as_str(k): v for k, v in (await self._r.hgetall(self.keys.containers)).items()}

    async def records(self, *, quarantine: bool = True
                      ) -> tuple[list[ContainerRecord], list[Rejected]]:
        """The registry's valid records, and the entries that failed validation (forged or
        corrupted: anything that can write the registry can write one). With ``quarantine``
        those are moved to ``pool:quarantine`` (unless they changed since read), never
        acted on. The one reader of the registry: the pool, the health endpoint, ``dockercc
        status`` and the notebook's pool view."""
        good: list[ContainerRecord] = []
        bad: list[Rejected] = []
        for field, value in (await self._r.hgetall(self.keys.containers)).items():
            rec, rejected = await self._checked(field, value, quarantine=quarantine)
            if rec is not None:
                good.append(rec)
            if rejected is not None:
                bad.append(rejected)
        return good, bad

    async def record(self, container: str, *, quarantine: bool = True
                     ) -> tuple[ContainerRecord | None, Rejected | None]:
        """One container's record (None if absent or invalid), and its rejection."""
        raw = await self._r.hget(self.keys.containers, container)
        if not raw:
            return None, None
        return await self._checked(container, raw, quarantine=quarantine)

    async def _checked(self, key: bytes | str, value: bytes | str, *, quarantine: bool
                       ) -> tuple[ContainerRecord | None, Rejected | None]:
        try:
            return ContainerRecord.validate(value, as_str(key)), None
        except BadData as exc:
            moved = quarantine and await self.quarantine(key, value)
            return None, Rejected(as_str(key), str(exc), moved)

    async def quarantine(self, key: bytes | str, value: bytes | str) -> bool:
        """Move a registry entry aside unless it changed since it was read."""
        return bool(await self._script("QUARANTINE")(
            keys=[self.keys.containers, self.keys.quarantine], args=[key, value]))

    async def quarantined(self) -> int:
        return int(await self._r.hlen(self.keys.quarantine))

    async def put_record(self, rec: ContainerRecord) -> None:
        await self._r.hset(self.keys.containers, rec.id, rec.encode())

    async def remove_container(self, container: str, warm_set: str) -> None:
        """A removed container's record, warm-list entry, runner state and assignment go."""
        k = self.keys
        pipe = self._r.pipeline(transaction=False)
        pipe.hdel(k.containers, container)
        pipe.lrem(k.warm(warm_set), 0, container)
        pipe.delete(k.container_state(container), k.assign(container))
        await pipe.execute()

    # -- claims ----------------------------------------------------------------------------

    async def claim_container(self, *, warm_set: str, base: str, agent: str, session: str,
                              max_total: int, max_per_agent: int, owner: str, new_id: str,
                              ticket: str, ticket_deadline: int, name: str) -> list[str]:
        """One atomic claim (:data:`~dockercc.storage.scripts.CLAIM`): ``["warm", id,
        name]``, ``["cold", id]``, ``["evict", id, old id]`` or ``["wait", limit, total,
        mine]``."""
        k = self.keys
        res = await self._script("CLAIM")(
            keys=[k.containers, k.queue, k.tickets, k.ticket_seq],
            args=[k.warm_prefix, warm_set, agent, session, max_total, max_per_agent, owner,
                  now_ms(), new_id, ticket, ticket_deadline, name, base])
        return [as_str(x) for x in res]

    async def leave_queue(self, ticket: str) -> None:
        await self._r.zrem(self.keys.queue, ticket)
        await self._r.hdel(self.keys.tickets, ticket)

    async def waiting(self) -> int:
        """How many claims wait in the fair queue."""
        return int(await self._r.zcard(self.keys.queue))

    async def notify_released(self) -> None:
        await self._r.publish(self.keys.events, "released")

    async def released(self) -> Released:
        """Subscribe to release notices (a connection of its own)."""
        pubsub = self._t.new_client().pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.keys.events)
        return Released(pubsub)

    async def assign(self, container: str, assignment: Mapping[str, Any], *,
                     before: Sequence[Any] = ()) -> None:
        """Hand a runner its session (``pool:assign:{container}``, read with BLPOP).
        ``before``: a command sent first in the same round trip (the container's ``ACL
        SETUSER`` for the session: Redis runs it before the runner can see the assignment; if
        it fails this raises, and the caller removes the container)."""
        validate_id(container, "container id")
        key = self.keys.assign(container)
        async with self._r.pipeline(transaction=False) as pipe:
            if before:
                pipe.execute_command(*before)
            pipe.rpush(key, json.dumps(assignment, ensure_ascii=False))
            pipe.expire(key, 3600)
            await self._t.call(pipe.execute)

    # -- warm sets -------------------------------------------------------------------------

    async def reserve_warm(self, *, warm_set: str, max_total: int, target: int, owner: str,
                           new_id: str, name: str) -> bool:
        """Reserve a slot for one more warm container of ``warm_set`` (under ``maxTotal``
        and the set's target, and only when no claim waits)."""
        k = self.keys
        return bool(await self._script("RESERVE_WARM")(
            keys=[k.containers, k.queue],
            args=[warm_set, max_total, target, owner, now_ms(), new_id, name]))

    async def mark_warm(self, container: str, warm_set: str) -> bool:
        """A created container is ready: into its warm list (unless given up on)."""
        return bool(await self._script("MARK_WARM")(
            keys=[self.keys.containers, self.keys.warm(warm_set)], args=[container, now_ms()]))

    async def retire_warm(self, container: str, warm_set: str) -> bool:
        """Take a warm container out of service unless someone claimed it meanwhile."""
        return bool(await self._script("RETIRE_WARM")(
            keys=[self.keys.containers, self.keys.warm(warm_set)], args=[container]))

    async def record_demand(self, warm_set: str, window_ms: int, recipe: str) -> int:
        """Count one session's demand for a warm set; the arrivals within the window."""
        return int(await self._script("DEMAND")(
            keys=[self.keys.demand], args=[warm_set, now_ms(), window_ms, recipe]) or 0)

    async def demand(self) -> dict[str, bytes]:
        """``pool:demand`` as stored: warm-set key -> JSON."""
        return {as_str(k): v for k, v in (await self._r.hgetall(self.keys.demand)).items()}

    # -- runners' own state ------------------------------------------------------------------

    async def runner_status(self, container: str) -> str | None:
        """The status a runner registered (``pool:container:{id}``); None before it did."""
        raw = await self._r.hget(self.keys.container_state(container), "status")
        return None if raw is None else as_str(raw)

    async def runner_heartbeat(self, container: str) -> int:
        return as_int(await self._r.hget(self.keys.container_state(container), "heartbeat"))

    async def runner_heartbeats(self, containers: list[str]) -> dict[str, int]:
        """Several runners' heartbeats (ms, 0 when none) in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for cid in containers:
            pipe.hget(self.keys.container_state(cid), "heartbeat")
        return {cid: as_int(v) for cid, v in zip(containers, await pipe.execute(), strict=True)}

    async def beat_for_owner(self, container: str, now: int) -> None:
        """What an unclaimed runner checks its owner by (it may read only its own record)."""
        await self._r.hset(self.keys.container_state(container), "owner_heartbeat", now)

    # -- a view for status pages --------------------------------------------------------------

    async def view(self, *, quarantine: bool = False) -> RegistryView:
        """Everything a status page shows of the registry: the valid records (oldest
        first), their runners' heartbeats, the owners and the counts. Reads through
        :meth:`records` (without moving anything aside unless ``quarantine``)."""
        records, rejected = await self.records(quarantine=quarantine)
        records.sort(key=lambda r: (r.created, r.id))
        k = self.keys
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(k.owners)
        pipe.hlen(k.sessions)
        pipe.zcard(k.queue)
        pipe.hlen(k.quarantine)
        owners, sessions, waiting, quarantined = await pipe.execute()
        beats = await self.runner_heartbeats([r.id for r in records]) if records else {}
        return RegistryView(
            records=records, heartbeats=beats,
            owners={as_str(o): as_int(hb) for o, hb in owners.items()},
            sessions=int(sessions), waiting=int(waiting),
            # (entries a running pool has not moved aside yet count too)
            quarantined=int(quarantined) + sum(1 for r in rejected if not r.moved))


@dataclass
class RegistryView:
    """A snapshot of the pool registry (see :meth:`PoolRegistry.view`)."""

    records: list[ContainerRecord]
    heartbeats: dict[str, int]
    owners: dict[str, int]
    sessions: int
    waiting: int
    quarantined: int


@dataclass(frozen=True)
class Rejected:
    """A registry entry that failed validation: its id, why, and whether it was moved to
    ``pool:quarantine`` now."""

    field: str
    why: str
    moved: bool
