"""The event mapper: one session's envelopes in, the public events of :mod:`dockercc.events`
out. Private: the session, the CLI face and the providers hold one; users get its events.

* ``system`` ``init`` -> :class:`SystemInit`; other ``system`` lines -> :class:`SystemEvent`
  (``api_retry`` -> :class:`ApiRetry`, ``status`` -> :class:`SystemStatus`)
* ``stream_event`` text / thinking deltas -> :class:`TextDelta` / :class:`ThinkingDelta`
* a ``tool_use`` block -> :class:`ToolUse`, once, as soon as its input is complete
* other ``stream_event`` lines (message_start, ...) -> nothing (they feed the turn's state)
* ``assistant`` -> :class:`AssistantMessage` (plus :class:`TextDelta` / :class:`ThinkingDelta`
  for content that was *not* streamed before, so text is never reported twice)
* ``user`` with ``tool_result`` blocks -> one :class:`ToolResult` per block; other ``user``
  lines -> :class:`UserMessage`
* ``result`` -> :class:`Result`
* ``control_request`` / ``control_response`` -> nothing (internal)
* runner / pool ``dockercc`` ``error`` -> :class:`ErrorEvent`; ``egress_denied`` ->
  :class:`EgressDenied`; ``api_unreachable`` -> :class:`ApiUnreachable`; other ``dockercc``
  events -> :class:`SystemEvent` with subtype ``"dockercc.started"``, ``"dockercc.warning"``, ...
* anything else, or anything malformed -> :class:`RawEvent`

The turn's state (which messages were streamed, which block is which tool call, a call's
input as it streams and whether it is complete) is the turn's
:class:`~dockercc.protocol.accumulator.TurnAccumulator`'s: the mapper keeps only what it
emitted.
"""

from __future__ import annotations

from typing import Any

