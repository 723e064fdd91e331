"""The seed's built-in tools, offered to every agent over the MCP bridge.

:func:`builtin_tools` is called once per session and returns the tools for it (they close
over the pool's narrow context, :class:`BuiltinHost`, and the session, e.g. ``sessions_spawn`` records the parent). The model sees
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

from ._base import BuiltinHost, BuiltinToolError, ToolContext
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
    "BuiltinHost",
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
    "PoolBuiltins",
    "ToolContext",
    "builtin_tools",
]

BUILTIN_TOOL_NAMES: tuple[str, ...] = (
    "sessions_list", "sessions_history", "sessions_send", "sessions_spawn", "session_status",
    "message", "web_search", "web_fetch", "agents_list", "nodes_list", "nodes_exec",
    "cron_list", "cron_create", "cron_delete", "config_get",
)
"""Every built-in tool, in the seed's order (``web_search`` and ``nodes_exec`` are offered
only when configured)."""


class PoolBuiltins:
    """The built-in tools' side of one pool: their narrow context (:class:`BuiltinHost`),
    the ``message`` tool's channels and the cron scheduler. The pool builds one (it does not
    build the machinery itself), starts it with :meth:`start` and stops it with
    :meth:`close`."""

    def __init__(self, host: BuiltinHost) -> None:
        self.host = host
        #: channels of the built-in ``message`` tool (``pool.channel(...)``)
        self.channels = host.channels = ChannelRegistry(
            host.transport, host.config.tools.message.redis_channels)
        #: scheduled prompts (``cron_*`` tools); the scheduler runs while the pool is started
        self.cron = host.cron = CronScheduler(host)

    @classmethod
    def for_pool(cls, pool: AsyncPool) -> PoolBuiltins:
        """The built-ins of ``pool``: what they may use of it, taken once."""
        return cls(BuiltinHost(
            config=pool.config, transport=pool.transport, tenant=pool.tenant,
            owner=pool.containers.owner, stale_after_ms=lambda: pool.containers.stale_ms,
            open_session=pool.session, get=pool.get, host_tool_names=pool.tools.names,
            explicit_search=lambda: pool.search_provider))

    def search_provider(self) -> SearchProvider | None:
        """The ``web_search`` provider: one set in code (``pool.search_provider``), else the
        one ``tools.webSearch`` configures, else None (then ``web_search`` is not offered)."""
        explicit = self.host.explicit_search()
        if explicit is not None:
            return explicit  # type: ignore[no-any-return]
        state = self.host.state
        if not state.search_checked:
            state.search = search_provider_from_config(self.host.config.tools.web_search)
            state.search_checked = True
        return state.search  # type: ignore[no-any-return]

    def offered(self, agent: str) -> list[str]:
        """The names of the host tools an agent's sessions get (built-ins and pool tools)."""
        config = self.host.config.agent(agent)
        names = [n for n in BUILTIN_TOOL_NAMES
                 if (n != "web_search" or self.search_provider() is not None)
                 and (n != "nodes_exec" or config.nodes_exec)]
        names += [n for n in self.host.host_tool_names() if n not in names]
        if config.tools is not None:
            names = [n for n in names if n in set(config.tools)]
        return names

    def tools(self, session: AsyncSession) -> list[Tool[..., Any]]:
        """The built-in tools for ``session``, in the seed's order."""
        ctx = ToolContext(self.host, session)
        system = config_tools(ctx, self.offered)
        return [
            *session_tools(ctx),
            *message_tools(ctx),
            *web_tools(ctx, self.search_provider()),
            system[0],  # agents_list
            *node_tools(ctx),
            *cron_tools(ctx),
            system[1],  # config_get
        ]

    async def start(self) -> None:
        """Start what the built-ins run in the pool's process (the cron scheduler)."""
        await self.cron.start()

    async def close(self) -> None:
        """Stop the cron scheduler and the tools' background work (before sessions close)."""
        await self.cron.stop()
        await self.host.state.aclose()

    async def on_session_close(self, session: AsyncSession) -> None:
        """A session is closing: close the child sessions it spawned."""
        await close_children(self.host, session.id)


def builtin_tools(pool: AsyncPool, session: AsyncSession) -> list[Tool[..., Any]]:
    """The built-in tools for ``session`` of ``pool``, in the seed's order."""
    return pool.builtins.tools(session)
