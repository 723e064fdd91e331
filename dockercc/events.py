"""The public, typed events of a dockercc session: what ``Session.stream()`` yields.

The CLI's stdout lines reach the host wrapped in envelopes
(:class:`~dockercc.protocol.Envelope`). One :class:`EventMapper` per session turns each
envelope into zero or more events:

* ``system`` ``init`` -> :class:`SystemInit`; other ``system`` lines -> :class:`SystemEvent`
* ``stream_event`` text / thinking deltas -> :class:`TextDelta` / :class:`ThinkingDelta`
* a ``tool_use`` block -> :class:`ToolUse`, once, as soon as its input is complete
* other ``stream_event`` lines (message_start, ...) -> nothing (they feed the turn's state)
* ``assistant`` -> :class:`AssistantMessage` (plus :class:`TextDelta` / :class:`ThinkingDelta`
  for content that was *not* streamed before, so text is never reported twice)
* ``user`` with ``tool_result`` blocks -> one :class:`ToolResult` per block; other ``user``
  lines -> :class:`UserMessage`
* ``result`` -> :class:`Result`
* ``control_request`` / ``control_response`` -> nothing (internal)
* runner / pool ``dockercc`` ``error`` -> :class:`ErrorEvent`; ``egress_denied`` (the egress
  proxy refused a connection) -> :class:`EgressDenied`; other ``dockercc`` events
  -> :class:`SystemEvent` with subtype ``"dockercc.started"``, ``"dockercc.warning"``, ...
* anything else, or anything malformed -> :class:`RawEvent`

So a consumer can render a turn from :class:`TextDelta`, :class:`ToolUse` and
:class:`ToolResult` alone, with or without ``--include-partial-messages``:
``text_of(events)`` (all :class:`TextDelta` texts joined) equals the turn's accumulated text,
each piece once. :class:`AssistantMessage` passes every ``assistant`` line through for those
who want the complete messages.

Every event has ``session`` (the dockercc session), ``seq`` and ``ts`` (of its envelope), a
``type`` discriminator and ``raw``, the wire dict it came from (not shown in ``repr``). Names
follow claude-agent-sdk-python where natural (``AssistantMessage``, ``UserMessage``,
``SystemEvent.subtype`` / ``data``, ``Result.total_cost_usd``, ``Result.result``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from .errors import AgentError
from .protocol import messages as wire
from .protocol.accumulator import TurnAccumulator
from .protocol.envelope import RUNNER_EVENT_TYPE, Envelope
from .protocol.messages import (
    Block,
    ContentBlock,
    JsonDict,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

__all__ = [
    "BaseEvent",
    "SystemInit",
    "SystemEvent",
    "TextDelta",
    "ThinkingDelta",
    "ToolUse",
    "ToolResult",
    "AssistantMessage",
    "UserMessage",
    "Result",
    "ErrorEvent",
    "EgressDenied",
    "RawEvent",
    "Event",
    "EventMapper",
    "text_of",
    # content blocks of AssistantMessage / UserMessage (from the protocol layer)
    "TextBlock",
    "ThinkingBlock",
    "ToolUseBlock",
    "ToolResultBlock",
]

_META_FIELDS = ("session", "seq", "ts")

RawDict: TypeAlias = Annotated[JsonDict, SkipValidation]
"""A wire dict kept as it is (not copied, not validated)."""


def _join_text(content: Any, sep: str) -> str:
    """The text parts of a content value (a string, or a list of blocks / block dicts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, TextBlock):
        return content.text
    if isinstance(content, dict):
        text = content.get("text")
        return text if content.get("type") == "text" and isinstance(text, str) else ""
    if isinstance(content, list):
        parts = [_join_text(part, sep) for part in content if not isinstance(part, list)]
        return sep.join(part for part in parts if part)
    return ""


class BaseEvent(BaseModel):
    """Base of every event. ``session`` / ``seq`` / ``ts`` come from the envelope; ``raw`` is
    the wire dict the event came from (the CLI line, or the runner / pool event)."""

    model_config = ConfigDict(frozen=True)

    session: str = ""
    seq: int = 0
    ts: int = 0
    raw: RawDict = Field(default_factory=dict, repr=False)

    def __repr_args__(self) -> Any:
        # payload first, then where it came from; ``type`` is the class name, ``ts`` is noise
        args = [(k, v) for k, v in super().__repr_args__() if k != "type" and k != "ts"]
        head = [(k, v) for k, v in args if k not in _META_FIELDS]
        tail = [(k, v) for k, v in args if k in _META_FIELDS]
        return head + tail


