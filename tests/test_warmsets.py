"""Warm sets keyed by the pre-started CLI's arguments: per configured agent and by demand.

Real Docker, Redis, the real CLI in the image and the scripted API. A warm set's key is the
spec key plus a fingerprint of the arguments its CLI was pre-started with
(dockercc.pool.spec.warm_set_key), so a session is served warm without a CLI restart only
from a set made for its arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from dockercc.client import AsyncPool
from dockercc.pool.spec import set_base, shareable_args, warm_fingerprint, warm_set_key
from dockercc.protocol.cli import mcp_config
from dockercc.testing import text


def test_fingerprint_follows_the_arguments() -> None:
    a = ["--include-partial-messages", "--system-prompt", "one"]
    b = ["--include-partial-messages", "--system-prompt", "two"]
    assert warm_fingerprint(a) == warm_fingerprint(list(a))
    assert warm_fingerprint(a) != warm_fingerprint(b)
    # what the runner applies at the claim is not part of it (protocol.cli.start_time_args)
    assert warm_fingerprint([*a, "--model", "m1", "--permission-mode", "plan"]) == \
        warm_fingerprint([*a, "--model", "m2", "--allowedTools", "Read"])
    key = warm_set_key("0123456789abcdef", {"args": a})
    assert set_base(key) == "0123456789abcdef" and key != warm_set_key("0123456789abcdef",
                                                                       {"args": b})
    assert warm_set_key("0123456789abcdef", None) == "0123456789abcdef"


def test_only_arguments_without_secrets_are_shareable() -> None:
    assert shareable_args(["--model", "m", "--system-prompt", "be brief",
                           "--mcp-config", mcp_config("host"), "--allowedTools", "Read"])
    # an external MCP server may carry headers or an environment with credentials
    assert not shareable_args(["--mcp-config", mcp_config("host", {
        "gh": {"type": "http", "url": "https://x", "headers": {"Authorization": "Bearer s"}}})])
    # extra_args may be anything
    assert not shareable_args(["--settings", '{"apiKeyHelper": "cat /secret"}'])
    assert not shareable_args(["--mcp-config"])


def config(make_config: Any, **pool: Any) -> dict[str, Any]:
    return make_config(timeouts={"startupMs": 90000},
                       pool={"acquireTimeoutMs": 120000, **pool})


async def wait_for(predicate: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


OTHER_PROCESS = """
import asyncio, json, sys
from dockercc.client import AsyncPool

async def main():
    pool = AsyncPool(json.loads(sys.argv[1]))
    try:
        await pool.containers._demand_sets()
        print(json.dumps(sorted(pool.containers._demand)))
    finally:
        await pool.close()

asyncio.run(main())
"""


def other_process_demand(cfg: dict[str, Any]) -> list[str]:
    """The demand sets another Python process on the same Redis would keep warm."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", OTHER_PROCESS, json.dumps(cfg)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stderr[-2000:]
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return str(system or "")


@pytest.mark.docker
async def test_configured_agent_is_served_by_a_cli_prestarted_with_its_prompt(
        make_config: Any, api: Any) -> None:
    prompt = "You are the reviewer agent. Review with care."
    cfg = config(make_config, minWarm=0)
    cfg["agents"] = {"main": {}, "reviewer": {"systemPrompt": prompt, "minWarm": 1}}
    async with AsyncPool(cfg) as pool:
        await pool.containers.wait_warm(timeout=180)
        (rec,) = [r for r in await pool.containers.records() if r.status == "warm"]
        api.script(text("reviewed"))
        s = pool.session("reviewer")
        result = await s.ask("review this", timeout=120)
        assert result.text == "reviewed"
        assert s.lease is not None and s.lease.warm and s.lease.container == rec.id
        assert (await s.state()).get("prestarted") == "1"  # its CLI, not a restart
        assert prompt in system_text(api.message_requests[-1].body)
        await s.close(forget=True)


