"""The runner inside each container: Redis <-> the Claude Code CLI's stdin/stdout.

Life of a runner:

1. connect to Redis, register the container (``{p}pool:container:{id}``, status ``warm``) and
   heartbeat every ``healthIntervalMs``;
2. wait for an assignment on ``{p}pool:assign:{id}`` (warm containers have no session baked
   in); an assignment names the session and the CLI's arguments;
3. start ``claude --input-format stream-json --output-format stream-json --verbose ...``;
   relay input (BLMOVE into ``:input:processing``, removed only once written to the CLI),
   every stdout line as an envelope (buffer + publish, pipelined), results, state, control
   (interrupt / stop) and MCP messages for the host bridge;
4. if the CLI dies, report an error event and restart it with ``--resume``;
5. on ``stop`` (or SIGTERM) close the CLI's stdin, mark the state ``stopped`` and exit.

Needs only ``redis`` (and the pure ``dockercc.protocol``) at run time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import os
import random
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ReadOnlyError

from ..protocol import control
from ..protocol.cli import runtime_requests, split_cli_args, start_time_args
from ..protocol.envelope import Envelope, encode_envelope, runner_event
from ..protocol.keys import OUTPUT_BUFFER_MAX, PoolKeys, SessionKeys, validate_id
from ..protocol.transcript import check_meta as check_transcript_meta
from ..storage.sentinel import connect
from .early import (
    BASE_ARGS,
    AgentIds,
    agent_fs,
    agent_ids,
    bind_forwarder,
    claude_home,
    install_credentials,
    spawn_cli,
    take_listener,
)
from .forwarder import Forwarder
from .warmup import DEFAULT_BASE_URL, WARMUP_PROMPT, WarmupAPI, warmup_supported

log = logging.getLogger("dockercc.agent")

FAST_PREFIXES = (b'{"type":"stream_event"', b'{"type":"user"')
"""Lines that start so need no parsing: the runner keeps no state from them."""
LINE_LIMIT = 15 * 1024 * 1024  # longest stdout line the runner relays (the host drops
# envelopes over 16 MiB: protocol.bounded.MAX_ENVELOPE_BYTES)
HISTORY_RESULT_LINE = 64 * 1024  # tool results on lines up to this size go into the history
STDERR_TAIL_LINES = 40
MAX_RESTARTS = 3

PipeOp = Callable[[Any], None]
REDIS_DOWN = (OSError, aioredis.ConnectionError, aioredis.TimeoutError, ReadOnlyError)
"""What a Redis outage (or restart, or fail-over: a demoted primary answers READONLY) raises;
loops that meet it wait and go on."""
ORPHAN_EXIT = 75
"""The runner's exit code when it gave up on Redis (``timeouts.orphanMs``): EX_TEMPFAIL, so
``docker ps -a`` tells an orphan's exit from a crash."""
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0


class RedisLink:
    """Whether Redis answers the runner, shared by all its loops.

    Loops report each failure here and sleep the returned back-off (exponential, jittered,
    at most BACKOFF_MAX_S), so an outage costs a handful of tries a minute instead of five a
    second per loop. The log gets one line per change of state (lost, back, given up), never
    one per try: an orphan's log stays a few lines however long it waits. After ``orphan_s``
    without an answer the runner is an orphan (its owner, relay or Redis is gone for good)
    and ``on_orphan`` ends it; a Redis that is back sooner finds the runner (and its claimed
    session) going on as before.
    """

    def __init__(self, orphan_s: float, on_orphan: Callable[[], None],
                 max_backoff_s: float = BACKOFF_MAX_S) -> None:
        self.orphan_s = orphan_s
        self.max_backoff_s = max_backoff_s
        self.on_orphan = on_orphan
        self.down_since: float | None = None
        self.tries = 0
        self.orphaned = False

    def ok(self) -> None:
        if self.down_since is not None:
            log.warning("Redis reachable again after %.1fs (%d failed tries)",
                        time.monotonic() - self.down_since, self.tries)
            self.down_since, self.tries = None, 0

    def backoff(self, what: str, exc: BaseException) -> float:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning("Redis unreachable (%s: %s); retrying with back-off up to %.0fs, "
                        "exiting after %.0fs without it (timeouts.orphanMs)",
                        what, _short(exc), self.max_backoff_s, self.orphan_s)
        self.tries += 1
        if now - self.down_since >= self.orphan_s and not self.orphaned:
            self.orphaned = True
            log.error("Redis unreachable for %.0fs (%d tries): exiting as an orphan",
                      now - self.down_since, self.tries)
            self.on_orphan()
        delay = min(self.max_backoff_s, BACKOFF_FIRST_S * 2 ** min(self.tries, 10))
        return delay * random.uniform(0.5, 1.0)

    async def failed(self, what: str, exc: BaseException,
                     client: aioredis.Redis | None = None) -> None:
        if isinstance(exc, ReadOnlyError) and client is not None:
            # a fail-over demoted the primary this connection reached: drop the pooled
            # connections so the next command reconnects (the relay or Sentinel picks the
            # new primary)
            with contextlib.suppress(Exception):
                await client.connection_pool.disconnect()
        await asyncio.sleep(self.backoff(what, exc))


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]

APPEND_ENVELOPES = """
-- KEYS: output_buffer, output channel; ARGV: first seq, buffer max, envelopes...
-- idempotent: a batch whose first seq the buffer already reached was written before
local last = redis.call('LINDEX', KEYS[1], -1)
if last then
  local seq = tonumber(string.match(last, '^{"seq":(%d+)'))
  if seq and seq >= tonumber(ARGV[1]) then return 0 end
end
for i = 3, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
  redis.call('PUBLISH', KEYS[2], ARGV[i])
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return 1
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunnerSettings:
    """Taken from the container's environment (``DOCKERCC_*``)."""

    redis_url: str
    container: str
    prefix: str = "clawdbot:cc:"
    health_interval_ms: int = 10_000
    claude_bin: str = "claude"  # shell words: a wrapper (e.g. "nice -n 5 claude") works
    mcp_timeout_s: float = 300.0
    permission_timeout_s: float = 300.0  # the host's timeouts.permissionMs
    workdir: str | None = None
    prestart: Prestart | None = None
    agent: AgentIds | None = None  # (uid, gid) of the CLI when it is not the runner's own
    egress_socket: str | None = None  # the host egress proxy's socket (network none)
    egress_port: int = 3128
    orphan_ms: int = 300_000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RunnerSettings:
        env = dict(os.environ if env is None else env)
        return cls(
            prestart=Prestart.decode(env.get("DOCKERCC_PRESTART", "")),
            redis_url=env.get("DOCKERCC_REDIS_URL") or env.get("REDIS_URL", "redis://localhost:6379"),
            container=validate_id(env.get("DOCKERCC_CONTAINER", ""), "container id"),
            prefix=env.get("DOCKERCC_KEY_PREFIX", "clawdbot:cc:"),
            health_interval_ms=int(env.get("DOCKERCC_HEALTH_INTERVAL_MS", "10000")),
            claude_bin=env.get("DOCKERCC_CLAUDE_BIN", "claude"),
            mcp_timeout_s=float(env.get("DOCKERCC_MCP_TIMEOUT_S", "300")),
            permission_timeout_s=int(env.get("DOCKERCC_PERMISSION_MS") or 300_000) / 1000,
            workdir=env.get("DOCKERCC_WORKDIR") or None,
            agent=agent_ids(env),
            egress_socket=env.get("DOCKERCC_EGRESS_SOCKET") or None,
            egress_port=int(env.get("DOCKERCC_EGRESS_PORT") or 3128),
            orphan_ms=int(env.get("DOCKERCC_ORPHAN_MS") or 300_000),
        )


