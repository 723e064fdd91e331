"""Display hooks: what ``_repr_html_`` / ``_repr_markdown_`` / ``_repr_mimebundle_`` of
results, events, sessions and pools return.

The classes keep one-line methods that call :func:`mimebundle`; everything notebook-shaped
lives here. Pools and sessions show live state read from Redis with a short-lived *sync*
client, so the hooks work for the sync facade and for an :class:`~dockercc.AsyncPool` whose
loop is busy (or is the notebook's own loop) alike. A Redis that does not answer gives a
table with a note, never an exception in the middle of a display.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import DockerCCError, TransportError
from ..events import BaseEvent, Result
from . import render

if TYPE_CHECKING:  # pragma: no cover
    from ..client import AsyncPool
    from ..session import AsyncSession

__all__ = ["mimebundle", "pool_containers", "session_state", "pool_bundle", "session_bundle"]

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


def session_row(session: AsyncSession, state: Mapping[str, str] | None = None) -> dict[str, Any]:
    state = state or {}
    container = session.lease.name if session.lease is not None else state.get("container")
    status = "closed" if session.closed else state.get("status") or "new"
    beat = state.get("heartbeat")
    return {
        "session": session.id,
        "agent": session.agent,
        "model": session.options.model or session.agent_config.model or state.get("model"),
        "container": container,
        "status": status,
        "heartbeat": render.age(int(beat)) if beat and beat.isdigit() else "-",
        "turns": state.get("turns"),
        "cost": f"${float(state['cost_usd']):.4f}" if state.get("cost_usd") else None,
        "claude session": session.claude_session_id or state.get("claude_session_id"),
    }


def session_bundle(session: AsyncSession) -> dict[str, str]:
    note = ""
    try:
        state = session_state(session)
    except DockerCCError as exc:
        state, note = {}, str(exc)
    row = session_row(session, state)
    title = f"dockercc session {session.id}"
    html = render.table_html([row], title=title)
    md = render.table_markdown([row], title=title)
    if note:
        html += f'<div style="color:#c62828">{render.esc(note)}</div>'
        md += f"\n\n*{note}*"
    return {"text/html": html, "text/markdown": md}


def pool_bundle(pool: AsyncPool) -> dict[str, str]:
    cfg = pool.config
    title = (f"dockercc pool · redis {pool.transport.url} · prefix {pool.transport.prefix} · "
             f"image {cfg.image} · maxTotal {cfg.pool.max_total} · "
             f"maxPerAgent {cfg.pool.max_per_agent} · minWarm {cfg.pool.min_warm}")
    note = ""
    try:
        rows = pool_containers(pool)
    except DockerCCError as exc:
        rows, note = [], str(exc)
    columns = ("container", "state", "agent", "session", "heartbeat", "age", "warm")
    html = render.table_html(rows, columns, title=title, empty="no containers")
    md = render.table_markdown(rows, columns, title=title, empty="no containers")
    if note:
        html += f'<div style="color:#c62828">{render.esc(note)}</div>'
        md += f"\n\n*{note}*"
    return {"text/html": html, "text/markdown": md}


def map_results_bundle(results: Any) -> dict[str, str]:
    """A map's results as a table (from memory: no Redis or network I/O), at most
    ``MAX_MAP_ROWS`` rows with a note of the rest."""
    c = results.counts()
    title = (f"dockercc map{' ' + results.name if results.name else ''} · {len(results)} items "
             f"· ok {c['ok']} · failed {c['failed']} · skipped {c['skipped']} · "
             f"kept from before {c['resumed']} · ${results.cost_usd:.4f} · "
             f"{results.elapsed_s:.1f}s")
    columns = ("index", "status", "prompt", "text", "structured_output", "cost_usd",
               "duration_ms", "attempts", "resumed", "error")
    rows = []
    for rec in results.to_records(columns)[:MAX_MAP_ROWS]:
        for key in ("prompt", "text", "error"):
            if isinstance(rec.get(key), str) and len(rec[key]) > 200:
                rec[key] = rec[key][:199] + "…"
        if rec.get("structured_output") is not None:
            rec["structured_output"] = json.dumps(rec["structured_output"], default=str)[:200]
        rows.append(rec)
    html = render.table_html(rows, columns, title=title, empty="no items")
    md = render.table_markdown(rows, columns, title=title, empty="no items")
    more = len(results) - len(rows)
    notes = ([f"{more} more rows: results.to_pandas() or results.to_records() has them all"]
             if more > 0 else []) + ([f"stopped: {results.stopped}"] if results.stopped else [])
    for note in notes:
        html += f'<div style="color:#6d4c41">{render.esc(note)}</div>'
        md += f"\n\n*{note}*"
    return {"text/html": html, "text/markdown": md}


MAX_MAP_ROWS = 50


def _bundle(obj: Any) -> dict[str, str]:
    from ..batch import MapResults
    from ..client import AsyncPool
    from ..session import AsyncSession
    from ..sync import Pool, Session

    if isinstance(obj, MapResults):
        return map_results_bundle(obj)
    if isinstance(obj, Result):
        return render.result_bundle(obj)
    if isinstance(obj, BaseEvent):
        return render.event_bundle(obj)
    if isinstance(obj, Session):
        return session_bundle(obj.aio)
    if isinstance(obj, AsyncSession):
        return session_bundle(obj)
    if isinstance(obj, Pool):
        return pool_bundle(obj.aio)
    if isinstance(obj, AsyncPool):
        return pool_bundle(obj)
    text = json.dumps(obj, default=str) if isinstance(obj, dict | list) else str(obj)
    return {"text/markdown": f"`{text}`"}


def mimebundle(obj: Any, include: Container[str] | None = None,
               exclude: Container[str] | None = None) -> dict[str, str]:
    """The display bundle (``text/html`` and ``text/markdown``) of a dockercc object,
    filtered by IPython's ``include`` / ``exclude``."""
    bundle = _bundle(obj)
    return {k: v for k, v in bundle.items()
            if (include is None or k in include) and (exclude is None or k not in exclude)}


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
