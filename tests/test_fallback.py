"""The seed's fallback chain with real parts: a dockerd of the test's own that is really
stopped, a Redis that is really down, the real Claude Code CLI on the host and the anthropic
SDK, both against the scripted Messages API.

docker-claude-code/opus -> claude-cli/opus -> anthropic/claude-sonnet-4-5
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockercc.bridge import tool
from dockercc.config import load_config
from dockercc.errors import AgentError, ConfigError, ProviderUnavailable
from dockercc.events import Result, TextDelta, ToolResult, ToolUse
from dockercc.pool.backend import DockerBackend
from dockercc.providers import ProviderChain, chain_refs, parse_model_ref
from dockercc.testing import RedisServer, error, text, tool_use

SEED_CHAIN = ["docker-claude-code/opus", "claude-cli/opus", "anthropic/claude-sonnet-4-5"]


@tool
def add(a: int, b: int) -> int:
    """Add two numbers on the host."""
    return a + b


def cli_env(home: Path, *, with_cli: bool = True) -> dict[str, str]:
    """The caller's environment for the chain: no Anthropic/Claude variables of this machine,
    an empty HOME for the CLI, and (``with_cli=False``) a PATH without ``claude``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE")) and k != "IS_SANDBOX"}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    if not with_cli:
        empty = home / "empty-bin"
        empty.mkdir(exist_ok=True)
        env["PATH"] = str(empty)
    return env


