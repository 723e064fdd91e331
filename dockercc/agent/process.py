"""The CLI process: starting it as the agent (or adopting the one :mod:`.early` started),
writing its stdin, reading its stdout and stderr, stopping it, and what a dead CLI tells
(its stderr's tail, the cgroup's OOM-kill and pids-limit counters, the leftovers it left).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .early import spawn_cli
from .settings import RunnerSettings

log = logging.getLogger("dockercc.agent")

LINE_LIMIT = 15 * 1024 * 1024  # longest stdout line the runner relays (the host drops
# envelopes over 16 MiB: protocol.bounded.MAX_ENVELOPE_BYTES)
STDERR_TAIL_LINES = 40


OOM_COUNTERS = ("/sys/fs/cgroup/memory.events",  # cgroup v2
                "/sys/fs/cgroup/memory/memory.oom_control")  # cgroup v1
PIDS_EVENTS = ("/sys/fs/cgroup/pids.events",  # cgroup v2
               "/sys/fs/cgroup/pids/pids.events")  # cgroup v1


def kill_leftovers(agent_uid: int | None = None) -> int:
    """SIGKILL what a dead CLI left running (its tools run in sessions of their own, so they
    outlive it: a memory hog or a fork bomb would take the restarted CLI down too). Only in a
    container whose init is us or a plain init (tini) that started us: every process of the
    agent's uid (``agent_uid``; our own without one) but init and the runner. A root runner
    signals the agent's processes with CAP_KILL; ``docker exec`` sessions (root) are spared."""
    me = os.getpid()
    if me != 1:
        try:
            with open("/proc/1/cmdline", "rb") as f:
                init = os.path.basename(f.read().split(b"\0")[0])
        except OSError:
            return 0
        if os.getppid() != 1 or init not in (b"tini", b"tini-static", b"docker-init"):
            return 0
    if not os.path.exists("/.dockerenv"):
        return 0
    killed = 0
    uid = os.getuid() if agent_uid is None else agent_uid
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    os.kill(int(entry), signal.SIGKILL)
                    killed += 1
    return killed


def _cgroup_counter(paths: tuple[str, ...], name: str) -> int | None:
    """A counter of the container's cgroup (``name value`` lines, cgroup v2 or v1 file);
    ``None`` where none of ``paths`` can be read."""
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == name:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def pids_refusals() -> int | None:
    """How many forks (and thread creations) the container's process limit refused (the pids
    cgroup's ``max`` counter); ``None`` where the counter cannot be read."""
    return _cgroup_counter(PIDS_EVENTS, "max")


def oom_kills() -> int | None:
    """How many processes the kernel killed in this container for its memory limit (from the
    cgroup's ``oom_kill`` counter); ``None`` where the counter cannot be read."""
    return _cgroup_counter(OOM_COUNTERS, "oom_kill")


class PopenProcess:
    """A CLI started before the event loop (:mod:`.early`), with asyncio streams: the part of
    ``asyncio.subprocess.Process`` the runner uses."""

    def __init__(self, popen: subprocess.Popen[bytes], stdin: asyncio.StreamWriter,
                 stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 exited: asyncio.Future[int]) -> None:
        self.popen = popen
        self.stdin: asyncio.StreamWriter | None = stdin
        self.stdout: asyncio.StreamReader | None = stdout
        self.stderr: asyncio.StreamReader | None = stderr
        self._exited = exited

    @classmethod
    async def adopt(cls, popen: subprocess.Popen[bytes], limit: int) -> PopenProcess:
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        loop = asyncio.get_running_loop()
        readers = []
        for pipe in (popen.stdout, popen.stderr):
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            await loop.connect_read_pipe(
                lambda r=reader: asyncio.StreamReaderProtocol(r, loop=loop), pipe)  # type: ignore[misc]
            readers.append(reader)
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop=loop), popen.stdin)
        stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        exited: asyncio.Future[int] = loop.create_future()

        def done(code: int) -> None:
            if not exited.done():
                exited.set_result(code)

        def reap() -> None:  # a thread: Popen.wait() is blocking
            code = popen.wait()
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(done, code)

        threading.Thread(target=reap, name="dockercc-cli-wait", daemon=True).start()
        return cls(popen, stdin, readers[0], readers[1], exited)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if not self._exited.done():
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()


