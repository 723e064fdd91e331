"""Web tools: ``web_fetch`` (with an SSRF guard) and ``web_search`` (pluggable providers).

web_fetch
    An HTTP(S) GET through httpx: a time limit for the whole fetch, a cap on the body, a cap
    on redirects, HTML turned into Markdown (``markdownify``) or plain text. Before **every**
    request (the first and each redirect) the host name is resolved and every address it
    resolves to is checked; the request then goes to the checked address (``Host`` header
    and TLS SNI keep the name), so a second DNS answer cannot swap in another target (DNS
    rebinding). Refused unless the config allows them: loopback, private (RFC 1918, ULA),
    link-local, CGNAT, multicast, reserved and unspecified addresses, IPv4 embedded in IPv6
    (mapped, 6to4, NAT64, Teredo) of those, and cloud-metadata endpoints (by address and by
    name; ``allowPrivate`` does not open these, only an explicit ``allowNetworks`` range
    does). Proxies from the environment are not used (they would resolve names themselves).

web_search
    :class:`SearchProvider` is the interface (``async search(query, count)`` ->
    :class:`SearchResult` list). :class:`BraveSearch` (Brave Search API) and
    :class:`TavilySearch` (Tavily) are the real providers; the tool is offered only when
    ``tools.webSearch.provider`` is set (or ``pool.search_provider`` is given in code).
"""

from __future__ import annotations

import codecs
import ipaddress
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, runtime_checkable

import anyio
import httpx
from pydantic import BaseModel, Field

from ..bridge import Tool, ToolOutput
from ..egress.policy import embedded_ips
from ..egress.proxy import system_resolver as resolve_addresses
from ..errors import DockerCCError
from ._base import BuiltinToolError, ToolContext, builtin, clip, to_json

if TYPE_CHECKING:  # pragma: no cover
    from ..config import WebFetchConfig, WebSearchConfig

__all__ = [
    "BlockedTarget",
    "BraveSearch",
    "FetchError",
    "FetchResult",
    "AddressPolicy",
    "Resolver",
    "SearchError",
    "SearchProvider",
    "SearchResult",
    "TavilySearch",
    "WebFetcher",
    "search_provider_from_config",
    "system_resolver",
    "web_tools",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``await resolver(host, port)`` -> the host's IP addresses as strings."""

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle ... instance metadata
    "169.254.170.2",  # AWS ECS task metadata / credentials
    "169.254.170.23",  # AWS EKS pod identity agent
    "fd00:ec2::254",  # AWS IMDS over IPv6
    "fd00:ec2::23",  # AWS EKS pod identity agent over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure wireserver (a public address!)
))
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com",
    "instance-data", "instance-data.ec2.internal",
})
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript",
               "application/x-javascript", "application/rss+xml", "application/atom+xml")
_DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "svg", "canvas", "object",
              "embed", "head")


class FetchError(DockerCCError):
    """web_fetch could not fetch a page (bad URL, timeout, network error, not text)."""


class BlockedTarget(FetchError):
    """web_fetch refused a target (SSRF guard)."""


