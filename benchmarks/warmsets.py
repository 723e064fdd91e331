"""Warm sets beyond the defaults (issue 18): a configured agent with its own system prompt, an
ad-hoc system prompt at its 1st and 3rd occurrence, and a burst of new sessions against the
CPU bound computed from the CPU each session measurably used (container cgroups).

Called from ``python -m benchmarks`` (section ``warmsets``); every ratio compares figures of
the same run, taken round robin.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockercc.client import AsyncPool
from dockercc.events import TextDelta
from dockercc.pool.admission import FirstTurnGate
from dockercc.pool.backend import LABEL
from dockercc.pool.spec import warm_set_key

from . import peers
from ._common import PROMPT, Samples, fmt_ms, fmt_ratio, median, percentile

if TYPE_CHECKING:
    from .__main__ import Bench

AGENT_PROMPT = "You are the release-notes agent. Write short, plain release notes."
BURST = 16
ADMIT = 2
"""First turns admitted at once in the burst's admission runs (the cores of this machine)."""
ADMIT_HOLD_S = 0.3


def say(msg: str) -> None:
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def container_cpu_ms(docker_id: str) -> float:
    """CPU a container has used so far (ms), from its cgroup (v1 cpuacct or v2 cpu.stat)."""
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{docker_id}/cpuacct.usage",
                 f"/sys/fs/cgroup/cpu,cpuacct/docker/{docker_id}/cpuacct.usage"):
        if os.path.exists(path):
            return int(Path(path).read_text()) / 1e6
    for base in (f"/sys/fs/cgroup/system.slice/docker-{docker_id}.scope",
                 f"/sys/fs/cgroup/docker/{docker_id}"):
        stat = Path(base, "cpu.stat")
        if stat.exists():
            for line in stat.read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1000
    raise RuntimeError(f"no cgroup CPU accounting found for container {docker_id[:12]}")


def host_cpu_ms() -> float:
    t = os.times()
    return (t.user + t.system) * 1000


async def timed_session(pool: AsyncPool, *, agent: str = "main", t0: float | None = None,
                        on_first: Any = None, **opts: Any) -> dict[str, Any]:
    """One new session's first token (ms from ``t0``, default now), whether it was warm and
    served by the pre-started CLI."""
    t0 = time.perf_counter() if t0 is None else t0
    s = pool.session(agent, **opts)
    first = None
    try:
        async for ev in s.stream(PROMPT, timeout=300):
            if first is None and isinstance(ev, TextDelta):
                first = time.perf_counter()
                if on_first is not None:
                    on_first(s)
        if first is None:
            raise RuntimeError("the session streamed no text")
        assert s.lease is not None
        state = await s.state()
        return {"first_token": (first - t0) * 1000, "warm": s.lease.warm,
                "prestarted": state.get("prestarted") == "1", "set": s.lease.spec,
                "container": s.lease.container}
    finally:
        await s.close(forget=True)


async def wait_set(pool: AsyncPool, key: str, timeout: float = 300) -> float:
    """Wait until warm set ``key`` holds a ready container; seconds waited."""
    t0 = time.monotonic()
    while not any(r.spec == key and r.status == "warm" for r in await pool.containers.records()):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"warm set {key} not ready within {timeout:.0f}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


