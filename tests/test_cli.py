"""Every ``dockercc`` command, run as a subprocess (``python -m dockercc.cli``) against real
Redis, real Docker, the agent image and the scripted Messages API."""

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
import yaml

from dockercc.client import AsyncPool
from dockercc.events import Result, TextDelta
from dockercc.testing import text

SEED_CHAIN = {"primary": "docker-claude-code/opus",
              "fallbacks": ["claude-cli/opus", "anthropic/claude-sonnet-4-5"]}


def base_env(home: Path, *, with_cli: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE", "DOCKERCC_CONFIG", "REDIS_URL"))}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    env["COLUMNS"] = "200"
    if not with_cli:
        empty = home / "empty-bin"
        empty.mkdir(exist_ok=True)
        env["PATH"] = str(empty)
    return env


def dcc(*args: str, env: dict[str, str], config: Path | None = None, timeout: float = 120,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dockercc.cli"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, input=stdin, cwd=env["HOME"])


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


async def adcc(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(dcc, *args, **kwargs)


# --------------------------------------------------------------------------- basics


def test_version_help_and_config_errors(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    out = dcc("--version", env=env)
    assert out.returncode == 0 and "0.1.0" in out.stdout
    out = dcc("--help", env=env)
    for command in ("status", "run", "sessions", "logs", "interrupt", "image", "gc", "demo",
                    "serve"):
        assert f"  {command}" in out.stdout
    bad = write_config(tmp_path / "bad.yaml", {"pool": {"minWarm": -1, "maxTotall": 3}})
    out = dcc("status", env=env, config=bad)
    assert out.returncode == 2
    assert "pool.minWarm" in out.stderr and "did you mean 'maxTotal'" in out.stderr
    out = dcc("run", "", env=env)
    assert out.returncode == 2 and "the prompt is empty" in out.stderr


@pytest.mark.docker
def test_status_exits_nonzero_when_redis_is_down(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    env["REDIS_URL"] = "redis://:hunter2-secret@127.0.0.1:1/0"
    out = dcc("status", "--json", env=env)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "down" and report["healthy"] is False
    assert report["redis"]["ok"] is False and report["redis"]["url"].startswith("redis://:***@")
    assert report["docker"]["ok"] is True  # the machine's engine answers
    assert report["pool"] is None
    human = dcc("status", env=env)
    assert human.returncode == 1 and "down" in human.stdout
    for o in (out, human):
        assert "hunter2-secret" not in o.stdout + o.stderr


# --------------------------------------------------------------------------- status + gc


@pytest.mark.docker
def test_status_and_gc(redis_server: Any, prefix: str, docker_client: Any, agent_image: str,
                       tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    cfg = write_config(tmp_path / "dockercc.yaml", {
        "redis": {"url": redis_server.url, "keyPrefix": prefix},
        "timeouts": {"healthIntervalMs": 1000}})
    out = dcc("status", "--json", env=env, config=cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "ok" and report["pool"]["total"] == 0
    assert report["redis"]["key_prefix"] == prefix and report["redis"]["latency_ms"] > 0

    # what a SIGKILLed pool owner leaves: a container nobody registered, a registry entry
    # whose container is gone
    orphan = f"clawdbot-cc-orphan-{uuid.uuid4().hex[:8]}"
    docker_client.containers.create(agent_image, ["true"], name=orphan, network_mode="none",
                                    labels={"clawdbot.docker-cc": "1",
                                            "clawdbot.docker-cc.prefix": prefix,
                                            "clawdbot.docker-cc.owner": "dead-owner",
                                            "clawdbot.docker-cc.container": "deadbeef0001"})
    record = {"id": "gone00000001", "name": "clawdbot-cc-gone", "spec": "x", "status": "warm",
              "owner": "dead-owner", "created": int(time.time() * 1000) - 5000}
    redis_server.cli("hset", f"{prefix}pool:containers", "gone00000001", json.dumps(record))
    redis_server.cli("hset", f"{prefix}sessions", "s-left-behind",
                     json.dumps({"agent": "main", "owner": "dead-owner"}))
    # what default scratch workspaces leave (docs/workspaces.md#persistence): the volume of a
    # warm container the dead pool never handed out, one of a session that expired, and one
    # a closed session still keeps (resumable: gc must leave it)
    tag = uuid.uuid4().hex[:8]
    never, expired, kept = (f"dockercc-ws-{k}{tag}" for k in ("never", "expired", "kept"))
    for name in (never, expired, kept):
        docker_client.volumes.create(name, labels={
            "clawdbot.docker-cc": "1", "clawdbot.docker-cc.workspace": "scratch",
            "clawdbot.docker-cc.prefix": prefix})
    redis_server.cli("hset", f"{prefix}pool:scratch", expired, "s-expired", kept, "s-kept")
    redis_server.cli("hset", f"{prefix}s-kept:state", "status", "stopped")
    try:
        out = dcc("status", "--json", env=env, config=cfg)
        assert out.returncode == 1
        report = json.loads(out.stdout)
        assert report["status"] == "degraded"
        assert report["orphans"] == [orphan]
        (gone,) = report["containers"]
        assert gone["docker_state"] == "missing" and gone["healthy"] is False
        assert gone["owner_alive"] is False and gone["heartbeat_age_ms"] is None
        assert report["pool"]["sessions"] == 1
        human = dcc("status", env=env, config=cfg)
        assert human.returncode == 1
        assert "degraded" in human.stdout and orphan in human.stdout
        assert "container is missing" in human.stdout

        out = dcc("gc", env=env, config=cfg)
        assert out.returncode == 0, out.stderr
        assert "removed 1 container, 1 registry entry, 1 session" in out.stderr
        assert "removed 2 scratch workspace volumes" in out.stderr
        assert orphan not in [c.name for c in docker_client.containers.list(all=True)]
        left = {v.name for v in docker_client.volumes.list(
            filters={"label": f"clawdbot.docker-cc.prefix={prefix}"})}
        assert left == {kept}
        assert redis_server.cli("hkeys", f"{prefix}pool:scratch").split() == [kept]
        out = dcc("status", "--json", env=env, config=cfg)
        assert out.returncode == 0 and json.loads(out.stdout)["status"] == "ok"
    finally:
        subprocess.run(["docker", "rm", "-f", orphan], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", never, expired, kept],
                       capture_output=True)
        redis_server.cli("del", f"{prefix}s-left-behind:state", f"{prefix}s-kept:state",
                         f"{prefix}pool:scratch")


# --------------------------------------------------------------------------- run


@pytest.mark.docker
def test_run_streams_and_falls_back(make_config: Any, api: Any, tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    cfg = write_config(tmp_path / "dockercc.yaml", make_config(model=SEED_CHAIN))
    api.script(text("Hello from a container, streamed."))
    out = dcc("run", "say hello", env=env, config=cfg)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello from a container, streamed.\n"
    assert "docker-claude-code/opus: success" in out.stderr
    assert api.message_requests[-1].last_user_text == "say hello"

    # Redis down, no CLI on PATH: the API answers; the footer says why
    dead = make_config(model=SEED_CHAIN, redis={"url": "redis://127.0.0.1:1/0"})
    cfg = write_config(tmp_path / "dead.yaml", dead)
    api.script(text("Fallback answer."))
    out = dcc("run", "-", "--json", env=base_env(tmp_path / "home", with_cli=False),
              config=cfg, stdin="from stdin")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert "".join(e["text"] for e in events if e["type"] == "text_delta") == "Fallback answer."
    result = events[-1]
    assert result["type"] == "result" and result["provider"] == "anthropic/claude-sonnet-4-5"
    assert set(result["fallback_reasons"]) == {"docker-claude-code/opus", "claude-cli/opus"}
    assert "passed over docker-claude-code/opus: Redis:" in out.stderr
    assert api.message_requests[-1].last_user_text == "from stdin"

    # --provider replaces the chain; a failed turn exits 1
    from dockercc.testing import error

    api.script(error(400, "invalid_request_error", "nope", should_retry=False))
    out = dcc("run", "x", "--provider", "anthropic/claude-sonnet-4-5", env=env, config=cfg)
    assert out.returncode == 1 and "refused the request (400): nope" in out.stderr
    out = dcc("run", "x", "--provider", "openai/gpt-9", env=env, config=cfg)
    assert out.returncode == 2 and "not a valid model reference" in out.stderr


# --------------------------------------------------------------------------- sessions etc.


@pytest.mark.docker
async def test_sessions_logs_interrupt(make_config: Any, api: Any, tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    conf = make_config()
    cfg = write_config(tmp_path / "dockercc.yaml", conf)
    api.script(text("first answer here"),
               text("one two three four five six seven eight nine ten", delay=0.5))
    async with AsyncPool(conf) as pool, pool.session() as s:
        await s.ask("hi", timeout=90)

        out = await adcc("sessions", "--json", env=env, config=cfg)
        assert out.returncode == 0, out.stderr
        (row,) = [r for r in json.loads(out.stdout) if r["id"] == s.id]
        assert row["status"] == "idle" and row["agent"] == "main" and row["turns"] == 1
        assert row["heartbeat_age_ms"] is not None and row["heartbeat_age_ms"] < 10_000
        out = await adcc("sessions", env=env, config=cfg)
        assert out.returncode == 0 and s.id in out.stdout

        out = await adcc("logs", s.id, env=env, config=cfg)
        assert out.returncode == 0 and out.stdout.strip() == "first answer here"
        out = await adcc("logs", s.id, "--raw", env=env, config=cfg)
        lines = [json.loads(x) for x in out.stdout.splitlines()]
        assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
        assert lines[-1]["event"]["type"] == "result"
        out = await adcc("logs", s.id, "--container", env=env, config=cfg)
        assert out.returncode == 0, out.stderr

        # interrupt a running turn from another process
        await s.send("count to ten slowly")
        seen: list[Any] = []

        async def read() -> Result:
            async for event in s.receive(timeout=60):
                seen.append(event)
                if isinstance(event, Result):
                    return event
            raise AssertionError("no result")

        reader = asyncio.create_task(read())
        while not any(isinstance(e, TextDelta) for e in seen):
            await asyncio.sleep(0.05)
        out = await adcc("interrupt", s.id, env=env, config=cfg)
        assert out.returncode == 0 and f"interrupt sent to {s.id}" in out.stderr
        result = await reader
        assert result.interrupted
        await s.close(forget=True)

    for args, code, message in ((("interrupt", "s-nobody-home"), 1, "no runner is listening"),
                                (("interrupt", "bad id!"), 2, "invalid session id"),
                                (("logs", "s-nobody-home"), 1, "no session 's-nobody-home'"),
                                (("logs", "s-nobody-home", "--container"), 1, "no container")):
        out = await adcc(*args, env=env, config=cfg)
        assert out.returncode == code and message in out.stderr, (args, out.stderr)
    out = await adcc("sessions", env=env, config=cfg)
    assert out.returncode == 0 and "no open sessions" in out.stderr


# --------------------------------------------------------------------------- image, demo


@pytest.mark.docker
def test_image_commands(agent_image: str, prefix: str, tmp_path: Path) -> None:
    # (``prefix``: the leak check then looks only at this test's containers; it makes none)
    env = base_env(tmp_path / "home")
    out = dcc("image", "build", "--tag", agent_image, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    # cached by content hash ("up to date"), or rebuilt if the checkout changed meanwhile
    tag, digest = out.stderr.strip().splitlines()[-1].split()
    assert tag == agent_image and len(digest) == 12
    assert "up to date" in out.stderr or "built" in out.stderr
    base = os.environ.get("DOCKERCC_BASE_IMAGE", "dockercc/debian-base:bookworm")
    out = dcc("image", "base", "--tag", base, env=env)
    assert out.returncode == 0 and base in out.stderr
    # a mirror that does not answer: a clear error, nothing imported
    out = dcc("image", "base", "--force", "--tag", "dockercc-test/never:x", "--mirror",
              "http://127.0.0.1:9/debian", env=env, timeout=300)
    assert out.returncode == 1 and "debootstrap failed" in out.stderr
    inspect = subprocess.run(["docker", "image", "inspect", "dockercc-test/never:x"],
                             capture_output=True)
    assert inspect.returncode != 0


@pytest.mark.docker
def test_a_plain_build_reuses_the_recorded_base_and_ca_bundle(
        agent_image: str, docker_client: Any, prefix: str, tmp_path: Path) -> None:
    """Without $DOCKERCC_BASE_IMAGE / $DOCKERCC_CA_BUNDLE (a plain ``pytest`` after
    ``stack.sh up``), a build takes the inputs the existing image recorded: same hash, no
    rebuild, no pull of the public base a registry-less machine cannot reach."""
    from dockercc.image import BASE_LABEL, CA_LABEL, HASH_LABEL

    labels = docker_client.images.get(agent_image).labels
    assert labels[BASE_LABEL] and labels[HASH_LABEL]
    docker_client.images.get(labels[BASE_LABEL])  # recorded only what exists here
    env = {k: v for k, v in base_env(tmp_path / "home").items()
           if k not in ("DOCKERCC_BASE_IMAGE", "DOCKERCC_CA_BUNDLE")}
    out = dcc("image", "build", "--tag", agent_image, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stderr and "building" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].split()[1] == labels[HASH_LABEL][:12]
    after = docker_client.images.get(agent_image).labels
    assert after == labels and after.get(CA_LABEL) == labels.get(CA_LABEL)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_client")
def test_demo(agent_image: str, prefix: str, tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    # the demo starts its own Redis; its containers carry this test's prefix
    env["DOCKERCC_REDIS__KEY_PREFIX"] = prefix
    out = dcc("demo", "--image", agent_image, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tool mcp__host__host_time" in out.stdout
    assert "done success" in out.stdout


@pytest.mark.docker
def test_a_failed_image_build_is_a_typed_error_and_leaves_no_container() -> None:
    """A build step that fails (here: a Claude Code version npm does not have) raises
    ImageError and removes the failed step's container (docker's rm only cleans successes)."""
    import docker

    from dockercc.errors import ImageError
    from dockercc.image import build_image

    client = docker.from_env()
    tag = "dockercc-test/failed-build:never"
    try:
        before = {c.id for c in client.containers.list(all=True)}
        with pytest.raises(ImageError, match="building dockercc-test/failed-build:never failed"):
            build_image(tag, claude_version="0.0.0-no-such-version", force=True)
        # only this build's step containers count (they carry its build ARG in their env):
        # other processes may create containers on the same engine meanwhile
        version = "CLAUDE_CODE_VERSION=0.0.0-no-such-version"
        left = [c.id for c in client.containers.list(all=True) if c.id not in before
                and version in (c.attrs.get("Config", {}).get("Env") or [])]
        assert left == []
        assert client.images.list(name="dockercc-test/failed-build") == []
    finally:
        client.close()
