"""Spend limits across processes: a ledger of turn costs in Redis.

Every turn's cost is recorded once, under ``{session}:{seq}`` (the seq of its Result
envelope, fixed by the runner): ``ZADD NX`` into ``{p}budget:spend`` (score: when, in ms)
and ``HSETNX`` into ``{p}budget:cost`` (``{"usd": ..., "agent": ...}``). Recording the same
turn again (a replay after a reconnect, a Redis restart with its append-only file, another
reader of the same session) changes nothing, so nothing is counted twice. The spend of a
window is the sum of the entries whose score falls in it; every process sharing the Redis
and key prefix sees the same spend and the same limits (``budget`` in the config: the pool's
and each agent's).

Admission is atomic across processes: a turn starts only through :func:`admit`, one Lua
script (:data:`dockercc.storage.scripts.BUDGET_ADMIT`, run by
:class:`dockercc.storage.budget.BudgetLedger`) that checks every limit against the
ledger *and the turns already admitted but not yet settled* (``{p}budget:holds``, each held at
the mean cost of the window's turns), and holds the new turn's place. So when two processes
race for the last room under a limit, one gets in and the other gets
:class:`~dockercc.errors.BudgetExceeded`. The turn's Result settles its hold: the hold goes
and the cost enters the ledger in one step (:func:`settle`); a turn that ends without a
Result releases it. A hold of a process that died goes when its owner heartbeat
(``pool:owners``) goes stale, or after :data:`HOLD_MS` at the latest.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .errors import BudgetExceeded

KEEP_S = 31 * 86400
"""Ledger entries older than this are dropped (the longest sensible window)."""


HOLD_MS = 3_600_000
"""The longest a turn holds its place under a budget without being settled (its process
alive but the turn never read to its end)."""


def entry(agent: str, usd: float) -> str:
    """A ledger entry (the value under ``session:seq`` in ``budget:cost``)."""
    return json.dumps({"usd": float(usd), "agent": agent})


def limits(config: Any, agent: str) -> list[tuple[str, float, float, str]]:
    """The limits a turn of ``agent`` must fit: (scope, window s, limit USD, agent filter)."""
    out: list[tuple[str, float, float, str]] = []
    if config.budget.usd is not None:
        out.append(("pool", config.budget.window_s, config.budget.usd, ""))
    agent_config = config.agents.get(agent)
    if agent_config is not None and agent_config.budget.usd is not None:
        out.append((f"agent:{agent}", agent_config.budget.window_s, agent_config.budget.usd,
                    agent))
    return out


async def admit(containers: Any, config: Any, agent: str, hold: str) -> bool:
    """Admit one turn of ``agent`` and hold its place (atomic across processes), or raise
    :class:`BudgetExceeded` naming the limit; False when no budget applies (nothing held).
    ``containers`` is the pool's :class:`~dockercc.pool.manager.ContainerPool`."""
    checks = limits(config, agent)
    if not checks:
        return False
    ok, scope, spent, held = await containers.admit_turn(hold, agent, checks)
    if not ok:
        window = next(c[1] for c in checks if c[0] == scope)
        limit = next(c[2] for c in checks if c[0] == scope)
        raise BudgetExceeded(scope, spent, limit, window, in_flight_usd=held)
    return True


async def settle(containers: Any, hold: str, session: str | None = None, seq: int = 0,
                 agent: str = "", usd: float | None = None) -> bool:
    """End a turn's hold; with its cost (``usd`` > 0) the ledger gets it under
    ``session:seq``, in the same step and only once. True when the cost was new."""
    if session is None or not usd or usd <= 0:
        await containers.settle_turn(hold)
        return False
    return bool(await containers.settle_turn(hold, f"{session}:{seq}", entry(agent, usd)))


async def record(store: Any, session: str, seq: int, agent: str, usd: float | None, *,
                 now_ms: int | None = None) -> bool:
    """Record one turn's cost (idempotent); True when it was new. ``store`` is the pool's
    :class:`~dockercc.storage.connection.RedisTransport` (``pool.transport``)."""
    if not usd or usd <= 0:
        return False
    when = now_ms if now_ms is not None else int(time.time() * 1000)
    return await store.budget.record(f"{session}:{seq}", entry(agent, usd), when,
                                     KEEP_S * 1000)


async def spend(store: Any, window_s: float, agent: str | None = None) -> float:
    """USD spent in the last ``window_s`` seconds (by ``agent``, or by everyone)."""
    total = 0.0
    for item in await store.budget.entries(int((time.time() - window_s) * 1000)):
        if agent is None or item.get("agent") == agent:
            try:
                total += float(item.get("usd") or 0)
            except (ValueError, TypeError):
                continue
    return total


def configured(config: Any) -> bool:
    """Whether any budget (the pool's or an agent's) is set: only then are costs recorded.
    Processes that share a pool should share its budget settings, or their spend is not
    counted."""
    return config.budget.usd is not None or any(
        agent.budget.usd is not None for agent in config.agents.values())


async def report(store: Any, config: Any) -> list[dict[str, Any]]:
    """Spend against every configured budget (pool first), for ``dockercc status``."""
    out = []
    if config.budget.usd is not None:
        out.append({"scope": "pool", "limit_usd": config.budget.usd,
                    "window_s": config.budget.window_s,
                    "spent_usd": await spend(store, config.budget.window_s)})
    for name, agent in config.agents.items():
        if agent.budget.usd is not None:
            out.append({"scope": f"agent:{name}", "limit_usd": agent.budget.usd,
                        "window_s": agent.budget.window_s,
                        "spent_usd": await spend(store, agent.budget.window_s, name)})
    return out


async def check(store: Any, config: Any, agent: str) -> None:
    """Raise :class:`BudgetExceeded` when the pool's or ``agent``'s budget is used up by
    the ledger alone (a look, not an admission: sessions use :func:`admit`)."""
    for scope, window_s, limit, who in limits(config, agent):
        spent = await spend(store, window_s, who or None)
        if spent >= limit:
            raise BudgetExceeded(scope, spent, limit, window_s)
