"""System tools: ``agents_list`` and ``config_get`` (secrets always redacted)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from ..bridge import Tool
from ..config import AgentConfig
from ..redaction import redact
from ._base import BuiltinToolError, ToolContext, builtin, clip, to_json

__all__ = ["config_tools"]

PROMPT_CHARS = 300


def agent_view(name: str, agent: AgentConfig, tools: list[str]) -> dict[str, Any]:
    """What ``agents_list`` says about one agent: no secrets (env values never appear)."""
    out: dict[str, Any] = {
        "name": name,
        "model": agent.model,
        "permission_mode": agent.permission_mode,
        "tools": tools,
        "allowed_tools": agent.allowed_tools,
        "disallowed_tools": agent.disallowed_tools,
        "max_turns": agent.max_turns,
        "image": agent.image,
        "nodes_exec": agent.nodes_exec,
        "env_vars": sorted(agent.env or {}),
    }
    for key, value in (("system_prompt", agent.system_prompt),
                       ("append_system_prompt", agent.append_system_prompt)):
        if value:
            out[key], cut = clip(redact(value), PROMPT_CHARS)
            if cut:
                out[key] += "..."
    return {k: v for k, v in out.items() if v not in (None, [])}


def config_tools(ctx: ToolContext,
                 tool_names_for: Callable[[str], list[str]]) -> list[Tool[..., Any]]:
    cfg = ctx.config

    async def agents_list() -> Any:
        default_model = cfg.model.primary
        agents = [agent_view(name, agent, tool_names_for(name))
                  for name, agent in sorted(cfg.agents.items())]
        return to_json({"default_model": default_model, "this_agent": ctx.session.agent,
                        "agents": agents})

    async def config_get(path: Annotated[str | None, Field(max_length=200)] = None) -> Any:
        value: Any = cfg.redacted_dump()
        if path:
            walked: list[str] = []
            for part in path.replace("/", ".").split("."):
                if not part:
                    continue
                if not isinstance(value, dict):
                    raise BuiltinToolError(f"{'.'.join(walked)} is a value, not a section")
                match = _key(value, part)
                if match is None:
                    known = ", ".join(value) or "(none)"
                    where = ".".join(walked) or "the top level"
                    raise BuiltinToolError(f"no key {part!r} in {where} (keys: {known})")
                walked.append(match)
                value = value[match]
            return to_json({"path": ".".join(walked), "value": value})
        return to_json(value)

    return [
        builtin(agents_list, name="agents_list", description=(
            "List the configured agents: name, model, permission mode, host tools and other "
            "launch options (no secrets).")),
        builtin(config_get, name="config_get", description=(
            "The effective dockercc configuration with every secret shown as '***'. "
            "Optionally one part of it by a dotted path, e.g. 'pool' or 'tools.webFetch'.")),
    ]


def _key(mapping: dict[str, Any], part: str) -> str | None:
    if part in mapping:
        return part
    norm = part.replace("_", "").replace("-", "").lower()
    for key in mapping:
        if key.replace("_", "").replace("-", "").lower() == norm:
            return key
    return None
