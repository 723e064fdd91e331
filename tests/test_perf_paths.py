"""The fast paths behind the benchmarks, tested for correctness (not timed).

A warm container pre-starts the CLI with the agent's default arguments and answers its
start-up MCP handshake with the pool's tools; the claim then reuses that CLI, refreshes its
tools (``list_changed``) for a session with other tools, or restarts it for a session with
other arguments. Real Docker, Redis, CLI 2.1.328 and the scripted API, as in test_spine.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockercc import tool
from dockercc.agent.warmup import WARMUP_PROMPT
from dockercc.client import AsyncPool
from dockercc.events import Event, Result, SystemInit, TextDelta
from dockercc.testing import text, tool_use

pytestmark = pytest.mark.docker


@tool
def lookup(key: str) -> str:
    """Look a key up in the host's table."""
    return f"value-of-{key}"


@tool
def shout(word: str) -> str:
    """Say a word loudly (a tool only one session has)."""
    return word.upper() + "!"


def config(make_config: Any) -> dict[str, Any]:
    # pre-starting the CLI takes a few seconds on a busy 2-core machine
    return make_config(timeouts={"startupMs": 90000})


async def collect(stream: Any) -> list[Event]:
    return [ev async for ev in stream]


async def test_warm_prestarted_cli_serves_a_session_with_host_tools(make_config: Any,
                                                                    api: Any) -> None:
    api.script(tool_use("mcp__host__lookup", {"key": "alpha"}), text("found it ✓"))
    async with AsyncPool(config(make_config), tools=[lookup]) as pool:
        await pool.warm("main", count=1, timeout=180)
        (rec,) = [r for r in await pool.containers.records() if r.status == "warm"]
        cstate = await pool.transport.client.hgetall(pool.transport.pool_keys.container_state(
            rec.id))
        assert cstate.get(b"prestarted") == b"1", cstate
        # its throwaway first turn went to the runner's loopback API, not to the model
        assert cstate.get(b"warmed_up") == b"1", cstate
        assert api.message_requests == []

        s = pool.session()
        events = await collect(s.stream("look up alpha", timeout=120))
        assert s.lease is not None and s.lease.warm and s.lease.container == rec.id
        assert (await s.state()).get("prestarted") == "1"
        init = next(ev for ev in events if isinstance(ev, SystemInit))
        assert "mcp__host__lookup" in init.tools
        assert "value-of-alpha" in api.message_requests[-1].tool_result_text
        # ... and was cleared: the session's conversation starts with its own prompt
        first = api.message_requests[0]
        assert first.last_user_text == "look up alpha"
        assert WARMUP_PROMPT not in json.dumps(first.messages)
        assert not any(WARMUP_PROMPT in json.dumps(r.messages) for r in api.message_requests)
        result = events[-1]
        assert isinstance(result, Result) and result.ok and result.text == "found it ✓"
        assert "".join(ev.text for ev in events if isinstance(ev, TextDelta)) == "found it ✓"

        # the pre-claim exchange (initialize, get_context_usage, MCP handshake) stayed in
        # the container: the session's output starts with the runner's own events
        buffered = await pool.transport.buffered(s.id)
        assert [e.seq for e in buffered] == list(range(1, len(buffered) + 1))
        assert not any(e.event.get("type") == "control_response"
                       and "categories" in json.dumps(e.event) for e in buffered)
        started = next(e.event for e in buffered if e.event.get("subtype") == "started")
        assert started["prestarted"] is True

        # a second turn in the same CLI
        api.script(text("again fine"))
        assert (await s.ask("and again?", timeout=120)).text == "again fine"
        assert WARMUP_PROMPT not in json.dumps(api.message_requests[-1].messages)
        assert [t["prompt"] for t in await s.history()] == ["look up alpha", "and again?"]
        await s.close(forget=True)


async def test_session_specific_tools_are_refreshed_in_the_prestarted_cli(make_config: Any,
                                                                          api: Any) -> None:
    """Tools the pool did not know when the CLI started reach it through list_changed."""
    api.script(tool_use("mcp__host__shout", {"word": "hey"}), text("shouted"))
    async with AsyncPool(config(make_config), tools=[lookup]) as pool:
        await pool.warm("main", count=1, timeout=180)
        s = pool.session(tools=[shout])
        events = await collect(s.stream("shout hey", timeout=120))
        assert (await s.state()).get("prestarted") == "1"  # the same CLI, not a restart
        init = next(ev for ev in events if isinstance(ev, SystemInit))
        assert {"mcp__host__shout", "mcp__host__lookup"} <= set(init.tools)
        assert "HEY!" in api.message_requests[-1].tool_result_text
        assert isinstance(events[-1], Result) and events[-1].text == "shouted"
        await s.close(forget=True)


async def test_session_with_other_arguments_restarts_the_cli(make_config: Any,
                                                             api: Any) -> None:
    api.script(text("from a fresh CLI"))
    async with AsyncPool(config(make_config)) as pool:
        await pool.warm("main", count=1, timeout=180)
        s = pool.session(model="claude-sonnet-4-5", include_partial_messages=False)
        result = await s.ask("which model?", timeout=120)
        assert result.text == "from a fresh CLI"
        assert s.lease is not None and s.lease.warm  # the warm container, a new CLI in it
        assert (await s.state()).get("prestarted") == "0"
        assert api.message_requests[-1].body["model"] == "claude-sonnet-4-5"
        await s.close(forget=True)


