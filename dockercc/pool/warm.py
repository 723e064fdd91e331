"""Warm sets: the demand each spec has seen, making room, topping up and starting warm
containers."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from .. import metrics
from ..errors import StartupTimeout
from ..storage.records import ContainerRecord
from ..storage.values import now_ms
from .containers import PoolContainers
from .core import (
    REFILL_DELAY_S,
    WARM_CPU_SHARES,
    _new_id,
    log,
)
from .spec import (
    ContainerSpec,
    set_base,
    shareable_args,
    spec_for,
    warm_set_key,
)


class PoolWarm(PoolContainers):
    """The part of :class:`~dockercc.pool.manager.ContainerPool` that keeps the warm sets full."""

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
