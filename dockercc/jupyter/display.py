"""Rich notebook display of dockercc's objects, registered with IPython from outside.

No core class knows Jupyter: results, events, sessions and pools have a plain ``__repr__``,
and this module registers ``text/html`` and ``text/markdown`` formatters for them with the
running shell's ``display_formatter`` (``formatters[mime].for_type(cls, fn)``, as rich's
``pretty.install`` does). That happens when ``dockercc.jupyter`` is imported in a running
IPython and on ``%load_ext dockercc``; ``%unload_ext dockercc`` removes them.

Rendering does no I/O: a session or pool shows what the object holds in this process. What
needs Redis (every process's containers, heartbeats, turns, cost) is a magic command
(``%dockercc pool``, ``%dockercc status``, ``%dockercc sessions``) or an explicit method.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from ..batch import MapResults
from ..client import AsyncPool
from ..events import BaseEvent, Result
from ..session import AsyncSession
from ..sync import Pool, Session
from . import render

__all__ = ["bundle", "register", "unregister", "register_with_running_shell",
           "session_row", "pool_rows", "POOL_COLUMNS"]

MIMES = ("text/html", "text/markdown")
TYPES: tuple[type, ...] = (BaseEvent, AsyncSession, Session, AsyncPool, Pool, MapResults)
#: the columns of a pool's table (``%dockercc pool`` adds heartbeat, age and warm)
POOL_COLUMNS = ("container", "state", "agent", "session")


def session_row(session: AsyncSession, state: dict[str, str] | None = None) -> dict[str, Any]:
    """A session's row: what it holds, completed by its Redis ``state`` hash when the caller
    read one (``%dockercc sessions`` / ``status`` do; a display does not)."""
    state = state or {}
    container = session.lease.name if session.lease is not None else state.get("container")
    if session.closed:
        status = "closed"
    elif state.get("status"):
        status = state["status"]
    elif session.lease is None:
        status = "new"
    else:
        status = "busy" if session.turn_open else "idle"
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


def pool_title(pool: AsyncPool) -> str:
    cfg = pool.config
    return (f"dockercc pool · redis {pool.transport.url} · prefix {pool.transport.prefix} · "
            f"image {cfg.image} · maxTotal {cfg.pool.max_total} · "
            f"maxPerAgent {cfg.pool.max_per_agent} · minWarm {cfg.pool.min_warm}")


def pool_rows(pool: AsyncPool) -> list[dict[str, Any]]:
    """The containers this process's sessions of ``pool`` hold (no Redis read)."""
    return [{"container": s.lease.name, "state": "busy", "agent": s.agent, "session": s.id}
            for s in pool.open_sessions if s.lease is not None and not s.closed]


def _session_bundle(session: AsyncSession) -> dict[str, str]:
    row = {k: v for k, v in session_row(session).items() if k not in ("heartbeat", "turns",
                                                                       "cost")}
    title = f"dockercc session {session.id}"
    return {"text/html": render.table_html([row], title=title),
            "text/markdown": render.table_markdown([row], title=title)}


def _pool_bundle(pool: AsyncPool) -> dict[str, str]:
    rows, title = pool_rows(pool), pool_title(pool)
    empty = "no containers held by this process (%dockercc pool lists every process's)"
    return {"text/html": render.table_html(rows, POOL_COLUMNS, title=title, empty=empty),
            "text/markdown": render.table_markdown(rows, POOL_COLUMNS, title=title,
                                                   empty=empty)}


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


def bundle(obj: Any) -> dict[str, str]:
    """The ``text/html`` and ``text/markdown`` of a result, event, session or pool."""
    if isinstance(obj, Result):
        return render.result_bundle(obj)
    if isinstance(obj, BaseEvent):
        return render.event_bundle(obj)
    if isinstance(obj, Session | AsyncSession):
        return _session_bundle(obj.aio if isinstance(obj, Session) else obj)
    if isinstance(obj, Pool | AsyncPool):
        return _pool_bundle(obj.aio if isinstance(obj, Pool) else obj)
    if isinstance(obj, MapResults):
        return map_results_bundle(obj)
    raise TypeError(f"dockercc has no display for {type(obj).__name__}")


def _formatter(mime: str) -> Callable[[Any], str]:
    def format(obj: Any) -> str:
        return bundle(obj)[mime]

    format.__qualname__ = format.__name__ = f"dockercc_{mime.split('/')[1]}"
    return format


_FORMATTERS = {mime: _formatter(mime) for mime in MIMES}


def register(ipython: Any) -> None:
    """Register the formatters with ``ipython``'s display formatter (idempotent)."""
    for mime, fn in _FORMATTERS.items():
        formatter = ipython.display_formatter.formatters[mime]
        for cls in TYPES:
            formatter.for_type(cls, fn)


def unregister(ipython: Any) -> None:
    """Remove the formatters :func:`register` added (those of others stay)."""
    for mime, fn in _FORMATTERS.items():
        formatter = ipython.display_formatter.formatters[mime]
        for cls in TYPES:
            if formatter.type_printers.get(cls) is fn:
                formatter.pop(cls)


def register_with_running_shell() -> None:
    """Register with the running IPython shell, if there is one; never imports IPython."""
    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and hasattr(shell, "display_formatter"):
        register(shell)
