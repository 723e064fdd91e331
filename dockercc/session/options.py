"""A session's options: :class:`SessionOptions`, the one merge of an agent's options with a
call's (:func:`session_options`), the CLI arguments they resolve to (:func:`resolve_cli_args`)
and the hooks' wiring (:func:`hooks_wire`)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import (
    ConfigError,
)
from ..events import (
    Event,
)
from ..protocol.cli import (
    build_cli_args,
)
from ..types import OptionsError

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

    from ..types import ClaudeAgentOptions, validate_options

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
