"""Bounded JSON decoding for data the host did not produce itself.

Everything a container writes (envelopes, MCP relays, control replies, registry records,
history entries) is attacker-controlled from the host's point of view: a prompt-injected agent
can write any bytes its Redis user may write. ``json.loads`` on such input can raise
``RecursionError`` (deep nesting), eat memory (huge strings) or yield NaN/Infinity; these
helpers turn all of that into one typed error, :class:`dockercc.errors.BadData`, so a caller
drops the item and goes on. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadData

MAX_DEPTH = 64
"""Deepest nesting accepted in host-side decoding (the CLI's own messages stay below 20)."""
MAX_RECORD_BYTES = 16 * 1024
"""A pool registry record, a ticket, a session record."""
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""An MCP request/reply, a control message, a history entry."""
MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
"""One output envelope (a CLI stdout line plus the wrapper)."""


def _reject_constant(name: str) -> Any:
    raise BadData(f"non-finite number {name} in JSON")


def depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of ``obj`` (iterative: never recurses); stops counting past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict):
            items: Any = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        stack.extend((x, d + 1) for x in items)
    return deepest


def loads(data: str | bytes | bytearray | None, *, max_bytes: int = MAX_MESSAGE_BYTES,
          max_depth: int = MAX_DEPTH, what: str = "data") -> Any:
    """``json.loads`` that raises only :class:`BadData`: size and depth bounded, no NaN."""
    if data is None:
        raise BadData(f"{what}: missing")
    if not isinstance(data, (str, bytes, bytearray)):
        raise BadData(f"{what}: not text ({type(data).__name__})")
    if len(data) > max_bytes:
        raise BadData(f"{what}: {len(data)} bytes, over the limit of {max_bytes}")
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except BadData:
        raise
    except RecursionError:
        raise BadData(f"{what}: nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise BadData(f"{what}: not JSON ({str(exc)[:80]})") from None
    if depth(obj, max_depth) > max_depth:
        raise BadData(f"{what}: nested deeper than {max_depth}")
    return obj


def loads_object(data: str | bytes | bytearray | None, **kw: Any) -> dict[str, Any]:
    """:func:`loads` for data that must be a JSON object."""
    obj = loads(data, **kw)
    if not isinstance(obj, dict):
        raise BadData(f"{kw.get('what', 'data')}: not a JSON object")
    return obj


def loads_record(data: str | bytes | bytearray | None, *, max_bytes: int = MAX_RECORD_BYTES,
                 what: str = "record") -> dict[str, Any]:
    """A small JSON object read from Redis (a session or cron record), ``{}`` when it is not
    one: callers treat fields as absent rather than fail a pass over many records."""
    try:
        return loads_object(data, max_bytes=max_bytes, what=what)
    except BadData:
        return {}