def chain_config(redis_url: str, prefix: str, api: Any, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "redis": {"url": redis_url, "keyPrefix": prefix},
        "docker": {"network": "host"},
        "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
        "timeouts": {"healthIntervalMs": 1000, "startupMs": 30000},
        "model": {"primary": SEED_CHAIN[0], "fallbacks": SEED_CHAIN[1:]},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def user_agents(api: Any) -> list[str]:
    return [r.headers.get("user-agent", "") for r in api.message_requests]


async def collect(session: Any, prompt: str, timeout: float = 90) -> list[Any]:
    return [e async for e in session.stream(prompt, timeout=timeout)]


class OwnDockerd:
    """A dockerd of this test's own (its socket, data and exec roots in a temp dir), so it can
    be stopped for real without touching the machine's engine."""

    def __init__(self, root: Path) -> None:
        if shutil.which("dockerd") is None:
            pytest.fail("dockerd is not installed (apt-get install docker.io)")
        self.root = root
        self.socket = root / "docker.sock"
        self.log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["dockerd", "--host", f"unix://{self.socket}", "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"), "--pidfile", str(root / "docker.pid"),
             "--bridge=none", "--iptables=false", "--ip6tables=false"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ok = subprocess.run(["docker", "-H", self.url, "version"], capture_output=True)
            if ok.returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"own dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def own_dockerd() -> Iterator[OwnDockerd]:
    # a short path: unix socket paths are limited to ~108 bytes
    root = Path(subprocess.check_output(["mktemp", "-d", "/tmp/dcc-dockerd.XXXXXX"],
                                        text=True).strip())
    daemon = OwnDockerd(root)
    try:
        yield daemon
    finally:
        daemon.stop()
        subprocess.run(["rm", "-rf", str(root)], capture_output=True)


# --------------------------------------------------------------------------- the chain


def test_the_chain_is_the_seeds(tmp_path: Path) -> None:
    seed = tmp_path / "config.yaml"
    seed.write_text(
        "agents:\n  defaults:\n    model:\n      primary: docker-claude-code/opus\n"
        "      fallbacks:\n        - claude-cli/opus\n        - anthropic/claude-sonnet-4-5\n"
        "    dockerClaudeCode:\n      enabled: true\n")
    config = load_config(seed, env={})
    assert [str(r) for r in chain_refs(config)] == SEED_CHAIN
    assert parse_model_ref("anthropic/claude-sonnet-4-5").model == "claude-sonnet-4-5"

    with pytest.raises(ConfigError, match=r"model.fallbacks\[1\].*'openai/gpt'.*claude-cli"):
        chain_refs(load_config(env={}, model={"primary": "claude-cli/opus",
                                              "fallbacks": ["anthropic/x", "openai/gpt"]}))
    with pytest.raises(ConfigError, match="model.primary"):
        ProviderChain(load_config(env={}, model="opus"))
    with pytest.raises(ConfigError, match="refs"):
        ProviderChain(load_config(env={}), refs=["docker-claude-code/"])


# --------------------------------------------------------------------------- acceptance


@pytest.mark.docker
async def test_dockerd_stopped_falls_back_to_cli_then_without_cli_to_anthropic(
        own_dockerd: OwnDockerd, redis_server: RedisServer, prefix: str, api: Any,
        tmp_path: Path) -> None:
    cfg = chain_config(redis_server.url, prefix, api, docker={"baseUrl": own_dockerd.url})
    # the pool's Docker client reaches this engine ...
    backend = DockerBackend(own_dockerd.url)
    await backend.ping()
    await backend.close()
    # ... until it is really stopped
    own_dockerd.stop()
    assert not own_dockerd.socket.exists() or subprocess.run(
        ["docker", "-H", own_dockerd.url, "version"], capture_output=True).returncode != 0

    api.script(tool_use("mcp__host__add", {"a": 2, "b": 3}, text="Adding on the host."),
               text("The sum is 5."))
    async with ProviderChain(cfg, tools=[add], env=cli_env(tmp_path / "home")) as chain:
        async with chain.session(workspace=str(tmp_path)) as s:
            assert s.provider == "claude-cli/opus"
            events = await collect(s, "add 2 and 3")
            result = events[-1]
            assert isinstance(result, Result) and result.ok
            assert result.provider == "claude-cli/opus"
            reason = result.fallback_reasons["docker-claude-code/opus"]
            assert reason.startswith("Docker:") and "docker" in reason.lower()
            assert list(result.fallback_reasons) == ["docker-claude-code/opus"]
            # the real CLI served, streamed, and called the host tool through the bridge
            assert all(ua.startswith("claude-cli/") for ua in user_agents(api)), user_agents(api)
            assert [e.name for e in events if isinstance(e, ToolUse)] == ["mcp__host__add"]
            assert [e.text for e in events if isinstance(e, ToolResult)] == ["5"]
            assert len([e for e in events if isinstance(e, TextDelta)]) >= 3
            assert result.text == "The sum is 5."
            # the session stays on its provider
            again = await s.ask("and now?")
            assert again.provider == "claude-cli/opus" and again.text == "echo: and now?"

    # no CLI on PATH: the API serves, and the Result says why both others were passed over
    api.reset()
    api.script(tool_use("mcp__host__add", {"a": 20, "b": 22}), text("It is 42."))
    env = cli_env(tmp_path / "home2", with_cli=False)
    async with ProviderChain(cfg, tools=[add], env=env) as chain:
        async with chain.session() as s:
            events = await collect(s, "add 20 and 22")
    result = events[-1]
    assert isinstance(result, Result) and result.ok
    assert result.provider == "anthropic/claude-sonnet-4-5"
    assert list(result.fallback_reasons) == SEED_CHAIN[:2]
    assert result.fallback_reasons["docker-claude-code/opus"].startswith("Docker:")
    assert "not on PATH" in result.fallback_reasons["claude-cli/opus"]
    assert all(ua.startswith("AsyncAnthropic/") for ua in user_agents(api)), user_agents(api)
    assert [e.text for e in events if isinstance(e, ToolResult)] == ["42"]
    assert result.text == "It is 42." and result.model == "claude-sonnet-4-5"
    assert [c.name for c in result.tool_calls] == ["mcp__host__add"]
    # the model saw the tool result and the tool under the container's name
    second = api.message_requests[1]
    assert second.tool_result_text == "42"
    assert [t["name"] for t in second.body["tools"]] == ["mcp__host__add"]


@pytest.mark.docker
async def test_redis_down_falls_back(tmp_path: Path, docker_client: Any, api: Any,
                                     prefix: str) -> None:
    with RedisServer() as redis:
        url = redis.url
        assert redis.cli("ping").strip() == "PONG"
    # really down
    cfg = chain_config(url, prefix, api)
    api.script(text("served without Redis"))
    t0 = time.monotonic()
    async with ProviderChain(cfg, env=cli_env(tmp_path / "home")) as chain:
        result = await chain.ask("hello", timeout=90)
    assert result.provider == "claude-cli/opus" and result.text == "served without Redis"
    reason = result.fallback_reasons["docker-claude-code/opus"]
    assert reason.startswith("Redis:") and "not reachable" in reason
    assert time.monotonic() - t0 < 60


async def test_no_fallback_once_output_began(tmp_path: Path, api: Any) -> None:
    cfg = chain_config("redis://127.0.0.1:1", "tnone:", api)
    api.script(text("one two three four five six seven eight", delay=0.4))
    chain = ProviderChain(cfg, refs=["claude-cli/opus", "anthropic/claude-sonnet-4-5"],
                          env=cli_env(tmp_path / "home"))
    async with chain, chain.session() as s:
        seen: list[Any] = []
        with pytest.raises(AgentError, match="exited .* in the middle of a turn"):
            async for event in s.stream("count", timeout=90):
                seen.append(event)
                if isinstance(event, TextDelta):
                    cli = s.current
                    assert cli is not None and cli.name == "claude-cli/opus"
                    cli.proc.kill()  # type: ignore[attr-defined]
        assert any(isinstance(e, TextDelta) for e in seen)
        assert not any(isinstance(e, Result) for e in seen)
        assert s.provider == "claude-cli/opus"  # no switch after output began
    assert all(ua.startswith("claude-cli/") for ua in user_agents(api))


async def test_startup_timeout_and_api_errors_fall_back(tmp_path: Path, api: Any) -> None:
    # the CLI cannot answer its start-up handshake within startupMs -> the API serves
    cfg = chain_config("redis://127.0.0.1:1", "tnone:", api, timeouts={"startupMs": 1})
    api.script(text("from the API"))
    async with ProviderChain(cfg, refs=["claude-cli/opus", "anthropic/claude-sonnet-4-5"],
                             env=cli_env(tmp_path / "home")) as chain:
        result = await chain.ask("hi")
    assert result.provider == "anthropic/claude-sonnet-4-5" and result.text == "from the API"
    assert "start-up handshake within 0.0s (startupMs)" in result.fallback_reasons[
        "claude-cli/opus"]

    # the API is overloaded before any output -> the next entry serves
    api.reset()
    api.script(error(529, "overloaded_error", "Overloaded", should_retry=False),
               text("from the CLI"))
    cfg = chain_config("redis://127.0.0.1:1", "tnone:", api)
    async with ProviderChain(cfg, refs=["anthropic/claude-sonnet-4-5", "claude-cli/opus"],
                             env=cli_env(tmp_path / "home")) as chain:
        result = await chain.ask("hi")
    assert result.provider == "claude-cli/opus" and result.text == "from the CLI"
    assert "answered 529: Overloaded" in result.fallback_reasons["anthropic/claude-sonnet-4-5"]

    # a request the API refuses (400) is an error of the request: no fallback
    api.reset()
    api.script(error(400, "invalid_request_error", "prompt is bad", should_retry=False))
    async with ProviderChain(cfg, refs=["anthropic/claude-sonnet-4-5", "claude-cli/opus"],
                             env=cli_env(tmp_path / "home")) as chain:
        with pytest.raises(AgentError, match=r"refused the request \(400\): prompt is bad"):
            await chain.ask("hi")
    assert len(api.message_requests) == 1


async def test_nothing_left_raises_every_reason(tmp_path: Path, api: Any) -> None:
    cfg = chain_config("redis://127.0.0.1:1", "tnone:", api,
                       credentials={"apiKey": None})
    env = cli_env(tmp_path / "home", with_cli=False)
    async with ProviderChain(cfg, env=env) as chain:
        with pytest.raises(ProviderUnavailable) as info:
            await chain.ask("hi")
    reasons = info.value.reasons
    assert list(reasons) == SEED_CHAIN
    assert reasons["docker-claude-code/opus"].startswith("Redis:")
    assert "not on PATH" in reasons["claude-cli/opus"]
    assert "no Anthropic API key" in reasons["anthropic/claude-sonnet-4-5"]
    assert "docker-claude-code/opus: Redis:" in str(info.value)
    assert api.message_requests == []

    # disabled in the configuration: passed over without trying
    cfg = chain_config("redis://127.0.0.1:1", "tnone:", api, enabled=False)
    api.script(text("api"))
    async with ProviderChain(cfg, env=env) as chain:
        result = await chain.ask("hi")
    assert "disabled" in result.fallback_reasons["docker-claude-code/opus"]


@pytest.mark.docker
async def test_docker_primary_serves_when_everything_is_up(make_config: Any, api: Any,
                                                           tmp_path: Path) -> None:
    cfg = make_config(model={"primary": SEED_CHAIN[0], "fallbacks": SEED_CHAIN[1:]})
    api.script(tool_use("mcp__host__add", {"a": 1, "b": 2}), text("three"))
    async with ProviderChain(cfg, tools=[add], env=cli_env(tmp_path / "home")) as chain:
        async with chain.session() as s:
            events = await collect(s, "add 1 and 2")
            assert s.provider == "docker-claude-code/opus"
    result = events[-1]
    assert isinstance(result, Result) and result.ok and result.text == "three"
    assert result.provider == "docker-claude-code/opus" and result.fallback_reasons == {}
    assert [e.text for e in events if isinstance(e, ToolResult)] == ["3"]
    # the CLI in the container ran with the chain entry's model (``--model opus``)
    assert "opus" in api.message_requests[0].body["model"]
