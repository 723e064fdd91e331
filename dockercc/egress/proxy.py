"""The host side of a container's only way out: one unix socket per container.

One module on purpose (~760 lines): one proxy (its sockets, tunnels and the API forwarding
that adds the credentials) and the per-container relay it is reached through.

A container on Docker's ``none`` network has a loopback interface and nothing else. Its runner
forwards ``127.0.0.1:<port>`` to a unix socket bind-mounted from the host
(:mod:`dockercc.agent.forwarder`); :class:`EgressProxy`, owned by the pool's process, listens on
that socket. Because every container gets its own socket, the proxy knows which container a
connection comes from and applies that container's policy and credentials. It serves:

* origin-form requests (``POST /v1/messages?beta=true``): **the API**. They are
  reverse-proxied to the container's API base URL (``credentials.baseUrl``, default
  ``https://api.anthropic.com``), streaming both ways, with the real credential added on the
  way out (``x-api-key`` for an API key, ``Authorization: Bearer`` for an OAuth token or the
  credentials file's access token), replacing the placeholder the CLI in the container sent;
* ``CONNECT host:port`` and absolute-form ``http://`` requests: **egress**, allowed only when
  the container's allow-list (:mod:`.policy`) allows the target. The proxy resolves the name
  itself and connects to a resolved address it checked (no DNS rebinding between the check
  and the connection). A refusal is logged (no secrets), kept in :attr:`EgressProxy.denials`
  and answered ``403`` with ``X-Dockercc-Egress-Denied: <host:port>; <reason>``, which the
  runner's forwarder turns into an ``egress_denied`` event of the session.

Every response carries ``Connection: close``: one request per connection, so the forwarder
needs to look only at the start of each connection's answer to see a refusal, and a
connection can never switch from the API to egress. (The upstream leg to the API keeps its
connections: that is where reuse pays.)

Libraries, and why: ``h11`` parses and writes HTTP/1.1 on the container side (a sans-I/O
parser with bounded buffers, strict framing and no opinion about sockets: we keep control of
CONNECT, byte pipes and limits); ``httpx`` makes the API leg (TLS, certificate checks, HTTP
proxies from the host's environment, connection pooling, ``aiter_raw`` so SSE goes through
chunk by chunk, never buffered). Both are already dependencies of dockercc. Everything else is
asyncio streams.

Limits: request heads up to :data:`MAX_HEAD` bytes, ``max_connections`` open connections per
container, connect and idle timeouts; garbage gets a ``400`` and a closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11

from ..errors import DockerCCError
from .policy import EgressPolicy, Refused, normalize_host, parse_target

__all__ = ["EgressProxy", "EgressError", "Upstream", "Denial", "UnixRelay", "DENIED_HEADER",
           "SOCKET_NAME", "default_runtime_dir"]

log = logging.getLogger("dockercc.egress")

DENIED_HEADER = "X-Dockercc-Egress-Denied"
UPSTREAM_HEADER = "X-Dockercc-Upstream-Error"
"""On a ``502`` for the API: ``<host:port>; <cause>`` (connection refused, DNS, timeout,
TLS), which the runner's forwarder turns into an ``api_unreachable`` event of the session:
the CLI itself only sees a 502 and retries."""
SOCKET_NAME = "proxy.sock"
MAX_HEAD = 64 * 1024
READ_SIZE = 64 * 1024
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with its NUL
DEFAULT_API = "https://api.anthropic.com"
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy sets itself.
_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
        b"trailer", b"upgrade", b"proxy-authorization", b"proxy-authenticate"}
_CREDENTIAL_HEADERS = {b"x-api-key", b"authorization"}

Resolver = Callable[[str, int], Awaitable[list[str]]]


class EgressError(DockerCCError):
    """The egress proxy could not start (its runtime directory, a socket path too long)."""


def default_runtime_dir() -> Path:
    """Where the proxy's sockets live: ``$XDG_RUNTIME_DIR/dockercc``, else
    ``<tmp>/dockercc-<uid>`` (each pool makes a private 0700 directory inside)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "dockercc"
    return Path(tempfile.gettempdir()) / f"dockercc-{os.getuid()}"


