"""Split the CLI's stdout into lines and parse each into a message. Pure: no I/O.

:class:`LineParser` is fed whatever the pipe yields (bytes or str, any chunking) and returns
the complete messages; it never raises. Lines that are not JSON (stray logs, a truncated
last line), and JSON that is not an object, are skipped and counted. Lines may be very long
(a tool result of many MiB is one line): buffering is linear and each line is decoded with
one :func:`json.loads` call.
"""

from __future__ import annotations

import json
from collections import deque

from .messages import Message, parse_message

__all__ = ["LineParser", "SkippedLine"]

_PREVIEW_CHARS = 200


class SkippedLine:
    """Why one line was skipped, with the start of the line (for diagnostics)."""

    __slots__ = ("reason", "preview", "length")

    def __init__(self, reason: str, preview: str, length: int) -> None:
        self.reason = reason
        self.preview = preview
        self.length = length

    def __repr__(self) -> str:
        return f"SkippedLine({self.reason!r}, {self.preview!r}, length={self.length})"


def _preview(line: bytes | bytearray | str) -> str:
    head = line[:_PREVIEW_CHARS]
    if isinstance(head, str):
        return head
    return bytes(head).decode("utf-8", errors="replace")


class LineParser:
    """Incremental NDJSON parser for the CLI's stdout.

    ``feed(chunk)`` returns the messages completed by ``chunk``; ``flush()`` parses a last
    line that had no trailing newline (call it at EOF). ``parse_line(line)`` parses one
    whole line. ``skipped`` counts skipped lines, ``skipped_lines`` keeps the last
    ``keep_skipped`` of them (reason + preview). With ``max_line_bytes`` set, longer lines
    are dropped (counted as skipped) without buffering them whole.
    """

    def __init__(self, max_line_bytes: int | None = None, keep_skipped: int = 10) -> None:
        if max_line_bytes is not None and max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive or None")
        self.max_line_bytes = max_line_bytes
        self.skipped = 0
        self.parsed = 0
        self.skipped_lines: deque[SkippedLine] = deque(maxlen=max(0, keep_skipped))
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line: drop bytes until its newline
        self._discarded = 0
        self._discarded_head = b""

    # ----------------------------------------------------------------------- diagnostics

    @property
    def pending_bytes(self) -> int:
        """Bytes buffered of a line whose newline has not arrived yet."""
        return len(self._buf)

    def _skip(self, reason: str, line: bytes | bytearray | str, length: int | None = None) -> None:
        self.skipped += 1
        if self.skipped_lines.maxlen:
            self.skipped_lines.append(
                SkippedLine(reason, _preview(line), len(line) if length is None else length)
            )

    # --------------------------------------------------------------------------- parsing

    def parse_line(self, line: bytes | bytearray | memoryview | str) -> Message | None:
        """Parse one line (without its newline). Blank lines give ``None`` and are not
        counted; lines that are not a JSON object give ``None`` and are counted as skipped."""
        try:
            if isinstance(line, memoryview):
                line = line.tobytes()
            text = line if isinstance(line, str) else line.decode("utf-8", "replace")
            text = text.strip()
            if text.startswith("\ufeff"):  # a BOM at the start of a stream
                text = text[1:].lstrip()
            if not text:
                return None
            if self.max_line_bytes is not None and len(text) > self.max_line_bytes:
                # len(str) <= len(utf-8 bytes): only strings that may be too long get encoded
                size = len(text.encode("utf-8", "surrogatepass"))
                if size > self.max_line_bytes:
                    self._skip("line too long", text, size)
                    return None
            try:
                obj = json.loads(text)
            except Exception:  # ValueError, RecursionError, ...
                self._skip("not JSON", text)
                return None
            if type(obj) is not dict:
                self._skip("not a JSON object", text)
                return None
            msg = parse_message(obj)
            self.parsed += 1
            return msg
        except Exception:  # pragma: no cover - belt and braces: never raise on input
            self._skip("unparseable", "", 0)
            return None

    def feed(self, data: bytes | bytearray | memoryview | str) -> list[Message]:
        """Add a chunk of stdout; return the messages of every line it completes."""
        if isinstance(data, str):
            chunk = data.encode("utf-8", "surrogatepass")
        elif isinstance(data, bytes):
            chunk = data
        else:
            chunk = bytes(data)
        if not chunk:
            return []
        if b"\n" not in chunk:
            self._append(chunk)
            return []
        parts = chunk.split(b"\n")
        rest = parts.pop()
        out: list[Message] = []
        for i, part in enumerate(parts):
            line: bytes | bytearray = part
            if i == 0:
                if self._discarding:
                    self._end_discard(len(part))
                    continue
                if self._buf:
                    self._buf += part
                    line = self._buf
                    self._buf = bytearray()
            if self._too_long(len(line)):
                self._skip("line too long", line)
                continue
            msg = self.parse_line(line)
            if msg is not None:
                out.append(msg)
        if rest:
            self._append(rest)
        return out

    def flush(self) -> list[Message]:
        """Parse what is left in the buffer as a last line (at EOF) and reset the buffer."""
        if self._discarding:
            self._end_discard(0)
            return []
        if not self._buf:
            return []
        line = self._buf
        self._buf = bytearray()
        msg = self.parse_line(line)
        return [msg] if msg is not None else []

    def reset(self) -> None:
        """Drop any partial line (e.g. after the process was restarted)."""
        self._buf = bytearray()
        self._discarding = False
        self._discarded = 0
        self._discarded_head = b""

    # --------------------------------------------------------------------------- helpers

    def _too_long(self, size: int) -> bool:
        return self.max_line_bytes is not None and size > self.max_line_bytes

    def _append(self, chunk: bytes) -> None:
        if self._discarding:
            self._discarded += len(chunk)
            return
        self._buf += chunk
        if self._too_long(len(self._buf)):
            # keep a preview, drop the rest, and ignore bytes until the line ends
            self._discarding = True
            self._discarded = len(self._buf)
            self._discarded_head = bytes(self._buf[:_PREVIEW_CHARS])
            self._buf = bytearray()

    def _end_discard(self, tail: int) -> None:
        self._discarding = False
        self._skip("line too long", self._discarded_head, self._discarded + tail)
        self._discarded = 0
        self._discarded_head = b""
