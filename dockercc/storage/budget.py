"""The spend ledger (``{p}budget:spend``, ``{p}budget:cost``) and the holds of admitted turns
(``{p}budget:holds``); the policy (which limits apply, what to raise) is :mod:`dockercc.budget`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import scripts
from .values import as_str, now_ms

if TYPE_CHECKING:
    from .connection import RedisTransport


class BudgetLedger:
    """Budget commands (``transport.budget``)."""

    def __init__(self, transport: RedisTransport) -> None:
        self._t = transport
        self.keys = transport.pool_keys
        self._admit: Any = None
        self._settle: Any = None

    async def admit(self, *, hold: str, agent: str, owner: str, stale_ms: int, hold_ms: int,
                    limits: list[tuple[str, float, float, str]]
                    ) -> tuple[bool, str, float, float]:
        """Admit one turn under ``limits`` (scope, window s, limit USD, agent filter) and hold
        its place, atomically across processes (:data:`~.scripts.BUDGET_ADMIT`)."""
        if self._admit is None:
            self._admit = self._t.client.register_script(scripts.BUDGET_ADMIT)
        k = self.keys
        args: list[Any] = [now_ms(), hold, agent, owner, stale_ms, hold_ms]
        for scope, window_s, limit, who in limits:
            args += [scope, int(window_s * 1000), repr(float(limit)), who]
        got = await self._admit(keys=[k.budget_spend, k.budget_cost, k.budget_holds, k.owners],
                                args=args)
        ok, scope = bool(int(got[0])), as_str(got[1])
        if ok:
            return True, "", float(as_str(got[2])), 0.0
        return False, scope, float(as_str(got[2])), float(as_str(got[3]))

    async def settle(self, hold: str, member: str, entry: str, keep_ms: int) -> bool:
        """End a hold and enter the cost (if ``member``) in one step; True when new."""
        if self._settle is None:
            self._settle = self._t.client.register_script(scripts.BUDGET_SETTLE)
        k = self.keys
        added = await self._settle(keys=[k.budget_spend, k.budget_cost, k.budget_holds],
                                   args=[now_ms(), hold, member, entry, keep_ms])
        return bool(int(added or 0))

    async def record(self, member: str, entry: str, when_ms: int, keep_ms: int) -> bool:
        """Enter one cost (idempotent: ``HSETNX`` / ``ZADD NX``); True when it was new."""
        k = self.keys
        pipe = self._t.client.pipeline(transaction=True)
        pipe.hsetnx(k.budget_cost, member, entry)
        pipe.zadd(k.budget_spend, {member: when_ms}, nx=True)
        pipe.zremrangebyscore(k.budget_spend, 0, when_ms - keep_ms)
        added, _, _ = await pipe.execute()
        return bool(added)

    async def entries(self, since_ms: int) -> list[dict[str, Any]]:
        """The ledger's entries since ``since_ms`` (``{"usd", "agent"}``; bad ones skipped)."""
        k = self.keys
        members: list[Any] = await self._t.client.zrangebyscore(k.budget_spend, since_ms, "+inf")
        if not members:
            return []
        out = []
        for raw in await self._t.client.hmget(k.budget_cost, members):
            if raw is None:
                continue
            try:
                entry = json.loads(raw)
            except (ValueError, TypeError):
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out
