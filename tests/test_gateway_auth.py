"""The health endpoint answers only its own host names, shows details only with the token,
and refuses to serve a non-loopback address without one."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from dockercc.errors import ConfigError
from dockercc.gateway import HEALTH_PATH, Gateway

SECRET_SESSION = "secret-session-4e1f"
SECRET_NAME = "clawdbot-cc-secret-name-4e1f"


def config(redis_server: Any, prefix: str, **gateway: Any) -> dict[str, Any]:
    return {"redis": {"url": redis_server.url, "keyPrefix": prefix},
            "docker": {"network": "host"}, "gateway": gateway}


async def _get(gw: Gateway, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(f"http://127.0.0.1:{gw.port}{HEALTH_PATH}", headers=headers)


@pytest.fixture
def record(redis_server: Any, prefix: str) -> Any:
    """A registry record, put in by ``add()`` once the pool started (its start would reap it:
    its owner does not heartbeat)."""
    rec = {"id": "abcdefabcdef", "name": SECRET_NAME, "spec": "x", "status": "busy",
           "owner": "some-owner-4e1f", "created": int(time.time() * 1000),
           "agent": "main", "session": SECRET_SESSION}

    def add() -> None:
        redis_server.cli("hset", f"{prefix}pool:containers", rec["id"], json.dumps(rec))

    yield add
    for key in redis_server.keys(f"{prefix}*"):
        redis_server.cli("del", key)


@pytest.mark.docker
async def test_without_a_token_no_names_and_no_foreign_hosts(redis_server: Any, prefix: str,
                                                             docker_client: Any,
                                                             record: Any) -> None:
    gw = Gateway(config(redis_server, prefix), port=0)
    gw.pool.containers.check = _no_check(gw)  # type: ignore[method-assign]
    await gw.start()
    record()
    try:
        resp = await _get(gw)
        body = resp.text
        assert resp.status_code in (200, 503), body
        report = resp.json()
        assert report["containers"] and report["containers"][0]["status"] == "busy"
        for secret in (SECRET_SESSION, SECRET_NAME, "some-owner-4e1f", "abcdefabcdef",
                       gw.pool.containers.owner):
            assert secret not in body
        for host in ("evil.example", "evil.example:18789", "127.0.0.1.nip.io", "10.0.0.1"):
            resp = await _get(gw, Host=host)
            assert resp.status_code == 421 and SECRET_NAME not in resp.text
        assert (await _get(gw, Host=f"localhost:{gw.port}")).status_code in (200, 503)
    finally:
        await gw.stop()


@pytest.mark.docker
async def test_with_a_token_only_the_token_gets_the_report(redis_server: Any, prefix: str,
                                                           docker_client: Any,
                                                           record: Any) -> None:
    token = "gw-token-" + "9" * 24
    gw = Gateway(config(redis_server, prefix, token=token), port=0)
    gw.pool.containers.check = _no_check(gw)  # type: ignore[method-assign]
    await gw.start()
    record()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Basic {token}"}):
            resp = await _get(gw, **headers)
            assert set(resp.json()) == {"status"} and resp.json()["status"] in ("ok",
                                                                                 "unhealthy")
        resp = await _get(gw, Authorization=f"Bearer {token}")
        assert SECRET_SESSION in resp.text and resp.json()["containers"][0]["name"] == SECRET_NAME
        assert token not in resp.text
    finally:
        await gw.stop()


def test_a_non_loopback_address_needs_a_token(redis_server: Any, prefix: str) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.com"):
        with pytest.raises(ConfigError, match="gateway.token"):
            Gateway(config(redis_server, prefix), host=host, port=0)
    Gateway(config(redis_server, prefix, token="t" * 32), host="0.0.0.0", port=0)  # allowed
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        Gateway(config(redis_server, prefix), host=host, port=0)


def _no_check(gw: Gateway) -> Any:
    async def check() -> None:  # the forged record must not be "lost" and removed meanwhile
        return None
    return check
