"""The Claude Code CLI's command line for one session. Pure: no I/O.

The runner always adds ``--input-format stream-json --output-format stream-json --verbose``;
this module builds the session-specific rest from the session's options.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

MCP_SERVER_NAME = "host"


def mcp_config(server_name: str | None = MCP_SERVER_NAME,
               external: Mapping[str, Any] | None = None) -> str:
    """``--mcp-config`` value for the host bridge served over the control protocol (and any
    external servers: stdio ones run inside the container, HTTP ones go through egress)."""
    servers: dict[str, Any] = dict(external or {})
    if server_name:
        servers[server_name] = {"type": "sdk", "name": server_name}
    return json.dumps({"mcpServers": servers}, separators=(",", ":"))


def build_cli_args(*, model: str | None = None, system_prompt: str | None = None,
                   append_system_prompt: str | None = None,
                   permission_mode: str | None = None,
                   allowed_tools: Sequence[str] | None = None,
                   disallowed_tools: Sequence[str] | None = None,
                   max_turns: int | None = None, resume: str | None = None,
                   mcp_server: str | None = None, include_partial_messages: bool = True,
                   extra_args: Sequence[str] = (), fallback_model: str | None = None,
                   max_budget_usd: float | None = None,
                   json_schema: Mapping[str, Any] | None = None, fork_session: bool = False,
                   setting_sources: Sequence[str] | None = None,
                   thinking: Mapping[str, Any] | None = None, effort: str | None = None,
                   agents: Mapping[str, Any] | None = None,
                   mcp_servers: Mapping[str, Any] | None = None,
                   base_tools: Sequence[str] | None = None,
                   permission_prompt_tool: str | None = None) -> list[str]:
    """The session's CLI arguments (after the runner's stream-json ones).

    With ``mcp_server`` the host bridge is configured and its tools are permitted
    (``mcp__<server>__*``): the CLI refuses MCP tools that are not.
    """
    args: list[str] = []
    if include_partial_messages:
        args.append("--include-partial-messages")
    if model:
        args += ["--model", model]
    if system_prompt is not None:
        args += ["--system-prompt", system_prompt]
    if append_system_prompt:
        args += ["--append-system-prompt", append_system_prompt]
    if permission_mode and permission_mode != "default":
        args += ["--permission-mode", permission_mode]
    if permission_prompt_tool:
        args += ["--permission-prompt-tool", permission_prompt_tool]
    if fallback_model:
        args += ["--fallback-model", fallback_model]
    if base_tools is not None:
        args += ["--tools", ",".join(base_tools)]
    allowed = list(allowed_tools or [])
    if mcp_server or mcp_servers:
        args += ["--mcp-config", mcp_config(mcp_server, mcp_servers)]
    if mcp_server:
        allowed.append(f"mcp__{mcp_server}__*")
    if allowed:
        args += ["--allowedTools", ",".join(allowed)]
    if disallowed_tools:
        args += ["--disallowedTools", ",".join(disallowed_tools)]
    if max_turns:
        args += ["--max-turns", str(max_turns)]
    if max_budget_usd is not None:
        args += ["--max-budget-usd", f"{max_budget_usd:g}"]
    if resume:
        args += ["--resume", resume]
        if fork_session:
            args.append("--fork-session")
    if agents:
        args += ["--agents", json.dumps(dict(agents), separators=(",", ":"))]
    if setting_sources is not None:
        args += ["--setting-sources", ",".join(setting_sources)]
    if thinking:
        if thinking.get("type") == "enabled":
            args += ["--max-thinking-tokens", str(thinking["budget_tokens"])]
        else:
            args += ["--thinking", str(thinking["type"])]
    if effort:
        args += ["--effort", effort]
    if json_schema is not None:
        args += ["--json-schema", json.dumps(dict(json_schema), separators=(",", ":"))]
    args += list(extra_args)
    return args
