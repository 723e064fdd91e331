"""Reading Redis values: bytes or text to ``str`` / ``int``, and the clock the keys use (ms)."""

from __future__ import annotations

import time
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


def as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def as_int(value: Any, default: int = 0) -> int:
    """A Redis value that should be an integer (a heartbeat, a counter); ``default`` for
    anything else, so one forged value cannot break a pass over many."""
    try:
        text = as_str(value)
        return int(text) if len(text) <= 20 else default
    except (ValueError, TypeError, UnicodeDecodeError):
        return default
