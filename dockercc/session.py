"""AsyncSession: one conversation with one agent, in its own container.

A session claims a container from the pool on first use, hands its runner the CLI's
arguments, and from then on talks to it only through Redis: prompts go to
``{p}{id}:input``, events come back from ``{p}{id}:output`` (subscribed before the prompt is
sent, and replayed from the buffer, so a reader never misses one), interrupts go to
``{p}{id}:control``. Host tools answer the CLI's MCP requests through
``{p}{id}:mcp:requests``.

If the container is lost (killed, out of memory, stale heartbeat) the running turn raises
:class:`~dockercc.errors.ContainerLost`; the next prompt transparently gets a new container
that resumes the same Claude conversation. The same path serves ``resume=`` after close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import budget, logs, metrics, tracing
from ._mapper import EventMapper
from .bridge import HostBridge, ToolRegistry, session_registry
from .errors import (
    AgentError,
    BadData,
    BudgetExceeded,
    CLIDied,
    ConfigError,
    ContainerLost,
    InvalidPrompt,
    SessionClosed,
    SessionExists,
    StructuredOutputError,
    TransportError,
    WorkspaceError,
)
from .events import (
    ApiRetry,
    ApiUnreachable,
    ErrorEvent,
    Event,
    Result,
    SystemInit,
    SystemStatus,
    TextDelta,
)
from .files import AsyncFiles, CommandResult, exec_target, run_command, stream_command
from .pool.backend import LABEL
from .pool.manager import RESUME_TTL_S, Lease
from .pool.spec import ContainerSpec, scratch_volume_name, spec_for
from .protocol import bounded, control
from .protocol import transcript as sealing
from .protocol.cli import (
    MCP_SERVER_NAME,
    build_cli_args,
    run_time_settings,
    split_session_env,
)
from .protocol.envelope import Envelope
from .protocol.keys import validate_id
from .storage.connection import redis_errors_as_transport_errors
from .storage.sessions import McpRelay
from .storage.values import now_ms
from .transcript_key import load_key
from .types import OptionsError
from .workspace import (
    VOLUME_RE,
    WORKSPACE,
    WorkspaceMount,
    git_risks,
    parse_add_dirs,
    parse_workspace,
)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

if TYPE_CHECKING:  # pragma: no cover
    from .client import AsyncPool

log = logging.getLogger("dockercc.session")

EventCallback = Callable[[Event], Awaitable[None] | None]
"""How long a closed session's state, history and transcript stay resumable."""
PERMISSION_TIMEOUT_S = 300.0
"""How long an approver (``can_use_tool``) may take before the request is denied, unless the
config says otherwise (``timeouts.permissionMs``)."""
SANDBOX_PERMISSION_MODE = "bypassPermissions"
"""The CLI's permission mode when neither the session nor its agent sets one: the agent is
sandboxed (its own uid, no capabilities, a container), there is nobody to approve a prompt,
so its tools run without asking. The CLI refuses this mode as root: an agent configured to
run as root (``docker.user``) keeps the CLI's default."""


