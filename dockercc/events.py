"""The public, typed events of a dockercc session: what ``Session.stream()`` yields.

The CLI's stdout lines reach the host wrapped in envelopes
(:class:`~dockercc.protocol.Envelope`); one mapper per session (private:
:mod:`dockercc._mapper`) turns each envelope into zero or more of these events.

A consumer can render a turn from :class:`TextDelta`, :class:`ToolUse` and
:class:`ToolResult` alone, with or without ``--include-partial-messages``:
``text_of(events)`` (all :class:`TextDelta` texts joined) equals the turn's accumulated text,
each piece once. :class:`AssistantMessage` passes every ``assistant`` line through for those
who want the complete messages.

Every event has ``session`` (the dockercc session), ``seq`` and ``ts`` (of its envelope), a
``type`` discriminator and ``raw``, the wire dict it came from (not shown in ``repr``). Names
follow claude-agent-sdk-python where natural (``AssistantMessage``, ``UserMessage``,
``SystemEvent.subtype`` / ``data``, ``Result.total_cost_usd``, ``Result.result``, ...); each
is one class (the wire models of :mod:`dockercc.protocol.messages` that would share a name
carry a ``Wire`` prefix).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from .errors import AgentError
from .protocol import messages as wire
from .protocol.accumulator import TurnAccumulator
from .protocol.messages import (
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


def _is_interrupted(msg: wire.WireResultMessage, accumulator: TurnAccumulator | None) -> bool:
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
        result_msg: wire.WireResultMessage,
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
        accumulator's (the event mapper passes the :class:`ToolUse` events it
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
