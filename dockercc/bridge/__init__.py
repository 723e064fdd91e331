"""Host tools for the agent: plain Python functions served to the CLI over MCP.

``@tool`` wraps a function as a :class:`Tool` (JSON Schema from type hints, description from
the docstring); :class:`HostBridge` answers the CLI's relayed MCP JSON-RPC messages with an
MCP server (the ``mcp`` SDK's low-level ``Server``) backed by those tools.

The ``mcp`` SDK is slow to import, so :mod:`.server` loads on first use of ``HostBridge``;
``from dockercc.bridge import tool`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .tools import (
    DEFAULT_TIMEOUT,
    TOOL_NAME_PATTERN,
    SchemaTool,
    Tool,
    ToolOutput,
    ToolRegistry,
    session_registry,
    tool,
)

if TYPE_CHECKING:
    from .server import ACK, BRIDGE_CLOSED, REQUEST_CANCELLED, HostBridge

__all__ = [
    "ACK",
    "BRIDGE_CLOSED",
    "DEFAULT_TIMEOUT",
    "HostBridge",
    "REQUEST_CANCELLED",
    "SchemaTool",
    "TOOL_NAME_PATTERN",
    "Tool",
    "ToolOutput",
    "ToolRegistry",
    "session_registry",
    "tool",
]

_LAZY = frozenset({"ACK", "BRIDGE_CLOSED", "REQUEST_CANCELLED", "HostBridge"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
