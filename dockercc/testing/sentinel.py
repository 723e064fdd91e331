"""A throwaway Redis Sentinel group on loopback: a primary and a replica (real
``redis-server``, append-only) watched by one ``redis-sentinel`` (quorum 1), for tests and
``python -m benchmarks.chaos --failover``. :meth:`SentinelGroup.fail_over` SIGKILLs the
current primary and waits until the sentinel has promoted the replica."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from ..errors import RedisServerError
from .redis_server import HOST, RedisServer, free_port

SERVICE = "dockercc"


class SentinelGroup:
    def __init__(self, directory: str | Path | None = None, *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 5000) -> None:
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="dockercc-sentinel-") if directory is None
                        else directory)
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: list[RedisServer] = []
        self.sentinel: subprocess.Popen[bytes] | None = None
        self.sentinel_port = free_port()
        self.failovers = 0
        try:
            primary = RedisServer(self.dir / "a", appendonly=True)
            self.servers.append(primary)
            self.servers.append(RedisServer(self.dir / "b", appendonly=True, extra_args=(
                "--replicaof", HOST, str(primary.port))))
            self._wait(lambda: "master_link_status:up" in self.servers[1].cli(
                "info", "replication"), 20, "the replica never synced")
            self._start_sentinel(primary.port)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"redis+sentinel://{HOST}:{self.sentinel_port}/{SERVICE}/0"

    def primary(self) -> RedisServer:
        """The server the sentinel names as primary now."""
        out = subprocess.run(["redis-cli", "-p", str(self.sentinel_port), "sentinel",
                              "get-master-addr-by-name", SERVICE], capture_output=True,
                             text=True, timeout=5).stdout.split()
        port = int(out[1]) if len(out) == 2 else 0
        for server in self.servers:
            if server.port == port:
                return server
        raise RedisServerError(f"the sentinel names no known primary ({out})")

    def _flags(self) -> str:
        """The sentinel's flags for the primary (``master``; plus ``s_down``, ... while it
        is not usable: clients refuse such a primary)."""
        out = subprocess.run(["redis-cli", "-p", str(self.sentinel_port), "sentinel", "master",
                              SERVICE], capture_output=True, text=True, timeout=5).stdout.split()
        return out[out.index("flags") + 1] if "flags" in out else ""

    def keys(self, pattern: str = "*") -> list[str]:
        return self.primary().keys(pattern)

    def replica(self) -> RedisServer:
        primary = self.primary()
        return next(s for s in self.servers if s is not primary)

    def fail_over(self, timeout: float = 30) -> float:
        """SIGKILL the primary; return the seconds until the replica answers as primary.
        The old primary comes back as a replica of the new one (as an operator would)."""
        old = self.primary()
        new = self.replica()
        started = time.monotonic()
        old.kill()
        self._wait(lambda: self.primary() is new and "role:master" in new.cli(
            "info", "replication") and self._flags() == "master", timeout,
            "the sentinel did not fail over")
        took = time.monotonic() - started
        old.extra_args = ("--replicaof", HOST, str(new.port))
        old.start()
        self.failovers += 1
        return took

    def _start_sentinel(self, primary_port: int) -> None:
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind {HOST}\nprotected-mode no\ndir {self.dir}\n"
            f"sentinel monitor {SERVICE} {HOST} {primary_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n")
        exe = shutil.which("redis-sentinel")
        args = [exe, str(conf)] if exe else [self.servers[0].executable, str(conf), "--sentinel"]
        with open(self.dir / "sentinel.log", "ab") as log:
            self.sentinel = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        self._wait(lambda: self.primary() is self.servers[0] and self._flags() == "master", 20,
                   "the sentinel did not start")

    @staticmethod
    def _wait(check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if check():  # type: ignore[operator]
                    return
            time.sleep(0.05)
        raise RedisServerError(what)

    def close(self) -> None:
        if self.sentinel is not None:
            with contextlib.suppress(Exception):
                self.sentinel.send_signal(signal.SIGKILL)
                self.sentinel.wait(10)
            self.sentinel = None
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