async def run(bench: Bench) -> None:
    s = bench.s
    runs = bench.args.runs
    floor, sdk, env, work = await peers.host_peers(bench.api_url, bench.scratch, "ws")
    agents = {"main": {}, "notes": {"systemPrompt": AGENT_PROMPT, "minWarm": 1}}
    # the configured agent's warm set, and the default set an ad-hoc prompt falls back to
    pool = bench.pool(agents=agents, pool={"minWarm": 1})
    # today's path for an ad-hoc prompt: the default warm container, its CLI restarted
    today = bench.pool(pool={"minWarm": 1, "demandMinHits": 0})
    cold = bench.pool(pool={"demandMinHits": 0})  # (cold every time: no demand warm set)
    try:
        await asyncio.gather(pool.start(), today.start(), cold.start())
        await pool.containers.wait_warm(timeout=600)
        await today.containers.wait_warm(timeout=600)
        await timed_session(pool, agent="notes")  # warm-up of the path
        for i in range(runs):
            say(f"warmsets run {i + 1}/{runs}")
            s.add("ws_floor", await floor.turn(PROMPT))
            await pool.containers.wait_warm(timeout=600)
            await bench.settle(1.0)
            r = await timed_session(pool, agent="notes")
            s.add("ws_agent", r["first_token"])
            s.add("ws_agent_prestarted", float(r["warm"] and r["prestarted"]))
            if sdk:
                await bench.settle()
                s.add("ws_sdk", await peers.sdk_query(env, work))
            # an ad-hoc system prompt, new in each run: 1st, 2nd and 3rd occurrence
            adhoc = f"You are ad-hoc helper {secrets.token_hex(4)}. Answer briefly."
            for n in (1, 2, 3):
                await pool.containers.wait_warm(timeout=600)
                if n == 3:
                    probe = pool.session(system_prompt=adhoc)
                    key = warm_set_key(probe.spec().key(), probe.prestart())
                    s.add("ws_adhoc_ready_s", await wait_set(pool, key))
                await bench.settle(1.0)
                r = await timed_session(pool, system_prompt=adhoc)
                s.add(f"ws_adhoc_{n}", r["first_token"])
                if n == 3:
                    s.add("ws_adhoc_3_prestarted", float(r["warm"] and r["prestarted"]))
            await today.containers.wait_warm(timeout=600)
            await bench.settle(1.0)
            r = await timed_session(today, system_prompt=f"Other prompt {secrets.token_hex(4)}.")
            s.add("ws_adhoc_today", r["first_token"])
            await bench.settle(1.0)
            s.add("ws_cold", (await timed_session(cold))["first_token"])
    finally:
        await floor.close()
        await asyncio.gather(pool.close(), today.close(), cold.close(), return_exceptions=True)
    await burst(bench)


