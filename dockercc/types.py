"""claude-agent-sdk's option and permission types, for dockercc.

A script moves from claude-agent-sdk by changing its import::

    from dockercc import ClaudeAgentOptions, query, tool, create_sdk_mcp_server

The field names and meanings are claude-agent-sdk's (``ClaudeAgentOptions``); where dockercc
differs it is because the CLI runs in a container that an agent config describes:

- a field left at ``None`` takes the agent config's value (``system_prompt=None`` is the
  agent's prompt, not the SDK's empty one);
- ``include_partial_messages=None`` keeps dockercc's default (on: the stream view and the warm
  containers' pre-started CLI use it);
- ``cwd`` is the host directory mounted as the session's workspace;
- an SDK server from :func:`create_sdk_mcp_server` is served by the session's host bridge
  (its tools are offered as ``mcp__host__<tool>``; ``mcp__<server>__<tool>`` in
  ``allowed_tools`` / ``disallowed_tools`` is rewritten to that name).

Options are checked once, by :func:`validate_options`, with a :class:`OptionsError` naming the
field. Resolution to the CLI's arguments is pure (no I/O): see
:func:`dockercc.session.resolve_cli_args`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

PermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions", "dontAsk",
                         "auto"]
PERMISSION_MODES = frozenset(PermissionMode.__args__)  # type: ignore[attr-defined]
EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
SETTING_SOURCES = frozenset({"user", "project", "local"})
HOOK_EVENTS = frozenset({"PreToolUse", "PostToolUse", "UserPromptSubmit", "Stop",
                         "SubagentStop", "PreCompact", "Notification"})


class OptionsError(ConfigError):
    """A session option is invalid; ``field`` names it (``str(err)`` starts with it)."""

    def __init__(self, field_name: str, message: str, value: Any = None) -> None:
        super().__init__(f"{field_name}: {message}", [(field_name, value, message)])
        self.field = field_name


# -- permission types (the SDK's) ------------------------------------------------------------


@dataclass
class PermissionResultAllow:
    """Allow the tool call, optionally with a changed input."""

    behavior: Literal["allow"] = "allow"
    updated_input: dict[str, Any] | None = None
    updated_permissions: list[Any] | None = None


@dataclass
class PermissionResultDeny:
    """Deny the tool call; ``message`` is what the model reads."""

    behavior: Literal["deny"] = "deny"
    message: str = ""
    interrupt: bool = False


PermissionResult = PermissionResultAllow | PermissionResultDeny


@dataclass
class ToolPermissionContext:
    """What the CLI says about a permission request besides the tool and its input."""

    signal: Any | None = None
    suggestions: list[Any] = field(default_factory=list)


CanUseTool = Callable[[str, dict[str, Any], ToolPermissionContext],
                      Awaitable[PermissionResult] | PermissionResult]


@dataclass
class HookMatcher:
    """Hooks for one event, for tools whose name matches ``matcher`` (``None``: every tool)."""

    matcher: str | None = None
    hooks: list[Callable[..., Any]] = field(default_factory=list)
    timeout: float | None = None


@dataclass
class AgentDefinition:
    """A subagent the main agent may delegate to (claude-agent-sdk's, same field names)."""

    description: str
    prompt: str
    tools: list[str] | None = None
    disallowedTools: list[str] | None = None  # noqa: N815 - the CLI's (and SDK's) spelling
    model: str | None = None
    maxTurns: int | None = None  # noqa: N815


# -- SDK MCP servers -------------------------------------------------------------------------


def create_sdk_mcp_server(name: str, version: str = "1.0.0",
                          tools: Sequence[Any] | None = None) -> dict[str, Any]:
    """An in-process MCP server from ``@tool`` functions, as claude-agent-sdk's (use it in
    ``mcp_servers={name: server}``). dockercc serves the tools from the session's host bridge
    (they run in this Python process, not in the container)."""
    from .bridge import Tool

    items = []
    for t in tools or ():
        items.append(t if isinstance(t, Tool) else Tool.from_function(t))
    return {"type": "sdk", "name": name, "version": version, "tools": items}


# -- the options object ----------------------------------------------------------------------


@dataclass
class ClaudeAgentOptions:
    """claude-agent-sdk's ``ClaudeAgentOptions`` (same names and meanings; see the module)."""

    tools: list[str] | dict[str, Any] | None = None
    allowed_tools: list[str] = field(default_factory=list)
    system_prompt: str | dict[str, Any] | None = None
    mcp_servers: dict[str, Any] = field(default_factory=dict)
    permission_mode: str | None = None
    continue_conversation: bool = False
    resume: str | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    disallowed_tools: list[str] = field(default_factory=list)
    model: str | None = None
    fallback_model: str | None = None
    cwd: str | Path | None = None
    add_dirs: list[str | Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    extra_args: dict[str, str | None] = field(default_factory=dict)
    can_use_tool: CanUseTool | None = None
    hooks: dict[str, list[HookMatcher]] | None = None
    include_partial_messages: bool | None = None
    fork_session: bool = False
    agents: dict[str, Any] | None = None
    setting_sources: list[str] | None = None
    max_thinking_tokens: int | None = None
    thinking: dict[str, Any] | None = None
    effort: str | None = None
    output_format: dict[str, Any] | None = None


def _str_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(v, str) for v in value):
        raise OptionsError(name, f"expected a list of strings, got {value!r}", value)
    return list(value)


def _plain(value: Any) -> Any:
    """An agent definition (the SDK's ``AgentDefinition`` dataclass or a dict) as JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    return value


def validate_options(options: ClaudeAgentOptions) -> dict[str, Any]:
    """Check ``options`` once; return the session keyword arguments they stand for.

    Raises :class:`OptionsError` naming the first bad field.
    """
    o = options
    if not isinstance(o, ClaudeAgentOptions):
        raise OptionsError("options", f"expected dockercc.ClaudeAgentOptions, got "
                                      f"{type(o).__name__}", o)
    out: dict[str, Any] = {}
    if o.can_use_tool is not None:
        if not callable(o.can_use_tool):
            raise OptionsError("can_use_tool", "expected a callable (tool_name, input, "
                                               "context)", o.can_use_tool)
        if o.permission_mode == "bypassPermissions":
            raise OptionsError("can_use_tool", "bypassPermissions never asks the approver")
        out["can_use_tool"] = o.can_use_tool
    if o.hooks:
        if not isinstance(o.hooks, Mapping):
            raise OptionsError("hooks", "expected a dict of event name -> [HookMatcher]")
        for event, matchers in o.hooks.items():
            if event not in HOOK_EVENTS:
                raise OptionsError(f"hooks.{event}", f"unknown hook event (one of "
                                                     f"{', '.join(sorted(HOOK_EVENTS))})")
            if not isinstance(matchers, Sequence) or not all(
                    isinstance(m, HookMatcher) and all(callable(h) for h in m.hooks)
                    for m in matchers):
                raise OptionsError(f"hooks.{event}", "expected a list of HookMatcher with "
                                                     "callable hooks")
        out["hooks"] = {k: list(v) for k, v in o.hooks.items()}
    if o.continue_conversation:
        raise OptionsError("continue_conversation", "not supported: pass resume=<session id>")
    if o.add_dirs:
        if isinstance(o.add_dirs, str | Path) or not isinstance(o.add_dirs, Sequence):
            raise OptionsError("add_dirs", "expected a list of host folders", o.add_dirs)
        # more host folders, read-only unless ":rw" (see docs/workspaces.md)
        out["add_dirs"] = [str(Path(d).resolve()) if not str(d).endswith((":ro", ":rw"))
                           else str(d) for d in o.add_dirs]
    # system prompt: a string replaces, the preset with "append" appends
    sp = o.system_prompt
    if isinstance(sp, str):
        out["system_prompt"] = sp
    elif isinstance(sp, Mapping):
        kind = sp.get("type")
        if kind == "preset":
            if sp.get("preset", "claude_code") != "claude_code":
                raise OptionsError("system_prompt", f"unknown preset {sp.get('preset')!r}", sp)
            if sp.get("append") is not None:
                if not isinstance(sp["append"], str):
                    raise OptionsError("system_prompt", "append must be a string", sp)
                out["append_system_prompt"] = sp["append"]
        elif kind == "custom" and isinstance(sp.get("prompt"), str):
            out["system_prompt"] = sp["prompt"]
        else:
            raise OptionsError("system_prompt", "expected a string or {'type': 'preset', "
                                                "'preset': 'claude_code', 'append': ...}", sp)
    elif sp is not None:
        raise OptionsError("system_prompt", f"expected a string or a dict, got {sp!r}", sp)
    if o.tools is not None:
        if isinstance(o.tools, Mapping):
            if o.tools.get("type") != "preset":
                raise OptionsError("tools", "expected a list of tool names or a preset", o.tools)
            out["base_tools"] = ["default"]
        else:
            out["base_tools"] = _str_list("tools", o.tools)
    if o.permission_mode is not None:
        if o.permission_mode not in PERMISSION_MODES:
            raise OptionsError("permission_mode", f"unknown mode {o.permission_mode!r} (one of "
                                                  f"{', '.join(sorted(PERMISSION_MODES))})",
                               o.permission_mode)
        out["permission_mode"] = o.permission_mode
    for name in ("max_turns", "max_thinking_tokens"):
        value = getattr(o, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value <= 0):
            raise OptionsError(name, f"expected a positive integer, got {value!r}", value)
    if o.max_turns is not None:
        out["max_turns"] = o.max_turns
    if o.max_budget_usd is not None:
        b = o.max_budget_usd
        if isinstance(b, bool) or not isinstance(b, int | float) or not b > 0:
            raise OptionsError("max_budget_usd", f"expected a positive number, got {b!r}", b)
        out["max_budget_usd"] = float(b)
    for name in ("model", "fallback_model", "resume"):
        value = getattr(o, name)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise OptionsError(name, f"expected a non-empty string, got {value!r}", value)
            out[name] = value
    if o.fork_session:
        if not o.resume:
            raise OptionsError("fork_session", "needs resume=<session id>")
        out["fork_session"] = True
    # allowed / disallowed tools, with SDK server names mapped to the host bridge's
    sdk_names: list[str] = []
    host_tools: list[Any] = []
    external: dict[str, Any] = {}
    if not isinstance(o.mcp_servers, Mapping):
        raise OptionsError("mcp_servers", "expected a dict of server name -> config "
                                          "(a path or JSON string is not supported)",
                           o.mcp_servers)
    for name, cfg in o.mcp_servers.items():
        if not isinstance(cfg, Mapping):
            raise OptionsError(f"mcp_servers.{name}", "expected a server config dict", cfg)
        kind = cfg.get("type", "stdio")
        if kind == "sdk":
            if "tools" not in cfg:
                raise OptionsError(f"mcp_servers.{name}", "an SDK server must come from "
                                                          "dockercc.create_sdk_mcp_server", None)
            sdk_names.append(name)
            host_tools.extend(cfg["tools"])
        elif kind == "stdio":
            if not isinstance(cfg.get("command"), str):
                raise OptionsError(f"mcp_servers.{name}", "a stdio server needs 'command'", None)
            external[name] = dict(cfg)
        elif kind in ("http", "sse"):
            if not isinstance(cfg.get("url"), str):
                raise OptionsError(f"mcp_servers.{name}", f"an {kind} server needs 'url'", None)
            external[name] = dict(cfg)
        else:
            raise OptionsError(f"mcp_servers.{name}", f"unknown server type {kind!r}", kind)
        if name == "host":
            raise OptionsError(f"mcp_servers.{name}", "the name 'host' is dockercc's bridge")
    try:
        json.dumps(external)
    except (TypeError, ValueError) as exc:
        raise OptionsError("mcp_servers", f"not JSON: {exc}") from None
    if host_tools:
        out["tools"] = host_tools
    if external:
        out["mcp_servers"] = external

    def rename(tool_name: str) -> str:
        for server in sdk_names:
            prefix = f"mcp__{server}__"
            if tool_name.startswith(prefix):
                return "mcp__host__" + tool_name[len(prefix):]
        return tool_name

    if o.allowed_tools:
        out["allowed_tools"] = [rename(t) for t in _str_list("allowed_tools", o.allowed_tools)]
    if o.disallowed_tools:
        out["disallowed_tools"] = [rename(t) for t in
                                   _str_list("disallowed_tools", o.disallowed_tools)]
    if o.cwd is not None:
        out["workspace"] = str(Path(o.cwd).resolve())
    if not isinstance(o.env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in o.env.items()):
        raise OptionsError("env", "expected a dict of strings")
    if o.env:
        out["env"] = dict(o.env)
    if not isinstance(o.extra_args, Mapping):
        raise OptionsError("extra_args", "expected a dict of flag -> value or None")
    if o.extra_args:
        for flag, value in o.extra_args.items():
            if not isinstance(flag, str) or not flag or flag.startswith("-"):
                raise OptionsError("extra_args", f"flag names come without dashes: {flag!r}",
                                   flag)
            if value is not None and not isinstance(value, str):
                raise OptionsError(f"extra_args.{flag}", "expected a string or None", value)
        out["extra_args"] = dict(o.extra_args)
    if o.include_partial_messages is not None:
        out["include_partial_messages"] = bool(o.include_partial_messages)
    if o.agents is not None:
        if not isinstance(o.agents, Mapping):
            raise OptionsError("agents", "expected a dict of name -> agent definition")
        agents = {}
        for name, definition in o.agents.items():
            d = _plain(definition)
            if not isinstance(d, Mapping) or not isinstance(d.get("description"), str) or \
                    not isinstance(d.get("prompt"), str):
                raise OptionsError(f"agents.{name}", "needs 'description' and 'prompt'", None)
            agents[name] = dict(d)
        out["agents"] = agents
    if o.setting_sources is not None:
        sources = _str_list("setting_sources", o.setting_sources)
        bad = [s for s in sources if s not in SETTING_SOURCES]
        if bad:
            raise OptionsError("setting_sources", f"unknown source(s) {bad!r}", bad)
        out["setting_sources"] = sources
    if o.thinking is not None:
        t = o.thinking
        if not isinstance(t, Mapping) or t.get("type") not in ("adaptive", "enabled",
                                                                "disabled"):
            raise OptionsError("thinking", "expected {'type': 'adaptive' | 'enabled' | "
                                           "'disabled', ...}", t)
        if t["type"] == "enabled" and not (isinstance(t.get("budget_tokens"), int)
                                           and t["budget_tokens"] > 0):
            raise OptionsError("thinking", "'enabled' needs a positive budget_tokens", t)
        out["thinking"] = dict(t)
    elif o.max_thinking_tokens is not None:
        out["thinking"] = {"type": "enabled", "budget_tokens": o.max_thinking_tokens}
    if o.effort is not None:
        if o.effort not in EFFORTS:
            raise OptionsError("effort", f"one of {', '.join(sorted(EFFORTS))}", o.effort)
        out["effort"] = o.effort
    if o.output_format is not None:
        f = o.output_format
        if not isinstance(f, Mapping) or f.get("type") != "json_schema" or not isinstance(
                f.get("schema"), Mapping):
            raise OptionsError("output_format", "expected {'type': 'json_schema', 'schema': "
                                                "{...}}", f)
        out["json_schema"] = dict(f["schema"])
    return out


__all__ = [
    "AgentDefinition",
    "CanUseTool",
    "ClaudeAgentOptions",
    "HookMatcher",
    "OptionsError",
    "PermissionMode",
    "PermissionResult",
    "PermissionResultAllow",
    "PermissionResultDeny",
    "ToolPermissionContext",
    "create_sdk_mcp_server",
    "validate_options",
]