@pytest.mark.docker
async def test_adhoc_prompt_is_warm_by_its_third_occurrence_across_processes(
        make_config: Any, api: Any) -> None:
    """Sessions 1 and 2 (pool A) take the default warm container and restart its CLI; their
    demand, in Redis, makes a warm set for the prompt; pool B (another owner on the same
    Redis, as a second process is) sees the demand and its session 3 gets that CLI."""
    prompt = "You answer in haiku only."
    cfg = config(make_config, minWarm=1)
    async with AsyncPool(cfg) as a, AsyncPool(cfg) as b:
        states = []
        for i in range(2):
            await a.containers.wait_warm(timeout=180)  # (the default set refilled)
            api.script(text(f"reply {i}"))
            s = a.session(system_prompt=prompt)
            # (the set a new session asks for: once it runs, its spec names its own scratch
            # workspace volume, for a later container of the same session)
            key = warm_set_key(s.spec().key(), s.prestart())
            assert (await s.ask("hello", timeout=120)).text == f"reply {i}"
            assert s.lease is not None and s.lease.warm  # a default one (nothing better)
            states.append((await s.state()).get("prestarted"))
            await s.close(forget=True)
        assert states == ["0", "0"]  # the default CLI was restarted for the prompt
        assert key
        raw = await b.transport.client.hget(b.transport.pool_keys.demand, key)
        assert raw is not None and len(json.loads(raw)["hits"]) == 2
        # B sees the same demand (and can make the set from the stored recipe), and so does
        # another OS process on the same Redis
        await b.containers._demand_sets()
        assert key in b.containers._demand
        assert key in other_process_demand(cfg)

        async def prompt_set_warm() -> bool:
            return any(r.spec == key and r.status == "warm"
                       for r in await b.containers.records())

        await wait_for(prompt_set_warm)
        api.script(text("warm haiku"))
        s3 = b.session(system_prompt=prompt)
        assert (await s3.ask("hello", timeout=120)).text == "warm haiku"
        assert s3.lease is not None and s3.lease.warm and s3.lease.spec == key
        assert (await s3.state()).get("prestarted") == "1"
        assert prompt in system_text(api.message_requests[-1].body)
        await s3.close(forget=True)


@pytest.mark.docker
async def test_demand_sets_stay_within_max_total_and_never_evict_busy(
        make_config: Any, api: Any, redis_server: Any, prefix: str) -> None:
    cfg = config(make_config, minWarm=0, maxTotal=2, demandMinHits=1)
    async with AsyncPool(cfg) as pool:
        cp = pool.containers
        api.script(text("one"))
        busy = pool.session(system_prompt="first prompt")
        first = warm_set_key(busy.spec().key(), busy.prestart())  # (before it runs: see above)
        assert (await busy.ask("hi", timeout=120)).text == "one"  # cold: nothing warm
        assert busy.lease is not None and not busy.lease.warm

        async def warm_of(key: str) -> bool:
            return any(r.spec == key and r.status == "warm" for r in await cp.records())

        await wait_for(lambda: warm_of(first))  # demanded once: a warm set (demandMinHits 1)
        # a newer demand: the pool is full (1 busy + 1 warm); the older demand set's warm
        # container makes room, the busy one stays
        other = pool.session(system_prompt="second prompt")
        second = warm_set_key(other.spec().key(), other.prestart())
        await cp._record_demand(second, other.spec(), "main", other.prestart())
        await cp.top_up()
        await wait_for(lambda: warm_of(second))
        records = await cp.records()
        assert len(records) <= 2
        assert not any(r.spec == first and r.status == "warm" for r in records)
        assert any(r.id == busy.lease.container and r.status == "busy" for r in records)
        for _ in range(3):  # health passes and top-ups keep it so
            await cp.check()
            assert len(await cp.records()) <= 2
        api.script(text("still here"))
        assert (await busy.ask("again", timeout=120)).text == "still here"
        assert await pool.transport.client.exists(pool.transport.pool_keys.demand)
        await busy.close(forget=True)
    # closed: the demand hash went with the registry (the leak check looks at every key too)
    assert redis_server.keys(f"{prefix}pool:*") == []


