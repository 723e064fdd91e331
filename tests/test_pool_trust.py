"""The pool removes only containers it can prove are its own, and survives bad registry data.

A forged registry record (anything that can write ``{p}pool:containers`` can write one) names
an unrelated container: pool start, reconcile and ``dockercc gc`` must leave that container
alone. A record that is not JSON must not break the claim script for every process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockercc.client import AsyncPool
from dockercc.config import DockerCCConfig
from dockercc.errors import BadData
from dockercc.pool.manager import ContainerPool
from dockercc.storage.connection import RedisTransport
from dockercc.storage.records import ContainerRecord

BASE_IMAGE = "dockercc/debian-base:bookworm"
CAT = {"DOCKERCC_CLAUDE_BIN": "sh -c 'exec cat'"}


def forged(name: str, rid: str = "f0f0f0f0f0f0", owner: str = "dead-owner") -> str:
    return json.dumps({"id": rid, "name": name, "spec": "x", "status": "busy", "owner": owner,
                       "created": int(time.time() * 1000) - 60000, "agent": "a",
                       "session": "s"})


@pytest.fixture
def victim(docker_client: Any) -> Iterator[Any]:
    """A plain container that is none of dockercc's business (no labels)."""
    container = docker_client.containers.run(
        BASE_IMAGE, ["sleep", "300"], name=f"victim-{uuid.uuid4().hex[:8]}", detach=True,
        network_mode="none")
    try:
        yield container
    finally:
        container.remove(force=True)


def exists(docker_client: Any, name: str) -> bool:
    return any(c["Names"][0].lstrip("/") == name
               for c in docker_client.api.containers(all=True, filters={"name": name}))


# -- without Docker: validation, quarantine, the claim script -------------------------------

@pytest.mark.parametrize("raw", [
    b"not json{", b"[1,2]", b"null", b"1e999", b"NaN", b"[" * 10000 + b"]" * 10000,
    json.dumps({"id": "x" * 100, "name": "n", "spec": "s", "status": "warm", "owner": "o",
                "created": 1}),
    json.dumps({"id": "abc", "name": "../../etc", "spec": "s", "status": "warm", "owner": "o",
                "created": 1}),
    json.dumps({"id": "abc", "name": "n", "spec": "s", "status": "pwned", "owner": "o",
                "created": 1}),
    json.dumps({"id": "abc", "name": "n", "spec": "s", "status": "warm", "owner": ["o"],
                "created": 1}),
    json.dumps({"id": "abc", "name": "n", "spec": "s", "status": "warm", "owner": "o",
                "created": "1"}),
    json.dumps({"id": "abc", "name": "n", "spec": "s", "status": "warm", "owner": "o",
                "created": 1, "pad": "x" * 20000}),
    json.dumps({"id": "other", "name": "n", "spec": "s", "status": "warm", "owner": "o",
                "created": 1}),
])
def test_bad_records_fail_validation(raw: Any) -> None:
    with pytest.raises(BadData):
        ContainerRecord.validate(raw, "abc")


