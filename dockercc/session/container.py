"""A session's container: claim and start it (or resume a conversation in a new one), and
reach its workspace (files, commands)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Self, cast

from .. import logs, metrics, tracing
from ..bridge import HostBridge
from ..errors import (
    SessionClosed,
    WorkspaceError,
)
from ..files import AsyncFiles, CommandResult, exec_target, run_command, stream_command
from ..pool.backend import LABEL
from ..pool.spec import scratch_volume_name
from ..protocol import transcript as sealing
from ..protocol.cli import (
    MCP_SERVER_NAME,
    run_time_settings,
    split_session_env,
)
from ..protocol.keys import validate_id
from ..storage.connection import redis_errors_as_transport_errors
from ..transcript_key import load_key
from ..workspace import (
    WORKSPACE,
    WorkspaceMount,
)
from .base import tools_digest
from .relays import SessionRelays

if TYPE_CHECKING:  # pragma: no cover
    from .turns import AsyncSession



class SessionContainer(SessionRelays):
    """The part of a session that claims, starts and reaches its container."""

    async def _resolve_resume(self, resume: str) -> None:
        """``resume`` is a dockercc session id (or a Claude session id we know)."""
        t = self.pool.transport
        state: dict[str, str] = {}
        with contextlib.suppress(Exception):
            state = await t.state(validate_id(resume))
        self._adopt_scratch(state.get("workspace_volume"))
        if state.get("claude_session_id"):
            self._restore_from = resume
            self._resume_id = state["claude_session_id"]
            return
        owner = await t.sessions.by_claude_id(resume)
        if owner is not None:
            self._restore_from = owner
            self._resume_id = resume
            return
        days = self.pool.config.timeouts.resume_ms / 86400000
        raise SessionClosed(f"nothing to resume: no session {resume!r} in Redis (closed "
                            f"sessions stay resumable for {days:g} days: timeouts.resumeMs)")

    async def start(self) -> Self:
        """Claim a container and hand it this session (done on first use anyway)."""
        # (its log lines, and those of the tasks it starts, e.g. the MCP relay, name it)
        with logs.bound(session=self.id):
            async with self._lock:
                with redis_errors_as_transport_errors(self.pool.transport.url):
                    await self._ensure_container()
        lease = self.lease
        if lease is not None and lease.renamed is not None:
            # (a prompt does not wait for it: its turn runs meanwhile)
            await asyncio.wait([lease.renamed])
        return self

    async def _ensure_container(self) -> None:
        if self.closed:
            raise SessionClosed(f"session {self.id!r} is closed; open a new one or resume it "
                                f"with pool.session(resume={self.id!r})")
        if self.lease is not None:
            state = await self.pool.transport.sessions.state_field(self.id, "status")
            if state is None or state not in ("lost", "parked", "stopped", "failed"):
                return
            # the container went away: continue the conversation in a new one
            await self.pool.containers.release(self.lease.container)
            self.lease = None
            await self._seal_transcript()  # its lease is over: what it saved is final
            if not self._turn_open:
                # lost between turns: its error event is old news, not the next turn's
                self.last_seq = max(self.last_seq,
                                    await self.pool.transport.sessions.last_seq(self.id))
        await self.pool.start()
        # a new session: its id is checked unused and the session registered in one step
        # (the claim waits on it); it has no Claude session or transcript to look up yet
        fresh = not self._keys_checked and not self.options.resume
        if fresh:
            await self._register(new=True)
        self._registered = fresh
        try:
            await self._claim()
        except BaseException as exc:
            metrics.on_error(type(exc).__name__)
            if self._registered:  # (never another process's entry of a resumed id)
                with contextlib.suppress(Exception):
                    await self.pool.transport.sessions.unregister(self.id)
            raise
        assert self.lease is not None
        await self.pool.transport.sessions.set_state(self.id,
                                                     claimed_ms=f"{self.lease.claim_ms:.1f}")
        if self.workspace_mount is None and self.pool.config.docker.scratch_volumes:
            # the container's fresh scratch volume is this session's from now on: later
            # containers (after a loss, parking, resume=) mount it instead of their own
            volume = scratch_volume_name(self.lease.container)
            self.workspace_mount = WorkspaceMount("volume", volume, WORKSPACE)
            await self.pool.transport.sessions.keep_scratch(self.id, volume)

    async def _claim(self) -> None:
        """Hand the session's assignment to a container (registering the session first
        unless :meth:`_ensure_container` did)."""
        if not self._keys_checked:
            await self._check_new_id()
        if self.options.resume and self._resume_id is None:
            await self._resolve_resume(self.options.resume)
        elif self.claude_session_id is None and not self._registered:
            await self._refresh_claude_id()
        if self.claude_session_id and self._resume_id != self.claude_session_id:
            self._resume_id = self.claude_session_id
            self._restore_from = self.id
        if (len(self._tools) or self.options.can_use_tool is not None
                or self._hook_fns) and self._relay is None:
            self._bridge = HostBridge(self._tools, server_name=MCP_SERVER_NAME)
            self._relay = asyncio.create_task(self._relay_loop(), name=f"dockercc-mcp-{self.id}")
        digest = ""
        if self._restore_from:  # TranscriptRejected unless this host sealed it
            raw = await self.pool.transport.sessions.transcript(self._restore_from)
            digest = sealing.verify(load_key(), self._restore_from, raw)
        self._lease_token = secrets.token_hex(16)
        args = self.cli_args()
        assignment = {"session": self.id, "agent": self.agent, "args": args,
                      "runtime": run_time_settings(args, split_session_env(self.options.env)[1]),
                      "lease_token": self._lease_token, "transcript_sha256": digest,
                      "history_max": self.pool.config.history_max,
                      "restore_from": self._restore_from,
                      "tools_digest": tools_digest(self.tool_manifest()),
                      "hooks": self._hooks_config or None}
        if not self._registered:
            await self._register()
            self._registered = True
        with tracing.claim_span(self._trace, self.id, self.agent) as span:
            self.lease = await self.pool.containers.claim(
                session=self.id, agent=self.agent, spec=self.spec(), assignment=assignment,
                # a new container may start the CLI first thing (not to resume: the runner
                # restores the transcript before that CLI may start)
                prestart=None if self._restore_from or self._resume_id else self.prestart())
            if span is not None:
                span.set_attributes({"dockercc.warm": self.lease.warm,
                                     "dockercc.claim_ms": self.lease.claim_ms,
                                     "dockercc.container": self.lease.container})

    # -- the workspace from the host (docs/workspaces.md) -----------------------------------

    @property
    def files(self) -> AsyncFiles:
        """The session's ``/workspace``: ``write``, ``read``, ``list``, ``upload``,
        ``download``, ``remove`` (see :class:`dockercc.files.AsyncFiles`)."""
        if self._files is None:
            self._files = AsyncFiles(cast("AsyncSession", self))
        return cast(AsyncFiles, self._files)

    async def _exec_target(self) -> tuple[Any, str, str, list[str]]:
        """(docker client, container id, exec user, argv prefix) for running something in
        this session's container as the agent, with the agent's environment."""
        await self.start()
        lease = self.lease
        backend: Any = self.pool.containers.backend
        if lease is None or not hasattr(backend, "client"):
            raise WorkspaceError("the session has no Docker container to run in")
        cached = self._exec_cache
        if cached is not None and cached[0] == lease.container:
            return cached[1]
        found = await backend.list({**self.pool.containers.labels_base,
                                    f"{LABEL}.container": lease.container})
        if not found:
            raise WorkspaceError(f"the container of session {self.id!r} is gone")
        spec = self.spec()
        target = await exec_target(backend.client, found[0].id, user=spec.user,
                                   isolate_runner=spec.isolate_runner)
        self._exec_cache = (lease.container, target)
        return target

    async def _wait_turn(self, timeout: float | None, concurrent: bool) -> None:
        """The rule: a command waits for the agent's turn in flight to end (the agent may be
        editing the same files), unless ``concurrent=True``."""
        if concurrent or not self._turn_open:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._turn_open:
            if deadline is not None and time.monotonic() > deadline:
                raise WorkspaceError(
                    f"session {self.id!r}: the agent's turn is still running after "
                    f"{timeout}s (consume its stream, or pass concurrent=True)")
            await asyncio.sleep(0.05)

    async def run(self, cmd: str | list[str], *, timeout: float = 60, cwd: str = "",
                  env: dict[str, str] | None = None, concurrent: bool = False,
                  turn_timeout: float | None = None) -> CommandResult:
        """Run ``cmd`` (a shell string, or an argv list) in this session's container as the
        agent's user, in ``/workspace`` (or ``cwd`` under it), with the agent's environment
        (plus ``env``). Waits for a turn in flight to end first unless ``concurrent``
        (``turn_timeout``, default ``timeout``). Killed after ``timeout`` s:
        :class:`~dockercc.errors.CommandTimeout` (``exc.result`` holds the output so far)."""
        await self._wait_turn(timeout if turn_timeout is None else turn_timeout, concurrent)
        return await run_command(cast("AsyncSession", self), cmd, timeout=timeout, cwd=cwd,
                                 env=env, on_output=None)

    async def run_stream(self, cmd: str | list[str], *, timeout: float = 60, cwd: str = "",
                         env: dict[str, str] | None = None, concurrent: bool = False,
                         turn_timeout: float | None = None
                         ) -> AsyncIterator[tuple[str, bytes]]:
        """:meth:`run` as it prints: ``("stdout"|"stderr", bytes)`` pieces, then
        ``("exit", b"<code>")``."""
        await self._wait_turn(timeout if turn_timeout is None else turn_timeout, concurrent)
        async for item in stream_command(cast("AsyncSession", self), cmd, timeout=timeout,
                                         cwd=cwd, env=env):
            yield item
