"""The Claude Code CLI's command line for one session. Pure: no I/O.

The runner always adds ``--input-format stream-json --output-format stream-json --verbose``;
this module builds the session-specific rest from the session's options.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

MCP_SERVER_NAME = "host"


def mcp_config(server_name: str = MCP_SERVER_NAME) -> str:
    """``--mcp-config`` value for the host bridge served over the control protocol."""
    return json.dumps({"mcpServers": {server_name: {"type": "sdk", "name": server_name}}},
                      separators=(",", ":"))


def build_cli_args(*, model: str | None = None, system_prompt: str | None = None,
                   append_system_prompt: str | None = None,
                   permission_mode: str | None = None,
                   allowed_tools: Sequence[str] | None = None,
                   disallowed_tools: Sequence[str] | None = None,
                   max_turns: int | None = None, resume: str | None = None,
                   mcp_server: str | None = None, include_partial_messages: bool = True,
                   extra_args: Sequence[str] = ()) -> list[str]:
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
    allowed = list(allowed_tools or [])
    if mcp_server:
        args += ["--mcp-config", mcp_config(mcp_server)]
        allowed.append(f"mcp__{mcp_server}__*")
    if allowed:
        args += ["--allowedTools", ",".join(allowed)]
    if disallowed_tools:
        args += ["--disallowedTools", ",".join(disallowed_tools)]
    if max_turns:
        args += ["--max-turns", str(max_turns)]
    if resume:
        args += ["--resume", resume]
    args += list(extra_args)
    return args
