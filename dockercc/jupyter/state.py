"""What a stream view shows, as plain data: the turn's parts (text, thinking, tool cards),
its status and, at the end, its :class:`~dockercc.events.Result`.

Pure: no IPython, no widgets. Every view (widget, HTML display, terminal text) renders a
:class:`TurnState`; tests read it directly.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ..events import (
    ErrorEvent,
    Result,
    SystemEvent,
    SystemInit,
    TextDelta,
    ThinkingDelta,
    ToolResult,
    ToolUse,
)

__all__ = [
    "TextPart",
    "ThinkingPart",
    "ToolCard",
    "Part",
    "TurnState",
    "Status",
    "figures",
]

Status = Literal["starting", "streaming", "tool", "interrupting", "done", "interrupted", "error"]
FINAL_STATUSES = ("done", "interrupted", "error")


@dataclass
class TextPart:
    """Answer text (markdown), streamed in pieces."""

    text: str = ""
    kind: Literal["text"] = "text"


@dataclass
class ThinkingPart:
    """The model's thinking (shown collapsed)."""

    text: str = ""
    kind: Literal["thinking"] = "thinking"


WRITING_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
"""The CLI's tools that write a file named in their input (``file_path``)."""


@dataclass
class ToolCard:
    """One tool call: its name and input, then its result (or error)."""

    id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)
    result: str | None = None
    is_error: bool = False
    subagent: bool = False
    kind: Literal["tool"] = "tool"

    @property
    def status(self) -> Literal["running", "ok", "error"]:
        if self.result is None:
            return "running"
        return "error" if self.is_error else "ok"

    @property
    def input_json(self) -> str:
        return json.dumps(self.input, ensure_ascii=False, indent=2, default=str)

    @property
    def summary(self) -> str:
        """A one-line view of the input (for card titles)."""
        text = json.dumps(self.input, ensure_ascii=False, default=str)
        return text if len(text) <= 80 else text[:77] + "..."


Part = TextPart | ThinkingPart | ToolCard


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def figures(result: Result | None, elapsed_s: float | None = None) -> dict[str, str]:
    """The footer's figures, formatted: outcome, cost, tokens, duration, turns, model.

    Keys appear only when known: ``outcome``, ``cost``, ``tokens``, ``duration``, ``turns``,
    ``model``. ``elapsed_s`` stands in for the duration before (or without) a result."""
    out: dict[str, str] = {}
    if result is not None:
        if result.interrupted:
            out["outcome"] = "interrupted"
        elif result.ok:
            out["outcome"] = result.subtype or "success"
        else:
            out["outcome"] = result.subtype or "error"
        if result.cost_usd is not None:
            out["cost"] = f"${result.cost_usd:.4f}"
        usage = result.usage or {}
        tokens_in = _int(usage.get("input_tokens"))
        tokens_out = _int(usage.get("output_tokens"))
        cached = sum(v for v in (_int(usage.get("cache_read_input_tokens")),
                                 _int(usage.get("cache_creation_input_tokens"))) if v)
        if tokens_in is not None or tokens_out is not None:
            tokens = f"{tokens_in or 0:,} in / {tokens_out or 0:,} out"
            if cached:
                tokens += f" ({cached:,} cached)"
            out["tokens"] = tokens
        if result.duration_ms is not None:
            out["duration"] = f"{result.duration_ms / 1000:.1f} s"
        if result.num_turns is not None:
            out["turns"] = f"{result.num_turns} turn{'s' if result.num_turns != 1 else ''}"
        if result.model:
            out["model"] = result.model
    if "duration" not in out and elapsed_s is not None:
        out["duration"] = f"{elapsed_s:.1f} s"
    return out


