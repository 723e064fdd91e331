"""What the ``%dockercc status`` / ``sessions`` / ``pool`` commands read from Redis.

A short-lived *sync* client reads the shared registry and a session's state hash, so the
commands work for the sync facade and for an :class:`~dockercc.AsyncPool` whose loop is busy
(or is the notebook's own loop) alike. Displays never call this (see
:mod:`dockercc.jupyter.display`): only the commands do I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TransportError
from . import render

if TYPE_CHECKING:  # pragma: no cover
    from ..client import AsyncPool
    from ..session import AsyncSession

__all__ = ["pool_containers", "session_state", "budgets"]

SNAPSHOT_TIMEOUT_S = 2.0


def _sync_redis(url: str) -> Any:
    import redis

    from ..sentinel import is_sentinel_url, parse_sentinel_url

    kwargs: dict[str, Any] = {"socket_timeout": SNAPSHOT_TIMEOUT_S,
                              "socket_connect_timeout": SNAPSHOT_TIMEOUT_S}
    if is_sentinel_url(url):  # (a snapshot: the primary the sentinels name now)
        from redis.sentinel import Sentinel

        t = parse_sentinel_url(url)
        auth: dict[str, Any] = {k: v for k, v in (("username", t.username),
                                                  ("password", t.password)) if v}
        sentinel_kwargs = {**kwargs, **({"password": t.sentinel_password}
                                        if t.sentinel_password else {})}
        return Sentinel(list(t.sentinels), sentinel_kwargs=sentinel_kwargs, db=t.db, **auth,
                        **kwargs).master_for(t.service)
    return redis.Redis.from_url(url, **kwargs)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pool_containers(pool: AsyncPool) -> list[dict[str, Any]]:
    """The pool's containers from the shared registry (every process's), oldest first:
    container, state, agent, session, heartbeat age, age, warm, owner."""
    from ..pool.registry import ContainerRecord

    keys = pool.transport.pool_keys
    r = _sync_redis(pool.config.redis.url_secret())
    try:
        raw = r.hgetall(keys.containers)
        records = [rec for rec in (ContainerRecord.decode(v) for v in raw.values()) if rec]
        pipe = r.pipeline(transaction=False)
        for rec in records:
            pipe.hget(keys.container_state(rec.id), "heartbeat")
        beats = pipe.execute()
    except Exception as exc:
        raise TransportError(f"Redis at {pool.transport.url} did not answer ({exc})") from exc
    finally:
        r.close()
    rows = []
    for rec, beat in sorted(zip(records, beats, strict=True), key=lambda x: x[0].created):
        rows.append({
            "container": rec.name,
            "state": rec.status,
            "agent": rec.agent,
            "session": rec.session,
            "heartbeat": render.age(int(_s(beat))) if beat else "-",
            "age": render.age(rec.created),
            "warm": rec.warm,
            "owner": rec.owner,
        })
    return rows


def session_state(session: AsyncSession) -> dict[str, str]:
    """The session's state hash in Redis (status, container, heartbeat, turns, ...)."""
    t = session.pool.transport
    r = _sync_redis(session.pool.config.redis.url_secret())
    try:
        raw = r.hgetall(t.keys(session.id).state)
    except Exception as exc:
        raise TransportError(f"Redis at {t.url} did not answer ({exc})") from exc
    finally:
        r.close()
    return {_s(k): _s(v) for k, v in raw.items()}


def budgets(pool: AsyncPool) -> list[dict[str, Any]]:
    """Spend against the pool's and agents' budgets (every process's, from Redis)."""
    from .._portal import portal
    from ..budget import report

    if pool.config.budget.usd is None and all(
            a.budget.usd is None for a in pool.config.agents.values()):
        return []
    try:
        return portal().run(report(pool.transport.client, pool.transport.prefix, pool.config))
    except Exception as exc:
        raise TransportError(f"Redis at {pool.transport.url} did not answer ({exc})") from exc