CLIProcess = asyncio.subprocess.Process | PopenProcess


class Tasks:
    """The runner's background tasks: kept referenced until done, cancelled at exit."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    def cancel_all(self) -> None:
        for task in list(self.running):
            task.cancel()


class CLI:
    """The one CLI process the runner talks to at a time (``proc``), with its readers.

    ``on_line`` gets every stdout line (with its newline, if it had one); ``on_too_long`` is
    called for a line over :data:`LINE_LIMIT`, which is dropped. ``stderr_tail`` keeps the
    last lines of stderr (and why a start failed) for the error event of a CLI that died.
    """

    def __init__(self, settings: RunnerSettings, tasks: Tasks,
                 on_line: Callable[[bytes], None], on_too_long: Callable[[], None]) -> None:
        self.s = settings
        self.tasks = tasks
        self.on_line = on_line
        self.on_too_long = on_too_long
        self.proc: CLIProcess | None = None
        self.stdin_lock = asyncio.Lock()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.io_tasks: list[asyncio.Task[Any]] = []  # the current process's readers

    def _read(self, proc: CLIProcess) -> CLIProcess:
        self.proc = proc
        self.io_tasks = [self.tasks.spawn(self.stdout_loop(proc)),
                         self.tasks.spawn(self.stderr_loop(proc))]
        return proc

    async def adopt(self, popen: subprocess.Popen[bytes]) -> CLIProcess | None:
        """The CLI :mod:`.early` started, read from now on; None (and killed) if it cannot be."""
        try:
            proc = await PopenProcess.adopt(popen, LINE_LIMIT)
        except (OSError, ValueError) as exc:
            log.warning("could not adopt the early CLI: %s", exc)
            with contextlib.suppress(OSError):
                popen.kill()
            return None
        return self._read(proc)

    async def start(self, argv: list[str], env: dict[str, str] | None = None) -> CLIProcess | None:
        """Start the CLI (as the agent, :func:`.early.spawn_cli`, like the early CLI) and its
        stdout/stderr readers; None (why: in ``stderr_tail``) if it cannot start."""
        try:
            # Popen here, not asyncio's: the fork must happen on this thread inside
            # agent_fs (the child's chdir into the workdir runs as the agent), which an
            # await between the two could not promise
            popen = spawn_cli(argv, ids=self.s.agent, cwd=self.s.workdir, env=env)
        except OSError as exc:
            self.stderr_tail.append(f"cannot start {argv[0]}: {exc}")
            return None
        try:
            proc: CLIProcess = await PopenProcess.adopt(popen, LINE_LIMIT)
        except (OSError, ValueError) as exc:
            self.stderr_tail.append(f"cannot read from {argv[0]}: {exc}")
            with contextlib.suppress(OSError):
                popen.kill()
            return None
        return self._read(proc)

    async def write(self, line: str | bytes) -> bool:
        """Write one line to the CLI's stdin; False if there is no CLI to take it."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return False
        data = line.encode() if isinstance(line, str) else line
        async with self.stdin_lock:
            try:
                proc.stdin.write(data.rstrip(b"\n") + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                return False
        return True

    async def kill(self, proc: CLIProcess) -> None:
        """Stop ``proc`` at once and let its readers drain."""
        with contextlib.suppress(Exception):
            proc.stdin and proc.stdin.close()  # type: ignore[func-returns-value]
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self.io_tasks), 5)
        self.proc = None

    async def close(self, proc: CLIProcess) -> None:
        """End ``proc`` gently: close its stdin, wait up to 10 s for it, then kill it."""
        with contextlib.suppress(Exception):
            proc.stdin and proc.stdin.close()  # type: ignore[func-returns-value]
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def stdout_loop(self, proc: CLIProcess) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # longer than LINE_LIMIT: drop it, say so
                self.on_too_long()
                continue
            if not line:
                return
            self.on_line(line)

    async def stderr_loop(self, proc: CLIProcess) -> None:
        assert proc.stderr is not None
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:
                continue
            if not line:
                return
            self.stderr_tail.append(line.decode(errors="replace").rstrip()[:2000])
