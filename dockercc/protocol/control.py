"""Build the lines written to the CLI's stdin (``--input-format stream-json``). Pure: no I/O.

Each builder returns one compact JSON line (no trailing newline; add ``"\\n"`` when
writing); ``control_success_dict`` also gives its message as a dict. The
JSON is ASCII-only (``\\uXXXX`` escapes), so it can always be encoded and never contains a
raw line break.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ..errors import InvalidPrompt

__all__ = [
    "check_prompt",
    "dumps_line",
    "new_request_id",
    "user_message",
    "interrupt_request",
    "initialize_request",
    "control_request",
    "control_success",
    "control_success_dict",
    "control_error",
    "mcp_response",
]

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def dumps_line(obj: Any) -> str:
    """Compact one-line JSON for the CLI's stdin."""
    return _encoder.encode(obj)


def new_request_id() -> str:
    """A fresh, unique control request id."""
    return f"req_{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------ user input


def check_prompt(prompt: object) -> None:
    """Raise :class:`~dockercc.errors.InvalidPrompt` (a ``ValueError``) unless ``prompt`` is a
    non-blank string or a non-empty list of content blocks (dicts with a ``"type"``). Every
    entry point that takes a prompt checks it here."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidPrompt("the prompt is empty")
        return
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in prompt):
        raise InvalidPrompt("a prompt is a non-empty string or a non-empty list of content "
                            'blocks (dicts with a "type", e.g. {"type": "text", "text": ...})')


def user_message(
    content: str | list[Any],
    session_id: str = "default",
    parent_tool_use_id: str | None = None,
) -> str:
    """A user turn: ``content`` is the prompt text or a list of content blocks (dicts such
    as ``{"type": "text", "text": ...}`` or image blocks)."""
    if not isinstance(content, str):
        content = list(content)
    return dumps_line({
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": parent_tool_use_id,
        "session_id": session_id,
    })


# ------------------------------------------------------------------------ control requests


def control_request(request_id: str, subtype: str, **fields: Any) -> str:
    """Any control request: ``{"type":"control_request","request_id":..,"request":{..}}``."""
    return dumps_line({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": subtype, **fields},
    })


def interrupt_request(request_id: str) -> str:
    """Stop the running turn. The CLI answers with a ``control_response`` and ends the turn
    with a ``result`` of subtype ``error_during_execution``; it then takes the next turn."""
    return control_request(request_id, "interrupt")


def initialize_request(request_id: str, hooks: dict[str, Any] | None = None, **fields: Any) -> str:
    """The SDK handshake (``hooks`` is sent even when ``None``, as the SDKs do); extra
    keyword arguments are added to the request (e.g. ``agents``)."""
    return control_request(request_id, "initialize", hooks=hooks, **fields)


# ----------------------------------------------------------------------- control responses


def control_success_dict(request_id: str, response: dict[str, Any] | None = None) -> dict[str, Any]:
    """A successful answer to the CLI's control request ``request_id``, as a dict."""
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


def control_error(request_id: str, message: str) -> str:
    """A failed answer to the CLI's control request ``request_id``."""
    return dumps_line({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": message},
    })


def mcp_response(request_id: str, jsonrpc_reply: dict[str, Any]) -> str:
    """Answer an ``mcp_message`` control request with the MCP server's JSON-RPC reply (for a
    relayed notification, which has none, ``{"jsonrpc": "2.0", "id": None, "result": {}}``:
    the CLI waits for a control response all the same)."""
    return control_success(request_id, {"mcp_response": jsonrpc_reply})
