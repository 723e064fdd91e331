"""Health: Docker's events, the monitor loop, loss detection (and why a container was lost),
parking, and reconciling the registry with Docker at start."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from .. import metrics
from ..storage.records import ContainerRecord
from ..storage.registry import Released
from ..storage.values import now_ms
from .backend import LABEL, ContainerInfo
from .core import (
    DEATHS_KEPT,
    Death,
    log,
)
from .warm import PoolWarm


class PoolHealth(PoolWarm):
    """The part of :class:`~dockercc.pool.manager.ContainerPool` that notices lost containers."""

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