@dataclass(frozen=True)
class Upstream:
    """Where a container's API requests go and the credential added to them. The values are
    secrets: ``repr`` never shows them."""

    base_url: str = DEFAULT_API
    api_key: str | None = field(default=None, repr=False)
    bearer: str | None = field(default=None, repr=False)
    credentials_file: str | None = None

    def origin(self) -> tuple[str, int]:
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return normalize_host(parts.hostname or ""), port

    def file_token(self) -> str | None:
        """The access token of a Claude credentials file (read on every request, so a token
        the host refreshed is used at once)."""
        if not self.credentials_file:
            return None
        try:
            with open(self.credentials_file, encoding="utf-8") as f:
                data = json.load(f)
            token = (data.get("claudeAiOauth") or {}).get("accessToken")
        except (OSError, ValueError, AttributeError):
            return None
        return token if isinstance(token, str) and token else None

    def auth_headers(self, sent: set[bytes]) -> list[tuple[bytes, bytes]]:
        """The real credential header, of the kind the CLI sent a placeholder for."""
        bearer = self.bearer or self.file_token()
        want_bearer = b"authorization" in sent and bearer is not None
        if self.api_key is not None and not want_bearer:
            return [(b"x-api-key", self.api_key.encode("latin-1"))]
        if bearer is not None:
            return [(b"authorization", b"Bearer " + bearer.encode("latin-1"))]
        return []


@dataclass(frozen=True)
class Denial:
    """One refused connection (what is logged and reported; never a secret)."""

    container: str
    agent: str
    host: str
    port: int
    reason: str
    ts: float

    @property
    def target(self) -> str:
        return _hostport(self.host, self.port)


@dataclass
class _Entry:
    container: str
    agent: str
    policy: EgressPolicy
    upstream: Upstream
    directory: Path
    server: asyncio.AbstractServer | None = None
    active: int = 0
    requests: int = 0


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


