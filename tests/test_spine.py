"""The spine: Python -> Redis -> container -> real Claude Code CLI -> Redis -> Python.

Real Docker, real Redis, the real CLI 2.1.328 in the agent image, the scripted Messages API.
These tests drive the seed's Redis keys directly (RPUSH input, read output / output_buffer /
state / result) with a container the pool started.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from dockercc.client import AsyncPool
from dockercc.protocol import control
from dockercc.protocol.envelope import Envelope
from dockercc.testing import text, tool_use

pytestmark = pytest.mark.docker


async def turn(pool: AsyncPool, session: str, prompt: str, after: int = 0,
               timeout: float = 60) -> list[Envelope]:
    """RPUSH a prompt to the seed's input key; collect envelopes until the result."""
    t = pool.transport
    await t.send_input(session, control.user_message(prompt))
    out: list[Envelope] = []

    async def collect() -> None:
        async for env in t.events(session, after):
            out.append(env)
            if env.event.get("type") == "result":
                return

    await asyncio.wait_for(collect(), timeout)
    return out


def types(envs: list[Envelope]) -> list[str]:
    return [e.event.get("type", "") for e in envs]


async def test_prompt_streams_deltas_and_result_through_redis(make_config: Any, api: Any,
                                                              redis_server: Any) -> None:
    api.script(text("héllo wörld ✓ — 你好 🚀"))
    async with AsyncPool(make_config()) as pool:
        async with pool.session(session_id="spine-1") as s:
            envs = await turn(pool, s.id, "say hi ✓")
            seqs = [e.seq for e in envs]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            deltas = [e.event["event"]["delta"]["text"] for e in envs
                      if e.event.get("type") == "stream_event"
                      and e.event["event"].get("type") == "content_block_delta"]
            assert len(deltas) >= 3, "the reply must stream in several deltas"
            assert "".join(deltas) == "héllo wörld ✓ — 你好 🚀"
            result = envs[-1].event
            assert result["subtype"] == "success" and result["is_error"] is False
            assert result["result"] == "héllo wörld ✓ — 你好 🚀"
            # the seed's other keys
            stored = await pool.transport.result(s.id)
            assert stored is not None and stored["result"] == result["result"]
            # unicode reached the model intact
            assert api.message_requests[-1].last_user_text == "say hi ✓"

            # the seed's troubleshooting commands, verbatim (plus the test server's port)
            prefix = pool.config.redis.key_prefix
            state = redis_server.cli("hgetall", f"{prefix}{s.id}:state").splitlines()
            fields = dict(zip(state[::2], state[1::2], strict=False))
            assert fields["status"] == "idle"
            assert fields["container"] == s.lease.container  # type: ignore[union-attr]
            assert int(fields["heartbeat"]) > 0
            assert fields["claude_session_id"] == result["session_id"]
            buffered = redis_server.cli("lrange", f"{prefix}{s.id}:output_buffer", "0", "-1")
            lines = [json.loads(x) for x in buffered.splitlines() if x.strip()]
            assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
            assert lines[-1]["event"]["type"] == "result"
        await s.close(forget=True)


