"""The relay between Redis and the CLI's pipes: the session's input (``:input`` moved to
``:input:processing``, removed only once the CLI has it) and its output (every stdout line an
envelope, buffered and published in one ``MULTI`` per batch by a Lua script that makes a
retried batch harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from ..protocol.envelope import encode_envelope
from ..protocol.keys import OUTPUT_BUFFER_MAX, SessionKeys
from .history import Conversation
from .liveness import REDIS_DOWN, PipeOp, RedisLink, now_ms

FAST_PREFIXES = (b'{"type":"stream_event"', b'{"type":"user"')
"""Lines that start so need no parsing: the runner keeps no state from them."""

APPEND_ENVELOPES = """
-- KEYS: output_buffer, output channel; ARGV: first seq, buffer max, envelopes...
-- idempotent: a batch whose first seq the buffer already reached was written before
local last = redis.call('LINDEX', KEYS[1], -1)
if last then
  local seq = tonumber(string.match(last, '^{"seq":(%d+)'))
  if seq and seq >= tonumber(ARGV[1]) then return 0 end
end
for i = 3, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
  redis.call('PUBLISH', KEYS[2], ARGV[i])
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return 1
"""


class Output:
    """The session's output: event lines and state updates queued by everyone, written by
    :meth:`writer_loop` (one pipelined round trip per batch, envelopes numbered by ``seq``).
    Lines queued before a claim wait for it (the writer starts with the session)."""

    def __init__(self, r: aioredis.Redis, link: RedisLink) -> None:
        self.r = r
        self.link = link
        self.queue: asyncio.Queue[tuple[bytes | None, list[PipeOp]]] = asyncio.Queue()
        self.seq = 0  # the last envelope's (the buffer's last one when the runner took over)
        self.keys: SessionKeys | None = None

    def emit(self, line: bytes | str, *ops: PipeOp) -> None:
        """Queue one event line (and pipeline ops that go with it) for the writer."""
        data = line.encode() if isinstance(line, str) else line
        self.queue.put_nowait((data, list(ops)))

    def emit_ops(self, *ops: PipeOp) -> None:
        self.queue.put_nowait((None, list(ops)))

    def set_state(self, **fields: Any) -> PipeOp:
        """An update of the session's state hash (to queue with :meth:`emit` / :meth:`emit_ops`)."""
        assert self.keys is not None
        key = self.keys.state
        mapping = {k: str(v) for k, v in fields.items()}
        return lambda pipe: pipe.hset(key, mapping=mapping)

    def close(self) -> None:
        """The writer ends once it wrote what was queued before this."""
        self.queue.put_nowait((b"", []))

    async def writer_loop(self) -> None:
        """Pipelines queued envelopes and state updates: one round trip per batch."""
        keys = self.keys
        assert keys is not None
        done = False
        while not done:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < 512:
                batch.append(self.queue.get_nowait())
            ops: list[PipeOp] = []
            envs: list[bytes] = []
            ts = now_ms()
            for data, item_ops in batch:
                if data == b"":
                    done = True
                    continue
                ops.extend(item_ops)
                if data is not None:
                    self.seq += 1
                    envs.append(encode_envelope(self.seq, ts, data))
            # One MULTI per batch, rebuilt for every attempt (redis-py empties a pipeline
            # that failed, so re-executing it would silently drop the batch: a seq gap).
            # APPEND_ENVELOPES skips envelopes the buffer already has, so a retry after a
            # lost reply (Redis restart) never duplicates a seq either.
            while True:
                pipe = self.r.pipeline(transaction=True)
                for op in ops:
                    op(pipe)
                if envs:
                    pipe.eval(APPEND_ENVELOPES, 2, keys.output_buffer, keys.output,
                              self.seq - len(envs) + 1, OUTPUT_BUFFER_MAX, *envs)
                try:
                    await pipe.execute()
                    self.link.ok()
                    break
                except REDIS_DOWN as exc:
                    await self.link.failed("writing output", exc, self.r)


class Input:
    """The session's input: each item of ``:input`` moved to ``:input:processing`` (BLMOVE),
    written to the CLI, and only then removed, so a runner or CLI that dies in between loses
    nothing (the next one writes what ``:processing`` still holds first)."""

    def __init__(self, r: aioredis.Redis, link: RedisLink, keys: SessionKeys,
                 write: Callable[[str], Awaitable[bool]], output: Output,
                 conversation: Conversation, tools_ready: asyncio.Event) -> None:
        self.r = r
        self.link = link
        self.keys = keys
        self.write = write
        self.output = output
        self.conversation = conversation
        self.tools_ready = tools_ready  # cleared while a pre-started CLI refreshes its tools
        self._delivered: dict[Any, None] = {}  # ids of the last inputs written (insertion order)
        # what the claim's round trip already took (``:processing`` and the first input moved
        # there): the first prompt reaches the CLI without two more round trips
        self.prefetched: list[Any] | None = None

    async def deliver_prefetched(self) -> None:
        """Write what the claim's round trip took (see :attr:`prefetched`) at once, before
        the runner's other work; :meth:`loop` delivers it otherwise (after a tools refresh,
        or what a failed write left in ``:processing``)."""
        items = self.prefetched
        if not items or not self.tools_ready.is_set():
            return
        self.prefetched = None
        for i, item in enumerate(items):
            if not await self.deliver(item):
                self.prefetched = items[i:]
                return

    async def loop(self) -> None:
        keys = self.keys
        if not self.tools_ready.is_set():  # a tools refresh of a pre-started CLI
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.tools_ready.wait(), 10)
            self.tools_ready.set()
        while True:
            try:
                # inputs a previous runner took but never handed to the CLI come first (and
                # after a Redis outage: one whose BLMOVE happened but whose reply was lost)
                items, self.prefetched = self.prefetched, None
                if items is None:
                    items = await self.r.lrange(keys.processing, 0, -1)
                for item in items:
                    if not await self.deliver(item):
                        return
                while True:
                    taken = await self.r.blmove(keys.input, keys.processing, 1, "LEFT", "RIGHT")
                    if taken is None:
                        continue
                    if not await self.deliver(taken):
                        return
            except REDIS_DOWN as exc:
                await self.link.failed("reading input", exc, self.r)

    async def deliver(self, item: Any) -> bool:
        keys = self.keys
        trace = ""
        try:
            obj = json.loads(item)
            line, input_id = obj["line"], obj.get("id")
            trace = obj.get("traceparent") or ""
        except (ValueError, KeyError, TypeError, AttributeError):
            line, input_id = None, None
        if isinstance(input_id, str) and input_id in self._delivered:
            line = None  # pushed twice (the host retried an RPUSH whose reply a Redis restart
            #              lost): the CLI had it once, that is enough
        if line is not None and not await self.write(line):
            return False  # stays in :processing for the next CLI / runner
        if line is not None and isinstance(input_id, str):
            if len(self._delivered) >= 1024:
                self._delivered.pop(next(iter(self._delivered)))
            self._delivered[input_id] = None
        while True:  # the CLI has it: it must leave :processing, or it would be sent again
            try:
                await self.r.lrem(keys.processing, 1, item)
                break
            except REDIS_DOWN as exc:
                await self.link.failed("acknowledging input", exc, self.r)
        if line is not None and line.startswith('{"type":"control_request"'):
            return True  # (set_model / set_permission_mode: no turn, no result)
        if line is not None:
            self.conversation.took_prompt(line, trace)
            self.output.emit_ops(self.output.set_state(status="busy", last_input=now_ms()))
        return True