async def test_cold_container_starts_the_cli_first_thing(make_config: Any, api: Any) -> None:
    """A new container gets the session's CLI arguments at create time: the CLI starts before
    the runner's imports (dockercc.agent.early) and the runner adopts it."""
    api.script(tool_use("mcp__host__lookup", {"key": "beta"}), text("cold ok"))
    async with AsyncPool(make_config(), tools=[lookup]) as pool:
        s = pool.session()
        result = await s.ask("look up beta", timeout=120)
        assert result.text == "cold ok"
        assert s.lease is not None and not s.lease.warm
        assert (await s.state()).get("prestarted") == "1"
        assert "value-of-beta" in api.message_requests[-1].tool_result_text
        api.script(text("second"))
        assert (await s.ask("again", timeout=120)).text == "second"
        await s.close(forget=True)


async def test_resumed_session_in_a_new_container_is_not_prestarted(make_config: Any,
                                                                     api: Any) -> None:
    """A resume needs the transcript restored before the CLI starts: no early CLI."""
    api.script(text("first life"), text("second life"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session()
        assert (await s.ask("remember me", timeout=120)).text == "first life"
        sid = s.id
        await s.close()
        again = pool.session(resume=sid)
        assert (await again.ask("do you?", timeout=120)).text == "second life"
        assert (await again.state()).get("prestarted") == "0"
        # the resumed CLI sent the earlier turn along
        texts = json.dumps(api.message_requests[-1].body["messages"])
        assert "remember me" in texts and "first life" in texts
        await again.close(forget=True)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_subscription_reader_delivers_every_envelope_in_order(redis_server: Any,
                                                                    prefix: str,
                                                                    protocol: int) -> None:
    """The bulk pub/sub reader behind ``events()``: frames split across socket reads,
    large and non-ASCII payloads, RESP2 and RESP3, nothing lost or reordered."""
    import asyncio

    import redis.asyncio as aioredis

    from dockercc.protocol.envelope import encode_envelope
    from dockercc.storage.connection import RedisTransport

    t = RedisTransport(f"{redis_server.url}?protocol={protocol}", prefix)
    keys = t.keys("fast-reader")
    sizes = [10, 70_000, 3, 1_500_000, 0, 200] * 5 + [40] * 3000
    events = [json.dumps({"type": "stream_event", "i": i, "text": "é✓\r\n" + "x" * n})
              for i, n in enumerate(sizes)]
    got: list[int] = []

    async def read() -> None:
        async for env in t.events("fast-reader"):
            got.append(env.event["i"])
            if len(got) == len(events):
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)  # subscribed (nothing buffered to replay)
    pub = aioredis.from_url(redis_server.url)
    try:
        pipe = pub.pipeline(transaction=False)
        for seq, event in enumerate(events, 1):
            env = encode_envelope(seq, 0, event)
            pipe.rpush(keys.output_buffer, env)
            pipe.publish(keys.output, env)
            if seq % 200 == 0:
                await pipe.execute()
        await pipe.execute()
        await asyncio.wait_for(reader, 60)
    finally:
        reader.cancel()
        await pub.delete(keys.output_buffer)
        await pub.aclose()
        await t.close()
    assert got == list(range(len(events)))


async def test_receive_timeout_is_one_timer_that_never_cancels_the_consumer(
        redis_server: Any, prefix: str) -> None:
    """receive(timeout=...) arms one timer per turn. It raises TimeoutError while waiting for
    an envelope, and when it fires while the consumer is busy with an event, the consumer's
    own awaits are not cancelled: the next step raises TimeoutError instead."""
    import asyncio
    import time

    from dockercc.protocol.envelope import encode_envelope

    async with AsyncPool({"redis": {"url": redis_server.url, "keyPrefix": prefix}},
                         env={}) as pool:
        s = pool.session(session_id="timeouts")
        keys = pool.transport.keys(s.id)
        r = pool.transport.client
        for seq in (1, 2):
            await r.rpush(keys.output_buffer, encode_envelope(seq, 0, json.dumps(
                {"type": "dockercc", "subtype": "warning", "warning": f"w{seq}"})))

        # waiting: nothing more arrives
        t0 = time.monotonic()
        seen = []
        with pytest.raises(TimeoutError, match="within 0.5s"):
            async for ev in s.receive(timeout=0.5):
                seen.append(ev)
        assert 0.45 <= time.monotonic() - t0 < 3 and len(seen) == 2

        # busy: the timer fires during the consumer's own sleep, which completes
        s.last_seq = 0
        slept = 0
        with pytest.raises(TimeoutError):
            async for _ev in s.receive(timeout=0.2):
                await asyncio.sleep(0.4)
                slept += 1
        assert slept == 1

        # no timeout: the consumer's cancellation is a cancellation, not a timeout
        s.last_seq = 2
        task = asyncio.create_task(anext(s.receive(timeout=30)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await r.delete(keys.output_buffer)
        await s.close(forget=True)
