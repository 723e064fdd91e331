"""``python -m benchmarks``: dockercc against its peers, one table, all measured in one run.

Real Docker, real Redis (a private redis-server), the real Claude Code CLI (in the agent image
and on the host), and the scripted Messages API (``python -m dockercc.testing``, an instant
stand-in), so the numbers are about start-up and relay, not the model. See docs/benchmarks.md.

    python -m benchmarks                  # everything, 5 runs each
    python -m benchmarks --runs 9 --json out.json
    python -m benchmarks --sections first-token,relay
    python -m benchmarks --sections first-token --metrics   # and compare with /metrics

Needs root-equivalent access to Docker, ``redis-server``, the ``claude`` CLI on PATH, and
``pip install claude-agent-sdk`` for the query() peer (skipped with a note when missing).
Set ``DOCKERCC_BASE_IMAGE`` / ``DOCKERCC_CA_BUNDLE`` as for ``dockercc image build``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dockercc.client import AsyncPool
from dockercc.events import Result, TextDelta
from dockercc.image import CLAUDE_CODE_VERSION, DEFAULT_TAG, build_image
from dockercc.pool.spec import spec_for
from dockercc.protocol import control

from . import options as options_bench
from . import peers, warmsets
from ._common import (
    PROMPT,
    REPLY,
    RedisServer,
    Samples,
    clean_env,
    fmt_ms,
    fmt_ratio,
    load,
    percentile,
    render_table,
    write_executable,
)
from .metrics_check import MetricsCheck

SECTIONS = ("first-token", "options", "workspace", "relay", "concurrency", "memory", "files",
            "warmsets", "batch")
"""(``--sections burst`` runs the 16-session burst of ``warmsets`` alone)"""
FAKE_CLI = Path(__file__).resolve().parent / "fake_cli.py"
CPUS = 2.0
MEMORY = "4g"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, redis_url: str, api_url: str) -> None:
        self.args = args
        self.redis_url = redis_url
        self.api_url = api_url
        self.s = Samples()
        self.info: dict[str, Any] = {}
        self.scratch = Path(tempfile.mkdtemp(prefix="dockercc-bench-"))
        self.scratch.chmod(0o755)
        self.check = MetricsCheck()  # --metrics: this process's /metrics vs our own figures

    # -- set-up ----------------------------------------------------------------------------

    def config(self, **over: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "image": self.args.image,
            "redis": {"url": self.redis_url, "keyPrefix": f"bench{secrets.token_hex(3)}:"},
            # the CLI reports its own time to the request in each result (see the table)
            "docker": {"network": "host", "env": {"CLAUDE_CODE_EMIT_STARTUP_TIMING": "1"}},
            "credentials": {"baseUrl": self.api_url, "apiKey": "sk-ant-scripted-bench"},
            "resources": {"memory": MEMORY, "cpus": CPUS},
            "timeouts": {"healthIntervalMs": 2000, "startupMs": 90000},
            "pool": {"acquireTimeoutMs": 180000, "maxTotal": 40, "maxPerAgent": 40,
                     "minWarm": 0},
        }
        for key, value in over.items():
            cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
        return cfg

    def pool(self, **over: Any) -> AsyncPool:
        # env={}: no credentials from this process's environment reach the containers
        return AsyncPool(self.config(**over), env={})

    async def settle(self, seconds: float = 0.5) -> None:
        """Let background work (a refilled warm container's start-up) calm down."""
        await asyncio.sleep(seconds)

    # -- dockercc: one new session ---------------------------------------------------------

    async def new_session(self, pool: AsyncPool, *, next_turn: bool = False,
                          workspace: str | None = None,
                          options: dict[str, Any] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = pool.session(workspace=workspace, **(options or {}))
        first = None
        try:
            # as users do: stream() claims the container on the way (the prompt is queued
            # while the claim is confirmed); the claim is timed by the pool (Lease.claim_ms)
            async for ev in s.stream(PROMPT, timeout=180):
                if first is None and isinstance(ev, TextDelta):
                    first = time.perf_counter()
            if first is None:
                raise RuntimeError("the session streamed no text")
            assert s.lease is not None
            out: dict[str, Any] = {"first_token": (first - t0) * 1000,
                                   "claim": s.lease.claim_ms, "warm": s.lease.warm}
            self.check.record("claim_warm" if s.lease.warm else "claim_cold", s.lease.claim_ms)
            self.check.record("first_token", out["first_token"])
            self.check.record("turn", 1)
            state = await s.state()
            out["prestarted"] = state.get("prestarted") == "1"
            out.update(cli_timing(await pool.transport.buffered(s.id)))
            if next_turn:
                t1 = time.perf_counter()
                second = None
                async for ev in s.stream("And once more, please.", timeout=180):
                    if second is None and isinstance(ev, TextDelta):
                        second = time.perf_counter()
                out["next_turn"] = ((second or time.perf_counter()) - t1) * 1000
                if second is not None:
                    self.check.record("first_token", out["next_turn"])
                self.check.record("turn", 1)
            return out
        finally:
            await s.close(forget=True)

    # -- sections --------------------------------------------------------------------------

    async def first_token(self) -> None:
        runs = self.args.runs
        home = self.scratch / "host-home"
        work = self.scratch / "host-work"
        home.mkdir()
        work.mkdir()
        env = clean_env({"ANTHROPIC_BASE_URL": self.api_url,
                         "ANTHROPIC_API_KEY": "sk-ant-scripted-bench",
                         "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}, str(home))
        floor = peers.RunningCLI({**env, "CLAUDE_CODE_EMIT_STARTUP_TIMING": "1"}, str(work))
        await floor.start()
        sdk = peers.sdk_available()
        if sdk:
            await peers.sdk_query(env, str(work))  # warm-up: the SDK's HOME is a used one
        else:
            self.info["sdk_missing"] = True
        # the cold pool keeps no warm container: minWarm 0 and no demand warm set (the same
        # session again and again would otherwise become one by its third run)
        warm_pool, cold_pool = self.pool(), self.pool(pool={"demandMinHits": 0})
        try:
            self.begin_check()
            await warm_pool.warm("main", count=1, timeout=300)
            await cold_pool.start()
            say("first-token: warm-up of each path")
            await self.new_session(warm_pool)
            await warm_pool.containers.wait_warm(timeout=300)
            await peers.docker_run(self.args.image, self.api_url, cpus=CPUS, memory=MEMORY)
            for i in range(runs):  # round robin, so load changes hit every path alike
                say(f"first-token run {i + 1}/{runs}")
                self.s.add("floor", await floor.turn(PROMPT))
                await warm_pool.containers.wait_warm(timeout=300)
                await self.settle()
                r = await self.new_session(warm_pool, next_turn=True)
                self.s.add("warm", r["first_token"])
                self.s.add("claim_warm", r["claim"])
                self.s.add("next_turn", r["next_turn"])
                self.s.add("warm_prestarted", float(r["warm"] and r["prestarted"]))
                for key in ("ttr", "ttr_cpu"):
                    if key in r:
                        self.s.add(f"warm_cli_{key}", r[key])
                        self.s.add(f"floor_cli_{key}", floor.timing.get(key, float("nan")))
                await warm_pool.containers.wait_warm(timeout=300)  # the refill is done
                await self.settle()
                r = await self.new_session(cold_pool)
                self.s.add("cold", r["first_token"])
                self.s.add("claim_cold", r["claim"])
                await self.settle()
                self.s.add("docker_run", await peers.docker_run(
                    self.args.image, self.api_url, cpus=CPUS, memory=MEMORY))
                if sdk:
                    await self.settle()
                    self.s.add("sdk", await peers.sdk_query(env, str(work)))
        finally:
            self.check.end()
            await floor.close()
            await asyncio.gather(warm_pool.close(), cold_pool.close(), return_exceptions=True)

    async def options(self) -> None:
        """New sessions with their own model / permission mode / env / allowed tools."""
        await options_bench.run(self)

    def say(self, msg: str) -> None:
        say(msg)

    async def workspace(self) -> None:
        """New-session first token with a host folder at /workspace: cold (no warm set made
        with that mount) and warm (``pool.warm(workspace=...)``); the default scratch volume
        (``docker.scratchVolumes``) next to the tmpfs (``scratchVolumes: false``), the
        no-workspace baseline."""
        folder = self.scratch / "bench-workspace"
        folder.mkdir()
        (folder / "README.md").write_text("bench\n")
        if os.geteuid() == 0:  # the agent (uid 1000) writes there
            os.chown(folder, 1000, 1000)
        plain = self.pool(docker={"scratchVolumes": False})  # a tmpfs: no workspace at all
        shared, scratch = self.pool(), self.pool()  # scratch: the default
        # the cold path: no demand warm set either (a spec claimed again and again would get
        # one, see docs/pool.md, and the "cold" row would be warm from its third run on)
        cold = self.pool(pool={"demandMinHits": 0})
        try:
            await plain.warm("main", count=1, timeout=300)
            await shared.warm("main", count=1, timeout=300, workspace=str(folder))
            await scratch.warm("main", count=1, timeout=300)
            await cold.start()
            for pool, ws in ((plain, None), (shared, str(folder)), (scratch, None)):
                await self.new_session(pool, workspace=ws)  # warm-up of each pool
            for i in range(self.args.runs):
                say(f"workspace run {i + 1}/{self.args.runs}")
                # the two warm no-mount paths back to back, their order alternating, so a
                # load change or the other's refill hits both alike (the paired ratio)
                pair = [(plain, "ws_plain", None), (scratch, "ws_scratch", None)]
                for pool, key, ws in (pair if i % 2 == 0 else pair[::-1]) + [
                        (cold, "ws_cold", str(folder)), (shared, "ws_warm", str(folder))]:
                    await pool.containers.wait_warm(timeout=300)
                    await self.settle()
                    r = await self.new_session(pool, workspace=ws)
                    self.s.add(key, r["first_token"])
                    self.s.add(key + "_was_warm", float(r["warm"]))
                    if "ttr" in r:
                        self.s.add(key + "_cli_ttr", r["ttr"])
                self.s.add("ws_scratch_ratio",
                           self.s.get("ws_scratch")[-1] / self.s.get("ws_plain")[-1])
        finally:
            await asyncio.gather(plain.close(), shared.close(), scratch.close(), cold.close(),
                                 return_exceptions=True)

    async def files(self) -> None:
        """1 GiB through ``files.upload`` / ``files.download``: time and the host's memory."""
        import resource
        import tracemalloc

        size = int(os.environ.get("DOCKERCC_BENCH_FILE_MIB", "1024")) << 20
        blob = self.scratch / "blob.bin"
        with open(blob, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
        volume = f"dockercc-bench-{os.getpid()}"
        pool = self.pool()
        try:
            s = pool.session(workspace=f"volume:{volume}")
            await s.start()
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            tracemalloc.start()
            t0 = time.perf_counter()
            await s.files.upload(blob, "blob.bin")
            t1 = time.perf_counter()
            await s.files.download("blob.bin", self.scratch / "back.bin")
            t2 = time.perf_counter()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.s.add("files_up_mib_s", (size >> 20) / (t1 - t0))
            self.s.add("files_down_mib_s", (size >> 20) / (t2 - t1))
            self.s.add("files_py_peak_mib", peak / 2**20)
            self.s.add("files_rss_growth_mib", (rss1 - rss0) / 1024)
            self.info["files_size_mib"] = size >> 20
            await s.close(forget=True)
        finally:
            await pool.close()
            subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)

    async def relay(self) -> None:
        runs = max(3, self.args.runs // 2)
        bench_dir = self.scratch / "relay"
        bench_dir.mkdir()
        bench_dir.chmod(0o755)
        write_executable(bench_dir / "fake-cli", "#!/usr/bin/python3\n" + FAKE_CLI.read_text())
        pool = self.pool(docker={"env": {"DOCKERCC_CLAUDE_BIN": "/bench/fake-cli"},
                                 "binds": [f"{bench_dir}:/bench:ro"]})
        try:
            async with pool.session() as s:
                await s.ask("burst 2000", timeout=120)  # warm-up
                for i in range(runs):
                    say(f"relay run {i + 1}/{runs}")
                    lat = []
                    async for ev in s.stream(f"paced {self.args.paced_events} 500", timeout=300):
                        if isinstance(ev, TextDelta):
                            lat.append(time.time() * 1000 - float(ev.text) * 1000)
                    self.s.extend("relay_latency", lat[10:])  # the first few include the turn
                    n = self.args.burst_events
                    first = last = 0.0
                    end = None
                    count = 0
                    t0 = time.perf_counter()
                    async for ev in s.stream(f"burst {n}", timeout=600):
                        if isinstance(ev, TextDelta):
                            last = time.perf_counter()
                            if not count:
                                first = last
                            count += 1
                        elif isinstance(ev, Result):
                            end = time.perf_counter()
                    if count != n:
                        raise RuntimeError(f"relay lost events: {count} of {n}")
                    self.s.add("events_per_s", (count - 1) / (last - first))
                    self.s.add("events_per_s_turn", count / ((end or last) - t0))
                    self.s.add("envelopes_per_s", await self.raw_burst(pool, s, n))
                await s.close(forget=True)
        finally:
            await pool.close()

    @staticmethod
    async def raw_burst(pool: AsyncPool, s: Any, n: int) -> float:
        """The same burst read as raw envelopes (``transport.events``): what the Redis relay
        delivers before the session maps envelopes to typed events."""
        events = await pool.transport.subscribe(s.id, s.last_seq)  # subscribe, then send
        await pool.transport.send_input(s.id, control.user_message(f"burst {n}"))
        count, first, last = 0, 0.0, 0.0
        async for env in events:
            ev = env.event
            if ev.get("type") == "stream_event" and \
                    (ev.get("event") or {}).get("type") == "content_block_delta":
                last = time.perf_counter()
                if not count:
                    first = last
                count += 1
            elif ev.get("type") == "result":
                s.last_seq = env.seq
                break
        await events.aclose()
        if count != n:
            raise RuntimeError(f"relay lost envelopes: {count} of {n}")
        return (count - 1) / (last - first)

    async def concurrency(self) -> None:
        levels = [int(x) for x in self.args.concurrency.split(",")]
        pool = self.pool()
        try:
            await pool.start()
            self.begin_check()
            for level in levels:
                reps = self.args.runs if level == 1 else max(2, self.args.runs // (level // 2 + 1))
                for i in range(reps):
                    say(f"concurrency {level}: run {i + 1}/{reps} (warming {level})")
                    await pool.warm("main", count=level, timeout=600)
                    await self.settle(2.0)
                    if level == max(levels) and i == 0 and "memory" in self.sections:
                        await self.memory_of(pool, "mem_prestarted")
                    results = await asyncio.gather(*(self.new_session(pool)
                                                     for _ in range(level)))
                    self.s.extend(f"conc_{level}", [r["first_token"] for r in results])
                    self.s.extend(f"conc_{level}_warm", [float(r["warm"]) for r in results])
            self.check.end()  # (the CPU step's sessions are not timed by the benchmark)
            await self.cpu_per_session(pool, max(levels))
            await pool.warm("main", count=0, wait=False)
        finally:
            self.check.end()
            await pool.close()

    async def cpu_per_session(self, pool: AsyncPool, level: int) -> None:
        """One more burst of ``level`` new sessions, not timed: the CPU each takes, by
        process kind. The refill is off for it, so no warm container's start-up is counted."""
        say(f"concurrency {level}: CPU per session (warming {level}, then no refill)")
        await pool.warm("main", count=level, timeout=600)
        await pool.warm("main", count=0, wait=False)
        await self.settle(2.0)
        sessions = [pool.session() for _ in range(level)]

        async def first_turn(s: Any) -> None:
            async for _ev in s.stream(PROMPT, timeout=180):
                pass

        try:
            before = cpu_seconds()
            await asyncio.gather(*(first_turn(s) for s in sessions))
            after = cpu_seconds()  # before the close: an exited process's CPU is not listed
        finally:
            await asyncio.gather(*(s.close(forget=True) for s in sessions),
                                 return_exceptions=True)
        for who, used in after.items():
            self.s.add(f"cpu_{who}", (used - before[who]) * 1000 / level)

    async def memory_of(self, pool: AsyncPool, name: str) -> None:
        import docker

        client = docker.from_env()
        try:
            for rec in await pool.containers.records():
                if rec.status != "warm":
                    continue
                stats = await asyncio.to_thread(client.containers.get(rec.name).stats,
                                                stream=False)
                mem = stats.get("memory_stats") or {}
                inner = mem.get("stats") or {}
                cache = inner.get("inactive_file", inner.get("total_inactive_file", 0))
                self.s.add(name, (mem.get("usage", 0) - cache) / 2**20)
        finally:
            client.close()

    async def memory(self) -> None:
        """Idle warm containers whose runner did not pre-start a CLI (for comparison)."""
        pool = self.pool()
        try:
            await pool.start()
            spec = spec_for(pool.config, "main", env={})
            pool.containers.register_spec(spec, warm=2)  # no prestart
            await pool.containers.top_up()
            await pool.containers.wait_warm(timeout=300)
            await self.settle(2.0)
            await self.memory_of(pool, "mem_runner_only")
            if "concurrency" not in self.sections:
                await pool.warm("main", count=2, timeout=300)
                await self.settle(2.0)
                await self.memory_of(pool, "mem_prestarted")
        finally:
            await pool.close()

    async def warmsets(self) -> None:
        """A configured agent's own system prompt, an ad-hoc one (1st and 3rd time) and a
        burst against its CPU bound (benchmarks/warmsets.py)."""
        await warmsets.run(self)

    async def burst(self) -> None:
        """The burst of ``warmsets`` alone: all at once and with first-turn admission."""
        await warmsets.burst(self)

    @property
    def sections(self) -> list[str]:
        return [x.strip() for x in self.args.sections.split(",") if x.strip()]

    def begin_check(self) -> None:
        if self.args.metrics:
            self.check.begin()

    async def run(self) -> None:
        if self.args.metrics:
            self.check.start()
        try:
            for name in self.sections:
                say(f"section {name}")
                await getattr(self, name.replace("-", "_"))()
        finally:
            self.check.close()

    async def batch(self) -> None:
        """pool.map: items per minute against a query() loop, memory over the run."""
        from . import batch

        n, c = self.args.batch_items, self.args.batch_concurrency
        m = await batch.dockercc_map(self.redis_url, self.api_url, self.args.image, items=n,
                                     concurrency=c)
        sdk = None
        if peers.sdk_available():
            sdk = await batch.sdk_loop(self.api_url, items=min(n, 200), concurrency=c)
        self.batch_rows = batch.rows(m, sdk, c)
        self.s.add("batch_per_min", m["per_min"])
        self.s.add("batch_rss_growth_mib", m["rss_growth_mib"])

    # -- report ----------------------------------------------------------------------------

    def table(self, started_load: str, seconds: float) -> str:
        s = self.s
        rows: list[list[str]] = []

        def verdict(ok: bool) -> str:
            return "met" if ok else "MISSED"

        def n(name: str) -> str:
            return str(len(s.get(name)))

        floor, warm, cold = s.med("floor"), s.med("warm"), s.med("cold")
        drun, sdk, nxt = s.med("docker_run"), s.med("sdk"), s.med("next_turn")
        if s.get("warm"):
            rows += [
                ["first token, new session: dockercc warm pool", fmt_ms(warm), n("warm"),
                 f"{fmt_ratio(warm / floor)} floor", "<= 2x floor", verdict(warm <= 2 * floor)],
                ["", "", "", f"{fmt_ratio(sdk / warm)} faster than query()",
                 ">= 8x faster", "-" if sdk != sdk else verdict(sdk / warm >= 8)],
                ["first token, new session: dockercc cold", fmt_ms(cold), n("cold"),
                 f"{fmt_ratio(cold / drun)} docker run", "<= 1.3x docker run",
                 verdict(cold <= 1.3 * drun)],
                ["first token, new session: docker run per prompt", fmt_ms(drun),
                 n("docker_run"), "", "", ""],
                ["first token, new session: claude-agent-sdk query()",
                 fmt_ms(sdk) if s.get("sdk") else "not installed", n("sdk"), "", "", ""],
                ["first token, running CLI's next turn (floor)", fmt_ms(floor), n("floor"),
                 "", "", ""],
                ["first token, next turn in a dockercc session", fmt_ms(nxt), n("next_turn"),
                 f"{fmt_ratio(nxt / floor)} floor", "", ""],
                ["claim latency, warm", fmt_ms(s.med("claim_warm")), n("claim_warm"), "", "",
                 ""],
                *([["CLI's own time to request: warm session's first turn",
                    fmt_ms(s.med("warm_cli_ttr")), n("warm_cli_ttr"),
                    f"{fmt_ms(s.med('warm_cli_ttr_cpu'))} CPU", "", ""],
                   ["CLI's own time to request: floor's next turn",
                    fmt_ms(s.med("floor_cli_ttr")), n("floor_cli_ttr"),
                    f"{fmt_ms(s.med('floor_cli_ttr_cpu'))} CPU", "", ""]]
                  if s.get("warm_cli_ttr") else []),
                ["claim latency, cold", fmt_ms(s.med("claim_cold")), n("claim_cold"), "", "",
                 ""],
            ]
        rows += options_bench.rows(s)
        if s.get("ws_plain"):
            plain = s.med("ws_plain")
            rows += [
                ["first token, new session: warm, tmpfs (scratchVolumes: false)", fmt_ms(plain),
                 n("ws_plain"), f"CLI's own {fmt_ms(s.med('ws_plain_cli_ttr'))}"
                 if s.get("ws_plain_cli_ttr") else "", "", ""],
                ["first token, new session: workspace attached, warm set with that mount",
                 fmt_ms(s.med("ws_warm")), n("ws_warm"),
                 f"{fmt_ratio(s.med('ws_warm') / plain)} tmpfs warm",
                 "<= 1.2x no-workspace", verdict(s.med("ws_warm") <= 1.2 * plain)],
                ["first token, new session: scratch volume (the default), warm",
                 fmt_ms(s.med("ws_scratch")), n("ws_scratch"),
                 f"{fmt_ratio(s.med('ws_scratch') / plain)} tmpfs; paired "
                 f"{fmt_ratio(s.med('ws_scratch_ratio'))}"
                 + (f"; CLI's own {fmt_ms(s.med('ws_scratch_cli_ttr'))}"
                    if s.get("ws_scratch_cli_ttr") else ""),
                 "<= 1.2x no-workspace", verdict(s.med("ws_scratch") <= 1.2 * plain)],
                ["first token, new session: workspace attached, no warm set (cold)",
                 fmt_ms(s.med("ws_cold")), n("ws_cold"),
                 f"{fmt_ratio(s.med('ws_cold') / plain)} tmpfs warm", "", ""],
            ]
        if s.get("files_up_mib_s"):
            mib = self.info.get("files_size_mib", 0)
            rows += [
                [f"files.upload {mib} MiB", f"{s.med('files_up_mib_s'):.0f} MiB/s",
                 n("files_up_mib_s"), "", "", ""],
                [f"files.download {mib} MiB", f"{s.med('files_down_mib_s'):.0f} MiB/s",
                 n("files_down_mib_s"), "", "", ""],
                ["host memory for both (Python peak / RSS growth)",
                 f"{s.med('files_py_peak_mib'):.1f} / {s.med('files_rss_growth_mib'):.0f} MiB",
                 n("files_py_peak_mib"), "", "flat (<= 64 MiB)",
                 verdict(s.med("files_rss_growth_mib") <= 64)],
            ]
        if s.get("relay_latency"):
            lat = s.get("relay_latency")
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            eps = s.med("events_per_s")
            rows += [
                ["relay overhead per event, p50", fmt_ms(p50), str(len(lat)), "", "<= 1 ms",
                 verdict(p50 <= 1)],
                ["relay overhead per event, p99", fmt_ms(p99), str(len(lat)), "", "<= 5 ms",
                 verdict(p99 <= 5)],
                ["events/s through one session (typed events)", f"{eps:,.0f}",
                 n("events_per_s"), f"{s.med('events_per_s_turn'):,.0f} incl. turn start/end",
                 ">= 20,000", verdict(eps >= 20000)],
                ["events/s through one session (raw envelopes)",
                 f"{s.med('envelopes_per_s'):,.0f}", n("envelopes_per_s"), "", "", ""],
            ]
        levels = sorted(int(k.split("_")[1]) for k in s.data
                        if k.startswith("conc_") and k.count("_") == 1)
        if levels:
            base = s.med(f"conc_{levels[0]}")
            for level in levels:
                value = s.med(f"conc_{level}")
                ratio = value / base
                target = "<= 3x single" if level == 16 else ""
                rows.append([f"first token p50, {level} concurrent new sessions (warm)",
                             fmt_ms(value), n(f"conc_{level}"),
                             f"{fmt_ratio(ratio)} single" if level != levels[0] else "",
                             target, verdict(ratio <= 3) if target else ""])
        if s.get("cpu_claude"):
            rows.append([f"CPU per new session, {levels[-1]} at once: Claude Code CLI",
                         fmt_ms(s.med("cpu_claude")), n("cpu_claude"),
                         f"runner {fmt_ms(s.med('cpu_runner'))}, host "
                         f"{fmt_ms(s.med('cpu_host'))}", "", ""])
        rows += warmsets.rows(s)
        for key, label in (("mem_prestarted", "idle warm container memory (CLI pre-started)"),
                           ("mem_runner_only", "idle warm container memory (runner only)")):
            if s.get(key):
                rows.append([label, f"{s.med(key):.0f} MiB", n(key), "", "", ""])
        notes = [
            f"medians of n runs (relay: percentiles over n events); Claude Code "
            f"{CLAUDE_CODE_VERSION}, scripted Messages API; containers: {CPUS:g} CPUs, {MEMORY}",
            f"load average at start {started_load}, at end {load()}; {os.cpu_count()} cores; "
            f"{seconds:.0f} s",
        ]
        if s.get("warm_prestarted"):
            notes.append(f"warm sessions served by a pre-started CLI: "
                         f"{sum(s.get('warm_prestarted')):.0f}/{len(s.get('warm_prestarted'))}")
        with contextlib.suppress(ValueError, IndexError):
            if float(started_load.split("/")[0]) > (os.cpu_count() or 1):
                notes.append(f"the machine was busy before the run (load above "
                             f"{os.cpu_count()}): absolute times are inflated, ratios less so;"
                             f" re-run when it is quiet")
        if self.info.get("sdk_missing"):
            notes.append("claude-agent-sdk is not installed: pip install claude-agent-sdk")
        rows += getattr(self, "batch_rows", [])
        return render_table("dockercc benchmarks", ["metric", "median", "n", "ratio",
                                                    "target", "result"], rows, notes)


def cli_timing(envelopes: list[Any]) -> dict[str, float]:
    """The CLI's own time to its first request, from the first ``result`` it wrote
    (``CLAUDE_CODE_EMIT_STARTUP_TIMING=1``): wall and CPU milliseconds."""
    for env in envelopes:
        ev = env.event
        if ev.get("type") == "result" and "time_to_request_ms" in ev:
            return {"ttr": float(ev["time_to_request_ms"]),
                    "ttr_cpu": float(ev.get("time_to_request_cpu_ms") or "nan")}
    return {}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this machine's processes, by kind: the Claude Code CLIs,
    dockercc runners (``python -m dockercc.agent``) and this benchmark process."""
    out = dict.fromkeys(("claude", "runner", "host"), 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) == os.getpid():
            out["host"] += used
        elif comm == "claude":
            out["claude"] += used
        elif b"dockercc.agent" in cmd:
            out["runner"] += used
    return out


def start_api() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "dockercc.testing", "--port", "0", "--text",
                             REPLY], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit("the scripted API did not start")
    return proc, url


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    p.add_argument("--image", default=os.environ.get("DOCKERCC_BENCH_IMAGE", DEFAULT_TAG),
                   help=f"agent image tag (default {DEFAULT_TAG}); built from this checkout")
    p.add_argument("--no-build", action="store_true", help="use the image as it is")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--concurrency", default="1,4,16", help="concurrency levels (default 1,4,16)")
    p.add_argument("--paced-events", type=int, default=2000,
                   help="events per latency run (0.5 ms apart)")
    p.add_argument("--burst-events", type=int, default=50000, help="events per throughput run")
    p.add_argument("--batch-items", type=int, default=1000,
                   help="items through pool.map in the batch section (default 1000)")
    p.add_argument("--batch-concurrency", type=int, default=4,
                   help="concurrency of the batch section and its query() loop (default 4)")
    p.add_argument("--json", default=None, help="also write the raw samples to this file")
    p.add_argument("--metrics", action="store_true",
                   help="scrape this process's /metrics (dockercc.metrics) around the "
                        "first-token and concurrency runs and compare with the figures above")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started, started_load = time.monotonic(), load()
    if not args.no_build:
        say(f"building {args.image} (cached by content hash)")
        build_image(args.image, progress=lambda m: None)
    redis = RedisServer()
    api, api_url = start_api()
    bench = Bench(args, redis.url, api_url)
    try:
        asyncio.run(bench.run())
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        api.terminate()
        with contextlib.suppress(Exception):
            api.wait(10)
        redis.close()
        shutil.rmtree(bench.scratch, ignore_errors=True)
    print(bench.table(started_load, time.monotonic() - started))
    if args.metrics:
        print()
        print(bench.check.table())
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": bench.s.data, "args": vars(args)},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