async def test_bad_records_are_quarantined_and_claims_go_on(redis_server: Any,
                                                             prefix: str) -> None:
    cfg = DockerCCConfig.model_validate({"redis": {"url": redis_server.url, "keyPrefix": prefix}})
    t = RedisTransport(redis_server.url, prefix)
    pool = ContainerPool(cfg, t, owner="me")
    r = t.client
    try:
        good = json.loads(forged("clawdbot-cc-good", rid="900d900d900d", owner="me"))
        await r.hset(pool.pk.containers, mapping={
            "bad": "not json{", "deep": "[" * 5000 + "]" * 5000,
            "typed": json.dumps({"id": "typed", "name": 7, "spec": {}, "status": "warm"}),
            "900d900d900d": json.dumps(good)})
        await r.hset(pool.pk.tickets, mapping={"t1": "garbage", "t2": '{"deadline": "x"}'})
        await r.rpush(pool.pk.warm("spec1"), "bad", "typed")
        # the claim script before validation ran: bad values are skipped, not fatal
        res = await t.registry.claim_container(
            warm_set="spec1", base="", agent="main", session="s1", max_total=10,
            max_per_agent=3, owner="me", new_id="c1c1c1c1c1c1", ticket="me:t",
            ticket_deadline=0, name="clawdbot-cc-s1")
        assert res[:2] == ["cold", "c1c1c1c1c1c1"]
        assert not await r.hexists(pool.pk.tickets, "t1")
        records = await pool.records()
        assert sorted(rec.id for rec in records) == ["900d900d900d", "c1c1c1c1c1c1"]
        assert sorted(k.decode() for k in await r.hkeys(pool.pk.quarantine)) == \
            ["bad", "deep", "typed"]
        assert (await pool.stats()).quarantined == 3
        for script in (t.registry.mark_warm, t.registry.retire_warm):
            await r.hset(pool.pk.containers, "bad2", "{{{")
            assert await script("bad2", "x") is False
        assert await t.registry.reserve_warm(warm_set="spec1", max_total=10, target=1,
                                             owner="me", new_id="w1w1w1w1w1w1",
                                             name="clawdbot-cc-warm-w1")
        assert await r.hexists(pool.pk.containers, "w1w1w1w1w1w1")
    finally:
        async for key in r.scan_iter(match=f"{prefix}*"):
            await r.delete(key)
        await t.close()


# -- with Docker: a forged record naming an unrelated container ------------------------------

@pytest.mark.docker
async def test_forged_record_cannot_remove_an_unrelated_container(
        make_config: Any, docker_client: Any, prefix: str, victim: Any, tmp_path: Path,
        redis_server: Any) -> None:
    containers = f"{prefix}pool:containers"
    cfg = make_config(docker={"network": "host", "env": CAT},
                      timeouts={"healthIntervalMs": 300})
    # a dead owner's busy record naming the victim: pool start reconciles it
    redis_server.cli("hset", containers, "f0f0f0f0f0f0", forged(victim.name))
    redis_server.cli("hset", containers, "notjson", "}{ not json")
    try:
        async with AsyncPool(cfg) as pool:
            assert exists(docker_client, victim.name), "pool start removed a foreign container"
            # claims work despite the bad record, which is quarantined
            s = pool.session("main", session_id=f"trust-{uuid.uuid4().hex[:6]}", env=CAT)
            await s.start()
            assert (await pool.stats()).quarantined == 1
            assert s.lease is not None
            log_config = docker_client.api.inspect_container(s.lease.name)["HostConfig"][
                "LogConfig"]
            assert log_config == {"Type": "json-file",
                                  "Config": {"max-size": "10m", "max-file": "3"}}
            # a record owned by this live pool naming the victim: health passes and close
            # look at it, and must not remove the victim either
            redis_server.cli("hset", containers, "f1f1f1f1f1f1",
                             forged(victim.name, rid="f1f1f1f1f1f1",
                                    owner=pool.containers.owner))
            await pool.containers.check()
            await pool.containers.reconcile()
            assert exists(docker_client, victim.name)
            await s.close(forget=True)
        assert exists(docker_client, victim.name), "pool close removed a foreign container"

        # dockercc gc with a dead owner's record naming the victim
        redis_server.cli("hset", containers, "f2f2f2f2f2f2",
                         forged(victim.name, rid="f2f2f2f2f2f2"))
        conf = tmp_path / "dockercc.yaml"
        conf.write_text(yaml.safe_dump({"redis": {"url": redis_server.url, "keyPrefix": prefix}}))
        out = subprocess.run([sys.executable, "-m", "dockercc.cli", "--config", str(conf), "gc"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert exists(docker_client, victim.name), "dockercc gc removed a foreign container"
        assert victim.reload() is None and victim.status == "running"
    finally:
        for key in redis_server.keys(f"{prefix}*"):
            redis_server.cli("del", key)
