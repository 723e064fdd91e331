"""Least-privilege Redis per container: the ACL rules builder, :class:`ContainerACL` against the
real test redis-server (the real runner as a subprocess, ``cat`` standing in for the CLI), and
the pool with real containers, the real CLI and the scripted API.

The "attacker" in these tests holds a container's credentials (read from the pool object
in-process, as a stand-in for a compromised container that read its own environment) and
tries everything the container's runner has no business doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from dockercc.errors import ConfigError, DockerCCError, InvalidSessionId, IsolationError
from dockercc.protocol import control
from dockercc.protocol.keys import (
    PoolKeys,
    SessionKeys,
    acl_user_container,
    container_acl_rules,
    container_acl_user,
    glob_escape,
)
from dockercc.storage.acl import RUNNER_COMMANDS, ContainerACL, with_credentials
from dockercc.storage.connection import RedisTransport
from dockercc.storage.records import ContainerRecord

ROOT = Path(__file__).resolve().parent.parent

# -------------------------------------------------------------------------- rules builder


def test_warm_rules_are_the_containers_own_record_only() -> None:
    pk = PoolKeys("clawdbot:cc:")
    assert container_acl_rules("clawdbot:cc:", "c0ffee000001") == [
        "resetkeys", "resetchannels",
        f"~{pk.container_state('c0ffee000001')}", f"~{pk.assign('c0ffee000001')}"]


def test_session_rules_are_exact_keys_and_channels() -> None:
    p = "clawdbot:cc:"
    sk = SessionKeys("alpha", p)
    rules = container_acl_rules(p, "c1", "alpha")
    keys = {r[1:] for r in rules if r.startswith("~")}
    channels = {r[1:] for r in rules if r.startswith("&")}
    assert keys == {f"{p}pool:container:c1", f"{p}pool:assign:c1", sk.input, sk.processing,
                    sk.output_buffer, sk.state, sk.result, sk.history, sk.transcript,
                    sk.mcp_requests, sk.output, f"{p}alpha:mcp:reply:*"}
    assert channels == {sk.output, sk.control}
    # the only pattern is the MCP reply lists; nothing read-only without restore_from
    assert [k for k in keys if "*" in k] == [f"{p}alpha:mcp:reply:*"]
    assert not [r for r in rules if r.startswith("%")]
    assert rules[:2] == ["resetkeys", "resetchannels"]  # replaces, never adds to, old rights
    # restoring another session's transcript: that one key, read-only
    rules = container_acl_rules(p, "c1", "alpha", restore_from="old")
    assert [r for r in rules if r.startswith("%")] == [f"%R~{p}old:transcript"]
    assert not [r for r in container_acl_rules(p, "c1", "alpha", restore_from="alpha")
                if r.startswith("%")]


def test_a_session_called_pool_reaches_nothing_of_the_registry() -> None:
    p = "clawdbot:cc:"
    rules = container_acl_rules(p, "c1", "pool")
    pk = PoolKeys(p)
    registry = [pk.containers, pk.warm("abc"), pk.assign("c2"), pk.container_state("c2"),
                pk.instance, pk.owners, pk.lock, pk.sessions, pk.queue, pk.acl,
                f"{p}pool:tickets", f"{p}pool:ticket_seq", f"{p}pool:events"]
    granted = {r[1:] for r in rules if r.startswith(("~", "&"))}
    assert not set(registry) & granted
    # every granted name but the reply pattern is literal, and that one stays under the
    # session's own ":mcp:reply:" (checked against the real server below)
    assert {g for g in granted if "*" in g} == {f"{p}pool:mcp:reply:*"}


def test_glob_characters_of_the_prefix_are_escaped() -> None:
    assert glob_escape("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    p = "t*[x]?\\:"
    for rule in container_acl_rules(p, "c1", "s1"):
        if rule.startswith(("~", "&")):
            assert rule[1:].startswith("t\\*\\[x\\]\\?\\\\:"), rule


def test_user_names_are_per_namespace_and_parse_back() -> None:
    user = container_acl_user("clawdbot:cc:", "c0ffee000001")
    assert user.startswith("dockercc-") and user.endswith("-c0ffee000001")
    assert " " not in user and all(c.isalnum() or c in "-._" for c in user)
    assert acl_user_container("clawdbot:cc:", user) == "c0ffee000001"
    assert acl_user_container("other:", user) is None  # another pool's user
    assert acl_user_container("clawdbot:cc:", user, db=1) is None  # another database
    assert acl_user_container("clawdbot:cc:", "default") is None
    assert acl_user_container("clawdbot:cc:", "dockercc-probe-1234") is None
    with pytest.raises(InvalidSessionId):
        container_acl_user("clawdbot:cc:", "a b")
    with pytest.raises(InvalidSessionId):
        container_acl_rules("clawdbot:cc:", "c1", "x*")


def test_credentials_go_into_both_url_forms() -> None:
    assert with_credentials("redis://:old@127.0.0.1:6379/2", "u-1", "p_w-") == \
        "redis://u-1:p_w-@127.0.0.1:6379/2"
    assert with_credentials("unix:///run/dockercc/redis/redis.sock", "u", "p") == \
        "unix://u:p@/run/dockercc/redis/redis.sock"
    from redis.connection import parse_url

    kw = parse_url(with_credentials("unix:///run/x.sock?db=0", "dockercc-ab-c1", "s3cr-t_"))
    assert (kw["username"], kw["password"], kw["path"]) == ("dockercc-ab-c1", "s3cr-t_",
                                                           "/run/x.sock")


def test_the_opt_out_key_in_every_spelling() -> None:
    from dockercc.config import load_config

    assert load_config(env={}).redis.container_acl is True
    assert load_config(env={"DOCKERCC_REDIS__CONTAINER_ACL": "false"}).redis.container_acl is False
    assert load_config(env={}, redis={"containerAcl": False}).redis.container_acl is False
    assert load_config(env={}, redis={"container_acl": False}).redis.container_acl is False
    with pytest.raises(ConfigError, match="containerAcl"):
        load_config(env={}, redis={"containerAcl": "perhaps"})


def test_isolation_error_is_a_config_error() -> None:
    assert issubclass(IsolationError, ConfigError) and issubclass(IsolationError, DockerCCError)


# -------------------------------------------------------------------------- real Redis


@pytest.fixture
async def admin(redis_server: Any) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def acl(admin: aioredis.Redis, prefix: str) -> AsyncIterator[ContainerACL]:
    made = ContainerACL(admin, prefix)
    await made.check()
    yield made
    for container in list(made._passwords):
        with contextlib.suppress(Exception):
            await made.delete(container)
    await admin.delete(made.pk.acl)


def as_container(redis_server: Any, acl: ContainerACL, container: str) -> aioredis.Redis:
    return aioredis.from_url(with_credentials(redis_server.url, *acl.credentials(container)))


async def refused(call: Awaitable[Any]) -> str:
    """The call fails for want of rights (NOPERM, or a script's ACL error); the message."""
    try:
        await call
    except NoPermissionError as exc:
        return str(exc)
    except ResponseError as exc:
        assert "can't access" in str(exc) or "can't publish" in str(exc), exc
        return str(exc)
    raise AssertionError("the call was allowed")


async def test_check_passes_on_this_redis_and_leaves_no_probe_user(
        acl: ContainerACL, admin: aioredis.Redis) -> None:
    users = [u.decode() for u in await admin.execute_command("ACL", "USERS")]
    assert not [u for u in users if u.startswith("dockercc-probe")]
    assert acl.command_rules()[0] == "-@all"
    assert repr(acl).startswith("ContainerACL(") and "users=" in repr(acl)


async def test_container_user_cannot_reach_another_session_or_the_registry(
        redis_server: Any, acl: ContainerACL, admin: aioredis.Redis, prefix: str) -> None:
    a, b = "aaaa00000001", "bbbb00000002"
    await acl.create(a, session="s-a")
    await acl.create(b, session="s-b")
    sb = SessionKeys("s-b", prefix)
    pk = PoolKeys(prefix)
    await admin.hset(sb.state, "status", "idle")
    await admin.hset(pk.containers, b, "{}")
    me = as_container(redis_server, acl, a)
    try:
        # its own keys work
        sa = SessionKeys("s-a", prefix)
        await me.hset(sa.state, "status", "busy")
        assert await me.hgetall(sa.state) == {b"status": b"busy"}
        await me.hset(pk.container_state(a), "heartbeat", 1)
        # another session's keys, read or written
        for call in (me.hgetall(sb.state), me.hset(sb.state, "status", "x"),
                     me.lrange(sb.input, 0, -1), me.rpush(sb.input, "prompt"),
                     me.lrange(sb.output_buffer, 0, -1), me.rpush(sb.output_buffer, "x"),
                     me.hgetall(sb.transcript), me.hset(sb.transcript, "data", "x"),
                     me.rpush(sb.mcp_requests, "{}"), me.lrange(sb.mcp_requests, 0, -1),
                     me.blpop([sb.mcp_reply("r1")], timeout=0.1),
                     me.blmove(sb.input, sa.processing, 0.1, "LEFT", "RIGHT"),
                     me.lrange(sb.history, 0, -1), me.set(sb.result, "x"),
                     me.hgetall(pk.container_state(b)), me.rpush(pk.assign(b), "{}"),
                     # the pool registry
                     me.hgetall(pk.containers), me.hset(pk.containers, a, "{}"),
                     me.hgetall(pk.sessions), me.hgetall(pk.owners), me.hgetall(pk.acl),
                     me.rpush(pk.warm("spec"), a),
                     # whole-keyspace and admin commands
                     me.keys("*"), me.scan(0), me.execute_command("ACL", "WHOAMI"),
                     me.execute_command("ACL", "LIST"),
                     me.execute_command("ACL", "SETUSER", "x", "on", "+@all"),
                     me.config_get("*"), me.flushall(), me.flushdb(),
                     me.execute_command("SCRIPT", "FLUSH"),
                     me.execute_command("CLIENT", "KILL", "TYPE", "normal"),
                     # channels of another session
                     me.publish(sb.control, '{"type":"stop"}'), me.publish(sb.output, "x"),
                     # a script that touches a foreign key, declared or not
                     me.eval("return redis.call('HGETALL', KEYS[1])", 1, sb.state),
                     me.eval("return redis.call('HGETALL', ARGV[1])", 0, sb.state),
                     me.eval("return redis.call('RPUSH', ARGV[1], 'x')", 0, sb.input),
                     me.eval("return redis.call('PUBLISH', ARGV[1], 'x')", 0, sb.control)):
            await refused(call)
        # subscribing to another session's channels (or to everything)
        for channel in (sb.output, sb.control):
            sub = me.pubsub()
            with pytest.raises(NoPermissionError):
                await sub.subscribe(channel)
                await sub.get_message(timeout=2)
            await sub.aclose()
        sub = me.pubsub()
        with pytest.raises(NoPermissionError):
            await sub.psubscribe("*")
            await sub.get_message(timeout=2)
        await sub.aclose()
        assert await admin.hgetall(sb.state) == {b"status": b"idle"}  # untouched
        assert await admin.hget(pk.containers, b) == b"{}"
    finally:
        await me.aclose()
        await admin.delete(sb.state, pk.containers, SessionKeys("s-a", prefix).state,
                           pk.container_state(a))


async def test_session_pool_and_glob_prefixes_stay_literal(
        redis_server: Any, admin: aioredis.Redis, prefix: str) -> None:
    # a session named "pool": its keys, none of the registry's
    acl = ContainerACL(admin, prefix)
    await acl.create("cccc00000003", session="pool")
    me = as_container(redis_server, acl, "cccc00000003")
    pk = PoolKeys(prefix)
    try:
        await me.hset(f"{prefix}pool:state", "status", "idle")
        await me.rpush(f"{prefix}pool:mcp:reply:r1", "{}")
        for key in (pk.containers, pk.owners, pk.queue, pk.warm("x"), pk.acl, pk.instance,
                    pk.container_state("other"), pk.assign("other"), f"{prefix}pool:events"):
            await refused(me.hset(key, "x", "y"))
            await refused(me.rpush(key, "y"))
    finally:
        await me.aclose()
        await acl.delete("cccc00000003")
        await admin.delete(f"{prefix}pool:state", f"{prefix}pool:mcp:reply:r1")

    # a prefix with glob characters matches itself only
    glob = f"{prefix}*?[ab]\\:"
    gacl = ContainerACL(admin, glob)
    await gacl.create("dddd00000004", session="s")
    me = as_container(redis_server, gacl, "dddd00000004")
    try:
        await me.hset(f"{glob}s:state", "status", "idle")  # its own, literally
        for lookalike in (f"{prefix}XX?a\\:s:state", f"{prefix}*Qb\\:s:state",
                          f"{prefix}*?a:s:state", f"{prefix}zzzz?[ab]\\:s:state"):
            await refused(me.hset(lookalike, "status", "x"))
        await refused(me.publish(f"{prefix}XY?a\\:s:control", "x"))
    finally:
        await me.aclose()
        await gacl.delete("dddd00000004")
        await admin.delete(f"{glob}s:state", gacl.pk.acl)


async def test_revoke_and_delete_end_the_runners_access(
        redis_server: Any, acl: ContainerACL, admin: aioredis.Redis, prefix: str) -> None:
    c = "eeee00000005"
    await acl.create(c)
    sk = SessionKeys("s-e", prefix)
    me = as_container(redis_server, acl, c)
    try:
        await refused(me.hgetall(sk.state))  # warm: no session yet
        await acl.grant(c, "s-e")
        await me.hset(sk.state, "status", "idle")
        sub = me.pubsub()
        await sub.subscribe(sk.control)
        assert (await sub.get_message(timeout=2))["type"] == "subscribe"
        assert await admin.publish(sk.control, "hello") == 1
        await acl.revoke(c)
        await refused(me.hgetall(sk.state))
        await me.hset(PoolKeys(prefix).container_state(c), "status", "warm")  # its own record
        # Redis dropped the subscription whose channel was taken away
        assert await admin.publish(sk.control, "hello") == 0
        await sub.aclose()
        await acl.delete(c)
        assert await admin.execute_command("ACL", "GETUSER", acl.user(c)) is None
        assert await admin.hget(acl.pk.acl, c) is None
        with pytest.raises(AuthenticationError):
            await aioredis.from_url(with_credentials(
                redis_server.url, acl.user(c), "anything")).ping()
    finally:
        await me.aclose()
        await admin.delete(sk.state, PoolKeys(prefix).container_state(c))


async def test_restore_recreates_lost_users_and_gc_removes_stale_ones(
        redis_server: Any, acl: ContainerACL, admin: aioredis.Redis, prefix: str) -> None:
    pk = PoolKeys(prefix)
    kept, lost, stale = "ffff00000006", "ffff00000007", "ffff00000008"
    for c, session in ((kept, None), (lost, "s-lost"), (stale, None)):
        await acl.create(c, session=session)
    records = [ContainerRecord(id=kept, name="k", spec="x", status="warm", owner="o", created=1),
               ContainerRecord(id=lost, name="l", spec="x", status="busy", owner="o", created=1,
                               session="s-lost")]
    for rec in records:
        await admin.hset(pk.containers, rec.id, rec.encode())
    other_pool = ContainerACL(admin, f"{prefix}other:")
    await other_pool.create("ffff00000009")
    foreign = f"someone-else-{uuid.uuid4().hex[:6]}"
    await admin.execute_command("ACL", "SETUSER", foreign, "on", ">pw", "+ping")
    try:
        # a Redis restart loses ACL users (not the registry, with an AOF)
        await admin.execute_command("ACL", "DELUSER", acl.user(lost))
        assert await acl.restore(records) == 1
        assert await acl.restore(records) == 0
        me = as_container(redis_server, acl, lost)  # the password it was started with
        await me.hset(SessionKeys("s-lost", prefix).state, "status", "idle")  # its session's
        await refused(me.hgetall(SessionKeys("s-other", prefix).state))
        await me.aclose()
        # gc: the user whose container has no record goes; nothing else
        assert await acl.gc() == 1
        users = {u.decode() for u in await admin.execute_command("ACL", "USERS")}
        assert acl.user(stale) not in users and await admin.hget(pk.acl, stale) is None
        assert not acl.has_password(stale) and acl.has_password(kept)
        assert {acl.user(kept), acl.user(lost), foreign, "default",
                other_pool.user("ffff00000009")} <= users
    finally:
        await admin.execute_command("ACL", "DELUSER", foreign)
        await other_pool.delete("ffff00000009")
        await admin.delete(pk.containers, SessionKeys("s-lost", prefix).state,
                           other_pool.pk.acl)


@pytest.mark.parametrize("without", ["acl", "acl|setuser", "acl|list", "acl|deluser"])
async def test_a_pool_user_without_acl_rights_is_refused(redis_server: Any, prefix: str,
                                                         without: str) -> None:
    from dockercc.client import AsyncPool

    user = f"pool-noacl-{uuid.uuid4().hex[:6]}"
    redis_server.cli("acl", "setuser", user, "on", ">pw-noacl", "~*", "&*", "+@all",
                     f"-{without}")
    url = with_credentials(redis_server.url, user, "pw-noacl")
    try:
        limited = aioredis.from_url(url)
        with pytest.raises(IsolationError, match=r"\+acl.*containerAcl: false"):
            await ContainerACL(limited, prefix).check()
        # and no throwaway user was left behind
        assert not [u for u in redis_server.cli("acl", "users").split()
                    if u.startswith("dockercc-probe")]
        await limited.aclose()
        # the pool refuses to start (before it makes a container), with the same error
        pool = AsyncPool({"redis": {"url": url, "keyPrefix": prefix}})
        with pytest.raises(IsolationError) as info:
            await pool.start()
        assert "pw-noacl" not in str(info.value)
        await pool.close()
    finally:
        redis_server.cli("acl", "deluser", user)


async def test_the_real_runner_works_with_its_own_user(
        redis_server: Any, acl: ContainerACL, admin: aioredis.Redis, prefix: str,
        tmp_path: Path) -> None:
    """Everything the runner does (register, heartbeat, assignment, input, output, result,
    history, transcript restore, MCP relay, interrupt, stop) under its own user: nothing it
    sends is refused (Redis's ACL log has no entry for the user)."""
    c, session, source = "abab0000000a", "s-run", "s-earlier"
    t = RedisTransport(redis_server.url, prefix)
    sk, pk = SessionKeys(session, prefix), PoolKeys(prefix)
    await admin.execute_command("ACL", "LOG", "RESET")
    await acl.create(c)
    # a transcript of an earlier session to restore from (read-only for the runner)
    import hashlib
    import zlib

    blob = zlib.compress(b'{"type":"user"}\n')
    await admin.hset(SessionKeys(source, prefix).transcript, mapping={
        "meta": json.dumps({"path": "projects/x/abc-1.jsonl", "claude_session_id": "abc-1"}),
        "data": blob})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DOCKERCC_")},
           "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
           "DOCKERCC_REDIS_URL": acl.runner_url(redis_server.url, c),
           "DOCKERCC_CONTAINER": c, "DOCKERCC_KEY_PREFIX": prefix,
           "DOCKERCC_HEALTH_INTERVAL_MS": "100", "DOCKERCC_CLAUDE_BIN": "sh -c 'exec cat'"}
    proc = subprocess.Popen([sys.executable, "-m", "dockercc.agent"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while await admin.hget(pk.container_state(c), "status") != b"warm":
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
            await asyncio.sleep(0.05)
        await acl.grant(c, session, restore_from=source)
        await t.assign(c, {"session": session, "restore_from": source,
                           # (the digest the host verified: the runner restores nothing else)
                           "transcript_sha256": hashlib.sha256(blob).hexdigest()})
        while await admin.hget(sk.state, "container") != c.encode():
            assert time.monotonic() < deadline and proc.poll() is None
            await asyncio.sleep(0.05)

        events: list[dict[str, Any]] = []

        async def until(pred: Any) -> dict[str, Any]:
            async for env in t.events(session, events[-1]["seq"] if events else 0):
                events.append({"seq": env.seq, **env.event})
                if pred(env.event):
                    return env.event
            raise AssertionError("stream ended")

        await t.send_input(session, control.user_message("hello"))
        await asyncio.wait_for(until(lambda e: e.get("type") == "user"), 20)
        # (before it started the CLI) it restored the other session's transcript
        assert (tmp_path / ".claude/projects/x/abc-1.jsonl").read_bytes() == b'{"type":"user"}\n'
        # an MCP message from "the CLI" (cat echoes the line) goes to the host and back
        mcp = json.dumps({"type": "control_request", "request_id": "m1", "request": {
            "subtype": "mcp_message", "server_name": "host",
            "message": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}}})
        await t.send_input(session, mcp)
        item = await admin.blpop([sk.mcp_requests], timeout=20)
        assert item is not None and json.loads(item[1])["request_id"] == "m1"
        await admin.rpush(sk.mcp_reply("m1"), json.dumps(
            {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}))
        await asyncio.wait_for(until(lambda e: e.get("type") == "control_response"), 20)
        # interrupt through the control channel
        assert await t.send_control(session, "interrupt", request_id="i1") == 1
        await asyncio.wait_for(until(lambda e: e.get("request_id") == "i1"), 20)
        # a result: result key, history, state
        await t.send_input(session, json.dumps({"type": "result", "subtype": "success",
                                                "is_error": False, "result": "done",
                                                "session_id": "abc-1"}))
        await asyncio.wait_for(until(lambda e: e.get("type") == "result"), 20)
        assert (await t.result(session) or {}).get("result") == "done"
        assert await admin.llen(sk.history) == 1
        await asyncio.sleep(0.3)  # a few heartbeats
        assert await t.send_control(session, "stop") == 1
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert (await t.state(session))["status"] == "stopped"
        log = await admin.execute_command("ACL", "LOG")
        mine = [e for e in log if acl.user(c).encode() in json.dumps(
            [x.decode() if isinstance(x, bytes) else x for x in e]).encode()]
        assert not mine, f"the runner was refused: {log}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        await t.delete_session(session)
        await t.delete_session(source)
        await admin.delete(pk.container_state(c), pk.assign(c))
        await t.close()


def test_runner_commands_cover_what_the_runner_sends() -> None:
    """Every Redis call in the runner's source is a granted command (a new one needs a grant,
    or the runner breaks in isolated pools)."""
    import re

    source = "\n".join(p.read_text() for p in sorted((ROOT / "dockercc/agent").glob("*.py")))
    called = set(re.findall(r"(?:\br|self\.r|pipe|pubsub)\.([a-z]+)\(", source))
    called -= {"pipeline", "pubsub", "execute", "aclose", "get_message"}
    called |= set(re.findall(r"redis\.call\('([A-Z]+)'", source.replace('"', "'")))
    assert {c.lower() for c in called} <= set(RUNNER_COMMANDS), called


# -------------------------------------------------------------------------- real containers


async def client_users(admin: Any) -> list[str]:
    return [str(c.get("user")) for c in await admin.client_list()]


@pytest.mark.docker
async def test_a_claimed_container_reaches_only_its_own_session(
        make_config: Any, api: Any, redis_server: Any, prefix: str, docker_client: Any) -> None:
    from dockercc import tool
    from dockercc.client import AsyncPool
    from dockercc.events import Result, TextDelta
    from dockercc.health import collect_health
    from dockercc.testing import text, tool_use

    calls: list[str] = []

    @tool
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        calls.append(key)
        return f"value-of-{key}"

    api.on("look up alpha", tool_use("mcp__host__lookup", {"key": "alpha"}), text("found alpha"),
           repeat=False)
    api.on("count", text(" ".join(str(i) for i in range(40)), delay=0.15), repeat=False)
    api.on("after", text("ready again"))
    api.on("from b", text("b answers"))
    cfg = make_config(pool={"minWarm": 1, "acquireTimeoutMs": 120000})
    async with AsyncPool(cfg, tools=[lookup]) as pool:
        await pool.containers.wait_warm(timeout=180)
        a, b = pool.session(session_id="acl-a"), pool.session(session_id="acl-b")
        await a.start()
        await b.start()
        assert a.lease is not None and b.lease is not None and a.lease.warm
        acl = pool.containers.acl
        assert acl is not None
        ca, cb = a.lease.container, b.lease.container
        admin = pool.transport.client
        # both runners are connected as their own users, not as the pool
        deadline = time.monotonic() + 10
        while not {acl.user(ca), acl.user(cb)} <= set(await client_users(admin)):
            assert time.monotonic() < deadline, await client_users(admin)
            await asyncio.sleep(0.1)
        stats = await pool.stats()
        assert stats.isolated and "ACL user" in stats.isolation
        report = await collect_health(pool.config)
        assert report.isolation is not None and report.isolation.isolated is True
        assert (report.isolation.users or 0) >= 2

        # the runners work end to end: streaming, a host tool over MCP, interrupt, and a
        # second session at the same time
        async def tool_turn() -> Result:
            return await a.ask("look up alpha", timeout=120)

        got_a, got_b = await asyncio.gather(tool_turn(), b.ask("from b", timeout=120))
        assert got_a.text == "found alpha" and calls == ["alpha"]
        assert got_b.text == "b answers"
        result, deltas = None, 0
        async for ev in a.stream("count to forty", timeout=120):
            if isinstance(ev, TextDelta):
                deltas += 1
                if deltas == 3:
                    await a.interrupt()
            if isinstance(ev, Result):
                result = ev
        assert result is not None and result.interrupted and deltas < 40
        assert (await a.ask("after that", timeout=120)).text == "ready again"

        # A's credentials (what a compromised container holds) reach nothing of B's
        user, password = acl.credentials(ca)
        thief = aioredis.from_url(with_credentials(redis_server.url, user, password))
        sa, sb, pk = a.keys, b.keys, pool.transport.pool_keys
        assert (await thief.hgetall(sa.state))[b"container"] == ca.encode()  # its own: yes
        for call in (thief.hgetall(sb.state), thief.hset(sb.state, "status", "x"),
                     thief.lrange(sb.output_buffer, 0, -1), thief.rpush(sb.input, "{}"),
                     thief.hgetall(sb.transcript), thief.lrange(sb.history, 0, -1),
                     thief.get(sb.result), thief.rpush(sb.mcp_requests, "{}"),
                     thief.publish(sb.control, '{"type":"stop"}'),
                     thief.publish(sb.output, "{}"), thief.hgetall(pk.containers),
                     thief.hgetall(pk.container_state(cb)), thief.rpush(pk.assign(cb), "{}"),
                     thief.keys("*"), thief.scan(0), thief.execute_command("ACL", "LIST"),
                     thief.config_get("*"), thief.flushall(),
                     thief.eval("return redis.call('HGETALL', ARGV[1])", 0, sb.state)):
            await refused(call)
        sub = thief.pubsub()
        with pytest.raises(NoPermissionError):
            await sub.subscribe(sb.output)
            await sub.get_message(timeout=2)
        await sub.aclose()
        # the password is nowhere but in the container's environment
        needle = password.encode()
        async for key in admin.scan_iter(match=f"{prefix}*"):
            kind = (await admin.type(key)).decode()
            values = (list((await admin.hgetall(key)).values()) if kind == "hash" else
                      await admin.lrange(key, 0, -1) if kind == "list" else
                      [await admin.get(key)] if kind == "string" else [])
            assert not any(needle in (v or b"") for v in values), key
        from dockercc.pool.backend import LABEL

        (container,) = docker_client.containers.list(
            filters={"label": [f"{LABEL}.prefix={prefix}", f"{LABEL}.container={ca}"]})
        assert password not in json.dumps(container.labels)
        assert password not in container.logs().decode(errors="replace")
        assert password not in repr(pool.containers.acl) + repr(pool) + repr(a)

        # released: the user is gone, and A's credentials reach nothing at all
        await a.close(forget=True)
        assert await admin.execute_command("ACL", "GETUSER", user) is None
        with pytest.raises((AuthenticationError, ConnectionError)):
            await thief.hgetall(sa.state)
        await thief.aclose()
        with pytest.raises(AuthenticationError):
            await aioredis.from_url(with_credentials(redis_server.url, user, password)).ping()
        assert (await b.ask("from b again", timeout=120)).text == "b answers"  # B unharmed
        b_user = acl.user(cb)
        await b.close(forget=True)
        assert await admin.execute_command("ACL", "GETUSER", b_user) is None


@pytest.mark.docker
async def test_opting_out_runs_unisolated_and_status_says_so(
        make_config: Any, api: Any, redis_server: Any, prefix: str, tmp_path: Path) -> None:
    from dockercc.client import AsyncPool
    from dockercc.testing import text

    api.script(text("works without isolation"))
    cfg = make_config(redis={"url": redis_server.url, "keyPrefix": prefix,
                             "containerAcl": False})
    async with AsyncPool(cfg) as pool:
        assert pool.containers.acl is None
        async with pool.session(session_id="no-acl") as s:
            assert (await s.ask("hi", timeout=120)).text == "works without isolation"
            stats = await pool.stats()
            assert not stats.isolated and "containerAcl is false" in stats.isolation
            users = await client_users(pool.transport.client)
            assert not [u for u in users if u.startswith("dockercc-")]
            (path := tmp_path / "dockercc.yaml").write_text(json.dumps(
                {"redis": {"url": redis_server.url, "keyPrefix": prefix,
                           "container_acl": False}}))
            env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKERCC_")}
            out = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "dockercc.cli", "--config", str(path), "status", "--json"],
                capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)},
                timeout=120)
            report = json.loads(out.stdout)
            assert report["isolation"]["isolated"] is False, out.stdout + out.stderr
            assert "containerAcl is false" in report["isolation"]["reason"]
            assert report["status"] == "ok"  # a choice, not a fault
            # the isolated view of the same pool: these containers have no users of their own
            (path2 := tmp_path / "isolated.yaml").write_text(json.dumps(
                {"redis": {"url": redis_server.url, "keyPrefix": prefix}}))
            out = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "dockercc.cli", "--config", str(path2), "status"],
                capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT),
                                                     "COLUMNS": "200"}, timeout=120)
            assert out.returncode == 1 and "not isolated" in out.stdout, out.stdout
        await s.close(forget=True)


