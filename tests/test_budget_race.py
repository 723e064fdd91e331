"""Budgets across processes: admitting a turn is one atomic step in Redis (the ledger plus
the turns admitted but not settled), so processes racing for the last room under a limit
cannot both get in; a dead process's hold goes with its heartbeat; nothing is counted twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import dockercc
from dockercc import budget as ledger
from dockercc.config import resolve_config
from dockercc.pool.manager import ContainerPool
from dockercc.storage.connection import RedisTransport
from dockercc.testing import text

ROOT = Path(dockercc.__file__).parents[1]

_ADMITTER = """
import asyncio, json, sys, time
from dockercc import BudgetExceeded, budget
from dockercc.config import resolve_config
from dockercc.pool.manager import ContainerPool
from dockercc.storage.connection import RedisTransport

cfg, go, tasks, rounds = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

async def main():
    config = resolve_config(cfg)
    t = RedisTransport(config.redis.url_secret(), config.redis.key_prefix)
    pool = ContainerPool(config, t)
    admitted = refused = 0
    while not __import__("os").path.exists(go):
        time.sleep(0.01)

    async def one(i):
        nonlocal admitted, refused
        for r in range(rounds):
            hold = f"race-{pool.owner}-{i}-{r}"
            try:
                await budget.admit(pool, config, "main", hold)
            except BudgetExceeded:
                refused += 1
                continue
            admitted += 1
            await asyncio.sleep(0.01)  # the turn runs
            await budget.settle(pool, hold, hold, 1, "main", 1.0)

    await asyncio.gather(*(one(i) for i in range(tasks)))
    await t.close()
    print(json.dumps({"admitted": admitted, "refused": refused}))

asyncio.run(main())
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


async def _seed(redis_url: str, prefix: str, usd: float) -> None:
    t = RedisTransport(redis_url, prefix)
    try:
        await ledger.record(t, "seed", 1, "main", usd)
    finally:
        await t.close()


async def _after(url: str, prefix: str, *, forget_owners: bool = False) -> tuple[float, int]:
    """The ledger's spend and whether holds are left; the bare ContainerPools of a test
    (no pool.start, so no pool.close) leave their owner heartbeats: removed here."""
    t = RedisTransport(url, prefix)
    try:
        if forget_owners:
            await t.client.delete(t.pool_keys.owners)
        return (await ledger.spend(t, 3600),
                await t.client.exists(t.pool_keys.budget_holds))
    finally:
        await t.close()


def test_processes_racing_for_the_budget_admit_exactly_what_fits(
        redis_server: Any, prefix: str, tmp_path: Path) -> None:
    """Two processes, eight concurrent turns each, every turn costing $1 against a $10
    budget with $1 already spent: exactly nine turns get in, whatever the interleaving."""
    cfg = {"redis": {"url": redis_server.url, "keyPrefix": prefix},
           "budget": {"usd": 10.0, "windowS": 3600}}
    asyncio.run(_seed(redis_server.url, prefix, 1.0))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _ADMITTER, json.dumps(cfg), str(go), "8",
                               "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env()) for _ in range(2)]
    time.sleep(1.5)  # both imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sum(g["admitted"] for g in got) == 9, got
    assert sum(g["admitted"] + g["refused"] for g in got) == 2 * 8 * 3
    # every admitted turn was settled once: the ledger holds exactly the limit, no hold left

    spent, holds = asyncio.run(_after(redis_server.url, prefix, forget_owners=True))
    assert spent == pytest.approx(10.0) and holds == 0


def test_a_dead_processs_hold_goes_with_its_heartbeat_and_settling_twice_counts_once(
        redis_server: Any, prefix: str, tmp_path: Path) -> None:
    config = resolve_config({"redis": {"url": redis_server.url, "keyPrefix": prefix},
                             "budget": {"usd": 1.5, "windowS": 3600},
                             "timeouts": {"healthIntervalMs": 200, "staleAfterMisses": 2}})
    asyncio.run(_seed(redis_server.url, prefix, 1.0))

    async def run() -> None:
        t = RedisTransport(redis_server.url, prefix)
        a, b = ContainerPool(config, t), ContainerPool(config, t)
        try:
            assert await ledger.admit(a, config, "main", "hold-a")
            # b cannot get in while a's turn (expected $1, the window's mean) runs
            with pytest.raises(dockercc.BudgetExceeded) as err:
                await ledger.admit(b, config, "main", "hold-b")
            assert err.value.scope == "pool" and err.value.spent_usd == pytest.approx(1.0)
            assert err.value.in_flight_usd == pytest.approx(1.0)
            assert "expected from turns still running" in str(err.value)
            # a's process dies: its heartbeat stops; once stale (1 s at the least) its hold
            # no longer counts
            await asyncio.sleep(1.3)
            assert await ledger.admit(b, config, "main", "hold-b")
            assert not await t.client.hexists(t.pool_keys.budget_holds, "hold-a")
            # b's turn settles; a replay of the same settlement (a reconnect) counts nothing
            assert await ledger.settle(b, "hold-b", "sess-b", 7, "main", 0.25)
            assert not await ledger.settle(b, "hold-b", "sess-b", 7, "main", 0.25)
            assert await ledger.spend(t, 3600) == pytest.approx(1.25)
            assert not await t.client.exists(t.pool_keys.budget_holds)
        finally:
            await t.client.delete(t.pool_keys.owners)
            await t.close()

    asyncio.run(run())


_SESSION = """
import json, os, sys, time
from dockercc import BudgetExceeded, Pool
cfg, go, sid = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with Pool(cfg) as pool:
    s = pool.session(session_id=sid)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    try:
        r = s.ask("race", timeout=90)
        out = {"admitted": True, "cost": r.cost_usd, "text": r.text}
    except BudgetExceeded as exc:
        out = {"admitted": False, "scope": exc.scope, "spent": exc.spent_usd,
               "in_flight": exc.in_flight_usd}
    s.close(forget=True)
print(json.dumps(out))
"""


@pytest.mark.docker
def test_two_pools_racing_to_start_turns_only_one_crosses_the_budget(
        make_config: Any, api: Any, redis_server: Any, prefix: str, tmp_path: Path) -> None:
    """Two processes with their own pools on one Redis race to start a turn with room under
    the pool budget for one: one runs (in a container), the other gets BudgetExceeded, and
    the ledger has the seed plus exactly the one turn's cost."""
    cfg = make_config(budget={"usd": 1.5, "windowS": 3600})
    asyncio.run(_seed(redis_server.url, prefix, 1.0))
    api.script(text("the one that fits", delay=0.05), text("never"))
    go = tmp_path / "go"
    procs = [subprocess.Popen(
        [sys.executable, "-c", _SESSION, json.dumps(cfg), str(go),
         f"race-{i}-{uuid.uuid4().hex[:6]}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for i in range(2)]
    try:
        for p in procs:  # both pools up before the race
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", (line, p.stderr.read() if p.stderr else "")
        go.touch()
        outs = [p.communicate(timeout=150) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    ran = [g for g in got if g["admitted"]]
    stopped = [g for g in got if not g["admitted"]]
    assert len(ran) == 1 and len(stopped) == 1, got
    assert ran[0]["text"] == "the one that fits" and ran[0]["cost"] > 0
    assert stopped[0]["scope"] == "pool" and stopped[0]["spent"] >= 1.0

    spent, holds = asyncio.run(_after(redis_server.url, prefix))
    assert spent == pytest.approx(1.0 + ran[0]["cost"]) and holds == 0
