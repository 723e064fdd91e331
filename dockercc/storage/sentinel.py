"""Redis Sentinel URLs: ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``.

The pool, the sessions and the runner connect through :func:`connect`, which gives a plain
client for ``redis://``/``rediss://``/``unix://`` URLs and, for Sentinel URLs, a client whose
connections ask the sentinels for the current primary each time they (re)connect: after a
fail-over the next command finds the new primary. The user and password in the URL are the
*data* Redis's (the sentinels are asked without credentials, or with the ``sentinel_password``
query parameter).

Runners on the ``none`` network keep a ``unix://`` URL: the pool's relay
(:class:`dockercc.egress.proxy.UnixRelay`) asks the sentinels for the primary on every new
connection it accepts (:func:`current_primary`), so a runner whose connection broke in a
fail-over reconnects to the new primary without knowing about Sentinel at all.

Needs only ``redis`` (the runner imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def __repr__(self) -> str:  # (never the passwords)
        return f"SentinelTarget({self.sentinels!r}, service={self.service!r}, db={self.db})"


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Raises ValueError for a URL that is not a usable Sentinel URL."""
    if not is_sentinel_url(url):
        raise ValueError("not a redis+sentinel:// URL")
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host or (port and not port.isdigit()):
            raise ValueError("sentinel addresses must be host:port, separated by commas")
        sentinels.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise ValueError("a Sentinel URL needs sentinels and a service name: "
                         "redis+sentinel://host:26379[,host:26379]/mymaster[/db]")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("the path of a Sentinel URL is /service[/db]")
    sentinel_password = parse_qs(parts.query).get("sentinel_password")
    return SentinelTarget(tuple(sentinels), unquote(path[0]), int(path[1]) if len(path) == 2
                          else 0, username, password,
                          sentinel_password[0] if sentinel_password else None)


def _sentinel(t: SentinelTarget, **kwargs: Any) -> Sentinel:
    sentinel_kwargs = {"socket_connect_timeout": kwargs.get("socket_connect_timeout", 5),
                       "socket_timeout": 5}
    if t.sentinel_password:
        sentinel_kwargs["password"] = t.sentinel_password
    return Sentinel(list(t.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs)


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    """A client for ``url`` (any of dockercc's Redis URL forms); ``kwargs`` go to the
    connections (timeouts, retry, driver info)."""
    if not is_sentinel_url(url):
        return aioredis.from_url(url, **kwargs)
    t = parse_sentinel_url(url)
    kwargs = {**kwargs, "db": t.db}
    if t.username:
        kwargs["username"] = t.username
    if t.password is not None:
        kwargs["password"] = t.password
    return _sentinel(t, **kwargs).master_for(t.service)


async def current_primary(url: str) -> tuple[str, int]:
    """``(host, port)`` of the primary the sentinels name now (MasterNotFoundError, a
    ConnectionError, when none of them knows one)."""
    t = parse_sentinel_url(url)
    sentinel = _sentinel(t)
    try:
        host, port = await sentinel.discover_master(t.service)
        return str(host), int(port)
    finally:
        for s in sentinel.sentinels:
            await s.aclose()
