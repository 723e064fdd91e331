"""The local backend: each "container" is the real runner (``python -m dockercc.agent``) started
as a subprocess of this process, which starts the real Claude Code CLI on this host.

What stays real: the runner and every byte it reads and writes (Redis through the pool's
unix-socket relay with its per-container ACL user, the API through the runner's egress
forwarder and the pool's egress proxy and allow-list, warm pre-start and warm-up, claims,
assignments, the MCP relay to host tools, transcripts, heartbeats), the pool's registry and
Lua, and the death events the pool reacts to. So sessions, the pool and the bridge can be
tested in seconds, without a Docker engine.

What a container is made of here (:class:`LocalBackend.create`): a directory per container
stands in for its mounts, and the environment the pool made for the container
(:func:`dockercc.pool.spec.runner_env`) is translated to it:

=====================  =================================================================
container path         local stand-in
=====================  =================================================================
``/home/agent``        ``<dir>/home`` (``HOME``)
``/workspace``         ``<dir>/workspace``, a bind-mounted workspace's own host folder, or
                       ``<root>/volumes/<name>`` for a named or scratch volume
``/run/dockercc``      ``<dir>/run``: symlinks to the Redis socket (or the pool's relay),
                       the egress socket directory and the credentials file
``/tmp``               ``<dir>/tmp`` (``TMPDIR``)
``127.0.0.1:3128``     a free loopback port per container (the egress forwarder's)
=====================  =================================================================

**Not isolated.** What only Docker gives does not apply, and nothing pretends it does:
no memory, CPU or PID limits (``resources.*``, ``cpu_shares``: accepted, not enforced); no
network namespace (``docker.network: none`` still routes the CLI's API traffic through the
egress proxy, but the agent's tools can reach any network this host can); no uid split
(``docker.isolateRunner``: the CLI runs as this process's user and could read the runner's
environment); no read-only root, capability drop or seccomp; no ``AutoRemove``: a runner
that exits stays listed as ``exited`` (with its exit code) until the pool removes it; no
mounts other than ``/workspace`` (``add_dirs``, ``docker.binds``: refused with a
:class:`PoolError`). Labels live in this process only, so another process cannot see or
clean up these containers (``dockercc gc`` and a second pool on the same Redis do not find
them); :meth:`close` removes every one. ``docker.backend: local`` selects it, never a
default; the pool reports ``local backend: not isolated`` (``stats().isolation``).

A container's processes are found by a marker in their environment
(:data:`MARK_ENV`, passed on to the CLI and its tools): removing a container, or its runner
dying, SIGKILLs every process that carries it, as a container's end would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import DEVNULL, Popen
from typing import Any

from ..agent.early import AGENT_USER_ENV, agent_ids
from ..errors import PoolError
from .backend import LABEL, ContainerInfo
from .spec import (
    CONTAINER_HOME,
    CREDENTIALS_MOUNT,
    EGRESS_DIR,
    RELAY_SOCKET,
    RUNNER_DIR,
    SOCKET_DIR,
    ContainerSpec,
    scratch_volume_name,
)

log = logging.getLogger("dockercc.pool")

MARK_ENV = "DCC_LOCAL_CONTAINER"
"""Carried by every process of a local container (not ``DOCKERCC_*``: the runner strips those
from the CLI's environment, and the CLI's tools must carry it too)."""
HOST_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")
"""What a local runner takes from this process's environment (an image would provide it)."""
IMAGE_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "DISABLE_AUTOUPDATER": "1",
             "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
"""The agent image's own ``ENV`` (image/Dockerfile), which the container's environment adds to."""
NOT_ISOLATED = ("local backend: not isolated (the runner and the CLI are local subprocesses: "
                "no limits, no network or uid separation; for tests, see "
                "docs/pool.md#the-local-backend)")


@dataclass
class _Container:
    id: str
    name: str
    labels: dict[str, str]
    root: Path
    proc: Popen[bytes]
    mark: str
    log_path: Path
    cpu_shares: int | None = None
    exit_code: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)

    def info(self) -> ContainerInfo:
        running = not self.exited.is_set()
        return ContainerInfo(id=self.id, name=self.name, labels=dict(self.labels),
                             running=running, status="running" if running else "exited",
                             exit_code=None if running else self.exit_code)