class SessionOptions(BaseModel):
    """Per-session options; ``None`` means "the agent's configured value"."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    agent: str = "main"
    model: str | None = None
    system_prompt: str | None = None
    append_system_prompt: str | None = None
    permission_mode: str | None = None
    allowed_tools: list[str] | None = None
    disallowed_tools: list[str] | None = None
    tools: list[Any] = Field(default_factory=list)
    workspace: str | None = None
    add_dirs: list[str] | None = None
    resume: str | None = None
    env: dict[str, str] | None = Field(default=None, repr=False)
    max_turns: int | None = None
    include_partial_messages: bool = True
    parent: str | None = None
    # claude-agent-sdk's options beyond the shorthands above (see dockercc.types)
    fallback_model: str | None = None
    max_budget_usd: float | None = None
    json_schema: dict[str, Any] | None = None
    fork_session: bool = False
    setting_sources: list[str] | None = None
    thinking: dict[str, Any] | None = None
    effort: str | None = None
    agents: dict[str, Any] | None = None
    mcp_servers: dict[str, Any] | None = Field(default=None, repr=False)
    base_tools: list[str] | None = None
    extra_args: dict[str, str | None] | None = None
    #: the approver of the CLI's permission requests (claude-agent-sdk's ``can_use_tool``)
    can_use_tool: Any = Field(default=None, repr=False, exclude=True)
    #: claude-agent-sdk's ``hooks``: event name -> list of :class:`~dockercc.HookMatcher`
    hooks: dict[str, Any] | None = Field(default=None, repr=False, exclude=True)


#: keyword shorthands of ``session(...)`` that go straight into :class:`SessionOptions`
#: (``tools``: host Python tools, not the SDK's base tool set; ``workspace``, ``parent``,
#: ``append_system_prompt``: dockercc's own); any other :class:`ClaudeAgentOptions` field
#: name given by keyword is set on the options object and checked with it
SHORTHANDS = ("model", "system_prompt", "append_system_prompt", "permission_mode",
              "allowed_tools", "disallowed_tools", "tools", "workspace", "resume", "env",
              "max_turns", "include_partial_messages", "parent", "add_dirs")


def session_options(agent: str, options: Any = None, **shorthands: Any) -> SessionOptions:
    """A session's options from a :class:`~dockercc.types.ClaudeAgentOptions` (checked
    once, :class:`~dockercc.types.OptionsError` naming a bad field) and keyword shorthands,
    which win over the object's fields: any ``ClaudeAgentOptions`` field name, and
    :data:`SHORTHANDS`. ``None`` keywords mean "not given"; paths may be ``PathLike``.
    The one place a session's options are merged (``AsyncPool.session``,
    ``ProviderChain.session``, ``query``, ``pool.map``)."""
    import dataclasses

    from .types import ClaudeAgentOptions, validate_options

    given = {k: v for k, v in shorthands.items() if v is not None}
    extra = {k: given.pop(k) for k in list(given) if k not in SHORTHANDS}
    if extra:  # SDK fields without a shorthand: set on the options object, checked with it
        names = {f.name for f in dataclasses.fields(ClaudeAgentOptions)}
        for key in extra:
            if key not in names:
                raise OptionsError(key, "not a session option (see dockercc.ClaudeAgentOptions)")
        options = dataclasses.replace(options or ClaudeAgentOptions(), **extra)
    if "workspace" in given:
        given["workspace"] = os.fspath(given["workspace"])
    if "add_dirs" in given:
        given["add_dirs"] = [os.fspath(d) for d in given["add_dirs"]]
    merged: dict[str, Any] = validate_options(options) if options is not None else {}
    tools = [*merged.pop("tools", []), *(given.pop("tools", None) or ())]
    merged.update(given)
    if tools:
        merged["tools"] = tools
    try:
        return SessionOptions(agent=agent, **merged)
    except TypeError as exc:
        raise ConfigError(f"session options: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise OptionsError(where, err["msg"], err.get("input")) from None


def check_structured_output(schema: dict[str, Any], result: Result) -> None:
    """Raise :class:`StructuredOutputError` unless ``result.structured_output`` matches
    ``schema`` (the CLI asks the model again on a mismatch; this is the host's own check, so
    a caller can rely on the shape)."""
    import jsonschema

    value = result.structured_output
    if value is None:
        raise StructuredOutputError("the turn ended without structured output "
                                    "(output_format is set)", result, ["missing"])
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(value)]
    if problems:
        raise StructuredOutputError("the structured output does not match output_format: "
                                    + "; ".join(problems[:5]), result, problems)


async def _finished(task: asyncio.Future[Any]) -> Any:
    """``await task``, but a cancel of the waiter does not reach the task: a claim taken back
    finishes its clean-up (its container removed, its Redis user gone) before the session
    goes on to close, however often the caller is cancelled meanwhile."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
        except BaseException:
            break
    if cancelled:
        task.cancelled() or task.exception()  # retrieved: no "never retrieved" warning
        raise asyncio.CancelledError
    return task.result()


async def ask_turn(events: AsyncIterator[Event], session_id: str, options: SessionOptions,
                   *, check: bool = True) -> Result:
    """The :class:`Result` of a turn's ``events`` (what every session's ``ask`` returns).

    With ``check`` a failed turn raises :class:`AgentError` (carrying the result), the CLI's
    own ``max_budget_usd`` limit :class:`BudgetExceeded`, and an answer that does not match
    ``json_schema`` :class:`~dockercc.errors.StructuredOutputError`. An interrupted turn
    returns its result, whoever interrupted it (this process, ``dockercc interrupt`` or a
    notebook's button): the CLI ends such a turn with ``error_during_execution`` and
    ``terminal_reason`` ``aborted_*`` and takes the next prompt, and claude-agent-sdk hands
    that ``ResultMessage`` back without raising; an interrupt is asked for, not a failure.
    """
    result: Result | None = None
    async for event in events:
        if isinstance(event, Result):
            result = event
    if result is None:
        raise AgentError(f"session {session_id!r} ended the turn without a result")
    if check and result.subtype == "error_max_budget_usd":
        # the CLI's own per-session limit (max_budget_usd) stopped the turn
        raise BudgetExceeded("session", result.cost_usd or 0.0, options.max_budget_usd or 0.0)
    if check and not result.ok and not result.interrupted:
        result.raise_for_error()
    if check and result.ok and options.json_schema is not None:
        # every provider's answer is checked the same way (StructuredOutputError)
        check_structured_output(options.json_schema, result)
    return result