class AddressPolicy:
    """Which addresses web_fetch may connect to."""

    def __init__(self, *, allow_private: bool = False,
                 allow_networks: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.allow_networks = [ipaddress.ip_network(n, strict=False) for n in allow_networks]

    @classmethod
    def from_config(cls, config: WebFetchConfig) -> AddressPolicy:
        return cls(allow_private=config.allow_private, allow_networks=config.allow_networks)

    def _listed(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.allow_networks)

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` is refused, or None if it may be used."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.ip_address(str(ip).split("%", 1)[0])
        if self._listed(ip):
            return None
        for candidate in embedded_ips(ip):
            if candidate in METADATA_ADDRESSES:
                return "a cloud-metadata address"
        if self.allow_private:
            return None
        for candidate in embedded_ips(ip):
            reason = _non_public(candidate)
            if reason:
                return reason
        return None


def _non_public(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private-network address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "a shared (CGNAT) address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved / non-public address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (``getaddrinfo``)."""
    try:
        return await resolve_addresses(host, port)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None


class FetchResult(BaseModel):
    """What web_fetch got."""

    url: str
    final_url: str
    status: int
    reason: str = ""
    content_type: str = ""
    title: str | None = None
    content: str = ""
    truncated: bool = Field(False, description="content was cut to the character limit")
    body_truncated: bool = Field(False, description="the body was longer than maxBytes")
    bytes: int = 0
    redirects: list[str] = Field(default_factory=list)

    def render(self) -> str:
        lines = [f"URL: {self.final_url}", f"Status: {self.status} {self.reason}".rstrip()]
        if self.redirects:
            lines.append("Redirected from: " + " -> ".join(self.redirects))
        if self.content_type:
            lines.append(f"Content-Type: {self.content_type}")
        if self.title:
            lines.append(f"Title: {self.title}")
        if self.body_truncated:
            lines.append(f"(body cut off after {self.bytes} bytes)")
        if self.truncated:
            lines.append("(text cut off at the character limit)")
        return "\n".join(lines) + "\n\n" + self.content


class WebFetcher:
    """Guarded HTTP(S) GETs. ``resolver`` and ``transport`` can be replaced (tests, custom
    DNS); requests always go to an address the :class:`AddressPolicy` allowed."""

    def __init__(self, config: WebFetchConfig, *, resolver: Resolver | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.policy = AddressPolicy.from_config(config)
        self.resolver = resolver or system_resolver
        self.transport = transport

    async def check(self, url: httpx.URL) -> str:
        """Resolve and check ``url``'s host; the address to connect to. Raises
        :class:`BlockedTarget` when any of its addresses is refused."""
        if url.scheme not in ("http", "https"):
            raise BlockedTarget(f"only http and https URLs can be fetched, not {url.scheme!r}")
        host = url.host
        if not host:
            raise BlockedTarget(f"the URL {str(url)!r} has no host")
        name = host.rstrip(".").lower()
        if name in METADATA_HOSTS:
            raise BlockedTarget(f"refused {host!r}: a cloud-metadata host name")
        try:
            addresses = [str(ipaddress.ip_address(name))]
        except ValueError:
            addresses = await self.resolver(name, url.port or (443 if url.scheme == "https"
                                                               else 80))
        if not addresses:
            raise BlockedTarget(f"{host!r} resolves to no address")
        for address in addresses:
            reason = self.policy.refusal(address)
            if reason:
                shown = host if host == address else f"{host} ({address})"
                hint = ("only a tools.webFetch.allowNetworks range naming it allows it"
                        if "metadata" in reason else
                        "tools.webFetch.allowNetworks or allowPrivate allow it")
                raise BlockedTarget(f"refused {shown}: {reason} (SSRF guard; {hint})")
        return addresses[0]

    def _request(self, url: httpx.URL, address: str) -> httpx.Request:
        host_header = url.host if url.port is None else f"{url.host}:{url.port}"
        if ":" in url.host and url.port is None:
            host_header = f"[{url.host}]"
        elif ":" in url.host:
            host_header = f"[{url.host}]:{url.port}"
        headers = {"Host": host_header, "User-Agent": self.config.user_agent,
                   "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
                   "Accept-Encoding": "gzip, deflate"}
        extensions: dict[str, Any] = {}
        if url.scheme == "https":
            extensions["sni_hostname"] = url.host
        return httpx.Request("GET", url.copy_with(host=address), headers=headers,
                             extensions=extensions)

    async def fetch(self, url: str, *, max_chars: int | None = None,
                    format: Literal["markdown", "text"] = "markdown") -> FetchResult:
        """GET ``url`` (following checked redirects) and convert the page."""
        cfg = self.config
        limit = min(max_chars or cfg.max_chars, cfg.max_chars)
        try:
            current = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise FetchError(f"invalid URL {url!r}: {exc}") from None
        redirects: list[str] = []
        timeout = cfg.timeout_ms / 1000
        try:
            with anyio.fail_after(timeout):
                async with httpx.AsyncClient(transport=self.transport, trust_env=False,
                                             follow_redirects=False,
                                             timeout=httpx.Timeout(timeout)) as client:
                    while True:
                        address = await self.check(current)
                        response = await client.send(self._request(current, address),
                                                     stream=True)
                        try:
                            location = response.headers.get("location")
                            if response.is_redirect and location:
                                if len(redirects) >= cfg.max_redirects:
                                    raise FetchError(
                                        f"more than {cfg.max_redirects} redirects "
                                        f"(tools.webFetch.maxRedirects) starting at {url}")
                                redirects.append(str(current))
                                current = current.join(location)
                                continue
                            body, cut = await _read_capped(response, cfg.max_bytes)
                        finally:
                            await response.aclose()
                        break
        except TimeoutError:
            raise FetchError(f"fetching {url} took longer than {timeout:g}s "
                                f"(tools.webFetch.timeoutMs)") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"fetching {current} failed: {type(exc).__name__}: "
                                f"{exc}") from None
        content_type = response.headers.get("content-type", "")
        title, content = _convert(body, content_type, format)
        content, truncated = clip(content, limit)
        return FetchResult(url=url, final_url=str(current), status=response.status_code,
                           reason=response.reason_phrase, content_type=content_type,
                           title=title, content=content, truncated=truncated,
                           body_truncated=cut, bytes=len(body), redirects=redirects)


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True
    return b"".join(chunks), False


def _charset(content_type: str) -> str | None:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    if not match:
        return None
    try:
        return codecs.lookup(match.group(1)).name
    except LookupError:
        return None


def _convert(body: bytes, content_type: str,
             format: Literal["markdown", "text"]) -> tuple[str | None, str]:
    """``(title, text)`` of a body; HTML becomes Markdown or text, text stays text."""
    mime = content_type.split(";", 1)[0].strip().lower()
    sniffed_html = not mime and body.lstrip()[:15].lower().startswith((b"<!doctype html",
                                                                       b"<html"))
    if mime in _HTML_TYPES or sniffed_html:
        return _html(body, _charset(content_type), format)
    if (not mime or mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith("+json")
            or mime.endswith("+xml")):
        return None, body.decode(_charset(content_type) or "utf-8", errors="replace")
    raise FetchError(f"web_fetch returns text pages; this is {mime or 'unknown'} "
                        f"({len(body)} bytes)")


def _html(body: bytes, charset: str | None,
          format: Literal["markdown", "text"]) -> tuple[str | None, str]:
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(body, "html.parser", from_encoding=charset)
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(list(_DROP_TAGS)):
        tag.decompose()
    if format == "text":
        text = soup.get_text("\n")
        text = re.sub(r"[ \t\r\f\v]+", " ", text)
        text = re.sub(r"\n\s*\n\s*(\n\s*)+", "\n\n", text)
    else:
        text = MarkdownConverter(heading_style="ATX", bullets="-").convert_soup(soup)
        text = re.sub(r"\n[ \t]*\n([ \t]*\n)+", "\n\n", text)
    return title or None, text.strip()


# --------------------------------------------------------------------------- search


class SearchResult(BaseModel):
    """One web search hit."""

    title: str
    url: str
    snippet: str = ""
    published: str | None = None


class SearchError(DockerCCError):
    """The search provider failed or answered with something unexpected."""


@runtime_checkable
class SearchProvider(Protocol):
    """A web search API."""

    name: str

    async def search(self, query: str, count: int) -> list[SearchResult]: ...


class _HTTPProvider:
    name = "http"
    default_url = ""

    def __init__(self, api_key: str, *, base_url: str | None = None, timeout: float = 15.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not api_key:
            raise ValueError(f"{self.name}: an API key is needed")
        self._key = api_key
        self.url = base_url or self.default_url
        self.timeout = timeout
        self.transport = transport

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"  # never the key

    async def _call(self, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
                    ) -> Any:
        try:
            async with httpx.AsyncClient(transport=self.transport,
                                         timeout=httpx.Timeout(self.timeout)) as client:
                response = await request(client)
        except httpx.HTTPError as exc:
            raise SearchError(f"{self.name} search failed: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            excerpt = response.text[:300].replace(self._key, "***")
            raise SearchError(f"{self.name} search answered HTTP {response.status_code}: "
                              f"{excerpt}")
        try:
            return response.json()
        except ValueError:
            raise SearchError(f"{self.name} search answered with something not JSON") from None


class BraveSearch(_HTTPProvider):
    """The Brave Search API (``GET /res/v1/web/search``, key in ``X-Subscription-Token``;
    key env: ``BRAVE_API_KEY``)."""

    name = "brave"
    default_url = "https://api.search.brave.com/res/v1/web/search"
    key_env = "BRAVE_API_KEY"

    async def search(self, query: str, count: int) -> list[SearchResult]:
        data = await self._call(lambda c: c.get(
            self.url, params={"q": query, "count": min(count, 20)},
            headers={"Accept": "application/json", "X-Subscription-Token": self._key}))
        results = ((data or {}).get("web") or {}).get("results") or []
        out = []
        for item in results[:count]:
            if isinstance(item, dict) and item.get("url"):
                out.append(SearchResult(
                    title=str(item.get("title") or item["url"]), url=str(item["url"]),
                    snippet=_strip_tags(str(item.get("description") or "")),
                    published=item.get("page_age") or item.get("age")))
        return out


class TavilySearch(_HTTPProvider):
    """The Tavily search API (``POST /search``, ``Authorization: Bearer``; key env:
    ``TAVILY_API_KEY``)."""

    name = "tavily"
    default_url = "https://api.tavily.com/search"
    key_env = "TAVILY_API_KEY"

    async def search(self, query: str, count: int) -> list[SearchResult]:
        data = await self._call(lambda c: c.post(
            self.url, json={"query": query, "max_results": min(count, 20)},
            headers={"Authorization": f"Bearer {self._key}"}))
        out = []
        for item in (data or {}).get("results") or []:
            if isinstance(item, dict) and item.get("url"):
                out.append(SearchResult(
                    title=str(item.get("title") or item["url"]), url=str(item["url"]),
                    snippet=str(item.get("content") or ""),
                    published=item.get("published_date")))
        return out[:count]


def _strip_tags(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text)


PROVIDERS: dict[str, type[BraveSearch] | type[TavilySearch]] = {
    "brave": BraveSearch, "tavily": TavilySearch}


def search_provider_from_config(config: WebSearchConfig,
                                env: Mapping[str, str] | None = None) -> SearchProvider | None:
    """The configured provider, or None (no provider, or no key for it)."""
    if config.provider is None:
        return None
    cls = PROVIDERS[config.provider]
    env = os.environ if env is None else env
    key = config.api_key.get_secret_value() if config.api_key else env.get(cls.key_env, "")
    if not key:
        from ._base import log

        log.warning("tools.webSearch.provider is %s but there is no API key (set "
                    "tools.webSearch.apiKey or %s); web_search is not offered",
                    config.provider, cls.key_env)
        return None
    return cls(key, base_url=config.base_url, timeout=config.timeout_ms / 1000)


# --------------------------------------------------------------------------- tools


def web_tools(ctx: ToolContext, provider: SearchProvider | None) -> list[Tool[..., Any]]:
    cfg = ctx.config.tools

    async def web_fetch(url: Annotated[str, Field(min_length=1, max_length=8192)],
                        format: Literal["markdown", "text"] = "markdown",
                        max_chars: Annotated[int | None, Field(ge=100)] = None) -> Any:
        fetcher = WebFetcher(cfg.web_fetch)
        result = await fetcher.fetch(url, max_chars=max_chars, format=format)
        if result.status >= 400:
            excerpt, _ = clip(result.content, 1000)
            return ToolOutput.error(f"HTTP {result.status} {result.reason} from "
                                    f"{result.final_url}\n\n{excerpt}")
        return result.render()

    tools = [builtin(web_fetch, name="web_fetch", timeout=cfg.web_fetch.timeout_ms / 1000 + 5,
                     description=(
                         "Fetch a web page (HTTP/HTTPS GET) and return it as Markdown (or "
                         "plain text). Private, loopback and link-local addresses are refused "
                         "unless the pool allows them."))]
    if provider is not None:
        search_cfg = cfg.web_search

        async def web_search(query: Annotated[str, Field(min_length=1, max_length=400)],
                             count: Annotated[int | None, Field(ge=1, le=20)] = None) -> Any:
            n = min(count or search_cfg.max_results, search_cfg.max_results)
            try:
                with anyio.fail_after(search_cfg.timeout_ms / 1000):
                    results = await provider.search(query, n)
            except TimeoutError:
                raise BuiltinToolError(f"{provider.name} search took longer than "
                                       f"{search_cfg.timeout_ms / 1000:g}s") from None
            return to_json({"provider": provider.name, "query": query,
                            "results": [r.model_dump(exclude_none=True) for r in results]})

        tools.append(builtin(web_search, name="web_search",
                             timeout=search_cfg.timeout_ms / 1000 + 5, description=(
                                 f"Search the web ({provider.name}); returns titles, URLs and "
                                 f"snippets. Read a page with web_fetch.")))
    return tools
