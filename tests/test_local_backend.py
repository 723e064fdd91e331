"""Sessions, the pool and the host-tool bridge on the local backend (``docker.backend:
local``): the real runner and the real (pinned) Claude Code CLI as subprocesses of this
process, the real Redis (relay, per-container ACL users), the real egress proxy and the
scripted Messages API. No Docker: the whole file runs in well under a minute. What needs a
container (limits, isolation, images, names on the engine) stays in the Docker suite; see
docs/pool.md#the-local-backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dockercc
from dockercc import (
    AsyncPool,
    ClaudeAgentOptions,
    ContainerLost,
    PoolExhausted,
    Result,
    SessionClosed,
    TextDelta,
    ToolResult,
    tool,
)
from dockercc.config import load_config
from dockercc.pool.backend import DockerBackend
from dockercc.pool.local import NOT_ISOLATED, LocalBackend, own_processes
from dockercc.pool.manager import backend_for
from dockercc.protocol.envelope import Envelope
from dockercc.testing import text, tool_use

CAT = {"DOCKERCC_CLAUDE_BIN": "sh -c 'exec cat'"}
"""A runner whose "CLI" is ``cat``: a claim that never talks to the API (pool limits)."""


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Every runner, CLI and tool process a test's local containers started is gone after
    it (the pool removed them: a local container's processes are found by their marker)."""
    yield
    deadline = time.monotonic() + 5
    while own_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = own_processes()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"local containers left processes behind: {left}"


def backend_of(pool: AsyncPool) -> LocalBackend:
    backend = pool.containers.backend
    assert isinstance(backend, LocalBackend)
    return backend


def test_the_local_backend_is_chosen_only_explicitly() -> None:
    assert isinstance(backend_for(load_config({})), DockerBackend)
    local = backend_for(load_config({"docker": {"backend": "local"}}))
    assert isinstance(local, LocalBackend) and not local.isolated
    assert isinstance(backend_for(load_config({"docker": {"backend": "local"}})), LocalBackend)
    with pytest.raises(dockercc.ConfigError):
        load_config({"docker": {"backend": "podman"}})


async def test_ask_stream_and_multi_turn_and_it_says_it_is_not_isolated(
        local_config: Any, api: Any) -> None:
    api.script(text("streamed here"), text("asked"))
    async with AsyncPool(local_config()) as pool:
        root = backend_of(pool).root
        async with pool.session() as s:
            got = [ev async for ev in s.stream("go", timeout=60)]
            assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "streamed here"
            result = got[-1]
            assert isinstance(result, Result) and result.text == "streamed here"
            assert result.cost_usd and result.cost_usd > 0 and result.session_id
            r = await s.ask("again", timeout=60)
            assert r.text == "asked" and r.ok
            # the second turn carried the first: one live CLI, one conversation
            sent = json.dumps(api.message_requests[-1].messages)
            assert "go" in sent and "streamed here" in sent
            # the API was reached through the runner's forwarder and the egress proxy (the
            # container holds a placeholder, the proxy put the real key in)
            assert api.message_requests[-1].headers.get("x-api-key") == "sk-ant-scripted-test"
            stats = await pool.stats()
            assert stats.isolated is False and stats.isolation == NOT_ISOLATED
            await s.close(forget=True)
    assert not root.exists(), "the containers' directories go with the pool"


async def test_warm_pool_prestarts_and_a_claim_takes_a_warm_cli(local_config: Any,
                                                                 api: Any) -> None:
    api.script(text("warm answer"))
    async with AsyncPool(local_config(pool={"minWarm": 1})) as pool:
        await pool.containers.wait_warm(timeout=60)
        assert (await pool.stats()).warm == 1
        rec, = await pool.containers.records()
        state = await pool.transport.client.hgetall(
            pool.containers.pk.container_state(rec.id))
        assert state.get(b"prestarted") and state.get(b"warmed_up"), state
        # the warm-up turn went to the runner's own loopback API, never to the model
        assert api.message_requests == []
        s = pool.session(session_id="warm-one")
        r = await s.ask("hello", timeout=60)
        assert r.text == "warm answer"
        assert s.lease is not None and s.lease.warm
        # a claimed warm container takes the session's name (docker logs clawdbot-cc-<s>)
        deadline = time.monotonic() + 5
        while (await backend_of(pool).inspect("clawdbot-cc-warm-one")) is None:
            assert time.monotonic() < deadline, "not renamed"
            await asyncio.sleep(0.05)
        await pool.containers.wait_warm(timeout=60)  # topped up after the claim
        await s.close(forget=True)


