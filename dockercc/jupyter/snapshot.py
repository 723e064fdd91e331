"""What the ``%dockercc status`` / ``sessions`` / ``pool`` commands read from Redis.

Each read runs on the process's portal (:mod:`dockercc._portal`) over a short-lived
connection of its own (:class:`~dockercc.storage.connection.RedisTransport`, no retries), so
the commands work for the sync facade and for an :class:`~dockercc.AsyncPool` whose loop is
busy (or is the notebook's own loop) alike. Displays never call this (see
:mod:`dockercc.jupyter.display`): only the commands do I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import TransportError
from . import render

if TYPE_CHECKING:  # pragma: no cover
    from ..client import AsyncPool
    from ..session import AsyncSession
    from ..storage.connection import RedisTransport

__all__ = ["pool_containers", "session_state", "budgets"]

SNAPSHOT_TIMEOUT_S = 2.0
T = TypeVar("T")


def _read(pool: AsyncPool, what: Callable[[RedisTransport], Awaitable[T]]) -> T:
    """``what(store)`` on a short-lived connection, run on the portal."""
    from .._portal import portal
    from ..storage.connection import RedisTransport

    async def go() -> T:
        store = RedisTransport(pool.config.redis.url_secret(), pool.config.redis.key_prefix,
                               socket_timeout=SNAPSHOT_TIMEOUT_S,
                               connect_timeout=SNAPSHOT_TIMEOUT_S, retries=0)
        try:
            return await what(store)
        finally:
            await store.close()

    try:
        return portal().run(go())
    except Exception as exc:
        raise TransportError(f"Redis at {pool.transport.url} did not answer ({exc})") from exc


def pool_containers(pool: AsyncPool) -> list[dict[str, Any]]:
    """The pool's containers from the shared registry (every process's), oldest first:
    container, state, agent, session, heartbeat age, age, warm, owner."""

    async def view(store: RedisTransport) -> Any:
        return await store.registry.view()

    snapshot = _read(pool, view)
    rows = []
    for rec in snapshot.records:
        beat = snapshot.heartbeats.get(rec.id, 0)
        rows.append({
            "container": rec.name,
            "state": rec.status,
            "agent": rec.agent,
            "session": rec.session,
            "heartbeat": render.age(beat) if beat else "-",
            "age": render.age(rec.created),
            "warm": rec.warm,
            "owner": rec.owner,
        })
    return rows


def session_state(session: AsyncSession) -> dict[str, str]:
    """The session's state hash in Redis (status, container, heartbeat, turns, ...)."""

    async def state(store: RedisTransport) -> dict[str, str]:
        return await store.state(session.id)

    return _read(session.pool, state)


def budgets(pool: AsyncPool) -> list[dict[str, Any]]:
    """Spend against the pool's and agents' budgets (every process's, from Redis)."""
    from ..budget import report

    if pool.config.budget.usd is None and all(
            a.budget.usd is None for a in pool.config.agents.values()):
        return []
    async def spent(store: RedisTransport) -> list[dict[str, Any]]:
        return await report(store, pool.config)

    return _read(pool, spent)
