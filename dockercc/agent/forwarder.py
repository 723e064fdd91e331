"""The container end of the egress path: ``127.0.0.1:<port>`` -> the proxy's unix socket.

A container on Docker's ``none`` network has only its loopback. The CLI's API base URL and
HTTP(S) proxy point at this forwarder (``ANTHROPIC_BASE_URL`` / ``HTTPS_PROXY`` =
``http://127.0.0.1:3128``); it tunnels every TCP connection to the bind-mounted socket of the
host's egress proxy (:mod:`dockercc.egress.proxy`), which applies the policy and adds the
credentials. The forwarder itself decides nothing.

It reads the start of each connection's answer: the proxy answers one request per
connection, so a refusal (``403`` with ``X-Dockercc-Egress-Denied: <host:port>; <reason>``)
is always at the start, and ``on_denied`` turns it into an event of the session.

The listening socket can be made before anything else (:func:`bind`, from
:mod:`dockercc.agent.early`, before the CLI starts): connections queue in the kernel until
:meth:`Forwarder.start` takes it over. Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("dockercc.agent.forwarder")

DENIED_HEADER = b"x-dockercc-egress-denied:"
UPSTREAM_HEADER = b"x-dockercc-upstream-error:"
PEEK_LIMIT = 16 * 1024
READ_SIZE = 64 * 1024


def bind(port: int, host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on the container's loopback (not inherited by children)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def parse_upstream_error(head: bytes) -> dict[str, Any] | None:
    """``{"target", "cause", "status"}`` of the proxy's 502 for an API it could not reach."""
    if not head.startswith((b"HTTP/1.1 502", b"HTTP/1.0 502")):
        return None
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(UPSTREAM_HEADER):
            value = line[len(UPSTREAM_HEADER):].strip().decode("ascii", "replace")
            target, _, cause = value.partition(";")
            return {"target": target.strip()[:300], "cause": cause.strip()[:300], "status": 502}
    return None


def parse_denial(head: bytes) -> dict[str, Any] | None:
    """``{"host", "port", "reason"}`` of a refusal response head, or None."""
    if not head.startswith((b"HTTP/1.1 403", b"HTTP/1.0 403")):
        return None
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(DENIED_HEADER):
            value = line[len(DENIED_HEADER):].strip().decode("ascii", "replace")
            target, _, reason = value.partition(";")
            host, _, port = target.strip().rpartition(":")
            return {"host": host.strip("[]"), "port": int(port) if port.isdigit() else 0,
                    "reason": reason.strip()}
    return None


class Forwarder:
    """``await Forwarder(socket_path, sock=bind(port)).start()``; ``close()``."""

    def __init__(self, socket_path: str, *, sock: socket.socket | None = None,
                 port: int = 3128, on_denied: Callable[[dict[str, Any]], None] | None = None,
                 on_upstream_error: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.socket_path = socket_path
        self.port = port
        self.on_denied = on_denied
        self.on_upstream_error = on_upstream_error
        self.denied = 0
        self._sock = sock
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> Forwarder:
        sock = self._sock if self._sock is not None else bind(self.port)
        self._server = await asyncio.start_server(self._serve, sock=sock)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:  # let the handlers end on their own (see EgressProxy.close)
            await asyncio.wait(list(self._tasks), timeout=2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError as exc:
                log.warning("egress proxy socket unreachable: %s", exc)
                body = b"dockercc: the egress proxy is not reachable\n"
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
                return
            pumps = [asyncio.ensure_future(self._pump(reader, up_writer)),
                     asyncio.ensure_future(self._answer(up_reader, writer))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for p in pumps:
                    p.cancel()
                    with contextlib.suppress(BaseException):
                        await p
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            for w in (up_writer, writer):
                if w is not None:
                    w.close()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(READ_SIZE):
            dst.write(data)
            await dst.drain()
        with contextlib.suppress(OSError):
            if dst.can_write_eof():
                dst.write_eof()

    async def _answer(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        head = b""
        # the start of the answer, up to the end of its head: a refusal is reported
        while b"\r\n\r\n" not in head and len(head) < PEEK_LIMIT:
            data = await src.read(READ_SIZE)
            if not data:
                break
            head += data
            if not head.startswith((b"HTTP/1.1 403"[:len(head)], b"HTTP/1.1 502"[:len(head)])):
                break  # not a refusal: no need to wait for the whole head
        denial = parse_denial(head)
        if denial is not None:
            self.denied += 1
            if self.on_denied is not None:
                with contextlib.suppress(Exception):
                    self.on_denied(denial)
        upstream = parse_upstream_error(head)
        if upstream is not None and self.on_upstream_error is not None:
            with contextlib.suppress(Exception):
                self.on_upstream_error(upstream)
        if head:
            dst.write(head)
            await dst.drain()
        await self._pump(src, dst)