async def test_interrupt_stops_the_turn_and_the_session_goes_on(local_config: Any,
                                                                api: Any) -> None:
    api.on("count", text(" ".join(str(i) for i in range(40)), delay=0.1))
    api.on("after", text("ready again"))
    async with AsyncPool(local_config()) as pool:
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
        assert (await s.ask("after that", timeout=60)).text == "ready again"
        await s.close(forget=True)


async def test_ask_returns_a_turn_interrupted_from_elsewhere(local_config: Any,
                                                             api: Any) -> None:
    """``ask`` returns an interrupted turn's Result whoever interrupted it (here: a control
    message as ``dockercc interrupt`` sends it, not this session's ``interrupt()``), as the
    provider chain's ``ask`` does: the CLI ends the turn with ``error_during_execution`` /
    ``aborted_*`` and takes the next prompt; an interrupt is asked for, not a failure."""
    from dockercc.protocol import control

    api.on("count", text(" ".join(str(i) for i in range(40)), delay=0.1))
    api.on("after", text("ready again"))
    n = 0

    async def on_event(ev: Any) -> None:
        nonlocal n
        if isinstance(ev, TextDelta):
            n += 1
            if n == 3:
                await pool.transport.send_control(s.id, "interrupt",
                                                  request_id=control.new_request_id())

    async with AsyncPool(local_config()) as pool:
        s = pool.session(on_event=on_event)
        result = await s.ask("count to forty", timeout=60)
        assert result.interrupted and not result.ok and n < 40
        with pytest.raises(dockercc.AgentError, match="was interrupted"):
            result.raise_for_error()  # still an error for whoever asks for one
        assert (await s.ask("after that", timeout=60)).text == "ready again"
        await s.close(forget=True)


async def test_stop_interrupts_the_turn_and_hands_on_the_rest_of_it(local_config: Any,
                                                                    api: Any) -> None:
    """``stop`` (what Ctrl-C does in the sync facade and in notebooks) interrupts the turn in
    flight and reads it to its end, passing each event on, the Result last; the session
    goes on, and with no turn open there is nothing to stop."""
    api.on("count", text(" ".join(str(i) for i in range(40)), delay=0.1))
    api.on("after", text("ready again"))
    async with AsyncPool(local_config()) as pool:
        s = pool.session()
        await s.send("count to forty")
        async with contextlib.aclosing(s.receive(timeout=60)) as events:
            async for ev in events:
                if isinstance(ev, TextDelta):
                    break  # the turn is under way; its reader gives up
        assert s.turn_open
        seen: list[Any] = []

        async def on_event(ev: Any) -> None:
            seen.append(ev)

        result = await s.stop(timeout=30, on_event=on_event)
        assert isinstance(result, Result) and result.interrupted
        assert seen[-1] is result and not any(isinstance(e, Result) for e in seen[:-1])
        assert len([e for e in seen if isinstance(e, TextDelta)]) < 40
        assert not s.turn_open
        assert await s.stop(on_event=seen.append) is None
        assert seen[-1] is result  # nothing more was handed on
        assert (await s.ask("after that", timeout=60)).text == "ready again"
        await s.close(forget=True)


def test_ctrl_c_in_the_sync_facade_stops_the_turn(local_config: Any, api: Any) -> None:
    """Ctrl-C during a sync stream stops the agent's turn (``stop``) before it propagates."""
    import _thread
    import threading

    api.on("count", text(" ".join(str(i) for i in range(40)), delay=0.1))
    api.on("after", text("still usable"))
    with dockercc.Pool(local_config()) as pool:
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


