"""dockercc: Claude Code agents in hardened, pooled Docker containers, from Python and Jupyter.

    from dockercc import Pool

    with Pool() as pool:
        with pool.session() as s:
            for event in s.stream("hello"):
                ...

The async core is :class:`AsyncPool` / :class:`AsyncSession`; :class:`Pool` /
:class:`Session` are its sync facade (usable in scripts, threads and notebooks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AgentError,
    ArchiveRefused,
    BadData,
    BudgetExceeded,
    CommandTimeout,
    ConfigError,
    ContainerLost,
    DeadlockError,
    DockerCCError,
    FileNotFoundInWorkspace,
    ImageError,
    InvalidPrompt,
    InvalidSessionId,
    PathEscape,
    PoolError,
    PoolExhausted,
    ProviderUnavailable,
    SessionClosed,
    SessionExists,
    StartupTimeout,
    StructuredOutputError,
    ToolError,
    TranscriptRejected,
    TransportError,
    WorkspaceError,
)

__version__ = "0.1.0"

_LAZY = {
    "AsyncPool": ".client",
    "aquery": ".client",
    "AsyncSession": ".session",
    "Pool": ".sync",
    "Session": ".sync",
    "query": ".sync",
    "DockerCCConfig": ".config",
    "load_config": ".config",
    "tool": ".bridge",
    "Tool": ".bridge",
    "PoolStats": ".pool.manager",
    "Event": ".events",
    "SystemInit": ".events",
    "SystemEvent": ".events",
    "TextDelta": ".events",
    "ThinkingDelta": ".events",
    "ToolUse": ".events",
    "ToolResult": ".events",
    "AssistantMessage": ".events",
    "UserMessage": ".events",
    "Result": ".events",
    "ErrorEvent": ".events",
    "EgressDenied": ".events",
    "ApiRetry": ".events",
    "ApiUnreachable": ".events",
    "SystemStatus": ".events",
    "RawEvent": ".events",
    "ClaudeAgentOptions": ".types",
    "TextBlock": ".protocol.messages",
    "ToolUseBlock": ".protocol.messages",
    "ThinkingBlock": ".protocol.messages",
    "ToolResultBlock": ".protocol.messages",
    "ResultMessage": ".events",
    "AgentDefinition": ".types",
    "PermissionResultAllow": ".types",
    "PermissionResultDeny": ".types",
    "ToolPermissionContext": ".types",
    "HookMatcher": ".types",
    "OptionsError": ".types",
    "create_sdk_mcp_server": ".types",
    "CommandResult": ".files",
    "FileInfo": ".files",
    "MapResults": ".batch",
    "ItemResult": ".batch",
    "MapRun": ".batch",
    "MapProgress": ".batch",
}

if TYPE_CHECKING:  # pragma: no cover
    from .batch import ItemResult, MapProgress, MapResults, MapRun
    from .bridge import Tool, tool
    from .client import AsyncPool, aquery
    from .config import DockerCCConfig, load_config
    from .events import (
        ApiRetry,
        ApiUnreachable,
        AssistantMessage,
        EgressDenied,
        ErrorEvent,
        Event,
        RawEvent,
        Result,
        SystemEvent,
        SystemInit,
        SystemStatus,
        TextDelta,
        ThinkingDelta,
        ToolResult,
        ToolUse,
        UserMessage,
    )
    from .files import CommandResult, FileInfo
    from .pool.manager import PoolStats
    from .protocol.messages import TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
    from .session import AsyncSession
    from .sync import Pool, Session, query
    from .types import (
        AgentDefinition,
        ClaudeAgentOptions,
        HookMatcher,
        OptionsError,
        PermissionResultAllow,
        PermissionResultDeny,
        ToolPermissionContext,
        create_sdk_mcp_server,
    )


def __getattr__(name: str) -> Any:
    """Import the heavier parts on first use (``import dockercc`` stays cheap)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dockercc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dockercc``."""
    from .jupyter import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .jupyter import unload_ipython_extension as unload

    unload(ipython)


__all__ = [
    "AsyncPool", "AsyncSession", "Pool", "Session", "DockerCCConfig", "load_config", "tool",
    "Tool", "query", "aquery", "PoolStats", "Event", "SystemInit", "SystemEvent", "TextDelta",
    "ThinkingDelta", "ToolUse", "ToolResult", "AssistantMessage", "UserMessage", "Result",
    "ErrorEvent", "EgressDenied", "ApiRetry", "ApiUnreachable", "SystemStatus", "RawEvent",
    "DockerCCError", "ConfigError", "InvalidSessionId",
    "TransportError", "PoolError", "PoolExhausted", "StartupTimeout", "ContainerLost",
    "ImageError", "AgentError", "ToolError", "ProviderUnavailable", "DeadlockError",
    "SessionClosed", "SessionExists", "TranscriptRejected", "BadData", "ClaudeAgentOptions",
    "PermissionResultAllow", "PermissionResultDeny", "ToolPermissionContext", "HookMatcher",
    "OptionsError", "create_sdk_mcp_server", "AgentDefinition", "StructuredOutputError",
    "BudgetExceeded", "TextBlock", "ToolUseBlock", "ThinkingBlock", "ToolResultBlock",
    "ResultMessage",
    "CommandResult", "FileInfo", "WorkspaceError", "PathEscape", "FileNotFoundInWorkspace",
    "ArchiveRefused", "CommandTimeout", "MapResults", "ItemResult", "MapRun", "MapProgress",
    "InvalidPrompt",
]