@dataclass
class Prestart:
    """A CLI to start in a warm container before any session claims it (``DOCKERCC_PRESTART``).

    ``args`` are the agent's default session arguments; ``tools`` the host MCP tools known to
    the pool (what the runner answers the CLI's start-up ``tools/list`` with, since no host
    bridge exists before the claim) and ``tools_digest`` their digest, compared with the
    assignment's: equal args reuse the running CLI, different tools get a ``list_changed``.
    """

    args: list[str]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tools_digest: str = ""
    server: str = "host"
    prime: bool = True  # warm the CLI's first-turn code paths (get_context_usage) pre-claim
    warmup: bool = True  # and one throwaway turn against a loopback API (see warmup.py)
    wait: bool = True  # register as warm only once the CLI answered (False: cold containers)
    timeout_s: float = 20.0  # the most pre-starting may take (the pool waits startupMs)

    @classmethod
    def decode(cls, raw: str) -> Prestart | None:
        if not raw:
            return None
        try:
            obj = json.loads(raw)
            return cls(args=[str(a) for a in obj["args"]],
                       tools=[t for t in obj.get("tools") or [] if isinstance(t, dict)],
                       tools_digest=str(obj.get("tools_digest") or ""),
                       server=str(obj.get("server") or "host"),
                       prime=bool(obj.get("prime", True)),
                       warmup=bool(obj.get("warmup", True)), wait=bool(obj.get("wait", True)),
                       timeout_s=float(obj.get("timeout_s", 20.0)))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("DOCKERCC_PRESTART ignored: %s", exc)
            return None


@dataclass
class Assignment:
    """What the host tells a runner when it hands it a session."""

    session: str
    agent: str = "main"
    args: list[str] = field(default_factory=list)
    history_max: int = 1000
    restore_from: str | None = None  # dockercc session whose CLI transcript to restore
    tools_digest: str = ""  # digest of the session's host tools (see Prestart)
    lease_token: str = ""  # sent with every MCP request: the host answers only this lease
    transcript_sha256: str = ""  # the host-verified digest of the transcript to restore
    hooks: dict[str, Any] | None = None  # the initialize request's hook matchers (callback ids)
    #: the run-time part of the session (``dockercc.protocol.cli.run_time_settings``: model,
    #: permission mode, allowed / disallowed tools, env): applied to a pre-started CLI with
    #: control requests. Its env may hold secrets: never logged (repr=False)
    runtime: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def decode(cls, raw: bytes | str) -> Assignment:
        obj = json.loads(raw)
        restore = obj.get("restore_from")
        return cls(session=validate_id(obj["session"]),
                   agent=validate_id(obj.get("agent") or "main", "agent name"),
                   args=[str(a) for a in obj.get("args") or []],
                   history_max=int(obj.get("history_max", 1000)),
                   restore_from=validate_id(restore) if restore else None,
                   tools_digest=str(obj.get("tools_digest") or ""),
                   lease_token=str(obj.get("lease_token") or ""),
                   transcript_sha256=str(obj.get("transcript_sha256") or ""),
                   hooks=obj["hooks"] if isinstance(obj.get("hooks"), dict) else None,
                   runtime=obj["runtime"] if isinstance(obj.get("runtime"), dict) else {})

    def wanted_runtime(self) -> dict[str, Any]:
        """The run-time part to apply (older hosts send none: taken from the args)."""
        run = split_cli_args(self.args)[1]
        env = self.runtime.get("env")
        if isinstance(env, dict) and env:
            run["env"] = {str(k): str(v) for k, v in env.items()}
        return run

    def cli_env(self) -> dict[str, str] | None:
        """The environment of a CLI started for this session (the container's plus the
        session's run-time env), or None for the container's."""
        env = self.runtime.get("env")
        if not isinstance(env, dict) or not env:
            return None
        return {**os.environ, **{str(k): str(v) for k, v in env.items()}}


TRANSCRIPT_MAX = 32 * 1024 * 1024
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


def find_transcript(claude_session_id: str, agent: AgentIds | None = None) -> Path | None:
    """The CLI's own transcript of a conversation (``~/.claude/projects/*/<id>.jsonl``),
    looked up as the agent (``agent``: see :func:`.early.agent_fs`)."""
    # the id comes from the CLI's output and names a file: plain characters only, so a glob
    # pattern ("*") or a path cannot pick up another conversation's transcript
    if not claude_session_id or not all(c.isascii() and (c.isalnum() or c in "-_")
                                        for c in claude_session_id):
        return None
    with agent_fs(agent):
        for path in (claude_home() / "projects").glob(f"*/{claude_session_id}.jsonl"):
            return path
    return None


def read_agent_file(path: Path, limit: int, agent: AgentIds | None) -> bytes:
    """A file of the agent's, read as the agent: only a regular file, only up to ``limit``
    (+1, so a caller sees it was longer): a FIFO or a huge file the agent put in its place
    must not stall or swamp the runner's loop."""
    with agent_fs(agent):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return f.read(limit + 1)


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


