"""``claude-cli/<model>``: the local Claude Code CLI as a subprocess on this host.

The same wire handling as the containers: the CLI runs with ``--input-format stream-json
--output-format stream-json --verbose`` (plus the session's :func:`build_cli_args`), its
stdout goes through :class:`~dockercc.protocol.LineParser` and :class:`~dockercc._mapper.EventMapper`,
and host tools are served by a :class:`~dockercc.bridge.HostBridge` answering the CLI's
``mcp_message`` control requests on its stdin / stdout (no Redis involved).

It is *not* sandboxed: the CLI runs as the calling user, in ``workspace`` (default: the
current directory), with the environment of the caller plus the configured credentials.

Unavailable (fallback allowed) when ``claude`` is not on ``PATH``, cannot be started, exits
before it answered the ``initialize`` handshake, or does not answer it within ``startupMs``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from .._mapper import EventMapper
from ..config import secret_env
from ..errors import AgentError
from ..events import Event, Result
from ..protocol import control
from ..protocol.cli import MCP_SERVER_NAME
from ..protocol.envelope import Envelope
from ..protocol.messages import ControlRequest, ControlResponse, Message
from ..protocol.parser import LineParser
from ..redaction import redact
from ..session import (
    SessionOptions,
    decide_permission,
    hooks_wire,
    resolve_cli_args,
    run_hook,
)
from .base import ModelRef, Prompt, Provider, ProviderContext, ProviderSession, unavailable

BASE_ARGS = ("--input-format", "stream-json", "--output-format", "stream-json", "--verbose")
READ_CHUNK = 1 << 16
STDERR_TAIL = 40
INSTALL_HINT = "install it with `npm install -g @anthropic-ai/claude-code`"


class ClaudeCLIProvider(Provider):
    """Sessions on the local CLI. ``executable`` overrides the ``claude`` found on ``PATH``
    (the ``PATH`` of the chain's environment)."""

    kind = "claude-cli"

    def __init__(self, ref: ModelRef, context: ProviderContext, *,
                 executable: str | None = None) -> None:
        super().__init__(ref, context)
        self.executable = executable

    def session(self, options: SessionOptions, session_id: str) -> ProviderSession:
        return CLISession(self, options, session_id)


_EOF = object()


class CLISession(ProviderSession):
    def __init__(self, provider: ClaudeCLIProvider, options: SessionOptions,
                 session_id: str) -> None:
        super().__init__(provider.ref, provider.context, options, session_id)
        self.provider = provider
        self.proc: asyncio.subprocess.Process | None = None
        self.mapper = EventMapper(session_id)
        self.parser = LineParser()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bridge: Any = None
        self._hooks_config, self._hook_fns = hooks_wire(options.hooks)
        self._stdin_lock = asyncio.Lock()
        self._turn_lock = asyncio.Lock()
        self._init_id = ""
        self._ready: asyncio.Future[str | None] | None = None
        self._seq = 0
        self._exited = False
        self._closed = False

    # -- set-up ----------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The CLI's environment: the caller's, the configured credentials, the agent's and
        the session's variables (real values: never log it)."""
        env = self.context.env
        env.update(secret_env(self.context.config, env))
        env.update(self.agent_config.env_values())
        env.update(self.options.env or {})
        return env

    def argv(self, executable: str, with_tools: bool) -> list[str]:
        o, a = self.options, self.agent_config
        return [executable, *BASE_ARGS, *resolve_cli_args(
            o, a, model=self.ref.model, resume=o.resume,
            mcp_server=MCP_SERVER_NAME if with_tools else None)]

    async def start(self) -> None:
        if self.proc is not None:
            return
        env = self.environment()
        exe = self.provider.executable or shutil.which("claude", path=env.get("PATH", os.defpath))
        if exe is None:
            raise unavailable(self.ref, f"the Claude Code CLI (`claude`) is not on PATH; "
                                        f"{INSTALL_HINT}")
        tools = self.tool_registry()
        if len(tools):
            from ..bridge import HostBridge

            self._bridge = HostBridge(tools, server_name=MCP_SERVER_NAME)
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(exe, bool(len(tools))), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                cwd=self.options.workspace or None, env=env, start_new_session=True)
        except OSError as exc:
            await self._cleanup()
            raise unavailable(self.ref, f"cannot start {exe}: {exc}") from exc
        self._spawn(self._read_stdout(self.proc))
        self._spawn(self._read_stderr(self.proc))
        self._init_id = control.new_request_id()
        limit = self.context.config.timeouts.startup_ms / 1000
        try:
            await self._write(control.initialize_request(self._init_id, self._hooks_config or None))
            error = await asyncio.wait_for(asyncio.shield(self._ready), limit)
        except TimeoutError:
            await self._cleanup()
            raise unavailable(self.ref, f"the CLI did not answer its start-up handshake within "
                                        f"{limit:.1f}s (startupMs)") from None
        except BaseException:
            await self._cleanup()
            raise
        if error is not None:
            await self._cleanup()
            raise unavailable(self.ref, error)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _exit_reason(self, code: int | None) -> str:
        tail = redact(" | ".join(line for line in self.stderr_tail if line)[-1500:])
        reason = f"the Claude Code CLI exited with code {code}"
        return reason + (f": {tail}" if tail else "")

    # -- pipes -----------------------------------------------------------------------------

    async def _write(self, line: str) -> bool:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return False
        async with self._stdin_lock:
            try:
                proc.stdin.write(line.encode() + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                return False
        return True

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                chunk = await proc.stdout.read(READ_CHUNK)
                if not chunk:
                    break
                for msg in self.parser.feed(chunk):
                    self._handle(msg)
            for msg in self.parser.flush():
                self._handle(msg)
            # stderr may still be arriving: give it a moment so exit reasons carry it
            await asyncio.sleep(0.05)
            await proc.wait()
        finally:
            self._exited = True
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(self._exit_reason(proc.returncode))
            self._queue.put_nowait(_EOF)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:  # an over-long line
                continue
            if not line:
                return
            self.stderr_tail.append(line.decode(errors="replace").rstrip()[:1000])

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, ControlRequest):
            self._spawn(self._answer(msg))
            return
        if isinstance(msg, ControlResponse):
            if msg.request_id == self._init_id and self._ready is not None \
                    and not self._ready.done():
                error = None
                if msg.subtype == "error":
                    detail = msg.raw.get("response", {}).get("error")
                    error = f"the CLI refused the start-up handshake: {detail}"
                self._ready.set_result(error)
            return
        self._seq += 1
        envelope = Envelope(seq=self._seq, ts=int(time.time() * 1000), event=msg.raw)
        for event in self.mapper.map(envelope):
            self._queue.put_nowait(event)

    async def _answer(self, msg: ControlRequest) -> None:
        request_id = msg.request_id or ""
        request = msg.raw.get("request") if isinstance(msg.raw.get("request"), dict) else {}
        assert isinstance(request, dict)
        kind = msg.subtype
        if kind == "mcp_message" and self._bridge is not None:
            reply = await self._bridge.handle(request.get("message") or {})
            await self._write(control.mcp_response(request_id, reply))
        elif kind == "can_use_tool" and self.options.can_use_tool is not None:
            decision = await decide_permission(self.options.can_use_tool, request, self.id,
                                               timeout_s=self.permission_timeout_s)
            await self._write(control.dumps_line(control.control_success_dict(
                request_id, decision)))
        elif kind == "hook_callback":
            output = await run_hook(self._hook_fns, request, self.id,
                                    timeout_s=self.permission_timeout_s)
            await self._write(control.dumps_line(control.control_success_dict(
                request_id, output)))
        elif kind == "can_use_tool":
            # no interactive approver: the session's permission mode rules (as in containers)
            await self._write(control.control_error(
                request_id, "no interactive permission prompt in dockercc"))
        else:
            await self._write(control.control_error(
                request_id, f"dockercc does not handle control request {kind!r}"))

    # -- conversation ----------------------------------------------------------------------

    async def stream(self, prompt: Prompt, *, timeout: float | None = None
                     ) -> AsyncIterator[Event]:
        control.check_prompt(prompt)
        await self.start()
        async with self._turn_lock:
            if self._exited or not await self._write(control.user_message(prompt)):
                code = self.proc.returncode if self.proc is not None else None
                raise unavailable(self.ref, self._exit_reason(code))
            deadline = None if timeout is None else time.monotonic() + timeout
            began = False
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    raise TimeoutError(
                        f"no result from the local CLI of session {self.id!r} within "
                        f"{timeout}s") from None
                if item is _EOF:
                    self._queue.put_nowait(_EOF)  # every later turn sees it too
                    code = self.proc.returncode if self.proc is not None else None
                    if not began:
                        raise unavailable(self.ref, self._exit_reason(code))
                    raise AgentError(f"session {self.id!r}: " + self._exit_reason(code)
                                     + " in the middle of a turn")
                began = True
                yield self.stamp(item)
                if isinstance(item, Result):
                    return

    async def interrupt(self) -> None:
        await self._write(control.interrupt_request(control.new_request_id()))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._cleanup()

    async def _cleanup(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc is not None and proc.returncode is not None:
            # the CLI's own children (tools it ran) go with it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._bridge is not None:
            with contextlib.suppress(Exception):
                await self._bridge.aclose()
            self._bridge = None
