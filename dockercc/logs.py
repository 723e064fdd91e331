"""Log lines of the gateway and the runners: text or JSON lines, ids on every line, redacted.

``logging.format: json`` (or ``DOCKERCC_LOG_FORMAT=json``) makes ``dockercc serve`` and every
runner it starts (the pool passes ``DOCKERCC_LOG_FORMAT`` into the containers) write one JSON
object per line to stderr::

    {"ts": "2026-12-06T08:10:53.123Z", "level": "WARNING", "logger": "dockercc.pool",
     "msg": "container clawdbot-cc-s1 lost: heartbeat stale", "process": "gateway",
     "session": "s1", "container": "3f2a9c1b7d0e"}

``session`` and ``container`` come from context variables (:func:`bind`), so every line a
session's task (or a runner, once claimed) logs carries them, whichever module logs it.
Messages, arguments and tracebacks go through :func:`dockercc.redaction.redact` in both
formats: a URL with a password or a key in an exception's text never reaches a log.

Standard library only (and :mod:`dockercc.redaction`): the runner in the container imports it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import IO, Any

from .redaction import redact

__all__ = ["SESSION", "CONTAINER", "bind", "bound", "JSONFormatter", "TextFormatter",
           "configure", "FORMAT_ENV"]

FORMAT_ENV = "DOCKERCC_LOG_FORMAT"
SESSION: ContextVar[str] = ContextVar("dockercc_session", default="")
CONTAINER: ContextVar[str] = ContextVar("dockercc_container", default="")
_HANDLER_MARK = "_dockercc_handler"
# ids of the whole process where one process serves one session (a runner): tasks started
# before the claim (a pre-started CLI's readers) log the session too
_PROCESS_IDS = {"session": "", "container": ""}


def bind(*, session: str | None = None, container: str | None = None,
         process_wide: bool = False) -> None:
    """Set the ids for this task (and tasks it starts from now on); ``process_wide``: for
    every line of the process that has none of its own (a runner)."""
    if session is not None:
        SESSION.set(session)
    if container is not None:
        CONTAINER.set(container)
    if process_wide:
        for key, value in (("session", session), ("container", container)):
            if value is not None:
                _PROCESS_IDS[key] = value


@contextlib.contextmanager
def bound(*, session: str | None = None, container: str | None = None) -> Iterator[None]:
    """The ids for the duration of a block."""
    tokens = []
    if session is not None:
        tokens.append((SESSION, SESSION.set(session)))
    if container is not None:
        tokens.append((CONTAINER, CONTAINER.set(container)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not lose the line
        text = f"{record.msg!r} {record.args!r}"
    return redact(text)


def _ids(record: logging.LogRecord) -> tuple[str, str]:
    # an explicit extra={"session": ...} wins over the context
    session = getattr(record, "session", None) or SESSION.get() or _PROCESS_IDS["session"]
    container = (getattr(record, "container", None) or CONTAINER.get()
                 or _PROCESS_IDS["container"])
    return str(session or ""), str(container or "")


class JSONFormatter(logging.Formatter):
    """One JSON object per record; ``process`` names the writer (``gateway``, ``runner``)."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process_name = process

    def format(self, record: logging.LogRecord) -> str:
        session, container = _ids(record)
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "msg": _message(record),
        }
        if self.process_name:
            out["process"] = self.process_name
        if session:
            out["session"] = session
        if container:
            out["container"] = container
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        # ensure_ascii: control characters from a container are \u-escaped, one line each
        return json.dumps(out, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """The plain format, redacted, with the ids in brackets when set."""

    def __init__(self, process: str = "dockercc") -> None:
        super().__init__()
        self.process_name = process

    def format(self, record: logging.LogRecord) -> str:
        session, container = _ids(record)
        ids = " ".join(f"{k}={v}" for k, v in (("session", session), ("container", container))
                       if v)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = (f"{when},{int(record.msecs):03d} {self.process_name} {record.levelname} "
                f"{'[' + ids + '] ' if ids else ''}{_message(record)}")
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def configure(fmt: str | None = None, *, level: str | int | None = None,
              process: str = "dockercc", stream: IO[str] | None = None,
              logger: str = "dockercc") -> logging.Handler:
    """Route ``logger`` (default: all of dockercc's loggers) to ``stream`` (stderr) in
    ``fmt`` (``json`` or ``text``; default ``$DOCKERCC_LOG_FORMAT``, else text). Calling it
    again replaces the handler it installed before."""
    fmt = (fmt or os.environ.get(FORMAT_ENV) or "text").lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be json or text, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter(process) if fmt == "json" else TextFormatter(process))
    setattr(handler, _HANDLER_MARK, True)
    target = logging.getLogger(logger)
    for old in [h for h in target.handlers if getattr(h, _HANDLER_MARK, False)]:
        target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(level or os.environ.get("DOCKERCC_LOG_LEVEL") or "INFO")
    target.propagate = False  # one line per record, not again through the root's handler
    return handler
