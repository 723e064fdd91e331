"""Output envelopes: what the runner writes to ``{p}{session}:output`` and ``:output_buffer``.

An envelope is ``{"seq": N, "ts": MS, "event": {...}}``. ``seq`` increases strictly per
session (across runner restarts), ``ts`` is the runner's clock in ms, ``event`` is one CLI
stdout message as the CLI wrote it, or a runner event (``{"type": "dockercc", ...}``).

The runner builds envelopes by string concatenation around the CLI's own line, so the hot
path never re-encodes the CLI's JSON. Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .bounded import MAX_ENVELOPE_BYTES

# the decoder's scanner (json.loads = this + a whitespace regex + checks, per call)
_scan: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

SEQ_MAX = 2**53
"""Largest seq an envelope may carry (a JSON integer every reader keeps exactly)."""
SEQ_WINDOW = 100_000
"""How far ahead of the last seen envelope a reader accepts the next one: a runner's seqs
step by one (across restarts too), so an envelope far ahead is forged, and trusting it would
make the reader drop every real envelope after it as "already seen"."""

RUNNER_EVENT_TYPE = "dockercc"
"""``type`` of events the runner itself emits (errors, lifecycle), next to the CLI's own."""


def encode_envelope(seq: int, ts_ms: int, event_json: str | bytes) -> bytes:
    """Wrap one already-encoded JSON event (a CLI stdout line) without re-encoding it."""
    if isinstance(event_json, str):
        event_json = event_json.encode()
    return b'{"seq":%d,"ts":%d,"event":%s}' % (seq, ts_ms, event_json.strip())


def runner_event(subtype: str, **fields: Any) -> str:
    """A runner event, e.g. ``runner_event("error", error="cli_exited", exit_code=1)``."""
    return json.dumps({"type": RUNNER_EVENT_TYPE, "subtype": subtype, **fields},
                      separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope; ``event`` is the raw dict (parse it with ``parse_message``)."""

    seq: int
    ts: int
    event: dict[str, Any]

    @classmethod
    def decode(cls, data: str | bytes) -> Envelope | None:
        """Decode one envelope; ``None`` for anything that is not a well-formed envelope
        (also: over ``MAX_ENVELOPE_BYTES``, nested too deeply, seq not an int in
        ``[0, SEQ_MAX]``). Never raises."""
        try:
            if len(data) > MAX_ENVELOPE_BYTES:
                return None
            text = data
            if type(data) is bytes and data.startswith(b'{"'):
                # what json.loads does with such bytes (UTF-8, surrogatepass), minus its
                # per-call overhead: this runs once per event
                text = data.decode("utf-8", "surrogatepass")
            if type(text) is str and text.startswith('{"'):
                try:
                    obj, end = _scan(text, 0)
                except StopIteration:
                    end = -1
                if end != len(text):  # trailing whitespace, or not JSON: let json say
                    obj = json.loads(text)
            else:
                obj = json.loads(data)
            seq = obj["seq"]
            event = obj["event"]
            if type(seq) is not int or not 0 <= seq <= SEQ_MAX or not isinstance(event, dict):
                return None
            ts = obj.get("ts", 0)
            return cls(seq=seq, ts=ts if isinstance(ts, int) else 0, event=event)
        except (ValueError, TypeError, KeyError, RecursionError):
            return None

    @property
    def type(self) -> str:
        t = self.event.get("type")
        return t if isinstance(t, str) else ""
