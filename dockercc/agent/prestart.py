"""The warm container's CLI: started before any session claims the container, primed and
warmed up, then adopted by the session that claims it (its run-time settings applied with
control requests) or stopped if it cannot serve that session.

Before the claim the runner answers the CLI itself: its MCP start-up handshake from the
pool's tools, and the answers to its own priming requests. Any failure here only means the
claim starts the CLI as a cold container would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..protocol import control
from ..protocol.cli import runtime_requests, split_cli_args, start_time_args
from .early import BASE_ARGS, install_credentials
from .process import CLI, CLIProcess
from .settings import Assignment, Prestart, RunnerSettings
from .warmup import DEFAULT_BASE_URL, WARMUP_PROMPT, WarmupAPI, warmup_supported

log = logging.getLogger("dockercc.agent")


class Prestarter:
    """The pre-started CLI (``settings.prestart``) from its start to its claim."""

    def __init__(self, settings: RunnerSettings, cli: CLI,
                 spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
                 tools_ready: asyncio.Event,
                 early: subprocess.Popen[bytes] | None = None) -> None:
        self.s = settings
        self.cli = cli
        self.spawn = spawn
        self.tools_ready = tools_ready  # cleared while the CLI refreshes its tools list
        self.early = early  # the CLI .early started before the runner's imports
        self.prestarted = False
        self.runtime_applied = 0  # run-time settings applied to the adopted CLI at the claim
        self.warmed_up = False  # the pre-started CLI took its throwaway warm-up turn
        # the runner's own requests waiting for their answer (request id, or "result")
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def start(self, pre: Prestart) -> None:
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
            proc = await self.cli.adopt(early)
        if proc is None:
            proc = await self.cli.start([*shlex.split(self.s.claude_bin), *BASE_ARGS, *pre.args])
        if proc is None:
            tail = self.cli.stderr_tail
            log.warning("pre-start failed: %s", tail[-1] if tail else "")
            return
        self.prestarted = True
        if not pre.wait:  # a cold container: the session is already waiting for this CLI
            await self.cli.write(control.initialize_request(control.new_request_id()))
            return
        deadline = time.monotonic() + pre.timeout_s
        ready = await self.ask_preclaimed(proc, "control", control.initialize_request, deadline)
        if ready is not None and ready.get("subtype") == "success" and pre.prime:
            if await self.prime(proc, deadline) and pre.warmup and warmup_supported():
                await self.warm_up(proc, deadline)
        if proc.returncode is not None:
            log.warning("pre-started CLI exited with %s: %s", proc.returncode,
                        " | ".join(list(self.cli.stderr_tail)[-3:]))
            self.prestarted = False
            self.cli.proc = None

    async def ask_preclaimed(self, proc: CLIProcess, kind: str, line: Callable[[str], str],
                             deadline: float, limit: float = 10.0) -> dict[str, Any] | None:
        """Write ``line(request_id)`` to the pre-started CLI and wait for its answer: the
        ``control_response`` (``kind="control"``) or the turn's ``result``. None when the CLI
        did not answer in time or exited."""
        rid = "result" if kind == "result" else control.new_request_id()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[rid] = waiter
        exited = self.spawn(proc.wait())
        try:
            if not await self.cli.write(line(rid)):
                return None
            wait = max(0.1, min(limit, deadline - time.monotonic()))
            await asyncio.wait({waiter, exited}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            self._waiters.pop(rid, None)
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
        await self.cli.kill(proc)

    async def adopt(self, a: Assignment, restarts: int) -> CLIProcess | None:
        """The pre-started CLI if it can serve ``a`` (same start-time arguments; the run-time
        part is applied with control requests, see :meth:`apply_runtime`), else None (and a
        pre-started CLI that cannot serve it is stopped)."""
        proc, pre = self.cli.proc, self.s.prestart
        if proc is None or pre is None or not self.prestarted:
            return None
        self.prestarted = False
        self.runtime_applied = 0
        requests = runtime_requests(split_cli_args(pre.args)[1], a.wanted_runtime())
        # (a CLI initialized without the session's hooks cannot get them later)
        if (proc.returncode is None and not restarts and requests is not None
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
        if not await self.cli.write(control.control_request(
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
            waiter = self._waiters.get(
                str(resp.get("request_id", "")) if kind == "control_response" else "result")
            if waiter is not None and not waiter.done():
                waiter.set_result(resp)
        elif kind == "control_request":
            req = obj.get("request") or {}
            rid = str(obj.get("request_id", ""))
            if isinstance(req, dict) and req.get("subtype") == "mcp_message":
                reply = self.preclaim_mcp(req.get("message") or {})
                self.spawn(self.cli.write(control.mcp_response(rid, reply)))
            else:
                self.spawn(self.cli.write(control.control_error(
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

    def take_answer(self, obj: dict[str, Any]) -> bool:
        """A ``control_response`` of the claimed CLI: True if it answers one of the runner's
        own requests (run-time settings: taken here, not relayed to the session)."""
        if not self._waiters:
            return False
        resp = obj.get("response") or {}
        waiter = self._waiters.get(str(resp.get("request_id", "")))
        if waiter is None:
            return False
        if not waiter.done():
            waiter.set_result(resp)
        return True


def _request_line(subtype: str, fields: dict[str, Any]) -> Callable[[str], str]:
    return lambda rid: control.control_request(rid, subtype, **fields)