class Runner:
    def __init__(self, settings: RunnerSettings,
                 early: subprocess.Popen[bytes] | None = None) -> None:
        self.s = settings
        self.early = early  # the CLI .early started before the runner's imports
        self.pool_keys = PoolKeys(settings.prefix)
        self.r: aioredis.Redis = connect(settings.redis_url, socket_connect_timeout=5)
        self.keys: SessionKeys | None = None
        self.assignment: Assignment | None = None
        self.proc: CLIProcess | None = None
        self.stdin_lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.queue: asyncio.Queue[tuple[bytes | None, list[PipeOp]]] = asyncio.Queue()
        self.seq = 0
        self.turns = 0
        self.cost = 0.0
        self.claude_session_id = ""
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.skipped_lines = 0
        self.busy = False
        self.restarts = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turn_prompt = ""
        self._turn_text: list[str] = []
        self._turn_tools: list[dict[str, Any]] = []
        self._delivered: dict[Any, None] = {}  # ids of the last inputs written (insertion order)
        # pre-started CLI (warm containers): its reader tasks, pending pre-claim control
        # requests, and the gate that holds input while a tools refresh is under way
        self._io_tasks: list[asyncio.Task[Any]] = []
        self._control_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.prestarted = False
        self.runtime_applied = 0  # run-time settings applied to the adopted CLI at the claim
        self.warmed_up = False  # the pre-started CLI took its throwaway warm-up turn
        self.tools_ready = asyncio.Event()
        self.tools_ready.set()
        self.forwarder: Forwarder | None = None
        # back-off under half a health interval: a Redis that is back gets heartbeats again
        # well inside the pool's grace window (see ContainerPool.check), so nobody is lost
        self.link = RedisLink(settings.orphan_ms / 1000, self.stopping.set,
                              min(BACKOFF_MAX_S, max(0.05, settings.health_interval_ms / 2000)))
        self.traceparent = ""

    # -- helpers ---------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def emit(self, line: bytes | str, *ops: PipeOp) -> None:
        """Queue one event line (and pipeline ops that go with it) for the writer."""
        data = line.encode() if isinstance(line, str) else line
        self.queue.put_nowait((data, list(ops)))

    def emit_ops(self, *ops: PipeOp) -> None:
        self.queue.put_nowait((None, list(ops)))

    def set_state(self, **fields: Any) -> PipeOp:
        assert self.keys is not None
        key = self.keys.state
        mapping = {k: str(v) for k, v in fields.items()}
        return lambda pipe: pipe.hset(key, mapping=mapping)

    # -- main ------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stopping.set)
        ckey = self.pool_keys.container_state(self.s.container)
        await self.start_forwarder()
        if self.s.prestart is not None:
            # before registering: the pool counts the container warm once it is listed here
            await self.prestart_cli(self.s.prestart)
        await self.r.hset(ckey, mapping={"status": "warm", "heartbeat": now_ms(),
                                         "started": now_ms(), "pid": os.getpid(),
                                         "prestarted": int(self.prestarted),
                                         "warmed_up": int(self.prestarted and self.warmed_up)})
        self._spawn(self.heartbeat_loop())
        try:
            assignment = await self.wait_assignment()
            if assignment is None:
                return ORPHAN_EXIT if self.link.orphaned else 0
            code = await self.serve(assignment)
            return ORPHAN_EXIT if self.link.orphaned else code
        finally:
            if self.proc is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            with contextlib.suppress(Exception):
                await self.r.hset(ckey, mapping={"status": "stopped", "heartbeat": now_ms()})
                await self.r.expire(ckey, 60)
            for task in list(self._tasks):
                task.cancel()
            if self.forwarder is not None:
                with contextlib.suppress(Exception):
                    await self.forwarder.close()
            with contextlib.suppress(Exception):
                await self.r.aclose()

    async def start_forwarder(self) -> None:
        """The loopback forwarder to the host's egress proxy, before any CLI asks for it (the
        socket may be bound already: see :func:`.early.bind_forwarder`)."""
        if not self.s.egress_socket:
            return
        sock = take_listener() or bind_forwarder({"DOCKERCC_EGRESS_SOCKET": self.s.egress_socket,
                                                  "DOCKERCC_EGRESS_PORT": str(self.s.egress_port)})
        take_listener()
        try:
            self.forwarder = await Forwarder(self.s.egress_socket, sock=sock,
                                             port=self.s.egress_port,
                                             on_denied=self.on_egress_denied,
                                             on_upstream_error=self.on_api_unreachable).start()
        except OSError as exc:
            log.error("egress forwarder on port %s failed: %s", self.s.egress_port, exc)

    def on_egress_denied(self, denial: dict[str, Any]) -> None:
        """The host's proxy refused a connection of this container: tell the session."""
        log.warning("egress refused: %s:%s (%s)", denial.get("host"), denial.get("port"),
                    denial.get("reason"))
        if self.keys is not None:  # before a claim nothing belongs to any session
            self.emit(runner_event("egress_denied", host=str(denial.get("host", "")),
                                   port=int(denial.get("port") or 0),
                                   reason=str(denial.get("reason", ""))))

    def on_api_unreachable(self, failure: dict[str, Any]) -> None:
        """The proxy could not reach the API for the CLI (which only sees a 502 and retries):
        the session hears the cause at once. One event per failed request: the CLI's own
        retry back-off bounds them."""
        if self.keys is not None:
            self.emit(runner_event("api_unreachable", cause=str(failure.get("cause", "")),
                                   target=str(failure.get("target", "")),
                                   status=int(failure.get("status") or 502)))

    async def wait_assignment(self) -> Assignment | None:
        key = self.pool_keys.assign(self.s.container)
        while not self.stopping.is_set():
            try:
                item = await self.r.blpop([key], timeout=1)
                self.link.ok()
            except REDIS_DOWN as exc:
                # Redis restarting, or this container's Redis user not back yet after a
                # restart (the pool re-creates it): the warm container waits (up to
                # timeouts.orphanMs), it does not die
                await self.link.failed("waiting for an assignment", exc, self.r)
                continue
            if item is None:
                continue
            try:
                return Assignment.decode(item[1])
            except (ValueError, KeyError, TypeError) as exc:
                log.error("bad assignment ignored: %s", exc)
        return None

    async def serve(self, a: Assignment) -> int:
        self.assignment = a
        from ..logs import bind

        bind(session=a.session, process_wide=True)  # one runner serves one session
        log.info("claimed by session %s (agent %s)", a.session, a.agent)
        self.keys = keys = SessionKeys(a.session, self.s.prefix)
        pipe = self.r.pipeline(transaction=False)  # one round trip: the claim waits on it
        pipe.lindex(keys.output_buffer, -1)
        pipe.hgetall(keys.state)
        pipe.hset(self.pool_keys.container_state(self.s.container),
                  mapping={"status": "busy", "session": a.session})
        # the claim is confirmed once the session's state names this container
        pipe.hset(keys.state, "container", self.s.container)
        last, prev, *_ = await pipe.execute()
        if last:
            env = Envelope.decode(last)
            if env is not None:  # (a forged seq beyond the window is no base either)
                self.seq = env.seq
        sid: Any = prev.get(b"claude_session_id") or b""
        self.claude_session_id = sid.decode() if isinstance(sid, bytes) else str(sid)
        self.turns = int(prev.get(b"turns") or 0)
        self.cost = float(prev.get(b"cost_usd") or 0.0)
        install_credentials(ids=self.s.agent)
        if a.restore_from:
            await self.restore_transcript(a.restore_from)
        writer = self._spawn(self.writer_loop())
        self.emit_ops(self.set_state(status="starting", container=self.s.container,
                                     agent=a.agent, heartbeat=now_ms(), turns=self.turns,
                                     cost_usd=self.cost, started=now_ms(), error=""))
        control_task = self._spawn(self.control_loop())
        code = 0
        try:
            while not self.stopping.is_set():
                ooms, refusals = oom_kills(), pids_refusals()
                code = await self.run_cli(a)
                if self.stopping.is_set():
                    break
                self.restarts += 1
                leftovers = kill_leftovers(self.s.agent[0] if self.s.agent else None)
                tail = "\n".join(self.stderr_tail)
                why: dict[str, str] = {}
                if code in (-9, 137) and ooms is not None and (oom_kills() or 0) > ooms:
                    why = {"reason": "out_of_memory", "message": (
                        f"the Claude Code CLI was killed (exit code {code}): out of memory, the "
                        "container's memory limit (resources.memory) was reached")}
                elif code != 0 and refusals is not None and (pids_refusals() or 0) > refusals:
                    # the CLI shares the container's process limit with its tools: a fork
                    # bomb can leave it no pid for a thread it needs, and it aborts
                    why = {"reason": "pids_limit", "message": (
                        f"the Claude Code CLI died (exit code {code}) while the container was "
                        "out of process ids: its process limit (resources.pidsLimit) was "
                        "reached, e.g. by a fork bomb in a tool")}
                # a turn was in flight (its prompt written, no result yet): that turn is lost;
                # otherwise the restarted CLI gets the next prompt and nothing is lost
                turn_lost, self.busy = self.busy, False
                self.emit(runner_event("error", error="cli_exited", exit_code=code,
                                       restart=self.restarts <= MAX_RESTARTS,
                                       turn_lost=turn_lost, leftovers_killed=leftovers,
                                       stderr_tail=tail[-4000:], **why),
                          self.set_state(status="restarting" if self.restarts <= MAX_RESTARTS
                                         else "failed", error=f"cli exited with {code}"))
                if self.restarts > MAX_RESTARTS:
                    code = code or 1
                    break
                await asyncio.sleep(min(2.0, 0.2 * self.restarts))
        finally:
            control_task.cancel()
            self.emit_ops(self.set_state(status="stopped" if code == 0 or self.stopping.is_set()
                                         else "failed", heartbeat=now_ms()))
            self.queue.put_nowait((b"", []))  # writer sentinel
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 10)
        return 0 if self.stopping.is_set() else code

    def cli_argv(self, a: Assignment) -> list[str]:
        args = list(a.args)
        if "--resume" in args:
            i = args.index("--resume")
            wanted = args[i + 1] if i + 1 < len(args) else ""
            if find_transcript(wanted, self.s.agent) is None:
                # nothing to resume from (the turn before was lost): start afresh, say so
                del args[i:i + 2]
                self.emit(runner_event("warning", warning="resume_unavailable",
                                       claude_session_id=wanted))
        if self.claude_session_id and self.restarts:
            # the CLI died: continue the same conversation
            if "--resume" in args:
                i = args.index("--resume")
                del args[i:i + 2]
            args += ["--resume", self.claude_session_id]
        return [*shlex.split(self.s.claude_bin), *BASE_ARGS, *args]

    async def _spawn_cli(self, argv: list[str],
                         env: dict[str, str] | None = None) -> CLIProcess | None:
        """Start the CLI (as the agent, :func:`.early.spawn_cli`, like the early CLI) and its
        stdout/stderr readers (``self._io_tasks``)."""
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
        self.proc = proc
        self._io_tasks = [self._spawn(self.stdout_loop(proc)), self._spawn(self.stderr_loop(proc))]
        return proc

    # -- pre-started CLI (warm containers) -------------------------------------------------

    async def prestart_cli(self, pre: Prestart) -> None:
        """Start the CLI with the agent's default arguments before any session exists.

        The CLI's start-up work (process and module load, settings, migrations, the MCP
        handshake, which the runner answers itself with ``pre.tools``) then happens while the
        container waits in the warm set. ``prime`` then runs what the CLI's first turn would
        otherwise run for the first time (measured with CLAUDE_CODE_EMIT_STARTUP_TIMING, about
        2x the CPU of a later turn): ``get_context_usage`` builds the system prompt and the tool
        schemas, and a blank prompt takes the stream-json turn loop once. The CLI answers a
        blank prompt locally ("nothing was sent to the model") and keeps it out of the
        conversation, also on ``--resume`` (checked for 2.1.328; its transcript notes it).
        Nothing the CLI prints before the claim reaches any session. Any failure here only
        means the claim starts the CLI as a cold container would.
        """
        install_credentials(ids=self.s.agent)
        proc: CLIProcess | None = None
        if self.early is not None:
            early, self.early = self.early, None
            try:
                proc = await PopenProcess.adopt(early, LINE_LIMIT)
            except (OSError, ValueError) as exc:
                log.warning("could not adopt the early CLI: %s", exc)
                with contextlib.suppress(OSError):
                    early.kill()
            else:
                self.proc = proc
                self._io_tasks = [self._spawn(self.stdout_loop(proc)),
                                  self._spawn(self.stderr_loop(proc))]
        if proc is None:
            proc = await self._spawn_cli([*shlex.split(self.s.claude_bin), *BASE_ARGS, *pre.args])
        if proc is None:
            log.warning("pre-start failed: %s", self.stderr_tail[-1] if self.stderr_tail else "")
            return
        self.prestarted = True
        if not pre.wait:  # a cold container: the session is already waiting for this CLI
            await self.write_stdin(control.initialize_request(control.new_request_id()))
            return
        deadline = time.monotonic() + pre.timeout_s
        ready = await self.ask_preclaimed(proc, "control", control.initialize_request, deadline)
        if ready is not None and ready.get("subtype") == "success" and pre.prime:
            if await self.prime(proc, deadline) and pre.warmup and warmup_supported():
                await self.warm_up(proc, deadline)
        if proc.returncode is not None:
            log.warning("pre-started CLI exited with %s: %s", proc.returncode,
                        " | ".join(list(self.stderr_tail)[-3:]))
            self.prestarted = False
            self.proc = None

    async def ask_preclaimed(self, proc: CLIProcess, kind: str, line: Callable[[str], str],
                             deadline: float, limit: float = 10.0) -> dict[str, Any] | None:
        """Write ``line(request_id)`` to the pre-started CLI and wait for its answer: the
        ``control_response`` (``kind="control"``) or the turn's ``result``. None when the CLI
        did not answer in time or exited."""
        rid = "result" if kind == "result" else control.new_request_id()
        waiter = asyncio.get_running_loop().create_future()
        self._control_waiters[rid] = waiter
        exited = self._spawn(proc.wait())
        try:
            if not await self.write_stdin(line(rid)):
                return None
            wait = max(0.1, min(limit, deadline - time.monotonic()))
            await asyncio.wait({waiter, exited}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            self._control_waiters.pop(rid, None)
        if not waiter.done():
            log.warning("pre-started CLI did not answer %s (exit code %s)",
                        line(rid)[:80], proc.returncode)
            return None
        return waiter.result()

    async def prime(self, proc: CLIProcess, deadline: float) -> bool:
        """``get_context_usage`` (the system prompt and tool schemas) and a blank prompt (the
        turn loop, answered locally: nothing is sent to the model). False if refused."""
        usage = await self.ask_preclaimed(
            proc, "control", lambda rid: control.control_request(rid, "get_context_usage"), deadline)
        if usage is None or usage.get("subtype") != "success":
            log.info("pre-started CLI refused get_context_usage: not priming it")
            return False
        return await self.ask_preclaimed(
            proc, "result", lambda _rid: control.user_message(" "), deadline) is not None

    async def warm_up(self, proc: CLIProcess, deadline: float) -> None:
        """One throwaway turn against :class:`WarmupAPI` on the loopback, then ``/clear``.

        The CLI is pointed at the local server with ``apply_flag_settings`` (it applies
        ``env`` to its process environment, and builds its API client per request), pointed
        back at ``ANTHROPIC_BASE_URL`` as the container has it, and its conversation cleared
        (a new conversation id; the warm-up never reaches the session's transcript or
        history). ``/clear`` also drops the context caches, so the CLI is primed once more.
        A CLI that cannot be pointed back or cleared is stopped: the claim then starts one.
        """
        def flag_env(url: str) -> Callable[[str], str]:
            return lambda rid: control.control_request(
                rid, "apply_flag_settings", settings={"env": {"ANTHROPIC_BASE_URL": url}})

        def ok(resp: dict[str, Any] | None) -> bool:
            return resp is not None and resp.get("subtype") == "success"

        original = os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
        t0 = time.monotonic()
        async with WarmupAPI() as api:
            if not ok(await self.ask_preclaimed(proc, "control", flag_env(api.url), deadline)):
                log.info("pre-started CLI refused apply_flag_settings: no warm-up turn")
                return
            try:
                turn = await self.ask_preclaimed(
                    proc, "result", lambda _rid: control.user_message(WARMUP_PROMPT), deadline)
            finally:
                restored = ok(await self.ask_preclaimed(
                    proc, "control", flag_env(original), deadline + 5))
            cleared = restored and await self.ask_preclaimed(
                proc, "result", lambda _rid: control.user_message("/clear"), deadline + 5)
            served = api.message_requests
        if turn is None or not restored or not cleared:
            # (an unfinished turn's late result could be taken for /clear's: not safe either)
            log.warning("warm-up: the CLI %s; stopping it", "did not finish the turn"
                        if turn is None else "could not be pointed back at its API"
                        if not restored else "could not be cleared")
            await self.stop_prestarted(proc)
            return
        if not served:
            log.warning("warm-up turn never reached the local API (CLI behaviour changed?)")
        self.warmed_up = bool(served)
        await self.prime(proc, deadline + 5)
        log.info("warm-up turn done in %.0f ms", (time.monotonic() - t0) * 1000)

    async def stop_prestarted(self, proc: CLIProcess) -> None:
        """Stop the pre-started CLI and let its readers drain (the claim starts another)."""
        self.prestarted = False
        with contextlib.suppress(Exception):
            proc.stdin and proc.stdin.close()  # type: ignore[func-returns-value]
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self._io_tasks), 5)
        self.proc = None

    async def adopt_prestarted(self, a: Assignment) -> CLIProcess | None:
        """The pre-started CLI if it can serve ``a`` (same start-time arguments; the run-time
        part is applied with control requests, see :meth:`apply_runtime`), else None (and a
        pre-started CLI that cannot serve it is stopped)."""
        proc, pre = self.proc, self.s.prestart
        if proc is None or pre is None or not self.prestarted:
            return None
        self.prestarted = False
        self.runtime_applied = 0
        requests = runtime_requests(split_cli_args(pre.args)[1], a.wanted_runtime())
        # (a CLI initialized without the session's hooks cannot get them later)
        if (proc.returncode is None and not self.restarts and requests is not None
                and start_time_args(a.args) == start_time_args(pre.args)
                and not a.restore_from and not a.hooks):
            if requests and not await self.apply_runtime(proc, requests):
                await self.stop_prestarted(proc)
                return None
            # (a cold container's CLI was started for this very session: its tools)
            if pre.wait and (not a.tools_digest or a.tools_digest != pre.tools_digest):
                await self.refresh_tools(pre.server)
            return proc
        log.info("pre-started CLI not reusable (%s); starting a new one",
                 "other start-time arguments" if requests is not None
                 else "its run-time settings cannot become the session's")
        await self.stop_prestarted(proc)
        return None

    async def apply_runtime(self, proc: CLIProcess,
                            requests: list[tuple[str, dict[str, Any]]]) -> bool:
        """Send the session's run-time settings to the adopted CLI, in order, each waited
        for, before any prompt is written. False (logged; the caller restarts the CLI) when the
        CLI refuses one or does not answer. Values are never logged (env may hold secrets)."""
        deadline = time.monotonic() + 10
        for subtype, fields in requests:
            resp = await self.ask_preclaimed(proc, "control", _request_line(subtype, fields),
                                             deadline, limit=5.0)
            if resp is None or resp.get("subtype") != "success":
                log.warning("the pre-started CLI refused %s (%s): starting a new CLI", subtype,
                            str((resp or {}).get("error_code") or (resp or {}).get("error")
                                or "no answer")[:200])
                return False
            self.runtime_applied += 1
        return True

    async def refresh_tools(self, server: str) -> None:
        """The session's tools differ from the pool's: tell the CLI (``list_changed``) and
        hold input until it has listed them again through the session's bridge."""
        self.tools_ready.clear()
        note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        if not await self.write_stdin(control.control_request(
                control.new_request_id(), "mcp_message", server_name=server, message=note)):
            self.tools_ready.set()

    def handle_preclaim(self, line: bytes) -> None:
        """A line from the pre-started CLI before the claim: answer or drop it."""
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind in ("control_response", "result"):  # a priming request's answer
            resp = (obj.get("response") or {}) if kind == "control_response" else obj
            waiter = self._control_waiters.get(
                str(resp.get("request_id", "")) if kind == "control_response" else "result")
            if waiter is not None and not waiter.done():
                waiter.set_result(resp)
        elif kind == "control_request":
            req = obj.get("request") or {}
            rid = str(obj.get("request_id", ""))
            if isinstance(req, dict) and req.get("subtype") == "mcp_message":
                reply = self.preclaim_mcp(req.get("message") or {})
                self._spawn(self.write_stdin(control.mcp_response(rid, reply)))
            else:
                self._spawn(self.write_stdin(control.control_error(
                    rid, "no session yet (pre-started CLI)")))

    def preclaim_mcp(self, message: dict[str, Any]) -> dict[str, Any]:
        """The host MCP server's start-up answers, given by the runner from the pool's tools."""
        pre = self.s.prestart
        assert pre is not None
        method, mid = message.get("method"), message.get("id")
        if mid is None:  # a notification
            return {"jsonrpc": "2.0", "id": None, "result": {}}
        if method == "initialize":
            params = message.get("params") or {}
            return {"jsonrpc": "2.0", "id": mid, "result": {
                "protocolVersion": params.get("protocolVersion") or "2025-06-18",
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": pre.server, "version": "1"}}}
        if method == "tools/list":
            return {"jsonrpc": "2.0", "id": mid, "result": {"tools": pre.tools}}
        if method == "ping":
            return {"jsonrpc": "2.0", "id": mid, "result": {}}
        return {"jsonrpc": "2.0", "id": mid, "error": {
            "code": -32002, "message": f"{method} needs a session (the CLI is not claimed yet)"}}

    async def run_cli(self, a: Assignment) -> int:
        assert self.keys is not None
        proc = await self.adopt_prestarted(a)
        adopted = proc is not None
        if proc is None:
            argv = self.cli_argv(a)
            self.stderr_tail.clear()
            proc = await self._spawn_cli(argv, a.cli_env())
            if proc is None:
                return 127
        self.emit(runner_event("started", container=self.s.container, pid=proc.pid,
                               restarts=self.restarts, prestarted=adopted),
                  self.set_state(status="idle", pid=proc.pid, heartbeat=now_ms(),
                                 prestarted=int(adopted),
                                 runtime_applied=self.runtime_applied if adopted else 0))
        if not adopted:
            await self.write_stdin(control.initialize_request(
                control.new_request_id(), self.assignment.hooks if self.assignment else None))
        tasks = [*self._io_tasks, self._spawn(self.input_loop())]
        stop_wait = self._spawn(self.stopping.wait())
        exit_wait = self._spawn(proc.wait())
        await asyncio.wait({stop_wait, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
        tasks[-1].cancel()  # stop taking input before anything else
        if self.stopping.is_set() and proc.returncode is None:
            with contextlib.suppress(Exception):
                proc.stdin and proc.stdin.close()  # type: ignore[func-returns-value]
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        stop_wait.cancel()
        # let stdout drain fully before reporting
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks[:-1]), 10)
        self.proc = None
        return proc.returncode if proc.returncode is not None else -1

    # -- loops -----------------------------------------------------------------------------

    async def write_stdin(self, line: str | bytes) -> bool:
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

    async def input_loop(self) -> None:
        keys = self.keys
        assert keys is not None
        if not self.tools_ready.is_set():  # a tools refresh of a pre-started CLI
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.tools_ready.wait(), 10)
            self.tools_ready.set()
        while True:
            try:
                # inputs a previous runner took but never handed to the CLI come first (and
                # after a Redis outage: one whose BLMOVE happened but whose reply was lost)
                for item in await self.r.lrange(keys.processing, 0, -1):
                    if not await self.deliver(item):
                        return
                while True:
                    taken = await self.r.blmove(keys.input, keys.processing, 1, "LEFT", "RIGHT")
                    if taken is None:
                        continue
                    if not await self.deliver(taken):
                        return
            except REDIS_DOWN as exc:
                await self.link.failed("reading input", exc, self.r)

    async def deliver(self, item: Any) -> bool:
        keys = self.keys
        assert keys is not None
        trace = ""
        try:
            obj = json.loads(item)
            line, input_id = obj["line"], obj.get("id")
            trace = obj.get("traceparent") or ""
        except (ValueError, KeyError, TypeError, AttributeError):
            line, input_id = None, None
        if isinstance(input_id, str) and input_id in self._delivered:
            line = None  # pushed twice (the host retried an RPUSH whose reply a Redis restart
            #              lost): the CLI had it once, that is enough
        if line is not None and not await self.write_stdin(line):
            return False  # stays in :processing for the next CLI / runner
        if line is not None and isinstance(input_id, str):
            if len(self._delivered) >= 1024:
                self._delivered.pop(next(iter(self._delivered)))
            self._delivered[input_id] = None
        while True:  # the CLI has it: it must leave :processing, or it would be sent again
            try:
                await self.r.lrem(keys.processing, 1, item)
                break
            except REDIS_DOWN as exc:
                await self.link.failed("acknowledging input", exc, self.r)
        if line is not None and line.startswith('{"type":"control_request"'):
            return True  # (set_model / set_permission_mode: no turn, no result)
        if line is not None:
            self.busy = True
            self._turn_prompt = prompt_text(line) or self._turn_prompt
            # the host's W3C trace context of this turn, sent back with its MCP requests so
            # the host's spans of the container's work join the turn's trace (the runner
            # itself has no OpenTelemetry: see dockercc.tracing)
            self.traceparent = trace[:64] if isinstance(trace, str) else ""
            self.emit_ops(self.set_state(status="busy", last_input=now_ms()))
        return True

    async def stdout_loop(self, proc: CLIProcess) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # longer than LINE_LIMIT: drop it, say so
                self.skipped_lines += 1
                self.emit(runner_event("warning", warning="line_too_long", limit=LINE_LIMIT))
                continue
            if not line:
                return
            self.handle_line(line)

    def handle_line(self, line: bytes) -> None:
        # a line cut short (the CLI died mid-write: no newline at EOF) is parsed, not trusted,
        # so a broken envelope never reaches Redis (readers could not decode its seq)
        complete = line.endswith(b"\n")
        line = line.strip()
        if (line.startswith(FAST_PREFIXES) and self.keys is not None and complete
                and line.endswith(b"}")):
            # the bulk of a turn (deltas, tool results): relayed as is, never parsed
            if self._turn_tools and len(line) <= HISTORY_RESULT_LINE and line.startswith(
                    b'{"type":"user"'):
                self.note_tool_results(line)  # a small tool result: keep it for the history
            self.queue.put_nowait((line, []))
            return
        if self.keys is None:  # the pre-started CLI, before any session claimed it
            self.handle_preclaim(line)
            return
        if not line.startswith(b"{"):
            if line:
                self.skipped_lines += 1
                self.stderr_tail.append("stdout: " + line[:500].decode(errors="replace"))
            return
        try:
            obj = json.loads(line)
        except ValueError:
            self.skipped_lines += 1
            return
        if not isinstance(obj, dict):
            return
        ops: list[PipeOp] = []
        kind = obj.get("type")
        if kind == "control_response" and self._control_waiters:
            resp = obj.get("response") or {}
            waiter = self._control_waiters.get(str(resp.get("request_id", "")))
            if waiter is not None:  # the runner's own request (run-time settings): not relayed
                if not waiter.done():
                    waiter.set_result(resp)
                return
        if kind == "result":
            self.busy = False
            self.turns += 1
            cost = obj.get("total_cost_usd")
            if isinstance(cost, int | float):
                self.cost += float(cost)
            if isinstance(obj.get("session_id"), str):
                self.claude_session_id = obj["session_id"]
            result_key = self.keys.result  # type: ignore[union-attr]
            result_line = line
            ops.append(lambda pipe: pipe.set(result_key, result_line))
            ops.append(self.history_op(obj))
            # in the same MULTI as the result: a caller that saw the result can lose the
            # container a millisecond later and still resume with this turn remembered
            ops.append(self.transcript_op())
            ops.append(self.set_state(status="idle", turns=self.turns,
                                      cost_usd=round(self.cost, 6),
                                      last_result=now_ms(), claude_session_id=self.claude_session_id,
                                      last_subtype=obj.get("subtype", ""),
                                      last_is_error=int(bool(obj.get("is_error")))))
        elif kind == "system" and obj.get("subtype") == "init":
            sid = obj.get("session_id")
            if isinstance(sid, str):
                self.claude_session_id = sid
            ops.append(self.set_state(claude_session_id=self.claude_session_id,
                                      model=obj.get("model") or ""))
        elif kind == "assistant" and not obj.get("parent_tool_use_id"):
            for block in (obj.get("message") or {}).get("content") or []:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "text" and isinstance(block.get("text"), str):
                    self._turn_text.append(block["text"])
                elif block.get("type") == "tool_use":
                    self._turn_tools.append({"id": block.get("id"), "name": block.get("name"),
                                             "input": _clip(block.get("input"))})
        elif kind == "control_request":
            req = obj.get("request") or {}
            if isinstance(req, dict) and req.get("subtype") == "mcp_message":
                self._spawn(self.relay_mcp(obj.get("request_id", ""), req))
            elif isinstance(req, dict) and req.get("subtype") == "can_use_tool":
                if self.assignment is not None and \
                        "--permission-prompt-tool" in self.assignment.args:
                    # the session has an approver on the host (can_use_tool / notebook)
                    self._spawn(self.relay_to_host("permission", obj.get("request_id", ""), {
                        k: req.get(k) for k in ("tool_name", "input", "permission_suggestions",
                                                "tool_use_id", "blocked_path",
                                                "decision_reason")}))
                else:
                    # nobody to ask: the session's permission mode rules
                    self._spawn(self.write_stdin(control.control_error(
                        obj.get("request_id", ""),
                        "no interactive permission prompt in dockercc")))
            elif isinstance(req, dict) and req.get("subtype") == "hook_callback":
                self._spawn(self.relay_to_host("hook", obj.get("request_id", ""), {
                    k: req.get(k) for k in ("callback_id", "input", "tool_use_id")}))
        self.emit(line, *ops)

    def note_tool_results(self, line: bytes) -> None:
        """Put the tool results of a (small) ``user`` line next to their calls in the turn's
        history entry (read by the ``sessions_history`` tool)."""
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if not isinstance(obj, dict) or obj.get("parent_tool_use_id"):
            return
        calls = {c.get("id"): c for c in self._turn_tools}
        for block in (obj.get("message") or {}).get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                call = calls.get(block.get("tool_use_id"))
                if call is not None:
                    call["result"] = _result_text(block.get("content"), 2000)
                    call["is_error"] = bool(block.get("is_error"))

    def history_op(self, result: dict[str, Any]) -> PipeOp:
        """One history entry per turn: prompt, assistant text, tool calls, outcome."""
        assert self.keys is not None and self.assignment is not None
        text = result.get("result") if isinstance(result.get("result"), str) else ""
        entry = json.dumps({
            "ts": now_ms(), "turn": self.turns, "prompt": self._turn_prompt,
            "text": text or "\n\n".join(self._turn_text), "tool_calls": self._turn_tools,
            "is_error": bool(result.get("is_error")), "subtype": result.get("subtype"),
            "cost_usd": result.get("total_cost_usd"), "duration_ms": result.get("duration_ms"),
        }, ensure_ascii=False)
        self._turn_prompt, self._turn_text, self._turn_tools = "", [], []
        key, keep = self.keys.history, self.assignment.history_max

        def op(pipe: Any) -> None:
            if keep > 0:
                pipe.rpush(key, entry)
                pipe.ltrim(key, -keep, -1)
        return op

    def transcript_op(self) -> PipeOp:
        """Keep the CLI's transcript in Redis so the session can resume in a new container
        (read now, written with the turn's result; zlib level 1: ~300 MB/s)."""
        path = find_transcript(self.claude_session_id, self.s.agent)
        key = self.keys.transcript if self.keys is not None else None
        try:
            data = (read_agent_file(path, TRANSCRIPT_MAX, self.s.agent)
                    if path is not None and key is not None else b"")
        except OSError:
            data = b""
        if not data or len(data) > TRANSCRIPT_MAX or path is None or key is None:
            return lambda pipe: None
        rel = path.relative_to(claude_home()).as_posix()
        blob = json.dumps({"path": rel, "claude_session_id": self.claude_session_id}).encode()
        mapping = {"meta": blob, "data": zlib.compress(data, 1)}
        return lambda pipe: pipe.hset(key, mapping=mapping)

    async def restore_transcript(self, source: str) -> None:
        keys = SessionKeys(source, self.s.prefix)
        raw: dict[Any, Any] = await self.r.hgetall(keys.transcript)
        if not raw.get(b"meta") or not raw.get(b"data"):
            return
        try:
            # only projects/<dir>/<claude id>.jsonl (never settings.json, hooks or any other
            # file the CLI would act on), and only the bytes the host sealed and verified
            rel, cid = check_transcript_meta(raw[b"meta"])
            want = self.assignment.transcript_sha256 if self.assignment else ""
            if not want or hashlib.sha256(raw[b"data"]).hexdigest() != want:
                raise ValueError("not the transcript the host verified")
            dest = claude_home() / rel
            inflate = zlib.decompressobj()
            data = inflate.decompress(raw[b"data"], TRANSCRIPT_MAX + 1)
            if len(data) > TRANSCRIPT_MAX or inflate.unconsumed_tail:
                raise ValueError(f"transcript over {TRANSCRIPT_MAX} bytes")
            with agent_fs(self.s.agent):  # the agent's files, as the CLI would have written
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            self.claude_session_id = cid
        except (ValueError, KeyError, OSError, zlib.error) as exc:
            log.warning("could not restore transcript of %s: %s", source, exc)
            self.emit(runner_event("warning", warning="transcript_refused", message=str(exc)))

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

    async def writer_loop(self) -> None:
        """Pipelines queued envelopes and state updates: one round trip per batch."""
        keys = self.keys
        assert keys is not None
        done = False
        while not done:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < 512:
                batch.append(self.queue.get_nowait())
            ops: list[PipeOp] = []
            envs: list[bytes] = []
            ts = now_ms()
            for data, item_ops in batch:
                if data == b"":
                    done = True
                    continue
                ops.extend(item_ops)
                if data is not None:
                    self.seq += 1
                    envs.append(encode_envelope(self.seq, ts, data))
            # One MULTI per batch, rebuilt for every attempt (redis-py empties a pipeline
            # that failed, so re-executing it would silently drop the batch: a seq gap).
            # APPEND_ENVELOPES skips envelopes the buffer already has, so a retry after a
            # lost reply (Redis restart) never duplicates a seq either.
            while True:
                pipe = self.r.pipeline(transaction=True)
                for op in ops:
                    op(pipe)
                if envs:
                    pipe.eval(APPEND_ENVELOPES, 2, keys.output_buffer, keys.output,
                              self.seq - len(envs) + 1, OUTPUT_BUFFER_MAX, *envs)
                try:
                    await pipe.execute()
                    self.link.ok()
                    break
                except REDIS_DOWN as exc:
                    await self.link.failed("writing output", exc, self.r)

    async def control_loop(self) -> None:
        assert self.keys is not None
        while True:
            try:
                pubsub = self.r.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.keys.control)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    try:
                        cmd = json.loads(msg["data"])
                    except ValueError:
                        continue
                    await self.on_control(cmd if isinstance(cmd, dict) else {})
            except REDIS_DOWN as exc:
                await self.link.failed("control channel", exc, self.r)

    async def on_control(self, cmd: dict[str, Any]) -> None:
        kind = cmd.get("type")
        if kind == "interrupt":
            await self.write_stdin(control.interrupt_request(
                str(cmd.get("request_id") or control.new_request_id())))
        elif kind == "stop":
            self.stopping.set()

    async def relay_to_host(self, kind: str, request_id: str, request: dict[str, Any]) -> None:
        """Ask the session's host for a decision (``kind`` ``permission``: its approver;
        ``hook``: a hook callback) through the MCP relay list, with the lease token, and give
        the answer to the CLI. The host answers within ``timeouts.permissionMs`` (a slower
        approver is denied there, with its reason); no answer at all a little after that (the
        host is gone): a permission is denied, a hook lets the CLI go on."""
        wait_s = self.s.permission_timeout_s + 10
        item = await self.ask_host(request_id, {"kind": kind, "request": request},
                                   f"waiting for the host's {kind} answer", wait_s=wait_s)
        answer: dict[str, Any] = {} if kind == "hook" else {
            "behavior": "deny",
            "message": f"no answer from the host's approver in {wait_s:.0f}s: denied"}
        if item is not None:
            try:
                got = json.loads(item[1])
            except ValueError:
                got = None
            if isinstance(got, dict) and (kind == "hook" or got.get("behavior") in (
                    "allow", "deny")):
                answer = got
        await self.write_stdin(control.dumps_line(
            control.control_success_dict(request_id, answer)))

    async def ask_host(self, request_id: str, fields: dict[str, Any], what: str, *,
                       wait_s: float | None = None) -> Any:
        """Put one request on the session's ``:mcp:requests`` (tagged with this container and
        its lease token, so the host answers only the current lease) and wait up to
        ``mcp_timeout_s`` for the host's reply on ``:mcp:reply:<id>``; None without one."""
        keys = self.keys
        assert keys is not None
        payload = json.dumps({"request_id": request_id, **fields, "ts": now_ms(),
                              "container": self.s.container,
                              "lease_token": self.assignment.lease_token
                              if self.assignment else ""}, ensure_ascii=False, default=str)
        reply_key = keys.mcp_reply(request_id)
        await self.r.rpush(keys.mcp_requests, payload)
        # short BLPOPs until the deadline: redis-py's default socket timeout (5 s) would
        # otherwise abort one long BLPOP and leave a slow tool's reply unread forever
        deadline = time.monotonic() + (self.s.mcp_timeout_s if wait_s is None else wait_s)
        item = None
        while item is None and (left := deadline - time.monotonic()) > 0:
            try:
                item = await self.r.blpop([reply_key], timeout=min(2.0, max(left, 0.01)))
            except REDIS_DOWN as exc:
                await self.link.failed(what, exc, self.r)
        return item

    async def relay_mcp(self, request_id: str, request: dict[str, Any]) -> None:
        """Hand one MCP message to the host bridge and its reply back to the CLI."""
        message = request.get("message") or {}
        item = await self.ask_host(request_id, {
            "server_name": request.get("server_name"), "message": message,
            "traceparent": self.traceparent}, "waiting for an MCP reply")
        if item is None:
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id"), "error": {
                "code": -32001, "message": f"host tool bridge did not answer in "
                                           f"{self.s.mcp_timeout_s:.0f}s (is the pool's owner running?)"}}
        else:
            try:
                reply = json.loads(item[1])
            except ValueError:
                reply = {"jsonrpc": "2.0", "id": message.get("id"),
                         "error": {"code": -32603, "message": "bad reply from host bridge"}}
        await self.write_stdin(control.mcp_response(request_id, reply))
        if message.get("method") == "tools/list":
            self.tools_ready.set()

    async def heartbeat_loop(self) -> None:
        ckey = self.pool_keys.container_state(self.s.container)
        interval = max(0.05, self.s.health_interval_ms / 1000)
        while True:
            await asyncio.sleep(interval)
            try:
                pipe = self.r.pipeline(transaction=False)
                pipe.hset(ckey, "heartbeat", now_ms())
                if self.keys is not None:
                    pipe.hset(self.keys.state, "heartbeat", now_ms())
                else:
                    pipe.hgetall(ckey)
                replies = await pipe.execute()
                self.link.ok()
                if self.keys is None and self.assignment is None:
                    self.check_owner(replies[-1])
            except REDIS_DOWN as exc:
                # (this loop runs in every state: it is what notices an orphan that has
                # nothing else to do)
                await self.link.failed("heartbeat", exc, self.r)


    def check_owner(self, record: Any) -> None:
        """An unclaimed runner whose owner stopped refreshing ``owner_heartbeat`` for
        ``orphanMs`` is useless (no one will hand it a session it was made for, and no one
        removes it): it exits. A claimed one never does this (its session owns it now)."""
        raw = record.get(b"owner_heartbeat") if isinstance(record, dict) else None
        try:
            owner_hb = int(raw) if raw else 0
        except ValueError:
            return
        if owner_hb and now_ms() - owner_hb > self.s.orphan_ms and not self.link.orphaned:
            log.error("the pool's owner has not been seen for %.0fs (timeouts.orphanMs): "
                      "exiting as an orphan", (now_ms() - owner_hb) / 1000)
            self.link.orphaned = True
            self.stopping.set()


