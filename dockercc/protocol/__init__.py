"""The pure protocol layer: the Claude Code CLI's stream-json wire format and Redis key names.

Nothing in this package does I/O; it imports only the standard library and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .control import (
    control_error,
    control_request,
    control_success,
    control_success_dict,
    dumps_line,
    initialize_request,
    interrupt_request,
    mcp_response,
    new_request_id,
    user_message,
)
from .envelope import RUNNER_EVENT_TYPE, Envelope, encode_envelope, runner_event
from .keys import DEFAULT_PREFIX, OUTPUT_BUFFER_MAX, PoolKeys, SessionKeys, validate_id

# the wire models need pydantic, which the runner inside each container does not: it imports
# control, envelope and keys only, so they load on first use (a cold container starts faster)
if TYPE_CHECKING:
    from .accumulator import ToolCall, ToolResultRecord, TurnAccumulator
    from .messages import (
        MESSAGE_TYPES,
        ApiMessage,
        Block,
        CanUseToolRequest,
        ContentBlock,
        ContentBlockDeltaEvent,
        ContentBlockStartEvent,
        ContentBlockStopEvent,
        ControlRequest,
        ControlRequestBody,
        ControlResponse,
        ControlResponseBody,
        Delta,
        InitializeRequest,
        InputJsonDelta,
        InterruptRequest,
        JsonDict,
        McpMessageRequest,
        Message,
        MessageDelta,
        MessageDeltaEvent,
        MessageStartEvent,
        MessageStopEvent,
        SignatureDelta,
        SseEvent,
        StreamEvent,
        SystemMessage,
        TextBlock,
        ThinkingBlock,
        ToolResultBlock,
        ToolUseBlock,
        UnknownMessage,
        WireAssistantMessage,
        WireModel,
        WireResultMessage,
        WireTextDelta,
        WireThinkingDelta,
        WireUserMessage,
        parse_message,
        stream_delta,
    )
    from .parser import LineParser, SkippedLine

_LAZY = {
    **dict.fromkeys(("ToolCall", "ToolResultRecord", "TurnAccumulator"), "accumulator"),
    **dict.fromkeys(("LineParser", "SkippedLine"), "parser"),
    **dict.fromkeys((
        "MESSAGE_TYPES",
        "ApiMessage",
        "WireAssistantMessage",
        "Block",
        "CanUseToolRequest",
        "ContentBlock",
        "ContentBlockDeltaEvent",
        "ContentBlockStartEvent",
        "ContentBlockStopEvent",
        "ControlRequest",
        "ControlRequestBody",
        "ControlResponse",
        "ControlResponseBody",
        "Delta",
        "InitializeRequest",
        "InputJsonDelta",
        "InterruptRequest",
        "JsonDict",
        "McpMessageRequest",
        "Message",
        "MessageDelta",
        "MessageDeltaEvent",
        "MessageStartEvent",
        "MessageStopEvent",
        "WireResultMessage",
        "SignatureDelta",
        "SseEvent",
        "StreamEvent",
        "SystemMessage",
        "TextBlock",
        "WireTextDelta",
        "ThinkingBlock",
        "WireThinkingDelta",
        "ToolResultBlock",
        "ToolUseBlock",
        "UnknownMessage",
        "WireUserMessage",
        "WireModel",
        "parse_message",
        "stream_delta",
    ), "messages"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    # envelope
    "RUNNER_EVENT_TYPE",
    "Envelope",
    "encode_envelope",
    "runner_event",
    # keys
    "DEFAULT_PREFIX",
    "OUTPUT_BUFFER_MAX",
    "PoolKeys",
    "SessionKeys",
    "validate_id",
    # messages
    "MESSAGE_TYPES",
    "ApiMessage",
    "WireAssistantMessage",
    "Block",
    "CanUseToolRequest",
    "ContentBlock",
    "ContentBlockDeltaEvent",
    "ContentBlockStartEvent",
    "ContentBlockStopEvent",
    "ControlRequest",
    "ControlRequestBody",
    "ControlResponse",
    "ControlResponseBody",
    "Delta",
    "InitializeRequest",
    "InputJsonDelta",
    "InterruptRequest",
    "JsonDict",
    "McpMessageRequest",
    "Message",
    "MessageDelta",
    "MessageDeltaEvent",
    "MessageStartEvent",
    "MessageStopEvent",
    "WireResultMessage",
    "SignatureDelta",
    "SseEvent",
    "StreamEvent",
    "SystemMessage",
    "TextBlock",
    "WireTextDelta",
    "ThinkingBlock",
    "WireThinkingDelta",
    "ToolResultBlock",
    "ToolUseBlock",
    "UnknownMessage",
    "WireUserMessage",
    "WireModel",
    "parse_message",
    "stream_delta",
    # parser
    "LineParser",
    "SkippedLine",
    # accumulator
    "ToolCall",
    "ToolResultRecord",
    "TurnAccumulator",
    # control
    "control_error",
    "control_request",
    "control_success",
    "control_success_dict",
    "dumps_line",
    "initialize_request",
    "interrupt_request",
    "mcp_response",
    "new_request_id",
    "user_message",
]
