"""The gateway (``dockercc serve``): a pool plus ``GET /api/docker-cc/health``; and the
compose file that runs it next to Redis."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dockercc.cli import serve
from dockercc.config import load_config
from dockercc.gateway import DEFAULT_PORT, HEALTH_PATH, Gateway
from dockercc.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.docker
async def test_gateway_serves_health_and_cleans_up(make_config: Any, docker_client: Any,
                                                   prefix: str) -> None:
    token = "health-token-0123456789abcdef"
    gateway = Gateway(make_config(pool={"minWarm": 1}), port=0, token=token)
    await gateway.start()
    try:
        assert gateway.port != 0 and gateway.url.endswith(HEALTH_PATH)
        async with httpx.AsyncClient(timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            resp = await http.get(gateway.url)
            assert resp.status_code == 200, resp.text
            assert "sk-ant-scripted-test" not in resp.text  # no secret in the report
            report = resp.json()
            assert report["status"] == "ok" and report["healthy"] is True
            assert report["redis"]["ok"] and report["redis"]["key_prefix"] == prefix
            assert report["docker"]["ok"] and report["docker"]["server_version"]
            assert report["pool"]["warm"] == 1 and report["pool"]["owners"] == 1
            (warm,) = report["containers"]
            assert warm["status"] == "warm" and warm["docker_state"] == "running"
            assert warm["heartbeat_age_ms"] is not None and warm["heartbeat_age_ms"] < 10_000
            assert report["stats"]["owner"] == gateway.pool.containers.owner
            assert report["uptime_s"] >= 0
            assert report["egress"] == {"isolated": True, "network": "none",
                                        "credentials_in_container": False, "allow": []}
            names = {c.name for c in docker_client.containers.list(
                filters={"label": f"clawdbot.docker-cc.prefix={prefix}"})}
            assert names == {warm["name"]}
            assert (await http.get(gateway.url.replace(HEALTH_PATH, "/nope"))).status_code == 404
            assert (await http.post(gateway.url)).status_code == 405
    finally:
        await gateway.stop()
    assert not docker_client.containers.list(
        all=True, filters={"label": f"clawdbot.docker-cc.prefix={prefix}"})


@pytest.mark.docker
async def test_health_is_503_when_redis_goes_down(tmp_path: Path, make_config: Any) -> None:
    with RedisServer(tmp_path / "r") as redis:
        gateway = Gateway(make_config(redis={"url": redis.url}), port=0)
        await gateway.start()
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                assert (await http.get(gateway.url)).status_code == 200
                redis.stop()
                resp = await http.get(gateway.url)
            assert resp.status_code == 503
            report = resp.json()
            assert report["status"] == "down" and report["redis"]["ok"] is False
            assert any("Redis" in p for p in report["problems"])
        finally:
            await gateway.stop()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.docker
def test_serve_command_and_curl(redis_server: Any, prefix: str, docker_client: Any,
                                tmp_path: Path) -> None:
    """The seed's check, verbatim: ``curl http://localhost:18789/api/docker-cc/health``."""
    if not _port_free(DEFAULT_PORT):
        pytest.fail(f"port {DEFAULT_PORT} is taken on this machine; `dockercc serve` needs it")
    cfg = tmp_path / "dockercc.yaml"
    cfg.write_text(yaml.safe_dump({"redis": {"url": redis_server.url, "keyPrefix": prefix},
                                   "logging": {"format": "json"}}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCKERCC_GATEWAY", "DOCKERCC_LOG"))}
    proc = subprocess.Popen([sys.executable, "-m", "dockercc.cli", "--config", str(cfg), "serve"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        body = ""
        while time.monotonic() < deadline:
            out = subprocess.run(["curl", "-s", f"http://localhost:{DEFAULT_PORT}{HEALTH_PATH}"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout:
                body = out.stdout
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        report = json.loads(body)
        assert report["status"] == "ok" and report["redis"]["key_prefix"] == prefix
        assert report["stats"]["limits"]["maxTotal"] == 10
        # loopback without a token: /metrics is open too
        scraped = subprocess.run(["curl", "-s", f"http://localhost:{DEFAULT_PORT}/metrics"],
                                 capture_output=True, text=True).stdout
        assert "dockercc_pool_containers{state=\"warm\"}" in scraped, scraped[:500]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{DEFAULT_PORT}{HEALTH_PATH}" in err and "gateway stopped" in err
    # logging.format: json -> the gateway's log records are JSON lines
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(x["process"] == "gateway" and x["msg"].startswith("health endpoint on")
               for x in lines), err[-2000:]
    assert _port_free(DEFAULT_PORT)


def _compose() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("neither docker-compose nor the docker compose plugin is installed "
                "(apt-get install docker-compose; scripts/stack.sh does it)")


def test_compose_file_validates_and_configures_the_gateway() -> None:
    compose = ROOT / "docker-compose.yml"
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "DOCKERCC_MIN_WARM")}
    out = subprocess.run([*_compose(), "-f", str(compose), "config"], capture_output=True,
                         text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == {"redis", "gateway"}
    assert resolved["networks"]["default"]["name"] == "clawdbot-net"
    redis, gateway = resolved["services"]["redis"], resolved["services"]["gateway"]
    assert "6379" in str(redis["ports"]) and gateway["network_mode"] == "host"
    assert any(v.endswith("/var/run/docker.sock:rw") or v.endswith("/var/run/docker.sock")
               for v in map(str, gateway["volumes"]))

    # the gateway's environment is a valid dockercc configuration, as meant
    genv = gateway["environment"]
    genv = dict(x.split("=", 1) for x in genv) if isinstance(genv, list) else genv
    config = load_config(env={k: str(v) for k, v in genv.items()})
    assert config.redis.redacted() == "redis://127.0.0.1:6379"
    assert config.redis.container_url is not None
    assert config.redis.container_url.redacted() == "redis://redis:6379"
    assert config.docker.network == "clawdbot-net" and config.pool.min_warm == 2
    assert config.credentials.api_key is None  # an empty variable means "not set"

    # and its command is a `dockercc serve` our CLI accepts, on the health port
    script = gateway["command"][-1]
    args = script.split("dockercc serve", 1)[1].split()
    ctx = serve.make_context("serve", args)
    assert ctx.params["port"] == DEFAULT_PORT and ctx.params["host"] == "127.0.0.1"
    assert DEFAULT_PORT == 18789
