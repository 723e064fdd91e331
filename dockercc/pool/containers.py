"""Creating, renaming and removing the pool's containers (and their Redis users)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..egress import EgressPolicy, Upstream
from ..errors import PoolError
from ..protocol import transcript as sealing
from ..storage.records import ContainerRecord
from ..storage.values import now_ms
from ..transcript_key import load_key
from .backend import LABEL, ContainerInfo
from .core import (
    NORMAL_CPU_SHARES,
    RETAINED_KEYS,
    PoolCore,
    log,
)
from .spec import (
    ContainerSpec,
    runner_env,
    scratch_volume_name,
)


class PoolContainers(PoolCore):
    """The part of :class:`~dockercc.pool.manager.ContainerPool` that creates, renames and
    removes containers."""

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
            elif cid and cid not in self._claimed:
                # no Redis to ask: a container no session of this process took holds no
                # session's files (a claimed one's volume stays for `dockercc gc` to judge)
                await self._drop_scratch_volume(cid, ask_redis=False)
            if self.egress is not None and cid:
                with contextlib.suppress(Exception):
                    await self.egress.remove(cid)

    async def _rename(self, old: str, new: str, container: str) -> str:
        """Warm containers get the session's name, so ``docker logs clawdbot-cc-<session>``
        works as the seed says. Best effort; returns the name the container has afterwards:
        ``new``, else the one it kept (``old`` when it is not found)."""
        if old == new:
            return old
        found: list[ContainerInfo] = []
        try:
            # the Docker id of the container labelled for this record, not the record's name
            found = [i for i in await self.backend.list(
                {**self.labels_base, f"{LABEL}.container": container})
                if self._is_ours(i, container)]
            if len(found) != 1:
                return old
            await self.backend.rename(found[0].id, new)
        except Exception as exc:  # a stale container of that name: keep the warm name
            log.debug("rename %s -> %s skipped: %s", old, new, exc)
            return found[0].name if len(found) == 1 and found[0].name else old
        try:
            rec = await self.record(container)
            if rec is not None:
                rec.name = new
                await self._update(rec)
        except Exception as exc:  # renamed all the same; its record's name is for display
            log.warning("recording the new name of %s failed: %s", new, exc)
        return new

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

    async def _drop_scratch_volume(self, container: str, *, ask_redis: bool = True) -> None:
        """Remove a removed container's scratch workspace volume (``docker.scratchVolumes``)
        unless a session took it (``{p}pool:scratch``): never claimed, or claimed by a
        session that failed before it adopted the volume (a start-up timeout, ...). A
        session's own volume stays for it (docs/workspaces.md#persistence)."""
        if not self.config.docker.scratch_volumes:
            return
        volume = scratch_volume_name(container)
        with contextlib.suppress(Exception):
            if ask_redis and await self.transport.sessions.scratch_owner(volume) is not None:
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

    async def end_session(self, session: str, claude_session_id: str = "") -> None:
        """Close a session's keys once no container of it runs: its record and live keys go,
        what a resume needs (state, history, result, the sealed transcript) stays for
        ``timeouts.resumeMs``. Used by ``close()`` and for sessions of owners that died."""
        sessions = self.transport.sessions
        await sessions.unregister(session)
        await self.transport.delete_session(session, keep=RETAINED_KEYS)
        with contextlib.suppress(Exception):
            await self.seal_transcript(session)
        if not claude_session_id:
            claude_session_id = await sessions.state_field(session, "claude_session_id") or ""
        await sessions.retain(session, keep=RETAINED_KEYS, ttl_s=max(1, self.config.timeouts.resume_ms // 1000),
                              claude_session_id=claude_session_id, closed_ms=now_ms())

    async def seal_transcript(self, session: str) -> None:
        """Seal a session's saved transcript once no container of it runs any more (see
        :mod:`dockercc.protocol.transcript`): only sealed transcripts are ever restored."""
        sessions = self.transport.sessions
        tag = sealing.seal(load_key(), session, await sessions.transcript(session))
        if tag is not None:
            await sessions.seal_transcript(session, tag)
