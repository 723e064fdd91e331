"""A throwaway Messages API on the container's loopback, for the warm-up turn.

A CLI process's first turn that reaches the model costs several times the CPU of a later
one (request building, the API client, the streaming parser and the turn's bookkeeping all
run for the first time). A warm container must not send anything to the real model before
a session claims it, so the runner points the pre-started CLI at this server for one
throwaway turn (``apply_flag_settings`` with ``env.ANTHROPIC_BASE_URL``), points it back,
and clears the conversation (``/clear``). The claimed session's first turn then runs the
CLI's warmed code paths.

It answers every ``POST …/messages`` with a short streamed (or plain JSON) reply, anything
else with a 404 error body, and never reads or keeps the request's headers (the CLI sends
its credentials with every request). Standard library only: the runner imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any

log = logging.getLogger("dockercc.agent.warmup")

WARMUP_PROMPT = "Reply with OK."
_MAX_HEAD = 64 * 1024
_MAX_BODY = 32 * 1024 * 1024

# Any of these makes the CLI talk to a provider other than the Anthropic API, where
# ANTHROPIC_BASE_URL does not route requests: the warm-up turn is skipped there.
_OTHER_PROVIDERS = ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")
DEFAULT_BASE_URL = "https://api.anthropic.com"


def warmup_supported(env: dict[str, str] | None = None) -> bool:
    """Whether a base-URL switch routes the CLI's model requests (first-party API only)."""
    env = dict(os.environ if env is None else env)
    return not any(env.get(k, "").strip().lower() not in ("", "0", "false", "no")
                   for k in _OTHER_PROVIDERS)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _reply_events(model: str) -> list[bytes]:
    usage = {"input_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return [
        _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_dockercc_warmup", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1}}}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "OK"}}),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": 1}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]


def _reply_json(model: str) -> dict[str, Any]:
    return {"id": "msg_dockercc_warmup", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "OK"}], "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1}}


class WarmupAPI:
    """``async with WarmupAPI() as api: api.url`` — serves until the block ends."""

    def __init__(self) -> None:
        self.url = ""
        self.message_requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> WarmupAPI:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target = (lines[0].split(" ") + ["", ""])[:2]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > _MAX_BODY:
            return False
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        if method == "POST" and path.endswith("/messages"):
            self.message_requests += 1
            try:
                req = json.loads(body) if body else {}
            except ValueError:
                req = {}
            model = str(req.get("model") or "claude") if isinstance(req, dict) else "claude"
            if isinstance(req, dict) and req.get("stream"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
                             b"request-id: req_dockercc_warmup\r\n\r\n")
                for chunk in _reply_events(model):
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                writer.write(b"0\r\n\r\n")
            else:
                self._json(writer, 200, _reply_json(model))
        else:
            self._json(writer, 404, {"type": "error", "error": {
                "type": "not_found_error", "message": f"{method} {path}: not served in warm-up"}})
        await writer.drain()
        return True

    @staticmethod
    def _json(writer: asyncio.StreamWriter, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        reason = b"OK" if status == 200 else b"Not Found"
        writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                     b"request-id: req_dockercc_warmup\r\ncontent-length: %d\r\n\r\n%s"
                     % (status, reason, len(data), data))
