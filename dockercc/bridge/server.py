"""The host side of the CLI's in-process ("sdk") MCP server.

The CLI, started with ``--mcp-config '{"mcpServers":{"host":{"type":"sdk","name":"host"}}}'``,
sends MCP JSON-RPC messages inside ``control_request`` ``mcp_message``; the runner relays each
one to the host. :class:`HostBridge` answers them with an MCP server built on the ``mcp`` SDK's
low-level :class:`mcp.server.lowlevel.Server`, driven over in-memory streams::

    bridge = HostBridge([echo, add], server_name="host")
    reply = await bridge.handle({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})

:meth:`HostBridge.handle` takes one JSON-RPC message (a dict, or JSON text) and returns the
JSON-RPC reply dict. It never raises for a bad message. The bridge is transport-free: the Redis
relay lives elsewhere and only calls ``handle``.

Details:

- Requests get the SDK server's reply with the caller's ``id``. Ids are rewritten internally,
  so requests from several CLIs sharing one bridge (all starting at id 0) never collide.
- Notifications (and responses) are delivered to the server and acknowledged at once with
  ``{"jsonrpc": "2.0", "id": None, "result": {}}``, which is what the CLI expects.
- Requests run concurrently: a slow tool never blocks ``tools/list`` or another call.
- The SDK refuses requests before ``initialize``. When the first request is not
  ``initialize`` (a CLI pre-started against another bridge instance already did the
  handshake), the bridge performs an internal handshake first.
- The server runs in a background asyncio task, started lazily by the first ``handle`` (or by
  ``async with``) and stopped by :meth:`HostBridge.aclose`. A bridge is bound to the event loop
  it started on.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio
import mcp_types as mt
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.message import SessionMessage
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError

from ..errors import BadData, ToolError
from ..protocol import bounded
from .tools import AnyTool, Tool, ToolOutput, ToolRegistry

__all__ = ["ACK", "HostBridge", "REQUEST_CANCELLED", "BRIDGE_CLOSED"]

log = logging.getLogger("dockercc.bridge")

ACK: dict[str, Any] = {"jsonrpc": "2.0", "id": None, "result": {}}
"""The reply to a notification (a copy is returned each time)."""

BRIDGE_CLOSED = -32000
"""JSON-RPC error code: the bridge is closed or stopped before answering."""

REQUEST_CANCELLED = -32800
"""JSON-RPC error code: the caller cancelled the request (``notifications/cancelled``)."""

_CLOSE_TIMEOUT = 5.0
_INTERNAL_CLIENT_INFO = {"name": "dockercc-bridge", "version": "1"}

JSONDict = dict[str, Any]
RequestId = int | str


def _ack() -> JSONDict:
    return {"jsonrpc": "2.0", "id": None, "result": {}}


def _error_reply(request_id: RequestId | None, code: int, message: str,
                 data: Any = None) -> JSONDict:
    error: JSONDict = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _request_id_of(raw: Mapping[str, Any]) -> RequestId | None:
    rid = raw.get("id")
    if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
        return rid
    return None


def _short_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(message)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


@dataclass
class _Waiter:
    original_id: RequestId
    method: str
    done: anyio.Event = field(default_factory=anyio.Event)
    reply: JSONDict | None = None

    def resolve(self, reply: JSONDict) -> None:
        if self.reply is None:
            self.reply = reply
            self.done.set()


class HostBridge:
    """An MCP server for the CLI's ``sdk`` MCP config, answering one JSON-RPC message at a time.

    Args:
        tools: the tools to offer (:class:`Tool` objects, plain functions, or a registry).
            A :class:`ToolRegistry` is used as is (live: tools added to it later are offered).
        server_name: the name in ``--mcp-config`` (the model sees ``mcp__<name>__<tool>``).
        allow: if given, only these tool names are listed and callable; a call to another
            tool gives an error result. ``mcp__<server_name>__<tool>`` spellings are accepted.
        version: ``serverInfo.version`` in the ``initialize`` reply.
    """

    def __init__(
        self,
        tools: Iterable[AnyTool | Callable[..., Any]] | ToolRegistry = (),
        *,
        server_name: str = "host",
        allow: Collection[str] | None = None,
        version: str = "1",
    ) -> None:
        self.registry: ToolRegistry = tools if isinstance(tools, ToolRegistry) else ToolRegistry(
            tools)
        self.server_name = server_name
        prefix = f"mcp__{server_name}__"
        self.allow: frozenset[str] | None = None if allow is None else frozenset(
            name.removeprefix(prefix) for name in allow)
        self.version = version
        self.server: Server[Any] = Server(
            server_name,
            version=version,
            on_list_tools=self._on_list_tools,
            on_call_tool=self._on_call_tool,
        )
        self._send: MemoryObjectSendStream[SessionMessage | Exception] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, _Waiter] = {}
        self._by_original: dict[RequestId, int] = {}
        self._next_id = 0
        self._initialized = False
        self._init_lock: asyncio.Lock | None = None
        self._closed = False

    # ---------------------------------------------------------------------------- tools

    def is_allowed(self, name: str) -> bool:
        """Whether ``name`` may be listed and called (the allowlist, if any)."""
        return self.allow is None or name in self.allow

    @property
    def tools(self) -> list[AnyTool]:
        """The tools offered to the agent (the registry filtered by ``allow``), in order."""
        return [t for t in self.registry if self.is_allowed(t.name)]

    async def _on_list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: mt.PaginatedRequestParams | None
    ) -> mt.ListToolsResult:
        return mt.ListToolsResult(tools=[
            mt.Tool(name=t.name, description=t.description or None, input_schema=t.input_schema)
            for t in self.tools
        ])

    async def _on_call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: mt.CallToolRequestParams
    ) -> mt.CallToolResult:
        output = await self.call_tool(params.name, params.arguments)
        try:
            return mt.CallToolResult.model_validate(output.to_dict(), by_name=False)
        except ValidationError as exc:
            return mt.CallToolResult(is_error=True, content=[mt.TextContent(
                type="text", text=f"tool {params.name} returned invalid MCP content: "
                                  f"{_short_validation_error(exc)}")])

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None) -> ToolOutput:
        """Call a tool by name as the MCP path does (allowlist applied); never raises."""
        found: Tool[..., Any] | None = self.registry.get(name)
        if found is None or not self.is_allowed(name):
            offered = ", ".join(t.name for t in self.tools) or "none"
            if found is None:
                return ToolOutput.error(f"unknown tool {name!r} (available: {offered})")
            return ToolOutput.error(f"tool {name!r} is not allowed (available: {offered})")
        return await found.call(arguments)

    # ---------------------------------------------------------------------------- lifecycle

    @property
    def started(self) -> bool:
        """Whether the background server task is running."""
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        """Start the server task (``handle`` does this lazily). Idempotent."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None:
            if loop is not self._loop:
                raise RuntimeError(
                    "HostBridge is bound to the event loop it started on; use it from that loop")
            return
        if self._closed:
            return
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](math.inf)
        out_send, out_receive = anyio.create_memory_object_stream[SessionMessage](math.inf)
        self._send = send
        self._loop = loop
        self._init_lock = asyncio.Lock()
        self._task = loop.create_task(self._run(receive, out_send, out_receive),
                                      name=f"dockercc-bridge-{self.server_name}")

    async def _run(
        self,
        receive: MemoryObjectReceiveStream[SessionMessage | Exception],
        out_send: MemoryObjectSendStream[SessionMessage],
        out_receive: MemoryObjectReceiveStream[SessionMessage],
    ) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump_replies, out_receive)
                # run() closes out_send when the read side ends; the pump then drains and stops
                await self.server.run(receive, out_send,
                                      self.server.create_initialization_options(),
                                      raise_exceptions=False)
        except Exception:
            log.exception("MCP host bridge %r stopped with an error", self.server_name)
        finally:
            self._closed = True
            self._fail_pending("host bridge stopped")

    async def _pump_replies(self, out_receive: MemoryObjectReceiveStream[SessionMessage]) -> None:
        async with out_receive:
            async for item in out_receive:
                message = item.message
                if isinstance(message, mt.JSONRPCResponse | mt.JSONRPCError):
                    internal = message.id
                    waiter = self._pending.get(internal) if isinstance(internal, int) else None
                    if waiter is None:
                        log.debug("bridge dropped a reply for unknown id %r", internal)
                        continue
                    if isinstance(message, mt.JSONRPCResponse):
                        waiter.resolve({"jsonrpc": "2.0", "id": waiter.original_id,
                                        "result": message.result})
                    else:
                        error = message.error.model_dump(mode="json", exclude_none=True)
                        waiter.resolve({"jsonrpc": "2.0", "id": waiter.original_id,
                                        "error": error})
                else:
                    # server-initiated notifications/requests have no way back through handle()
                    log.debug("bridge dropped server message %r",
                              getattr(message, "method", message))

    def _fail_pending(self, reason: str) -> None:
        for waiter in list(self._pending.values()):
            waiter.resolve(_error_reply(waiter.original_id, BRIDGE_CLOSED, reason))

    async def aclose(self) -> None:
        """Stop the server: in-flight requests are answered with an error. Idempotent."""
        self._closed = True
        task, send = self._task, self._send
        self._send = None
        if send is not None:
            send.close()  # EOF: the dispatcher cancels in-flight handlers and stops
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT)
            if not done:
                task.cancel()
                await asyncio.wait({task})
        self._fail_pending("host bridge closed")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ---------------------------------------------------------------------------- messages

    async def handle(self, message: Mapping[str, Any] | str | bytes) -> JSONDict:
        """Answer one JSON-RPC message from the CLI with a JSON-RPC reply dict.

        Requests get the server's reply (same ``id``); notifications and responses get
        :data:`ACK`; malformed messages get a JSON-RPC error reply. Never raises for a bad
        message.
        """
        parsed = self._parse(message)
        if isinstance(parsed, dict):
            return parsed
        if self._closed:
            if isinstance(parsed, mt.JSONRPCRequest):
                return _error_reply(parsed.id, BRIDGE_CLOSED, "host bridge is closed")
            return _ack()
        self._ensure_started()
        if isinstance(parsed, mt.JSONRPCRequest):
            return await self._request(parsed)
        if isinstance(parsed, mt.JSONRPCNotification):
            parsed = self._translate_notification(parsed)
        try:
            await self._deliver(parsed)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.debug("bridge closed; dropped %r", getattr(parsed, "method", parsed))
        return _ack()

    def _parse(self, message: Any) -> mt.JSONRPCMessage | JSONDict:
        if isinstance(message, bytes | bytearray | str):
            try:
                message = bounded.loads(message, what="MCP message")
            except BadData as exc:
                return _error_reply(None, mt.PARSE_ERROR, f"parse error: {exc}")
        elif bounded.depth(message) > bounded.MAX_DEPTH:
            return _error_reply(None, mt.PARSE_ERROR, "parse error: nested too deeply")
        if not isinstance(message, Mapping):
            return _error_reply(None, mt.INVALID_REQUEST,
                                f"invalid JSON-RPC message: expected an object, "
                                f"got {type(message).__name__}")
        raw = dict(message)
        rid = _request_id_of(raw)
        raw.setdefault("jsonrpc", "2.0")
        model: type[mt.JSONRPCRequest | mt.JSONRPCNotification | mt.JSONRPCResponse
                    | mt.JSONRPCError]
        if "method" in raw:
            model = mt.JSONRPCRequest if raw.get("id") is not None else mt.JSONRPCNotification
        elif "result" in raw:
            model = mt.JSONRPCResponse
        elif "error" in raw:
            model = mt.JSONRPCError
        else:
            return _error_reply(rid, mt.INVALID_REQUEST,
                                "invalid JSON-RPC message: no method, result or error")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            return _error_reply(rid, mt.INVALID_REQUEST,
                                f"invalid JSON-RPC message: {_short_validation_error(exc)}")

    def _translate_notification(self, note: mt.JSONRPCNotification) -> mt.JSONRPCNotification:
        if note.method != "notifications/cancelled" or not note.params:
            return note
        original = note.params.get("requestId")
        if not isinstance(original, int | str) or isinstance(original, bool):
            return note
        internal = self._by_original.get(original)
        if internal is None:
            return note
        waiter = self._pending.get(internal)
        if waiter is not None:
            waiter.resolve(_error_reply(original, REQUEST_CANCELLED, "request cancelled"))
        return mt.JSONRPCNotification(jsonrpc="2.0", method=note.method,
                                      params={**note.params, "requestId": internal})

    async def _deliver(self, message: mt.JSONRPCMessage) -> None:
        send = self._send
        if send is None:
            raise anyio.ClosedResourceError
        await send.send(SessionMessage(message))

    async def _request(self, request: mt.JSONRPCRequest) -> JSONDict:
        if request.method == "initialize":
            self._initialized = True  # set before any await: later requests queue behind it
        elif not self._initialized:
            try:
                await self._handshake()
            except Exception as exc:  # noqa: BLE001
                log.warning("bridge internal initialize failed: %s", exc)
                return _error_reply(request.id, mt.INTERNAL_ERROR,
                                    f"host bridge could not initialize: {exc}")
        reply = await self._roundtrip(request)
        if request.method == "initialize" and "error" in reply:
            self._initialized = False
        return reply

    async def _handshake(self) -> None:
        assert self._init_lock is not None
        async with self._init_lock:
            if self._initialized:
                return
            reply = await self._roundtrip(mt.JSONRPCRequest(
                jsonrpc="2.0", id="dockercc-bridge-initialize", method="initialize",
                params={"protocolVersion": LATEST_HANDSHAKE_VERSION, "capabilities": {},
                        "clientInfo": dict(_INTERNAL_CLIENT_INFO)}))
            if "error" in reply:
                raise ToolError(f"initialize failed: {reply['error'].get('message')}")
            await self._deliver(mt.JSONRPCNotification(
                jsonrpc="2.0", method="notifications/initialized"))
            self._initialized = True

    async def _roundtrip(self, request: mt.JSONRPCRequest) -> JSONDict:
        self._next_id += 1
        internal = self._next_id
        waiter = _Waiter(original_id=request.id, method=request.method)
        self._pending[internal] = waiter
        self._by_original[request.id] = internal
        try:
            try:
                await self._deliver(request.model_copy(update={"id": internal}))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return _error_reply(request.id, BRIDGE_CLOSED, "host bridge is closed")
            await waiter.done.wait()
        except BaseException:
            if waiter.reply is None and self._send is not None:
                # the caller went away: tell the server so the handler is cancelled
                try:
                    self._send.send_nowait(SessionMessage(mt.JSONRPCNotification(
                        jsonrpc="2.0", method="notifications/cancelled",
                        params={"requestId": internal, "reason": "caller cancelled"})))
                except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass
            raise
        finally:
            self._pending.pop(internal, None)
            if self._by_original.get(request.id) == internal:
                del self._by_original[request.id]
        assert waiter.reply is not None
        return waiter.reply
