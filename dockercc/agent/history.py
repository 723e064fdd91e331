"""What the runner remembers of the session's conversation: the turn in flight (busy, its
prompt, text and tool calls), the totals (turns, cost, the CLI's session id), the history
entry of each turn (``:history``, read by the ``sessions_history`` tool), and the CLI's own
transcript, kept in Redis (``:transcript``) so the session can resume in a new container.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import zlib
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from ..protocol.keys import SessionKeys
from ..protocol.transcript import check_meta as check_transcript_meta
from .early import AgentIds, agent_fs, claude_home
from .liveness import PipeOp, now_ms

log = logging.getLogger("dockercc.agent")

TRANSCRIPT_MAX = 32 * 1024 * 1024
HISTORY_RESULT_LINE = 64 * 1024  # tool results on lines up to this size go into the history


def find_transcript(claude_session_id: str, agent: AgentIds | None = None) -> Path | None:
    """The CLI's own transcript of a conversation (``~/.claude/projects/*/<id>.jsonl``),
    looked up as the agent (``agent``: see :func:`.early.agent_fs`)."""
    # the id comes from the CLI's output and names a file: plain characters only, so a glob
    # pattern ("*") or a path cannot pick up another conversation's transcript
    if not claude_session_id or not all(c.isascii() and (c.isalnum() or c in "-_")
                                        for c in claude_session_id):
        return None
    with agent_fs(agent):
        for path in (claude_home() / "projects").glob(f"*/{claude_session_id}.jsonl"):
            return path
    return None


def read_agent_file(path: Path, limit: int, agent: AgentIds | None) -> bytes:
    """A file of the agent's, read as the agent: only a regular file, only up to ``limit``
    (+1, so a caller sees it was longer): a FIFO or a huge file the agent put in its place
    must not stall or swamp the runner's loop."""
    with agent_fs(agent):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return f.read(limit + 1)