def _request_line(subtype: str, fields: dict[str, Any]) -> Callable[[str], str]:
    return lambda rid: control.control_request(rid, subtype, **fields)


def prompt_text(line: str) -> str:
    """The text of a user stdin line (for history)."""
    try:
        obj = json.loads(line)
        content = obj["message"]["content"]
    except (ValueError, KeyError, TypeError):
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content
                         if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _clip(value: Any, limit: int = 4000) -> Any:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= limit else text[:limit] + "..."


def _result_text(content: Any, limit: int) -> str:
    """The text of a tool_result's content (a string or text blocks), clipped."""
    if isinstance(content, list):
        content = "\n".join(str(b.get("text", "")) for b in content
                            if isinstance(b, dict) and b.get("type") == "text")
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def main(argv: list[str] | None = None, early: subprocess.Popen[bytes] | None = None) -> int:
    from ..logs import bind, configure

    # text by default, JSON lines with DOCKERCC_LOG_FORMAT=json (the pool passes its
    # logging.format); every line redacted, with the container (and, once claimed, session)
    configure(level=os.environ.get("DOCKERCC_LOG_LEVEL", "INFO"), process="dockercc-agent",
              stream=sys.stderr, logger="")
    settings = RunnerSettings.from_env()
    bind(container=settings.container, process_wide=True)
    return asyncio.run(Runner(settings, early=early).run())
