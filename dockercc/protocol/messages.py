"""Typed models of the Claude Code CLI's ``--output-format stream-json`` messages.

One module on purpose (~630 lines): the wire models of one format and their one parser.

Pure: no I/O. One stdout line of the CLI is one JSON object; :func:`parse_message` turns it
into one of the models below and never raises. Every model

* keeps unknown fields (``extra="allow"``; read them as attributes or from ``model_extra``),
* keeps the dict it was parsed from, unchanged, in :attr:`WireModel.raw` (not part of dumps),
* has only optional fields with defaults, except ``type`` (the discriminator).

Unknown message types become :class:`UnknownMessage`; unknown content blocks, SSE events,
deltas and control request subtypes are kept as plain dicts, so a newer CLI never breaks an
older SDK. A message whose known type fails validation also becomes :class:`UnknownMessage`.

Names follow claude-agent-sdk-python where natural (``TextBlock``, ``ToolUseBlock``, ...),
but the wire nesting is kept: an assistant message's blocks are in ``msg.message.content``
(``msg.content`` is a shortcut). The models of lines and deltas whose public counterpart is
an event of :mod:`dockercc.events` (``AssistantMessage``, ``UserMessage``, ``ResultMessage``,
``TextDelta``, ``ThinkingDelta``) carry a ``Wire`` prefix here: one name, one class. The
content blocks are shared: the events hold these very classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self, TypeAlias, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    Tag,
    model_validator,
)

__all__ = [
    "JsonDict",
    "WireModel",
    # content blocks
    "TextBlock",
    "ToolUseBlock",
    "ThinkingBlock",
    "ToolResultBlock",
    "ContentBlock",
    "Block",
    "ApiMessage",
    # stream events
    "WireTextDelta",
    "InputJsonDelta",
    "WireThinkingDelta",
    "SignatureDelta",
    "Delta",
    "MessageStartEvent",
    "ContentBlockStartEvent",
    "ContentBlockDeltaEvent",
    "ContentBlockStopEvent",
    "MessageDelta",
    "MessageDeltaEvent",
    "MessageStopEvent",
    "SseEvent",
    # control protocol
    "InterruptRequest",
    "McpMessageRequest",
    "CanUseToolRequest",
    "InitializeRequest",
    "ControlRequestBody",
    "ControlResponseBody",
    # messages
    "SystemMessage",
    "StreamEvent",
    "WireAssistantMessage",
    "WireUserMessage",
    "WireResultMessage",
    "ControlRequest",
    "ControlResponse",
    "UnknownMessage",
    "Message",
    "MESSAGE_TYPES",
    "parse_message",
    "stream_delta",
]

JsonDict: TypeAlias = dict[str, Any]
"""A JSON object as decoded by :func:`json.loads`."""

Number: TypeAlias = int | float


class WireModel(BaseModel):
    """Base of every wire model: keeps unknown fields and the dict it was parsed from."""

    model_config = ConfigDict(extra="allow")

    # A plain slot, not a pydantic private attribute: those cost a per-instance default
    # initialisation, and every stdout line goes through here.
    __slots__ = ("_wire",)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        model = handler(data)
        if type(data) is dict:
            object.__setattr__(model, "_wire", data)
        return model

    @property
    def raw(self) -> JsonDict:
        """The dict this model was validated from: the decoded wire object itself, not a copy
        (for a model built in Python, its keyword arguments; after ``model_copy`` or
        unpickling, a fresh ``model_dump``)."""
        raw: JsonDict | None = getattr(self, "_wire", None)
        if raw is None:
            raw = self.model_dump(mode="python")
            object.__setattr__(self, "_wire", raw)
        return raw


def _tagger(*known: str, key: str = "type") -> Discriminator:
    """A discriminator that routes ``{key: one of known}`` to its model, all else to a dict."""
    kinds = frozenset(known)

    def tag(value: Any) -> str:
        if isinstance(value, dict):
            kind = value.get(key)
        else:
            kind = getattr(value, key, None)
        if isinstance(kind, str) and kind in kinds:
            return kind
        return "unknown"

    return Discriminator(tag)


# --------------------------------------------------------------------------- content blocks


class TextBlock(WireModel):
    type: Literal["text"]
    text: str = ""


class ToolUseBlock(WireModel):
    type: Literal["tool_use"]
    id: str = ""
    name: str = ""
    input: JsonDict = Field(default_factory=dict)


class ThinkingBlock(WireModel):
    type: Literal["thinking"]
    thinking: str = ""
    signature: str = ""


class ToolResultBlock(WireModel):
    type: Literal["tool_result"]
    tool_use_id: str = ""
    content: str | list[Any] | JsonDict | None = None
    is_error: bool | None = None


ContentBlock: TypeAlias = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[JsonDict, Tag("unknown")],
    _tagger("text", "tool_use", "thinking", "tool_result"),
]
"""A content block: a typed block, or the raw dict for any other block type."""

Block: TypeAlias = TextBlock | ToolUseBlock | ThinkingBlock | ToolResultBlock | JsonDict
"""The Python type of a validated :data:`ContentBlock`."""


class ApiMessage(WireModel):
    """The Anthropic Messages API message inside ``assistant`` / ``user`` / ``message_start``."""

    id: str | None = None
    type: str | None = None
    role: str | None = None
    model: str | None = None
    content: str | list[ContentBlock] = Field(default_factory=list)
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: JsonDict | None = None

    @property
    def blocks(self) -> list[Block]:
        """``content`` as a list of blocks (a plain string becomes one :class:`TextBlock`)."""
        content = self.content
        if isinstance(content, str):
            return [TextBlock(type="text", text=content)]
        return content


# ---------------------------------------------------------------------------- stream events


class WireTextDelta(WireModel):
    type: Literal["text_delta"]
    text: str = ""


class InputJsonDelta(WireModel):
    type: Literal["input_json_delta"]
    partial_json: str = ""


class WireThinkingDelta(WireModel):
    type: Literal["thinking_delta"]
    thinking: str = ""


class SignatureDelta(WireModel):
    type: Literal["signature_delta"]
    signature: str = ""


Delta: TypeAlias = Annotated[
    Annotated[WireTextDelta, Tag("text_delta")]
    | Annotated[InputJsonDelta, Tag("input_json_delta")]
    | Annotated[WireThinkingDelta, Tag("thinking_delta")]
    | Annotated[SignatureDelta, Tag("signature_delta")]
    | Annotated[JsonDict, Tag("unknown")],
    _tagger("text_delta", "input_json_delta", "thinking_delta", "signature_delta"),
]


class MessageStartEvent(WireModel):
    type: Literal["message_start"]
    message: ApiMessage = Field(default_factory=ApiMessage)


class ContentBlockStartEvent(WireModel):
    type: Literal["content_block_start"]
    index: int = 0
    content_block: ContentBlock = Field(default_factory=dict)


class ContentBlockDeltaEvent(WireModel):
    type: Literal["content_block_delta"]
    index: int = 0
    delta: Delta = Field(default_factory=dict)


class ContentBlockStopEvent(WireModel):
    type: Literal["content_block_stop"]
    index: int = 0


class MessageDelta(WireModel):
    """``message_delta.delta``: how the message ended."""

    stop_reason: str | None = None
    stop_sequence: str | None = None


class MessageDeltaEvent(WireModel):
    type: Literal["message_delta"]
    delta: MessageDelta = Field(default_factory=MessageDelta)
    usage: JsonDict | None = None


class MessageStopEvent(WireModel):
    type: Literal["message_stop"]


SseEvent: TypeAlias = Annotated[
    Annotated[MessageStartEvent, Tag("message_start")]
    | Annotated[ContentBlockStartEvent, Tag("content_block_start")]
    | Annotated[ContentBlockDeltaEvent, Tag("content_block_delta")]
    | Annotated[ContentBlockStopEvent, Tag("content_block_stop")]
    | Annotated[MessageDeltaEvent, Tag("message_delta")]
    | Annotated[MessageStopEvent, Tag("message_stop")]
    | Annotated[JsonDict, Tag("unknown")],
    _tagger(
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ),
]
"""An Anthropic SSE event; unknown event types (``ping``, ``error``, ...) stay raw dicts."""


# ------------------------------------------------------------------------- control protocol


class InterruptRequest(WireModel):
    subtype: Literal["interrupt"]


class McpMessageRequest(WireModel):
    """The CLI relays a JSON-RPC message to the SDK MCP server ``server_name``."""

    subtype: Literal["mcp_message"]
    server_name: str | None = None
    message: JsonDict = Field(default_factory=dict)


class CanUseToolRequest(WireModel):
    """The CLI asks whether a tool may run (``--permission-prompt-tool stdio``)."""

    subtype: Literal["can_use_tool"]
    tool_name: str | None = None
    input: JsonDict = Field(default_factory=dict)
    tool_use_id: str | None = None
    permission_suggestions: list[Any] | None = None
    blocked_path: str | None = None


class InitializeRequest(WireModel):
    subtype: Literal["initialize"]
    hooks: Any = None


ControlRequestBody: TypeAlias = Annotated[
    Annotated[InterruptRequest, Tag("interrupt")]
    | Annotated[McpMessageRequest, Tag("mcp_message")]
    | Annotated[CanUseToolRequest, Tag("can_use_tool")]
    | Annotated[InitializeRequest, Tag("initialize")]
    | Annotated[JsonDict, Tag("unknown")],
    _tagger("interrupt", "mcp_message", "can_use_tool", "initialize", key="subtype"),
]


class ControlResponseBody(WireModel):
    """``control_response.response``: ``subtype`` is ``success`` (with ``response``) or
    ``error`` (with ``error``)."""

    subtype: str | None = None
    request_id: str | None = None
    response: JsonDict | None = None
    error: Any = None


# --------------------------------------------------------------------------------- messages


class SystemMessage(WireModel):
    """``system`` lines: ``init`` (once per turn in stream-json input mode), ``status``, ...."""

    type: Literal["system"]
    subtype: str | None = None
    session_id: str | None = None
    uuid: str | None = None
    # init
    cwd: str | None = None
    model: str | None = None
    tools: list[str] | None = None
    mcp_servers: list[Any] | None = None
    permissionMode: str | None = None
    apiKeySource: str | None = None
    claude_code_version: str | None = None
    output_style: str | None = None
    slash_commands: list[Any] | None = None
    agents: list[Any] | None = None
    skills: list[Any] | None = None
    plugins: list[Any] | None = None
    capabilities: list[Any] | None = None
    # status
    status: str | None = None

    @property
    def data(self) -> JsonDict:
        """The whole wire dict (claude-agent-sdk's ``SystemMessage.data``)."""
        return self.raw

    @property
    def is_init(self) -> bool:
        return self.subtype == "init"


class StreamEvent(WireModel):
    """``stream_event`` lines (``--include-partial-messages``): one Anthropic SSE event."""

    type: Literal["stream_event"]
    event: SseEvent = Field(default_factory=dict)
    session_id: str | None = None
    parent_tool_use_id: str | None = None
    uuid: str | None = None
    api_message_id: str | None = None

    @property
    def event_type(self) -> str | None:
        event = self.event
        kind = event.get("type") if isinstance(event, dict) else event.type
        return kind if isinstance(kind, str) else None


class WireAssistantMessage(WireModel):
    """A complete assistant message (or, often, one content block of it: several may share
    one ``message.id``). Arrives after the ``stream_event`` deltas of the same content."""

    type: Literal["assistant"]
    message: ApiMessage = Field(default_factory=ApiMessage)
    parent_tool_use_id: str | None = None
    session_id: str | None = None
    uuid: str | None = None
    timestamp: str | None = None
    aborted: bool = False
    error: Any = None

    @property
    def message_id(self) -> str | None:
        return self.message.id

    @property
    def model(self) -> str | None:
        return self.message.model

    @property
    def content(self) -> list[Block]:
        return self.message.blocks

    @property
    def text(self) -> str:
        """The text of this message's text blocks, concatenated."""
        return "".join(b.text for b in self.message.blocks if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        return [b for b in self.message.blocks if isinstance(b, ToolUseBlock)]


class WireUserMessage(WireModel):
    """A ``user`` line: tool results, interruption notes, replayed prompts."""

    type: Literal["user"]
    message: ApiMessage = Field(default_factory=ApiMessage)
    parent_tool_use_id: str | None = None
    session_id: str | None = None
    uuid: str | None = None
    timestamp: str | None = None
    tool_use_result: Any = None

    @property
    def content(self) -> str | list[Block]:
        return self.message.content

    @property
    def tool_results(self) -> list[ToolResultBlock]:
        content = self.message.content
        if isinstance(content, str):
            return []
        return [b for b in content if isinstance(b, ToolResultBlock)]


class WireResultMessage(WireModel):
    """The last line of every turn. Judge success by ``is_error`` / ``subtype`` /
    ``terminal_reason``, never by the CLI's exit code."""

    type: Literal["result"]
    subtype: str | None = None
    is_error: bool = False
    result: str | None = None
    session_id: str | None = None
    uuid: str | None = None
    total_cost_usd: Number | None = None
    usage: JsonDict | None = None
    modelUsage: JsonDict | None = None
    duration_ms: Number | None = None
    duration_api_ms: Number | None = None
    num_turns: int | None = None
    stop_reason: str | None = None
    terminal_reason: str | None = None
    errors: list[Any] | None = None
    permission_denials: list[Any] | None = None
    api_error_status: int | str | None = None
    structured_output: Any = None

    @property
    def ok(self) -> bool:
        """True when the turn succeeded (not ``is_error`` and no ``error_*`` subtype)."""
        return not self.is_error and not (self.subtype or "").startswith("error")


class ControlRequest(WireModel):
    """A request on the control protocol (from the CLI on stdout, or to it on stdin)."""

    type: Literal["control_request"]
    request_id: str | None = None
    request: ControlRequestBody = Field(default_factory=dict)

    @property
    def subtype(self) -> str | None:
        request = self.request
        kind = request.get("subtype") if isinstance(request, dict) else request.subtype
        return kind if isinstance(kind, str) else None


class ControlResponse(WireModel):
    """The answer to a control request (``response.request_id`` names it)."""

    type: Literal["control_response"]
    response: ControlResponseBody = Field(default_factory=ControlResponseBody)

    @property
    def request_id(self) -> str | None:
        return self.response.request_id

    @property
    def subtype(self) -> str | None:
        return self.response.subtype

    @property
    def is_error(self) -> bool:
        return self.response.subtype == "error"


class UnknownMessage(WireModel):
    """Any other line (a message type this SDK does not know yet, or one that did not
    validate). ``type`` is the wire type ("" if it had none); ``raw`` has everything."""

    type: str


Message: TypeAlias = (
    SystemMessage
    | StreamEvent
    | WireAssistantMessage
    | WireUserMessage
    | WireResultMessage
    | ControlRequest
    | ControlResponse
    | UnknownMessage
)

MESSAGE_TYPES: dict[str, type[WireModel]] = {
    "system": SystemMessage,
    "stream_event": StreamEvent,
    "assistant": WireAssistantMessage,
    "user": WireUserMessage,
    "result": WireResultMessage,
    "control_request": ControlRequest,
    "control_response": ControlResponse,
}
"""Wire ``type`` -> model class for the known message types."""


def _unknown(obj: Any) -> UnknownMessage:
    if isinstance(obj, dict):
        kind = obj.get("type")
        raw: JsonDict = obj
    else:
        kind = None
        raw = {"value": obj}
    wire_type = kind if isinstance(kind, str) else ""
    try:
        msg = UnknownMessage.model_construct(None, **raw)
        if msg.type != wire_type:
            msg.type = wire_type
    except Exception:  # odd keys (e.g. "_fields_set"): keep them in raw only
        msg = UnknownMessage.model_construct(type=wire_type)
    object.__setattr__(msg, "_wire", raw)
    return msg


def parse_message(obj: Any) -> Message:
    """Turn one decoded stdout object into a message model. Never raises.

    Unknown ``type`` values, non-dicts, and known types that fail validation all become
    :class:`UnknownMessage` (``raw`` keeps the object)."""
    if type(obj) is not dict:
        if not isinstance(obj, dict):
            return _unknown(obj)
    kind = obj.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is not None:
        try:
            return cast(Message, cls.model_validate(obj))
        except Exception:
            pass
    return _unknown(obj)


# ------------------------------------------------------------------------------ fast path

_DELTA_VALUE_KEYS = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
}


def stream_delta(obj: JsonDict) -> tuple[str, str, int, str | None, str | None] | None:
    """The parts of a ``stream_event`` line carrying a ``content_block_delta`` with a text,
    thinking or input-JSON delta, read from the decoded dict without building models (nearly
    every line of a streamed turn is one of these): ``(delta type, its text / thinking /
    partial_json, index, parent_tool_use_id, api_message_id)``.

    Returns them only when :func:`parse_message` would give a :class:`StreamEvent` whose
    ``event`` is a :class:`ContentBlockDeltaEvent` with a :class:`WireTextDelta` /
    :class:`WireThinkingDelta` / :class:`InputJsonDelta` with these same values; ``None`` for
    anything else, including any field of a type the models would convert or reject (then
    go through :func:`parse_message`)."""
    if type(obj) is not dict or obj.get("type") != "stream_event":
        return None
    event = obj.get("event")
    if type(event) is not dict or event.get("type") != "content_block_delta":
        return None
    delta = event.get("delta")
    if type(delta) is not dict:
        return None
    kind = delta.get("type")
    if type(kind) is not str:
        return None
    key = _DELTA_VALUE_KEYS.get(kind)
    if key is None:
        return None
    value = delta.get(key, "")
    index = event.get("index", 0)
    if type(value) is not str or type(index) is not int:
        return None
    parent = obj.get("parent_tool_use_id")
    api_id = obj.get("api_message_id")
    if parent is not None and type(parent) is not str:
        return None
    if api_id is not None and type(api_id) is not str:
        return None
    # validated but unused fields: a wrong type makes the whole line malformed
    session_id = obj.get("session_id")
    if session_id is not None and type(session_id) is not str:
        return None
    uuid = obj.get("uuid")
    if uuid is not None and type(uuid) is not str:
        return None
    return kind, value, index, parent, api_id
