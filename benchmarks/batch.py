"""``pool.map`` throughput: N items through the scripted API as a configured agent (its own
system prompt), items per minute against a claude-agent-sdk ``query()`` loop at the same
concurrency, and the host process's memory over the run (RSS sampled every 0.25 s).

    python -m benchmarks.batch --items 1000 --concurrency 4        # on its own
    python -m benchmarks --sections batch --batch-items 1000        # a row of the main table

The query() loop runs in a child process (clean environment, scratch HOME, the scripted API)
with ``--sdk-items`` prompts (default: as many as the map, at most 200): a rate is compared,
and the SDK's per-prompt cost does not change with N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dockercc.client import AsyncPool

from . import peers
from ._common import RedisServer, clean_env, fmt_ratio, load, render_table

AGENT = "bench"
SYSTEM_PROMPT = "You are a terse classifier. Answer with one word."
ROOT = str(Path(__file__).resolve().parent.parent)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def dockercc_map(redis_url: str, api_url: str, image: str, *, items: int,
                       concurrency: int, prefix: str = "bench:map:",
                       reuse: bool = True) -> dict[str, Any]:
    config = {
        "image": image,
        "redis": {"url": redis_url, "keyPrefix": prefix},
        "credentials": {"baseUrl": api_url, "apiKey": "sk-ant-scripted-bench"},
        "pool": {"maxTotal": 2 * concurrency, "maxPerAgent": 2 * concurrency},
        "agents": {AGENT: {"systemPrompt": SYSTEM_PROMPT}},
    }
    prompts = [f"Classify item {i}: the service was {'great' if i % 2 else 'slow'}"
               for i in range(items)]
    samples: list[tuple[int, float]] = []
    async with AsyncPool(config) as pool:
        await pool.warm(AGENT, concurrency, timeout=300)
        run = pool.map(prompts, AGENT, concurrency=concurrency, progress=False, reuse=reuse)

        async def sample() -> None:
            while True:
                samples.append((run.progress.done + run.progress.failed, rss_mib()))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        t0 = time.perf_counter()
        try:
            results = await run.gather()
        finally:
            sampler.cancel()
        elapsed = time.perf_counter() - t0
    ok = len(results.ok)
    errors: dict[str, int] = {}
    for r in results.failed:
        errors[f"{r.error_type}: {(r.error or '')[:120]}"] = errors.get(
            f"{r.error_type}: {(r.error or '')[:120]}", 0) + 1
    # memory from a tenth of the way in (imports and pool set-up done) to the end
    start = next((r for d, r in samples if d >= items / 10), samples[0][1] if samples else 0)
    peak = max((r for _, r in samples), default=0.0)
    return {"items": items, "ok": ok, "failed": len(results.failed), "seconds": elapsed,
            "per_min": ok / elapsed * 60, "rss_start_mib": start, "rss_peak_mib": peak,
            "rss_end_mib": samples[-1][1] if samples else 0.0,
            "rss_growth_mib": (samples[-1][1] if samples else 0.0) - start,
            "errors": errors, "retries": run.progress.retries, "reuse": reuse,
            "sessions": len({r.session_id for r in results.ok})}


async def sdk_loop(api_url: str, *, items: int, concurrency: int) -> dict[str, Any]:
    """claude-agent-sdk query() for each prompt, ``concurrency`` at a time (child process)."""
    home = tempfile.mkdtemp(prefix="dockercc-bench-sdk-")
    work = tempfile.mkdtemp(prefix="dockercc-bench-sdkw-")
    env = clean_env({"ANTHROPIC_BASE_URL": api_url, "ANTHROPIC_API_KEY": "sk-ant-scripted-bench",
                     "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}, home)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.batch", "--sdk-child", "--items", str(items),
        "--concurrency", str(concurrency), "--cli", peers.claude_path(), "--cwd", work,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**env, "PYTHONPATH": ROOT}, cwd=ROOT)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"query() loop failed: {err.decode(errors='replace')[-800:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def _sdk_child(items: int, concurrency: int, cli: str, cwd: str) -> dict[str, Any]:
    from claude_agent_sdk import ClaudeAgentOptions, query
    from claude_agent_sdk.types import ResultMessage

    options = ClaudeAgentOptions(cli_path=cli, cwd=cwd, system_prompt=SYSTEM_PROMPT)
    gate = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        async with gate:
            async for message in query(prompt=f"Classify item {i}", options=options):
                if isinstance(message, ResultMessage):
                    ok += not message.is_error
                    break

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(items)))
    elapsed = time.perf_counter() - t0
    return {"items": items, "ok": ok, "seconds": elapsed, "per_min": ok / elapsed * 60}


def rows(m: dict[str, Any], sdk: dict[str, Any] | None, concurrency: int) -> list[list[str]]:
    ratio = m["per_min"] / sdk["per_min"] if sdk and sdk["per_min"] else float("nan")
    return [
        [f"pool.map{'' if m['reuse'] else ' (reuse=False)'}: {m['items']} items, agent's own "
         f"system prompt, concurrency {concurrency}",
         f"{m['per_min']:.0f} items/min", str(m["ok"]),
         f"{fmt_ratio(ratio)} query() loop" if sdk else "query() not measured",
         ">= 5x query()", "-" if ratio != ratio else "met" if ratio >= 5 else "MISSED"],
        [f"claude-agent-sdk query() loop, concurrency {concurrency}",
         f"{sdk['per_min']:.0f} items/min" if sdk else "not installed",
         str(sdk["ok"]) if sdk else "0", "", "", ""],
        ["pool.map host RSS growth (10% done -> end) / peak",
         f"{m['rss_growth_mib']:.1f} / {m['rss_peak_mib']:.0f} MiB", str(m["items"]), "",
         "flat (<= 64 MiB)", "met" if m["rss_growth_mib"] <= 64 else "MISSED"],
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--sdk-items", type=int, default=None)
    p.add_argument("--no-reuse", action="store_true",
                   help="pool.map(reuse=False): a new session (container) per item")
    p.add_argument("--image", default=os.environ.get("DOCKERCC_BENCH_IMAGE",
                                                     "clawdbot/docker-cc:latest"))
    p.add_argument("--sdk-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cli", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cwd", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sdk_child:
        print(json.dumps(asyncio.run(_sdk_child(args.items, args.concurrency, args.cli,
                                                args.cwd))))
        return 0
    from .__main__ import start_api

    started_load = load()
    redis = RedisServer()
    api, api_url = start_api()
    try:
        m = asyncio.run(dockercc_map(redis.url, api_url, args.image, items=args.items,
                                     concurrency=args.concurrency, reuse=not args.no_reuse))
        sdk = None
        if peers.sdk_available():
            sdk = asyncio.run(sdk_loop(api_url, items=args.sdk_items or min(args.items, 200),
                                       concurrency=args.concurrency))
    finally:
        api.terminate()
        redis.close()
    print(render_table("pool.map throughput", ["metric", "value", "n", "ratio", "target",
                                               "result"], rows(m, sdk, args.concurrency),
                       [f"load average at start {started_load}, at end {load()}; "
                        f"{os.cpu_count()} cores; map {m['seconds']:.0f} s"
                        + (f", query() loop {sdk['seconds']:.0f} s for {sdk['items']} items"
                           if sdk else "")]))
    print(json.dumps({"map": m, "sdk": sdk}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
