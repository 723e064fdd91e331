"""The seed's built-in tools, offered to every agent over the MCP bridge.

:func:`builtin_tools` is called once per session and returns the tools for it (they close
over the pool and the session, e.g. ``sessions_spawn`` records the parent). The model sees
them as ``mcp__host__<name>``:

=================  ======================================================================
sessions           ``sessions_list``, ``sessions_history``, ``sessions_send``,
                   ``sessions_spawn``, ``session_status``  (:mod:`.sessions`)
messaging          ``message``  (:mod:`.messaging`; channels: ``pool.channel(...)``)
web                ``web_search`` (only with a provider), ``web_fetch``  (:mod:`.web`)
system             ``agents_list``, ``config_get``  (:mod:`.config`);
                   ``nodes_list``, ``nodes_exec`` (only with ``nodesExec``)  (:mod:`.nodes`);
                   ``cron_list``, ``cron_create``, ``cron_delete``  (:mod:`.cron`)
=================  ======================================================================

Every tool answers bad arguments and refusals with an MCP error result, never a crash. An
agent's ``tools`` allow-list (``agents.<name>.tools``) applies to these as to any host tool.
See docs/tools.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import BuiltinToolError, ToolContext, forget_pool_state, pool_state
from .cron import CronJob, CronRun, CronScheduler, cron_tools
from .messaging import ChannelHandler, ChannelMessage, ChannelRegistry, message_tools
from .nodes import ExecResult, NodeInfo, node_tools
from .sessions import close_children, session_tools
from .system import config_tools
from .web import (
    AddressPolicy,
    BlockedTarget,
    BraveSearch,
    FetchError,
    FetchResult,
    SearchProvider,
    SearchResult,
    TavilySearch,
    WebFetcher,
    search_provider_from_config,
    web_tools,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..bridge import Tool
    from ..client import AsyncPool
    from ..session import AsyncSession

__all__ = [
    "BUILTIN_TOOL_NAMES",
    "AddressPolicy",
    "BlockedTarget",
    "BraveSearch",
    "BuiltinToolError",
    "ChannelHandler",
    "ChannelMessage",
    "ChannelRegistry",
    "CronJob",
    "CronRun",
    "CronScheduler",
    "ExecResult",
    "FetchError",
    "FetchResult",
    "NodeInfo",
    "SearchProvider",
    "SearchResult",
    "TavilySearch",
    "WebFetcher",
    "builtin_tools",
    "close_pool",
    "on_session_close",
    "search_provider",
    "start_pool",
]

BUILTIN_TOOL_NAMES: tuple[str, ...] = (
    "sessions_list", "sessions_history", "sessions_send", "sessions_spawn", "session_status",
    "message", "web_search", "web_fetch", "agents_list", "nodes_list", "nodes_exec",
    "cron_list", "cron_create", "cron_delete", "config_get",
)
"""Every built-in tool, in the seed's order (``web_search`` and ``nodes_exec`` are offered
only when configured)."""


def search_provider(pool: AsyncPool) -> SearchProvider | None:
    """The pool's web search provider: ``pool.search_provider`` if set in code, else the one
    ``tools.webSearch`` configures, else None (then ``web_search`` is not offered)."""
    explicit = getattr(pool, "search_provider", None)
    if explicit is not None:
        return explicit  # type: ignore[no-any-return]
    state = pool_state(pool)
    if not state.search_checked:
        state.search = search_provider_from_config(pool.config.tools.web_search)
        state.search_checked = True
    return state.search


def _offered(pool: AsyncPool, agent: str) -> list[str]:
    """The names of the host tools an agent's sessions get (built-ins and pool tools)."""
    config = pool.config.agent(agent)
    names = [n for n in BUILTIN_TOOL_NAMES
             if (n != "web_search" or search_provider(pool) is not None)
             and (n != "nodes_exec" or config.nodes_exec)]
    names += [n for n in pool.tools.names() if n not in names]
    if config.tools is not None:
        names = [n for n in names if n in set(config.tools)]
    return names


def builtin_tools(pool: AsyncPool, session: AsyncSession) -> list[Tool[..., Any]]:
    """The built-in tools for ``session``, in the seed's order."""
    ctx = ToolContext(pool, session)
    system = config_tools(ctx, lambda agent: _offered(pool, agent))
    return [
        *session_tools(ctx),
        *message_tools(ctx),
        *web_tools(ctx, search_provider(pool)),
        system[0],  # agents_list
        *node_tools(ctx),
        *cron_tools(ctx),
        system[1],  # config_get
    ]


async def start_pool(pool: AsyncPool) -> None:
    """Start what the built-ins run in the pool's process (the cron scheduler)."""
    await pool.cron.start()


async def close_pool(pool: AsyncPool) -> None:
    """Stop the cron scheduler and the tools' background work (before sessions close)."""
    await pool.cron.stop()
    state = forget_pool_state(pool)
    if state is not None:
        await state.aclose()


async def on_session_close(session: AsyncSession) -> None:
    """A session is closing: close the child sessions it spawned."""
    await close_children(session.pool, session.id)
