"""The built-in tools' building blocks without containers: the web_fetch SSRF guard (with a
resolver and transport stand-in that fail the test if a refused target is ever contacted),
page conversion against a real loopback server, the search providers against a loopback
stand-in API, cron schedules and the channel registry.

Traffic goes to 127.0.0.1 only. Every refusal test runs with a transport that fails the test
on any request to an address it was not told to expect, so "refused" means "never contacted".
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from dockercc.builtins import (
    AddressPolicy,
    BlockedTarget,
    BraveSearch,
    ChannelMessage,
    ChannelRegistry,
    FetchError,
    TavilySearch,
    WebFetcher,
    search_provider_from_config,
)
from dockercc.builtins.cron import next_run_ms, validate_schedule
from dockercc.builtins.web import SearchError, system_resolver
from dockercc.config import WebFetchConfig, WebSearchConfig
from dockercc.storage.connection import RedisTransport

# ----------------------------------------------------------------------------- local site

PAGE = b"""<!doctype html><html><head><title>Pool Notes</title>
<style>body { color: red }</style><script>var secret = "script-body";</script></head>
<body><h1>Warm pools</h1><p>Containers start <b>fast</b> from a <a href="/more">warm pool</a>.</p>
<ul><li>first point</li><li>second point</li></ul>
<noscript>enable js</noscript></body></html>"""


class LocalSite:
    """A threaded HTTP server on 127.0.0.1 with canned routes; records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                site.requests.append({"method": self.command, "path": self.path,
                                      "headers": dict(self.headers), "body": body})
                route = site.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"no such page")
                    return
                route(self)

            do_GET = _handle
            do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def page(self, path: str, body: bytes, content_type: str = "text/html; charset=utf-8",
             status: int = 200) -> None:
        def send(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        self.routes[path] = send

    def redirect(self, path: str, location: str) -> None:
        def send(h: BaseHTTPRequestHandler) -> None:
            h.send_response(302)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()
        self.routes[path] = send

    def json(self, path: str, data: Any, status: int = 200) -> None:
        self.page(path, json.dumps(data).encode(), "application/json", status)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[LocalSite]:
    s = LocalSite()
    yield s
    s.close()


# ----------------------------------------------------------------------------- stand-ins


class NoConnections(httpx.AsyncBaseTransport):
    """A transport that fails the test on any request except to ``expected`` pinned
    addresses, which get ``respond(request)``."""

    def __init__(self, expected: dict[str, Callable[[httpx.Request], httpx.Response]]
                 | None = None) -> None:
        self.expected = expected or {}
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        respond = self.expected.get(request.url.host)
        if respond is None:
            pytest.fail(f"web_fetch tried to connect to {request.url.host} "
                        f"(Host: {request.headers.get('host')})")
        return respond(request)


def resolver(table: dict[str, list[str]]) -> Callable[[str, int], Any]:
    """A resolver stand-in; unknown names fail the test."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in table:
            pytest.fail(f"unexpected DNS lookup of {host!r}")
        return table[host]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def fetcher(transport: httpx.AsyncBaseTransport | None = None, resolve: Any = None,
            **config: Any) -> WebFetcher:
    return WebFetcher(WebFetchConfig(**config), resolver=resolve, transport=transport)


PUBLIC = "93.184.216.34"


# ----------------------------------------------------------------------------- SSRF guard

REFUSED = {
    "127.0.0.1": "loopback", "127.8.9.10": "loopback", "::1": "loopback",
    "10.0.0.1": "private", "172.16.5.4": "private", "192.168.1.1": "private",
    "fc00::1": "private", "169.254.1.1": "link-local", "fe80::1": "link-local",
    "169.254.169.254": "metadata", "169.254.170.2": "metadata", "fd00:ec2::254": "metadata",
    "100.100.100.200": "metadata", "168.63.129.16": "metadata", "100.64.0.1": "CGNAT",
    "0.0.0.0": "unspecified", "224.0.0.1": "multicast", "240.0.0.1": "reserved",
    "::ffff:127.0.0.1": "loopback", "::ffff:169.254.169.254": "metadata",
    "2002:7f00:1::1": "loopback", "64:ff9b::a00:1": "private",
}


@pytest.mark.parametrize("address", sorted(REFUSED))
def test_policy_refuses_non_public_and_metadata_addresses(address: str) -> None:
    reason = AddressPolicy().refusal(address)
    assert reason is not None, address
    if REFUSED[address] == "metadata":
        assert "metadata" in reason


def test_policy_allows_public_and_what_the_config_opens() -> None:
    policy = AddressPolicy()
    for address in (PUBLIC, "1.1.1.1", "2606:4700:4700::1111"):
        assert policy.refusal(address) is None
    private_ok = AddressPolicy(allow_private=True)
    assert private_ok.refusal("10.0.0.1") is None and private_ok.refusal("127.0.0.1") is None
    assert "metadata" in (private_ok.refusal("169.254.169.254") or "")
    listed = AddressPolicy(allow_networks=["127.0.0.0/8", "169.254.169.254/32"])
    assert listed.refusal("127.0.0.1") is None and listed.refusal("169.254.169.254") is None
    assert listed.refusal("10.0.0.1") is not None


@pytest.mark.parametrize("url", [
    "http://internal.example/admin",  # name -> private address
    "http://mixed.example/",  # one public, one loopback address
    "http://meta.example/latest/meta-data/",  # name -> metadata address
    "http://169.254.169.254/latest/meta-data/iam/",
    "http://[fd00:ec2::254]/latest/",
    "https://10.1.2.3/",
    "http://metadata.google.internal/computeMetadata/v1/",  # refused by name, no lookup
])
async def test_fetch_refuses_before_any_connection(url: str) -> None:
    transport = NoConnections()
    resolve = resolver({"internal.example": ["10.20.30.40"],
                        "mixed.example": [PUBLIC, "127.0.0.1"],
                        "meta.example": ["169.254.169.254"]})
    with pytest.raises(BlockedTarget, match="refused"):
        await fetcher(transport, resolve).fetch(url)
    assert transport.seen == []
    if "google.internal" in url:
        assert resolve.asked == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.1/", "http://localhost:1/",
                                 "http://[::1]:8080/", "http://127.1/"])
async def test_numeric_and_local_names_are_resolved_then_refused(url: str) -> None:
    # the system resolver parses these without any DNS traffic; all are loopback
    transport = NoConnections()
    with pytest.raises(BlockedTarget, match="loopback"):
        await fetcher(transport, system_resolver).fetch(url)
    assert transport.seen == []


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/",
                                    "http://evil.example/", "http://[::1]/",
                                    "http://192.168.0.10:8080/admin"])
async def test_redirect_to_a_refused_target_is_not_followed(target: str) -> None:
    def first_hop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": target})

    transport = NoConnections({PUBLIC: first_hop})
    resolve = resolver({"public.example": [PUBLIC], "evil.example": ["10.9.9.9"]})
    with pytest.raises(BlockedTarget, match="refused"):
        await fetcher(transport, resolve).fetch("http://public.example/start")
    # exactly one request, to the checked public address, with the name kept in Host
    assert [r.url.host for r in transport.seen] == [PUBLIC]
    assert transport.seen[0].headers["host"] == "public.example"


async def test_https_keeps_the_name_for_sni_and_pins_the_address() -> None:
    def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/plain"}, text="hello")

    transport = NoConnections({PUBLIC: ok})
    result = await fetcher(transport, resolver({"www.example.org": [PUBLIC]})).fetch(
        "https://www.example.org/x")
    request = transport.seen[0]
    assert request.url.host == PUBLIC and request.url.scheme == "https"
    assert request.extensions["sni_hostname"] == "www.example.org"
    assert request.headers["host"] == "www.example.org"
    assert result.content == "hello" and result.final_url == "https://www.example.org/x"


async def test_redirect_cap_and_bad_urls() -> None:
    hops = 0

    def loop(request: httpx.Request) -> httpx.Response:
        nonlocal hops
        hops += 1
        return httpx.Response(302, headers={"Location": f"/hop{hops}"})

    transport = NoConnections({PUBLIC: loop})
    with pytest.raises(FetchError, match="more than 3 redirects"):
        await fetcher(transport, resolver({"loop.example": [PUBLIC]}),
                      max_redirects=3).fetch("http://loop.example/")
    assert hops == 4
    for bad in ("ftp://example.com/file", "file:///etc/passwd", "gopher://x/", "http:///nohost"):
        with pytest.raises(FetchError):
            await fetcher(NoConnections(), resolver({})).fetch(bad)


# ----------------------------------------------------------------------------- loopback site


async def test_loopback_is_refused_unless_allowed_and_then_converted(site: LocalSite) -> None:
    site.page("/page.html", PAGE)
    with pytest.raises(BlockedTarget, match="loopback"):
        await fetcher().fetch(site.url + "/page.html")
    assert site.requests == []  # refused before connecting

    result = await fetcher(allow_networks=["127.0.0.0/8"]).fetch(site.url + "/page.html")
    assert result.status == 200 and result.title == "Pool Notes"
    assert "# Warm pools" in result.content
    assert "Containers start **fast** from a [warm pool](/more)." in result.content
    assert "- first point" in result.content and "- second point" in result.content
    assert "script-body" not in result.content and "color: red" not in result.content
    assert "enable js" not in result.content
    text = await fetcher(allow_networks=["127.0.0.0/8"]).fetch(site.url + "/page.html",
                                                               format="text")
    assert "Warm pools" in text.content and "**" not in text.content


async def test_loopback_redirects_are_checked_every_hop(site: LocalSite) -> None:
    site.page("/page.html", PAGE)
    site.redirect("/moved", "/page.html")
    site.redirect("/to-private", "http://10.1.2.3/internal")
    site.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")

    class LoopbackOnly(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()
            self.hosts: list[str] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.hosts.append(request.url.host)
            if request.url.host != "127.0.0.1":
                pytest.fail(f"connection attempted to {request.url.host}")
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    guard = LoopbackOnly()
    f = fetcher(guard, allow_networks=["127.0.0.0/8"])
    result = await f.fetch(site.url + "/moved")
    assert result.redirects == [site.url + "/moved"]
    assert result.final_url == site.url + "/page.html" and result.title == "Pool Notes"
    for path in ("/to-private", "/to-metadata"):
        with pytest.raises(BlockedTarget, match="refused"):
            await f.fetch(site.url + path)
    assert set(guard.hosts) == {"127.0.0.1"}
    assert [r["path"] for r in site.requests] == ["/moved", "/page.html", "/to-private",
                                                  "/to-metadata"]


async def test_size_cap_timeout_and_binary(site: LocalSite) -> None:
    site.page("/big.txt", b"x" * 3_000_000, "text/plain")
    site.page("/img.png", b"\x89PNG\r\n\x1a\n" + b"0" * 100, "image/png")

    def slow(h: BaseHTTPRequestHandler) -> None:
        time.sleep(3)
        h.send_response(200)
        h.end_headers()
    site.routes["/slow"] = slow
    f = fetcher(allow_networks=["127.0.0.0/8"], max_bytes=100_000, max_chars=5000,
                timeout_ms=800)
    big = await f.fetch(site.url + "/big.txt")
    assert big.body_truncated and big.bytes == 100_000
    assert big.truncated and len(big.content) == 5000
    with pytest.raises(FetchError, match="text pages"):
        await f.fetch(site.url + "/img.png")
    started = time.monotonic()
    with pytest.raises(FetchError, match="longer than"):
        await f.fetch(site.url + "/slow")
    assert time.monotonic() - started < 2.5


# ----------------------------------------------------------------------------- search


async def test_brave_provider_against_a_stand_in(site: LocalSite) -> None:
    site.json("/res/v1/web/search", {"type": "search", "web": {"results": [
        {"title": "Docker pools", "url": "https://a.example/pools",
         "description": "Warm <strong>pools</strong> explained", "page_age": "2025-01-02"},
        {"title": "Second", "url": "https://b.example/", "description": "more"},
        {"title": "Third", "url": "https://c.example/", "description": "even more"}]}})
    brave = BraveSearch("brave-key-123", base_url=site.url + "/res/v1/web/search")
    results = await brave.search("docker pools", 2)
    assert [r.url for r in results] == ["https://a.example/pools", "https://b.example/"]
    assert results[0].snippet == "Warm pools explained"
    assert results[0].published == "2025-01-02"
    request = site.requests[-1]
    assert request["path"] == "/res/v1/web/search?q=docker+pools&count=2"
    assert request["headers"]["X-Subscription-Token"] == "brave-key-123"
    assert "brave-key-123" not in repr(brave)


async def test_tavily_provider_and_errors_hide_the_key(site: LocalSite) -> None:
    site.json("/search", {"results": [{"title": "T", "url": "https://t.example/",
                                       "content": "tavily snippet"}]})
    tavily = TavilySearch("tvly-secret", base_url=site.url + "/search")
    results = await tavily.search("what is dockercc", 3)
    assert results[0].snippet == "tavily snippet"
    request = site.requests[-1]
    assert request["method"] == "POST"
    assert json.loads(request["body"]) == {"query": "what is dockercc", "max_results": 3}
    assert request["headers"]["Authorization"] == "Bearer tvly-secret"

    site.json("/search", {"detail": "bad key tvly-secret"}, status=401)
    with pytest.raises(SearchError) as info:
        await tavily.search("x", 1)
    assert "401" in str(info.value) and "tvly-secret" not in str(info.value)


def test_search_provider_comes_from_config_or_env() -> None:
    assert search_provider_from_config(WebSearchConfig(), env={"BRAVE_API_KEY": "k"}) is None
    assert search_provider_from_config(WebSearchConfig(provider="brave"), env={}) is None
    brave = search_provider_from_config(WebSearchConfig(provider="brave"),
                                        env={"BRAVE_API_KEY": "from-env"})
    assert isinstance(brave, BraveSearch) and brave._key == "from-env"
    tavily = search_provider_from_config(
        WebSearchConfig(provider="tavily", apiKey="from-config", baseUrl="http://127.0.0.1:9/s"),
        env={"TAVILY_API_KEY": "from-env"})
    assert isinstance(tavily, TavilySearch) and tavily._key == "from-config"
    assert tavily.url == "http://127.0.0.1:9/s"


# ----------------------------------------------------------------------------- cron, channels


def test_cron_schedules() -> None:
    assert validate_schedule(" */5  * * * * ") == "*/5 * * * *"
    assert validate_schedule("* * * * * */2") == "* * * * * */2"
    assert validate_schedule("@Hourly") == "@hourly"
    for bad in ("every tuesday", "* * *", "61 * * * *", "@reboot", "* * * * * * * *", ""):
        with pytest.raises(ValueError, match="cron expression"):
            validate_schedule(bad)
    base = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    assert next_run_ms("* * * * * */2", "UTC", base) == base + 2000
    assert next_run_ms("0 9 * * *", "UTC", base) == base + 9 * 3600_000
    assert next_run_ms("0 9 * * *", "Europe/Berlin", base) == base + 8 * 3600_000
    with pytest.raises(ValueError, match="time zone"):
        next_run_ms("0 9 * * *", "Mars/Olympus", base)


async def test_channel_registry() -> None:
    got: list[ChannelMessage] = []
    channels = ChannelRegistry(RedisTransport("redis://127.0.0.1:1", "t:"), ["events"])
    channels.add("notes", got.append)

    async def async_handler(msg: ChannelMessage) -> dict[str, str]:
        return {"echo": msg.text}
    channels.add("echo", async_handler)
    assert channels.names() == ["echo", "events", "notes"]
    assert channels.redis_key("events") == "t:channel:events"
    out = await channels.deliver(ChannelMessage(channel="notes", text="hi"))
    assert out == {"kind": "python"} and got[0].text == "hi"
    assert (await channels.deliver(ChannelMessage(channel="echo", text="yo")))["reply"] == {
        "echo": "yo"}
    with pytest.raises(ValueError, match="already registered"):
        channels.add("notes", got.append)
    with pytest.raises(ValueError, match="channel name"):
        channels.add("bad name!", got.append)
    with pytest.raises(ValueError, match="either"):
        channels.add("both", got.append, redis=True)
    with pytest.raises(KeyError):
        await channels.deliver(ChannelMessage(channel="nowhere", text="x"))


def test_pool_channel_registers_callbacks_decorators_and_redis_channels() -> None:
    from dockercc.client import AsyncPool

    pool = AsyncPool({"redis": {"url": "redis://127.0.0.1:1", "keyPrefix": "chan:"},
                      "tools": {"message": {"redisChannels": ["events"]}}})
    got: list[ChannelMessage] = []
    assert pool.channel("notes", got.append) == got.append

    @pool.channel("log", description="a decorated handler")
    def log(msg: ChannelMessage) -> None:
        got.append(msg)

    pool.channel("audit", redis=True)
    assert pool.channels.names() == ["audit", "events", "log", "notes"]
    assert {c["name"]: c["kind"] for c in pool.channels.describe()} == {
        "audit": "redis", "events": "redis", "log": "python", "notes": "python"}
    assert pool.channels.redis_key("audit") == "chan:channel:audit"
    # the message tool of a session opened now names the channels for the model
    session = pool.session()
    description = next(t.description for t in session._tools if t.name == "message")
    assert "Channels: audit, events, log, notes." in description
