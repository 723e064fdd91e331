"""dockercc.testing.RedisServer: the one throwaway redis-server of the tests, the benchmarks,
the chaos runs and ``dockercc demo``. Real redis-server processes, no Docker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

from dockercc.errors import RedisServerError, TransportError
from dockercc.testing import RedisServer, free_port
from dockercc.testing import redis_server as module


@pytest.fixture
def tmpdir_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where RedisServer's own temporary directories go, so a test can see them removed."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_ping_close_leaves_nothing(tmpdir_root: Path) -> None:
    with RedisServer() as server:
        pid = server.pid
        assert pid is not None and server.running
        assert server.dir.parent == tmpdir_root and server.dir.name.startswith("dockercc-redis-")
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("k", "v")
        assert server.cli("get", "k").strip() == "v"
        assert server.keys() == ["k"]
        client.close()
        assert server in module._LIVE
    assert not server.running and server.pid is None
    assert gone(pid)
    assert list(tmpdir_root.iterdir()) == []
    assert server not in module._LIVE
    server.close()  # idempotent


def test_unix_socket(tmp_path: Path) -> None:
    with RedisServer(tmp_path, unix_socket=True) as server:
        assert server.unix_url == f"unix://{tmp_path / 'redis.sock'}"
        assert redis.Redis.from_url(server.unix_url).ping()
    # a given directory is kept (with the log), only the process goes
    assert (tmp_path / "redis.log").is_file()
    with RedisServer() as plain, pytest.raises(RedisServerError, match="unix_socket=True"):
        _ = plain.unix_url


@pytest.mark.parametrize("how", ["restart-term", "restart-kill", "kill-start"])
def test_aof_keeps_acknowledged_writes(tmpdir_root: Path, how: str) -> None:
    import signal

    with RedisServer(appendonly=True) as server:
        port, first = server.port, server.pid
        client = redis.Redis.from_url(server.url)
        client.set("survives", "yes")
        client.rpush("list", *range(100))
        if how == "restart-term":
            server.restart()
        elif how == "restart-kill":
            server.restart(0.1, signal.SIGKILL)
        else:
            server.kill()
            assert not server.running and first is not None and gone(first)
            with pytest.raises(redis.ConnectionError):
                client.ping()
            server.start()
        assert server.port == port and server.pid != first
        assert server.restarts == (0 if how == "kill-start" else 1)
        client = redis.Redis.from_url(server.url)
        assert client.get("survives") == b"yes"
        assert client.llen("list") == 100
        client.close()
    assert list(tmpdir_root.iterdir()) == []


def test_without_aof_a_restart_starts_empty() -> None:
    with RedisServer() as server:
        server.cli("set", "k", "v")
        server.restart()
        assert server.keys() == []


def test_stop_then_start_and_a_process_that_died_on_its_own() -> None:
    with RedisServer() as server:
        server.stop()
        assert not server.running
        server.stop()  # idempotent
        server.start()
        assert server.cli("ping").strip() == "PONG"
        pid = server.pid
        assert pid is not None
        os.kill(pid, 9)  # dies behind the helper's back
        deadline = time.monotonic() + 10
        while server.running and time.monotonic() < deadline:  # (SIGKILL is not instant)
            time.sleep(0.01)
        server.start()  # notices and starts again
        assert server.running and server.pid != pid


def test_missing_binary_is_a_typed_error(tmpdir_root: Path) -> None:
    with pytest.raises(RedisServerError) as info:
        RedisServer(executable=str(tmpdir_root / "no-such-redis-server"))
    assert isinstance(info.value, TransportError)
    message = str(info.value)
    assert "not found" in message
    assert "apt-get install redis-server" in message and "REDIS_URL" in message
    assert list(tmpdir_root.iterdir()) == []


def test_failed_start_says_why_and_leaves_nothing(tmpdir_root: Path) -> None:
    live_before = set(module._LIVE)  # (the suite's own Redis is one of them)
    # the port is taken by something that is not Redis: redis-server exits, the error
    # carries the tail of its log, and neither the process nor the directory is left
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RedisServerError, match="exited with code") as info:
            RedisServer(port=port)
    assert "last lines of" in str(info.value)
    assert "Address already in use" in str(info.value)
    assert list(tmpdir_root.iterdir()) == []
    assert module._LIVE == live_before


def test_another_redis_on_the_port_is_not_mistaken_for_ours(tmpdir_root: Path) -> None:
    with RedisServer() as first:
        with pytest.raises(RedisServerError):
            RedisServer(port=first.port)
        assert first.cli("ping").strip() == "PONG"


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    live_before = set(module._LIVE)
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'pretending to start'\nexec sleep 60\n")
    fake.chmod(0o755)
    with pytest.raises(RedisServerError, match=r"did not answer .* within 0.5s") as info:
        RedisServer(tmp_path / "d", executable=str(fake), start_timeout=0.5)
    assert "pretending to start" in str(info.value)
    assert module._LIVE == live_before


def test_an_exception_in_the_block_still_cleans_up(tmpdir_root: Path) -> None:
    with pytest.raises(ZeroDivisionError), RedisServer() as server:
        pid = server.pid
        1 / 0  # noqa: B018
    assert pid is not None and gone(pid)
    assert list(tmpdir_root.iterdir()) == []


def test_interpreter_exit_closes_forgotten_servers(tmp_path: Path) -> None:
    # a real interpreter exit (not module._close_all() here: that would also close the
    # servers other tests of this process use)
    script = ("import sys, tempfile\n"
              f"tempfile.tempdir = {str(tmp_path)!r}\n"
              "from dockercc.testing import RedisServer\n"
              "server = RedisServer()\n"
              "print(server.pid, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    pid = int(out.stdout.split()[0])
    assert gone(pid) and list(tmp_path.iterdir()) == []


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