class _LocalWatch:
    def __init__(self, backend: LocalBackend, labels: dict[str, str],
                 on_event: Callable[[dict[str, Any]], None], actions: tuple[str, ...]) -> None:
        self.backend, self.labels, self.on_event, self.actions = backend, labels, on_event, actions
        #: (as DockerBackend's watch: events from now on are seen)
        self.connected = threading.Event()
        self.connected.set()

    def close(self) -> None:
        with self.backend._lock:
            if self in self.backend._watches:
                self.backend._watches.remove(self)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exit_code(returncode: int) -> int:
    """Docker's exit code for a process: 128 + the signal that killed it."""
    return 128 - returncode if returncode < 0 else returncode


def marked_pids(mark: str, *, prefix: bool = False) -> list[int]:
    """Processes whose environment carries ``MARK_ENV=mark`` (a container's processes; with
    ``prefix``, marks that start with ``mark``)."""
    needle = f"{MARK_ENV}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                variables = f.read().split(b"\0")
            if any(v.startswith(needle) if prefix else v == needle for v in variables):
                found.append(int(entry))
        except OSError:
            continue
    return found


def own_processes(owner_pid: int | None = None) -> list[int]:
    """Processes of local containers that process ``owner_pid`` (default: this one) made:
    what a test checks is empty after its pool closed."""
    owner = os.getpid() if owner_pid is None else owner_pid
    return marked_pids(f"{owner}-", prefix=True)


def kill_marked(mark: str, *, rounds: int = 20) -> None:
    """SIGKILL every process of a container (again, until none is left: a process may fork
    while it is being killed)."""
    me = os.getpid()
    for _ in range(rounds):
        pids = [p for p in marked_pids(mark) if p != me]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