class Conversation:
    """The session's conversation, as far as the runner keeps state of it (the rest of every
    line is relayed untouched)."""

    def __init__(self, agent: AgentIds | None = None) -> None:
        self.agent = agent
        self.busy = False  # a prompt was written and its result has not come yet
        self.turns = 0
        self.cost = 0.0
        self.claude_session_id = ""
        #: the host's W3C trace context of this turn, sent back with its MCP requests so the
        #: host's spans of the container's work join the turn's trace (the runner itself has
        #: no OpenTelemetry: see dockercc.tracing)
        self.traceparent = ""
        self._prompt = ""
        self._text: list[str] = []
        self._tools: list[dict[str, Any]] = []

    def resume(self, state: dict[Any, Any]) -> None:
        """Go on from the session's state hash (a runner before this one served it)."""
        sid: Any = state.get(b"claude_session_id") or b""
        self.claude_session_id = sid.decode() if isinstance(sid, bytes) else str(sid)
        self.turns = int(state.get(b"turns") or 0)
        self.cost = float(state.get(b"cost_usd") or 0.0)

    def took_prompt(self, line: str, trace: Any) -> None:
        """A user line was written to the CLI: a turn is in flight."""
        self.busy = True
        self._prompt = prompt_text(line) or self._prompt
        self.traceparent = trace[:64] if isinstance(trace, str) else ""

    @property
    def calls_pending(self) -> bool:
        """The turn made tool calls (their results go into its history entry)."""
        return bool(self._tools)

    def on_assistant(self, obj: dict[str, Any]) -> None:
        """Keep the text and tool calls of a top-level ``assistant`` line."""
        for block in (obj.get("message") or {}).get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                self._text.append(block["text"])
            elif block.get("type") == "tool_use":
                self._tools.append({"id": block.get("id"), "name": block.get("name"),
                                    "input": _clip(block.get("input"))})

    def note_tool_results(self, line: bytes) -> None:
        """Put the tool results of a (small) ``user`` line next to their calls in the turn's
        history entry (read by the ``sessions_history`` tool)."""
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if not isinstance(obj, dict) or obj.get("parent_tool_use_id"):
            return
        calls = {c.get("id"): c for c in self._tools}
        for block in (obj.get("message") or {}).get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                call = calls.get(block.get("tool_use_id"))
                if call is not None:
                    call["result"] = _result_text(block.get("content"), 2000)
                    call["is_error"] = bool(block.get("is_error"))

    def on_result(self, obj: dict[str, Any]) -> None:
        """The turn ended (its ``result`` line): the totals move on."""
        self.busy = False
        self.turns += 1
        cost = obj.get("total_cost_usd")
        if isinstance(cost, int | float):
            self.cost += float(cost)
        if isinstance(obj.get("session_id"), str):
            self.claude_session_id = obj["session_id"]

    def history_op(self, result: dict[str, Any], key: str, keep: int) -> PipeOp:
        """One history entry per turn: prompt, assistant text, tool calls, outcome."""
        text = result.get("result") if isinstance(result.get("result"), str) else ""
        entry = json.dumps({
            "ts": now_ms(), "turn": self.turns, "prompt": self._prompt,
            "text": text or "\n\n".join(self._text), "tool_calls": self._tools,
            "is_error": bool(result.get("is_error")), "subtype": result.get("subtype"),
            "cost_usd": result.get("total_cost_usd"), "duration_ms": result.get("duration_ms"),
        }, ensure_ascii=False)
        self._prompt, self._text, self._tools = "", [], []

        def op(pipe: Any) -> None:
            if keep > 0:
                pipe.rpush(key, entry)
                pipe.ltrim(key, -keep, -1)
        return op

    def transcript_op(self, key: str | None) -> PipeOp:
        """Keep the CLI's transcript in Redis (at ``key``) so the session can resume in a new
        container (read now, written with the turn's result; zlib level 1: ~300 MB/s)."""
        path = find_transcript(self.claude_session_id, self.agent)
        try:
            data = (read_agent_file(path, TRANSCRIPT_MAX, self.agent)
                    if path is not None and key is not None else b"")
        except OSError:
            data = b""
        if not data or len(data) > TRANSCRIPT_MAX or path is None or key is None:
            return lambda pipe: None
        rel = path.relative_to(claude_home()).as_posix()
        blob = json.dumps({"path": rel, "claude_session_id": self.claude_session_id}).encode()
        mapping = {"meta": blob, "data": zlib.compress(data, 1)}
        return lambda pipe: pipe.hset(key, mapping=mapping)

    async def restore_transcript(self, r: aioredis.Redis, source: SessionKeys,
                                 sha256: str) -> None:
        """Write the transcript the session ``source`` kept into the agent's home (only the
        bytes the host sealed and verified: ``sha256``) and resume its conversation. Raises
        ValueError, KeyError, OSError or zlib.error for a transcript it refuses."""
        raw: dict[Any, Any] = await r.hgetall(source.transcript)
        if not raw.get(b"meta") or not raw.get(b"data"):
            return
        # only projects/<dir>/<claude id>.jsonl (never settings.json, hooks or any other
        # file the CLI would act on), and only the bytes the host sealed and verified
        rel, cid = check_transcript_meta(raw[b"meta"])
        if not sha256 or hashlib.sha256(raw[b"data"]).hexdigest() != sha256:
            raise ValueError("not the transcript the host verified")
        dest = claude_home() / rel
        inflate = zlib.decompressobj()
        data = inflate.decompress(raw[b"data"], TRANSCRIPT_MAX + 1)
        if len(data) > TRANSCRIPT_MAX or inflate.unconsumed_tail:
            raise ValueError(f"transcript over {TRANSCRIPT_MAX} bytes")
        with agent_fs(self.agent):  # the agent's files, as the CLI would have written
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        self.claude_session_id = cid


def prompt_text(line: str) -> str:
    """The text of a user stdin line (for history)."""
    try:
        obj = json.loads(line)
        content = obj["message"]["content"]
    except (ValueError, KeyError, TypeError):
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content
                         if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _clip(value: Any, limit: int = 4000) -> Any:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= limit else text[:limit] + "..."


def _result_text(content: Any, limit: int) -> str:
    """The text of a tool_result's content (a string or text blocks), clipped."""
    if isinstance(content, list):
        content = "\n".join(str(b.get("text", "")) for b in content
                            if isinstance(b, dict) and b.get("type") == "text")
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