def hooks_wire(hooks: dict[str, Any] | None) -> tuple[
        dict[str, list[dict[str, Any]]], dict[str, Callable[..., Any]]]:
    """The ``hooks`` of the CLI's initialize request (matchers with callback ids) and the
    callbacks by id."""
    fns: dict[str, Callable[..., Any]] = {}
    config: dict[str, list[dict[str, Any]]] = {}
    for event, matchers in (hooks or {}).items():
        for m in matchers:
            ids = []
            for fn in m.hooks:
                ids.append(hid := f"hook_{len(fns)}")
                fns[hid] = fn
            entry: dict[str, Any] = {"matcher": m.matcher, "hookCallbackIds": ids}
            if m.timeout is not None:
                entry["timeout"] = m.timeout
            config.setdefault(event, []).append(entry)
    return config, fns


async def run_hook(fns: dict[str, Callable[..., Any]], request: dict[str, Any],
                   where: str = "", *, timeout_s: float = PERMISSION_TIMEOUT_S
                   ) -> dict[str, Any]:
    """One hook callback on the CLI's ``hook_callback`` request; its output as the CLI reads
    it (``continue_`` / ``async_`` spelled as the CLI's keys)."""
    fn = fns.get(str(request.get("callback_id")))
    if fn is None:
        return {}
    data = request.get("input")
    try:
        async with asyncio.timeout(timeout_s):
            out = fn(data if isinstance(data, dict) else {}, request.get("tool_use_id"),
                     {"signal": None})
            if inspect.isawaitable(out):
                out = await out
    except TimeoutError:
        log.warning("hook %s of %s took longer than %gs (timeouts.permissionMs): skipped",
                    request.get("callback_id"), where, timeout_s)
        return {}
    except Exception as exc:  # noqa: BLE001 - a failing hook must not end the session
        log.warning("hook %s of %s raised %s", request.get("callback_id"), where,
                    type(exc).__name__)
        return {}
    if not isinstance(out, dict):
        return {}
    renamed = {"async_": "async", "continue_": "continue"}
    return {renamed.get(str(k), str(k)): v for k, v in out.items()}


async def decide_permission(approver: Any, request: dict[str, Any],
                            where: str = "", *, timeout_s: float = PERMISSION_TIMEOUT_S
                            ) -> dict[str, Any]:
    """An approver (``can_use_tool``) on one of the CLI's permission requests, as the CLI's
    decision (an error, a bad answer or no answer in time denies)."""
    from .types import PermissionResultAllow, PermissionResultDeny, ToolPermissionContext

    name = request.get("tool_name")
    tool_input = request.get("input")
    if not isinstance(name, str) or not isinstance(tool_input, dict):
        return {"behavior": "deny", "message": "malformed permission request"}
    if approver is None:
        return {"behavior": "deny", "message": "no approver for this session"}
    suggestions = request.get("permission_suggestions")
    ctx = ToolPermissionContext(suggestions=suggestions if isinstance(suggestions, list) else [])
    try:
        async with asyncio.timeout(timeout_s):
            answer = approver(name, dict(tool_input), ctx)
            if inspect.isawaitable(answer):
                answer = await answer
    except TimeoutError:
        return {"behavior": "deny",
                "message": f"the approver (can_use_tool) did not answer within {timeout_s:g}s "
                           "(timeouts.permissionMs): denied"}
    except Exception as exc:  # noqa: BLE001 - a failing approver denies, the turn goes on
        log.warning("can_use_tool for %s raised %s", where, type(exc).__name__)
        return {"behavior": "deny", "message": f"approver failed: {type(exc).__name__}"}
    if isinstance(answer, PermissionResultAllow):
        return {"behavior": "allow", "updatedInput": answer.updated_input
                if answer.updated_input is not None else tool_input}
    if isinstance(answer, PermissionResultDeny):
        out: dict[str, Any] = {"behavior": "deny", "message": answer.message or "denied"}
        if answer.interrupt:
            out["interrupt"] = True
        return out
    return {"behavior": "deny", "message": "the approver returned neither "
                                           "PermissionResultAllow nor PermissionResultDeny"}


