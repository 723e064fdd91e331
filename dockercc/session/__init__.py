"""AsyncSession: one conversation with one agent, in its own container.

A session claims a container from the pool on first use, hands its runner the CLI's
arguments, and from then on talks to it only through Redis: prompts go to
``{p}{id}:input``, events come back from ``{p}{id}:output`` (subscribed before the prompt is
sent, and replayed from the buffer, so a reader never misses one), interrupts go to
``{p}{id}:control``. Host tools answer the CLI's MCP requests through
``{p}{id}:mcp:requests``.

If the container is lost (killed, out of memory, stale heartbeat) the running turn raises
:class:`~dockercc.errors.ContainerLost`; the next prompt transparently gets a new container
that resumes the same Claude conversation. The same path serves ``resume=`` after close.
"""


from __future__ import annotations

from .base import SessionBase, tools_digest
from .container import SessionContainer
from .options import (
    SANDBOX_PERMISSION_MODE,
    SHORTHANDS,
    EventCallback,
    SessionOptions,
    hooks_wire,
    resolve_cli_args,
    session_options,
)
from .relays import PERMISSION_TIMEOUT_S, SessionRelays, decide_permission, run_hook
from .turns import AsyncSession, ask_turn, check_structured_output, default_prestart

__all__ = [
    "AsyncSession", "SessionOptions", "session_options", "resolve_cli_args", "ask_turn",
    "check_structured_output", "hooks_wire", "run_hook", "decide_permission", "default_prestart",
    "tools_digest", "EventCallback", "SHORTHANDS", "SANDBOX_PERMISSION_MODE",
    "PERMISSION_TIMEOUT_S", "SessionBase", "SessionRelays", "SessionContainer",
]