async def test_bash_runs_inside_the_container_as_uid_1000(make_config: Any, api: Any) -> None:
    api.script(tool_use("Bash", {"command": "echo hi-from-bash && id -u && hostname"}),
               text("ran it"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        result = await s.ask("run it")
        assert result.text == "ran it"
        tool_output = api.message_requests[-1].tool_result_text
        assert "hi-from-bash" in tool_output
        assert "\n1000\n" in tool_output + "\n", tool_output
        await s.close(forget=True)


async def test_interrupt_mid_stream_then_second_turn(make_config: Any, api: Any) -> None:
    api.on("count slowly", text("one two three four five six seven eight nine ten",
                                delay=0.3))
    api.on("second turn", text("second answer"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session()
        await s.send("count slowly")
        deltas = 0
        result = None
        async for ev in s.receive(timeout=60):
            if type(ev).__name__ == "TextDelta":
                deltas += 1
                if deltas == 2:
                    await s.interrupt()
            if type(ev).__name__ == "Result":
                result = ev
        assert result is not None
        assert result.interrupted and result.subtype == "error_during_execution"
        assert deltas < 10
        again = await s.ask("second turn", timeout=60)
        assert again.text == "second answer" and again.ok
        await s.close(forget=True)


async def test_host_mcp_tool_listed_and_called(make_config: Any, api: Any) -> None:
    from dockercc import tool

    calls: list[str] = []

    @tool
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        calls.append(key)
        return f"value-of-{key}"

    api.script(tool_use("mcp__host__lookup", {"key": "alpha"}), text("found it"))
    async with AsyncPool(make_config(), tools=[lookup]) as pool:
        s = pool.session()
        events = [ev async for ev in s.stream("look up alpha", timeout=60)]
        init = next(ev for ev in events if type(ev).__name__ == "SystemInit")
        assert "mcp__host__lookup" in init.tools  # type: ignore[attr-defined]
        assert calls == ["alpha"]
        # the tool's answer reached the model in the next API request
        assert "value-of-alpha" in api.message_requests[-1].tool_result_text
        result = events[-1]
        assert type(result).__name__ == "Result" and result.text == "found it"  # type: ignore[attr-defined]
        await s.close(forget=True)


async def test_five_megabyte_tool_output_does_not_break_the_stream(make_config: Any,
                                                                    api: Any) -> None:
    cmd = "head -c 5000000 /dev/zero | tr '\\0' 'x'; echo; echo END-OF-BIG"
    api.script(tool_use("Bash", {"command": cmd}), text("big done ✓"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        result = await s.ask("make a big output", timeout=120)
        assert result.text == "big done ✓"
        # the next turn still works
        api.script(text("still fine"))
        assert (await s.ask("and now?", timeout=60)).text == "still fine"
        await s.close(forget=True)


async def test_input_taken_by_a_dead_runner_is_delivered_after_restart(
        make_config: Any, api: Any) -> None:
    """A runner that BLMOVEd an input into :input:processing and died before writing it to
    the CLI loses nothing: the next runner for the session delivers it first."""
    api.on("lost prompt", text("recovered"))
    async with AsyncPool(make_config()) as pool:
        t = pool.transport
        sid = "spine-recover"
        keys = t.keys(sid)
        await t.send_input(sid, control.user_message("the lost prompt"))
        # what a runner does before it dies: the input is now only in :processing
        moved = await t.client.lmove(keys.input, keys.processing, "LEFT", "RIGHT")
        assert moved is not None and await t.client.llen(keys.input) == 0
        s = pool.session(session_id=sid)
        await s.start()
        result = None
        async for ev in s.receive(timeout=60):
            if type(ev).__name__ == "Result":
                result = ev
        assert result is not None and result.text == "recovered"
        assert await t.client.llen(keys.processing) == 0
        assert any(r.last_user_text == "the lost prompt" for r in api.message_requests)
        await s.close(forget=True)


async def test_inputs_queued_before_the_claim_reach_the_cli_once_in_order(
        make_config: Any, api: Any) -> None:
    """The runner takes what the session queued in its claim round trip (an input a dead
    runner left in :processing first, then the next one of :input) and writes it at once:
    each prompt reaches the CLI once, in order, and nothing stays queued. (Two prompts the
    CLI reads before its turn starts become one user message: the CLI's own behaviour.)"""
    api.on("first queued", text("one"))
    api.on("second queued", text("two"))
    first, second = "the first queued prompt", "the second queued prompt"
    async with AsyncPool(make_config()) as pool:
        t = pool.transport
        sid = "spine-prefetch"
        keys = t.keys(sid)
        await t.send_input(sid, control.user_message(first))
        await t.client.lmove(keys.input, keys.processing, "LEFT", "RIGHT")
        await t.send_input(sid, control.user_message(second))
        s = pool.session(session_id=sid)
        await s.start()
        results = []
        while not results or second not in "\n".join(r.last_user_text
                                                      for r in api.message_requests):
            async for ev in s.receive(timeout=60):
                if type(ev).__name__ == "Result":
                    results.append(ev)
        asked = "\n".join(r.last_user_text for r in api.message_requests)
        assert asked.count(first) == 1 and asked.count(second) == 1
        assert asked.index(first) < asked.index(second)
        assert await t.client.llen(keys.processing) == 0
        assert await t.client.llen(keys.input) == 0
        await s.close(forget=True)


async def test_a_used_id_is_refused_in_one_step_and_not_registered(
        make_config: Any) -> None:
    """A new session whose id has any key of a session (here only an output buffer) is
    refused (SessionExists) by the same Lua step that would register it: nothing of it is
    registered or claimed."""
    from dockercc.errors import SessionExists

    async with AsyncPool(make_config()) as pool:
        t = pool.transport
        sid = "spine-used-id"
        await t.client.rpush(t.keys(sid).output_buffer, b"x")
        try:
            with pytest.raises(SessionExists, match="already has keys"):
                await pool.session(session_id=sid).start()
            assert not await t.client.hexists(t.pool_keys.sessions, sid)
            assert not await t.client.exists(t.keys(sid).state)
            assert (await pool.containers.stats()).claims == 0
        finally:
            await t.client.delete(t.keys(sid).output_buffer)


async def test_cli_death_is_reported_and_the_cli_restarts_with_resume(
        make_config: Any, api: Any, docker_client: Any) -> None:
    from dockercc.errors import ContainerLost
    from dockercc.pool.backend import LABEL

    api.on("remember", text("noted: heron"))
    api.on("slow", text(" ".join(["tick"] * 40), delay=0.2))
    api.on("which bird", text("it was heron"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session()
        await s.ask("remember heron", timeout=60)
        assert s.lease is not None
        container, = docker_client.containers.list(
            filters={"label": f"{LABEL}.container={s.lease.container}"})
        await s.send("slow count")
        killed = False
        with pytest.raises(ContainerLost) as info:
            async for ev in s.receive(timeout=60):
                if type(ev).__name__ == "TextDelta" and not killed:
                    killed = True
                    container.exec_run(["pkill", "-KILL", "-f", "claude"], user="1000")
        assert "restarted" in str(info.value)
        errors = [e.event for e in await pool.transport.buffered(s.id)
                  if e.event.get("type") == "dockercc" and e.event.get("subtype") == "error"]
        assert errors and errors[-1]["error"] == "cli_exited" and errors[-1]["restart"] is True
        assert "stderr_tail" in errors[-1]
        # same container, new CLI process, same conversation
        r = await s.ask("which bird was it?", timeout=60)
        assert r.text == "it was heron"
        assert "remember heron" in json.dumps(api.message_requests[-1].messages)
        assert s.lease.container == container.labels[f"{LABEL}.container"]
        await s.close(forget=True)


async def test_runner_reaches_redis_over_a_unix_socket_with_no_network(
        make_config: Any, redis_server: Any, docker_client: Any, prefix: str) -> None:
    """Containers that need no network use ``network: none`` and a bind-mounted socket."""
    cfg = make_config(redis={"url": redis_server.unix_url, "keyPrefix": prefix},
                      docker={"network": "none",
                              "env": {"DOCKERCC_CLAUDE_BIN": "sh -c 'exec cat'"}})
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id="sock")
        await s.start()
        state = await pool.transport.state(s.id)
        assert state["container"] == s.lease.container  # type: ignore[union-attr]
        from dockercc.pool.backend import LABEL

        c, = docker_client.containers.list(filters={"label": f"{LABEL}.prefix={prefix}"})
        assert c.attrs["HostConfig"]["NetworkMode"] == "none"
        await s.close(forget=True)