class LocalBackend:
    """The runner and the CLI as local subprocesses (see the module's docstring: NOT
    isolated; for tests and development only, selected by ``docker.backend: local``).

    ``claude_bin``: the CLI the runners start (default: ``claude`` on ``PATH``);
    ``root``: where the containers' directories go (default: a fresh temporary directory,
    removed by :meth:`close`).
    """

    isolated = False
    isolation_note = NOT_ISOLATED

    def __init__(self, *, claude_bin: str | None = None, root: str | Path | None = None,
                 python: str = sys.executable) -> None:
        self.claude_bin = claude_bin
        self.python = python
        self._own_root = root is None
        self._root = Path(root) if root is not None else None
        self._containers: dict[str, _Container] = {}
        self._watches: list[_LocalWatch] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def root(self) -> Path:
        if self._root is None:
            # short: unix socket paths under it must stay within 108 bytes
            self._root = Path(tempfile.mkdtemp(prefix="dcc-local-"))
        return self._root

    # -- the protocol ----------------------------------------------------------------------

    async def ping(self) -> None:
        if self._closed:
            raise PoolError("the local backend is closed")
        if self._claude() is None:
            raise PoolError("local backend: no `claude` CLI on PATH (install the pinned "
                            "@anthropic-ai/claude-code, or pass LocalBackend(claude_bin=...))")

    def _claude(self) -> str | None:
        return self.claude_bin or shutil.which("claude")

    async def create(self, spec: ContainerSpec, *, name: str, labels: dict[str, str],
                     env: dict[str, str], cpu_shares: int | None = None) -> str:
        return await asyncio.to_thread(self._create, spec, name, labels, env, cpu_shares)

    def _find(self, ref: str) -> _Container | None:
        with self._lock:
            found = self._containers.get(ref)
            if found is None:
                found = next((c for c in self._containers.values() if c.name == ref), None)
            return found

    def _create(self, spec: ContainerSpec, name: str, labels: dict[str, str],
                env: dict[str, str], cpu_shares: int | None) -> str:
        if self._closed:
            raise PoolError("the local backend is closed")
        old = self._find(name)
        if old is not None:  # as DockerBackend: a stale container of this pool holds the name
            prefix = f"{LABEL}.prefix"
            if old.labels.get(prefix) != labels.get(prefix):
                raise PoolError(f"creating container {name} failed: the name is in use")
            self._remove(old.id)
        cid = secrets.token_hex(32)
        root = self.root / cid[:12]
        for sub in ("home", "workspace", "run/redis", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        mounts = self._mounts(spec, root, labels, name)
        child_env = self._env(spec, env, mounts, root)
        # run as root (a CI box, a dev container): the CLI refuses to run as root with
        # bypassPermissions, so the agent gets docker.user as in a container: the isolated
        # runner switches to it itself, else the runner runs as it too
        ids = agent_ids({AGENT_USER_ENV: spec.user})
        user: dict[str, Any] = {}
        if ids is not None:
            self.root.chmod(0o711)
            root.chmod(0o711)
            own = [root / "home", root / "workspace", root / "tmp"]
            if mounts["/workspace"].parent == self.root / "volumes":  # (never a bind mount)
                (self.root / "volumes").chmod(0o711)
                own.append(mounts["/workspace"])
            for path in own:
                os.chown(path, *ids)
            if not spec.isolate_runner:
                user = {"user": ids[0], "group": ids[1], "extra_groups": []}
                os.chown(root / "run", *ids)
        mark = f"{os.getpid()}-{cid[:16]}"
        child_env[MARK_ENV] = mark
        log_path = root / "log"
        argv = list(spec.command) if spec.command else [self.python, "-m", "dockercc.agent"]
        with open(log_path, "ab") as out:
            try:
                proc = Popen(argv, stdin=DEVNULL, stdout=out, stderr=out, env=child_env,
                             cwd=root, start_new_session=True, **user)
            except OSError as exc:
                shutil.rmtree(root, ignore_errors=True)
                raise PoolError(f"creating container {name} failed: {exc}") from exc
        c = _Container(id=cid, name=name, labels=dict(labels), root=root, proc=proc,
                       mark=mark, log_path=log_path, cpu_shares=cpu_shares)
        with self._lock:
            self._containers[cid] = c
        threading.Thread(target=self._wait, args=(c,), name=f"dcc-local-{cid[:12]}",
                         daemon=True).start()
        return cid

    def _mounts(self, spec: ContainerSpec, root: Path, labels: dict[str, str],
                name: str) -> dict[str, Path]:
        """Container path -> host path, for this container (see the module's table)."""
        if spec.binds:
            raise PoolError("local backend: docker.binds cannot be mounted (no container); "
                            "use a workspace")
        run = root / "run"
        mounts: dict[str, Path] = {CONTAINER_HOME: root / "home", RUNNER_DIR: run,
                                   "/tmp": root / "tmp", "/workspace": root / "workspace"}
        def under_run(path: str) -> Path:  # a path under RUNNER_DIR, here
            return run / Path(path).relative_to(RUNNER_DIR)

        socket_path = spec.redis_socket()
        if socket_path:
            under_run(f"{SOCKET_DIR}/{socket_path.rsplit('/', 1)[-1]}").symlink_to(socket_path)
        if spec.redis_relay_socket:
            under_run(RELAY_SOCKET).symlink_to(spec.redis_relay_socket)
        if spec.egress_dir:
            under_run(EGRESS_DIR).symlink_to(spec.egress_dir, target_is_directory=True)
        if spec.credentials_file:
            under_run(CREDENTIALS_MOUNT).symlink_to(spec.credentials_file)
        for kind, source, target, _read_only in spec.mounts:
            if target != "/workspace":
                raise PoolError(f"local backend: only /workspace can be mounted, not {target} "
                                "(add_dirs need Docker)")
            mounts["/workspace"] = Path(source) if kind == "bind" else self._volume(source)
        if spec.scratch_volume and not spec.mounts:
            mounts["/workspace"] = self._volume(
                scratch_volume_name(labels.get(f"{LABEL}.container", name)))
        return mounts

    def _volume(self, name: str) -> Path:
        path = self.root / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _env(self, spec: ContainerSpec, env: dict[str, str], mounts: dict[str, Path],
             root: Path) -> dict[str, str]:
        """The container's environment with its paths and the forwarder's port made local."""
        paths = sorted(mounts, key=len, reverse=True)
        pattern = re.compile("(?<![\\w/.-])(" + "|".join(re.escape(p) for p in paths)
                             + ")(?=$|[/?#:;,\\s])")
        out = {**{k: v for k, v in os.environ.items() if k in HOST_ENV}, **IMAGE_ENV}
        port_from = port_to = ""
        if env.get("DOCKERCC_EGRESS_PORT"):
            port_from = f"127.0.0.1:{env['DOCKERCC_EGRESS_PORT']}"
            port = _free_port()  # each container had its own loopback; here they share one
            port_to = f"127.0.0.1:{port}"
        for key, value in env.items():
            value = pattern.sub(lambda m: str(mounts[m.group(1)]), value)
            if port_from:
                value = value.replace(port_from, port_to)
            out[key] = value
        if port_to:
            out["DOCKERCC_EGRESS_PORT"] = port_to.rsplit(":", 1)[1]
        out["HOME"] = str(mounts[CONTAINER_HOME])
        out["TMPDIR"] = str(mounts["/tmp"])
        out.setdefault("DOCKERCC_WORKDIR", str(mounts["/workspace"]))
        claude = self._claude()
        if claude and "DOCKERCC_CLAUDE_BIN" not in env:
            out["DOCKERCC_CLAUDE_BIN"] = claude
        # this checkout's dockercc, whatever the runner's working directory
        package_root = str(Path(__file__).resolve().parent.parent.parent)
        out["PYTHONPATH"] = os.pathsep.join(
            [package_root, *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
        return out

    def _wait(self, c: _Container) -> None:
        """The runner's exit is the container's: its processes go, a ``die`` event is sent."""
        returncode = c.proc.wait()
        c.exit_code = _exit_code(returncode)
        kill_marked(c.mark)
        c.exited.set()
        self._emit(c, "die", exitCode=str(c.exit_code))

    def _emit(self, c: _Container, action: str, **attrs: str) -> None:
        with self._lock:
            watches = [w for w in self._watches if action in w.actions
                       and all(c.labels.get(k) == v for k, v in w.labels.items())]
        event = {"Type": "container", "Action": action, "status": action, "id": c.id,
                 "time": int(time.time()),
                 "Actor": {"ID": c.id, "Attributes": {**c.labels, "name": c.name, **attrs}}}
        for w in watches:
            try:
                w.on_event(event)
            except Exception as exc:  # a watcher's failure is not ours
                log.debug("local event watcher failed: %s", exc)

    def _stop(self, ref: str, timeout: float) -> None:
        c = self._find(ref)
        if c is None or c.exited.is_set():
            return
        with contextlib.suppress(OSError):
            os.killpg(c.proc.pid, signal.SIGTERM)
        if not c.exited.wait(timeout):
            kill_marked(c.mark)
            c.exited.wait(5)

    async def stop(self, name: str, timeout: float = 5) -> None:
        await asyncio.to_thread(self._stop, name, timeout)

    def _remove(self, ref: str) -> None:
        c = self._find(ref)
        if c is None:
            return
        if not c.exited.is_set():
            kill_marked(c.mark)
            c.exited.wait(5)
        with self._lock:
            self._containers.pop(c.id, None)
        self._emit(c, "destroy")
        shutil.rmtree(c.root, ignore_errors=True)

    async def remove(self, name: str) -> None:
        await asyncio.to_thread(self._remove, name)

    async def inspect(self, name: str) -> ContainerInfo | None:
        c = self._find(name)
        return None if c is None else c.info()

    async def list(self, labels: dict[str, str] | None = None) -> list[ContainerInfo]:
        wanted = labels or {LABEL: "1"}
        with self._lock:
            found = list(self._containers.values())
        return [c.info() for c in found
                if all(c.labels.get(k) == v for k, v in wanted.items())]

    async def rename(self, old: str, new: str) -> None:
        c = self._find(old)
        if c is None:
            raise PoolError(f"no such container: {old}")
        with self._lock:
            if any(o.name == new and o is not c for o in self._containers.values()):
                raise PoolError(f"renaming {old} to {new} failed: the name is in use")
            c.name = new

    async def set_cpu_shares(self, container_id: str, shares: int) -> None:
        """Kept, not enforced (no cgroup of its own)."""
        c = self._find(container_id)
        if c is not None:
            c.cpu_shares = shares

    async def remove_volume(self, name: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / "volumes" / name, True)

    async def logs(self, name: str, tail: int = 200) -> str:
        c = self._find(name)
        if c is None:
            return ""
        try:
            lines = c.log_path.read_text(errors="replace").splitlines(keepends=True)
        except OSError:
            return ""
        return "".join(lines[-tail:])

    def watch(self, labels: dict[str, str], on_event: Callable[[dict[str, Any]], None],
              actions: tuple[str, ...] = ("die", "oom", "destroy")) -> _LocalWatch:
        w = _LocalWatch(self, dict(labels), on_event, actions)
        with self._lock:
            self._watches.append(w)
        return w

    def pid(self, name: str) -> int | None:
        """The runner's process id (what a test kills to lose a container)."""
        c = self._find(name)
        return None if c is None else c.proc.pid

    async def close(self) -> None:
        """Remove every container this backend made, and its directory (when it made it)."""
        self._closed = True
        with self._lock:
            ids = list(self._containers)
            self._watches.clear()
        for cid in ids:
            await asyncio.to_thread(self._remove, cid)
        if self._own_root and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
