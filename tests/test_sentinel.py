"""Redis Sentinel (issue 19): ``redis+sentinel://`` URLs for the pool, the sessions and the
runner, and a fail-over (real primary, replica and ``redis-sentinel`` on loopback) during a
short chaos run: no acknowledged input and no output envelope lost, every caller either goes
on transparently or gets a typed error."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PREFIXES

from benchmarks.chaos import ChaosRun, ChaosSettings
from dockercc.client import AsyncPool
from dockercc.config import resolve_config
from dockercc.pool.spec import relay_url
from dockercc.protocol.keys import acl_user_container
from dockercc.storage.sentinel import connect, current_primary, parse_sentinel_url
from dockercc.testing import text
from dockercc.testing.sentinel import SentinelGroup


def test_sentinel_urls_parse_and_keep_their_password_out_of_sight() -> None:
    url = "redis+sentinel://app:s3cret@127.0.0.1:26379,[::1]:26380/mymaster/2"
    t = parse_sentinel_url(url)
    assert t.sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert (t.service, t.db, t.username, t.password) == ("mymaster", 2, "app", "s3cret")
    assert "s3cret" not in repr(t)
    cfg = resolve_config({"redis": {"url": url}})
    assert "s3cret" not in str(cfg.redis.url) and "s3cret" not in repr(cfg)
    # runners on the none network: the relay's unix socket, same user and database
    assert relay_url(url) == "unix://app:s3cret@/run/dockercc/redis/relay.sock?db=2"
    for bad in ("redis+sentinel://127.0.0.1:26379", "redis+sentinel:///mymaster",
                "redis+sentinel://h:x/m", "redis+sentinel://h:1/m/notadb"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with SentinelGroup(tmp_path / "sentinel") as group:
        yield group


async def test_a_client_follows_the_fail_over_and_acl_users_are_not_replicated(
        sentinel_group: SentinelGroup) -> None:
    """What the pool's repair relies on: data written before the fail-over is on the new
    primary (it replicated), ACL users are not (Redis does not replicate ACL SETUSER), so
    the pool re-creates them from ``{p}pool:acl``."""
    r = connect(sentinel_group.url, socket_connect_timeout=2)
    try:
        await r.set("sentinel-probe", "1")
        await r.wait(1, 2000)  # (acknowledged by the replica)
        sentinel_group.primary().cli("acl", "setuser", "probe-user", "on", ">pw", "~x", "+get")
        old = await current_primary(sentinel_group.url)
        took = sentinel_group.fail_over()
        assert await current_primary(sentinel_group.url) != old
        deadline = time.monotonic() + 20
        while True:
            try:
                assert await r.get("sentinel-probe") == b"1"
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert "probe-user" not in sentinel_group.primary().cli("acl", "users").split()
        print(f"\nfail-over took {took:.1f}s")
    finally:
        await r.delete("sentinel-probe")
        await r.aclose()


@pytest.mark.docker
@pytest.mark.timeout(300)
async def test_a_session_behind_the_relay_goes_on_after_a_fail_over(
        sentinel_group: SentinelGroup, api: Any, agent_image: str, docker_client: Any) -> None:
    """Network none: the runner's only way to Redis is the pool's relay, which asks the
    sentinel for the primary on each connection; its ACL user is re-created on the new
    primary by the pool's health pass."""
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(prefix)
    api.on("before", text("before the fail-over"))
    api.on("after", text("after the fail-over"))
    cfg = {"image": agent_image, "redis": {"url": sentinel_group.url, "keyPrefix": prefix},
           "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
           "resources": {"memory": "1g", "cpus": 1},
           "timeouts": {"healthIntervalMs": 500, "startupMs": 60000, "staleAfterMisses": 20},
           "pool": {"acquireTimeoutMs": 60000}}
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id=f"fo-{uuid.uuid4().hex[:6]}")
        assert (await s.ask("before", timeout=120)).ok
        lease = s.lease
        assert lease is not None
        await asyncio.to_thread(sentinel_group.fail_over)
        result = await s.ask("after", timeout=120)
        assert result.ok and "after the fail-over" in result.text
        assert s.lease is not None and s.lease.container == lease.container  # went on
        users = [u for u in sentinel_group.primary().cli("acl", "users").split()
                 if acl_user_container(prefix, u) is not None]
        assert users, "the container's Redis user was not re-created on the new primary"
        await s.close(forget=True)
    left = sentinel_group.keys(f"{prefix}*")
    assert left == [], left


@pytest.mark.docker
@pytest.mark.timeout(600)
async def test_chaos_run_with_a_sentinel_fail_over(
        sentinel_group: SentinelGroup, api: Any, agent_image: str, docker_client: Any) -> None:
    settings = ChaosSettings(sessions=4, turns=4, kills=1, redis_restarts=1, max_total=4,
                             health_interval_ms=500, run_timeout_s=300, image=agent_image,
                             seed=11, failover=True)
    run = ChaosRun(settings, redis=sentinel_group, api=api)
    TEST_PREFIXES.add(run.prefix)
    report = await run.run()
    print("\n" + report.summary())
    print("\n".join(report.incidents))
    assert report.redis_restarts == 1 and len(report.failover_s) == 1
    assert report.turns_completed == 16
    assert report.lost_inputs == 0 and report.inputs_left_in_queues == 0
    assert report.buffer_seq_gaps == 0 and report.buffer_seq_dups == 0
    assert report.observer_seq_gaps == 0 and report.observer_seq_dups == 0
    assert report.untyped_errors == [] and report.hangs == 0
    assert report.affected_unaccounted == []
    assert report.containers_left == 0 and report.keys_left == 0
    assert report.ok, report.failures()