@pytest.mark.docker
def test_dockercc_gc_deletes_users_whose_container_is_gone(
        redis_server: Any, prefix: str, docker_client: Any, tmp_path: Path) -> None:
    stale = container_acl_user(prefix, "dead00000001")  # a SIGKILLed owner's container's
    other_pool = container_acl_user(f"{prefix}other:", "dead00000002")
    foreign = f"app-user-{uuid.uuid4().hex[:6]}"
    for user in (stale, other_pool, foreign):
        redis_server.cli("acl", "setuser", user, "on", ">pw", "+ping")
    try:
        (path := tmp_path / "dockercc.yaml").write_text(json.dumps(
            {"redis": {"url": redis_server.url, "keyPrefix": prefix}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKERCC_")}
        out = subprocess.run([sys.executable, "-m", "dockercc.cli", "--config", str(path), "gc"],
                             capture_output=True, text=True, timeout=120,
                             env={**env, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stdout + out.stderr
        users = redis_server.cli("acl", "users").split()
        assert stale not in users
        assert other_pool in users and foreign in users  # not this pool's: untouched
    finally:
        for user in (stale, other_pool, foreign):
            redis_server.cli("acl", "deluser", user)


@pytest.mark.docker
async def test_a_warm_container_survives_a_redis_restart_that_loses_its_user(
        agent_image: str, api: Any, docker_client: Any, tmp_path: Path) -> None:
    """ACL users live in Redis's memory: a restart (the registry kept by its AOF) loses them.
    The pool re-creates them with the same password, and the warm runner serves a claim."""
    from conftest import TEST_PREFIXES

    from dockercc.client import AsyncPool
    from dockercc.testing import RedisServer

    p = f"r{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(p)
    cat = {"DOCKERCC_CLAUDE_BIN": "sh -c 'exec cat'"}
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        cfg = {"image": agent_image, "redis": {"url": server.url, "keyPrefix": p},
               "docker": {"network": "host", "env": cat},
               "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
               "resources": {"memory": "512m", "cpus": 1}, "pool": {"minWarm": 1},
               "timeouts": {"healthIntervalMs": 500, "startupMs": 30000}}
        async with AsyncPool(cfg) as pool:
            await pool.containers.wait_warm(timeout=120)
            (rec,) = await pool.containers.records()
            assert pool.containers.acl is not None
            user = pool.containers.acl.user(rec.id)
            await asyncio.to_thread(server.restart, 0.3)
            assert user not in server.cli("acl", "users").split()
            deadline = time.monotonic() + 20
            while user not in server.cli("acl", "users").split():
                assert time.monotonic() < deadline, "the user did not come back"
                await asyncio.sleep(0.1)
            # the runner authenticates again with the password it was started with
            while not [c for c in await pool.transport.client.client_list()
                       if c.get("user") == user]:
                assert time.monotonic() < deadline, "the runner did not reconnect"
                await asyncio.sleep(0.1)
            s = pool.session(session_id="after-restart")
            await s.start()
            assert s.lease is not None and s.lease.warm and s.lease.container == rec.id
            await s.close(forget=True)
            assert user not in server.cli("acl", "users").split()
