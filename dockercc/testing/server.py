"""A scripted stand-in for the Anthropic Messages API, served over real HTTP on 127.0.0.1.

One module on purpose (~650 lines): one scripted server, its routes, replies and request log.

Point the real Claude Code CLI at it (``api.env()``) and it runs fully offline: every
streaming ``POST /v1/messages`` takes the next scripted :class:`~dockercc.testing.Reply`.

Why a threaded stdlib ``http.server`` (not asyncio): it needs no event loop of the caller's,
so the same object works from sync code, from async code and inside an already running loop
(Jupyter) — the server lives on its own threads, one per connection, and ``start()`` /
``close()`` never block on the caller's loop.

How a reply is chosen for a streaming ``/v1/messages`` request, first match wins:

1. a route (``api.on(marker, ...)``) whose marker is a substring of the latest user text;
2. the script queue (``ScriptedAPI(*replies)`` / ``api.script(...)``), one reply per request;
3. ``default``: a reply, or a responder ``callable(body) -> Reply | str``
   (default :func:`~dockercc.testing.echo`: ``"echo: <last user text>"``).

Non-streaming ``/v1/messages`` requests (titles, summaries, probes) never consume the script;
they get ``side`` (default: text ``"OK"``) as a JSON message. ``count_tokens`` gets an
estimate, ``GET /v1/models`` a one-model list, ``HEAD`` / ``GET /`` 200 ``{}``, anything
else a 404 with Anthropic's error body. Nothing a client sends makes the server crash: a
failing responder is answered with a 500 ``api_error`` and recorded in ``api.errors``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

from .replies import (
    Reply,
    ReplyLike,
    Responder,
    as_reply,
    echo,
    estimate_tokens,
    last_user_text,
    render_message,
    render_stream,
    text,
    tool_results,
)

__all__ = ["Headers", "RecordedRequest", "ScriptedAPI", "DEFAULT_API_KEY"]

log = logging.getLogger("dockercc.testing")

DEFAULT_API_KEY = "sk-ant-scripted-test"

RequestKind = Literal["stream", "message", "count_tokens", "models", "other"]


class Headers(dict[str, str]):
    """A plain ``dict`` of request headers with lower-case keys and case-insensitive lookup."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        for k, v in items:
            k = k.lower()
            super().__setitem__(k, f"{self[k]}, {v}" if k in self else v)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received.

    ``path`` is without the query string (``"/v1/messages"``); ``query`` holds it
    (``{"beta": "true"}``). ``body`` is the parsed JSON body (``None`` if empty or not JSON).
    ``kind`` says how it was treated; ``source`` which reply answered a ``/v1/messages``
    request (``"route:<marker>"``, ``"script"``, ``"default"`` or ``"side"``).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: Any
    raw_body: bytes
    timestamp: float
    kind: RequestKind
    source: str | None = None
    reply: Reply | None = field(default=None, repr=False)

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages`` (empty unless this is a Messages API request)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return list(self.body["messages"])
        return []

    @property
    def last_user_text(self) -> str:
        """The latest text the user typed (tool_result turns and system reminders skipped)."""
        return last_user_text(self.body if isinstance(self.body, dict) else None)

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """All ``tool_result`` blocks in the request's messages, oldest first."""
        return tool_results(self.body if isinstance(self.body, dict) else None)

    @property
    def tool_result_text(self) -> str:
        """The text of every tool_result, joined with newlines (handy for ``in`` asserts)."""
        parts: list[str] = []
        for block in self.tool_results:
            content = block.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    str(c.get("text", ""))
                    for c in content
                    if isinstance(c, dict) and c.get("type") == "text"
                )
        return "\n".join(parts)


@dataclass
class _Route:
    marker: str
    replies: deque[Reply]
    repeat: bool