def resolve_cli_args(o: SessionOptions, a: Any, *, model: str | None, resume: str | None,
                     mcp_server: str | None, default_permission_mode: str | None = None,
                     ) -> list[str]:
    """The CLI arguments of a session with options ``o`` and agent config ``a`` (the agent's
    values are the defaults). Pure; the Docker provider (and its warm-container matching)
    and the local-CLI provider both use it, so they cannot drift apart."""
    extra: list[str] = []
    for flag, value in (o.extra_args or {}).items():
        extra += [f"--{flag}"] if value is None else [f"--{flag}", value]
    return build_cli_args(
        model=model,
        system_prompt=o.system_prompt if o.system_prompt is not None else a.system_prompt,
        append_system_prompt=o.append_system_prompt or a.append_system_prompt,
        # with an approver the CLI's own default mode asks it (the sandbox default never asks)
        permission_mode=o.permission_mode or a.permission_mode or (
            None if o.can_use_tool is not None else default_permission_mode),
        permission_prompt_tool="stdio" if o.can_use_tool is not None else None,
        allowed_tools=o.allowed_tools if o.allowed_tools is not None else a.allowed_tools,
        disallowed_tools=(o.disallowed_tools if o.disallowed_tools is not None
                          else a.disallowed_tools),
        max_turns=o.max_turns or a.max_turns, resume=resume, mcp_server=mcp_server,
        include_partial_messages=o.include_partial_messages, extra_args=extra,
        fallback_model=o.fallback_model, max_budget_usd=o.max_budget_usd,
        json_schema=o.json_schema, fork_session=o.fork_session,
        setting_sources=o.setting_sources, thinking=o.thinking, effort=o.effort,
        agents=o.agents, mcp_servers=o.mcp_servers, base_tools=o.base_tools)


