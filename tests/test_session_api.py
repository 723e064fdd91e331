"""The public Session / Pool API (sync and async) against the real stack."""

from __future__ import annotations

import _thread
import asyncio
import json
import threading
import time
from typing import Any

import pytest

from dockercc import (
    AsyncPool,
    DeadlockError,
    Pool,
    Result,
    SessionClosed,
    TextDelta,
    ToolResult,
    ToolUse,
    query,
    tool,
)
from dockercc.testing import text, tool_use

pytestmark = pytest.mark.docker


def test_sync_ask_and_stream_return_the_scripted_text(make_config: Any, api: Any) -> None:
    api.script(text("first answer here"), text("second answer"))
    seen: list[Any] = []
    with Pool(make_config(), on_event=seen.append) as pool, pool.session() as s:
        events = list(s.stream("one", timeout=60))
        deltas = [e for e in events if isinstance(e, TextDelta)]
        assert "".join(d.text for d in deltas) == "first answer here"
        result = events[-1]
        assert isinstance(result, Result) and result.text == "first answer here"
        assert result.cost_usd and result.cost_usd > 0
        assert result.usage.get("output_tokens", 0) > 0
        assert result.duration_ms is not None and result.duration_ms >= 0
        assert result.num_turns == 1 and result.session_id
        r2 = s.ask("two", timeout=60)
        assert r2.text == "second answer" and r2.ok
        # push consumers see every event, each with its session and seq
        assert seen and all(e.session == s.id for e in seen)
        seqs = [e.seq for e in seen]
        assert seqs == sorted(seqs)
        s.close(forget=True)


async def test_async_ask_and_stream(make_config: Any, api: Any) -> None:
    api.script(text("async streamed"), text("async asked"))
    async with AsyncPool(make_config()) as pool:
        async with pool.session() as s:
            got = [ev async for ev in s.stream("go", timeout=60)]
            assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "async streamed"
            r = await s.ask("again", timeout=60)
            assert r.text == "async asked" and r.cost_usd and r.cost_usd > 0
            await s.close(forget=True)