def _to_responder(value: Reply | Responder | str | None, fallback: Responder) -> Responder:
    if value is None:
        return fallback
    if isinstance(value, Reply | str):
        fixed = as_reply(value)
        return lambda _body: fixed
    if callable(value):
        return value
    raise TypeError(f"expected a Reply, str or callable, got {type(value).__name__}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: ScriptedAPI


class ScriptedAPI:
    """A scripted Messages API on ``http://127.0.0.1:<port>``; see the module docs.

    ::

        with ScriptedAPI(text("hi"), default=echo) as api:
            subprocess.run(["claude", "-p", "hello"], env={**os.environ, **api.env()})
            assert api.message_requests[0].last_user_text == "hello"

    Also usable as ``async with``. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        *replies: ReplyLike,
        default: Reply | Responder | str | None = None,
        side: Reply | Responder | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._default: Responder = _to_responder(default, echo)
        self._side: Responder = _to_responder(side, lambda _body: text("OK"))
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[Reply] = deque(as_reply(r) for r in replies)
        self._routes: list[_Route] = []
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind and serve in a background thread (idempotent). Returns ``self``."""
        with self._lock:
            if self._server is not None:
                return self
            self._closing.clear()
            server = _Server((self.host, self._requested_port), _Handler)
            server.api = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"ScriptedAPI:{server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        log.debug("scripted API listening on %s", self.url)
        return self

    def close(self) -> None:
        """Stop serving, abort streams in progress and close open connections (idempotent)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread = None, None
            connections = list(self._connections)
            self._connections.clear()
        if server is None:
            return
        self._closing.set()
        server.shutdown()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; never raise from a finalizer
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"<ScriptedAPI {state} pending={self.pending} requests={len(self._requests)}>"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the chosen one if constructed with ``port=0``); starts if needed."""
        server = self._server or self.start()._server
        assert server is not None
        return int(server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` — the value for ``ANTHROPIC_BASE_URL``."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def env(
        self, *, api_key: str | None = DEFAULT_API_KEY, oauth_token: str | None = None
    ) -> dict[str, str]:
        """Environment variables that point the Claude Code CLI at this server.

        With ``oauth_token`` the CLI authenticates with ``CLAUDE_CODE_OAUTH_TOKEN`` (it then
        sends ``Authorization: Bearer <token>``) and ``ANTHROPIC_API_KEY`` is left out.
        Merge into a full environment (``{**os.environ, **api.env()}``) and make sure no
        real ``ANTHROPIC_API_KEY`` / ``CLAUDE_CODE_OAUTH_TOKEN`` leaks in from the host.
        """
        out = {
            "ANTHROPIC_BASE_URL": self.url,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        if oauth_token is not None:
            out["CLAUDE_CODE_OAUTH_TOKEN"] = oauth_token
        elif api_key is not None:
            out["ANTHROPIC_API_KEY"] = api_key
        return out

    # ------------------------------------------------------------------ scripting

    def script(self, *replies: ReplyLike) -> Self:
        """Append replies to the queue; each streaming ``/v1/messages`` request takes one."""
        new = [as_reply(r) for r in replies]
        with self._lock:
            self._queue.extend(new)
        return self

    def on(self, marker: str, *replies: ReplyLike, repeat: bool = True) -> Self:
        """Answer requests whose latest user text contains ``marker`` with ``replies``.

        Replies are used in order, one per matching request (a tool loop's follow-up request
        matches too: its latest user text is still the prompt). With ``repeat`` the last
        reply is reused for any further match; without it an exhausted route stops matching.
        Routes are tried in the order they were added, before the script queue.
        """
        if not marker:
            raise ValueError("marker must be a non-empty string")
        if not replies:
            raise ValueError("on() needs at least one reply")
        with self._lock:
            self._routes.append(_Route(marker, deque(as_reply(r) for r in replies), repeat))
        return self

    def set_default(self, default: Reply | Responder | str | None) -> Self:
        """Replace the reply used when no route matches and the queue is empty."""
        responder = _to_responder(default, echo)
        with self._lock:
            self._default = responder
        return self

    def reset(self) -> Self:
        """Forget the script queue, routes, recorded requests and errors (keeps defaults)."""
        with self._lock:
            self._queue.clear()
            self._routes.clear()
            self._requests.clear()
            self._errors.clear()
        return self

    @property
    def pending(self) -> int:
        """How many scripted (queue) replies have not been used yet."""
        with self._lock:
            return len(self._queue)

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """The streaming ``/v1/messages`` requests only (the model turns)."""
        return [r for r in self.requests if r.kind == "stream"]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by responders while answering (answered as HTTP 500)."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(
        self,
        count: int,
        timeout: float = 10.0,
        *,
        predicate: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Block until ``count`` matching requests arrived (default: streaming messages).

        Returns the matching requests; raises ``TimeoutError`` with what did arrive.
        """
        match = predicate or (lambda r: r.kind == "stream")
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self._requests if match(r)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.method, r.path, r.kind) for r in self._requests]
                    raise TimeoutError(
                        f"{len(found)}/{count} matching requests after {timeout}s; got {seen}"
                    )
                self._changed.wait(left)

    # ------------------------------------------------------------------ internals (handler)

    def _record(self, req: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(req)
            self._changed.notify_all()

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _register(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _choose(self, body: dict[str, Any]) -> tuple[str, Reply | None, Responder | None]:
        """Pick the reply for a streaming request: (source, fixed reply, or responder)."""
        latest = last_user_text(body)
        with self._lock:
            for route in self._routes:
                if route.marker in latest and route.replies:
                    if len(route.replies) > 1 or not route.repeat:
                        chosen = route.replies.popleft()
                    else:
                        chosen = route.replies[0]
                    return f"route:{route.marker}", chosen, None
            if self._queue:
                return "script", self._queue.popleft(), None
            return "default", None, self._default

    def _side_responder(self) -> Responder:
        with self._lock:
            return self._side

    def _sleep(self, seconds: float) -> bool:
        """Wait; ``False`` if the server is closing (abort the response)."""
        if seconds <= 0:
            return not self._closing.is_set()
        return not self._closing.wait(seconds)


def _model_entry(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": "2025-01-01T00:00:00Z",
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dockercc-scripted-api/1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections go away eventually
    server: _Server

    # --- plumbing

    def setup(self) -> None:
        super().setup()
        self.server.api._register(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.api._register(self.connection, False)

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(
        self, status: int, payload: Any, extra_headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_scripted_" + uuid.uuid4().hex[:20])
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error_body(self, status: int, type_: str, message: str) -> None:
        self._send_json(status, {"type": "error", "error": {"type": type_, "message": message}})

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    # --- dispatch

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        api = self.server.api
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        headers = Headers(self.headers.items())
        method = self.command

        def record(kind: RequestKind, source: str | None = None, r: Reply | None = None) -> None:
            api._record(
                RecordedRequest(
                    method, path, query, headers, body, raw, time.time(), kind, source, r
                )
            )

        try:
            if method == "POST" and path.endswith("/v1/messages"):
                self._messages(body, record)
            elif method == "POST" and path.endswith("/v1/messages/count_tokens"):
                record("count_tokens")
                self._send_json(
                    200, {"input_tokens": estimate_tokens(raw.decode(errors="replace"))}
                )
            elif method in ("GET", "HEAD") and path.endswith("/v1/models"):
                record("models")
                model = "claude-scripted"
                self._send_json(
                    200,
                    {
                        "data": [_model_entry(model)],
                        "has_more": False,
                        "first_id": model,
                        "last_id": model,
                    },
                )
            elif method in ("GET", "HEAD") and "/v1/models/" in path:
                record("models")
                self._send_json(200, _model_entry(path.rsplit("/", 1)[-1]))
            elif method in ("HEAD", "OPTIONS") or (method == "GET" and path in ("/", "/health")):
                record("other")
                self._send_json(200, {})
            else:
                record("other")
                self._send_error_body(404, "not_found_error", f"no such endpoint: {method} {path}")
        except (ConnectionError, TimeoutError, BrokenPipeError):
            self.close_connection = True

    # --- /v1/messages

    def _messages(
        self, body: Any, record: Callable[[RequestKind, str | None, Reply | None], None]
    ) -> None:
        api = self.server.api
        if not isinstance(body, dict):
            record("message", None, None)
            self._send_error_body(400, "invalid_request_error", "request body must be JSON")
            return
        streaming = body.get("stream") is True
        model = body.get("model") if isinstance(body.get("model"), str) else None
        try:
            if streaming:
                source, chosen, responder = api._choose(body)
            else:
                source, chosen, responder = "side", None, api._side_responder()
            if chosen is not None:
                r = chosen
            else:
                assert responder is not None
                r = as_reply(responder(body))
        except Exception as exc:  # a broken responder must not kill the server
            log.exception("scripted API responder failed")
            api._record_error(exc)
            record("stream" if streaming else "message", "error", None)
            self._send_error_body(500, "api_error", f"scripted responder failed: {exc!r}")
            return
        record("stream" if streaming else "message", source, r)
        if r.latency and not api._sleep(r.latency):
            self.close_connection = True
            return
        if r.error is not None and not r.error.in_stream:
            self._send_json(r.error.status, r.error.body(), r.error.headers())
            return
        if not streaming:
            self._send_json(200, render_message(r, model))
            return
        self._stream(r, model)

    def _stream(self, r: Reply, model: str | None) -> None:
        api = self.server.api
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", "req_scripted_" + uuid.uuid4().hex[:20])
        self.end_headers()
        first_delta = True
        for name, data, is_delta in render_stream(r, model):
            if is_delta:
                if not first_delta and not api._sleep(r.delay):
                    self.close_connection = True  # closing: cut the stream like a dropped link
                    return
                first_delta = False
            self._write_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self._write_chunk(b"")
