"""Secrets: canary values used as the credential (``credentials.oauthToken``), the Redis
password and a ``docker.env`` value must reach only the places that need them (the CLI's
environment, the Redis connection) and show up nowhere else: not in logs (ours and the
container's), container labels or names, ``repr``/``str``, exceptions, anything in Redis (every
key and value, and every message published while the session ran), ``config_get``,
``session_status``, the health report or ``redacted_dump``.

The scripted Messages API sees ``Authorization: Bearer <canary>``: the credential did reach
the real CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import TEST_PREFIXES

from dockercc.client import AsyncPool
from dockercc.config import resolve_config
from dockercc.errors import ConfigError, ContainerLost, DockerCCError, TransportError
from dockercc.pool.backend import LABEL
from dockercc.testing import RedisServer, text, tool_use

pytestmark = pytest.mark.docker

TOKEN = f"sk-ant-oat01-CANARY{uuid.uuid4().hex}"
REDIS_PASSWORD = f"rpw-CANARY{uuid.uuid4().hex}"
ENV_SECRET = f"env-CANARY{uuid.uuid4().hex}"
CANARIES = (TOKEN, REDIS_PASSWORD, ENV_SECRET)


def leaks(blob: Any) -> list[str]:
    """Which canaries ``blob`` (text, bytes, or anything JSON-able) contains."""
    if isinstance(blob, bytes):
        out = [c for c in CANARIES if c.encode() in blob]
        with contextlib.suppress(zlib.error):  # the transcript is stored compressed
            out += leaks(zlib.decompress(blob))
        return out
    if not isinstance(blob, str):
        blob = json.dumps(blob, default=repr)
    return [c for c in CANARIES if c in blob]


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, str]]:
    with RedisServer(tmp_path, appendonly=True) as server:
        server.cli("CONFIG", "SET", "requirepass", REDIS_PASSWORD)
        yield server, f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"


def everything_in_redis(client: redis.Redis) -> list[tuple[bytes, Any]]:
    """Every key of the database and its whole value."""
    out: list[tuple[bytes, Any]] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        value: Any
        if kind == b"string":
            value = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = client.smembers(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = client.xrange(key)
        else:
            value = None
        out.append((key, value))
    return out


def redis_leaks(client: redis.Redis) -> list[str]:
    found = []
    for key, value in everything_in_redis(client):
        parts: list[bytes] = [key]
        if isinstance(value, dict):
            parts += [*value.keys(), *value.values()]
        elif isinstance(value, (list, set)):
            parts += [v[0] if isinstance(v, tuple) else v for v in value]
        elif isinstance(value, bytes):
            parts.append(value)
        for part in parts:
            if isinstance(part, bytes) and leaks(part):
                found.append(f"{key!r}: {leaks(part)}")
    return found


async def test_canary_credentials_reach_the_cli_and_nothing_else(
        secret_redis: tuple[RedisServer, str], api: Any, agent_image: str, docker_client: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    server, url = secret_redis
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(prefix)
    caplog.set_level(logging.DEBUG)
    config = {
        "image": agent_image,
        "redis": {"url": url, "keyPrefix": prefix},
        "docker": {"env": {"TEAM_SECRET": ENV_SECRET}},  # network none: the egress proxy
        "credentials": {"baseUrl": api.url, "oauthToken": TOKEN, "apiKey": None},
        "resources": {"memory": "1g", "cpus": 1},
        "timeouts": {"healthIntervalMs": 500},
        # JSON log lines, the gateway's (below) and the runner's: checked for canaries too
        "logging": {"format": "json", "level": "DEBUG"},
    }
    from dockercc.logs import JSONFormatter

    json_log = io.StringIO()
    json_handler = logging.StreamHandler(json_log)
    json_handler.setFormatter(JSONFormatter("gateway"))
    logging.getLogger("dockercc").addHandler(json_handler)
    api.script(tool_use("mcp__host__config_get", {}),
               tool_use("mcp__host__session_status", {}),
               tool_use("Bash", {"command": "echo the tool ran; env | wc -l"}),
               text("all done"))
    sync = redis.Redis.from_url(url)
    published: list[Any] = []

    async def listen() -> None:  # every message published on this Redis while we run
        import redis.asyncio as aioredis

        r = aioredis.from_url(url)
        ps = r.pubsub()
        await ps.psubscribe("*")
        try:
            while True:
                msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None:
                    published.append(msg["data"])
        finally:
            await ps.aclose()
            await r.aclose()

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    try:
        async with AsyncPool(config) as pool:
            s = pool.session(permission_mode="bypassPermissions")
            result = await s.ask("show me the config", timeout=180)
            assert result.text == "all done"

            # the credential reached the CLI: it authenticated with it
            auth = {r.headers.get("authorization") for r in api.message_requests}
            assert auth == {f"Bearer {TOKEN}"}, auth
            assert not any(r.headers.get("x-api-key") for r in api.message_requests)
            # ... and the agent's tools answered without showing it
            tool_texts = [r.tool_result_text for r in api.message_requests[1:]]
            assert '"oauthToken": "***"' in tool_texts[0] or "'oauthToken': '***'" in \
                tool_texts[0] or '"oauthToken":"***"' in tool_texts[0], tool_texts[0][:2000]
            assert "the tool ran" in tool_texts[2]
            for t in tool_texts:
                assert not leaks(t), t[:500]

            # the container: the credential stays on the host (the egress proxy adds it), the
            # container holds a placeholder; docker.env values are the user's own and go in
            c = docker_client.containers.list(filters={"label": f"{LABEL}.prefix={prefix}"})[0]
            env = c.attrs["Config"]["Env"]
            assert "CLAUDE_CODE_OAUTH_TOKEN=dockercc-proxy-placeholder" in env
            assert TOKEN not in json.dumps(env) and f"TEAM_SECRET={ENV_SECRET}" in env
            assert not leaks(c.attrs["Config"]["Labels"]) and not leaks(c.name)
            assert not leaks(c.attrs["Config"]["Cmd"]) and not leaks(c.attrs["Config"]["Entrypoint"])
            assert not leaks(c.logs())
            # the runner's log is JSON lines, each with its container, the claimed ones
            # with the session
            runner_lines = [json.loads(line) for line in c.logs().decode().splitlines()
                            if line.startswith("{")]
            assert runner_lines and all(x["container"] for x in runner_lines)
            assert any(x.get("session") == s.id for x in runner_lines), runner_lines[:5]
            assert s.lease is not None and {x["container"] for x in runner_lines} == {
                s.lease.container}

            # reprs, the config's redacted dump, the health report
            from dockercc.health import collect_health

            health = await collect_health(pool.config, timeout=10)
            for thing in (pool.config, pool, s, pool.transport, pool.containers, s.spec(),
                          s.lease, await pool.stats(), await s.state(), await s.history(),
                          pool.config.redacted_dump(), health.model_dump_json(),
                          pool.config.credentials, pool.config.redis):
                assert not leaks(repr(thing)) and not leaks(str(thing)), type(thing)

            # Redis: every key and value now, and everything published so far
            assert redis_leaks(sync) == []
            assert not any(leaks(m) for m in published if isinstance(m, bytes))

            # exceptions: a lost container
            c.kill()
            with pytest.raises(ContainerLost) as lost:
                await s.ask("are you there?", timeout=120)
            assert not leaks(str(lost.value)) and not leaks(repr(lost.value))
            await s.close()  # closed, not forgotten: state, history, transcript stay
            assert redis_leaks(sync) == []
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    assert not any(leaks(m) for m in published if isinstance(m, bytes))
    assert len(published) > 10  # the listener did hear the session's output
    # the logs of the whole run, ours
    for record in caplog.records:
        assert not leaks(record.getMessage()), record.getMessage()[:300]
        assert not leaks(record.exc_text or ""), record.exc_text
    # the gateway's JSON log lines: valid JSON, no canary (the Redis URL with its password
    # went through the formatter's redaction), the loss reported with the session's ids
    logging.getLogger("dockercc.pool").warning("Redis at %s", url)  # what a log may carry
    logging.getLogger("dockercc").removeHandler(json_handler)
    json_lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert not leaks(json_log.getvalue())
    assert any(x.get("session") == s.id and x.get("container") and "lost" in x["msg"]
               for x in json_lines), json_lines[-5:]
    # and what is left in Redis after the pool closed
    assert redis_leaks(sync) == []
    # the closed session's scratch workspace volume is kept for a resume (this test's Redis
    # is its own, so the suite's leak check cannot see that): removed here
    assert s.workspace_mount is not None and s.workspace_mount.kind == "volume"
    docker_client.volumes.get(s.workspace_mount.source).remove(force=True)
    for key in sync.scan_iter(match=f"{prefix}*"):
        sync.delete(key)
    sync.close()


async def test_errors_never_show_secrets(secret_redis: tuple[RedisServer, str]) -> None:
    server, url = secret_redis
    bad_port = url.replace(f":{server.port}/", ":1/")
    errors: list[DockerCCError] = []
    with pytest.raises(ConfigError) as cfg_error:
        resolve_config({"credentials": {"oauthToken": TOKEN, "apiKey": REDIS_PASSWORD},
                        "redis": {"url": bad_port.replace("redis://", "http://")},
                        "docker": {"env": {"X": ENV_SECRET, "bad name": ENV_SECRET}}})
    errors.append(cfg_error.value)
    pool = AsyncPool({"redis": {"url": bad_port}, "credentials": {"oauthToken": TOKEN}})
    with pytest.raises(TransportError) as down:
        await pool.start()
    errors.append(down.value)
    await pool.close()
    wrong = AsyncPool({"redis": {"url": url.replace(REDIS_PASSWORD, "not-the-password")}})
    with pytest.raises(DockerCCError) as denied:
        await wrong.start()
    errors.append(denied.value)
    await wrong.close()
    for exc in errors:
        assert not leaks(str(exc)) and not leaks(repr(exc)), exc
        assert not leaks(str(exc.__cause__ or "")), exc.__cause__
    assert ":***@127.0.0.1:1/" in str(down.value)  # the URL is named, its password masked
