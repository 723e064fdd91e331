"""Spend limits across processes: a ledger of turn costs in Redis.

Every turn's cost is recorded once, under ``{session}:{seq}`` (the seq of its Result
envelope, fixed by the runner): ``ZADD NX`` into ``{p}budget:spend`` (score: when, in ms)
and ``HSETNX`` into ``{p}budget:cost`` (``{"usd": ..., "agent": ...}``). Recording the same
turn again (a replay after a reconnect, a Redis restart with its append-only file, another
reader of the same session) changes nothing, so nothing is counted twice. The spend of a
window is the sum of the entries whose score falls in it; every process sharing the Redis
and key prefix sees the same spend and the same limits (``budget`` in the config: the pool's
and each agent's).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .errors import BudgetExceeded

KEEP_S = 31 * 86400
"""Ledger entries older than this are dropped (the longest sensible window)."""


def ledger_keys(prefix: str) -> tuple[str, str]:
    return f"{prefix}budget:spend", f"{prefix}budget:cost"


async def record(client: Any, prefix: str, session: str, seq: int, agent: str,
                 usd: float | None, *, now_ms: int | None = None) -> bool:
    """Record one turn's cost (idempotent); True when it was new."""
    if not usd or usd <= 0:
        return False
    zkey, hkey = ledger_keys(prefix)
    member = f"{session}:{seq}"
    when = now_ms if now_ms is not None else int(time.time() * 1000)
    pipe = client.pipeline(transaction=True)
    pipe.hsetnx(hkey, member, json.dumps({"usd": float(usd), "agent": agent}))
    pipe.zadd(zkey, {member: when}, nx=True)
    pipe.zremrangebyscore(zkey, 0, when - KEEP_S * 1000)
    added, _, _ = await pipe.execute()
    return bool(added)


async def spend(client: Any, prefix: str, window_s: float, agent: str | None = None) -> float:
    """USD spent in the last ``window_s`` seconds (by ``agent``, or by everyone)."""
    zkey, hkey = ledger_keys(prefix)
    since = int((time.time() - window_s) * 1000)
    members = await client.zrangebyscore(zkey, since, "+inf")
    if not members:
        return 0.0
    total = 0.0
    for raw in await client.hmget(hkey, members):
        if raw is None:
            continue
        try:
            entry = json.loads(raw)
            if agent is None or entry.get("agent") == agent:
                total += float(entry.get("usd") or 0)
        except (ValueError, TypeError, AttributeError):
            continue
    return total


def configured(config: Any) -> bool:
    """Whether any budget (the pool's or an agent's) is set: only then are costs recorded.
    Processes that share a pool should share its budget settings, or their spend is not
    counted."""
    return config.budget.usd is not None or any(
        agent.budget.usd is not None for agent in config.agents.values())


async def report(client: Any, prefix: str, config: Any) -> list[dict[str, Any]]:
    """Spend against every configured budget (pool first), for ``dockercc status``."""
    out = []
    if config.budget.usd is not None:
        out.append({"scope": "pool", "limit_usd": config.budget.usd,
                    "window_s": config.budget.window_s,
                    "spent_usd": await spend(client, prefix, config.budget.window_s)})
    for name, agent in config.agents.items():
        if agent.budget.usd is not None:
            out.append({"scope": f"agent:{name}", "limit_usd": agent.budget.usd,
                        "window_s": agent.budget.window_s,
                        "spent_usd": await spend(client, prefix, agent.budget.window_s, name)})
    return out


async def check(client: Any, prefix: str, config: Any, agent: str) -> None:
    """Raise :class:`BudgetExceeded` when the pool's or ``agent``'s budget is used up."""
    checks: list[tuple[str, Any, str | None]] = [("pool", config.budget, None)]
    agent_config = config.agents.get(agent)
    if agent_config is not None:
        checks.append((f"agent:{agent}", agent_config.budget, agent))
    for scope, budget, who in checks:
        if budget.usd is None:
            continue
        spent = await spend(client, prefix, budget.window_s, who)
        if spent >= budget.usd:
            raise BudgetExceeded(scope, spent, budget.usd, budget.window_s)