async def splice(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                 b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter,
                 idle_timeout: float | None) -> None:
    """Copy both ways until both directions are done or one fails (a half-close goes
    through as EOF); a direction quiet for ``idle_timeout`` seconds fails."""

    async def one_way(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await asyncio.wait_for(src.read(READ_SIZE), idle_timeout)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        finally:
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()

    tasks = [asyncio.ensure_future(one_way(a_reader, b_writer)),
             asyncio.ensure_future(one_way(b_reader, a_writer))]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in pending:
            t.cancel()
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t


class _Closed(Exception):
    """The client went away or sent something we answered with an error."""


STALE_AFTER_S = 60.0


def sweep_stale(runtime_dir: Path) -> None:
    """Remove the directories of pools that died without closing (SIGKILL): older than a
    minute, and no socket in them that anyone still listens on."""
    now = time.time()
    for directory in runtime_dir.glob("pool-*"):
        try:
            if now - directory.stat().st_mtime < STALE_AFTER_S:
                continue
            sockets = [p for p in directory.rglob("*.sock")]
        except OSError:
            continue
        alive = False
        for path in sockets:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(0.5)
                probe.connect(str(path))
                alive = True
                break
            except OSError:
                pass
            finally:
                probe.close()
        if not alive:
            shutil.rmtree(directory, ignore_errors=True)


class EgressProxy:
    """``await proxy.start()``, ``await proxy.add(container, policy, upstream)`` per container
    (gives the host directory to bind-mount), ``remove``, ``close``."""

    def __init__(self, *, runtime_dir: str | os.PathLike[str] | None = None,
                 max_connections: int = 64, connect_timeout: float = 10.0,
                 idle_timeout: float = 600.0, resolver: Resolver | None = None,
                 on_denied: Callable[[Denial], None] | None = None,
                 on_api_request: Callable[[str], None] | None = None,
                 trust_env: bool = True, verify: Any = True) -> None:
        self.runtime_dir = Path(runtime_dir) if runtime_dir else default_runtime_dir()
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.resolver: Resolver = resolver or system_resolver
        self.on_denied = on_denied
        #: ``on_api_request(container)`` as a container's API request leaves for the API: its
        #: CLI is past the CPU-heavy start of a turn (first-turn admission listens)
        self.on_api_request = on_api_request
        #: the latest refusals, oldest first
        self.denials: deque[Denial] = deque(maxlen=1000)
        self._trust_env = trust_env
        self._verify = verify
        self._entries: dict[str, _Entry] = {}
        self._dir: Path | None = None
        self._http: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"EgressProxy(dir={str(self._dir)!r}, containers={len(self._entries)})"

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise EgressError("the egress proxy is not started")
        return self._dir

    async def start(self) -> EgressProxy:
        if self._dir is not None:
            return self
        try:
            self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            sweep_stale(self.runtime_dir)
            # a private directory per pool: other users of the host cannot reach the sockets
            self._dir = Path(tempfile.mkdtemp(prefix="pool-", dir=self.runtime_dir))
        except OSError as exc:
            raise EgressError(f"cannot make the egress runtime directory under "
                              f"{self.runtime_dir}: {exc}") from exc
        if len(str(self._dir / ("x" * 12) / SOCKET_NAME)) > MAX_SOCKET_PATH:
            raise EgressError(f"egress runtime directory {self.runtime_dir} is too long for unix "
                              "socket paths; set egress.runtimeDir to a shorter one")
        import httpx

        self._http = httpx.AsyncClient(
            trust_env=self._trust_env, verify=self._verify, follow_redirects=False,
            timeout=httpx.Timeout(connect=self.connect_timeout, read=self.idle_timeout,
                                  write=self.idle_timeout, pool=self.connect_timeout),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=32))
        return self

    async def add(self, container: str, policy: EgressPolicy, upstream: Upstream, *,
                  agent: str = "") -> Path:
        """Serve ``container``; returns the host directory that holds its socket (mount it
        at ``/run/dockercc/egress``)."""
        if self._closed:
            raise EgressError("the egress proxy is closed")
        await self.start()
        if container in self._entries:
            return self._entries[container].directory
        directory = self.directory / container
        directory.mkdir(mode=0o755)
        entry = _Entry(container, agent, EgressPolicy(policy.entries,
                                                      always=[_hostport(*upstream.origin())]),
                       upstream, directory)
        path = directory / SOCKET_NAME
        entry.server = await asyncio.start_unix_server(
            lambda r, w: self._serve(entry, r, w), path=str(path), limit=MAX_HEAD)
        # any uid in the container may connect: the socket is no boundary inside the container
        # (its loopback forwarder is open to all its processes anyway); the policy here is
        os.chmod(path, 0o666)
        os.chmod(directory, 0o755)
        self._entries[container] = entry
        return directory

    def containers(self) -> list[str]:
        return list(self._entries)

    async def remove(self, container: str) -> None:
        entry = self._entries.pop(container, None)
        if entry is None:
            return
        if entry.server is not None:
            entry.server.close()
        shutil.rmtree(entry.directory, ignore_errors=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for container in list(self._entries):
            await self.remove(container)
        await _end_connections(self._tasks, self._writers)
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def __aenter__(self) -> EgressProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one connection ---------------------------------------------------------------------

    async def _serve(self, entry: _Entry, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        entry.active += 1
        try:
            if entry.active > self.max_connections:
                await self._error(writer, h11.Connection(h11.SERVER), 503,
                                  "too many connections from this container")
                return
            await self._handle(entry, reader, writer)
        except (_Closed, OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:  # never let one connection take the proxy down
            log.exception("egress proxy: connection of %s failed", entry.container)
        finally:
            entry.active -= 1
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout)
            conn.receive_data(data)

    async def _handle(self, entry: _Entry, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            request = await asyncio.wait_for(self._event(conn, reader), self.connect_timeout * 3)
        except h11.RemoteProtocolError as exc:
            await self._error(writer, conn, exc.error_status_hint or 400, "bad request")
            return
        if not isinstance(request, h11.Request):
            return  # closed before a request
        entry.requests += 1
        target = request.target
        if request.method == b"CONNECT":
            await self._connect(entry, conn, request, reader, writer)
        elif target.startswith(b"/"):
            await self._api(entry, conn, request, reader, writer)
        elif target[:7].lower() == b"http://":
            await self._forward(entry, conn, request, reader, writer)
        else:
            await self._error(writer, conn, 400, "unsupported request target")

    async def _error(self, writer: asyncio.StreamWriter, conn: h11.Connection, status: int,
                     message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps({"type": "error", "error": {
            "type": "api_error" if status >= 500 else "invalid_request_error",
            "message": f"dockercc egress proxy: {message}"}}).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"), *(extra or [])]
        try:
            data = conn.send(h11.Response(status_code=status, headers=head))
            data = (data or b"") + (conn.send(h11.Data(data=body)) or b"") + \
                (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # the state machine is past a response: raw bytes
            data = b"HTTP/1.1 %d Error\r\n" % status + b"".join(
                k + b": " + v + b"\r\n" for k, v in head) + b"\r\n" + body
        writer.write(data)
        with contextlib.suppress(Exception):
            await writer.drain()

    async def _deny(self, entry: _Entry, writer: asyncio.StreamWriter, conn: h11.Connection,
                    host: str, port: int, reason: str) -> None:
        denial = Denial(entry.container, entry.agent, host, port, reason, time.time())
        self.denials.append(denial)
        log.warning("egress refused: container %s (agent %s) -> %s: %s", entry.container,
                    entry.agent or "-", denial.target, reason)
        if self.on_denied is not None:
            with contextlib.suppress(Exception):
                self.on_denied(denial)
        value = f"{denial.target}; {reason}".encode("ascii", "replace")
        await self._error(writer, conn, 403, f"egress to {denial.target} refused: {reason}",
                          [(DENIED_HEADER.lower().encode(), value)])

    async def _resolve(self, entry: _Entry, host: str, port: int) -> list[str]:
        """Policy checks and resolution; raises Refused."""
        match = entry.policy.match(host, port)
        if match.is_ip:
            return [match.host]
        try:
            resolved = await asyncio.wait_for(self.resolver(host, port), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise Refused(f"cannot resolve: {getattr(exc, 'strerror', None) or 'timeout'}") \
                from None
        return entry.policy.addresses(match, resolved)

    async def _open(self, addresses: list[str], port: int
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for addr in addresses:
            with contextlib.suppress(OSError, TimeoutError):
                return await asyncio.wait_for(asyncio.open_connection(addr, port),
                                              self.connect_timeout)
        return None

    async def _reach(self, entry: _Entry, writer: asyncio.StreamWriter, conn: h11.Connection,
                     host: str, port: int
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to an allowed ``host:port`` (resolved and checked here), or None once
        the client has been answered: 403 for a refused target, 502 for an unreachable one."""
        try:
            addresses = await self._resolve(entry, host, port)
        except Refused as exc:
            await self._deny(entry, writer, conn, host, port, exc.reason)
            return None
        opened = await self._open(addresses, port)
        if opened is None:
            await self._error(writer, conn, 502, f"cannot connect to {_hostport(host, port)}")
        return opened

    async def _connect(self, entry: _Entry, conn: h11.Connection, request: h11.Request,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = parse_target(request.target.decode("ascii", "replace"))
        except Refused as exc:
            await self._error(writer, conn, 400, f"bad CONNECT target: {exc.reason}")
            return
        opened = await self._reach(entry, writer, conn, host, port)
        if opened is None:
            return
        up_reader, up_writer = opened
        # CONNECT has no body: what h11 read past the head already belongs to the tunnel
        for _ in range(3):  # its EndOfMessage, then PAUSED (a protocol switch may follow)
            if conn.next_event() in (h11.PAUSED, h11.NEED_DATA):
                break
        leftover, _ = conn.trailing_data
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        if leftover:
            up_writer.write(leftover)
        await self._pipe(reader, writer, up_reader, up_writer)

    async def _pipe(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                    b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
        try:
            await splice(a_reader, a_writer, b_reader, b_writer, self.idle_timeout)
        finally:
            b_writer.close()
            with contextlib.suppress(Exception):
                await b_writer.wait_closed()

    async def _body(self, conn: h11.Connection, reader: asyncio.StreamReader
                    ) -> AsyncIterator[bytes]:
        while True:
            event = await self._event(conn, reader)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise _Closed()

    @staticmethod
    def _forwarded(headers: list[tuple[bytes, bytes]], drop: set[bytes]
                   ) -> list[tuple[bytes, bytes]]:
        connection_tokens = {t.strip().lower() for k, v in headers if k == b"connection"
                             for t in v.split(b",")}
        return [(k, v) for k, v in headers
                if k not in _HOP and k not in drop and k not in connection_tokens]

    async def _api(self, entry: _Entry, conn: h11.Connection, request: h11.Request,
                   reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import httpx

        up = entry.upstream
        headers = list(request.headers)
        sent = {k for k, _ in headers if k in _CREDENTIAL_HEADERS}
        out = self._forwarded(headers, {b"host", *_CREDENTIAL_HEADERS, DENIED_HEADER.lower()
                                        .encode()})
        out += up.auth_headers(sent)
        url = up.base_url.rstrip("/") + request.target.decode("ascii", "replace")
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in headers)
        if self.on_api_request is not None:
            try:
                self.on_api_request(entry.container)
            except Exception:  # a listener's bug never fails the agent's request
                log.exception("egress proxy: on_api_request failed")
        try:
            upstream = self._http.build_request(
                request.method.decode("ascii", "replace"), url, headers=out,
                content=self._body(conn, reader) if has_body else None)
            response = await self._http.send(upstream, stream=True)
        except (httpx.HTTPError, OSError) as exc:
            cause = upstream_cause(exc)
            parts = urlsplit(up.base_url)
            target = _hostport(parts.hostname or "?", parts.port or (
                443 if parts.scheme == "https" else 80))
            log.warning("egress proxy: API request of %s to %s failed: %s", entry.container,
                        target, cause)
            value = f"{target}; {cause}".encode("ascii", "replace")
            await self._error(writer, conn, 502, f"the API at {target} is unreachable: {cause}",
                              [(UPSTREAM_HEADER.lower().encode(), value)])
            return
        try:
            head = [(k.lower(), v) for k, v in response.headers.raw]
            head = self._forwarded(head, {DENIED_HEADER.lower().encode()})
            head.append((b"connection", b"close"))
            writer.write(conn.send(h11.Response(status_code=response.status_code, headers=head,
                                                reason=response.reason_phrase.encode()))
                         or b"")
            await writer.drain()
            async for chunk in response.aiter_raw():
                # SSE: every chunk is written and flushed as it arrives
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        except (httpx.HTTPError, h11.LocalProtocolError) as exc:
            log.warning("egress proxy: API response to %s cut short: %s", entry.container,
                        type(exc).__name__)
        finally:
            await response.aclose()

    async def _forward(self, entry: _Entry, conn: h11.Connection, request: h11.Request,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parts = urlsplit(request.target.decode("ascii", "replace"))
        try:
            host, port = parse_target(parts.netloc.rpartition("@")[2], 80)
        except Refused as exc:
            await self._error(writer, conn, 400, f"bad request target: {exc.reason}")
            return
        opened = await self._reach(entry, writer, conn, host, port)
        if opened is None:
            return
        up_reader, up_writer = opened
        try:
            client = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host_header = parts.netloc.rpartition("@")[2].encode("ascii", "replace")
            out = self._forwarded(list(request.headers), {b"host"})
            out = [(b"host", host_header), *out, (b"connection", b"close")]
            up_writer.write(client.send(h11.Request(method=request.method, target=path.encode(),
                                                    headers=out)) or b"")
            if any(k in (b"content-length", b"transfer-encoding") for k, _ in request.headers):
                async for chunk in self._body(conn, reader):
                    up_writer.write(client.send(h11.Data(data=chunk)) or b"")
                    await up_writer.drain()
            up_writer.write(client.send(h11.EndOfMessage()) or b"")
            await up_writer.drain()
            while True:
                event = await self._event(client, up_reader)
                if isinstance(event, h11.InformationalResponse):
                    continue
                if not isinstance(event, h11.Response):
                    raise _Closed()
                head = self._forwarded([(k.lower(), v) for k, v in event.headers],
                                       {DENIED_HEADER.lower().encode()})
                head.append((b"connection", b"close"))
                writer.write(conn.send(h11.Response(status_code=event.status_code, headers=head,
                                                    reason=event.reason)) or b"")
                break
            while True:
                event = await self._event(client, up_reader)
                if isinstance(event, h11.Data):
                    writer.write(conn.send(h11.Data(data=event.data)) or b"")
                    await writer.drain()
                elif isinstance(event, h11.EndOfMessage):
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                    return
                else:
                    raise _Closed()
        except h11.RemoteProtocolError:
            with contextlib.suppress(Exception):
                await self._error(writer, conn, 502, "bad response from the target")
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


class UnixRelay:
    """A per-pool unix socket that pipes bytes to a TCP Redis: how runners on the ``none``
    network reach a Redis the pool reaches over TCP. A dumb pipe on purpose: the runner
    speaks (and authenticates) to Redis itself."""

    def __init__(self, path: str | os.PathLike[str], host: str, port: int, *,
                 max_connections: int = 1024, connect_timeout: float = 10.0,
                 resolve: Callable[[], Awaitable[tuple[str, int]]] | None = None) -> None:
        self.path = Path(path)
        self.host = host
        self.port = port
        #: asked for the target on every new connection (Sentinel: the current primary, so
        #: runners follow a fail-over by reconnecting); ``host``/``port`` without it
        self.resolve = resolve
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._server: asyncio.AbstractServer | None = None
        self._active = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> UnixRelay:
        if self._server is None:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
            os.chmod(self.path, 0o666)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self._active += 1
        up: asyncio.StreamWriter | None = None
        try:
            if self._active > self.max_connections:
                return
            host, port = self.host, self.port
            if self.resolve is not None:
                host, port = await asyncio.wait_for(self.resolve(), self.connect_timeout)
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.connect_timeout)
            up = up_writer
            # no idle timeout: a runner's BLPOP or subscription is quiet for as long as it likes
            await splice(reader, writer, up_reader, up_writer, None)
        except (OSError, TimeoutError):
            pass
        except Exception as exc:  # (no primary known to the sentinels: the runner retries)
            log.warning("Redis relay: no upstream (%s)", type(exc).__name__)
        finally:
            self._active -= 1
            self._writers.discard(writer)
            for w in (up, writer):
                if w is not None:
                    w.close()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await _end_connections(self._tasks, self._writers)
        with contextlib.suppress(OSError):
            self.path.unlink()


async def _end_connections(tasks: set[asyncio.Task[Any]],
                           writers: set[asyncio.StreamWriter]) -> None:
    """End open connections by aborting their sockets: their handlers then finish on their
    own (cancelling a handler task makes asyncio log a spurious error in Python 3.11)."""
    for writer in list(writers):
        writer.transport.abort()
    if tasks:
        _, pending = await asyncio.wait(list(tasks), timeout=2)
        for task in pending:
            task.cancel()


def relay_target(url: str) -> tuple[str, int]:
    """``(host, port)`` of a ``redis://`` URL (for :class:`UnixRelay`)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    return host, parts.port or 6379


def upstream_cause(exc: BaseException) -> str:
    """Why the API could not be reached, in words a user acts on (no secrets: only the
    exception's kind and the OS error text)."""
    import errno
    import ssl

    import httpx

    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(seen) < 8:  # httpx wraps httpcore wraps OSError
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in seen:
        if isinstance(e, socket.gaierror):
            return "DNS: name not resolved" + (f" ({e.strerror})" if e.strerror else "")
        if isinstance(e, ssl.SSLError):
            return f"TLS: {getattr(e, 'reason', None) or type(e).__name__}"
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network unreachable"
    text = " ".join(str(e) for e in seen).lower()
    if "name or service not known" in text or "temporary failure in name resolution" in text \
            or "nodename nor servname" in text:
        return "DNS: name not resolved"
    if "connection refused" in text or "connect call failed" in text:
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if "ssl" in text or "certificate" in text:
        return "TLS: handshake failed"
    return type(exc).__name__
