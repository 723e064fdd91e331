"""Build the lines written to the CLI's stdin (``--input-format stream-json``). Pure: no I/O.

Each builder comes in two forms: ``x_dict(...)`` returns the message as a dict, ``x(...)``
returns it as one compact JSON line (no trailing newline; add ``"\\n"`` when writing). The
JSON is ASCII-only (``\\uXXXX`` escapes), so it can always be encoded and never contains a
raw line break.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

__all__ = [
    "dumps_line",
    "new_request_id",
    "user_message",
    "user_message_dict",
    "interrupt_request",
    "interrupt_request_dict",
    "initialize_request",
    "initialize_request_dict",
    "control_request",
    "control_request_dict",
    "control_success",
    "control_success_dict",
    "control_error",
    "control_error_dict",
    "mcp_response",
    "mcp_response_dict",
    "mcp_notification_ack",
    "mcp_notification_ack_dict",
    "permission_response",
    "permission_response_dict",
]

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def dumps_line(obj: Any) -> str:
    """Compact one-line JSON for the CLI's stdin."""
    return _encoder.encode(obj)


def new_request_id() -> str:
    """A fresh, unique control request id."""
    return f"req_{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------ user input


def user_message_dict(
    content: str | list[Any],
    session_id: str = "default",
    parent_tool_use_id: str | None = None,
) -> dict[str, Any]:
    """A user turn: ``content`` is the prompt text or a list of content blocks (dicts such
    as ``{"type": "text", "text": ...}`` or image blocks)."""
    if not isinstance(content, str):
        content = list(content)
    return {
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": parent_tool_use_id,
        "session_id": session_id,
    }


def user_message(
    content: str | list[Any],
    session_id: str = "default",
    parent_tool_use_id: str | None = None,
) -> str:
    return dumps_line(user_message_dict(content, session_id, parent_tool_use_id))


# ------------------------------------------------------------------------ control requests


def control_request_dict(request_id: str, subtype: str, **fields: Any) -> dict[str, Any]:
    """Any control request: ``{"type":"control_request","request_id":..,"request":{..}}``."""
    return {
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": subtype, **fields},
    }


def control_request(request_id: str, subtype: str, **fields: Any) -> str:
    return dumps_line(control_request_dict(request_id, subtype, **fields))


def interrupt_request_dict(request_id: str) -> dict[str, Any]:
    """Stop the running turn. The CLI answers with a ``control_response`` and ends the turn
    with a ``result`` of subtype ``error_during_execution``; it then takes the next turn."""
    return control_request_dict(request_id, "interrupt")


def interrupt_request(request_id: str) -> str:
    return dumps_line(interrupt_request_dict(request_id))


def initialize_request_dict(
    request_id: str, hooks: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """The SDK handshake (``hooks`` is sent even when ``None``, as the SDKs do); extra
    keyword arguments are added to the request (e.g. ``agents``)."""
    return control_request_dict(request_id, "initialize", hooks=hooks, **fields)


def initialize_request(request_id: str, hooks: dict[str, Any] | None = None, **fields: Any) -> str:
    return dumps_line(initialize_request_dict(request_id, hooks, **fields))


# ----------------------------------------------------------------------- control responses


def control_success_dict(request_id: str, response: dict[str, Any] | None = None) -> dict[str, Any]:
    """A successful answer to the CLI's control request ``request_id``."""
    return {
        "type": "control_response",
        "response": {
            "subtype": "success",
            "request_id": request_id,
            "response": {} if response is None else response,
        },
    }


def control_success(request_id: str, response: dict[str, Any] | None = None) -> str:
    return dumps_line(control_success_dict(request_id, response))


def control_error_dict(request_id: str, message: str) -> dict[str, Any]:
    """A failed answer to the CLI's control request ``request_id``."""
    return {
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": message},
    }


def control_error(request_id: str, message: str) -> str:
    return dumps_line(control_error_dict(request_id, message))


def mcp_response_dict(request_id: str, jsonrpc_reply: dict[str, Any]) -> dict[str, Any]:
    """Answer an ``mcp_message`` control request with the MCP server's JSON-RPC reply."""
    return control_success_dict(request_id, {"mcp_response": jsonrpc_reply})


def mcp_response(request_id: str, jsonrpc_reply: dict[str, Any]) -> str:
    return dumps_line(mcp_response_dict(request_id, jsonrpc_reply))


def mcp_notification_ack_dict(request_id: str) -> dict[str, Any]:
    """Acknowledge a relayed JSON-RPC notification (it has no reply, but the CLI waits for
    a control response all the same)."""
    return mcp_response_dict(request_id, {"jsonrpc": "2.0", "id": None, "result": {}})


def mcp_notification_ack(request_id: str) -> str:
    return dumps_line(mcp_notification_ack_dict(request_id))


def permission_response_dict(
    request_id: str,
    allow: bool,
    *,
    updated_input: dict[str, Any] | None = None,
    message: str = "",
    interrupt: bool = False,
) -> dict[str, Any]:
    """Answer a ``can_use_tool`` request: allow or deny. To allow, pass the tool input to
    run with as ``updated_input`` (the request's ``input`` to run it unchanged; the CLI
    uses it in place of the original)."""
    decision: dict[str, Any]
    if allow:
        decision = {"behavior": "allow"}
        if updated_input is not None:
            decision["updatedInput"] = updated_input
    else:
        decision = {"behavior": "deny", "message": message}
        if interrupt:
            decision["interrupt"] = True
    return control_success_dict(request_id, decision)


def permission_response(
    request_id: str,
    allow: bool,
    *,
    updated_input: dict[str, Any] | None = None,
    message: str = "",
    interrupt: bool = False,
) -> str:
    return dumps_line(
        permission_response_dict(
            request_id, allow, updated_input=updated_input, message=message, interrupt=interrupt
        )
    )
