"""The seam between the pool and whatever runs containers.

:class:`Backend` is what the pool needs (create/start, stop, remove, list, inspect, rename,
CPU weights, volumes, death events); :class:`DockerBackend` implements it with the docker
SDK, :class:`dockercc.pool.local.LocalBackend` with local subprocesses (no isolation: fast
tests only). A Kubernetes backend can follow without touching sessions. Docker calls are
blocking, so they run in worker threads. :func:`backend_for` picks one from
``docker.backend``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ImageError, PoolError
from .spec import (
    CREDENTIALS_MOUNT,
    EGRESS_DIR,
    RELAY_SOCKET,
    RUNNER_DIR,
    SOCKET_DIR,
    ContainerSpec,
    scratch_volume_name,
)

log = logging.getLogger("dockercc.pool")

LOG_MAX_SIZE = "10m"
LOG_MAX_FILE = "3"
"""Container log rotation (json-file): an agent printing without end fills no disk."""

LABEL = "clawdbot.docker-cc"
"""The seed's label: every container dockercc makes has ``clawdbot.docker-cc=1``."""


@dataclass
class ContainerInfo:
    """What the pool needs to know about one container."""

    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    running: bool = False
    status: str = ""
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""


class Watch(Protocol):
    """A running event watch (:meth:`Backend.watch`)."""

    def close(self) -> None: ...


class Backend(Protocol):
    """What runs the pool's containers. ``isolated`` says whether a container is a sandbox
    (limits, no network of its own, the agent apart from the runner); ``isolation_note``
    says how, or what is missing (``dockercc status`` and :meth:`ContainerPool.stats` show
    it)."""

    isolated: bool
    isolation_note: str

    async def create(self, spec: ContainerSpec, *, name: str, labels: dict[str, str],
                     env: dict[str, str], cpu_shares: int | None = None) -> str: ...

    async def stop(self, name: str, timeout: float = 5) -> None: ...

    async def remove(self, name: str) -> None: ...

    async def inspect(self, name: str) -> ContainerInfo | None: ...

    async def list(self, labels: dict[str, str] | None = None) -> list[ContainerInfo]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def rename(self, old: str, new: str) -> None: ...

    async def set_cpu_shares(self, container_id: str, shares: int) -> None: ...

    async def remove_volume(self, name: str) -> None: ...

    def watch(self, labels: dict[str, str], on_event: Callable[[dict[str, Any]], None]
              ) -> Watch | None:
        """Follow ``die``/``oom``/``destroy`` of containers with ``labels``, each given to
        ``on_event`` (from any thread) as Docker's events API shapes it: ``{"Action", "id",
        "Actor": {"Attributes": {**labels, "name", "exitCode"}}}``; None where the backend
        has no events (the pool then polls)."""
        ...


