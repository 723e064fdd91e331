"""Host-side decoding of what containers write is bounded and never fatal.

Everything a container (or anything else with write access to Redis) can put in front of the
host: output envelopes, registry and session records, MCP relays, history entries, results.
Hostile values (deep nesting, huge strings, wrong types, NaN, lone surrogates) raise only
the typed :class:`BadData` (or decode to "nothing"), and a forged far-ahead ``seq`` cannot
silence a session's real stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockercc._mapper import EventMapper
from dockercc.bridge import HostBridge, tool
from dockercc.builtins import CronJob
from dockercc.client import AsyncPool
from dockercc.errors import BadData
from dockercc.pool.manager import Lease
from dockercc.protocol import bounded, transcript
from dockercc.protocol.envelope import SEQ_WINDOW, Envelope, encode_envelope
from dockercc.storage.connection import RedisTransport
from dockercc.storage.records import ContainerRecord

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=50))
json_values = st.recursive(json_scalars, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
    max_leaves=20)
KEYS = ["seq", "ts", "event", "id", "name", "spec", "status", "owner", "created", "agent",
        "session", "warm", "request_id", "message", "lease_token", "container", "type",
        "subtype", "text"]
shaped = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8).map(json.dumps)


def deep(n: int, kind: str) -> str:
    return {"list": "[" * n + "]" * n,
            "dict": '{"a":' * n + "1" + "}" * n,
            "env": '{"seq":1,"ts":1,"event":' + '{"a":' * n + "1" + "}" * n + "}"}[kind]


hostile = st.one_of(
    shaped,
    json_values.map(json.dumps),
    st.builds(deep, st.integers(60, 50_000), st.sampled_from(["list", "dict", "env"])),
    st.sampled_from([
        "NaN", "Infinity", '{"seq": NaN, "event": {}}', '{"seq": 1e400, "event": {}}',
        '{"seq": "1", "event": {}}', '{"seq": true, "event": {}}', '{"seq": 1, "event": []}',
        '{"seq": 9223372036854775807999, "event": {}}', '"\\ud800"',
        '{"seq": 1, "event": {"type": "\\udfff\\ud800"}}', "", " ", "\x00", "{", "[]"]),
    st.binary(max_size=200),
    st.text(max_size=200),
    st.integers(1, 3).map(lambda k: '{"seq": 1, "event": {"t": "' + "x" * (k << 23) + '"}}'),
)


def timed(fn: Any, *args: Any) -> Any:
    t0 = time.monotonic()
    try:
        return fn(*args)
    finally:
        assert time.monotonic() - t0 < 5, f"{fn.__qualname__} took too long"


@FUZZ
@given(hostile)
def test_every_host_decoder_takes_hostile_data(raw: Any) -> None:
    env = timed(Envelope.decode, raw)
    if env is not None:
        assert type(env.seq) is int and 0 <= env.seq <= 2**53 and isinstance(env.event, dict)
        timed(EventMapper("s").map, env)  # the events of any decodable envelope
    assert timed(ContainerRecord.decode, raw) is None or True
    for decoder in (bounded.loads, bounded.loads_object, ContainerRecord.validate):
        try:
            timed(decoder, raw)
        except BadData:
            pass
    assert isinstance(timed(bounded.loads_record, raw), dict)
    try:
        timed(transcript.check_meta, raw)
    except BadData:
        pass
    try:
        timed(CronJob.model_validate_json, raw)
    except ValueError:  # pydantic's ValidationError
        pass


@FUZZ
@given(hostile)
def test_the_bridge_answers_hostile_messages_with_errors(raw: Any) -> None:
    @tool
    def echo(x: str) -> str:
        """Echo."""
        return x

    bridge = HostBridge([echo])
    reply = asyncio.run(asyncio.wait_for(bridge.handle(raw), 10))
    assert isinstance(reply, dict)


def test_deep_nesting_is_bad_data_not_a_recursion_error() -> None:
    for raw in (deep(100_000, "list"), deep(100_000, "dict"), deep(100_000, "env")):
        assert Envelope.decode(raw) is None
        with pytest.raises(BadData):
            bounded.loads(raw)
        with pytest.raises(BadData):
            ContainerRecord.validate(raw)
        assert ContainerRecord.decode(raw) is None
    assert Envelope.decode(b'{"seq":1,"ts":1,"event":{"t":"' + b"x" * (17 << 20) + b'"}}') is None
    assert Envelope.decode('{"seq": 1.5, "event": {}}') is None
    assert Envelope.decode('{"seq": -1, "event": {}}') is None
    assert Envelope.decode('{"seq": ' + str(2**62) + ', "event": {}}') is None


# -- with Redis ---------------------------------------------------------------------------

def env(seq: int, text: str) -> bytes:
    return encode_envelope(seq, 1, json.dumps({"type": "dockercc", "subtype": "note",
                                               "text": text}))


async def test_a_forged_far_ahead_seq_does_not_silence_the_stream(redis_server: Any,
                                                                   prefix: str) -> None:
    t = RedisTransport(redis_server.url, prefix)
    keys = t.keys("victim")
    r = t.client
    try:
        await r.rpush(keys.output_buffer, env(1, "one"))
        stream = await t.subscribe("victim", 0)
        forged = [env(1 + SEQ_WINDOW + 5, "forged"), env(2**62, "forged"),
                  b'{"seq":"3","ts":1,"event":{}}', deep(5000, "env").encode()]
        for payload in [*forged, env(2, "two"), env(3, "three")]:
            await r.rpush(keys.output_buffer, payload)
            await r.publish(keys.output, payload)
        got = []
        async with asyncio.timeout(10):
            async for item in stream:
                got.append(item.seq)
                if item.seq == 3:
                    break
        await stream.aclose()
        assert got == [1, 2, 3]
        # a reader of a new session (empty buffer) does not take a forged first envelope
        fresh = await t.subscribe("fresh", 0)
        fkeys = t.keys("fresh")
        for payload in (env(2**62, "forged"), env(1, "one")):
            await r.publish(fkeys.output, payload)
        async with asyncio.timeout(10):
            assert (await anext(fresh)).seq == 1
        await fresh.aclose()
        # a reader that starts late, from the buffer, skips them too
        late = await t.subscribe("victim", 1)
        async with asyncio.timeout(10):
            assert [(await anext(late)).seq, (await anext(late)).seq] == [2, 3]
        await late.aclose()
    finally:
        await r.delete(*[k async for k in r.scan_iter(match=f"{prefix}*")] or ["x"])
        await t.close()


async def test_mcp_requests_are_answered_only_for_the_current_lease(redis_server: Any,
                                                                     prefix: str) -> None:
    @tool
    def secret() -> str:
        """The host's secret."""
        return "host-secret-value"

    cfg = {"redis": {"url": redis_server.url, "keyPrefix": prefix}}
    pool = AsyncPool(cfg)
    s = pool.session("main", session_id="mcp-tie", tools=[secret])
    s._bridge = HostBridge([secret])
    s._lease_token = "t" * 32
    s.lease = Lease(container="c0ffeec0ffee", name="n", warm=False, spec="x", claim_ms=0)
    r = pool.transport.client
    relay = pool.transport.sessions.mcp_relay(s.id)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "secret", "arguments": {}}}

    async def ask(req: Any, rid: str) -> bool:
        raw = req if isinstance(req, (str, bytes)) else json.dumps(req)
        await s._answer(relay, raw)
        return bool(await r.exists(s.keys.mcp_reply(rid)))

    try:
        good = {"request_id": "r-good", "message": call, "container": "c0ffeec0ffee",
                "lease_token": "t" * 32}
        assert await ask(good, "r-good")
        reply = await r.lpop(s.keys.mcp_reply("r-good"))
        assert b"host-secret-value" in reply
        assert not await ask({**good, "request_id": "r1", "lease_token": "x" * 32}, "r1")
        assert not await ask({**good, "request_id": "r2", "container": "deadbeefdead"}, "r2")
        no_token = {k: v for k, v in good.items() if k != "lease_token"}
        assert not await ask({**no_token, "request_id": "r3"}, "r3")
        assert not await ask({**good, "request_id": "../../x"}, "../../x")
        assert not await ask({**good, "request_id": "r4", "message": "[" * 5000}, "r4")
        await s._answer(relay, deep(50_000, "dict"))  # dropped, not raised
        await s._answer(relay, b"\xff\xfe")
    finally:
        await r.delete(*[k async for k in r.scan_iter(match=f"{prefix}*")] or ["x"])
        await relay.aclose()
        await pool.transport.close()
