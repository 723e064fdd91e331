"""Host tools for the agent: plain Python functions served to the CLI over MCP.

``@tool`` wraps a function as a :class:`Tool` (JSON Schema from type hints, description from
the docstring); :class:`HostBridge` answers the CLI's relayed MCP JSON-RPC messages with an
MCP server (the ``mcp`` SDK's low-level ``Server``) backed by those tools.
"""

from __future__ import annotations

from .server import ACK, BRIDGE_CLOSED, REQUEST_CANCELLED, HostBridge
from .tools import DEFAULT_TIMEOUT, TOOL_NAME_PATTERN, Tool, ToolOutput, ToolRegistry, tool

__all__ = [
    "ACK",
    "BRIDGE_CLOSED",
    "DEFAULT_TIMEOUT",
    "HostBridge",
    "REQUEST_CANCELLED",
    "TOOL_NAME_PATTERN",
    "Tool",
    "ToolOutput",
    "ToolRegistry",
    "tool",
]
