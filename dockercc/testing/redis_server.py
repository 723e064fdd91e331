"""A private, throwaway ``redis-server``: for tests, benchmarks, chaos runs and ``dockercc demo``.

::

    from dockercc.testing import RedisServer

    with RedisServer() as redis:          # started: a free loopback port, a temporary directory
        pool = Pool({"redis": {"url": redis.url}})
        ...
    # the process is gone (SIGKILL if it does not stop in time) and the directory removed

``RedisServer(appendonly=True)`` persists every write before it answers (``appendfsync
always``), so :meth:`~RedisServer.restart` and :meth:`~RedisServer.kill` + :meth:`~RedisServer.start`
keep every acknowledged write. ``unix_socket=True`` also listens on ``<dir>/redis.sock``
(:attr:`~RedisServer.unix_url`). The server's log is ``<dir>/redis.log``; a server that is
missing or does not start raises :class:`~dockercc.errors.RedisServerError` with the tail of it.

The process runs in its own session, so a Ctrl-C to the caller's process group (or a Jupyter
kernel interrupt) does not kill Redis before the caller has cleaned up through it; servers
still running at interpreter exit are stopped then.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from ..errors import RedisServerError

__all__ = ["RedisServer", "free_port"]

INSTALL_HINT = "install redis-server (apt-get install redis-server) or set REDIS_URL"
HOST = "127.0.0.1"
LOG_TAIL_LINES = 20

_LIVE: set[RedisServer] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (something else may still take it first)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of the caller's own on 127.0.0.1, started by the constructor.

    ``directory`` holds the data, the log and the unix socket; without one a temporary
    directory is made and :meth:`close` removes it (a given directory is kept). ``port=0``
    picks a free port, kept across restarts. ``executable`` is looked up on ``PATH``.
    ``start_timeout`` bounds the wait for the server to answer (an AOF may take a while to
    load). Use it as a context manager, or call :meth:`close` (idempotent).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        unix_socket: bool = False,
        appendonly: bool = False,
        appendfsync: Literal["always", "everysec", "no"] = "always",
        executable: str = "redis-server",
        start_timeout: float = 20.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        exe = shutil.which(executable)
        if exe is None:
            raise RedisServerError(f"{executable} not found: {INSTALL_HINT}")
        self.executable = exe
        self.extra_args = tuple(extra_args)  # e.g. ("--replicaof", host, port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        """How many times :meth:`restart` brought the server back."""
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="dockercc-redis-") if directory is None
                        else directory)
        _LIVE.add(self)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.port = port or free_port()
            self.socket_path = str(self.dir / "redis.sock") if unix_socket else None
            self.appendonly = appendonly
            self.appendfsync = appendfsync
            self.start_timeout = start_timeout
            self.log_path = self.dir / "redis.log"
            self.start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        if self.socket_path is None:
            raise RedisServerError("this RedisServer has no unix socket (unix_socket=True)")
        return f"unix://{self.socket_path}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the server (again) and wait until it answers; a no-op while it runs."""
        if self.running:
            return self
        self.stop()  # reap a process that died on its own
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log_from = log.tell()
            self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(self.proc, log_from)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 20.0) -> None:
        """Stop the process with ``sig`` (SIGTERM: a clean shutdown, SIGKILL: a crash) and
        wait; SIGKILL if it is still there after ``timeout`` s. Keeps the directory, so
        :meth:`start` brings the data back (with ``appendonly``). Idempotent."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the server, like a crash (:meth:`start` brings it back)."""
        self.stop(signal.SIGKILL)

    def restart(self, outage_s: float = 0.0, sig: int = signal.SIGTERM) -> Self:
        """Stop with ``sig``, stay down ``outage_s`` seconds, start again on the same port."""
        self.stop(sig)
        time.sleep(outage_s)
        self.start()
        self.restarts += 1
        return self

    def close(self) -> None:
        """Stop the process and remove the directory if it is a temporary one (idempotent)."""
        try:
            self.stop()
        finally:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            _LIVE.discard(self)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<RedisServer {self.url} {state} dir={self.dir}>"

    # ------------------------------------------------------------------ redis-cli

    def cli(self, *args: str) -> str:
        """Run ``redis-cli -p <port> *args`` and return its output (raises if it fails)."""
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                              text=True, check=True).stdout

    def keys(self, pattern: str = "*") -> list[str]:
        return [k for k in self.cli("--scan", "--pattern", pattern).splitlines() if k]

    # ------------------------------------------------------------------ internals

    def _args(self) -> list[str]:
        args = [self.executable, "--port", str(self.port), "--bind", HOST,
                "--dir", str(self.dir), "--save", "", "--protected-mode", "no",
                "--appendonly", "yes" if self.appendonly else "no"]
        if self.appendonly:
            args += ["--appendfsync", self.appendfsync]
        if self.socket_path is not None:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "777"]
        return args + list(self.extra_args)

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_from: int) -> None:
        """Until this process (not another one on the port) answers and has loaded its data."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                raise RedisServerError(f"redis-server exited with code {proc.returncode} at "
                                       f"start{self._log_tail(log_from)}")
            if _info_ready(self.port, proc.pid):
                return
            if time.monotonic() > deadline:
                raise RedisServerError(f"redis-server did not answer on port {self.port} "
                                       f"within {self.start_timeout:g}s"
                                       f"{self._log_tail(log_from)}")
            time.sleep(0.02)

    def _log_tail(self, log_from: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(log_from)
                lines = f.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return ""
        body = "\n".join(lines) if lines else "(empty)"
        return f"; last lines of {self.log_path}:\n{body}"


def _info_ready(port: int, pid: int) -> bool:
    """Whether the Redis on ``port`` is process ``pid`` and has finished loading its data."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as c:
            c.sendall(b"INFO\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    return False
                data += chunk
            head, _, body = data.partition(b"\r\n")
            if not head.startswith(b"$"):
                return False
            size = int(head[1:]) + 2
            while len(body) < size:
                chunk = c.recv(65536)
                if not chunk:
                    return False
                body += chunk
    except (OSError, ValueError):
        return False
    fields = dict(line.split(":", 1) for line in body.decode(errors="replace").splitlines()
                  if ":" in line)
    return fields.get("process_id") == str(pid) and fields.get("loading") == "0"


@atexit.register
def _close_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()
