"""The seed's built-in tools, offered to every agent over the MCP bridge.

:func:`builtin_tools` is called once per session and returns the tools for it (they may
close over the pool and the session, e.g. ``sessions_spawn`` records the parent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..client import AsyncPool
    from ..session import AsyncSession


def builtin_tools(pool: AsyncPool, session: AsyncSession) -> list[Any]:
    """The built-in tools for ``session``."""
    return []