class AsyncSession:
    """One agent conversation. Use ``async with pool.session() as s`` or call :meth:`close`."""

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
        return session_registry([*self.pool.builtins.tools(self), *self.pool.tools],
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
        raise SessionClosed(f"nothing to resume: no session {resume!r} in Redis (closed "
                            f"sessions stay resumable for {RESUME_TTL_S // 86400} days)")

    async def start(self) -> AsyncSession:
        """Claim a container and hand it this session (done on first use anyway)."""
        # (its log lines, and those of the tasks it starts, e.g. the MCP relay, name it)
        with logs.bound(session=self.id):
            async with self._lock:
                with redis_errors_as_transport_errors(self.pool.transport.url):
                    await self._ensure_container()
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
        if not self._keys_checked:
            await self._check_new_id()
        if self.options.resume and self._resume_id is None:
            await self._resolve_resume(self.options.resume)
        elif self.claude_session_id is None:
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
        await self._register()
        try:
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
        except BaseException as exc:
            metrics.on_error(type(exc).__name__)
            with contextlib.suppress(Exception):
                await self.pool.transport.sessions.unregister(self.id)
            raise
        await self.pool.transport.sessions.set_state(self.id,
                                                     claimed_ms=f"{self.lease.claim_ms:.1f}")
        if self.workspace_mount is None and self.pool.config.docker.scratch_volumes:
            # the container's fresh scratch volume is this session's from now on: later
            # containers (after a loss, parking, resume=) mount it instead of their own
            volume = scratch_volume_name(self.lease.container)
            self.workspace_mount = WorkspaceMount("volume", volume, WORKSPACE)
            await self.pool.transport.sessions.keep_scratch(self.id, volume)

    # -- the workspace from the host (docs/workspaces.md) -----------------------------------

    @property
    def files(self) -> AsyncFiles:
        """The session's ``/workspace``: ``write``, ``read``, ``list``, ``upload``,
        ``download``, ``remove`` (see :class:`dockercc.files.AsyncFiles`)."""
        if self._files is None:
            self._files = AsyncFiles(self)
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
        return await run_command(self, cmd, timeout=timeout, cwd=cwd, env=env, on_output=None)

    async def run_stream(self, cmd: str | list[str], *, timeout: float = 60, cwd: str = "",
                         env: dict[str, str] | None = None, concurrent: bool = False,
                         turn_timeout: float | None = None
                         ) -> AsyncIterator[tuple[str, bytes]]:
        """:meth:`run` as it prints: ``("stdout"|"stderr", bytes)`` pieces, then
        ``("exit", b"<code>")``."""
        await self._wait_turn(timeout if turn_timeout is None else turn_timeout, concurrent)
        async for item in stream_command(self, cmd, timeout=timeout, cwd=cwd, env=env):
            yield item

    async def _check_new_id(self) -> None:
        """A new session (not ``resume=``) must not find keys of its id: they would be a
        closed session's or planted ones (a transcript, a Claude session id to resume)."""
        if not self.options.resume:
            if await self.pool.transport.sessions.has_keys(self.id):
                raise SessionExists(
                    f"session id {self.id!r} already has keys in Redis (a closed session's?): "
                    f"continue it with pool.session(resume={self.id!r}) or use another id")
        self._keys_checked = True

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

    async def _register(self) -> None:
        record = {"agent": self.agent, "owner": self.pool.containers.owner,
                  "tenant": self.pool.tenant,
                  "created": now_ms(), "parent": self.options.parent or ""}
        # the state outlives the registry entry (closed sessions stay readable): the
        # built-in tools find the session's tenant there once it is closed
        await self.pool.transport.sessions.register(self.id, record, self.pool.tenant)

    @property
    def keys(self) -> Any:
        return self.pool.transport.keys(self.id)

    # -- MCP relay -------------------------------------------------------------------------

    async def _relay_loop(self) -> None:
        """Answer the CLI's MCP messages (relayed by the runner) with the host bridge."""
        relay = self.pool.transport.sessions.mcp_relay(self.id)
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    item = await relay.next_request(timeout=1)
                except (OSError, ConnectionError, TransportError) as exc:
                    log.warning("MCP relay for %s: %s", self.id, exc)
                    await asyncio.sleep(0.5)
                    continue
                except Exception as exc:  # redis errors
                    log.warning("MCP relay for %s: %s", self.id, exc)
                    await asyncio.sleep(0.5)
                    continue
                if item is None:
                    continue
                task = asyncio.create_task(self._answer(relay, item))
                pending.add(task)
                task.add_done_callback(pending.discard)
        finally:
            for task in pending:
                task.cancel()
            await relay.aclose()

    async def _answer(self, relay: McpRelay, raw: Any) -> None:
        try:
            req = bounded.loads_object(raw, max_bytes=bounded.MAX_MESSAGE_BYTES,
                                       what="MCP request")
            request_id = req["request_id"]
            message = req.get("message") or {}
            if not isinstance(request_id, str) or not _REQUEST_ID_RE.fullmatch(request_id) \
                    or not isinstance(message, dict):
                raise BadData("MCP request: bad request_id or message")
        except (BadData, KeyError) as exc:
            log.warning("MCP request for %s dropped: %s", self.id, exc)
            return
        # host tools run with the host's power: answer only the container holding this
        # session's current lease (it alone got the lease token, through its own assignment)
        token, container = req.get("lease_token"), req.get("container")
        lease = self.lease
        if (not self._lease_token or not isinstance(token, str)
                or not secrets.compare_digest(token, self._lease_token)
                or (lease is not None and container != lease.container)):
            log.warning("MCP request for %s dropped: not from the session's current container",
                        self.id)
            return
        request = req.get("request")
        if req.get("kind") == "permission":
            reply: Any = await self._decide(request if isinstance(request, dict) else {})
        elif req.get("kind") == "hook":
            reply = await self._run_hook(request if isinstance(request, dict) else {})
        else:
            assert self._bridge is not None
            call = message.get("method") == "tools/call"
            t0 = time.perf_counter()
            with tracing.tool_span(self._trace, req, self.id) as span:
                reply = await self._bridge.handle(message)
                outcome = reply.get("result")
                failed = "error" in reply or (isinstance(outcome, dict)
                                              and bool(outcome.get("isError")))
                if span is not None and failed:
                    span.set_status(
                        tracing.otel_trace.Status(tracing.otel_trace.StatusCode.ERROR))
            if call:
                params = message.get("params")
                name = params.get("name") if isinstance(params, dict) else None
                # the name comes from the container: only the session's own tools become
                # labels (any other string would grow the metric without bound)
                metrics.on_tool_call(name if isinstance(name, str) and name in self._tools
                                     else "unknown", time.perf_counter() - t0, not failed)
        await relay.reply(request_id, reply)

    async def _run_hook(self, request: dict[str, Any]) -> dict[str, Any]:
        return await run_hook(self._hook_fns, request, self.id,
                              timeout_s=self.pool.config.timeouts.permission_ms / 1000)

    async def _decide(self, request: dict[str, Any]) -> dict[str, Any]:
        return await decide_permission(self.options.can_use_tool, request, self.id,
                                       timeout_s=self.pool.config.timeouts.permission_ms / 1000)

    # -- conversation ----------------------------------------------------------------------

    async def send(self, prompt: str | list[dict[str, Any]]) -> str:
        """Queue a prompt (text or content blocks); returns the input id. Read the reply with
        :meth:`receive`: the session's output is subscribed before the prompt goes out, so
        :meth:`receive` gets every event of the turn however late it starts."""
        control.check_prompt(prompt)
        line = control.user_message(prompt)
        if len(line) > self.pool.max_prompt_bytes:
            raise InvalidPrompt(f"the prompt is {len(line)} bytes; the limit is "
                                f"{self.pool.max_prompt_bytes} (max_prompt_bytes)")
        with logs.bound(session=self.id):
            return await self._send_locked(line)

    async def _send_locked(self, line: str) -> str:
        async with self._lock:
            self._turn_t0 = time.perf_counter()
            self._end_trace(outcome="abandoned")  # a turn sent before was never read to its end
            self._trace = tracing.TurnTrace.start(self.id, self.agent)
            with redis_errors_as_transport_errors(self.pool.transport.url):
                gate = self.pool.first_turns
                try:
                    await self._check_budget()
                    if self.lease is None and gate.enabled:
                        # a new session's first turn: in arrival order under a burst
                        await gate.acquire(self.id)
                    input_id = await self._send_line(line)
                except BaseException:
                    gate.release(self.id)
                    self._end_trace(outcome="send_failed")
                    await self._release_hold()
                    raise
                self._turn_open = True
                return input_id

    async def _check_budget(self) -> None:
        """Admit the turn under the pool's and the agent's budgets, or refuse it with
        :class:`BudgetExceeded`: one atomic step across every process sharing the Redis
        (the ledger's spend plus the turns admitted but not settled yet; see
        :mod:`dockercc.budget`). The admitted turn holds its place until its Result settles
        it."""
        cfg = self.pool.config
        if cfg.budget.usd is None and self.agent_config.budget.usd is None:
            return
        await self._release_hold()  # a turn sent before and never read to its end
        hold = f"{self.id}:{uuid.uuid4().hex[:12]}"
        if await budget.admit(self.pool.containers, cfg, self.agent, hold):
            self._hold = hold

    async def _release_hold(self) -> None:
        """The turn ends without a cost to record (lost, never sent, session closed)."""
        hold, self._hold = self._hold, None
        if hold is not None:
            try:
                await budget.settle(self.pool.containers, hold)
            except Exception as exc:  # noqa: BLE001 - it expires with our heartbeat anyway
                log.warning("could not release the budget hold of %s: %s", self.id, exc)

    async def _record_cost(self, result: Result) -> None:
        """Settle the turn under the budgets: its hold goes and its cost enters the shared
        ledger, once (keyed by session and seq), in one step. Only where a budget is
        configured: without one nobody reads the ledger, and a pool without budgets leaves
        no ledger keys behind."""
        hold, self._hold = self._hold, None
        if not budget.configured(self.pool.config):
            return
        try:
            await budget.settle(self.pool.containers, hold or "", self.id, result.seq,
                                self.agent, result.cost_usd)
        except Exception as exc:  # noqa: BLE001 - the turn itself succeeded
            log.warning("could not record the cost of %s: %s", self.id, exc)

    async def _send_line(self, line: str) -> str:
        """Subscribe to the output, queue ``line`` and claim a container, overlapped.

        The prompt goes out only once the subscription (and its replay position) is up: a
        reader that subscribed after sending could find a fast turn's first events already
        pushed out of the 1000-envelope buffer. It goes out *before* the claim has finished:
        the input list is the session's, and the runner reads it as soon as it has taken the
        session, so a warm container's CLI starts on the prompt while the claim is still
        being confirmed here. If the claim fails, the prompt is taken back (no runner has
        it) and the error raised; nothing of it stays queued.
        """
        t = self.pool.transport
        subscribing = (None if self._subscription is not None
                       else asyncio.ensure_future(t.subscribe(self.id, self.last_seq)))
        claiming = asyncio.ensure_future(self._ensure_container())
        input_id: str | None = None
        try:
            if subscribing is not None:
                self._subscription = await subscribing
            input_id = await t.send_input(
                self.id, line, traceparent=self._trace.traceparent if self._trace else "")
            await claiming
        except BaseException:
            for task in (subscribing, claiming):
                if task is not None and not task.done():
                    task.cancel()
            for task in (subscribing, claiming):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        result = await _finished(task)
                        if task is subscribing and self._subscription is None:
                            await result.aclose()  # type: ignore[union-attr]
            if input_id is not None:
                with contextlib.suppress(Exception):
                    await t.withdraw_input(self.id, input_id)
            await self._drop_subscription()
            raise
        return input_id

    async def _drop_subscription(self) -> None:
        sub, self._subscription = self._subscription, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.aclose()

    async def receive(self, *, timeout: float | None = None) -> AsyncIterator[Event]:
        """Events of the current turn, up to and including its :class:`Result`.

        Raises :class:`ContainerLost` if the container dies mid-turn (the next prompt
        resumes in a new one) and ``TimeoutError`` after ``timeout`` seconds.
        """
        # the subscription send() made before its prompt went out, else a new one (a reader
        # of a turn it did not send)
        stream = self._subscription or self.pool.transport.events(self.id, self.last_seq)
        self._subscription = None
        # one timer for the whole turn, not one per event: this loop is hot
        deadline = _Deadline(timeout)
        mapper = self.mapper
        waiting = ""  # why the turn waits (the API unreachable, retrying), for the timeout
        # counted here, added to the metrics once per turn: this loop is hot
        deltas = 0
        counts: dict[str, int] = {}
        trace = self._trace
        gate = self.pool.first_turns
        gated = gate.holds(self.id)
        try:
            while True:
                try:
                    envelope = await deadline.next(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self._turn_done(None, "timeout")
                    raise TimeoutError(
                        f"no result from session {self.id!r} within {timeout}s"
                        + (f"; it was waiting: {waiting}" if waiting else "")) from None
                seq = envelope.seq
                if seq <= self.last_seq:
                    continue  # (a subscription opened before last_seq moved on)
                self.last_seq = seq
                if trace is not None:
                    trace.envelope(envelope.ts, self.lease.container if self.lease else None)
                callbacks = self.on_event is not None or self.pool.on_event is not None
                for event in mapper.map(envelope):
                    if gated and not isinstance(event, SystemInit | SystemStatus):
                        gated = False  # the model answers: the CLI's start-up work is done
                        gate.release(self.id)
                    if callbacks:
                        await self._dispatch(event)
                    if type(event) is TextDelta:  # most events: nothing else to check
                        deltas += 1
                        if deltas == 1 and self._turn_t0 is not None:
                            metrics.on_first_token(self.agent,
                                                   time.perf_counter() - self._turn_t0)
                        yield event
                        continue
                    if isinstance(event, ApiRetry | ApiUnreachable):
                        waiting = event.message
                    counts[event.type] = counts.get(event.type, 0) + 1
                    if isinstance(event, ErrorEvent) and not event.restart:
                        self._turn_open = False
                        self._turn_done(None, "lost", error=event.error or "container_lost")
                        await self._release_hold()
                        raise ContainerLost(event.message or f"session {self.id}: {event.error}")
                    if (isinstance(event, ErrorEvent) and self._turn_open
                            and event.raw.get("turn_lost") is not False):
                        # (a CLI that died before it took this turn's prompt loses nothing:
                        # the restarted one gets the prompt)
                        self._turn_open = False
                        self._turn_done(None, "cli_died", error=event.error or "cli_exited")
                        await self._release_hold()
                        raise CLIDied(
                            f"the CLI of session {self.id!r} died mid-turn and was restarted; "
                            f"the turn was lost: {event.message}",
                            exit_code=event.exit_code, reason=event.reason)
                    if isinstance(event, Result):
                        # before the yield: a consumer that stops at the Result never
                        # resumes this generator
                        self._turn_open = False
                        if event.session_id:
                            self.claude_session_id = event.session_id
                        self._turn_done(event, "ok" if event.ok else "interrupted"
                                        if event.interrupted else "error")
                        await self._record_cost(event)
                        yield event
                        return
                    yield event
        finally:
            if gated:
                gate.release(self.id)
            deadline.cancel()
            if deltas:
                counts["text_delta"] = deltas
            metrics.on_events(self.agent, counts)
            # (not kept for the next turn: an idle subscription would pile up whatever is
            # published meanwhile, for the next reader to wade through)
            await stream.aclose()

    def _turn_done(self, result: Result | None, outcome: str, *, error: str = "") -> None:
        """The turn ended (a result, a loss, a timeout): its metrics and spans."""
        seconds = None if self._turn_t0 is None else time.perf_counter() - self._turn_t0
        self._turn_t0 = None
        if error:
            metrics.on_error(metrics.runner_error(error))
        elif outcome == "timeout":
            metrics.on_error("timeout")
        elif result is not None and not result.ok and not result.interrupted:
            metrics.on_error(metrics.result_error(result.subtype))
        metrics.on_turn(self.agent, seconds, outcome,
                        cost_usd=result.cost_usd if result is not None else None,
                        usage=result.usage if result is not None else None)
        self._end_trace(result=result, outcome=outcome)

    def _end_trace(self, *, result: Result | None = None, outcome: str = "ok") -> None:
        trace, self._trace = self._trace, None
        if trace is None:
            return
        attrs: dict[str, Any] = {}
        if result is not None:
            attrs = {"dockercc.cost_usd": result.cost_usd, "dockercc.subtype": result.subtype,
                     "dockercc.num_turns": result.num_turns, "dockercc.model": result.model}
        with contextlib.suppress(Exception):  # tracing never breaks a turn
            trace.end(result_ts_ms=result.ts if result is not None else 0, outcome=outcome,
                      attributes=attrs)

    async def _dispatch(self, event: Event) -> None:
        for cb in (self.on_event, self.pool.on_event):
            if cb is None:
                continue
            try:
                res = cb(event)
                if asyncio.iscoroutine(res):
                    await res
            except Exception:
                log.exception("on_event callback failed", extra={"session": self.id})

    async def stream(self, prompt: str | list[dict[str, Any]], *,
                     timeout: float | None = None) -> AsyncIterator[Event]:
        """Send ``prompt`` and yield the turn's events, ending with its :class:`Result`."""
        await self.send(prompt)
        async for event in self.receive(timeout=timeout):
            yield event

    async def ask(self, prompt: str | list[dict[str, Any]], *, timeout: float | None = None,
                  check: bool = True) -> Result:
        """Send ``prompt`` and return the turn's :class:`Result` (see :func:`ask_turn`)."""
        return await ask_turn(self.stream(prompt, timeout=timeout), self.id, self.options,
                              check=check)

    async def interrupt(self) -> None:
        """Stop the current turn; the session stays usable."""
        if self.lease is not None:
            await self.pool.transport.send_control(self.id, "interrupt",
                                                   request_id=control.new_request_id())

    async def set_model(self, model: str | None) -> None:
        """Change the model from the next turn on (``None``: the agent's / CLI's default);
        queued after any prompt already sent, so it applies in order."""
        if model is not None and (not isinstance(model, str) or not model):
            raise OptionsError("model", f"expected a non-empty string or None, got {model!r}")
        await self._control_line("set_model", model=model)
        self.options.model = model  # a new container's CLI starts with it

    async def set_permission_mode(self, mode: str) -> None:
        """Change the CLI's permission mode from the next tool call on."""
        from .types import PERMISSION_MODES

        if mode not in PERMISSION_MODES:
            raise OptionsError("permission_mode", f"unknown mode {mode!r}", mode)
        await self._control_line("set_permission_mode", mode=mode)
        self.options.permission_mode = mode

    async def _control_line(self, subtype: str, **fields: Any) -> None:
        # through the input list, not the control channel: it must reach the CLI after the
        # prompts sent before it and before those sent after it
        if self.closed:
            raise SessionClosed(f"session {self.id!r} is closed")
        if self.lease is None:
            return  # no CLI yet: the options are its arguments when it starts
        with redis_errors_as_transport_errors(self.pool.transport.url):
            await self.pool.transport.send_input(
                self.id, control.control_request(control.new_request_id(), subtype, **fields))

    async def drain(self, timeout: float = 10) -> Result | None:
        """Read the current turn to its end (after an interrupt); None if it did not end."""
        if not self._turn_open:
            return None
        result = None
        with contextlib.suppress(TimeoutError, ContainerLost):
            async for event in self.receive(timeout=timeout):
                if isinstance(event, Result):
                    result = event
        return result

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

    async def close(self, *, forget: bool = False) -> None:
        """Stop the agent and remove its container. The conversation stays resumable
        (``pool.session(resume=id)``) for 7 days unless ``forget``."""
        if self.closed:
            return
        self.closed = True
        self.pool.first_turns.release(self.id)
        self._end_trace(outcome="closed")
        await self._release_hold()
        with contextlib.suppress(Exception):
            await self.pool.builtins.on_session_close(self)  # closes the sessions it spawned
        t = self.pool.transport
        await self._drop_subscription()
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(BaseException):
                await self._relay
        if self._bridge is not None:
            with contextlib.suppress(Exception):
                await self._bridge.aclose()
        try:
            if self.lease is not None:
                with contextlib.suppress(Exception):
                    # stopping it on purpose: the health monitor must not report a loss (it
                    # would write an error event after the keys below are gone)
                    await self.pool.containers.retiring(self.lease.container)
                    await t.send_control(self.id, "stop")
                    await self._wait_stopped(3.0)
                await self.pool.containers.release(self.lease.container)
                self.lease = None
            await self._refresh_claude_id()
            await t.sessions.unregister(self.id)
            self._check_workspace()
            if forget:
                await self._drop_scratch()
                await t.delete_session(self.id)
                if self.claude_session_id:
                    await t.sessions.forget_claude_id(self.claude_session_id)
                return
            await self.pool.containers.end_session(self.id, self.claude_session_id or "")
        finally:
            self.pool._forget(self)

    async def _drop_scratch(self) -> None:
        """A deleted session's scratch volume goes with it."""
        m = self.workspace_mount
        if m is None or m.kind != "volume" or not m.source.startswith("dockercc-ws-"):
            return
        with contextlib.suppress(Exception):
            await self.pool.containers.backend.remove_volume(m.source)
            await self.pool.transport.sessions.drop_scratch(m.source)

    async def _wait_stopped(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await self.pool.transport.sessions.state_field(self.id, "status")
            if status in ("stopped", "failed", "lost"):
                return
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> AsyncSession:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def tools_digest(tools: list[dict[str, Any]]) -> str:
    """A short digest of MCP tool definitions (a warm CLI's tools vs a session's)."""
    blob = json.dumps(tools, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_prestart(pool: AsyncPool, agent: str = "main") -> dict[str, Any]:
    """The pre-start of ``agent``'s warm containers: a default session's arguments and tools
    (the session object is only built, never started)."""
    return AsyncSession(pool, SessionOptions(agent=agent)).prestart()


class _Deadline:
    """A receive()'s timeout: one timer, which cancels the task only while it waits for the
    next envelope (``asyncio.timeout`` per event costs a timer each, at thousands a second)."""

    def __init__(self, timeout: float | None) -> None:
        self.fired = False
        self._waiting: asyncio.Task[Any] | None = None
        self._timer = (None if timeout is None else
                       asyncio.get_running_loop().call_later(max(0.0, timeout), self._expire))

    def _expire(self) -> None:
        self.fired = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def next(self, stream: AsyncIterator[Envelope]) -> Envelope:
        if self.fired:
            raise TimeoutError
        task = asyncio.current_task()
        self._waiting = task
        try:
            return await anext(stream)
        except asyncio.CancelledError:
            if self.fired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
