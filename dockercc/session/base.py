"""The state of a session every part of :class:`~dockercc.session.AsyncSession` shares: its
options, spec, CLI arguments and host tools, its registry record, transcript and scratch
bookkeeping. The parts build on it in one line: ``SessionBase`` < ``SessionRelays`` (the
CLI's MCP, permission and hook requests) < ``SessionContainer`` (claim, start, resume, files
and commands) < ``AsyncSession`` (turns: send, receive, stream, ask, interrupt, stop, close)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

from .. import tracing
from .._mapper import EventMapper
from ..bridge import HostBridge, ToolRegistry, session_registry
from ..errors import (
    SessionExists,
)
from ..pool.manager import Lease
from ..pool.spec import ContainerSpec, spec_for
from ..protocol import bounded
from ..protocol.cli import (
    MCP_SERVER_NAME,
    split_session_env,
)
from ..protocol.envelope import Envelope
from ..protocol.keys import validate_id
from ..storage.values import now_ms
from ..workspace import (
    VOLUME_RE,
    WORKSPACE,
    WorkspaceMount,
    git_risks,
    parse_add_dirs,
    parse_workspace,
)
from .options import (
    SANDBOX_PERMISSION_MODE,
    EventCallback,
    SessionOptions,
    hooks_wire,
    resolve_cli_args,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..client import AsyncPool
    from .turns import AsyncSession

log = logging.getLogger("dockercc.session")


def tools_digest(tools: list[dict[str, Any]]) -> str:
    """A short digest of MCP tool definitions (a warm CLI's tools vs a session's)."""
    blob = json.dumps(tools, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class SessionBase:
    """What every part of a session shares (see the module)."""

    def __init__(self, pool: AsyncPool, options: SessionOptions, *,
                 session_id: str | None = None, on_event: EventCallback | None = None) -> None:
        self.pool = pool
        self.options = options
        self.id = validate_id(session_id or f"s-{uuid.uuid4().hex[:12]}")
        self.agent = validate_id(options.agent, "agent name")
        self.agent_config = pool.config.agent(self.agent)
        self.on_event = on_event
        self.lease: Lease | None = None
        self.closed = False
        self.last_seq = 0
        self.claude_session_id: str | None = None
        self.mapper = EventMapper(self.id)
        self._lock = asyncio.Lock()
        self._relay: asyncio.Task[None] | None = None
        # a secret per claim, given to the claimed container only (in its assignment): an MCP
        # request that does not carry it did not come from this session's current lease
        self._lease_token = ""
        self._keys_checked = False  # a new session's id was checked to have no keys yet
        self._registered = False  # this claim entered the session in the registry
        #: git hooks / config in the workspace that appeared during the session (they would
        #: run on the host at the next ``git status`` there; see :mod:`dockercc.workspace`)
        self.workspace_warnings: list[str] = []
        self._git_before: set[str] | None = None
        # checked now: a bad path is a ConfigError before any container starts
        self.workspace_mount = parse_workspace(
            options.workspace if options.workspace is not None else self.agent_config.workspace)
        self.add_dir_mounts = parse_add_dirs(
            options.add_dirs if options.add_dirs is not None else self.agent_config.add_dirs)
        self._host_workspace = (self.workspace_mount.source if self.workspace_mount is not None
                                and self.workspace_mount.kind == "bind" else None)
        if self._host_workspace:
            with contextlib.suppress(OSError):
                self._git_before = set(git_risks(self._host_workspace))
        self._files: Any = None
        self._exec_cache: tuple[str, tuple[Any, str, str, list[str]]] | None = None
        self._bridge: HostBridge | None = None
        self._tools = self._tool_registry()
        # hook callbacks by the ids the CLI's initialize request names them with
        self._hooks_config, self._hook_fns = hooks_wire(options.hooks)
        self._restore_from: str | None = None
        self._resume_id: str | None = None
        self._turn_open = False
        #: the budget hold of the turn in flight (see dockercc.budget), settled by its Result
        self._hold: str | None = None
        # the output subscription send() made for the next receive(): up before the prompt
        # went out, so a fast turn cannot outrun the 1000-envelope replay buffer
        self._subscription: AsyncGenerator[Envelope, None] | None = None
        # the turn in flight, for metrics and traces: when send() began, its spans
        self._turn_t0: float | None = None
        self._trace: tracing.TurnTrace | None = None

    def __repr__(self) -> str:
        container = self.lease.name if self.lease else None
        return (f"AsyncSession(id={self.id!r}, agent={self.agent!r}, container={container!r}, "
                f"closed={self.closed})")

    # -- set-up ----------------------------------------------------------------------------

    def _tool_registry(self) -> ToolRegistry:
        session = cast("AsyncSession", self)
        return session_registry([*self.pool.builtins.tools(session), *self.pool.tools],
                                self.options.tools, self.agent_config.tools)

    @property
    def tools(self) -> list[str]:
        return self._tools.names()

    @property
    def turn_open(self) -> bool:
        """True from :meth:`send` until the turn's Result (or a loss) has been received."""
        return self._turn_open

    def spec(self) -> ContainerSpec:
        # (the session's own env goes to the CLI at run time: it does not change the spec,
        # so such a session is served warm; see docs/cli-runtime.md)
        spec = spec_for(self.pool.config, self.agent_config, env=self.pool.env,
                        extra_env=split_session_env(self.options.env)[0])
        mounts = [m.as_tuple() for m in (
            [self.workspace_mount] if self.workspace_mount else []) + self.add_dir_mounts]
        if mounts:
            spec = spec.model_copy(update={"mounts": tuple(mounts)})
        return spec

    def tool_manifest(self) -> list[dict[str, Any]]:
        """The session's host tools as MCP ``tools/list`` entries."""
        return [t.to_mcp() for t in self._tools]

    def prestart(self) -> dict[str, Any]:
        """What a warm container pre-starts for sessions like this one: the CLI arguments
        and the host tools its runner answers the CLI's start-up ``tools/list`` with (see
        :class:`dockercc.agent.settings.Prestart`)."""
        tools = self.tool_manifest()
        return {"args": self.cli_args(), "tools": tools, "tools_digest": tools_digest(tools),
                "server": MCP_SERVER_NAME}

    def cli_args(self) -> list[str]:
        o, a = self.options, self.agent_config
        return resolve_cli_args(
            o, a, model=o.model or a.model, resume=self._resume_id,
            mcp_server=MCP_SERVER_NAME if len(self._tools) else None,
            default_permission_mode=self._default_permission_mode()) + [
                arg for m in self.add_dir_mounts for arg in ("--add-dir", m.target)]

    def _default_permission_mode(self) -> str | None:
        user = self.pool.config.docker.user.split(":")[0]
        return None if user in ("0", "root") else SANDBOX_PERMISSION_MODE

    async def _check_new_id(self) -> None:
        """A new session (not ``resume=``) must not find keys of its id: they would be a
        closed session's or planted ones (a transcript, a Claude session id to resume)."""
        if not self.options.resume:
            if await self.pool.transport.sessions.has_keys(self.id):
                raise self._exists()
        self._keys_checked = True

    def _exists(self) -> SessionExists:
        return SessionExists(
            f"session id {self.id!r} already has keys in Redis (a closed session's?): "
            f"continue it with pool.session(resume={self.id!r}) or use another id")

    def _check_workspace(self) -> None:
        if self._git_before is None or not self._host_workspace:
            return
        try:
            new = [r for r in git_risks(self._host_workspace) if r not in self._git_before]
        except OSError:
            return
        if new:
            self.workspace_warnings = new
            log.warning("session %s left git entries in its workspace %s that run programs "
                        "on the host (check before running git there): %s", self.id,
                        self._host_workspace, ", ".join(new))

    async def _seal_transcript(self) -> None:
        """Seal this session's saved transcript now that no container of it runs (see
        :mod:`dockercc.protocol.transcript`): only sealed transcripts are ever restored."""
        await self.pool.containers.seal_transcript(self.id)

    def _adopt_scratch(self, volume: str | None) -> None:
        """A resumed session takes its scratch volume back (the name comes from Redis: only
        a scratch volume's shape is accepted)."""
        if (volume and self.workspace_mount is None and volume.startswith("dockercc-ws-")
                and VOLUME_RE.match(volume)):
            self.workspace_mount = WorkspaceMount("volume", volume, WORKSPACE)

    async def _refresh_claude_id(self) -> None:
        raw = await self.pool.transport.sessions.state_field(self.id, "claude_session_id")
        if raw:
            self.claude_session_id = raw

    async def _register(self, *, new: bool = False) -> None:
        """Enter the session in the registry; ``new``: also check, in the same step, that its
        id has no keys yet (what :meth:`_check_new_id` does in a round trip of its own)."""
        record = {"agent": self.agent, "owner": self.pool.containers.owner,
                  "tenant": self.pool.tenant,
                  "created": now_ms(), "parent": self.options.parent or ""}
        # the state outlives the registry entry (closed sessions stay readable): the
        # built-in tools find the session's tenant there once it is closed
        sessions = self.pool.transport.sessions
        if not new:
            await sessions.register(self.id, record, self.pool.tenant)
        elif await sessions.register_new(self.id, record, self.pool.tenant):
            self._keys_checked = True
        else:
            raise self._exists()

    @property
    def keys(self) -> Any:
        return self.pool.transport.keys(self.id)

    # -- MCP relay -------------------------------------------------------------------------

    async def history(self, start: int = 0, count: int | None = None) -> list[dict[str, Any]]:
        """This session's turns (prompt, text, tool calls, outcome), oldest first."""
        end = -1 if count is None else start + count - 1
        raw = await self.pool.transport.sessions.history(self.id, start, end)
        entries = (bounded.loads_record(x, max_bytes=bounded.MAX_MESSAGE_BYTES,
                                        what="history entry") for x in raw)
        return [e for e in entries if e]

    async def state(self) -> dict[str, str]:
        return await self.pool.transport.state(self.id)

    # -- end -------------------------------------------------------------------------------
