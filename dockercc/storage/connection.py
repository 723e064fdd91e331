"""Redis transport (host side): the seed's per-session keys, made reliable.

- input: ``RPUSH {p}{s}:input``; the runner moves each item with BLMOVE into
  ``{p}{s}:input:processing`` and removes it only once the CLI has it.
- output: envelopes ``{seq, ts, event}`` published on ``{p}{s}:output`` and kept in
  ``{p}{s}:output_buffer`` (last 1000). :meth:`RedisTransport.events` subscribes first, then
  replays the buffer, and dedupes by ``seq``, so a late or reconnecting reader misses nothing
  that is still buffered; after a Redis outage it reconnects and replays.
  :meth:`RedisTransport.subscribe` does the subscribing before it returns: subscribe, then
  send, and a turn that writes more than the buffer holds before the reader reads loses
  nothing.
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
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import BadData, TransportError
from ..protocol import bounded
from ..protocol.bounded import MAX_ENVELOPE_BYTES
from ..protocol.envelope import SEQ_WINDOW, Envelope
from ..protocol.keys import (
    DEFAULT_PREFIX,
    OUTPUT_BUFFER_MAX,
    PoolKeys,
    RunKeys,
    SessionKeys,
)
from ..redaction import redact
from .acl import ContainerACL
from .budget import BudgetLedger
from .cron import ChannelStore, CronStore
from .registry import PoolRegistry
from .sentinel import connect
from .sessions import SessionStore
from .values import as_int, as_str, now_ms

log = logging.getLogger("dockercc.transport")  # (the name users filter on)

_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_PUSH_BUFFER_MAX = MAX_ENVELOPE_BYTES + (1 << 20)


def _log_dropped(session: str, seq: int, last: int) -> None:
    log.warning("session %s: envelope seq %d dropped (last seen %d: beyond the window of %d, "
                "not from its runner)", session, seq, last, SEQ_WINDOW)


class _PushReader:
    """The payloads of a subscription's ``message`` pushes, read in bulk.

    redis-py's ``PubSub.get_message(timeout=...)`` costs a timer and a parse through several
    coroutine layers per message, which caps one reader at a few thousand events/s. Once
    subscribed, this reads whatever the socket has (one await per chunk, not per message)
    and splits the RESP2/RESP3 push frames itself. Connection set-up (auth, TLS, db,
    SUBSCRIBE) stays redis-py's. Falls back to ``get_message`` when the connection's stream
    is not reachable.
    """

    def __init__(self, pubsub: Any, channel: str | None = None) -> None:
        # the frame head of a message on ``channel``, RESP2 and RESP3: the common case is
        # one startswith() instead of parsing the array (see _parse)
        self._heads: tuple[bytes, ...] = ()
        if channel is not None:
            name = channel.encode()
            tail = b"3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$" % (len(name), name)
            self._heads = (b"*" + tail, b">" + tail)
        conn = getattr(pubsub, "connection", None)
        stream = getattr(conn, "_reader", None)
        parser = getattr(conn, "_parser", None)
        # only when redis-py holds nothing of its own yet (it has read no reply of the pubsub)
        self._stream: asyncio.StreamReader | None = (
            stream if isinstance(stream, asyncio.StreamReader)
            and not getattr(parser, "_buffer", b"") else None)
        self._pubsub = pubsub
        self._buf = b""

    async def read(self, timeout: float) -> list[bytes] | None:
        """Payloads of the next published messages (at least one); None after ``timeout``
        seconds without any."""
        if self._stream is None:
            msg = await self._pubsub.get_message(timeout=timeout)
            return None if msg is None else [msg["data"]]
        while True:
            out = self._parse()
            if out:
                return out
            try:
                async with asyncio.timeout(timeout):
                    chunk = await self._stream.read(1 << 16)
            except TimeoutError:
                return None
            if not chunk:
                raise RedisConnectionError("Redis closed the subscription")
            self._buf += chunk
            if len(self._buf) > _PUSH_BUFFER_MAX:
                # one message over the envelope limit: not an envelope any reader takes; drop
                # the connection (the reader reconnects and replays from the buffer, where
                # Envelope.decode skips it) rather than buffer without bound
                self._buf = b""
                raise RedisConnectionError(
                    f"a message on the subscription is over {_PUSH_BUFFER_MAX} bytes")

    def _parse(self) -> list[bytes]:
        buf, pos, out = self._buf, 0, []
        n = len(buf)
        heads = self._heads
        skip = len(heads[0]) if heads else 0
        while pos < n:
            start = pos
            if heads and buf.startswith(heads, pos):
                # "*3\r\n$7\r\nmessage\r\n$<n>\r\n<channel>\r\n$<size>\r\n<payload>\r\n"
                eol = buf.find(b"\r\n", pos + skip)
                if eol < 0:
                    break
                size = int(buf[pos + skip:eol])
                if size >= 0:
                    end = eol + 2 + size
                    if end + 2 > n:
                        break
                    out.append(buf[eol + 2:end])
                    pos = end + 2
                    continue
            if buf[pos] not in (42, 62):  # '*' (RESP2 array) or '>' (RESP3 push)
                raise RedisConnectionError(f"unexpected data on a subscription: {buf[pos:pos + 40]!r}")
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            count = int(buf[pos + 1:eol])
            pos = eol + 2
            items: list[bytes] = []
            complete = True
            for _ in range(count):
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    complete = False
                    break
                kind = buf[pos]
                if kind == 36:  # '$' bulk string
                    size = int(buf[pos + 1:eol])
                    if size < 0:
                        items.append(b"")
                        pos = eol + 2
                        continue
                    end = eol + 2 + size
                    if end + 2 > n:
                        complete = False
                        break
                    items.append(buf[eol + 2:end])
                    pos = end + 2
                elif kind in (43, 45, 58, 95):  # '+' ':' '-' '_' (subscribe counts, PONG)
                    items.append(buf[pos + 1:eol])
                    pos = eol + 2
                else:
                    raise RedisConnectionError(f"unexpected reply on a subscription: {buf[pos:pos + 40]!r}")
            if not complete:
                pos = start
                break
            if count == 3 and items[0] == b"message":
                out.append(items[2])
            elif count == 4 and items[0] == b"pmessage":
                out.append(items[3])
        self._buf = buf[pos:]
        return out
RETRIES = 20
"""Retries of one Redis command on a dropped connection (backoff 50 ms doubling to 1 s)."""


def _client_kwargs(identify: bool = True) -> dict[str, Any]:
    """redis-py >= 8 looks its own version up in the package metadata for every client, pool
    and connection it makes (about a ms of CPU each, for ``CLIENT SETINFO``): once is enough.
    Without ``identify`` a connection skips ``CLIENT SETINFO`` (two round trips)."""
    global _DRIVER_INFO
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # older redis-py: nothing to save
        return {} if identify else {"lib_name": None, "lib_version": None}
    if not identify:
        return {"driver_info": None}
    if _DRIVER_INFO is None:
        _DRIVER_INFO = DriverInfo()
    return {"driver_info": _DRIVER_INFO}


_DRIVER_INFO: Any = None


@contextlib.contextmanager
def redis_errors_as_transport_errors(url: str) -> Iterator[None]:
    """Redis gone for longer than the client's retries: a :class:`TransportError` (naming the
    masked ``url``), not redis-py's own error."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise TransportError(f"Redis at {url} is not answering ({exc}); is it running?") from exc


