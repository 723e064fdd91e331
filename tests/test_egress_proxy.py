"""The host egress proxy with real sockets (no Docker): the API leg streams SSE chunk by
chunk and carries the real credential instead of the client's placeholder; CONNECT and
absolute-form requests reach a loopback server only when it is allowed explicitly; refusals
are 403 with ``X-Dockercc-Egress-Denied`` and recorded; garbage does not hurt it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dockercc.egress import EgressPolicy, EgressProxy, UnixRelay, Upstream
from dockercc.egress.proxy import MAX_HEAD, SOCKET_NAME
from dockercc.testing import ScriptedAPI, text

API_KEY = f"sk-ant-api03-CANARY{uuid.uuid4().hex}"
OAUTH = f"sk-ant-oat01-CANARY{uuid.uuid4().hex}"


@contextlib.asynccontextmanager
async def proxy_for(tmp_path: Path, allow: list[str], upstream: Upstream, **kw: Any
                    ) -> AsyncIterator[tuple[EgressProxy, str]]:
    proxy = EgressProxy(runtime_dir=tmp_path / "rt", trust_env=False, **kw)
    async with proxy:
        directory = await proxy.add("c0ffee", EgressPolicy(allow), upstream, agent="main")
        yield proxy, str(directory / SOCKET_NAME)
    assert not (tmp_path / "rt").exists() or not any((tmp_path / "rt").iterdir())


async def exchange(sock: str, data: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_unix_connection(sock)
    got = b""
    try:
        writer.write(data)
        await writer.drain()
        while until_close and (chunk := await asyncio.wait_for(reader.read(65536), 10)):
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass  # the proxy hung up on unread input: what it said before is in ``got``
    finally:
        writer.close()
    return got


def messages_request(headers: str) -> bytes:
    body = json.dumps({"model": "claude-x", "max_tokens": 5, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    return (b"POST /v1/messages?beta=true HTTP/1.1\r\nhost: 127.0.0.1:3128\r\n"
            b"content-type: application/json\r\n" + headers.encode() +
            b"content-length: %d\r\n\r\n" % len(body) + body)


async def test_api_gets_the_real_api_key_instead_of_the_placeholder(tmp_path: Path) -> None:
    with ScriptedAPI(text("hello there")) as api:
        async with proxy_for(tmp_path, [], Upstream(api.url, api_key=API_KEY)) as (_, sock):
            raw = await exchange(sock, messages_request(
                "x-api-key: dockercc-proxy-placeholder\r\n"))
        assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
        assert b"hello there" in raw.replace(b'","', b"").replace(b'"', b"") or b"hello" in raw
        (req,) = api.message_requests
        assert req.headers["x-api-key"] == API_KEY
        assert "authorization" not in req.headers
        assert req.query == {"beta": "true"} and req.body["model"] == "claude-x"
        assert API_KEY.encode() not in raw


async def test_api_gets_the_oauth_token_as_bearer(tmp_path: Path) -> None:
    with ScriptedAPI(text("ok"), text("ok")) as api:
        async with proxy_for(tmp_path, [], Upstream(api.url, bearer=OAUTH)) as (_, sock):
            await exchange(sock, messages_request(
                "authorization: Bearer placeholder\r\nx-api-key: sneaky\r\n"))
        (req,) = api.message_requests
        assert req.headers["authorization"] == f"Bearer {OAUTH}"
        assert "x-api-key" not in req.headers  # the client's own header is never passed on


async def test_credentials_file_token_is_read_on_the_host(tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"claudeAiOauth": {"accessToken": OAUTH}}))
    with ScriptedAPI(text("ok")) as api:
        async with proxy_for(tmp_path, [], Upstream(api.url, credentials_file=str(creds))
                             ) as (_, sock):
            await exchange(sock, messages_request("authorization: Bearer placeholder\r\n"))
        assert api.message_requests[0].headers["authorization"] == f"Bearer {OAUTH}"


async def test_sse_streams_incrementally(tmp_path: Path) -> None:
    """The upstream sends its second event only after the client has read the first: a
    proxy that buffered the response would hang here."""
    first_seen = asyncio.Event()
    seen_headers: dict[str, str] = {}

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.decode().split("\r\n")[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                seen_headers[k.strip().lower()] = v.strip()
        length = int(seen_headers.get("content-length", "0"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        for i, event in enumerate((b"event: one\ndata: {}\n\n", b"event: two\ndata: {}\n\n")):
            if i:
                await asyncio.wait_for(first_seen.wait(), 10)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with proxy_for(tmp_path, [], Upstream(f"http://127.0.0.1:{port}",
                                                    api_key=API_KEY)) as (_, sock):
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(messages_request("x-api-key: placeholder\r\n"))
            await writer.drain()
            got = b""
            while b"event: one" not in got:
                chunk = await asyncio.wait_for(reader.read(4096), 10)
                assert chunk, got
                got += chunk
            assert b"event: two" not in got
            first_seen.set()
            got += await asyncio.wait_for(reader.read(-1), 10)
            assert b"event: two" in got and got.startswith(b"HTTP/1.1 200")
            writer.close()
        assert seen_headers["x-api-key"] == API_KEY
    finally:
        server.close()


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        if data.startswith(b"GET "):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-dockercc-egress-denied: "
                         b"spoof\r\n\r\nhello")
        else:
            writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_connect_only_when_allowed_explicitly(tmp_path: Path) -> None:
    async with echo_server() as port:
        # allowed as a name that resolves to loopback: still refused
        async with proxy_for(tmp_path / "a", ["localhost", "*.example.com"],
                             Upstream(api_key=API_KEY)) as (proxy, sock):
            raw = await exchange(sock, b"CONNECT localhost:%d HTTP/1.1\r\nhost: x\r\n\r\n" % port)
            assert raw.startswith(b"HTTP/1.1 403"), raw
            assert b"x-dockercc-egress-denied: localhost:%d; resolves to loopback" % port \
                in raw.lower()
            raw = await exchange(sock, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nhost: x\r\n\r\n" % port)
            assert raw.startswith(b"HTTP/1.1 403") and b"loopback address" in raw
            raw = await exchange(sock, b"CONNECT evil.net:443 HTTP/1.1\r\nhost: x\r\n\r\n")
            assert b"evil.net:443; host not in the allow-list" in raw
            assert [(d.host, d.port, d.container, d.agent) for d in proxy.denials] == [
                ("localhost", port, "c0ffee", "main"), ("127.0.0.1", port, "c0ffee", "main"),
                ("evil.net", 443, "c0ffee", "main")]
        # allowed explicitly by host:port: the tunnel works, bytes sent early included
        async with proxy_for(tmp_path / "b", [f"127.0.0.1:{port}"],
                             Upstream(api_key=API_KEY)) as (proxy, sock):
            raw = await exchange(sock, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nhost: x\r\n\r\n"
                                 b"ping" % port)
            assert raw == b"HTTP/1.1 200 Connection Established\r\n\r\necho:ping", raw
            assert not proxy.denials
            # absolute-form http:// through the same policy; a spoofed refusal header from
            # the target is dropped
            raw = await exchange(sock, b"GET http://127.0.0.1:%d/x HTTP/1.1\r\nhost: a\r\n\r\n"
                                 % port)
            assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"hello"), raw
            assert b"egress-denied" not in raw.lower()
            raw = await exchange(sock, b"GET http://127.0.0.1:%d/x HTTP/1.1\r\nhost: a\r\n\r\n"
                                 % (port + 1 if port < 65535 else port - 1))
            assert raw.startswith(b"HTTP/1.1 403")


async def test_name_resolution_uses_the_checked_address(tmp_path: Path) -> None:
    """The proxy connects to the address it checked, from its own resolver."""
    async with echo_server() as port:
        async def resolver(host: str, p: int) -> list[str]:
            return {"good.example": ["127.0.0.1"], "bad.example": ["10.9.9.9"]}[host]

        async with proxy_for(tmp_path, [f"good.example:{port}", "bad.example"],
                             Upstream(api_key=API_KEY), resolver=resolver) as (proxy, sock):
            raw = await exchange(sock, b"CONNECT good.example:%d HTTP/1.0\r\n\r\nx" % port)
            assert raw.endswith(b"echo:x"), raw
            raw = await exchange(sock, b"CONNECT bad.example:443 HTTP/1.0\r\n\r\n")
            assert b"bad.example:443; resolves to private address 10.9.9.9 only" in raw


async def test_garbage_and_limits(tmp_path: Path) -> None:
    with ScriptedAPI() as api:
        async with proxy_for(tmp_path, [], Upstream(api.url, api_key=API_KEY),
                             max_connections=4, idle_timeout=2) as (proxy, sock):
            for junk in (b"\x00\xff" * 100 + b"\r\n\r\n", b"NOT HTTP\r\n\r\n",
                         b"GET / HTTP/1.1\r\n" + b"x-a: " + b"a" * (MAX_HEAD * 2) + b"\r\n\r\n",
                         b"GET ftp://x/ HTTP/1.1\r\nhost: x\r\n\r\n",
                         b"CONNECT nohost HTTP/1.1\r\n\r\n"):
                raw = await exchange(sock, junk)
                # (an oversized head may be cut off by a reset before the answer is read)
                assert raw.startswith(b"HTTP/1.1 4") or (len(junk) > MAX_HEAD and not raw), \
                    (junk[:40], raw[:100])
            # a client that never finishes its head is dropped after the idle timeout
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(b"GET / HT")
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(-1), 10) == b""
            writer.close()
            # connection limit: the fifth concurrent connection gets a 503
            held = [await asyncio.open_unix_connection(sock) for _ in range(4)]
            await asyncio.sleep(0.1)
            raw = await exchange(sock, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert raw.startswith(b"HTTP/1.1 503"), raw
            for _, w in held:
                w.close()
            await asyncio.sleep(0.1)
            # and it still serves
            raw = await exchange(sock, messages_request("x-api-key: p\r\n"))
            assert raw.startswith(b"HTTP/1.1 200")
            assert not proxy.denials


async def test_sockets_and_directories(tmp_path: Path) -> None:
    proxy = EgressProxy(runtime_dir=tmp_path / "rt", trust_env=False)
    await proxy.start()
    d = await proxy.add("abc123", EgressPolicy([]), Upstream())
    assert stat.S_IMODE(os.stat(proxy.directory).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(d / SOCKET_NAME).st_mode)
    await proxy.remove("abc123")
    assert not d.exists()
    await proxy.add("def456", EgressPolicy([]), Upstream())
    await proxy.close()
    assert not proxy.directory.exists()


async def test_unix_relay_is_a_byte_pipe(tmp_path: Path) -> None:
    async with echo_server() as port:
        relay = await UnixRelay(tmp_path / "r.sock", "127.0.0.1", port).start()
        try:
            raw = await exchange(str(tmp_path / "r.sock"), b"PING\r\n")
            assert raw == b"echo:PING\r\n"
        finally:
            await relay.close()
        assert not (tmp_path / "r.sock").exists()


@pytest.mark.parametrize("n", [5])  # ScriptedAPI's listen backlog is 5
async def test_many_requests_in_parallel(tmp_path: Path, n: int) -> None:
    with ScriptedAPI() as api:
        async with proxy_for(tmp_path, [], Upstream(api.url, api_key=API_KEY)) as (_, sock):
            raws = await asyncio.gather(*(exchange(sock, messages_request("x-api-key: p\r\n"))
                                          for _ in range(n)))
        assert all(r.startswith(b"HTTP/1.1 200") for r in raws)
        assert {r.headers["x-api-key"] for r in api.message_requests} == {API_KEY}


async def test_directories_of_dead_pools_are_swept(tmp_path: Path) -> None:
    import socket as sk
    import time

    from dockercc.egress.proxy import sweep_stale

    rt = tmp_path / "rt"
    dead, live, young = rt / "pool-dead", rt / "pool-live", rt / "pool-young"
    for d in (dead, live, young):
        d.mkdir(parents=True)
    listener = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    listener.bind(str(live / "redis.sock"))
    listener.listen(1)
    gone = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    gone.bind(str(dead / "redis.sock"))
    gone.close()  # a socket file nobody listens on: its pool was killed
    old = time.time() - 120
    for d in (dead, live):
        os.utime(d, (old, old))
    try:
        sweep_stale(rt)
        assert not dead.exists() and live.exists() and young.exists()
    finally:
        listener.close()
