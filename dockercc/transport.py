"""Redis transport (host side): the seed's per-session keys, made reliable.

- input: ``RPUSH {p}{s}:input``; the runner moves each item with BLMOVE into
  ``{p}{s}:input:processing`` and removes it only once the CLI has it.
- output: envelopes ``{seq, ts, event}`` published on ``{p}{s}:output`` and kept in
  ``{p}{s}:output_buffer`` (last 1000). :meth:`RedisTransport.events` subscribes first, then
  replays the buffer, and dedupes by ``seq``, so a late or reconnecting reader misses nothing
  that is still buffered; after a Redis outage it reconnects and replays.
- state / result / control: a hash, a string and a pub/sub channel.

``redis://``, ``rediss://`` and ``unix://`` URLs work (redis-py parses them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import TransportError
from .protocol.envelope import Envelope
from .protocol.keys import DEFAULT_PREFIX, PoolKeys, SessionKeys, validate_id

log = logging.getLogger("dockercc.transport")

_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def redact_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host`` (for messages and logs)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"


def now_ms() -> int:
    return int(time.time() * 1000)


class RedisTransport:
    """Async access to one Redis for a pool and its sessions."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, *,
                 socket_timeout: float | None = None) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise TransportError(
                f"unsupported Redis URL {redact_url(url)!r}: use redis://, rediss:// or unix://")
        self._url = url
        self.prefix = prefix
        self.pool_keys = PoolKeys(prefix)
        self._socket_timeout = socket_timeout
        self._client: aioredis.Redis | None = None

    def __repr__(self) -> str:
        return f"RedisTransport({redact_url(self._url)!r}, prefix={self.prefix!r})"

    @property
    def url(self) -> str:
        """The URL with any password masked."""
        return redact_url(self._url)

    def _new_client(self) -> aioredis.Redis:
        return aioredis.from_url(self._url, socket_timeout=self._socket_timeout,
                                 socket_connect_timeout=5, health_check_interval=15)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def keys(self, session: str) -> SessionKeys:
        return SessionKeys(session, self.prefix)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError) as exc:
            raise TransportError(
                f"Redis at {self.url} is not reachable ({exc}); start it or set REDIS_URL"
            ) from exc

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- input -----------------------------------------------------------------------------

    async def send_input(self, session: str, message: str | Mapping[str, Any]) -> str:
        """Queue one stdin line for the session's CLI. Returns the input id."""
        line = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
        input_id = uuid.uuid4().hex
        item = json.dumps({"id": input_id, "ts": now_ms(), "line": line}, ensure_ascii=False)
        await self._call(self.client.rpush, self.keys(session).input, item)
        return input_id

    async def send_control(self, session: str, command: str, **fields: Any) -> int:
        """Publish a control command (``interrupt``, ``stop``); returns how many runners heard it."""
        payload = json.dumps({"type": command, **fields})
        return int(await self._call(self.client.publish, self.keys(session).control, payload))

    # -- output ----------------------------------------------------------------------------

    async def buffered(self, session: str, after_seq: int = 0) -> list[Envelope]:
        raw = await self._call(self.client.lrange, self.keys(session).output_buffer, 0, -1)
        out = []
        for item in raw:
            env = Envelope.decode(item)
            if env is not None and env.seq > after_seq:
                out.append(env)
        return out

    async def events(self, session: str, after_seq: int = 0, *,
                     reconnect_timeout: float = 30.0) -> AsyncGenerator[Envelope, None]:
        """Every envelope of the session with ``seq > after_seq``, in order, forever.

        Subscribes before it replays the buffer and dedupes by seq, so nothing falls in the
        gap. If Redis goes away it reconnects (for up to ``reconnect_timeout`` seconds) and
        replays from the buffer; then raises :class:`TransportError`.
        """
        keys = self.keys(session)
        last = after_seq
        down_since: float | None = None
        while True:
            client = self._new_client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.output)
                for env in await self.buffered(session, last):
                    if env.seq > last:
                        last = env.seq
                        yield env
                down_since = None
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    decoded = Envelope.decode(msg["data"])
                    if decoded is None or decoded.seq <= last:
                        continue
                    env = decoded
                    if env.seq > last + 1:
                        # a gap (e.g. a reconnect of the publisher): fill it from the buffer
                        for missed in await self.buffered(session, last):
                            if missed.seq > last:
                                last = missed.seq
                                yield missed
                        if env.seq <= last:
                            continue
                    last = env.seq
                    yield env
            except _RETRYABLE as exc:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > reconnect_timeout:
                    raise TransportError(
                        f"lost Redis at {self.url} for {reconnect_timeout:.0f}s while reading "
                        f"session {session!r}: {exc}") from exc
                log.warning("Redis connection lost while reading %s (%s); reconnecting",
                            session, exc)
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()

    # -- state -----------------------------------------------------------------------------

    async def state(self, session: str) -> dict[str, str]:
        raw = await self._call(self.client.hgetall, self.keys(session).state)
        return {as_str(k): as_str(v) for k, v in raw.items()}

    async def result(self, session: str) -> dict[str, Any] | None:
        raw = await self._call(self.client.get, self.keys(session).result)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    async def delete_session(self, session: str, *, keep: tuple[str, ...] = ()) -> None:
        """Remove a session's keys (``keep`` names key attributes to leave, e.g. ``"state"``)."""
        keys = self.keys(session)
        names = [k for k in keys.all() if not any(k == getattr(keys, a) for a in keep)]
        await self._call(self.client.delete, *names)
        # reply lists of the MCP relay, if any were left
        async for key in self.client.scan_iter(match=f"{keys.base}:mcp:reply:*", count=500):
            await self.client.delete(key)

    # -- pool assignment -------------------------------------------------------------------

    async def assign(self, container: str, assignment: Mapping[str, Any]) -> None:
        validate_id(container, "container id")
        key = self.pool_keys.assign(container)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(assignment, ensure_ascii=False))
            pipe.expire(key, 3600)
            await self._call(pipe.execute)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise TransportError(f"Redis at {self.url}: {exc}") from exc


def as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