async def test_first_turn_gate_admits_in_arrival_order() -> None:
    from dockercc.pool.admission import FirstTurnGate

    gate = FirstTurnGate(2, hold_s=30)
    order: list[str] = []

    async def turn(who: str, work: float) -> None:
        await gate.acquire(who)
        order.append(who)
        await asyncio.sleep(work)
        gate.release(who)

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(turn(f"s{i}", 0.02)))
        await asyncio.sleep(0)  # arrival order
    await asyncio.gather(*tasks)
    assert order == [f"s{i}" for i in range(6)]
    # a slot not released in time is given on after hold_s; a cancelled waiter leaves the queue
    slow = FirstTurnGate(1, hold_s=0.05)
    await slow.acquire("a")
    waiter = asyncio.create_task(slow.acquire("b"))
    gone = asyncio.create_task(slow.acquire("c"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(waiter, 1)
    assert slow.holds("b") and not slow.holds("a") and not slow.holds("c")
    slow.release("b")
    await asyncio.wait_for(slow.acquire("d"), 1)
    assert FirstTurnGate(0, 1).enabled is False


@pytest.mark.docker
async def test_a_host_folder_used_repeatedly_becomes_a_warm_set(make_config: Any, api: Any,
                                                                tmp_path: Any) -> None:
    """Issue 16's gap: without pool.warm(workspace=...) a host folder started cold every
    time; now its third session within the window is served warm, the folder mounted."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "README.md").write_text("warm folder\n")
    folder.chmod(0o777)
    cfg = config(make_config, minWarm=0)
    async with AsyncPool(cfg) as pool:
        warm = []
        for i in range(3):
            if i == 2:
                probe = pool.session(workspace=str(folder))
                key = warm_set_key(probe.spec().key(), probe.prestart())

                async def folder_set_warm(key: str = key) -> bool:
                    return any(r.spec == key and r.status == "warm"
                               for r in await pool.containers.records())

                await wait_for(folder_set_warm)
            api.script(text(f"ws {i}"))
            s = pool.session(workspace=str(folder))
            assert (await s.ask("hi", timeout=120)).text == f"ws {i}"
            assert s.lease is not None
            warm.append((s.lease.warm, (await s.state()).get("prestarted")))
            assert await s.files.read("README.md") == b"warm folder\n"
            await s.close(forget=True)
        assert warm[0][0] is False and warm[1][0] is False  # nothing warm with that mount
        assert warm[2] == (True, "1")


@pytest.mark.docker
async def test_admission_frees_a_slot_as_the_api_request_leaves(make_config: Any,
                                                                api: Any) -> None:
    """With one admission slot, a second new session does not wait for the first one's
    model: the slot frees when the first CLI's request leaves through the egress proxy (the
    CPU-heavy start is over), not at its first token (here 3 s later) nor at the hold bound."""
    def respond(body: dict[str, Any]) -> Any:
        if "slow model" in json.dumps(body.get("messages", [])):
            time.sleep(3)  # the model thinking: no CPU of ours is busy
        return text("done")

    api.set_default(respond)
    cfg = config(make_config, minWarm=2, firstTurnAdmission=1, firstTurnHoldMs=30000)
    async with AsyncPool(cfg) as pool:
        await pool.containers.wait_warm(timeout=180)
        slow, fast = pool.session(), pool.session()
        finished: dict[str, float] = {}
        t0 = time.monotonic()

        async def run(s: Any, prompt: str, name: str) -> None:
            assert (await s.ask(prompt, timeout=120)).text == "done"
            finished[name] = time.monotonic() - t0

        first = asyncio.create_task(run(slow, "ask the slow model", "slow"))
        await asyncio.sleep(0.05)  # arrives second
        await run(fast, "a quick one", "fast")
        await first
        assert finished["fast"] < finished["slow"], finished
        assert finished["fast"] < 3, finished  # it did not wait for the slow model
        assert slow.lease is not None and fast.lease is not None
        assert slow.lease.warm and fast.lease.warm
        await asyncio.gather(slow.close(forget=True), fast.close(forget=True))
