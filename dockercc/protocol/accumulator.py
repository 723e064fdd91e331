"""Assemble one turn's answer from the CLI's messages. Pure: no I/O.

The CLI reports the same content twice when run with ``--include-partial-messages``: first
as ``stream_event`` deltas, then as complete ``assistant`` messages with the same message id
(often one ``assistant`` line per content block, all sharing that id). The rule here:

* if any stream content (``content_block_start`` / ``content_block_delta``) was seen for a
  message id, the ``assistant`` copies of that id add no text or thinking (their tool calls
  are still merged by tool-use id, and fill in inputs the deltas did not complete);
* otherwise (no partial messages, as in ``-p`` runs without the flag) text, thinking and
  tool calls come from the ``assistant`` messages.

Text blocks of one message are joined as they are (``""``); text of different messages is
separated by a blank line (``"\\n\\n"``). :meth:`TurnAccumulator.add` returns exactly the text
it appended, so ``"".join(add(m) for m in turn) == acc.text`` (handy for live rendering).

Messages of sub-agents (``parent_tool_use_id`` set) add no text, thinking, tool calls or
results unless ``include_subagents=True`` (their streaming and tool-call state is still kept:
:class:`~dockercc._mapper.EventMapper` reads it for every message). Messages after the turn's
``result`` are ignored.

A tool call's input is complete as soon as it is known: an ``assistant`` line's ``input`` is
final, also when it is ``{}`` (the CLI writes the input it parsed; the transcripts of
tests/fixtures/claude-code-2.1.328 show every ``tool_use`` of an ``assistant`` line with its
whole input, and a tool without parameters is called with ``{}``); a streamed block's
``input`` at ``content_block_start`` is a placeholder, completed at ``content_block_stop`` by
its ``input_json_delta`` fragments (none, or blank ones: the placeholder, normally ``{}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .messages import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJsonDelta,
    Message,
    MessageDeltaEvent,
    MessageStartEvent,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    WireAssistantMessage,
    WireResultMessage,
    WireTextDelta,
    WireThinkingDelta,
    WireUserMessage,
)

__all__ = ["ToolCall", "ToolResultRecord", "TurnAccumulator"]

MESSAGE_SEPARATOR = "\n\n"


@dataclass(slots=True)
class ToolCall:
    """One tool call of the model. ``input`` is ``{}`` until it is known in full; while it
    streams, ``partial_json`` holds the JSON text received so far."""

    id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    parent_tool_use_id: str | None = None
    partial_json: str = ""
    complete: bool = False


@dataclass(slots=True)
class ToolResultRecord:
    """The result of one tool call, as the CLI gave it back to the model. ``structured`` is
    the user line's ``tool_use_result`` (e.g. Bash's stdout/stderr), when there is one."""

    tool_use_id: str
    content: Any = None
    is_error: bool = False
    structured: Any = None


class _MsgState:
    __slots__ = ("streamed", "listed")

    def __init__(self) -> None:
        self.streamed = False
        self.listed = False


class _BlockState:
    __slots__ = ("kind", "tool_id", "partial")

    def __init__(self, kind: str, tool_id: str | None = None) -> None:
        self.kind = kind
        self.tool_id = tool_id
        self.partial: list[str] = []


def _parse_input(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class TurnAccumulator:
    """Feed it the messages of one turn with :meth:`add`; read ``text``, ``thinking``,
    ``tool_calls``, ``tool_results`` and ``result``. ``done`` turns true at the ``result``."""

    def __init__(self, *, include_subagents: bool = False) -> None:
        self.include_subagents = include_subagents
        self.result: WireResultMessage | None = None
        self.tool_results: dict[str, ToolResultRecord] = {}
        self.session_id: str | None = None
        self.model: str | None = None
        self.stop_reason: str | None = None
        self.aborted = False
        self.message_ids: list[str] = []
        self._msgs: dict[str, _MsgState] = {}
        self._blocks: dict[tuple[str, int], _BlockState] = {}
        self._current: dict[str | None, str] = {}  # parent_tool_use_id -> streaming message id
        self._tools: dict[str, ToolCall] = {}
        self._anon_ids: set[str] = set()  # message keys made up for messages without an id
        #: the key of the message the last stream event added belonged to, and the ids of
        #: the last ``assistant`` line's tool calls in block order (read by the event mapper)
        self.last_message = ""
        self.last_tool_ids: list[str] = []
        self._text_parts: list[str] = []
        self._text_msg: str | None = None
        self._text_cache: str | None = ""
        self._thinking_parts: list[str] = []
        self._thinking_msg: str | None = None
        self._anon = 0

    # ------------------------------------------------------------------------- results

    @property
    def done(self) -> bool:
        """True once the turn's ``result`` message was added."""
        return self.result is not None

    @property
    def text(self) -> str:
        """All assistant text of the turn, each piece counted once."""
        if self._text_cache is None:
            self._text_cache = "".join(self._text_parts)
        return self._text_cache

    @property
    def thinking(self) -> str:
        return "".join(self._thinking_parts)

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Tool calls in the order they started (sub-agents' only with ``include_subagents``)."""
        return [c for c in self._tools.values()
                if c.parent_tool_use_id is None or self.include_subagents]

    def tool(self, tool_id: str) -> ToolCall | None:
        """The call ``tool_id`` of this turn (a sub-agent's too), as far as it is known."""
        return self._tools.get(tool_id)

    def block_tool(self, message_id: str, index: int) -> ToolCall | None:
        """The tool call streamed as block ``index`` of message ``message_id``, if it is one."""
        state = self._blocks.get((message_id, index))
        return self._tools.get(state.tool_id) if state is not None and state.tool_id else None

    def streamed(self, message_id: str) -> bool:
        """Whether any content of the message was streamed (``content_block_*`` events)."""
        state = self._msgs.get(message_id)
        return state is not None and state.streamed

    def real_id(self, message_id: str) -> str | None:
        """``message_id`` itself, or None for a key made up for a message without an id."""
        return None if message_id in self._anon_ids else message_id

    @property
    def is_error(self) -> bool | None:
        """The result's ``is_error`` (``None`` before the result)."""
        return None if self.result is None else self.result.is_error

    @property
    def subtype(self) -> str | None:
        return None if self.result is None else self.result.subtype

    # ------------------------------------------------------------------------- feeding

    def extend(self, messages: Iterable[Message]) -> str:
        """:meth:`add` each message; return all text appended."""
        return "".join([self.add(m) for m in messages])

    def add(self, msg: Message) -> str:
        """Take one message of the turn; return the assistant text it appended ("" if none)."""
        if self.result is not None:
            return ""
        if isinstance(msg, StreamEvent):
            return self._on_stream(msg, self._skip_parent(msg.parent_tool_use_id))
        if isinstance(msg, WireAssistantMessage):
            return self._on_assistant(msg, self._skip_parent(msg.parent_tool_use_id))
        if isinstance(msg, WireUserMessage):
            if not self._skip_parent(msg.parent_tool_use_id):
                self._on_user(msg)
            return ""
        if isinstance(msg, WireResultMessage):
            self._on_result(msg)
            return ""
        if isinstance(msg, SystemMessage) and msg.subtype == "init":
            self.session_id = msg.session_id or self.session_id
            self.model = msg.model or self.model
        return ""

    def add_delta(self, kind: str, value: str, index: int = 0, parent: str | None = None,
                  api_message_id: str | None = None) -> str:
        """:meth:`add` of a ``stream_event`` ``content_block_delta`` given as its parts (see
        :func:`~dockercc.protocol.messages.stream_delta`): the same effect and return value,
        without the models. ``kind`` is ``"text_delta"``, ``"thinking_delta"`` or
        ``"input_json_delta"``, ``value`` its text / thinking / partial JSON."""
        if self.result is not None:
            return ""
        message_id = self._delta_message_id(parent, api_message_id)
        return self._on_delta(message_id, index, kind, value, self._skip_parent(parent))

    # ------------------------------------------------------------------------- internals

    def _skip_parent(self, parent: str | None) -> bool:
        return parent is not None and not self.include_subagents

    def _anon_id(self, prefix: str) -> str:
        self._anon += 1
        return f"{prefix}{self._anon}"

    def _anon_message(self) -> str:
        key = self._anon_id("stream_")
        self._anon_ids.add(key)
        return key

    def _msg(self, message_id: str, skip: bool = False) -> _MsgState:
        state = self._msgs.get(message_id)
        if state is None:
            state = self._msgs[message_id] = _MsgState()
        if not skip and not state.listed:
            state.listed = True
            self.message_ids.append(message_id)
        return state

    def _add_text(self, message_id: str, text: str) -> str:
        if not text:
            return ""
        if self._text_parts and self._text_msg != message_id:
            text = MESSAGE_SEPARATOR + text
        self._text_msg = message_id
        self._text_parts.append(text)
        self._text_cache = None
        return text

    def _add_thinking(self, message_id: str, text: str) -> None:
        if not text:
            return
        if self._thinking_parts and self._thinking_msg != message_id:
            text = MESSAGE_SEPARATOR + text
        self._thinking_msg = message_id
        self._thinking_parts.append(text)

    def _add_tool(self, block: ToolUseBlock, message_id: str, parent: str | None, *,
                  final: bool) -> str:
        """A ``tool_use`` block: ``final`` for an ``assistant`` line's (its input is the
        whole input, ``{}`` included), not for a ``content_block_start``'s placeholder."""
        tool_id = block.id or self._anon_id("toolu_anon_")
        call = self._tools.get(tool_id)
        if call is None:
            call = ToolCall(
                id=tool_id,
                name=block.name,
                input=dict(block.input),
                message_id=message_id,
                parent_tool_use_id=parent,
                complete=final,
            )
            self._tools[tool_id] = call
            return tool_id
        if not call.name and block.name:
            call.name = block.name
        if final and not call.complete:
            call.input = dict(block.input)
            call.complete = True
        return tool_id

    def _stream_message_id(self, ev: StreamEvent) -> str:
        parent = ev.parent_tool_use_id
        event = ev.event
        if isinstance(event, MessageStartEvent):
            message_id = event.message.id or ev.api_message_id or self._anon_message()
            self._current[parent] = message_id
            return message_id
        return self._delta_message_id(parent, ev.api_message_id)

    def _delta_message_id(self, parent: str | None, api_message_id: str | None) -> str:
        """The message a stream event other than ``message_start`` belongs to."""
        if api_message_id:
            current = api_message_id
        else:
            current = self._current.get(parent) or ""
            if not current:
                current = self._current[parent] = self._anon_message()
        self.last_message = current
        return current

    def _on_stream(self, ev: StreamEvent, skip: bool) -> str:
        """A stream event; ``skip``: a sub-agent's (its state only, no text or thinking)."""
        event = ev.event
        if isinstance(event, dict):
            return ""
        message_id = self._stream_message_id(ev)
        self.last_message = message_id
        if isinstance(event, MessageStartEvent):
            self._msg(message_id, skip)
            if event.message.model and not skip:
                self.model = event.message.model
            return ""
        if isinstance(event, ContentBlockStartEvent):
            self._msg(message_id, skip).streamed = True
            block = event.content_block
            key = (message_id, event.index)
            if isinstance(block, TextBlock):
                self._blocks[key] = _BlockState("text")
                return "" if skip else self._add_text(message_id, block.text)
            if isinstance(block, ToolUseBlock):
                tool_id = self._add_tool(block, message_id, ev.parent_tool_use_id, final=False)
                self._blocks[key] = _BlockState("tool_use", tool_id)
                return ""
            if isinstance(block, ThinkingBlock):
                self._blocks[key] = _BlockState("thinking")
                if not skip:
                    self._add_thinking(message_id, block.thinking)
                return ""
            kind = block.get("type") if isinstance(block, dict) else None
            self._blocks[key] = _BlockState(kind if isinstance(kind, str) else "unknown")
            return ""
        if isinstance(event, ContentBlockDeltaEvent):
            delta = event.delta
            if isinstance(delta, WireTextDelta):
                return self._on_delta(message_id, event.index, "text_delta", delta.text, skip)
            if isinstance(delta, WireThinkingDelta):
                return self._on_delta(message_id, event.index, "thinking_delta",
                                      delta.thinking, skip)
            if isinstance(delta, InputJsonDelta):
                return self._on_delta(message_id, event.index, "input_json_delta",
                                      delta.partial_json, skip)
            self._msg(message_id, skip).streamed = True  # an unknown or signature delta
            return ""
        if isinstance(event, ContentBlockStopEvent):
            state = self._blocks.get((message_id, event.index))
            if state is not None and state.tool_id is not None:
                self._finish_tool(state.tool_id)
            return ""
        if isinstance(event, MessageDeltaEvent):
            if event.delta.stop_reason and not skip:
                self.stop_reason = event.delta.stop_reason
            return ""
        return ""

    def _on_delta(self, message_id: str, index: int, kind: str, value: str,
                  skip: bool) -> str:
        """One text / thinking / input-JSON delta (both :meth:`add` and :meth:`add_delta`)."""
        self._msg(message_id, skip).streamed = True
        if kind == "text_delta":
            return "" if skip else self._add_text(message_id, value)
        if kind == "thinking_delta":
            if not skip:
                self._add_thinking(message_id, value)
            return ""
        if kind == "input_json_delta":
            key = (message_id, index)
            block = self._blocks.get(key)
            if block is None:
                block = self._blocks[key] = _BlockState("tool_use")
            block.partial.append(value)
            if block.tool_id is not None:
                call = self._tools.get(block.tool_id)
                if call is not None and not call.complete:
                    call.partial_json += value
        return ""

    def _finish_tool(self, tool_id: str) -> None:
        call = self._tools.get(tool_id)
        if call is None or call.complete:
            return
        # no fragments (or blank ones): the block's own input, the placeholder ({})
        parsed = _parse_input(call.partial_json) if call.partial_json.strip() else call.input
        if parsed is not None:
            call.input = parsed
            call.complete = True

    def _on_assistant(self, msg: WireAssistantMessage, skip: bool) -> str:
        """An ``assistant`` line; ``skip``: a sub-agent's (its tool calls' state only)."""
        message_id = msg.message.id or self._anon_id("assistant_")
        state = self._msg(message_id, skip)
        if not skip:
            if msg.aborted:
                self.aborted = True
            if msg.message.model:
                self.model = msg.message.model
            if msg.message.stop_reason:
                self.stop_reason = msg.message.stop_reason
        added: list[str] = []
        self.last_tool_ids = []
        for block in msg.message.blocks:
            if isinstance(block, ToolUseBlock):
                self.last_tool_ids.append(
                    self._add_tool(block, message_id, msg.parent_tool_use_id, final=True))
            elif state.streamed or skip:
                continue
            elif isinstance(block, TextBlock):
                added.append(self._add_text(message_id, block.text))
            elif isinstance(block, ThinkingBlock):
                self._add_thinking(message_id, block.thinking)
        return "".join(added)

    def _on_user(self, msg: WireUserMessage) -> None:
        results = msg.tool_results
        structured = msg.tool_use_result if len(results) == 1 else None
        for block in results:
            self.tool_results[block.tool_use_id] = ToolResultRecord(
                tool_use_id=block.tool_use_id,
                content=block.content,
                is_error=bool(block.is_error),
                structured=structured,
            )

    def _on_result(self, msg: WireResultMessage) -> None:
        for tool_id in list(self._tools):
            self._finish_tool(tool_id)
        self.result = msg
        if msg.session_id:
            self.session_id = msg.session_id
        if msg.stop_reason:
            self.stop_reason = msg.stop_reason
