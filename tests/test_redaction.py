"""One redaction for every URL form and token shape, used by config_get, status, logs and
errors; terminal output never interprets what came from Redis or a container."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockercc.builtins import builtin_tools
from dockercc.client import AsyncPool
from dockercc.config import DockerCCConfig, mask_url
from dockercc.redaction import redact, terminal_safe

C = "CANARY7f3a9"

URL_FORMS = [
    f"https://user:{C}@api.example.com/v1",
    f"https://{C}@github.com/org/repo.git",
    f"https://api.example.com/v1?access_token={C}&x=1",
    f"https://api.example.com/v1?token={C}",
    f"https://api.example.com/v1?x=1&key={C}#frag",
    f"https://api.example.com/v1?api_key={C}",
    f"https://api.example.com/v1?X-Amz-Signature={C}",
    f"redis://:{C}@cache:6379/0",
    f"rediss://default:{C}@cache:6380",
    f"tcp://admin:{C}@docker-host:2376",
    f"ssh://{C}@node.example",
    f"see https://x:{C}@h/p and https://h2/?password={C}",
    f"sk-ant-api03-{C}",
    f"the key is sk-ant-api03-{C}, keep it",
    f"Authorization: Bearer {C}",
    f"authorization: basic {C}",
    f"refresh_token={C}",
]


@pytest.mark.parametrize("text", URL_FORMS)
def test_every_form_is_masked_by_every_entry_point(text: str) -> None:
    for fn in (redact, mask_url):
        out = fn(text)
        assert C not in out, (fn.__name__, out)
        assert "***" in out


def test_plain_urls_are_left_alone() -> None:
    for url in ("http://127.0.0.1:8080/v1/messages?beta=true", "unix:///var/run/docker.sock",
                "redis://localhost:6379/0", "https://docs.example/a?page=2"):
        assert redact(url) == url


async def test_config_get_shows_no_canary(redis_server: Any, prefix: str) -> None:
    cfg = {
        "redis": {"url": f"redis://u:{C}@127.0.0.1:{redis_server.port}/0",
                  "keyPrefix": prefix},
        "credentials": {"baseUrl": f"https://user:{C}@api.example.com/?access_token={C}"},
        "docker": {"baseUrl": f"tcp://admin:{C}@127.0.0.1:2376"},
        "agents": {"main": {"systemPrompt": f"you hold sk-ant-api03-{C}",
                            "appendSystemPrompt": f"Bearer {C}"}},
        "tools": {"nodes": {"remote": {"a": {"url": f"ssh://{C}@node.example"},
                                       "b": {"url": f"tcp://node.example:2376/?key={C}"}}}},
    }
    config = DockerCCConfig.model_validate(cfg)
    assert C not in json.dumps(config.redacted_dump())
    pool = AsyncPool(config)
    s = pool.session(session_id="redact-me")
    tools = {t.name: t for t in builtin_tools(pool, s)}
    for args in ({}, {"path": "credentials"}, {"path": "agents.main"},
                 {"path": "tools.nodes"}):
        out = await tools["config_get"].call(args)
        body = json.dumps(out.content)
        assert C not in body and not out.is_error, body
    out = await tools["agents_list"].call({})
    assert C not in json.dumps(out.content)
    await pool.transport.close()


def test_terminal_safe_neutralises_control_sequences() -> None:
    hostile = ("ok\x1b]52;c;c3VkbyBybSAtcmYgLw==\x07 \x1b[2J\x1b[H\x9b31m \x07\x08\x00"
               "\u202eevil\n\tnext")
    out = terminal_safe(hostile)
    for ch in "\x1b\x07\x9b\x08\x00\u202e":
        assert ch not in out
    assert "\\x1b]52;" in out and out.endswith("\n\tnext")
    assert "\n" not in terminal_safe("a\nb", newlines=False)


# -- the CLI prints Redis-controlled text literally ------------------------------------------

EVIL = "[bold red]x[/bold red]\x1b]52;c;c3VkbyBybSAtcmYgLw==\x07\x1b[2J\x9b1m\u202e"


def _cli(*args: str, config: Any) -> Any:
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "dockercc.cli", "--config", str(config),
                           *args], capture_output=True, timeout=120, env=env)


def _assert_inert(out: bytes) -> None:
    for seq in (b"\x1b", b"\x07", "\x9b".encode(), "\u202e".encode()):
        assert seq not in out, out
    assert b"[bold red]x[/bold red]" in out  # shown, not interpreted


def test_cli_output_escapes_control_and_markup(redis_server: Any, prefix: str,
                                               tmp_path: Any) -> None:
    import redis
    import yaml

    from dockercc.protocol.envelope import encode_envelope

    conf = tmp_path / "dockercc.yaml"
    conf.write_text(yaml.safe_dump({"redis": {"url": redis_server.url, "keyPrefix": prefix}}))
    r = redis.Redis.from_url(redis_server.url)
    try:
        r.hset(f"{prefix}sessions", "evil-1", json.dumps({"agent": EVIL, "owner": EVIL}))
        r.hset(f"{prefix}evil-1:state", mapping={"status": EVIL, "turns": "x",
                                                "cost_usd": "nan"})
        delta = {"type": "stream_event", "event": {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": EVIL}}}
        r.rpush(f"{prefix}evil-1:output_buffer",
                encode_envelope(1, 1, json.dumps({"type": "dockercc", "subtype": "error",
                                                  "error": EVIL, "message": EVIL})),
                encode_envelope(2, 1, json.dumps(delta)))
        for args in (("sessions",), ("sessions", "--json"), ("logs", "evil-1"),
                     ("logs", "evil-1", "--raw")):
            out = _cli(*args, config=conf)
            assert out.returncode == 0, out.stderr
            body = out.stdout + out.stderr
            if "--json" in args or "--raw" in args:
                for seq in (b"\x1b", b"\x07", "\x9b".encode(), "\u202e".encode()):
                    assert seq not in body
                for line in out.stdout.splitlines():
                    json.loads(line) if "--raw" in args else None
            else:
                _assert_inert(body)
    finally:
        for key in r.scan_iter(match=f"{prefix}*"):
            r.delete(key)
        r.close()