# ----------------------------------------------------------------------------- system


class SystemInit(BaseEvent):
    """The CLI started a turn (``system`` ``init``): its session id, model, tools, ...."""

    type: Literal["system_init"] = "system_init"
    claude_session_id: str | None = None
    model: str | None = None
    tools: list[str] = Field(default_factory=list)
    mcp_servers: list[Any] = Field(default_factory=list)
    permission_mode: str | None = None
    cwd: str | None = None
    claude_code_version: str | None = None

    @property
    def subtype(self) -> str:
        return "init"

    @property
    def data(self) -> JsonDict:
        """The whole wire dict (claude-agent-sdk's ``SystemMessage.data``)."""
        return self.raw


class SystemEvent(BaseEvent):
    """Any other ``system`` line (``status``, ``compact_boundary``, ...), and the runner's own
    lifecycle events (``subtype`` ``"dockercc.started"``, ``"dockercc.warning"``, ...).
    ``data`` is the whole wire dict."""

    type: Literal["system"] = "system"
    subtype: str = ""
    data: RawDict = Field(default_factory=dict)


class ApiRetry(SystemEvent):
    """The CLI's request to the Messages API failed and it will try again (``system``
    ``api_retry``): the turn is waiting, not stuck. ``error_status`` is the HTTP status
    (``None``: no answer at all, e.g. connection refused or DNS); ``cause`` is the best known
    reason (from the egress proxy's :class:`ApiUnreachable` just before, else from the
    status), and :attr:`message` says it in a sentence."""

    type: Literal["api_retry"] = "api_retry"  # type: ignore[assignment]
    subtype: str = "api_retry"
    attempt: int = 0
    max_retries: int = 0
    retry_delay_ms: int = 0
    error_status: int | None = None
    error: str = ""
    cause: str = ""

    @property
    def message(self) -> str:
        why = self.cause or _status_cause(self.error_status, self.error)
        return (f"the API is not answering ({why}); retry {self.attempt}/{self.max_retries} "
                f"in {self.retry_delay_ms / 1000:.1f}s")


class SystemStatus(SystemEvent):
    """The CLI's ``system`` ``status`` line: what it is doing (``"requesting"``, ...)."""

    type: Literal["system_status"] = "system_status"  # type: ignore[assignment]
    subtype: str = "status"
    status: str | None = None


class ApiUnreachable(SystemEvent):
    """The host's egress proxy could not reach the API for this session's CLI, and why:
    ``cause`` is ``"connection refused"``, ``"DNS: ..."``, ``"timeout"``, ``"TLS: ..."``,
    ... (the CLI saw a ``502`` and keeps retrying: :class:`ApiRetry` follows)."""

    type: Literal["api_unreachable"] = "api_unreachable"  # type: ignore[assignment]
    subtype: str = "dockercc.api_unreachable"
    cause: str = ""
    target: str = ""
    status: int = 502

    @property
    def message(self) -> str:
        return f"the API at {self.target or '?'} is unreachable: {self.cause or 'unknown'}"


def _status_cause(status: int | None, error: str) -> str:
    if status is None:
        return "no answer: connection refused, DNS or network failure"
    if status == 401:
        # what to do, never the credential itself
        return ("401: authentication failed, the API refused the credentials; check "
                "credentials.apiKey / ANTHROPIC_API_KEY (or the OAuth token) and "
                "credentials.baseUrl")
    if status == 403:
        return "403: forbidden"
    if status == 429:
        return "429: rate limited by the API (the CLI waits as its retry-after says)"
    if status == 529:
        return "529: the API is overloaded"
    return f"HTTP {status}" + (f" ({error})" if error and error != "unknown" else "")


# ------------------------------------------------------------------------------ content


class TextDelta(BaseEvent):
    """A piece of the turn's answer text. Joined in order, the pieces of a turn are its text
    (:func:`text_of`), each piece once: the first piece of a new assistant message starts
    with the blank line (``"\\n\\n"``) that separates it from the previous message's text.

    Comes from ``stream_event`` deltas, or, for a message that was not streamed (no
    ``--include-partial-messages``), from its ``assistant`` line (then ``index`` is the index
    of its first text block)."""

    type: Literal["text_delta"] = "text_delta"
    text: str = ""
    index: int = 0
    message_id: str | None = None
    parent_tool_use_id: str | None = None