async def burst(bench: Bench, level: int = BURST) -> None:
    """``level`` new sessions at once on warm containers (refill off during the burst): each
    one's first token, and the CPU it used until then (its container's cgroup, plus this
    process's share). The CPU bound: ``level`` x CPU per session / cores."""
    pool = bench.pool()
    reps = max(1, bench.args.runs // 2)
    try:
        await pool.start()
        for i in range(reps):
            for mode, gate in (("", FirstTurnGate(0, 0)),
                               ("_admit", FirstTurnGate(ADMIT, ADMIT_HOLD_S))):
                say(f"warmsets burst {level}{mode}: run {i + 1}/{reps}")
                pool.first_turns = gate
                await one_burst(bench, pool, level, mode)
    finally:
        await pool.close()


async def one_burst(bench: Bench, pool: AsyncPool, level: int, mode: str) -> None:
    """One burst; the CPU per session is each container's cgroup use from before the burst
    to its session's first token, plus this process's CPU over the burst / ``level``."""
    s = bench.s
    await pool.warm("main", count=level, timeout=900)
    await pool.warm("main", count=0, wait=False)  # no refill competing for CPU
    await bench.settle(3.0)
    docker_ids = {i.labels.get(f"{LABEL}.container", ""): i.id for i in
                  await pool.containers.backend.list(pool.containers.labels_base)}
    before = {cid: container_cpu_ms(did) for cid, did in docker_ids.items()}
    used: dict[str, float] = {}

    def on_first(sess: Any, docker_ids: dict[str, str] = docker_ids,
                 used: dict[str, float] = used,
                 before: dict[str, float] = before) -> None:
        cid = sess.lease.container if sess.lease else ""
        if cid in docker_ids:
            used[cid] = container_cpu_ms(docker_ids[cid]) - before[cid]

    host0 = host_cpu_ms()
    t0 = time.perf_counter()
    results = await asyncio.gather(*(timed_session(pool, t0=t0, on_first=on_first)
                                     for _ in range(level)))
    host = host_cpu_ms() - host0
    firsts = sorted(r["first_token"] for r in results)
    s.extend(f"burst{mode}_first", firsts)
    s.add(f"burst{mode}_p50", percentile(firsts, 50))
    s.add(f"burst{mode}_warm", sum(r["warm"] for r in results) / level)
    if len(used) == level:
        per = sum(used.values()) / level + host / level
        s.add(f"burst{mode}_cpu_per_session", per)
        s.add(f"burst{mode}_bound", level * per / (os.cpu_count() or 1))
    await bench.settle(2.0)


def rows(s: Samples) -> list[list[str]]:
    out: list[list[str]] = []

    def n(name: str) -> str:
        return str(len(s.get(name)))

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    if s.get("ws_agent"):
        floor, agent, sdk = s.med("ws_floor"), s.med("ws_agent"), s.med("ws_sdk")
        served = s.get("ws_agent_prestarted")
        out += [
            ["first token, configured agent with its own system prompt (warm set)",
             fmt_ms(agent), n("ws_agent"), f"{fmt_ratio(agent / floor)} floor", "<= 2x floor",
             verdict(agent <= 2 * floor)],
            ["", "", "", f"{fmt_ratio(sdk / agent)} faster than query()", ">= 8x faster",
             "-" if sdk != sdk else verdict(sdk / agent >= 8)],
            ["  served by a CLI pre-started with that prompt", f"{sum(served):.0f}/{len(served)}",
             "", "", "", ""],
            ["first token, running CLI's next turn (floor, this section)", fmt_ms(floor),
             n("ws_floor"), "", "", ""],
            ["first token, claude-agent-sdk query() (this section)",
             fmt_ms(sdk) if s.get("ws_sdk") else "not installed", n("ws_sdk"), "", "", ""],
        ]
    if s.get("ws_adhoc_1"):
        today, cold = s.med("ws_adhoc_today"), s.med("ws_cold")
        a1, a2, a3 = s.med("ws_adhoc_1"), s.med("ws_adhoc_2"), s.med("ws_adhoc_3")
        served = s.get("ws_adhoc_3_prestarted")
        out += [
            ["first token, ad-hoc system prompt, 1st occurrence", fmt_ms(a1), n("ws_adhoc_1"),
             f"{fmt_ratio(a1 / today)} today's path", "<= today's (restart) path",
             verdict(a1 <= 1.1 * today)],
            ["first token, ad-hoc system prompt, 2nd occurrence", fmt_ms(a2), n("ws_adhoc_2"),
             "", "", ""],
            ["first token, ad-hoc system prompt, 3rd occurrence (demand warm set)", fmt_ms(a3),
             n("ws_adhoc_3"), f"{fmt_ratio(a3 / s.med('ws_floor'))} floor", "warm",
             verdict(sum(served) == len(served) and len(served) > 0)],
            ["  demand set ready after the 2nd occurrence", f"{s.med('ws_adhoc_ready_s'):.1f} s",
             n("ws_adhoc_ready_s"), "", "", ""],
            ["first token, ad-hoc prompt, today's path (default warm CLI restarted)",
             fmt_ms(today), n("ws_adhoc_today"), "", "", ""],
            ["first token, cold container (no warm set)", fmt_ms(cold), n("ws_cold"), "", "",
             ""],
        ]
    for mode, label in (("", "all at once"),
                        ("_admit", f"admission {ADMIT} at a time, firstTurnAdmission")):
        if not s.get(f"burst{mode}_p50"):
            continue
        p50, bound = s.med(f"burst{mode}_p50"), s.med(f"burst{mode}_bound")
        firsts = s.get(f"burst{mode}_first")
        out += [
            [f"first token p50, {BURST} concurrent new sessions, {label}", fmt_ms(p50),
             n(f"burst{mode}_p50"), f"{fmt_ratio(p50 / bound)} CPU bound", "<= 1.5x bound",
             verdict(p50 <= 1.5 * bound)],
            ["  CPU bound: sessions x CPU per session / cores", fmt_ms(bound),
             n(f"burst{mode}_bound"),
             f"CPU per session {fmt_ms(s.med(f'burst{mode}_cpu_per_session'))}", "", ""],
            ["  first token p10 / p90 in the burst",
             f"{fmt_ms(percentile(firsts, 10))} / {fmt_ms(percentile(firsts, 90))}",
             str(len(firsts)), "", "", ""],
        ]
    return out


__all__ = ["median", "rows", "run"]
