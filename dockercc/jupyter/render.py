"""HTML, markdown and plain-text renderings of turns, results, events, sessions and pools.

Pure functions (no IPython, no I/O): the stream views, the rich displays
(:mod:`dockercc.jupyter.display`) and the magics all render through here. Model text is
markdown; raw HTML in it is escaped, never injected (``markdown-it`` with ``html=False``).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from ..events import (
    AssistantMessage,
    BaseEvent,
    ErrorEvent,
    RawEvent,
    Result,
    SystemEvent,
    SystemInit,
    TextDelta,
    ThinkingDelta,
    ToolResult,
    ToolUse,
    UserMessage,
)
from .state import TextPart, ThinkingPart, ToolCard, TurnState, figures

__all__ = [
    "markdown_html",
    "turn_html",
    "turn_markdown",
    "turn_text",
    "turn_bundle",
    "badge_html",
    "footer_html",
    "card_html",
    "card_title",
    "result_html",
    "result_markdown",
    "result_bundle",
    "event_html",
    "event_markdown",
    "event_bundle",
    "table_html",
    "table_markdown",
    "age",
    "esc",
    "status_line",
]

MAX_TOOL_TEXT = 4000
STATUS_COLORS = {
    "starting": "#78909c",
    "streaming": "#1e88e5",
    "tool": "#8e24aa",
    "interrupting": "#fb8c00",
    "done": "#2e7d32",
    "interrupted": "#ef6c00",
    "error": "#c62828",
}
STATUS_LABELS = {
    "starting": "starting…",
    "streaming": "streaming…",
    "tool": "running a tool…",
    "interrupting": "interrupting…",
    "done": "done",
    "interrupted": "interrupted",
    "error": "error",
}
_BOX = ("font-family:var(--jp-ui-font-family,sans-serif);border-left:3px solid {color};"
        "padding:2px 10px;margin:2px 0")
_MUTED = "color:var(--jp-ui-font-color2,#666);font-size:85%"
_PRE = ("white-space:pre-wrap;word-break:break-word;max-height:24em;overflow:auto;margin:2px 0;"
        "padding:4px;background:var(--jp-layout-color2,#f5f5f5)")


@lru_cache(maxsize=1)
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def markdown_html(text: str) -> str:
    """Markdown to HTML; raw HTML in ``text`` is escaped."""
    return str(_markdown().render(text)) if text else ""


def esc(value: Any) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape(str(value), quote=True)


def _clip(text: str, limit: int = MAX_TOOL_TEXT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit:,} more characters)"


def age(ms: int | float | None, now_ms: float | None = None) -> str:
    """How long ago a millisecond timestamp was, e.g. ``"3.2 s"`` (``"-"`` if unknown)."""
    if not ms:
        return "-"
    now = now_ms if now_ms is not None else time.time() * 1000
    seconds = max(0.0, (now - float(ms)) / 1000)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------ pieces


def badge_html(state: TurnState) -> str:
    """The status badge: provider, container, state."""
    color = STATUS_COLORS.get(state.status, "#78909c")
    label = STATUS_LABELS.get(state.status, state.status)
    bits = [f'<span style="background:{color};color:white;border-radius:3px;padding:0 6px">'
            f'{esc(label)}</span>',
            f'<span title="provider">{esc(state.provider)}</span>']
    if state.container:
        bits.append(f'<code title="container">{esc(state.container)}</code>')
    if state.session:
        bits.append(f'<span title="session" style="{_MUTED}">{esc(state.session)}</span>')
    if state.model:
        bits.append(f'<span title="model" style="{_MUTED}">{esc(state.model)}</span>')
    return (f'<div class="dockercc-badge" data-status="{esc(state.status)}" '
            f'style="display:flex;flex-wrap:wrap;gap:2px 8px;align-items:center;'
            f'font-size:90%;white-space:nowrap">'
            + "".join(bits) + "</div>")


def footer_text(figs: Mapping[str, str]) -> str:
    order = ("outcome", "cost", "tokens", "duration", "turns", "model")
    return " · ".join(figs[k] for k in order if k in figs)


def status_line(state: TurnState) -> str:
    label = STATUS_LABELS.get(state.status, state.status)
    figs = dict(state.figures())
    if figs.get("outcome") == label:
        del figs["outcome"]
    text = footer_text(figs)
    return label + (f" · {text}" if text else "")


def footer_html(figs: Mapping[str, str]) -> str:
    if not figs:
        return ""
    spans = " · ".join(f'<span class="dockercc-{k}" title="{k}">{esc(v)}</span>'
                       for k, v in figs.items())
    return f'<div class="dockercc-footer" style="{_MUTED}">{spans}</div>'


def card_title(card: ToolCard) -> str:
    mark = {"running": "…", "ok": "✓", "error": "✗"}[card.status]
    who = " (sub-agent)" if card.subagent else ""
    return f"⚙ {card.name}{who} {mark}"


def card_body_html(card: ToolCard) -> str:
    out = [f'<div style="{_MUTED}">input</div><pre style="{_PRE}">{esc(card.input_json)}</pre>']
    if card.result is not None:
        label = "error" if card.is_error else "result"
        color = "#c62828" if card.is_error else "inherit"
        out.append(f'<div style="{_MUTED}">{label}</div>'
                   f'<pre style="{_PRE};color:{color}">{esc(_clip(card.result))}</pre>')
    else:
        out.append(f'<div style="{_MUTED}">running…</div>')
    return "".join(out)


def card_html(card: ToolCard, *, open: bool = False) -> str:
    """A collapsible card for one tool call (``<details>``)."""
    color = {"running": "#8e24aa", "ok": "#2e7d32", "error": "#c62828"}[card.status]
    return (f'<details class="dockercc-tool" data-tool="{esc(card.name)}" '
            f'data-status="{card.status}"{" open" if open else ""} '
            f'style="border:1px solid {color};border-radius:4px;padding:2px 8px;margin:4px 0">'
            f'<summary><b>{esc(card_title(card))}</b> '
            f'<code style="{_MUTED}">{esc(card.summary)}</code></summary>'
            f'{card_body_html(card)}</details>')


def thinking_html(part: ThinkingPart) -> str:
    return (f'<details class="dockercc-thinking" style="{_MUTED};margin:4px 0">'
            f'<summary>thinking</summary><div style="white-space:pre-wrap">'
            f'{esc(part.text)}</div></details>')


# -------------------------------------------------------------------------------- turns


def written_html(paths: list[str]) -> str:
    """The files the agent wrote in the turn, each with the magic that fetches it."""
    if not paths:
        return ""
    items = "".join(f'<li><code>{esc(p)}</code> <span style="{_MUTED}">'
                    f'%dockercc download {esc(p)}</span></li>' for p in paths)
    return (f'<div class="dockercc-files"><b>files written</b> (in /workspace)'
            f'<ul style="margin:2px 0">{items}</ul></div>')


def turn_html(state: TurnState) -> str:
    """The whole turn as HTML (the display fallback of the stream widget)."""
    body = []
    for part in state.parts:
        if isinstance(part, TextPart):
            body.append(f'<div class="dockercc-text">{markdown_html(part.text)}</div>')
        elif isinstance(part, ThinkingPart):
            body.append(thinking_html(part))
        elif isinstance(part, ToolCard):
            body.append(card_html(part))
    if state.waiting and not state.final:
        body.append(f'<div class="dockercc-waiting" style="color:#ef6c00">'
                    f'waiting: {esc(state.waiting)}</div>')
    if state.error:
        body.append(f'<div class="dockercc-error" style="color:#c62828">'
                    f'{esc(state.error)}</div>')
    body.append(written_html(state.written_files))
    color = STATUS_COLORS.get(state.status, "#78909c")
    return (f'<div class="dockercc-stream" style="{_BOX.format(color=color)}">'
            + badge_html(state) + "".join(body) + footer_html(state.figures()) + "</div>")


def turn_markdown(state: TurnState) -> str:
    out = []
    for part in state.parts:
        if isinstance(part, TextPart):
            out.append(part.text)
        elif isinstance(part, ThinkingPart):
            out.append("> *thinking:* " + part.text.replace("\n", "\n> "))
        elif isinstance(part, ToolCard):
            line = f"**{card_title(part)}** `{part.summary}`"
            if part.result is not None:
                line += "\n```\n" + _clip(part.result, 500) + "\n```"
            out.append(line)
    if state.error:
        out.append(f"**error:** {state.error}")
    out.append(f"*{status_line(state)}*")
    return "\n\n".join(p for p in out if p)


def turn_text(state: TurnState) -> str:
    out = []
    for part in state.parts:
        if isinstance(part, TextPart):
            out.append(part.text)
        elif isinstance(part, ToolCard):
            out.append(f"[{card_title(part)} {part.summary}]")
    if state.waiting and not state.final:
        out.append(f"waiting: {state.waiting}")
    if state.error:
        out.append(f"error: {state.error}")
    out.append(f"-- {status_line(state)}")
    return "\n".join(out)


def turn_bundle(state: TurnState) -> dict[str, str]:
    return {"text/html": turn_html(state), "text/markdown": turn_markdown(state),
            "text/plain": turn_text(state)}


# ------------------------------------------------------------------------------ results


def _result_color(result: Result) -> str:
    if result.interrupted:
        return STATUS_COLORS["interrupted"]
    return STATUS_COLORS["done"] if result.ok else STATUS_COLORS["error"]


def result_html(result: Result) -> str:
    calls = "".join(
        f'<li><code>{esc(c.name)}</code> <code style="{_MUTED}">'
        f'{esc(ToolCard(id=c.id, name=c.name, input=dict(c.input)).summary)}</code></li>'
        for c in result.tool_calls)
    errors = "".join(f'<div style="color:#c62828">{esc(e)}</div>' for e in result.errors)
    return (f'<div class="dockercc-result" style="{_BOX.format(color=_result_color(result))}">'
            f'<div class="dockercc-text">{markdown_html(result.text)}</div>'
            + (f'<div style="{_MUTED}">tool calls</div><ul style="margin:0">{calls}</ul>'
               if calls else "")
            + errors + footer_html(figures(result)) + "</div>")


def result_markdown(result: Result) -> str:
    parts = [result.text] if result.text else []
    if result.tool_calls:
        parts.append("tool calls: " + ", ".join(f"`{c.name}`" for c in result.tool_calls))
    parts.extend(f"**error:** {e}" for e in result.errors)
    figs = footer_text(figures(result))
    if figs:
        parts.append(f"*{figs}*")
    return "\n\n".join(parts)


def result_bundle(result: Result) -> dict[str, str]:
    return {"text/html": result_html(result), "text/markdown": result_markdown(result)}


# ------------------------------------------------------------------------------- events


def _meta(event: BaseEvent) -> str:
    return f'<span style="{_MUTED}">{esc(type(event).__name__)} #{event.seq}</span> '


def event_html(event: BaseEvent) -> str:
    """One event as a small HTML snippet (a :class:`Result` as its full card)."""
    if isinstance(event, Result):
        return result_html(event)
    if isinstance(event, TextDelta | ThinkingDelta):
        style = "white-space:pre-wrap" + (f";{_MUTED}" if isinstance(event, ThinkingDelta) else "")
        return f'<div>{_meta(event)}<span style="{style}">{esc(event.text)}</span></div>'
    if isinstance(event, ToolUse):
        card = ToolCard(id=event.id, name=event.name, input=dict(event.input),
                        subagent=event.parent_tool_use_id is not None)
        return card_html(card, open=True)
    if isinstance(event, ToolResult):
        card = ToolCard(id=event.tool_use_id, name=event.tool_name or "tool", result=event.text,
                        is_error=event.is_error)
        return (f'<div class="dockercc-tool-result">{_meta(event)}'
                f'{card_body_html(card)}</div>')
    if isinstance(event, ErrorEvent):
        return f'<div style="color:#c62828">{_meta(event)}{esc(event.message or event.error)}</div>'
    return f"<div>{_meta(event)}<code>{esc(_event_summary(event))}</code></div>"


def _event_summary(event: BaseEvent) -> str:
    if isinstance(event, SystemInit):
        return f"init model={event.model} tools={len(event.tools)}"
    if isinstance(event, SystemEvent):
        return event.subtype
    if isinstance(event, AssistantMessage | UserMessage):
        return event.text[:200]
    if isinstance(event, RawEvent):
        return f"{event.wire_type}: {event.reason}"
    return type(event).__name__


def event_markdown(event: BaseEvent) -> str:
    if isinstance(event, Result):
        return result_markdown(event)
    if isinstance(event, TextDelta):
        return event.text
    if isinstance(event, ThinkingDelta):
        return "> *thinking:* " + event.text
    if isinstance(event, ToolUse):
        return f"⚙ `{event.name}` `{json.dumps(event.input, ensure_ascii=False, default=str)}`"
    if isinstance(event, ToolResult):
        label = "error" if event.is_error else "result"
        return f"{label} of `{event.tool_name or event.tool_use_id}`:\n```\n{_clip(event.text, 500)}\n```"
    if isinstance(event, ErrorEvent):
        return f"**error:** {event.message or event.error}"
    return f"`{type(event).__name__}` {_event_summary(event)}"


def event_bundle(event: BaseEvent) -> dict[str, str]:
    return {"text/html": event_html(event), "text/markdown": event_markdown(event)}


# ------------------------------------------------------------------------------- tables


def table_html(rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None, *,
               title: str = "", empty: str = "nothing to show") -> str:
    cols = list(columns) if columns is not None else list(dict.fromkeys(
        k for row in rows for k in row))
    head = f'<div style="font-weight:bold">{esc(title)}</div>' if title else ""
    if not rows:
        return f'<div class="dockercc-table">{head}<div style="{_MUTED}">{esc(empty)}</div></div>'
    th = "".join(f'<th style="text-align:left">{esc(c)}</th>' for c in cols)
    trs = "".join("<tr>" + "".join(f'<td style="text-align:left">{esc(_cell(r.get(c)))}</td>'
                                   for c in cols) + "</tr>" for r in rows)
    return (f'<div class="dockercc-table">{head}<table><thead><tr>{th}</tr></thead>'
            f"<tbody>{trs}</tbody></table></div>")


def table_markdown(rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None, *,
                   title: str = "", empty: str = "nothing to show") -> str:
    cols = list(columns) if columns is not None else list(dict.fromkeys(
        k for row in rows for k in row))
    head = f"**{title}**\n\n" if title else ""
    if not rows:
        return head + f"*{empty}*"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in cols) + " |")
    return head + "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