class ThinkingDelta(BaseEvent):
    """A piece of the model's (extended) thinking, from the stream or a non-streamed
    ``assistant`` line."""

    type: Literal["thinking_delta"] = "thinking_delta"
    text: str = ""
    index: int = 0
    message_id: str | None = None
    parent_tool_use_id: str | None = None


class ToolUse(BaseEvent):
    """The model calls a tool. Emitted once per call, as soon as its ``input`` is complete:
    at the ``content_block_stop`` of a streamed ``tool_use`` block (or at the ``assistant``
    line carrying the block, if that comes first), or at the ``assistant`` line for a
    message that was not streamed. ``parent_tool_use_id`` is set for a sub-agent's calls."""

    type: Literal["tool_use"] = "tool_use"
    id: str = ""
    name: str = ""
    input: JsonDict = Field(default_factory=dict)
    message_id: str | None = None
    parent_tool_use_id: str | None = None


class ToolResult(BaseEvent):
    """The result of a tool call, as the CLI gave it back to the model. ``content`` is a string
    or a list of content blocks (dicts, e.g. ``{"type": "text", "text": ...}``);
    ``structured`` is the CLI's ``tool_use_result`` (e.g. Bash's stdout / stderr) when the
    line carried exactly one result; ``tool_name`` is the name of the matching
    :class:`ToolUse`, when it was seen."""

    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str = ""
    content: str | list[Any] = ""
    is_error: bool = False
    tool_name: str | None = None
    structured: Any = None
    parent_tool_use_id: str | None = None

    @property
    def text(self) -> str:
        """``content`` as text: the string, or the text parts joined by newlines."""
        return _join_text(self.content, "\n")


