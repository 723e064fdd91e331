"""A turn that writes thousands of events at once loses none of them, however late its reader.

The runner keeps only the last 1000 envelopes of a session in ``:output_buffer``; the rest
reach a reader only through its Pub/Sub subscription. So the session subscribes (and reads
its replay position) before the prompt goes out, in ``send()`` (which ``stream()`` and
``ask()`` use), for the ``receive()`` that follows. Real Docker and Redis, with the relay
benchmark's stand-in CLI (benchmarks/fake_cli.py), which writes a burst of text deltas the
moment it reads the prompt.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from dockercc.client import AsyncPool
from dockercc.events import Event, Result, SystemInit, TextDelta, text_of
from dockercc.protocol.envelope import encode_envelope
from dockercc.protocol.keys import OUTPUT_BUFFER_MAX
from dockercc.storage.connection import RedisTransport

docker = pytest.mark.docker

FAKE_CLI = Path(__file__).resolve().parents[1] / "benchmarks" / "fake_cli.py"
BURST = 6000
"""Deltas per turn: six times the replay buffer."""
LATE_S = 1.0
"""How late the reader comes: the burst is all in Redis well before that."""


def fake_cli_config(make_config: Any, tmp_path: Path) -> dict[str, Any]:
    bin_dir = tmp_path / "fakecli"
    bin_dir.mkdir()
    os.chmod(bin_dir, 0o755)
    fake = bin_dir / "claude"
    fake.write_text("#!/usr/bin/python3\n" + FAKE_CLI.read_text())
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IROTH)
    return make_config(docker={"network": "host", "binds": [f"{bin_dir}:/opt/fakecli:ro"],
                               "env": {"DOCKERCC_CLAUDE_BIN": "/opt/fakecli/claude"}})


def assert_whole_burst(events: list[Event], count: int) -> None:
    """Every envelope of the turn arrived, in order: init, message_start, block start, the
    deltas, block stop, message delta, message stop, result, with consecutive seqs."""
    deltas = [ev for ev in events if isinstance(ev, TextDelta)]
    assert len(deltas) == count, f"{count - len(deltas)} of {count} text deltas lost"
    first = deltas[0].seq
    assert [ev.seq for ev in deltas] == list(range(first, first + count))
    init = events[0]
    assert isinstance(init, SystemInit) and init.seq == first - 3
    result = events[-1]
    assert isinstance(result, Result) and result.ok
    assert result.seq == first + count + 3
    assert result.text == f"burst {count} done"
    assert all(ev.text for ev in deltas)


@docker
async def test_fast_turn_loses_no_event_to_a_slow_subscription(
        make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stream(): with subscribing slow (a remote or busy Redis), the whole burst is in Redis
    before the subscription is up. Subscribed before the prompt went out, the session gets
    every event; subscribed after it, it found only the last 1000 in the buffer."""
    from redis.asyncio.client import PubSub

    async with AsyncPool(fake_cli_config(make_config, tmp_path)) as pool:
        seen: list[Event] = []
        s = pool.session(on_event=seen.append)
        assert (await s.ask("burst 10", timeout=120)).text == "burst 10 done"  # CLI is up

        subscribe = PubSub.subscribe

        async def slow_subscribe(self: PubSub, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(LATE_S)
            return await subscribe(self, *args, **kwargs)

        monkeypatch.setattr(PubSub, "subscribe", slow_subscribe)
        events = [ev async for ev in s.stream(f"burst {BURST} nowait", timeout=120)]
        assert_whole_burst(events, BURST)
        assert s.mapper.last_turn is not None and text_of(events) == s.mapper.last_turn.text

        seen.clear()
        result = await s.ask(f"burst {BURST} nowait", timeout=120)  # ask() streams too
        assert_whole_burst(seen, BURST)
        assert result is seen[-1]
        monkeypatch.undo()
        await s.close(forget=True)


@docker
async def test_send_then_late_receive_gets_the_whole_turn(make_config: Any,
                                                         tmp_path: Path) -> None:
    """send() subscribes for the receive() that follows: a caller that reads the turn a
    second after sending it still gets all of it, not just the 1000 buffered envelopes."""
    async with AsyncPool(fake_cli_config(make_config, tmp_path)) as pool:
        s = pool.session()
        assert (await s.ask("burst 10", timeout=120)).text == "burst 10 done"
        await s.send(f"burst {BURST} nowait")
        await asyncio.sleep(LATE_S)
        events = [ev async for ev in s.receive(timeout=120)]
        assert_whole_burst(events, BURST)

        # the next turn reads on from there, with nothing replayed twice
        events = [ev async for ev in s.stream("burst 50", timeout=120)]
        assert_whole_burst(events, 50)
        await s.close(forget=True)


# ------------------------------------------------------------ the transport, without Docker


async def publish(t: RedisTransport, session: str, seqs: range) -> None:
    """What the runner does per batch: RPUSH + PUBLISH each envelope, LTRIM to 1000."""
    keys = t.keys(session)
    pipe = t.client.pipeline(transaction=False)
    for seq in seqs:
        env = encode_envelope(seq, 0, f'{{"type":"stream_event","n":{seq}}}')
        pipe.rpush(keys.output_buffer, env)
        pipe.publish(keys.output, env)
        if seq % 250 == 0:
            pipe.ltrim(keys.output_buffer, -OUTPUT_BUFFER_MAX, -1)
            await pipe.execute()
    pipe.ltrim(keys.output_buffer, -OUTPUT_BUFFER_MAX, -1)
    await pipe.execute()


async def read(stream: Any, until: int) -> list[int]:
    seqs = []
    async for env in stream:
        assert env.event["n"] == env.seq
        seqs.append(env.seq)
        if env.seq == until:
            break
    await stream.aclose()
    return seqs


async def test_subscribe_then_publish_then_read_late_gets_everything(redis_server: Any,
                                                                     prefix: str) -> None:
    """subscribe() returns subscribed, with the replay read: what is published after it
    reaches the reader however late it starts, beyond the 1000 the buffer keeps. events()
    subscribes only when read, so started late it finds just the buffer."""
    t = RedisTransport(redis_server.url, prefix)
    try:
        await publish(t, "late", range(1, 11))  # an earlier turn, read up to seq 5
        sub = await t.subscribe("late", 5)
        lazy = t.events("late", 5)
        await publish(t, "late", range(11, 3011))
        assert await read(sub, 3010) == list(range(6, 3011))
        got = await read(lazy, 3010)  # the old way: subscribed after the publishing
        assert got == list(range(3010 - OUTPUT_BUFFER_MAX + 1, 3011))

        # closing a subscription that was never read releases its connection
        channel = t.keys("late").output
        unread = await t.subscribe("late", 3010)
        assert await t.client.pubsub_numsub(channel) == [(channel.encode(), 1)]
        await unread.aclose()
        for _ in range(100):  # (the server sees the connection close a moment later)
            if await t.client.pubsub_numsub(channel) == [(channel.encode(), 0)]:
                break
            await asyncio.sleep(0.01)
        assert await t.client.pubsub_numsub(channel) == [(channel.encode(), 0)]
    finally:
        await t.client.delete(*t.keys("late").all())
        await t.close()


@pytest.mark.parametrize("after", [0, 1, 2, 500, 984, 985, 986, 1999, 2000, 2001, 5000])
async def test_replay_reads_the_buffer_from_its_end(redis_server: Any, prefix: str,
                                                    after: int) -> None:
    """_replay() gives what buffered() gives after a seq, fetching only what it needs."""
    t = RedisTransport(redis_server.url, prefix)
    try:
        await publish(t, "tail", range(1001, 2001))  # the buffer: seqs 1001..2000
        want = [e.seq for e in await t.buffered("tail", after)]
        assert [e.seq for e in await t._replay("tail", after)] == want
        assert want == [s for s in range(1001, 2001) if s > after]
        # a buffer with a gap in its seqs (a publisher that lost some) and junk in it
        key = t.keys("tail").output_buffer
        await t.client.rpush(key, b"not json", encode_envelope(2100, 0, b'{"n":2100}'))
        want = [e.seq for e in await t.buffered("tail", after)]
        assert [e.seq for e in await t._replay("tail", after)] == want
    finally:
        await t.client.delete(*t.keys("tail").all())
        await t.close()