async def test_tool_reads_and_changes_a_host_object_and_errors_reach_the_model(
        make_config: Any, api: Any) -> None:
    inventory = {"apples": 3}

    @tool
    def count(fruit: str) -> int:
        """How many of a fruit the host has."""
        return inventory[fruit]

    @tool
    async def add(fruit: str, n: int = 1) -> dict[str, int]:
        """Add fruit to the host's inventory."""
        inventory[fruit] = inventory.get(fruit, 0) + n
        return inventory

    @tool
    def explode() -> str:
        """Always fails."""
        raise RuntimeError("kaboom from the host")

    api.script(tool_use("mcp__host__count", {"fruit": "apples"}), text("three apples"),
               tool_use("mcp__host__add", {"fruit": "pears", "n": 2}), text("added"),
               tool_use("mcp__host__explode", {}), text("it failed, carrying on"),
               text("still alive"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session(tools=[count, add, explode])
        r = await s.ask("how many apples?", timeout=60)
        assert r.text == "three apples"
        assert api.message_requests[-1].tool_result_text.strip() == "3"
        await s.ask("add two pears", timeout=60)
        assert inventory == {"apples": 3, "pears": 2}, "the agent changed a host object"
        events = [ev async for ev in s.stream("explode", timeout=60)]
        results = [e for e in events if isinstance(e, ToolResult)]
        assert results and results[0].is_error
        assert "kaboom from the host" in results[0].text
        tool_results = api.message_requests[-1].tool_results
        assert tool_results and tool_results[-1].get("is_error") is True
        assert (await s.ask("are you ok?", timeout=60)).text == "still alive"
        await s.close(forget=True)


async def test_three_sessions_of_two_agents_stream_concurrently_without_mixing(
        make_config: Any, api: Any) -> None:
    cfg = make_config(agents={"main": {}, "coder": {"model": "claude-sonnet-5-5"}})
    for name in ("alpha", "beta", "gamma"):
        api.on(f"I am {name}", text(" ".join([name] * 12), delay=0.02))
    async with AsyncPool(cfg) as pool:
        sessions = {"alpha": pool.session("main"), "beta": pool.session("coder"),
                    "gamma": pool.session("coder")}

        async def run(name: str) -> tuple[str, list[Any]]:
            s = sessions[name]
            return name, [ev async for ev in s.stream(f"I am {name}", timeout=90)]

        outcomes = await asyncio.gather(*(run(n) for n in sessions))
        for name, events in outcomes:
            s = sessions[name]
            assert all(e.session == s.id for e in events)
            streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
            assert streamed == " ".join([name] * 12), f"{name} got someone else's text"
        models = {r.body.get("model") for r in api.message_requests
                  if "I am beta" in r.last_user_text or "I am gamma" in r.last_user_text}
        assert models == {"claude-sonnet-5-5"}, "the coder agent's model reached the API"
        stats = await pool.stats()
        assert stats.per_agent == {"main": 1, "coder": 2}
        for s in sessions.values():
            await s.close(forget=True)


async def test_resume_after_close_continues_the_conversation(make_config: Any,
                                                             api: Any) -> None:
    api.on("remember the word", text("remembered: pelican"))
    api.on("what was the word", text("it was pelican"))
    async with AsyncPool(make_config()) as pool:
        first = pool.session()
        await first.ask("please remember the word pelican", timeout=60)
        old_id = first.id
        claude_id = first.claude_session_id
        await first.close()
        with pytest.raises(SessionClosed):
            await first.send("too late")
        again = pool.session(resume=old_id)
        r = await again.ask("what was the word?", timeout=90)
        assert r.text == "it was pelican"
        sent = json.dumps(api.message_requests[-1].messages)
        assert "remember the word pelican" in sent, "the CLI received the earlier messages"
        assert r.session_id == claude_id, "same Claude conversation"
        await again.close(forget=True)
        await pool.transport.delete_session(old_id)
        await pool.transport.client.hdel(f"{pool.transport.prefix}claude_sessions",
                                         claude_id or "")


async def test_interrupt_stops_the_turn_and_the_session_stays_usable(make_config: Any,
                                                                     api: Any) -> None:
    api.on("count", text(" ".join(str(i) for i in range(40)), delay=0.15))
    api.on("after", text("ready again"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session()
        result = None
        n = 0
        async for ev in s.stream("count to forty", timeout=60):
            if isinstance(ev, TextDelta):
                n += 1
                if n == 3:
                    await s.interrupt()
            if isinstance(ev, Result):
                result = ev
        assert result is not None and result.interrupted and n < 40
        r = await s.ask("after that", timeout=60)  # an interrupted turn doesn't raise
        assert r.text == "ready again"
        await s.close(forget=True)


def test_ctrl_c_during_a_sync_stream_interrupts_the_agent(make_config: Any, api: Any) -> None:
    api.on("count", text(" ".join(str(i) for i in range(40)), delay=0.15))
    api.on("after", text("still usable"))
    with Pool(make_config()) as pool:
        s = pool.session()
        n = 0
        with pytest.raises(KeyboardInterrupt):
            for ev in s.stream("count to forty", timeout=60):
                if isinstance(ev, TextDelta):
                    n += 1
                    if n == 3:
                        threading.Timer(0.05, _thread.interrupt_main).start()
        assert n < 40
        state = s.state()
        assert state["status"] == "idle" and state["last_subtype"] == "error_during_execution"
        assert s.ask("after the ctrl-c", timeout=60).text == "still usable"
        s.close(forget=True)


async def test_sync_api_inside_a_running_event_loop_and_from_threads(make_config: Any,
                                                                     api: Any) -> None:
    api.set_default(lambda body: text("echo " + api_last(body)))
    cfg = make_config()
    # we are inside a running loop here (as in Jupyter): the sync facade still works
    with Pool(cfg) as pool:
        with pool.session() as s:
            assert s.ask("from the loop", timeout=60).text == "echo from the loop"
            s.close(forget=True)
        answers: dict[int, str] = {}

        def worker(i: int) -> None:
            with pool.session() as ts:
                answers[i] = ts.ask(f"thread {i}", timeout=90).text
                ts.close(forget=True)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert answers == {0: "echo thread 0", 1: "echo thread 1"}


def api_last(body: dict[str, Any]) -> str:
    from dockercc.testing import last_user_text

    return last_user_text(body)


def test_a_sync_call_on_the_loop_thread_raises_deadlock_error(make_config: Any,
                                                              api: Any) -> None:
    api.script(text("hi"))
    errors: list[BaseException] = []
    with Pool(make_config()) as pool:
        s = pool.session()

        def on_event(ev: Any) -> None:
            if isinstance(ev, Result):
                try:
                    s.history()  # a sync call from the event loop's own thread
                except BaseException as exc:
                    errors.append(exc)

        s.aio.on_event = on_event
        s.ask("hello", timeout=60)
        s.close(forget=True)
    assert errors and isinstance(errors[0], DeadlockError)
    assert "async API" in str(errors[0])


def test_query_one_shot_and_history(make_config: Any, api: Any) -> None:
    api.script(text("one-shot answer"))
    t0 = time.monotonic()
    events = list(query("quick question", config=make_config(), timeout=60))
    r = events[-1]
    assert isinstance(r, Result) and r.text == "one-shot answer" and r.ok
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one-shot answer"
    assert time.monotonic() - t0 < 120
    api.script(tool_use("Bash", {"command": "echo hist"}), text("done"))
    with Pool(make_config()) as pool, pool.session(permission_mode="bypassPermissions") as s:
        s.ask("run echo", timeout=60)
        hist = s.history()
        assert hist[-1]["prompt"] == "run echo" and hist[-1]["text"] == "done"
        assert hist[-1]["tool_calls"][0]["name"] == "Bash"
        events = list(s.stream("again", timeout=60))
        assert not any(isinstance(e, ToolUse) for e in events)
        s.close(forget=True)