class AssistantMessage(BaseEvent):
    """One ``assistant`` line, passed through. Several lines may share one ``message_id``
    (often one per content block). With partial messages its text was already streamed as
    :class:`TextDelta` events. ``aborted`` is true for the partial message of an interrupted
    turn; ``error`` is the CLI's error tag for a synthetic message (e.g. an API error)."""

    type: Literal["assistant"] = "assistant"
    message_id: str | None = None
    model: str | None = None
    content: list[ContentBlock] = Field(default_factory=list)
    stop_reason: str | None = None
    aborted: bool = False
    error: Any = None
    parent_tool_use_id: str | None = None

    @property
    def text(self) -> str:
        """The text of the text blocks, concatenated."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def thinking(self) -> str:
        return "".join(b.thinking for b in self.content if isinstance(b, ThinkingBlock))

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        return [b for b in self.content if isinstance(b, ToolUseBlock)]


class UserMessage(BaseEvent):
    """A ``user`` line that is not (only) tool results: an interruption note
    (``"[Request interrupted by user]"``), a replayed prompt, ...."""

    type: Literal["user"] = "user"
    content: str | list[ContentBlock] = Field(default_factory=list)
    parent_tool_use_id: str | None = None

    @property
    def text(self) -> str:
        """``content`` as text: the string, or the text blocks joined by newlines."""
        return _join_text(self.content, "\n")


# ------------------------------------------------------------------------------- result


def _number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return int(value)
    except (ValueError, OverflowError):  # nan, inf
        return None


def _is_interrupted(msg: wire.ResultMessage, accumulator: TurnAccumulator | None) -> bool:
    reason = (msg.terminal_reason or "").lower()
    if reason.startswith("aborted") or "interrupt" in reason:
        return True
    return msg.subtype == "error_during_execution" and accumulator is not None and accumulator.aborted


class Result(BaseEvent):
    """The outcome of one turn (the CLI's ``result`` line plus what the turn streamed).

    ``text`` is the CLI's ``result`` string when it is non-empty, else the turn's accumulated
    assistant text (e.g. the partial answer of an interrupted turn); ``str(result)`` is
    ``text``. Judge success by :attr:`ok` (``is_error`` / ``subtype``), never by an exit code.
    ``interrupted`` is true for a turn ended by an interrupt (``error_during_execution`` with
    ``terminal_reason`` ``aborted_*``). ``session_id`` is Claude's session id (``session``
    is dockercc's). ``tool_calls`` are the turn's (top-level) tool calls in order."""

    type: Literal["result"] = "result"
    text: str = ""
    is_error: bool = False
    subtype: str | None = None
    terminal_reason: str | None = None
    stop_reason: str | None = None
    cost_usd: float | None = None
    usage: JsonDict = Field(default_factory=dict)
    model_usage: JsonDict = Field(default_factory=dict, repr=False)
    duration_ms: int | None = None
    duration_api_ms: int | None = None
    num_turns: int | None = None
    session_id: str | None = None
    model: str | None = None
    tool_calls: list[ToolUse] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    permission_denials: list[Any] = Field(default_factory=list)
    api_error_status: int | str | None = None
    interrupted: bool = False
    thinking: str = ""
    provider: str = "docker-claude-code"
    #: providers of the fallback chain passed over before ``provider`` served, each with why
    #: (``{"docker-claude-code/opus": "Docker: cannot reach the Docker engine ..."}``)
    fallback_reasons: dict[str, str] = Field(default_factory=dict)
    #: with ``output_format``: the model's JSON answer (checked against the schema by
    #: ``ask``, which raises :class:`~dockercc.errors.StructuredOutputError` on a mismatch)
    structured_output: Any = None

    def __str__(self) -> str:
        return self.text

    @property
    def ok(self) -> bool:
        """True when the turn succeeded (not ``is_error`` and no ``error_*`` subtype)."""
        return not self.is_error and not (self.subtype or "").startswith("error")

    @property
    def result(self) -> str:
        """``text`` (claude-agent-sdk's ``ResultMessage.result``)."""
        return self.text

    @property
    def total_cost_usd(self) -> float | None:
        """``cost_usd`` (claude-agent-sdk's name)."""
        return self.cost_usd

    @property
    def claude_session_id(self) -> str | None:
        return self.session_id

    def raise_for_error(self) -> Result:
        """Raise :class:`~dockercc.errors.AgentError` (with ``.result`` = self) unless
        :attr:`ok`; return self, so ``text = result.raise_for_error().text`` works."""
        if self.ok:
            return self
        what = "was interrupted" if self.interrupted else f"failed ({self.subtype or 'error'})"
        detail = "; ".join(self.errors) or self.text
        if self.api_error_status is not None:
            detail = f"API status {self.api_error_status}" + (f": {detail}" if detail else "")
        raise AgentError(f"the agent turn {what}" + (f": {detail}" if detail else ""), result=self)

    @classmethod
    def from_turn(
        cls,
        result_msg: wire.ResultMessage,
        accumulator: TurnAccumulator | None = None,
        *,
        session: str = "",
        seq: int = 0,
        ts: int = 0,
        tool_calls: Sequence[ToolUse] | None = None,
    ) -> Result:
        """Build the result of a turn from its ``result`` line and the turn's accumulator
        (which supplies the text of turns whose ``result`` is empty, the model, the tool
        calls and whether the partial answer was aborted). ``tool_calls`` overrides the
        accumulator's (an :class:`EventMapper` passes the :class:`ToolUse` events it
        emitted)."""
        msg = result_msg
        acc = accumulator
        text = msg.result if isinstance(msg.result, str) and msg.result else ""
        if not text and acc is not None:
            text = acc.text
        if tool_calls is None:
            tool_calls = [
                ToolUse(
                    id=call.id,
                    name=call.name,
                    input=dict(call.input),
                    message_id=call.message_id,
                    parent_tool_use_id=call.parent_tool_use_id,
                    session=session,
                    seq=seq,
                    ts=ts,
                )
                for call in (acc.tool_calls if acc is not None else [])
            ]
        model_usage = msg.modelUsage if isinstance(msg.modelUsage, dict) else {}
        model = acc.model if acc is not None else None
        if model is None and model_usage:
            model = next(iter(model_usage))
        cost = msg.total_cost_usd
        return cls(
            session=session,
            seq=seq,
            ts=ts,
            raw=msg.raw,
            text=text,
            is_error=msg.is_error,
            subtype=msg.subtype,
            terminal_reason=msg.terminal_reason,
            stop_reason=msg.stop_reason or (acc.stop_reason if acc is not None else None),
            cost_usd=float(cost) if cost is not None else None,
            usage=dict(msg.usage or {}),
            model_usage=dict(model_usage),
            duration_ms=_number(msg.duration_ms),
            duration_api_ms=_number(msg.duration_api_ms),
            num_turns=msg.num_turns,
            session_id=msg.session_id or (acc.session_id if acc is not None else None),
            model=model,
            tool_calls=list(tool_calls),
            errors=[e if isinstance(e, str) else json.dumps(e, default=str)
                    for e in (msg.errors or [])],
            permission_denials=list(msg.permission_denials or []),
            api_error_status=msg.api_error_status,
            interrupted=_is_interrupted(msg, acc),
            thinking=acc.thinking if acc is not None else "",
            structured_output=msg.structured_output,
        )


ResultMessage = Result
"""claude-agent-sdk's name for the turn's last message (``result``, ``total_cost_usd`` ...)."""


# --------------------------------------------------------------------------- the rest


class ErrorEvent(BaseEvent):
    """The runner or the host pool reports a failure: ``error`` is its code (``cli_exited``,
    ``container_lost``, ...), ``restart`` whether the runner restarts the CLI (the
    conversation goes on with ``--resume``; the turn in flight is lost)."""

    type: Literal["error"] = "error"
    error: str = ""
    message: str = ""
    restart: bool = False
    exit_code: int | None = None
    reason: str | None = None
    stderr_tail: str = ""


class EgressDenied(BaseEvent):
    """The host's egress proxy refused a connection of the session's container (a target not
    in the allow-list, or a private address): ``host``, ``port`` and why. The agent's tool
    saw a ``403``; nothing left the container."""

    type: Literal["egress_denied"] = "egress_denied"
    host: str = ""
    port: int = 0
    reason: str = ""


class RawEvent(BaseEvent):
    """Anything the mapper does not know (a newer CLI's message type, an unhandled SSE event)
    or could not read. ``wire_type`` is the wire ``type`` ("" if none), ``reason`` says why it
    is raw; ``raw`` has everything."""

    type: Literal["raw"] = "raw"
    wire_type: str = ""
    reason: str = ""


Event: TypeAlias = Annotated[
    SystemInit
    | SystemEvent
    | ApiRetry
    | SystemStatus
    | ApiUnreachable
    | TextDelta
    | ThinkingDelta
    | ToolUse
    | ToolResult
    | AssistantMessage
    | UserMessage
    | Result
    | ErrorEvent
    | EgressDenied
    | RawEvent,
    Field(discriminator="type"),
]
"""Any public event; ``type`` discriminates (``pydantic.TypeAdapter(Event)`` reads dumps
back)."""


def text_of(events: Iterable[object]) -> str:
    """The text of the :class:`TextDelta` events among ``events``, joined."""
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# ------------------------------------------------------------------------------ mapping


class _PendingTool:
    """A streamed ``tool_use`` block whose input is still arriving."""

    __slots__ = ("id", "name", "input", "message_id", "parent", "parts")

    def __init__(self, block: ToolUseBlock, tool_id: str, message_id: str | None,
                 parent: str | None) -> None:
        self.id = tool_id
        self.name = block.name
        self.input = dict(block.input)
        self.message_id = message_id
        self.parent = parent
        self.parts: list[str] = []

    def parsed_input(self) -> JsonDict | None:
        text = "".join(self.parts)
        if not text.strip():
            return self.input
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None


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
    after each ``result``, and after a runner / pool error, which loses the turn in flight);
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
        self._anon = 0
        self._api_cause = ""  # the egress proxy's last cause, for the ApiRetry that follows
        self._new_turn_state()
        self._previous_tools: dict[str, ToolUse] = {}

    def _new_turn_state(self) -> None:
        self._dirty = False
        self._streamed: set[str] = set()
        # parent_tool_use_id -> (key, real id) of the message being streamed
        self._current: dict[str | None, tuple[str, str | None]] = {}
        self._blocks: dict[tuple[str, int], str] = {}  # (message, index) -> tool id
        self._pending: dict[str, _PendingTool] = {}
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
        if isinstance(msg, wire.AssistantMessage):
            return self._on_assistant(msg)
        if isinstance(msg, wire.UserMessage):
            return self._on_user(msg)
        if isinstance(msg, wire.ResultMessage):
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

    def _anon_id(self, prefix: str) -> str:
        self._anon += 1
        return f"{prefix}{self._anon}"

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

    def _stream_message_id(self, msg: wire.StreamEvent) -> tuple[str, str | None]:
        """(a key for the message being streamed, its real id if known)."""
        parent = msg.parent_tool_use_id
        event = msg.event
        if isinstance(event, wire.MessageStartEvent):
            real = event.message.id or msg.api_message_id
            current = self._current[parent] = (real or self._anon_id("stream_"), real)
            return current
        return self._delta_message_id(parent, msg.api_message_id)

    def _delta_message_id(self, parent: str | None,
                          api_message_id: str | None) -> tuple[str, str | None]:
        """(key, real id) of the message a stream event other than message_start is in."""
        if api_message_id:
            return api_message_id, api_message_id
        known = self._current.get(parent)
        if known is None:
            known = self._current[parent] = (self._anon_id("stream_"), None)
        return known

    def _on_delta(self, kind: str, value: str, index: int, parent: str | None,
                  api_message_id: str | None) -> list[Event]:
        """A ``content_block_delta`` line read by :func:`~dockercc.protocol.stream_delta`:
        what :meth:`_on_stream` does for it, without the wire models."""
        self._dirty = True
        appended = self.turn.add_delta(kind, value, index, parent, api_message_id)
        key, message_id = self._delta_message_id(parent, api_message_id)
        self._streamed.add(key)
        return self._delta_events(kind, value, index, key, message_id, parent, appended)

    def _delta_events(self, kind: str, value: str, index: int, key: str,
                      message_id: str | None, parent: str | None,
                      appended: str) -> list[Event]:
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
        elif kind == "input_json_delta":
            block_tool = self._blocks.get((key, index))
            pending = self._pending.get(block_tool) if block_tool is not None else None
            if pending is not None:
                pending.parts.append(value)
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
        key, message_id = self._stream_message_id(msg)
        out: list[Event] = []
        if isinstance(event, wire.ContentBlockStartEvent):
            self._streamed.add(key)
            block = event.content_block
            if isinstance(block, ToolUseBlock):
                tool_id = block.id or self._anon_id("toolu_anon_")
                self._blocks[(key, event.index)] = tool_id
                if not self._seen_tool(tool_id):
                    self._pending[tool_id] = _PendingTool(block, tool_id, message_id, parent)
            elif isinstance(block, ThinkingBlock) and block.thinking and self._wants(parent):
                out.append(ThinkingDelta(**self._meta(), text=block.thinking, index=event.index,
                                         message_id=message_id, parent_tool_use_id=parent))
            if appended:
                out.append(TextDelta(**self._meta(), text=appended, index=event.index,
                                     message_id=message_id, parent_tool_use_id=parent))
        elif isinstance(event, wire.ContentBlockDeltaEvent):
            self._streamed.add(key)
            delta = event.delta
            if isinstance(delta, wire.TextDelta):
                out = self._delta_events("text_delta", delta.text, event.index, key,
                                         message_id, parent, appended)
            elif isinstance(delta, wire.ThinkingDelta):
                out = self._delta_events("thinking_delta", delta.thinking, event.index, key,
                                         message_id, parent, appended)
            elif isinstance(delta, wire.InputJsonDelta):
                out = self._delta_events("input_json_delta", delta.partial_json, event.index,
                                         key, message_id, parent, appended)
        elif isinstance(event, wire.ContentBlockStopEvent):
            stopped = self._blocks.pop((key, event.index), None)
            pending = self._pending.get(stopped) if stopped is not None else None
            if pending is not None:
                parsed = pending.parsed_input()
                if parsed is not None:  # else: wait for the assistant line's copy
                    del self._pending[pending.id]
                    out.append(self._emit_tool(pending.id, pending.name, parsed,
                                               pending.message_id, pending.parent))
        # message_start / message_delta / message_stop: turn state only
        return out

    # ------------------------------------------------------------------------- assistant

    def _on_assistant(self, msg: wire.AssistantMessage) -> list[Event]:
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
        streamed = message_id is not None and message_id in self._streamed
        if appended:  # the accumulator adds an assistant line's text only if not streamed
            index = next((i for i, b in enumerate(blocks) if isinstance(b, TextBlock)), 0)
            out.append(TextDelta(**self._meta(), text=appended, index=index,
                                 message_id=message_id, parent_tool_use_id=parent))
        for i, block in enumerate(blocks):
            if isinstance(block, ThinkingBlock):
                if not streamed and block.thinking and self._wants(parent):
                    out.append(ThinkingDelta(**self._meta(), text=block.thinking, index=i,
                                             message_id=message_id, parent_tool_use_id=parent))
            elif isinstance(block, ToolUseBlock) and not msg.aborted:
                tool_id = block.id or self._anon_id("toolu_anon_")
                if self._seen_tool(tool_id):
                    continue
                pending = self._pending.pop(tool_id, None)
                name = block.name or (pending.name if pending is not None else "")
                out.append(self._emit_tool(tool_id, name, dict(block.input), message_id, parent))
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

    def _on_user(self, msg: wire.UserMessage) -> list[Event]:
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

    def _on_result(self, msg: wire.ResultMessage) -> Result:
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