@pytest.mark.parametrize("on_portal", [True, False], ids=["sync-driver", "async-driver"])
async def test_a_notebook_turn_that_times_out_is_stopped_into_its_view(
        local_config: Any, api: Any, on_portal: bool) -> None:
    """The notebook's turn driver, on a turn timeout, stops the turn and reads the rest of
    it into the view (on the caller's thread), then raises; the session goes on."""
    from dockercc.jupyter.state import TurnState
    from dockercc.jupyter.turn import TurnDriver
    from dockercc.jupyter.view import HtmlView

    api.on("count", text(" ".join(f"w{i}" for i in range(40)), delay=0.2))
    api.on("after", text("still here"))
    if on_portal:
        pool = dockercc.Pool(local_config())
        s = pool.session()
        aio = s.aio
        await asyncio.to_thread(s.start)  # the turn's clock starts with a running CLI
    else:
        apool = AsyncPool(local_config())
        aio = await apool.session().start()
    view = HtmlView(TurnState(session=aio.id, agent=aio.agent, prompt="count"))
    driver = TurnDriver(aio, view, on_portal=on_portal, timeout=2.5)
    with pytest.raises(TimeoutError):
        if on_portal:
            await asyncio.to_thread(driver.run, "count")
        else:
            await driver.arun("count")
    assert "w0" in view.state.text and "w39" not in view.state.text
    assert not aio.turn_open
    if on_portal:
        assert s.ask("after", timeout=60).text == "still here"
        s.close(forget=True)
        pool.close()
    else:
        assert (await aio.ask("after", timeout=60)).text == "still here"
        await aio.close(forget=True)
        await apool.close()


async def test_resume_after_close_restores_the_transcript_in_a_new_container(
        local_config: Any, api: Any) -> None:
    api.on("remember the word", text("remembered: pelican"))
    api.on("what was the word", text("it was pelican"))
    async with AsyncPool(local_config()) as pool:
        first = pool.session()
        await first.ask("please remember the word pelican", timeout=60)
        old_id, claude_id = first.id, first.claude_session_id
        await first.close()
        with pytest.raises(SessionClosed):
            await first.send("too late")
        again = pool.session(resume=old_id)
        r = await again.ask("what was the word?", timeout=60)
        assert r.text == "it was pelican"
        assert "remember the word pelican" in json.dumps(api.message_requests[-1].messages)
        assert r.session_id == claude_id, "same Claude conversation"
        await again.close(forget=True)
        await pool.transport.delete_session(old_id)
        await pool.transport.client.hdel(f"{pool.transport.prefix}claude_sessions",
                                         claude_id or "")


async def test_host_tools_through_the_bridge_and_a_built_in_tool(local_config: Any,
                                                                  api: Any) -> None:
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
               tool_use("Bash", {"command": "echo made > made.txt; cat made.txt; pwd"}),
               text("ran bash"))
    async with AsyncPool(local_config()) as pool:
        s = pool.session(tools=[count, add, explode], permission_mode="bypassPermissions")
        assert (await s.ask("how many apples?", timeout=60)).text == "three apples"
        assert api.message_requests[-1].tool_result_text.strip() == "3"
        await s.ask("add two pears", timeout=60)
        assert inventory == {"apples": 3, "pears": 2}, "the agent changed a host object"
        events = [ev async for ev in s.stream("explode", timeout=60)]
        results = [e for e in events if isinstance(e, ToolResult)]
        assert results and results[0].is_error and "kaboom from the host" in results[0].text
        # the CLI's own Bash, in the container's workspace (a directory of the backend)
        events = [ev async for ev in s.stream("use bash", timeout=60)]
        out, = [e.text for e in events if isinstance(e, ToolResult)]
        made, where = out.strip().splitlines()
        assert made == "made"
        workspace = Path(where)
        # (a scratch workspace: the session's own folder, docker.scratchVolumes' stand-in)
        assert workspace.is_relative_to(backend_of(pool).root)
        assert (workspace / "made.txt").read_text() == "made\n"
        await s.close(forget=True)
        assert not await asyncio.to_thread(workspace.exists), "a forgotten session's goes"


