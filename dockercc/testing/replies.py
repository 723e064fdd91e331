"""Scripted replies for :class:`~dockercc.testing.ScriptedAPI` and their SSE rendering.

A :class:`Reply` is what the stand-in answers to one ``POST /v1/messages`` request: a few
content blocks (text, thinking, tool_use) streamed as the Messages API's server-sent events,
or an HTTP error. The helper constructors (:func:`text`, :func:`tool_use`, :func:`thinking`,
:func:`error`) cover the usual cases; replies combine with ``+``::

    thinking("let me check") + tool_use("Bash", {"command": "ls"})

This module does no I/O: :func:`render_stream` and :func:`render_message` turn a reply into
wire events / a JSON body, which the server writes out.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

__all__ = [
    "Chunking",
    "TextBlock",
    "ThinkingBlock",
    "ToolUseBlock",
    "Block",
    "APIError",
    "Reply",
    "Responder",
    "ReplyLike",
    "text",
    "tool_use",
    "thinking",
    "error",
    "reply",
    "echo",
    "last_user_text",
    "tool_results",
    "estimate_tokens",
    "render_stream",
    "render_message",
    "as_reply",
]

Chunking: TypeAlias = Literal["word"] | int
"""How a string is cut into deltas: ``"word"`` (one word plus its trailing space per delta) or
a fixed number of characters per delta."""


@dataclass(frozen=True)
class TextBlock:
    """A ``text`` content block, streamed as ``text_delta`` events."""

    text: str
    chunk: Chunking = "word"


@dataclass(frozen=True)
class ThinkingBlock:
    """A ``thinking`` content block, streamed as ``thinking_delta`` then ``signature_delta``."""

    thinking: str
    chunk: Chunking = "word"
    signature: str = "c2NyaXB0ZWQtc2lnbmF0dXJl"  # any opaque string; the CLI echoes it back


@dataclass(frozen=True)
class ToolUseBlock:
    """A ``tool_use`` content block; ``input`` is streamed as ``input_json_delta`` pieces.

    ``id`` ``None`` means a fresh ``toolu_...`` id each time the block is served (a reply that
    is served more than once, e.g. from a route, must not reuse tool ids).
    """

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    json_chunk: int = 16


Block: TypeAlias = TextBlock | ThinkingBlock | ToolUseBlock


@dataclass(frozen=True)
class APIError:
    """An HTTP error answer, shaped like Anthropic's: ``{"type":"error","error":{...}}``.

    With ``in_stream`` the HTTP status is 200 and the error arrives as an SSE ``error`` event
    after ``message_start`` (how the real API reports e.g. ``overloaded_error`` mid-stream).
    ``should_retry`` sets the ``x-should-retry`` header the Anthropic SDKs obey;
    ``retry_after`` (seconds) sets ``retry-after`` / ``retry-after-ms``.
    """

    status: int = 400
    type: str = "invalid_request_error"
    message: str = "scripted error"
    should_retry: bool | None = None
    retry_after: float | None = None
    in_stream: bool = False

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.type, "message": self.message}}

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.should_retry is not None:
            out["x-should-retry"] = "true" if self.should_retry else "false"
        if self.retry_after is not None:
            out["retry-after"] = str(max(0, int(self.retry_after)))
            out["retry-after-ms"] = str(max(0, int(self.retry_after * 1000)))
        return out


@dataclass(frozen=True)
class Reply:
    """One scripted answer to a ``/v1/messages`` request.

    - ``blocks``: content blocks in order (empty blocks + no error = an empty ``end_turn``).
    - ``delay``: seconds to wait between deltas (slow streams for interrupt tests).
    - ``latency``: seconds to wait before the response starts (time to first byte).
    - ``stop_reason``: default ``"tool_use"`` if any block is a tool_use, else ``"end_turn"``.
    - ``input_tokens`` / ``output_tokens``: usage to report (defaults: 10 / estimated from the
      content), small realistic numbers so the CLI computes a cost.
    - ``error``: answer with an error instead (see :class:`APIError`).
    - ``model``: model name to report (default: the request's ``model``).
    - ``message_id``: the message ``id`` to report (default: a fresh ``msg_scripted_...``);
      fixed ids make captured transcripts stable across captures.
    """

    blocks: tuple[Block, ...] = ()
    delay: float = 0.0
    latency: float = 0.0
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: APIError | None = None
    model: str | None = None
    message_id: str | None = None

    def __add__(self, other: Reply) -> Reply:
        """Concatenate blocks; settings (delay, error, ...) come from ``self`` unless unset."""
        if not isinstance(other, Reply):
            return NotImplemented
        return replace(
            self,
            blocks=self.blocks + other.blocks,
            delay=self.delay or other.delay,
            latency=self.latency or other.latency,
            stop_reason=self.stop_reason or other.stop_reason,
            error=self.error or other.error,
            model=self.model or other.model,
            message_id=self.message_id or other.message_id,
        )

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        if any(isinstance(b, ToolUseBlock) for b in self.blocks):
            return "tool_use"
        return "end_turn"

    @property
    def text(self) -> str:
        """The concatenated text of the text blocks (what the CLI reports as ``result``)."""
        return "".join(b.text for b in self.blocks if isinstance(b, TextBlock))


Responder: TypeAlias = Callable[[dict[str, Any]], Reply | str]
"""A callable that builds a reply from the request body (a Messages API request dict);
returning a ``str`` means :func:`text` of it."""

ReplyLike: TypeAlias = Reply | str


# --------------------------------------------------------------------------- constructors


def text(s: str, chunk: Chunking = "word", delay: float = 0.0) -> Reply:
    """A text answer streamed in several ``text_delta`` events, ``delay`` seconds apart."""
    return Reply(blocks=(TextBlock(s, chunk),), delay=delay)


def tool_use(
    name: str,
    input: Mapping[str, Any] | None = None,
    text: str | None = None,
    id: str | None = None,
    delay: float = 0.0,
) -> Reply:
    """An optional leading text block, then a ``tool_use`` block; stop_reason ``tool_use``.

    The CLI runs the tool and POSTs again with a ``tool_result``; script the next reply for it.
    """
    blocks: list[Block] = []
    if text is not None:
        blocks.append(TextBlock(text))
    blocks.append(ToolUseBlock(name, dict(input or {}), id))
    return Reply(blocks=tuple(blocks), delay=delay)


def thinking(
    thought: str, text: str | None = None, chunk: Chunking = "word", delay: float = 0.0
) -> Reply:
    """A ``thinking`` block (``thinking_delta`` events), then a text block if ``text`` is given."""
    blocks: list[Block] = [ThinkingBlock(thought, chunk)]
    if text is not None:
        blocks.append(TextBlock(text, chunk))
    return Reply(blocks=tuple(blocks), delay=delay)


def error(
    status: int = 400,
    type: str = "invalid_request_error",
    message: str | None = None,
    *,
    should_retry: bool | None = None,
    retry_after: float | None = None,
    in_stream: bool = False,
) -> Reply:
    """An HTTP error answer with Anthropic's JSON error body."""
    msg = message if message is not None else f"scripted {type} ({status})"
    return Reply(
        error=APIError(status, type, msg, should_retry, retry_after, in_stream),
    )


def reply(*blocks: Block, delay: float = 0.0, stop_reason: str | None = None) -> Reply:
    """A reply made of arbitrary blocks, e.g. two parallel tool_use blocks."""
    return Reply(blocks=tuple(blocks), delay=delay, stop_reason=stop_reason)


def as_reply(value: Reply | str) -> Reply:
    """``str`` -> :func:`text`; a :class:`Reply` unchanged."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return text(value)
    raise TypeError(f"expected a Reply or str, got {type(value).__name__}")


# --------------------------------------------------------------------------- request helpers


def _content_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _is_reminder(s: str) -> bool:
    return s.lstrip().startswith("<system-reminder>")


def last_user_text(body: Mapping[str, Any] | None) -> str:
    """The most recent text the user typed in a Messages API request body.

    The last non-empty text block of the newest user message that has one, skipping the
    CLI's injected ``<system-reminder>`` blocks and ``tool_result``-only turns — so a tool
    loop's follow-up request still maps to the prompt that started it, and after an
    interrupt (``[Request interrupted by user]`` + the new prompt in one message) it is the
    new prompt. ``""`` if there is none.
    """
    if not isinstance(body, Mapping):
        return ""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        texts = [
            str(b.get("text", ""))
            for b in _content_blocks(message)
            if b.get("type") == "text" and not _is_reminder(str(b.get("text", "")))
        ]
        texts = [t for t in texts if t.strip()]
        if texts:
            return texts[-1]
    return ""


def tool_results(body: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every ``tool_result`` block in the request's messages, oldest first."""
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        return []
    out: list[dict[str, Any]] = []
    for message in body["messages"]:
        if isinstance(message, dict) and message.get("role") == "user":
            out.extend(b for b in _content_blocks(message) if b.get("type") == "tool_result")
    return out


def echo(body: dict[str, Any]) -> Reply:
    """Built-in responder: answers ``"echo: <last user text>"`` (the default when unscripted)."""
    return text(f"echo: {last_user_text(body)}")


def estimate_tokens(s: str) -> int:
    """A rough token count (4 characters a token, at least 1)."""
    return max(1, (len(s) + 3) // 4)


# --------------------------------------------------------------------------- rendering

_WORD = re.compile(r"\s*\S+\s*")


def split_chunks(s: str, chunk: Chunking) -> list[str]:
    """Cut ``s`` into delta pieces whose concatenation is exactly ``s``."""
    if not s:
        return []
    if chunk == "word":
        parts = _WORD.findall(s)
        if "".join(parts) != s:  # only whitespace, or something odd: do not lose characters
            return [s]
        return parts
    if isinstance(chunk, int) and not isinstance(chunk, bool) and chunk > 0:
        return [s[i : i + chunk] for i in range(0, len(s), chunk)]
    raise ValueError(f"chunk must be 'word' or a positive int, got {chunk!r}")


def new_message_id() -> str:
    return "msg_scripted_" + uuid.uuid4().hex[:20]


def new_tool_id() -> str:
    return "toolu_scripted_" + uuid.uuid4().hex[:20]


@dataclass(frozen=True)
class _Resolved:
    """A reply with ids, model and usage fixed for one response."""

    message_id: str
    model: str
    content: list[dict[str, Any]]
    stop_reason: str
    input_tokens: int
    output_tokens: int


def _resolve(r: Reply, request_model: str | None) -> _Resolved:
    content: list[dict[str, Any]] = []
    produced = ""
    for b in r.blocks:
        if isinstance(b, TextBlock):
            content.append({"type": "text", "text": b.text})
            produced += b.text
        elif isinstance(b, ThinkingBlock):
            content.append({"type": "thinking", "thinking": b.thinking, "signature": b.signature})
            produced += b.thinking
        else:
            content.append(
                {
                    "type": "tool_use",
                    "id": b.id or new_tool_id(),
                    "name": b.name,
                    "input": dict(b.input),
                }
            )
            produced += json.dumps(dict(b.input)) + b.name
    return _Resolved(
        message_id=r.message_id or new_message_id(),
        model=r.model or request_model or "claude-scripted",
        content=content,
        stop_reason=r.effective_stop_reason,
        input_tokens=r.input_tokens if r.input_tokens is not None else 10,
        output_tokens=r.output_tokens if r.output_tokens is not None else estimate_tokens(produced),
    )


def render_message(r: Reply, request_model: str | None = None) -> dict[str, Any]:
    """The non-streaming JSON body for a successful reply."""
    res = _resolve(r, request_model)
    return {
        "id": res.message_id,
        "type": "message",
        "role": "assistant",
        "model": res.model,
        "content": res.content,
        "stop_reason": res.stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": res.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": res.output_tokens,
        },
    }


def render_stream(
    r: Reply, request_model: str | None = None
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """The SSE events for a reply, as ``(event_name, data, is_delta)``.

    ``is_delta`` marks the content deltas, between which the server waits ``r.delay``.
    An in-stream error (``APIError.in_stream``) yields ``message_start`` then ``error``.
    """
    res = _resolve(r, request_model)
    yield (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": res.message_id,
                "type": "message",
                "role": "assistant",
                "model": res.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": res.input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        },
        False,
    )
    if r.error is not None and r.error.in_stream:
        yield ("error", r.error.body(), False)
        return
    yield ("ping", {"type": "ping"}, False)
    for index, (block, full) in enumerate(zip(r.blocks, res.content, strict=True)):
        if isinstance(block, TextBlock):
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": piece}
                for piece in split_chunks(block.text, block.chunk)
            ]
        elif isinstance(block, ThinkingBlock):
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": piece}
                for piece in split_chunks(block.thinking, block.chunk)
            ]
            deltas.append({"type": "signature_delta", "signature": block.signature})
        else:
            start = {"type": "tool_use", "id": full["id"], "name": block.name, "input": {}}
            payload = json.dumps(full["input"], ensure_ascii=False)
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in split_chunks(payload, max(1, block.json_chunk))
            ]
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
            False,
        )
        for delta in deltas:
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
                True,
            )
        yield ("content_block_stop", {"type": "content_block_stop", "index": index}, False)
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": res.stop_reason, "stop_sequence": None},
            "usage": {"input_tokens": res.input_tokens, "output_tokens": res.output_tokens},
        },
        False,
    )
    yield ("message_stop", {"type": "message_stop"}, False)