class DockerBackend:
    """Containers on a Docker engine (the local one by default)."""

    isolated = True
    isolation_note = ("Docker containers: memory, CPU and PID limits, a read-only root, "
                      "no capabilities, the agent's uid apart from the runner's")

    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = base_url
        self._client: Any = None
        self._networks_checked: set[str] = set()

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                self._client = (docker.DockerClient(base_url=self.base_url, timeout=60)
                                if self.base_url else docker.from_env(timeout=60))
            except Exception as exc:
                raise PoolError(f"cannot reach the Docker engine ({exc}); is dockerd running?") from exc
        return self._client

    async def ping(self) -> None:
        try:
            await asyncio.to_thread(self.client.ping)
        except PoolError:
            raise
        except Exception as exc:
            raise PoolError(f"cannot reach the Docker engine ({exc}); is dockerd running?") from exc

    def _ensure_network(self, name: str) -> None:
        import docker.errors

        if name in ("host", "none", "bridge", "default") or name.startswith("container:"):
            return
        if name in self._networks_checked:
            return
        try:
            self.client.networks.get(name)
        except docker.errors.NotFound:
            log.info("creating Docker network %s", name)
            with contextlib.suppress(docker.errors.APIError):  # created concurrently
                self.client.networks.create(name, driver="bridge",
                                            labels={LABEL: "1"})
        self._networks_checked.add(name)

    def _create(self, spec: ContainerSpec, name: str, labels: dict[str, str],
                env: dict[str, str], cpu_shares: int | None = None) -> str:
        import docker.errors
        from docker.types import LogConfig, Mount

        self._ensure_network(spec.network)
        mounts: list[Any] = []
        binds = list(spec.binds)
        socket = spec.redis_socket()
        if socket:
            mounts.append(Mount(target=f"{SOCKET_DIR}/{socket.rsplit('/', 1)[-1]}",
                                source=socket, type="bind"))
        if spec.credentials_file:
            mounts.append(Mount(target=CREDENTIALS_MOUNT, source=spec.credentials_file,
                                type="bind", read_only=True))
        if spec.egress_dir:  # the container's own proxy socket (a directory: see EgressProxy)
            mounts.append(Mount(target=EGRESS_DIR, source=spec.egress_dir, type="bind",
                                read_only=True))
        if spec.redis_relay_socket:
            mounts.append(Mount(target=RELAY_SOCKET, source=spec.redis_relay_socket,
                                type="bind"))
        for kind, source, target, read_only in spec.mounts:
            if kind == "volume":
                self._ensure_volume(source)
            mounts.append(Mount(target=target, source=source, type=kind, read_only=read_only))
        has_workspace = any(m[2] == "/workspace" for m in spec.mounts)
        if spec.scratch_volume and not has_workspace:
            # a fresh name: Docker creates the volume (with these labels) as it creates the
            # container, so a scratch workspace costs no API call of its own (a warm refill
            # overlaps the first turn of the session that claimed the container before it)
            volume = scratch_volume_name(labels.get(f"{LABEL}.container", name))
            mounts.append(Mount(target="/workspace", source=volume, type="volume", labels={
                LABEL: "1", f"{LABEL}.workspace": "scratch",
                **{k: v for k, v in labels.items() if k in (
                    f"{LABEL}.prefix", f"{LABEL}.instance", f"{LABEL}.container",
                    f"{LABEL}.owner")}}))
            has_workspace = True
        uid = spec.user.split(":")[0]
        gid = spec.user.split(":")[1] if ":" in spec.user else uid
        tmpfs_opts = f"rw,nosuid,nodev,size={spec.tmpfs_size},uid={uid},gid={gid},mode=0700"
        # the runner's own directory (its sockets and secret files are mounted inside): a
        # tmpfs only the runner's uid may enter, whatever the image has there
        ruid, rgid = (0, 0) if spec.isolate_runner else (uid, gid)
        runner_opts = f"rw,nosuid,nodev,noexec,size=1m,uid={ruid},gid={rgid},mode=0700"
        kwargs: dict[str, Any] = dict(
            image=spec.image, name=name, detach=True, labels=labels, environment=env,
            user=spec.container_user(), network_mode=spec.network if spec.network in ("host", "none")
            else None, network=None if spec.network in ("host", "none") else spec.network,
            mem_limit=spec.memory, memswap_limit=spec.memory,
            nano_cpus=int(spec.cpus * 1e9), pids_limit=spec.pids_limit,
            cap_drop=list(spec.cap_drop), security_opt=list(spec.security_opts),
            read_only=spec.read_only, init=False, volumes=binds or None, mounts=mounts or None,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=512m,mode=1777",
                   "/home/agent": tmpfs_opts, RUNNER_DIR: runner_opts,
                   # a mounted workspace replaces the scratch tmpfs (both: "Duplicate mount")
                   **({} if has_workspace else {"/workspace": tmpfs_opts})},
            stop_signal="SIGTERM",
            # a container that exits goes away by itself (an orphan whose owner and Redis are
            # gone included): its exit code and OOM verdict reach the pool through Docker's
            # `die` / `oom` events (see AsyncContainerPool._on_docker_event); its log goes
            # with it (docs/reliability.md#no-orphans)
            auto_remove=True,
            log_config=LogConfig(type="json-file",
                                 config={"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE}),
        )
        if spec.isolate_runner:
            kwargs["cap_add"] = spec.cap_add()
            # the root runner's working directory: not the agent-writable /workspace (python
            # -m would put it first on the runner's import path)
            kwargs["working_dir"] = "/"
        if spec.network not in ("host", "none"):
            kwargs["extra_hosts"] = {"host.docker.internal": "host-gateway"}
        if spec.command:
            kwargs["command"] = list(spec.command)
        if cpu_shares is not None:
            kwargs["cpu_shares"] = cpu_shares
        try:
            try:
                container = self.client.containers.run(**kwargs)
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or not self._clear_stale_name(name, labels):
                    raise
                container = self.client.containers.run(**kwargs)
        except docker.errors.ImageNotFound as exc:
            raise ImageError(f"image {spec.image!r} not found; build it with "
                             f"`dockercc image build` (or pull it)") from exc
        except docker.errors.APIError as exc:
            raise PoolError(f"creating container {name} failed: {exc.explanation or exc}") from exc
        return str(container.id)

    def _ensure_volume(self, name: str, labels: dict[str, str] | None = None,
                       kind: str = "named") -> None:
        """A ``volume:NAME`` workspace: created on demand with dockercc's labels (so ``dockercc
        gc --volumes`` and ``docker volume ls`` find it), kept until deleted. Docker fills a
        new volume from the image's ``/workspace`` (owned by the agent's uid) on first mount."""
        import docker.errors

        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            with contextlib.suppress(docker.errors.APIError):  # created concurrently
                self.client.volumes.create(name, labels={
                    LABEL: "1", f"{LABEL}.workspace": kind, **(labels or {})})

    async def create(self, spec: ContainerSpec, *, name: str, labels: dict[str, str],
                     env: dict[str, str], cpu_shares: int | None = None) -> str:
        return await asyncio.to_thread(self._create, spec, name, labels, env, cpu_shares)

    async def set_cpu_shares(self, container_id: str, shares: int) -> None:
        """Change a running container's CPU weight (``docker update --cpu-shares``)."""
        await asyncio.to_thread(self.client.api.update_container, container_id,
                                cpu_shares=shares)

    def _clear_stale_name(self, name: str, labels: dict[str, str]) -> bool:
        """A session's previous container (lost or parked, its removal still under way) holds
        the name: remove it if it is ours (same pool prefix) and wait until it is gone."""
        import docker.errors

        prefix_label = f"{LABEL}.prefix"
        try:
            old = self.client.api.inspect_container(name)
        except docker.errors.NotFound:
            return True
        old_labels = (old.get("Config") or {}).get("Labels") or {}
        if old_labels.get(LABEL) != "1" or old_labels.get(prefix_label) != labels.get(prefix_label):
            return False
        instance_label = f"{LABEL}.instance"
        if old_labels.get(instance_label, "") not in ("", labels.get(instance_label, "")):
            return False  # another Redis's pool with the same prefix: not ours to remove
        self._remove(str(old.get("Id") or name))
        for _ in range(100):
            try:
                self.client.api.inspect_container(name)
            except docker.errors.NotFound:
                return True
            time.sleep(0.1)
        return False

    def _remove(self, name: str) -> None:
        import docker.errors

        try:
            self.client.api.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise

    async def remove(self, name: str) -> None:
        await asyncio.to_thread(self._remove, name)

    def _remove_volume(self, name: str, wait: float = 10.0) -> None:
        import docker.errors

        deadline = time.monotonic() + wait
        while True:
            try:
                self.client.api.remove_volume(name, force=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                # in use: its container is still being removed (auto-remove after a stop,
                # or a removal "already in progress"); it lets go in a moment
                if exc.status_code != 409 or time.monotonic() >= deadline:
                    log.warning("removing volume %s failed: %s", name, exc.explanation or exc)
                    return
            time.sleep(0.1)

    async def remove_volume(self, name: str) -> None:
        """Remove a workspace volume (nothing if it is gone)."""
        await asyncio.to_thread(self._remove_volume, name)

    async def rename(self, old: str, new: str) -> None:
        await asyncio.to_thread(self.client.api.rename, old, new)

    def _stop(self, name: str, timeout: float) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.stop(name, timeout=int(timeout))

    async def stop(self, name: str, timeout: float = 5) -> None:
        await asyncio.to_thread(self._stop, name, timeout)

    @staticmethod
    def _info(attrs: dict[str, Any]) -> ContainerInfo:
        state = attrs.get("State") or {}
        if isinstance(state, str):  # the list endpoint gives a string
            return ContainerInfo(id=attrs.get("Id", ""),
                                 name=(attrs.get("Names") or ["/"])[0].lstrip("/"),
                                 labels=attrs.get("Labels") or {}, running=state == "running",
                                 status=state)
        return ContainerInfo(
            id=attrs.get("Id", ""), name=str(attrs.get("Name", "")).lstrip("/"),
            labels=(attrs.get("Config") or {}).get("Labels") or {},
            running=bool(state.get("Running")), status=str(state.get("Status", "")),
            exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""))

    def _inspect(self, name: str) -> ContainerInfo | None:
        import docker.errors

        try:
            return self._info(self.client.api.inspect_container(name))
        except docker.errors.NotFound:
            return None

    async def inspect(self, name: str) -> ContainerInfo | None:
        return await asyncio.to_thread(self._inspect, name)

    def _list(self, labels: dict[str, str] | None) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in (labels or {LABEL: "1"}).items()]}
        return [self._info(c) for c in self.client.api.containers(all=True, filters=filters)]

    async def list(self, labels: dict[str, str] | None = None) -> list[ContainerInfo]:
        return await asyncio.to_thread(self._list, labels)

    def _logs(self, name: str, tail: int) -> str:
        import docker.errors

        try:
            data = self.client.api.logs(name, tail=tail)
        except docker.errors.NotFound:
            return ""
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    async def logs(self, name: str, tail: int = 200) -> str:
        return await asyncio.to_thread(self._logs, name, tail)

    def watch(self, labels: dict[str, str], on_event: Callable[[dict[str, Any]], None],
              actions: tuple[str, ...] = ("die", "oom", "destroy")) -> EventWatch:
        """Follow the engine's container events (``actions``) of containers carrying
        ``labels``; ``on_event`` runs in the watcher's thread (hand over to a loop with
        ``call_soon_threadsafe``). The stream reconnects after an engine hiccup."""
        return EventWatch(self, labels, on_event, actions).start()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.close)


class EventWatch:
    """A thread reading ``GET /events`` (filtered by label and action) for a pool.

    Events make loss detection immediate; the pool's health pass still polls, so an event
    the stream missed while it reconnected is found at the next pass anyway.
    """

    def __init__(self, backend: DockerBackend, labels: dict[str, str],
                 on_event: Callable[[dict[str, Any]], None], actions: tuple[str, ...]) -> None:
        self.backend = backend
        self.filters = {"type": ["container"], "event": list(actions),
                        "label": [f"{k}={v}" for k, v in labels.items()]}
        self.on_event = on_event
        self._stop = threading.Event()
        self._stream: Any = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="dockercc-docker-events",
                                        daemon=True)
        #: set once the first stream is open (events from then on are seen)
        self.connected = threading.Event()

    def start(self) -> EventWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                stream = self.backend.client.events(decode=True, filters=self.filters)
                with self._lock:
                    if self._stop.is_set():
                        stream.close()
                        return
                    self._stream = stream
                self.connected.set()
                delay = 0.2
                for event in stream:
                    if isinstance(event, dict):
                        self.on_event(event)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("Docker events stream ended (%s); reconnecting (polling goes "
                            "on meanwhile)", exc)
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self._thread.join(5)