@dataclass
class TurnState:
    """One turn as a view shows it. Feed it events with :meth:`feed`; ``version`` counts
    changes (views re-render when it moved)."""

    session: str = ""
    agent: str = ""
    prompt: str = ""
    provider: str = "docker-claude-code"
    container: str | None = None
    model: str | None = None
    status: Status = "starting"
    parts: list[Part] = field(default_factory=list)
    result: Result | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    version: int = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The answer text streamed so far (all text parts, in order)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def thinking(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, ThinkingPart))

    @property
    def cards(self) -> list[ToolCard]:
        return [p for p in self.parts if isinstance(p, ToolCard)]

    @property
    def written_files(self) -> list[str]:
        """Workspace paths (relative) the agent's Write / Edit tools changed in this turn,
        in order, once each (what ``%dockercc download PATH`` takes)."""
        out: list[str] = []
        for card in self.cards:
            if card.name not in WRITING_TOOLS or card.status != "ok":
                continue
            path = card.input.get("file_path") or card.input.get("notebook_path")
            if isinstance(path, str) and path.startswith("/workspace/"):
                rel = path[len("/workspace/"):]
                if rel and ".." not in rel.split("/") and rel not in out:
                    out.append(rel)
        return out

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def elapsed_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def figures(self) -> dict[str, str]:
        return figures(self.result, self.elapsed_s)

    # -- writing ---------------------------------------------------------------------------

    def _changed(self) -> None:
        self.version += 1

    def set_status(self, status: Status) -> None:
        if self.final or status == self.status:
            return
        self.status = status
        self._changed()

    def set_container(self, container: str | None) -> None:
        if container and container != self.container:
            self.container = container
            self._changed()

    def _append_text(self, cls: type[TextPart] | type[ThinkingPart], text: str) -> None:
        last = self.parts[-1] if self.parts else None
        if isinstance(last, cls):
            last.text += text
        else:
            self.parts.append(cls(text))

    def feed(self, event: object) -> None:
        """Take one event of the turn."""
        if isinstance(event, TextDelta):
            if event.text:
                self._append_text(TextPart, event.text)
                self.set_status("streaming")
        elif isinstance(event, ThinkingDelta):
            if event.text:
                self._append_text(ThinkingPart, event.text)
        elif isinstance(event, ToolUse):
            self.parts.append(ToolCard(id=event.id, name=event.name, input=dict(event.input),
                                       subagent=event.parent_tool_use_id is not None))
            self.set_status("tool")
        elif isinstance(event, ToolResult):
            card = next((c for c in reversed(self.cards) if c.id == event.tool_use_id), None)
            if card is None:
                card = ToolCard(id=event.tool_use_id, name=event.tool_name or "tool",
                                subagent=event.parent_tool_use_id is not None)
                self.parts.append(card)
            card.result = event.text
            card.is_error = event.is_error
            self.set_status("streaming")
        elif isinstance(event, SystemInit):
            if event.model:
                self.model = event.model
            self.set_status("streaming")
        elif isinstance(event, SystemEvent):
            return
        elif isinstance(event, ErrorEvent):
            self.error = event.message or event.error
        elif isinstance(event, Result):
            self.finish(result=event)
            return
        else:
            return
        self._changed()

    def finish(self, *, result: Result | None = None, error: BaseException | str | None = None,
               interrupted: bool = False) -> None:
        """End the turn: with its result, an error, or as interrupted without a result."""
        if result is not None:
            self.result = result
            if result.model and not self.model:
                self.model = result.model
            streamed = self.text
            if result.text and not streamed:
                self.parts.append(TextPart(result.text))
            elif result.text.startswith(streamed) and len(result.text) > len(streamed):
                # deltas drained after an interrupt never reached the view
                self._append_text(TextPart, result.text[len(streamed):])
        if error is not None:
            self.error = error if isinstance(error, str) else (
                f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
        res = self.result
        status: Status
        if interrupted or (res is not None and res.interrupted):
            status = "interrupted"
        elif error is not None or (res is not None and not res.ok):
            status = "error"
            if self.error is None and res is not None:
                self.error = "; ".join(res.errors) or f"the turn failed ({res.subtype})"
        elif res is None:
            status = "error" if self.error else "done"
        else:
            status = "done"
        self.status = status
        self.ended = self.ended or time.monotonic()
        self._changed()
