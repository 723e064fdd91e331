"""First token of a new session with its own options, from a default warm pool.

The run-time part of a session (model, permission mode, env, allowed / disallowed tools) is
applied to the warm container's pre-started CLI with control requests at the claim (see
docs/cli-runtime.md), so these sessions should be as fast as a default one: >= 8x faster than
claude-agent-sdk ``query()`` and <= 2x the running-CLI floor, in the same run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import peers
from ._common import PROMPT, fmt_ms, fmt_ratio

#: (sample key, row label, session options)
KINDS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("opt_default", "default options (reference)", {}),
    ("opt_model", "own model", {"model": "claude-sonnet-4-5"}),
    ("opt_mode", "own permission mode", {"permission_mode": "acceptEdits"}),
    ("opt_env", "own env entry", {"env": {"BENCH_FLAG": "on"}}),
    ("opt_allowed", "own allowed tools", {"allowed_tools": ["Bash", "Read"]}),
)


async def run(bench: Any) -> None:
    """Round robin over the running-CLI floor, each option kind and (if installed)
    ``query()``, ``bench.args.runs`` times; medians land in ``bench.s``."""
    floor, sdk, env, work = await peers.host_peers(bench.api_url, bench.scratch, "opt")
    pool = bench.pool()
    try:
        await pool.warm("main", count=1, timeout=300)
        await bench.new_session(pool)  # warm-up of the path
        for i in range(bench.args.runs):
            bench.say(f"options run {i + 1}/{bench.args.runs}")
            bench.s.add("opt_floor", await floor.turn(PROMPT))
            for key, _label, options in KINDS:
                await pool.containers.wait_warm(timeout=300)
                await bench.settle()
                r = await bench.new_session(pool, options=options)
                bench.s.add(key, r["first_token"])
                bench.s.add(key + "_prestarted", float(r["warm"] and r["prestarted"]))
                for part in ("claim", "ttr", "ttr_cpu"):
                    if isinstance(r.get(part), float | int):
                        bench.s.add(f"{key}_{part}", float(r[part]))
            if sdk:
                await bench.settle()
                bench.s.add("opt_sdk", await peers.sdk_query(env, work))
    finally:
        await floor.close()
        await asyncio.gather(pool.close(), return_exceptions=True)


def rows(s: Any) -> list[list[str]]:
    if not s.get("opt_floor"):
        return []
    floor, sdk = s.med("opt_floor"), s.med("opt_sdk") if s.get("opt_sdk") else float("nan")

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    out: list[list[str]] = []
    for key, label, _options in KINDS:
        if not s.get(key):
            continue
        v = s.med(key)
        served = sum(s.get(key + "_prestarted"))
        out += [
            [f"first token, new session with its {label}: dockercc warm pool", fmt_ms(v),
             str(len(s.get(key))), f"{fmt_ratio(v / floor)} floor "
             f"(pre-started CLI {served:.0f}/{len(s.get(key))})", "<= 2x floor",
             verdict(v <= 2 * floor)],
            ["", "", "", f"{fmt_ratio(sdk / v)} faster than query()", ">= 8x faster",
             "-" if sdk != sdk else verdict(sdk / v >= 8)],
        ]
    out += [
        ["first token (options section): running CLI's next turn (floor)", fmt_ms(floor),
         str(len(s.get("opt_floor"))), "", "", ""],
        ["first token (options section): claude-agent-sdk query()",
         fmt_ms(sdk) if s.get("opt_sdk") else "not installed", str(len(s.get("opt_sdk"))),
         "", "", ""],
    ]
    return out