class RedisTransport:
    """Async access to one Redis for a pool and its sessions."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, *,
                 socket_timeout: float | None = None, connect_timeout: float = 5,
                 retries: int = RETRIES) -> None:
        """``retries``: of one command on a dropped connection; 0 for a short-lived look
        (a status page) that must answer at once."""
        if not url.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
            raise TransportError(
                f"unsupported Redis URL {redact(url)!r}: use redis://, rediss://, unix:// "
                "or redis+sentinel://")
        self._url = url
        self.prefix = prefix
        self.pool_keys = PoolKeys(prefix)
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._retries = retries
        self._client: aioredis.Redis | None = None
        self._sub_client: aioredis.Redis | None = None  # the subscriptions' connections
        # one pub/sub connection opened ahead, so the next subscribe (before every prompt)
        # does not wait for a connect; refilled in the background when taken
        self._spare: Any = None
        self._spare_task: asyncio.Task[None] | None = None
        #: the pool registry (containers, warm sets, the fair queue, owners, demand)
        self.registry = PoolRegistry(self)
        #: session-scoped keys beyond the stream: the session registry, state fields,
        #: history, transcripts, the MCP relay, scratch volumes
        self.sessions = SessionStore(self)
        #: the spend ledger and budget admission
        self.budget = BudgetLedger(self)
        #: the built-in tools' state: cron jobs and ``message`` channels
        self.cron = CronStore(self)
        self.channels = ChannelStore(self)

    def container_acl(self, *, db: int | None = None) -> ContainerACL:
        """The manager of the containers' own Redis users, on this connection."""
        return ContainerACL(self.client, self.prefix, db=db)

    def __repr__(self) -> str:
        return f"RedisTransport({redact(self._url)!r}, prefix={self.prefix!r})"

    @property
    def url(self) -> str:
        """The URL with any password masked."""
        return redact(self._url)

    def new_client(self, *, identify: bool = True) -> aioredis.Redis:
        # ride out a Redis restart (~8-16 s of retries) instead of failing the caller; a
        # longer outage surfaces as TransportError
        return connect(self._url, socket_timeout=self._socket_timeout,
                       socket_connect_timeout=self._connect_timeout, health_check_interval=15,
                       retry=Retry(EqualJitterBackoff(cap=1.0, base=0.05), self._retries),
                       **_client_kwargs(identify))

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def keys(self, session: str) -> SessionKeys:
        return SessionKeys(session, self.prefix)

    async def ping(self) -> bool:
        """Is Redis there? Answers at once (no retries), unlike the other commands."""
        probe = connect(self._url, socket_connect_timeout=5,
                                  retry=Retry(EqualJitterBackoff(cap=0.2, base=0.05), 1),
                                  **_client_kwargs())
        try:
            return bool(await probe.ping())
        except (RedisError, OSError) as exc:
            raise TransportError(
                f"Redis at {self.url} is not reachable ({exc}); start it or set REDIS_URL"
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                await probe.aclose()

    async def pong(self) -> None:
        """PING on the pool's own connection (with its timeouts and retries); redis-py's
        error when Redis does not answer."""
        await self.client.ping()

    async def close(self) -> None:
        task, self._spare_task = self._spare_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        spare, self._spare = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):
                await spare.aclose()
        for client in (self._client, self._sub_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._client = self._sub_client = None

    # -- input -----------------------------------------------------------------------------

    async def send_input(self, session: str, message: str | Mapping[str, Any], *,
                         traceparent: str = "") -> str:
        """Queue one stdin line for the session's CLI. Returns the input id. ``traceparent``
        (W3C) goes with the item: the runner sends it back with the turn's MCP requests."""
        line = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
        input_id = uuid.uuid4().hex
        fields: dict[str, Any] = {"id": input_id, "ts": now_ms(), "line": line}
        if traceparent:
            fields["traceparent"] = traceparent
        item = json.dumps(fields, ensure_ascii=False)
        await self.call(self.client.rpush, self.keys(session).input, item)
        return input_id

    async def withdraw_input(self, session: str, input_id: str) -> bool:
        """Take back a queued input no runner serves (its session's claim failed after the
        prompt was queued): removed from ``:input`` and ``:input:processing``."""
        keys = self.keys(session)
        removed = False
        for key in (keys.input, keys.processing):
            for item in await self.call(self.client.lrange, key, 0, -1):
                with contextlib.suppress(ValueError, AttributeError):
                    if json.loads(item).get("id") == input_id:
                        removed = bool(await self.call(self.client.lrem, key, 1, item)) or removed
        return removed

    async def send_control(self, session: str, command: str, **fields: Any) -> int:
        """Publish a control command (``interrupt``, ``stop``); returns how many runners heard it."""
        payload = json.dumps({"type": command, **fields})
        return int(await self.call(self.client.publish, self.keys(session).control, payload))

    # -- output ----------------------------------------------------------------------------

    async def buffered(self, session: str, after_seq: int = 0) -> list[Envelope]:
        raw = await self.call(self.client.lrange, self.keys(session).output_buffer, 0, -1)
        out = []
        for item in raw:
            env = Envelope.decode(item)
            if env is not None and env.seq > after_seq:
                out.append(env)
        return out

    async def _replay(self, session: str, after_seq: int) -> list[Envelope]:
        """The buffered envelopes with ``seq > after_seq``, reading the buffer from its end:
        a reader that is (nearly) up to date costs one short LRANGE, not the whole buffer
        (up to 1000 envelopes, some of them MiBs)."""
        key = self.keys(session).output_buffer
        count = 16
        while True:
            raw = await self.call(self.client.lrange, key, -count, -1)
            out: list[Envelope] = []
            reached = False  # the window holds an envelope the reader already had
            base = after_seq  # with no seq seen yet, the oldest buffered one sets the base
            for item in raw:
                env = Envelope.decode(item)
                if env is None:
                    continue
                if env.seq > after_seq:
                    if base and env.seq > base + SEQ_WINDOW:
                        _log_dropped(session, env.seq, base)
                        continue
                    out.append(env)
                    base = max(base, env.seq)
                else:
                    reached = True
            if reached or len(raw) < count or (out and out[0].seq == after_seq + 1) \
                    or count > OUTPUT_BUFFER_MAX:
                return out
            # seqs increase by one per envelope: at most newest - after_seq are new (more
            # may have arrived meanwhile: then look again)
            count = max(count * 4, out[-1].seq - after_seq + 64) if out else count * 4

    def events(self, session: str, after_seq: int = 0, *,
               reconnect_timeout: float = 30.0) -> AsyncGenerator[Envelope, None]:
        """Every envelope of the session with ``seq > after_seq``, in order, forever.

        Subscribes before it replays the buffer and dedupes by seq, so nothing falls in the
        gap. If Redis goes away it reconnects (for up to ``reconnect_timeout`` seconds) and
        replays from the buffer; then raises :class:`TransportError`. Nothing happens until
        the first envelope is asked for: to catch the output of something you are about to
        send, use :meth:`subscribe`."""
        return cast(AsyncGenerator[Envelope, None],
                    self._envelopes(session, after_seq, reconnect_timeout, primed=False))

    async def subscribe(self, session: str, after_seq: int = 0, *,
                        reconnect_timeout: float = 30.0) -> AsyncGenerator[Envelope, None]:
        """:meth:`events`, returned once it is subscribed and has read the buffer's replay
        position: envelopes published from now on are caught however late the iteration
        starts (Redis keeps them for the subscription, not in the 1000-envelope buffer).
        Subscribe, then send; ``aclose()`` it when done."""
        gen = self._envelopes(session, after_seq, reconnect_timeout, primed=True)
        try:
            await anext(gen)  # the None it yields once subscribed
        except BaseException:
            await gen.aclose()
            raise
        return cast(AsyncGenerator[Envelope, None], gen)

    async def _envelopes(self, session: str, after_seq: int, reconnect_timeout: float, *,
                         primed: bool) -> AsyncGenerator[Envelope | None, None]:
        # primed: yield None once subscribed with the replay read (see subscribe())
        keys = self.keys(session)
        last = after_seq
        down_since: float | None = None
        decode = Envelope.decode
        if self._sub_client is None:
            # one client for all subscriptions: each takes a connection of its pool (a new
            # client per subscription costs about twice as much CPU as the connection). A
            # session subscribes before every prompt: no CLIENT SETINFO on that path.
            self._sub_client = self.new_client(identify=False)
        client = self._sub_client
        while True:
            pubsub = self._take_pubsub(client)
            try:
                await pubsub.subscribe(keys.output)
                replay = await self._replay(session, last)
                if primed:
                    primed = False
                    yield None
                for env in replay:
                    if env.seq > last:
                        last = env.seq
                        yield env
                down_since = None
                reader = _PushReader(pubsub, keys.output)
                while True:
                    batch = await reader.read(1.0)
                    if batch is None:
                        # quiet for a second: make sure nothing was published while the
                        # subscription was silently re-established (a Redis restart)
                        tail = decode(await self.client.lindex(keys.output_buffer, -1) or b"")
                        if tail is not None and last < tail.seq <= last + SEQ_WINDOW:
                            for missed in await self._replay(session, last):
                                if missed.seq > last:
                                    last = missed.seq
                                    yield missed
                        continue
                    for payload in batch:
                        item = decode(payload)
                        if item is None or item.seq <= last:
                            continue
                        if item.seq > last + SEQ_WINDOW:
                            # (with no envelope seen yet the buffer was empty: a runner
                            # starts again from 1 then)
                            _log_dropped(session, item.seq, last)
                            continue
                        if item.seq > last + 1:
                            # a gap (e.g. a reconnect of the publisher): fill it from the buffer
                            for missed in await self._replay(session, last):
                                if missed.seq > last:
                                    last = missed.seq
                                    yield missed
                            if item.seq <= last:
                                continue
                        last = item.seq
                        yield item
            except (*_RETRYABLE, TransportError) as exc:
                # (buffered() wraps a dropped connection in TransportError: retry that too)
                if isinstance(exc, TransportError) and not isinstance(exc.__cause__, _RETRYABLE):
                    raise
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
                    await pubsub.aclose()  # (disconnects its connection)

    def _take_pubsub(self, client: aioredis.Redis) -> Any:
        """A pub/sub for a new subscription: the connected spare if there is one (and a new
        spare is opened in the background), else a fresh one that connects on subscribe."""
        spare, self._spare = self._spare, None
        if self._spare_task is None or self._spare_task.done():
            self._spare_task = asyncio.ensure_future(self._open_spare(client))
        return spare if spare is not None else client.pubsub(ignore_subscribe_messages=True)

    async def _open_spare(self, client: aioredis.Redis) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.connect()
        except Exception:  # Redis away: the next subscribe connects (and retries) itself
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            return
        if self._spare is None and client is self._sub_client:
            self._spare = pubsub
        else:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    # -- state -----------------------------------------------------------------------------

    async def state(self, session: str) -> dict[str, str]:
        raw = await self.call(self.client.hgetall, self.keys(session).state)
        return {as_str(k): as_str(v) for k, v in raw.items()}

    async def result(self, session: str) -> dict[str, Any] | None:
        raw = await self.call(self.client.get, self.keys(session).result)
        if raw is None:
            return None
        try:
            return bounded.loads_object(raw, max_bytes=bounded.MAX_ENVELOPE_BYTES, what="result")
        except BadData:
            return None

    async def delete_session(self, session: str, *, keep: tuple[str, ...] = ()) -> None:
        """Remove a session's keys (``keep`` names key attributes to leave, e.g. ``"state"``)."""
        keys = self.keys(session)
        names = [k for k in keys.all() if not any(k == getattr(keys, a) for a in keep)]
        await self.call(self.client.delete, *names)
        # reply lists of the MCP relay, if any were left
        async for key in self.client.scan_iter(match=f"{keys.base}:mcp:reply:*", count=500):
            await self.client.delete(key)

    # -- named map runs (dockercc.batch) ---------------------------------------------------

    async def run_items(self, run: str) -> dict[int, dict[str, Any]]:
        """The finished items of a named ``pool.map`` run: index -> record (records that do
        not parse are dropped: that item runs again)."""
        raw = await self.call(self.client.hgetall, RunKeys(run, self.prefix).items)
        out: dict[int, dict[str, Any]] = {}
        for field, value in raw.items():
            index = as_int(field, -1)
            if index < 0:
                continue
            try:
                out[index] = bounded.loads_object(value, max_bytes=bounded.MAX_ENVELOPE_BYTES,
                                                  what="run item")
            except BadData:
                continue
        return out

    async def save_run_item(self, run: str, index: int, record: Mapping[str, Any], *,
                            retention_s: int) -> None:
        """Keep one finished item of a named run; the run's hash expires ``retention_s``
        after its last write."""
        key = RunKeys(run, self.prefix).items
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, str(index), json.dumps(record, ensure_ascii=False, default=str))
            pipe.expire(key, max(1, int(retention_s)))
            await self.call(pipe.execute)

    async def delete_run(self, run: str) -> bool:
        """Forget a named run's finished items (the next call with that name starts over)."""
        return bool(await self.call(self.client.delete, RunKeys(run, self.prefix).items))

    # -- the session registry ({p}sessions) -----------------------------------------------

    @property
    def sessions_key(self) -> str:
        """The shared session registry: session id -> its record (every process's)."""
        return self.pool_keys.sessions

    async def session_records(self) -> dict[str, dict[str, Any]]:
        """Every entry of the session registry, id -> record (agent, owner, tenant, parent,
        created), by id. A record that does not decode is ``{}``: its id is still a
        registered session. The one reader of the registry (the pool, ``dockercc
        sessions`` and ``gc``, the built-in tools)."""
        raw = await self.call(self.client.hgetall, self.sessions_key)
        return {as_str(k): bounded.loads_record(v)
                for k, v in sorted(raw.items(), key=lambda kv: as_str(kv[0]))}

    async def session_record(self, session: str) -> dict[str, Any] | None:
        """One session's registry record (``{}`` if it does not decode); None if absent."""
        raw = await self.call(self.client.hget, self.sessions_key, session)
        return None if raw is None else bounded.loads_record(raw)

    # -- pool assignment -------------------------------------------------------------------

    async def assign(self, container: str, assignment: Mapping[str, Any], *,
                     before: Sequence[Any] = ()) -> None:
        """Hand a warm runner its session (see :meth:`PoolRegistry.assign`)."""
        await self.registry.assign(container, assignment, before=before)

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``await fn(*args)``, a Redis error as :class:`TransportError`."""
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise TransportError(f"Redis at {self.url}: {exc}") from exc

