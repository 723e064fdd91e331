"""Sealing a session's saved CLI transcript so only host-approved bytes reach a container.

Why: the runner restores a transcript into the next container's ``~/.claude`` before the CLI
starts, and what the CLI finds there it runs with (a ``settings.json`` with hooks would run
code on resume). The transcript hash (``{p}{session}:transcript``) is written by a container,
so the host treats it as untrusted:

- **Shape** (checked by host and runner): the only file restored is
  ``projects/<dir>/<claude_session_id>.jsonl``, ``<dir>`` and the id plain characters: never
  ``settings.json``, hooks, or any other path under ``~/.claude``.
- **Seal** (host only): when a session's lease ends (close, a lost or parked container), the
  host reads the transcript and stores ``mac`` = HMAC-SHA256(key, session id, Claude session
  id, SHA-256 of the stored data). The key lives on the host (``DOCKERCC_TRANSCRIPT_KEY`` or
  a 0600 file in the user's config dir, see :mod:`dockercc.transcript_key`) and never
  enters Redis or a container. Before a
  restore the host checks the seal, and hands the data's SHA-256 to the new container in its
  private assignment; the runner restores only bytes with that digest. So a transcript
  written or swapped after its session's lease ended (by another container, a stray process,
  or copied from another session) is refused with :class:`TranscriptRejected`.

What the seal does not do: it cannot make the session's own conversation trustworthy (the
agent wrote it); it guarantees the file restored is that conversation, at the fixed path.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from ..errors import BadData, TranscriptRejected
from . import bounded

SEAL_VERSION = b"dockercc-transcript-v1"
CLAUDE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
PROJECT_DIR_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


def check_meta(meta_raw: Any) -> tuple[str, str]:
    """``(relative path, claude session id)`` of a transcript's meta, if it has the only shape
    a restore writes (``projects/<dir>/<id>.jsonl``); :class:`BadData` otherwise."""
    meta = bounded.loads_object(meta_raw, max_bytes=4096, what="transcript meta")
    cid, rel = meta.get("claude_session_id"), meta.get("path")
    if not isinstance(cid, str) or not CLAUDE_ID_RE.fullmatch(cid):
        raise BadData("transcript meta: bad claude_session_id")
    if not isinstance(rel, str):
        raise BadData("transcript meta: bad path")
    parts = PurePosixPath(rel).parts
    if (len(parts) != 3 or parts[0] != "projects" or not PROJECT_DIR_RE.fullmatch(parts[1])
            or parts[1] in (".", "..") or parts[2] != f"{cid}.jsonl"):
        raise BadData("transcript meta: the path is not projects/<dir>/<claude id>.jsonl")
    return rel, cid


def mac(key: bytes, session: str, claude_session_id: str, data: bytes) -> str:
    msg = b"\0".join([SEAL_VERSION, session.encode(), claude_session_id.encode(),
                      hashlib.sha256(data).digest()])
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def seal(key: bytes, session: str, raw: Mapping[Any, Any]) -> str | None:
    """The ``mac`` for a transcript hash as read (``None`` when there is none or it has the
    wrong shape: then nothing is sealed and nothing will be restored)."""
    if not raw.get(b"meta") or not raw.get(b"data"):
        return None
    try:
        _, cid = check_meta(raw[b"meta"])
    except BadData:
        return None
    return mac(key, session, cid, raw[b"data"])


def verify(key: bytes, session: str, raw: Mapping[Any, Any]) -> str:
    """The SHA-256 (hex) of a sealed transcript's data, for the runner; ``""`` when there is
    no transcript; :class:`TranscriptRejected` when it is there but not sealed by this host
    for this session, or of the wrong shape."""
    if not raw.get(b"data"):
        return ""
    try:
        _, cid = check_meta(raw.get(b"meta"))
    except BadData as exc:
        raise TranscriptRejected(f"the saved transcript of session {session!r} is refused: "
                                 f"{exc}") from None
    want = mac(key, session, cid, raw[b"data"])
    got = raw.get(b"mac", b"").decode(errors="replace")
    if not got or not hmac.compare_digest(want, got):
        raise TranscriptRejected(
            f"the saved transcript of session {session!r} is not sealed by this host (it "
            f"changed after its session ended, or the session did not end cleanly here): "
            f"not restored; open a new session")
    return hashlib.sha256(raw[b"data"]).hexdigest()