async def test_can_use_tool_denies_changes_and_allows(local_config: Any, api: Any) -> None:
    from dockercc import PermissionResultAllow, PermissionResultDeny, ToolPermissionContext

    asked: list[str] = []

    async def approve(name: str, tool_input: dict[str, Any],
                      ctx: ToolPermissionContext) -> Any:
        command = str(tool_input.get("command", ""))
        asked.append(command)
        if "rm -rf" in command:
            return PermissionResultDeny(message="rm -rf is not allowed here")
        if "original" in command:
            return PermissionResultAllow(
                updated_input={**tool_input, "command": command.replace("original", "changed")})
        return PermissionResultAllow()

    api.script(tool_use("Bash", {"command": "rm -rf precious"}),
               tool_use("Bash", {"command": "printf original > o.txt; cat o.txt"}),
               tool_use("Bash", {"command": "printf fine > f.txt; cat f.txt"}),
               text("done"))
    opts = ClaudeAgentOptions(can_use_tool=approve, allowed_tools=["Read"])
    async with AsyncPool(local_config()) as pool, pool.session(options=opts) as s:
        assert "--permission-prompt-tool" in s.cli_args()
        events = [e async for e in s.stream("clean up", timeout=60)]
        await s.close(forget=True)
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [c for c in asked if "rm -rf" in c] == ["rm -rf precious"]
    assert results[0].is_error and "rm -rf is not allowed here" in results[0].text
    assert results[1].text.strip() == "changed", results[1]
    assert results[2].text.strip() == "fine", results[2]
    assert isinstance(events[-1], Result) and events[-1].text == "done"


async def test_hooks_see_the_turn_and_block_a_tool(local_config: Any, api: Any) -> None:
    from dockercc import HookMatcher

    seen: list[tuple[str, Any]] = []

    async def no_bash(data: dict[str, Any], tool_use_id: str | None, ctx: Any) -> Any:
        seen.append(("pre", data.get("tool_input")))
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                       "permissionDecision": "deny",
                                       "permissionDecisionReason": "Bash is blocked by a hook"}}

    def on_prompt(data: dict[str, Any], tool_use_id: str | None, ctx: Any) -> Any:
        seen.append(("prompt", data.get("prompt")))
        return {}

    opts = ClaudeAgentOptions(hooks={
        "PreToolUse": [HookMatcher(matcher="Bash", hooks=[no_bash])],
        "UserPromptSubmit": [HookMatcher(hooks=[on_prompt])]})
    api.script(tool_use("Bash", {"command": "echo should-not-run"}), text("blocked"))
    async with AsyncPool(local_config()) as pool, pool.session(options=opts) as s:
        events = [e async for e in s.stream("run it", timeout=60)]
        await s.close(forget=True)
    results = [e for e in events if isinstance(e, ToolResult)]
    assert results and results[0].is_error, results
    assert "blocked by a hook" in results[0].text and "should-not-run" not in results[0].text
    assert ("prompt", "run it") in seen
    assert ("pre", {"command": "echo should-not-run"}) in seen


