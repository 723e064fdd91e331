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

The :class:`Runner` composes the pieces, one module each: :mod:`.settings` (what it is
told), :mod:`.liveness` (the Redis link, heartbeat, orphans), :mod:`.process` (the CLI
process), :mod:`.prestart` (the warm container's CLI), :mod:`.relay` (input and output),
:mod:`.control` (the host's control channel and the relays to it) and :mod:`.history` (the
conversation, its history and transcript). :mod:`.early` starts the CLI before all of them.

Needs only ``redis`` (and the pure ``dockercc.protocol``) at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import zlib
from typing import Any

import redis.asyncio as aioredis

from ..protocol import control
from ..protocol.envelope import Envelope, runner_event
from ..protocol.keys import PoolKeys, SessionKeys
from ..storage.sentinel import connect
from .control import HostRelay
from .early import BASE_ARGS, bind_forwarder, install_credentials, take_listener
from .forwarder import Forwarder
from .history import HISTORY_RESULT_LINE, Conversation, find_transcript
from .liveness import (
    BACKOFF_MAX_S,
    ORPHAN_EXIT,
    REDIS_DOWN,
    Heartbeat,
    PipeOp,
    RedisLink,
    now_ms,
)
from .prestart import Prestarter
from .process import CLI, LINE_LIMIT, CLIProcess, Tasks, kill_leftovers, oom_kills, pids_refusals
from .relay import FAST_PREFIXES, Input, Output
from .settings import Assignment, RunnerSettings

log = logging.getLogger("dockercc.agent")

MAX_RESTARTS = 3


class Runner:
    """One container's runner: waits for its session, then serves it until told to stop."""

    def __init__(self, settings: RunnerSettings,
                 early: subprocess.Popen[bytes] | None = None) -> None:
        self.s = settings
        self.pool_keys = PoolKeys(settings.prefix)
        self.r: aioredis.Redis = connect(settings.redis_url, socket_connect_timeout=5)
        self.keys: SessionKeys | None = None
        self.assignment: Assignment | None = None
        self.stopping = asyncio.Event()
        self.tasks = Tasks()
        # back-off under half a health interval: a Redis that is back gets heartbeats again
        # well inside the pool's grace window (see ContainerPool.check), so nobody is lost
        self.link = RedisLink(settings.orphan_ms / 1000, self.stopping.set,
                              min(BACKOFF_MAX_S, max(0.05, settings.health_interval_ms / 2000)))
        self.output = Output(self.r, self.link)
        self.conversation = Conversation(settings.agent)
        self.cli = CLI(settings, self.tasks, self.handle_line, self.on_line_too_long)
        # cleared while a pre-started CLI lists the session's tools again: input waits
        self.tools_ready = asyncio.Event()
        self.tools_ready.set()
        self.prestart = Prestarter(settings, self.cli, self.tasks.spawn, self.tools_ready, early)
        self.host: HostRelay | None = None  # these two once claimed
        self.input: Input | None = None
        self.heartbeat = Heartbeat(self.r, self.link, settings, self.pool_keys,
                                   lambda: self.keys, self.stopping.set)
        self.forwarder: Forwarder | None = None
        self.skipped_lines = 0
        self.restarts = 0

    def emit(self, line: bytes | str, *ops: PipeOp) -> None:
        self.output.emit(line, *ops)

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
            await self.prestart.start(self.s.prestart)
        pre = self.prestart
        await self.r.hset(ckey, mapping={"status": "warm", "heartbeat": now_ms(),
                                         "started": now_ms(), "pid": os.getpid(),
                                         "prestarted": int(pre.prestarted),
                                         "warmed_up": int(pre.prestarted and pre.warmed_up)})
        self.tasks.spawn(self.heartbeat.loop())
        try:
            assignment = await self.wait_assignment()
            if assignment is None:
                return ORPHAN_EXIT if self.link.orphaned else 0
            code = await self.serve(assignment)
            return ORPHAN_EXIT if self.link.orphaned else code
        finally:
            proc = self.cli.proc
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(Exception):
                await self.r.hset(ckey, mapping={"status": "stopped", "heartbeat": now_ms()})
                await self.r.expire(ckey, 60)
            self.tasks.cancel_all()
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

    def claim(self, a: Assignment) -> SessionKeys:
        """Become the runner of ``a``'s session: the pieces that serve one session."""
        self.assignment = a
        self.keys = keys = SessionKeys(a.session, self.s.prefix)
        self.output.keys = keys
        self.host = HostRelay(self.r, self.link, self.s, keys, a, self.cli.write,
                              self.conversation, self.tasks.spawn, self.stopping.set,
                              self.tools_ready)
        self.input = Input(self.r, self.link, keys, self.cli.write, self.output,
                           self.conversation, self.tools_ready)
        return keys

    async def serve(self, a: Assignment) -> int:
        from ..logs import bind

        bind(session=a.session, process_wide=True)  # one runner serves one session
        log.info("claimed by session %s (agent %s)", a.session, a.agent)
        keys = self.claim(a)
        pipe = self.r.pipeline(transaction=False)  # one round trip: the claim waits on it
        pipe.lindex(keys.output_buffer, -1)
        pipe.hgetall(keys.state)
        pipe.hset(self.pool_keys.container_state(self.s.container),
                  mapping={"status": "busy", "session": a.session})
        # the claim is confirmed once the session's state names this container
        pipe.hset(keys.state, "container", self.s.container)
        # the input the session queued (usually its first prompt, sent while it claimed), in
        # the same round trip: the CLI gets it as soon as it is ready for it
        pipe.lrange(keys.processing, 0, -1)
        pipe.lmove(keys.input, keys.processing, "LEFT", "RIGHT")
        last, prev, _, _, pending, moved = await pipe.execute()
        assert self.input is not None
        self.input.prefetched = [*pending, *([] if moved is None else [moved])]
        if last:
            env = Envelope.decode(last)
            if env is not None:  # (a forged seq beyond the window is no base either)
                self.output.seq = env.seq
        self.conversation.resume(prev)
        install_credentials(ids=self.s.agent)
        if a.restore_from:
            await self.restore_transcript(a)
        writer = self.tasks.spawn(self.output.writer_loop())
        turns, cost = self.conversation.turns, self.conversation.cost
        self.output.emit_ops(self.output.set_state(
            status="starting", container=self.s.container, agent=a.agent, heartbeat=now_ms(),
            turns=turns, cost_usd=cost, started=now_ms(), error=""))
        assert self.host is not None
        control_task = self.tasks.spawn(self.host.control_loop())
        code = 0
        try:
            while not self.stopping.is_set():
                ooms, refusals = oom_kills(), pids_refusals()
                code = await self.run_cli(a)
                if self.stopping.is_set():
                    break
                self.restarts += 1
                self.cli_died(code, ooms, refusals)
                if self.restarts > MAX_RESTARTS:
                    code = code or 1
                    break
                await asyncio.sleep(min(2.0, 0.2 * self.restarts))
        finally:
            control_task.cancel()
            self.output.emit_ops(self.output.set_state(
                status="stopped" if code == 0 or self.stopping.is_set() else "failed",
                heartbeat=now_ms()))
            self.output.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 10)
        return 0 if self.stopping.is_set() else code

    def cli_died(self, code: int, ooms: int | None, refusals: int | None) -> None:
        """Report a CLI that exited on its own (and why, where the cgroup tells)."""
        leftovers = kill_leftovers(self.s.agent[0] if self.s.agent else None)
        tail = "\n".join(self.cli.stderr_tail)
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
        turn_lost, self.conversation.busy = self.conversation.busy, False
        self.emit(runner_event("error", error="cli_exited", exit_code=code,
                               restart=self.restarts <= MAX_RESTARTS,
                               turn_lost=turn_lost, leftovers_killed=leftovers,
                               stderr_tail=tail[-4000:], **why),
                  self.output.set_state(status="restarting" if self.restarts <= MAX_RESTARTS
                                        else "failed", error=f"cli exited with {code}"))

    async def restore_transcript(self, a: Assignment) -> None:
        assert a.restore_from is not None
        try:
            await self.conversation.restore_transcript(
                self.r, SessionKeys(a.restore_from, self.s.prefix), a.transcript_sha256)
        except (ValueError, KeyError, OSError, zlib.error) as exc:
            log.warning("could not restore transcript of %s: %s", a.restore_from, exc)
            self.emit(runner_event("warning", warning="transcript_refused", message=str(exc)))

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
        sid = self.conversation.claude_session_id
        if sid and self.restarts:
            # the CLI died: continue the same conversation
            if "--resume" in args:
                i = args.index("--resume")
                del args[i:i + 2]
            args += ["--resume", sid]
        return [*shlex.split(self.s.claude_bin), *BASE_ARGS, *args]

    async def run_cli(self, a: Assignment) -> int:
        assert self.keys is not None
        proc: CLIProcess | None = await self.prestart.adopt(a, self.restarts)
        adopted = proc is not None
        if proc is None:
            argv = self.cli_argv(a)
            self.cli.stderr_tail.clear()
            proc = await self.cli.start(argv, a.cli_env())
            if proc is None:
                return 127
        self.emit(runner_event("started", container=self.s.container, pid=proc.pid,
                               restarts=self.restarts, prestarted=adopted),
                  self.output.set_state(status="idle", pid=proc.pid, heartbeat=now_ms(),
                                        prestarted=int(adopted),
                                        runtime_applied=self.prestart.runtime_applied
                                        if adopted else 0))
        if not adopted:
            await self.cli.write(control.initialize_request(control.new_request_id(), a.hooks))
        readers = list(self.cli.io_tasks)
        assert self.input is not None
        await self.input.deliver_prefetched()
        input_task = self.tasks.spawn(self.input.loop())
        stop_wait = self.tasks.spawn(self.stopping.wait())
        exit_wait = self.tasks.spawn(proc.wait())
        await asyncio.wait({stop_wait, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
        input_task.cancel()  # stop taking input before anything else
        if self.stopping.is_set() and proc.returncode is None:
            await self.cli.close(proc)
        stop_wait.cancel()
        # let stdout drain fully before reporting
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*readers), 10)
        self.cli.proc = None
        return proc.returncode if proc.returncode is not None else -1

    # -- the CLI's stdout ------------------------------------------------------------------

    def on_line_too_long(self) -> None:
        self.skipped_lines += 1
        self.emit(runner_event("warning", warning="line_too_long", limit=LINE_LIMIT))

    def handle_line(self, line: bytes) -> None:
        # a line cut short (the CLI died mid-write: no newline at EOF) is parsed, not trusted,
        # so a broken envelope never reaches Redis (readers could not decode its seq)
        complete = line.endswith(b"\n")
        line = line.strip()
        keys, conv = self.keys, self.conversation
        if (line.startswith(FAST_PREFIXES) and keys is not None and complete
                and line.endswith(b"}")):
            # the bulk of a turn (deltas, tool results): relayed as is, never parsed
            if conv.calls_pending and len(line) <= HISTORY_RESULT_LINE and line.startswith(
                    b'{"type":"user"'):
                conv.note_tool_results(line)  # a small tool result: keep it for the history
            self.output.queue.put_nowait((line, []))
            return
        if keys is None:  # the pre-started CLI, before any session claimed it
            self.prestart.handle_preclaim(line)
            return
        if not line.startswith(b"{"):
            if line:
                self.skipped_lines += 1
                self.cli.stderr_tail.append("stdout: " + line[:500].decode(errors="replace"))
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
        if kind == "control_response" and self.prestart.take_answer(obj):
            return  # the runner's own request (run-time settings): not relayed
        if kind == "result":
            conv.on_result(obj)
            result_line = line
            ops.append(lambda pipe: pipe.set(keys.result, result_line))
            assert self.assignment is not None
            ops.append(conv.history_op(obj, keys.history, self.assignment.history_max))
            # in the same MULTI as the result: a caller that saw the result can lose the
            # container a millisecond later and still resume with this turn remembered
            ops.append(conv.transcript_op(keys.transcript))
            ops.append(self.output.set_state(
                status="idle", turns=conv.turns, cost_usd=round(conv.cost, 6),
                last_result=now_ms(), claude_session_id=conv.claude_session_id,
                last_subtype=obj.get("subtype", ""),
                last_is_error=int(bool(obj.get("is_error")))))
        elif kind == "system" and obj.get("subtype") == "init":
            sid = obj.get("session_id")
            if isinstance(sid, str):
                conv.claude_session_id = sid
            ops.append(self.output.set_state(claude_session_id=conv.claude_session_id,
                                             model=obj.get("model") or ""))
        elif kind == "assistant" and not obj.get("parent_tool_use_id"):
            conv.on_assistant(obj)
        elif kind == "control_request" and self.host is not None:
            self.host.on_request(obj)
        self.emit(line, *ops)


def main(argv: list[str] | None = None, early: subprocess.Popen[bytes] | None = None) -> int:
    from ..logs import bind, configure

    # text by default, JSON lines with DOCKERCC_LOG_FORMAT=json (the pool passes its
    # logging.format); every line redacted, with the container (and, once claimed, session)
    configure(level=os.environ.get("DOCKERCC_LOG_LEVEL", "INFO"), process="dockercc-agent",
              stream=sys.stderr, logger="")
    settings = RunnerSettings.from_env()
    bind(container=settings.container, process_wide=True)
    return asyncio.run(Runner(settings, early=early).run())