from .events import (
    ApiRetry,
    ApiUnreachable,
    AssistantMessage,
    EgressDenied,
    ErrorEvent,
    Event,
    RawEvent,
    Result,
    SystemEvent,
    SystemInit,
    SystemStatus,
    TextDelta,
    ThinkingDelta,
    ToolResult,
    ToolUse,
    UserMessage,
)
from .protocol import messages as wire
from .protocol.accumulator import TurnAccumulator
from .protocol.envelope import RUNNER_EVENT_TYPE, Envelope
from .protocol.messages import (
    Block,
    JsonDict,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

__all__ = ["EventMapper"]


def _error_message(code: str, event: JsonDict, exit_code: int | None, restart: bool) -> str:
    message = event.get("message")
    if isinstance(message, str) and message:
        return message
    if code == "cli_exited":
        text = "the Claude Code CLI exited"
        if exit_code is not None:
            text += f" with code {exit_code}"
        return text + ("; restarting it" if restart else "")
    if code == "container_lost":
        return "the container running the session was lost"
    return code or "runner error"


class EventMapper:
    """Turns one session's envelopes into public events, in order. Keep one per session and
    feed it every envelope with :meth:`map`; it never raises.

    ``turn`` is the current turn's :class:`~dockercc.protocol.TurnAccumulator` (a fresh one
    after each ``result``, and after a runner / pool error, which loses the turn in flight),
    which also holds the turn's streaming state the mapper reads;
    ``last_turn`` is the one that ended last, ``last_result`` the last :class:`Result`,
    ``last_seq`` the highest envelope ``seq`` seen.

    Sub-agent messages (``parent_tool_use_id`` set) still give :class:`AssistantMessage`,
    :class:`ToolUse`, :class:`ToolResult` and :class:`UserMessage` events (marked with
    ``parent_tool_use_id``), but their text and thinking become deltas, their tool calls part
    of ``Result.tool_calls``, only with ``include_subagents=True``."""

    #: read well-formed ``content_block_delta`` lines without the wire models (False: always
    #: parse them, e.g. to compare both paths in tests)
    _fast_deltas = True

    def __init__(self, session: str = "", *, include_subagents: bool = False) -> None:
        self.session = session
        self.include_subagents = include_subagents
        self.turn = TurnAccumulator(include_subagents=include_subagents)
        self.last_turn: TurnAccumulator | None = None
        self.last_result: Result | None = None
        self.last_seq = 0
        self._seq = 0
        self._ts = 0
        self._raw: JsonDict = {}
        self._api_cause = ""  # the egress proxy's last cause, for the ApiRetry that follows
        self._new_turn_state()
        self._previous_tools: dict[str, ToolUse] = {}

    def _new_turn_state(self) -> None:
        self._dirty = False
        self._tools: dict[str, ToolUse] = {}  # emitted this turn, in order

    def _end_turn(self) -> None:
        self.last_turn = self.turn
        self.turn = TurnAccumulator(include_subagents=self.include_subagents)
        # remember the last turn's calls: a stray late line must not emit them again
        self._previous_tools = self._tools
        self._new_turn_state()

    # ---------------------------------------------------------------------------- public

    def map(self, envelope: Envelope) -> list[Event]:
        """The events of one envelope (often none, sometimes several). Never raises."""
        try:
            return self._map(envelope)
        except Exception as exc:  # a bug or an odd envelope: never break the stream
            return [self._fallback(envelope, f"{type(exc).__name__}: {exc}")]

    # -------------------------------------------------------------------------- dispatch

    def _map(self, envelope: Envelope) -> list[Event]:
        seq, ts, event = envelope.seq, envelope.ts, envelope.event
        if type(seq) is not int:
            seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
        if type(ts) is not int:
            ts = ts if isinstance(ts, int) and not isinstance(ts, bool) else 0
        self._seq = seq
        self._ts = ts
        if seq > self.last_seq:
            self.last_seq = seq
        if not isinstance(event, dict):
            return [self._fallback(envelope, "the envelope's event is not an object")]
        self._raw = event
        kind = event.get("type")
        if kind == "stream_event" and self._fast_deltas:
            # nearly every line of a streamed turn: a text / thinking / input-JSON delta,
            # read straight from the dict (same events and turn state as the models give)
            parts = wire.stream_delta(event)
            if parts is not None:
                return self._on_delta(*parts)
        elif kind == RUNNER_EVENT_TYPE:
            return self._on_runner(event)
        msg = wire.parse_message(event)
        if isinstance(msg, wire.StreamEvent):
            return self._on_stream(msg)
        if isinstance(msg, wire.WireAssistantMessage):
            return self._on_assistant(msg)
        if isinstance(msg, wire.WireUserMessage):
            return self._on_user(msg)
        if isinstance(msg, wire.WireResultMessage):
            return [self._on_result(msg)]
        if isinstance(msg, wire.SystemMessage):
            return [self._on_system(msg)]
        if isinstance(msg, wire.ControlRequest | wire.ControlResponse):
            return []
        known = msg.type in wire.MESSAGE_TYPES
        return [RawEvent(**self._meta(), wire_type=msg.type,
                         reason=f"malformed {msg.type!r} message" if known
                         else f"unknown message type {msg.type!r}")]

    def _meta(self) -> dict[str, Any]:
        return {"session": self.session, "seq": self._seq, "ts": self._ts, "raw": self._raw}

    def _fallback(self, envelope: Any, reason: str) -> RawEvent:
        event = getattr(envelope, "event", None)
        raw = event if isinstance(event, dict) else {"value": event}
        kind = raw.get("type")
        seq = getattr(envelope, "seq", 0)
        ts = getattr(envelope, "ts", 0)
        return RawEvent.model_construct(
            session=self.session if isinstance(self.session, str) else "",
            seq=seq if isinstance(seq, int) else 0,
            ts=ts if isinstance(ts, int) else 0,
            raw=raw,
            wire_type=kind if isinstance(kind, str) else "",
            reason=reason,
        )

    def _wants(self, parent: str | None) -> bool:
        return parent is None or self.include_subagents

    # ---------------------------------------------------------------------------- runner

    def _on_runner(self, event: JsonDict) -> list[Event]:
        subtype = event.get("subtype")
        subtype = subtype if isinstance(subtype, str) else ""
        if subtype == "egress_denied":
            port = event.get("port")
            return [EgressDenied(**self._meta(), host=str(event.get("host") or ""),
                                 port=port if isinstance(port, int) and
                                 not isinstance(port, bool) else 0,
                                 reason=str(event.get("reason") or ""))]
        if subtype == "api_unreachable":
            status = event.get("status")
            self._api_cause = str(event.get("cause") or "")[:300]
            return [ApiUnreachable(**self._meta(), cause=self._api_cause,
                                   target=str(event.get("target") or "")[:300],
                                   status=_int(status) or 502, data=event)]
        if subtype != "error":
            return [SystemEvent(**self._meta(), subtype=f"dockercc.{subtype or 'event'}",
                                data=event)]
        code = event.get("error")
        code = code if isinstance(code, str) else ""
        exit_code = event.get("exit_code")
        exit_code = exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) \
            else None
        restart = event.get("restart") is True
        reason = event.get("reason")
        tail = event.get("stderr_tail")
        error = ErrorEvent(
            **self._meta(),
            error=code,
            message=_error_message(code, event, exit_code, restart),
            restart=restart,
            exit_code=exit_code,
            reason=reason if isinstance(reason, str) else None,
            stderr_tail=tail if isinstance(tail, str) else "",
        )
        if self._dirty:  # the turn in flight is lost: do not merge it into the next one
            self._end_turn()
        return [error]

    # ---------------------------------------------------------------------------- system

    def _on_system(self, msg: wire.SystemMessage) -> Event:
        self.turn.add(msg)
        if msg.subtype == "init":
            return SystemInit(
                **self._meta(),
                claude_session_id=msg.session_id,
                model=msg.model,
                tools=list(msg.tools or []),
                mcp_servers=list(msg.mcp_servers or []),
                permission_mode=msg.permissionMode,
                cwd=msg.cwd,
                claude_code_version=msg.claude_code_version,
            )
        raw = msg.raw
        if msg.subtype == "api_retry":
            status = _int(raw.get("error_status"))
            # the proxy's cause belongs to this failure only when the CLI got the proxy's 502
            cause = self._api_cause if status == 502 else ""
            self._api_cause = ""
            return ApiRetry(**self._meta(), data=raw, attempt=_int(raw.get("attempt")) or 0,
                            max_retries=_int(raw.get("max_retries")) or 0,
                            retry_delay_ms=_int(raw.get("retry_delay_ms")) or 0,
                            error_status=status, error=str(raw.get("error") or "")[:300],
                            cause=cause)
        if msg.subtype == "status":
            status_text = raw.get("status")
            return SystemStatus(**self._meta(), data=raw,
                                status=status_text if isinstance(status_text, str) else None)
        return SystemEvent(**self._meta(), subtype=msg.subtype or "", data=raw)

    # ---------------------------------------------------------------------------- stream

    def _message(self) -> tuple[str, str | None]:
        """(the turn's key, the real id or None) of the message the last stream event was in."""
        key = self.turn.last_message
        return key, self.turn.real_id(key)

    def _on_delta(self, kind: str, value: str, index: int, parent: str | None,
                  api_message_id: str | None) -> list[Event]:
        """A ``content_block_delta`` line read by :func:`~dockercc.protocol.stream_delta`:
        what :meth:`_on_stream` does for it, without the wire models."""
        self._dirty = True
        appended = self.turn.add_delta(kind, value, index, parent, api_message_id)
        _, message_id = self._message()
        return self._delta_events(kind, value, index, message_id, parent, appended)

    def _delta_events(self, kind: str, value: str, index: int, message_id: str | None,
                      parent: str | None, appended: str) -> list[Event]:
        if kind == "text_delta":
            if appended:
                return [TextDelta(session=self.session, seq=self._seq, ts=self._ts,
                                  raw=self._raw, text=appended, index=index,
                                  message_id=message_id, parent_tool_use_id=parent)]
        elif kind == "thinking_delta":
            if value and self._wants(parent):
                return [ThinkingDelta(session=self.session, seq=self._seq, ts=self._ts,
                                      raw=self._raw, text=value, index=index,
                                      message_id=message_id, parent_tool_use_id=parent)]
        # (input_json_delta: the accumulator keeps the call's input as it streams)
        return []

    def _on_stream(self, msg: wire.StreamEvent) -> list[Event]:
        self._dirty = True
        appended = self.turn.add(msg)
        event = msg.event
        parent = msg.parent_tool_use_id
        if isinstance(event, dict):
            kind = event.get("type")
            if kind == "ping":
                return []
            return [RawEvent(**self._meta(), wire_type="stream_event",
                             reason=f"unhandled stream event {kind!r}")]
        key, message_id = self._message()
        out: list[Event] = []
        if isinstance(event, wire.ContentBlockStartEvent):
            block = event.content_block
            if isinstance(block, ThinkingBlock) and block.thinking and self._wants(parent):
                out.append(ThinkingDelta(**self._meta(), text=block.thinking, index=event.index,
                                         message_id=message_id, parent_tool_use_id=parent))
            if appended:
                out.append(TextDelta(**self._meta(), text=appended, index=event.index,
                                     message_id=message_id, parent_tool_use_id=parent))
        elif isinstance(event, wire.ContentBlockDeltaEvent):
            delta = event.delta
            if isinstance(delta, wire.WireTextDelta):
                out = self._delta_events("text_delta", delta.text, event.index, message_id,
                                         parent, appended)
            elif isinstance(delta, wire.WireThinkingDelta):
                out = self._delta_events("thinking_delta", delta.thinking, event.index,
                                         message_id, parent, appended)
        elif isinstance(event, wire.ContentBlockStopEvent):
            call = self.turn.block_tool(key, event.index)
            # complete: its input parsed (else wait for the assistant line's copy)
            if call is not None and call.complete and not self._seen_tool(call.id):
                out.append(self._emit_tool(call.id, call.name, dict(call.input),
                                           call.message_id and self.turn.real_id(call.message_id),
                                           call.parent_tool_use_id))
        # message_start / message_delta / message_stop: turn state only
        return out

    # ------------------------------------------------------------------------- assistant

    def _on_assistant(self, msg: wire.WireAssistantMessage) -> list[Event]:
        self._dirty = True
        appended = self.turn.add(msg)
        api = msg.message
        message_id = api.id
        parent = msg.parent_tool_use_id
        blocks = api.blocks
        out: list[Event] = [AssistantMessage(
            **self._meta(),
            message_id=message_id,
            model=api.model,
            content=list(blocks),
            stop_reason=api.stop_reason,
            aborted=msg.aborted,
            error=msg.error,
            parent_tool_use_id=parent,
        )]
        streamed = message_id is not None and self.turn.streamed(message_id)
        tool_ids = iter(self.turn.last_tool_ids)
        if appended:  # the accumulator adds an assistant line's text only if not streamed
            index = next((i for i, b in enumerate(blocks) if isinstance(b, TextBlock)), 0)
            out.append(TextDelta(**self._meta(), text=appended, index=index,
                                 message_id=message_id, parent_tool_use_id=parent))
        for i, block in enumerate(blocks):
            if isinstance(block, ThinkingBlock):
                if not streamed and block.thinking and self._wants(parent):
                    out.append(ThinkingDelta(**self._meta(), text=block.thinking, index=i,
                                             message_id=message_id, parent_tool_use_id=parent))
            elif isinstance(block, ToolUseBlock):
                tool_id = next(tool_ids)
                call = self.turn.tool(tool_id)
                if msg.aborted or call is None or self._seen_tool(tool_id):
                    continue
                # the assistant line's input is final: the call holds it ({} included)
                out.append(self._emit_tool(tool_id, block.name or call.name, dict(call.input),
                                           message_id, parent))
        return out

    def _seen_tool(self, tool_id: str) -> bool:
        return tool_id in self._tools or tool_id in self._previous_tools

    def _emit_tool(self, tool_id: str, name: str, tool_input: JsonDict,
                   message_id: str | None, parent: str | None) -> ToolUse:
        tool = ToolUse(**self._meta(), id=tool_id, name=name, input=tool_input,
                       message_id=message_id, parent_tool_use_id=parent)
        self._tools[tool_id] = tool
        return tool

    # ------------------------------------------------------------------------------ user

    def _tool_name(self, tool_use_id: str) -> str | None:
        tool = self._tools.get(tool_use_id) or self._previous_tools.get(tool_use_id)
        return tool.name if tool is not None else None

    def _on_user(self, msg: wire.WireUserMessage) -> list[Event]:
        self._dirty = True
        self.turn.add(msg)
        parent = msg.parent_tool_use_id
        results = msg.tool_results
        if not results:
            return [UserMessage(**self._meta(), content=msg.message.content,
                                parent_tool_use_id=parent)]
        structured = msg.tool_use_result if len(results) == 1 else None
        out: list[Event] = []
        for block in results:
            content = block.content
            if content is None:
                content = ""
            elif isinstance(content, dict):
                content = [content]
            out.append(ToolResult(
                **self._meta(),
                tool_use_id=block.tool_use_id,
                content=content,
                is_error=bool(block.is_error),
                tool_name=self._tool_name(block.tool_use_id),
                structured=structured,
                parent_tool_use_id=parent,
            ))
        others: list[Block] = [b for b in msg.message.blocks if not isinstance(b, ToolResultBlock)]
        if others:  # e.g. a note next to the results of an interrupted tool call
            out.append(UserMessage(**self._meta(), content=others, parent_tool_use_id=parent))
        return out

    # ---------------------------------------------------------------------------- result

    def _on_result(self, msg: wire.WireResultMessage) -> Result:
        self.turn.add(msg)
        calls = [t for t in self._tools.values()
                 if self.include_subagents or t.parent_tool_use_id is None]
        result = Result.from_turn(msg, self.turn, session=self.session, seq=self._seq,
                                  ts=self._ts, tool_calls=calls)
        self.last_result = result
        self._end_turn()
        return result


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
