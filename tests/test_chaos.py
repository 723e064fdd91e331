"""Faults: containers killed mid-stream and between turns, Redis restarted mid-stream and down
for longer than the heartbeat window, prompts queued on a container that died.

The big one (:func:`test_chaos_run`) is ``benchmarks/chaos.py`` at the suite's size: 10
sessions x 5 turns, 3 ``docker kill``s of busy containers and one Redis restart while several
sessions stream. Redis runs with an append-only file (``appendfsync always``): a restart
keeps every acknowledged write only if Redis persists, so production Redis must persist too
(docs/reliability.md). Everything runs on loopback and is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PREFIXES

from benchmarks.chaos import ChaosRun, ChaosSettings
from dockercc.client import AsyncPool
from dockercc.errors import ContainerLost, DockerCCError, TransportError
from dockercc.events import Result, TextDelta
from dockercc.pool.backend import LABEL
from dockercc.protocol import control
from dockercc.protocol.envelope import Envelope
from dockercc.testing import RedisServer, text

pytestmark = pytest.mark.docker


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path, appendonly=True) as server:
        yield server


@pytest.fixture
def chaos_prefix(aof_redis: RedisServer) -> Iterator[str]:
    """A key prefix on the AOF Redis; the test must leave no key and no container under it."""
    import uuid

    p = f"x{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(p)
    yield p
    left = aof_redis.keys(f"{p}*")
    assert not left, f"test leaked Redis keys: {left}"


def config(redis: RedisServer, api: Any, image: str, prefix: str, **timeouts: int) -> dict[str, Any]:
    return {
        "image": image,
        "redis": {"url": redis.url, "keyPrefix": prefix},
        "docker": {"network": "host"},
        "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
        "resources": {"memory": "1g", "cpus": 1},
        "timeouts": {"healthIntervalMs": 500, "startupMs": 60000, "staleAfterMisses": 6,
                     **timeouts},
        "pool": {"acquireTimeoutMs": 60000},
    }


def kill(docker_client: Any, prefix: str, session: str) -> str:
    """``docker kill`` the container serving ``session`` (found by our prefix label)."""
    found = docker_client.containers.list(filters={"label": [
        f"{LABEL}.prefix={prefix}", f"{LABEL}.session={session}"]})
    assert len(found) == 1, found
    found[0].kill()
    return str(found[0].name)


async def buffer_seqs(pool: AsyncPool, session: str) -> list[int]:
    raw = await pool.transport.client.lrange(pool.transport.keys(session).output_buffer, 0, -1)
    return [e.seq for e in (Envelope.decode(x) for x in raw) if e is not None]


async def wait_status(pool: AsyncPool, session: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await pool.transport.state(session)).get("status") == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{session} never became {status!r}: {await pool.transport.state(session)}")


@pytest.mark.timeout(900)
async def test_chaos_run(aof_redis: RedisServer, api: Any, agent_image: str,
                         docker_client: Any) -> None:
    """10 sessions x 5 turns, 3 kills of streaming containers, 1 Redis restart mid-stream:
    0 lost inputs, 0 seq gaps / duplicates, every affected caller got a typed error or a
    transparent resume, 0 containers and 0 keys left."""
    settings = ChaosSettings(sessions=10, turns=5, kills=3, redis_restarts=1, max_total=10,
                             health_interval_ms=500, run_timeout_s=420, image=agent_image,
                             seed=7)
    run = ChaosRun(settings, redis=aof_redis, api=api)
    TEST_PREFIXES.add(run.prefix)
    report = await run.run()
    print("\n" + report.summary())
    print("\n".join(report.incidents))
    assert report.kills == 3 and report.kills_mid_stream == 3, report.faults
    assert report.redis_restarts == 1 and report.streams_during_redis_restart >= 1
    assert report.turns_completed == 50
    assert report.inputs_sent == report.inputs_seen_by_api + report.inputs_failed_typed
    assert report.lost_inputs == 0 and report.inputs_left_in_queues == 0
    assert report.inputs_run_twice == 0
    assert report.buffer_seq_gaps == 0 and report.buffer_seq_dups == 0
    assert report.observer_seq_gaps == 0 and report.observer_seq_dups == 0
    assert report.caller_seq_dups == 0
    assert report.untyped_errors == [] and report.hangs == 0
    assert report.affected_callers >= 4 and report.affected_unaccounted == []
    assert report.affected_typed_error + report.affected_transparent == report.affected_callers
    # a kill mid-stream is a lost turn: the caller is told (ContainerLost), then resumes
    assert report.typed_errors.get("ContainerLost", 0) >= 3
    assert report.context_kept == report.context_checked
    assert report.containers_left == 0 and report.keys_left == 0
    assert report.ok, report.failures()


async def test_kill_mid_stream_is_container_lost_then_the_conversation_resumes(
        aof_redis: RedisServer, api: Any, agent_image: str, docker_client: Any,
        chaos_prefix: str) -> None:
    api.on("remember", text("noted: the code word is heliotrope"))
    api.on("count", text("one two three four five six seven eight nine ten", delay=0.3))
    api.on("again", text("answered again"))
    async with AsyncPool(config(aof_redis, api, agent_image, chaos_prefix)) as pool:
        s = pool.session(session_id="kill-mid")
        assert (await s.ask("remember the code word", timeout=120)).ok
        first = s.lease
        await s.send("count slowly")
        name = ""
        with pytest.raises(ContainerLost) as info:
            async for ev in s.receive(timeout=60):
                if isinstance(ev, TextDelta) and not name:
                    name = await asyncio.to_thread(kill, docker_client, chaos_prefix, s.id)
        assert name and f"container {name} lost" in str(info.value)
        result = await s.ask("again please", timeout=120)
        assert result.text == "answered again"
        assert s.lease is not None and first is not None and s.lease.container != first.container
        # the new container's CLI got the conversation so far (transcript restored)
        assert "heliotrope" in json.dumps(api.message_requests[-1].messages)
        seqs = await buffer_seqs(pool, s.id)
        assert seqs == list(range(1, len(seqs) + 1))
        await s.close(forget=True)


async def test_kill_between_turns_resumes_transparently(
        aof_redis: RedisServer, api: Any, agent_image: str, docker_client: Any,
        chaos_prefix: str) -> None:
    """A container lost while idle costs the caller nothing: the next prompt runs in a new
    container, without a ContainerLost that belongs to no turn."""
    api.on("remember", text("noted: the code word is marigold"))
    api.on("what was", text("it was marigold"))
    async with AsyncPool(config(aof_redis, api, agent_image, chaos_prefix)) as pool:
        s = pool.session(session_id="kill-idle")
        assert (await s.ask("remember the code word", timeout=120)).ok
        await asyncio.to_thread(kill, docker_client, chaos_prefix, s.id)
        await wait_status(pool, s.id, "lost")
        result = await s.ask("what was the code word?", timeout=120)
        assert result.text == "it was marigold"
        assert "marigold" in json.dumps(api.message_requests[-1].messages[:-1])
        seqs = await buffer_seqs(pool, s.id)
        assert seqs == list(range(1, len(seqs) + 1))
        await s.close(forget=True)


async def test_prompt_queued_on_a_dead_container_is_dropped_and_reported(
        aof_redis: RedisServer, api: Any, agent_image: str, docker_client: Any,
        chaos_prefix: str) -> None:
    """A prompt sent to a container that died before it took it: the caller is told
    (ContainerLost says it was dropped), and it never runs later on top of the one sent
    again (the CLI would merge queued prompts into one turn)."""
    api.on("first", text("first answer"))
    api.on("lonely", text("should never be answered"))
    api.on("resent", text("answer to the resent prompt"))
    # the health monitor looks at start and then only when the test asks it to
    cfg = config(aof_redis, api, agent_image, chaos_prefix, healthIntervalMs=600000)
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id="queued-dead")
        assert (await s.ask("first", timeout=120)).ok
        # Docker's events would make the loss known at once (the prompt would go to a new
        # container): this is the fallback, a loss the pool learns of only by polling
        watch, pool.containers._watch = pool.containers._watch, None
        if watch is not None:
            await asyncio.to_thread(watch.close)
        await asyncio.to_thread(kill, docker_client, chaos_prefix, s.id)
        await s.send("a lonely prompt")  # the pool does not know yet: it goes to :input
        keys = pool.transport.keys(s.id)
        assert await pool.transport.client.llen(keys.input) == 1
        await pool.containers.check()
        with pytest.raises(ContainerLost) as info:
            async for _ in s.receive(timeout=30):
                pass
        assert "1 prompt(s) not yet answered were dropped" in str(info.value)
        result = await s.ask("the resent prompt", timeout=120)
        assert result.text == "answer to the resent prompt"
        assert not any("lonely" in r.last_user_text for r in api.message_requests)
        assert await pool.transport.client.llen(keys.input) == 0
        await s.close(forget=True)


async def test_redis_restart_mid_stream_is_transparent(
        aof_redis: RedisServer, api: Any, agent_image: str, chaos_prefix: str,
        docker_client: Any) -> None:
    words = " ".join(f"w{i}" for i in range(16))
    api.on("stream", text(words, delay=0.15))
    api.on("after", text("after the restart"))
    async with AsyncPool(config(aof_redis, api, agent_image, chaos_prefix)) as pool:
        s = pool.session(session_id="redis-restart")
        await s.start()
        seen: list[int] = []

        async def observe() -> None:  # a second reader, e.g. a dashboard
            async for env in pool.transport.events(s.id, 0):
                seen.append(env.seq)

        observer = asyncio.create_task(observe())
        deltas: list[str] = []
        result = None
        await s.send("stream for me")
        async for ev in s.receive(timeout=120):
            if isinstance(ev, TextDelta):
                deltas.append(ev.text)
                if len(deltas) == 3:
                    await asyncio.to_thread(aof_redis.restart, 0.5)
            if isinstance(ev, Result):
                result = ev
        assert aof_redis.restarts == 1
        assert result is not None and result.ok and result.text == words
        assert "".join(deltas) == words  # every delta once, in order
        assert (await s.ask("and after?", timeout=120)).text == "after the restart"
        seqs = await buffer_seqs(pool, s.id)
        assert seqs == list(range(1, len(seqs) + 1))
        deadline = time.monotonic() + 10
        while (not seen or seen[-1] < seqs[-1]) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        observer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await observer
        assert seen == seqs
        await s.close(forget=True)


async def test_redis_outage_longer_than_the_heartbeat_window_kills_nothing(
        aof_redis: RedisServer, api: Any, agent_image: str, chaos_prefix: str,
        docker_client: Any) -> None:
    """Heartbeats cannot arrive while Redis is down; that is no reason to call every busy
    container lost once it is back."""
    api.on("before", text("before"))
    api.on("after", text("after"))
    lost: list[str] = []
    cfg = config(aof_redis, api, agent_image, chaos_prefix, staleAfterMisses=2)  # 1 s window
    async with AsyncPool(cfg) as pool:
        pool.containers.on_lost(lambda sid, reason: lost.append(reason))
        s = pool.session(session_id="outage")
        assert (await s.ask("before", timeout=120)).ok
        lease = s.lease
        await asyncio.to_thread(aof_redis.restart, 3.0)
        await asyncio.sleep(3)  # several health passes after Redis is back
        assert lost == []
        assert (await s.ask("after", timeout=120)).text == "after"
        assert s.lease is lease
        await s.close(forget=True)


async def test_an_input_pushed_twice_runs_once(
        aof_redis: RedisServer, api: Any, agent_image: str, chaos_prefix: str,
        docker_client: Any) -> None:
    """A Redis restart can lose the reply to an RPUSH that was applied: the client retries
    and the same input (same id) is queued twice. The agent must run it once."""
    api.on("only once", text("ran it"))
    api.on("next", text("next answer"))
    async with AsyncPool(config(aof_redis, api, agent_image, chaos_prefix)) as pool:
        s = pool.session(session_id="twice")
        await s.start()
        item = json.dumps({"id": "input-1", "ts": 0, "line": control.user_message("only once")})
        keys = pool.transport.keys(s.id)
        await pool.transport.client.rpush(keys.input, item, item)
        s._turn_open = True  # (what send() does; we pushed by hand)
        results = [ev async for ev in s.receive(timeout=120) if isinstance(ev, Result)]
        assert [r.text for r in results] == ["ran it"]
        assert (await s.ask("next please", timeout=120)).text == "next answer"
        sent = [json.dumps(r.messages).count("only once") for r in api.message_requests]
        assert max(sent) == 1, sent  # never twice in what the model saw
        assert len([r for r in api.message_requests if r.last_user_text == "only once"]) == 1
        await s.close(forget=True)


async def test_redis_down_for_good_is_a_typed_error(
        aof_redis: RedisServer, api: Any, agent_image: str, chaos_prefix: str,
        docker_client: Any) -> None:
    api.on("before", text("before"))
    async with AsyncPool(config(aof_redis, api, agent_image, chaos_prefix)) as pool:
        s = pool.session(session_id="down")
        assert (await s.ask("before", timeout=120)).ok
        aof_redis.stop()
        try:
            with pytest.raises(TransportError) as info:
                await asyncio.wait_for(s.send("anyone there?"), 60)
            assert isinstance(info.value, DockerCCError)
            assert aof_redis.url.split("//")[1].split("/")[0] in str(info.value)
        finally:
            aof_redis.start()
        await s.close(forget=True)