async def test_structured_output_is_checked(local_config: Any, api: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"]}
    opts = ClaudeAgentOptions(output_format={"type": "json_schema", "schema": schema})
    api.script(tool_use("StructuredOutput", {"city": "Oslo", "population": 709000}),
               text("done"))
    async with AsyncPool(local_config()) as pool, pool.session(options=opts) as s:
        r = await s.ask("largest city of Norway?", timeout=60)
        assert r.structured_output == {"city": "Oslo", "population": 709000}
        await s.close(forget=True)


async def test_a_killed_runner_is_a_lost_container_and_the_session_goes_on(
        local_config: Any, api: Any) -> None:
    api.on("slow", text(" ".join(["word"] * 60), delay=0.1))
    api.on("after", text("resumed fine"))
    async with AsyncPool(local_config(timeouts={"healthIntervalMs": 1000})) as pool:
        backend = backend_of(pool)
        s = pool.session(session_id="victim")
        await s.send("slow please")
        killed_at = 0.0
        first: str | None = None
        with pytest.raises(ContainerLost) as info:
            async for ev in s.receive(timeout=60):
                if isinstance(ev, TextDelta) and first is None:
                    assert s.lease is not None
                    first = s.lease.name
                    pid = backend.pid(first)
                    assert pid is not None
                    os.kill(pid, signal.SIGKILL)  # the container's "PID 1"
                    killed_at = time.monotonic()
        detected = time.monotonic() - killed_at
        assert detected < 1.0, f"the die event should report it at once ({detected:.2f}s)"
        assert "exit code 137" in str(info.value), info.value
        stats = await pool.stats()
        assert stats.lost >= 1
        # the lost container (its CLI with it, as a container's processes go) was removed
        info = await backend.inspect(first or "")
        assert info is None or not info.running
        result = await s.ask("after the loss", timeout=60)
        assert result.text == "resumed fine"
        await s.close(forget=True)


async def test_pool_limits_raise_pool_exhausted_and_a_release_frees_a_slot(
        local_config: Any) -> None:
    cfg = local_config(pool={"maxTotal": 2, "maxPerAgent": 1, "acquireTimeoutMs": 800},
                       agents={"main": {}, "helper": {}})
    async with AsyncPool(cfg) as pool:
        a = pool.session("main", session_id="a0", env=CAT)
        b = pool.session("helper", session_id="b0", env=CAT)
        await asyncio.gather(a.start(), b.start())
        t0 = time.monotonic()
        with pytest.raises(PoolExhausted) as info:
            await pool.session("main", session_id="a1", env=CAT).start()
        assert time.monotonic() - t0 >= 0.7, "waits for the acquire timeout"
        assert info.value.limit in ("maxPerAgent", "maxTotal") and "max" in str(info.value)
        await a.close(forget=True)
        again = pool.session("main", session_id="a2", env=CAT)
        await again.start()
        assert (await pool.stats()).busy == 2
        for s in (b, again):
            await s.close(forget=True)
        await pool.transport.delete_session("a1")


async def test_dockercc_status_says_the_local_backend_is_not_isolated(
        local_config: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from dockercc.cli import _print_report
    from dockercc.health import collect_health

    report = await collect_health(load_config(local_config()), timeout=2)
    assert report.backend == "local"
    _print_report(report)
    out = " ".join(capsys.readouterr().out.split())
    assert "local backend: not isolated" in out
    docker = await collect_health(load_config({**local_config(), "docker": {}}), timeout=2)
    assert docker.backend == "docker"


async def test_a_loss_reported_after_the_session_closed_writes_nothing(
        local_config: Any, api: Any, prefix: str) -> None:
    """A container's loss reported late (the health pass or Docker's die event read the
    record before the session closed it on purpose) must not bring back the forgotten
    session's output buffer and state, with no TTL; a live session still gets the error."""
    api.script(text("one"), text("two"))
    async with AsyncPool(local_config()) as pool:
        r = pool.transport.client
        live = pool.session(session_id="live-one")
        await live.ask("go", timeout=60)
        await pool.containers.report_error(live.id, "container_lost", "lost: test")
        env = Envelope.decode(await r.lindex(live.keys.output_buffer, -1))
        assert env is not None and env.event.get("error") == "container_lost", env
        assert (await live.state())["status"] == "lost"
        await live.close(forget=True)
        gone = pool.session(session_id="gone-one")
        await gone.ask("go", timeout=60)
        await gone.close(forget=True)
        base = gone.keys.base
        assert [k async for k in r.scan_iter(match=f"{base}*")] == []
        await pool.containers.report_error(gone.id, "container_lost", "lost: late")
        assert [k async for k in r.scan_iter(match=f"{base}*")] == []


async def test_a_closed_session_stays_resumable_for_timeouts_resume_ms(
        local_config: Any, api: Any) -> None:
    """``timeouts.resumeMs`` is how long a closed session's state (and with it its scratch
    workspace) is kept: the retained keys expire then; a session never seen says the limit."""
    api.script(text("kept"))
    async with AsyncPool(local_config(timeouts={"resumeMs": 90_000})) as pool:
        s = pool.session()
        assert (await s.ask("keep this", timeout=60)).text == "kept"
        await s.close()
        state_key = pool.transport.keys(s.id).state
        ttl = await pool.transport.client.ttl(state_key)
        assert 0 < ttl <= 90, ttl
        with pytest.raises(dockercc.SessionClosed, match="timeouts.resumeMs"):
            await pool.session(resume="s-never-was").ask("hi", timeout=30)
        await pool.transport.delete_session(s.id)
