"""Bad input: hostile session ids and names, malformed and hostile configuration, garbled /
truncated / huge stream lines, bad MCP tool arguments, oversize prompts.

Each gets a clear typed error (the ``DockerCCError`` tree) and nothing already accepted is
lost. The fuzz tests (hypothesis) are bounded: a fixed number of examples, no database.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockercc._mapper import EventMapper
from dockercc.bridge import HostBridge, tool
from dockercc.client import AsyncPool
from dockercc.config import (
    AgentConfig,
    CredentialsConfig,
    DockerCCConfig,
    DockerConfig,
    PoolConfig,
    RedisConfig,
    ResourcesConfig,
    TimeoutsConfig,
    load_config,
    resolve_config,
)
from dockercc.errors import ConfigError, DockerCCError, InvalidPrompt, InvalidSessionId
from dockercc.events import BaseEvent, Result
from dockercc.protocol.envelope import SEQ_MAX, Envelope, encode_envelope
from dockercc.protocol.keys import PoolKeys, SessionKeys, validate_id
from dockercc.testing import text, tool_use

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
HEAVY = settings(FUZZ, max_examples=80)  # examples that build whole streams / configs
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CANARY = "sk-ant-oat01-CANARY-badinput-0f3c9a"

json_scalars = (st.none() | st.booleans() | st.integers(-(2**64), 2**64)
                | st.floats(allow_nan=False) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=25)


def _fixture_objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        if path.name.endswith(".stdin.jsonl"):
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


OBJECTS = _fixture_objects()

# ----------------------------------------------------------------------- session ids, names

HOSTILE_IDS: list[Any] = [
    "", " ", "a b", "a:b", "a:b:input", "x*", "x?", "[x]", "a\nb", "a\rb", "a\tb", "a\x00b",
    "../etc/passwd", "a/b", "a\\b", "-rm", ".hidden", "_x", "$(reboot)", "`id`", "a;b",
    "a|b", "a&b", "a'b", 'a"b', "ａｂｃ", "é", "x" * 129, "x" * 100_000, "clawdbot:cc:*",
    None, 42, 4.2, b"bytes", ["list"], {"a": 1},
]


@pytest.mark.parametrize("bad", HOSTILE_IDS, ids=lambda v: repr(v)[:30])
def test_hostile_session_ids_are_rejected_with_a_clear_error(bad: Any) -> None:
    with pytest.raises(InvalidSessionId) as info:
        validate_id(bad)
    message = str(info.value)
    assert "A-Z a-z 0-9 . _ -" in message
    assert len(message) < 300  # a 100 kB id is not echoed back in full
    with pytest.raises(InvalidSessionId):
        SessionKeys(bad, "clawdbot:cc:")


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=50) | json_values)
def test_validate_id_accepts_only_safe_ids(value: Any) -> None:
    try:
        ok = validate_id(value)
    except InvalidSessionId:
        assert not (isinstance(value, str) and SAFE_ID.fullmatch(value))
        return
    assert ok == value and SAFE_ID.fullmatch(ok)
    keys = SessionKeys(ok, "p:")
    for key in keys.all():
        rest = key.removeprefix(f"p:{ok}")
        assert key.startswith(f"p:{ok}:") and rest.count(":") >= 1
        assert not set(key) & set(" \t\r\n*?[]\\\"'`$;|&/")
    assert PoolKeys("p:").assign(ok) == f"p:pool:assign:{ok}"


async def test_pool_rejects_hostile_ids_and_names_before_any_io() -> None:
    """No Redis, no Docker here: the ids are refused before anything is touched."""
    pool = AsyncPool({"redis": {"url": "redis://127.0.0.1:1/0"}})
    for bad in ("a:b", "../x", "x*", "a b", "x" * 200, "a\nb"):
        with pytest.raises(InvalidSessionId):
            pool.session(session_id=bad)
        with pytest.raises((InvalidSessionId, ConfigError)):
            pool.session(agent=bad)
    with pytest.raises((InvalidSessionId, ConfigError)):
        pool.session(agent="")
    assert pool.open_sessions == []
    await pool.close()


@pytest.mark.parametrize("prefix", ["x/../y", "a b", "-x", "x;rm", "", "ü"])
def test_hostile_container_prefix_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config({"docker": {"containerPrefix": prefix}})
    assert "containerPrefix" in str(info.value)


# ----------------------------------------------------------------------------- config

SECTIONS: dict[str, type[Any]] = {
    "pool": PoolConfig, "resources": ResourcesConfig, "timeouts": TimeoutsConfig,
    "redis": RedisConfig, "docker": DockerConfig, "credentials": CredentialsConfig,
}


def _aliases(model: type[Any]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


section_dicts = st.one_of(*[
    st.tuples(st.just(name), st.dictionaries(st.sampled_from(_aliases(model)) | st.text(max_size=8),
                                             json_values, max_size=4))
    for name, model in SECTIONS.items()])
agent_dicts = st.dictionaries(st.text(max_size=12),
                              st.dictionaries(st.sampled_from(_aliases(AgentConfig)),
                                              json_values, max_size=3) | json_values, max_size=3)


@HEAVY
@given(st.lists(section_dicts, max_size=4), st.dictionaries(
    st.sampled_from(["image", "enabled", "historyMax", "model", "bogus", "agents"]),
    json_values, max_size=3), agent_dicts)
def test_hostile_config_gives_a_config_or_a_config_error(
        sections: list[tuple[str, dict[str, Any]]], top: dict[str, Any],
        agents: dict[str, Any]) -> None:
    data: dict[str, Any] = dict(top)
    for name, body in sections:
        data[name] = body
    if agents:
        data["agents"] = agents
    creds = data.get("credentials")
    if isinstance(creds, dict):
        creds["oauthToken"] = CANARY
    try:
        config = resolve_config(data)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError lists its problems"
        assert CANARY not in str(exc) and CANARY not in repr(exc.problems)
        return
    assert isinstance(config, DockerCCConfig)
    assert CANARY not in repr(config) and CANARY not in json.dumps(config.redacted_dump())


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_garbage_yaml_files_give_a_config_or_a_config_error(tmp_path_factory: Any,
                                                            blob: bytes) -> None:
    path = tmp_path_factory.mktemp("yaml") / "dockercc.yaml"
    path.write_bytes(blob)
    try:
        assert isinstance(DockerCCConfig.from_yaml(path), DockerCCConfig)
    except ConfigError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(st.dictionaries(
    st.sampled_from(["DOCKERCC_POOL__MAX_TOTAL", "DOCKERCC_RESOURCES__MEMORY",
                     "DOCKERCC_TIMEOUTS__IDLE_MS", "DOCKERCC_DOCKER__BINDS",
                     "DOCKERCC_DOCKER__CAP_DROP", "DOCKERCC_REDIS__URL", "DOCKERCC_POOL__MIN_WRAM",
                     "DOCKERCC_AGENTS__MAIN__MAX_TURNS", "DOCKERCC_", "DOCKERCC___X", "REDIS_URL"]),
    st.text(max_size=40), max_size=4))
def test_hostile_environment_gives_a_config_or_a_config_error(env: dict[str, str]) -> None:
    env = {k: v.replace("\x00", "") for k, v in env.items()}
    env["CLAUDE_CODE_OAUTH_TOKEN"] = CANARY
    try:
        config = load_config(env=env)
    except ConfigError as exc:
        assert CANARY not in str(exc)
        return
    assert config.credentials.oauth_token is not None
    assert CANARY not in repr(config)


def _laughs(depth: int) -> str:
    doc = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, depth):
        doc += f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n"
    return doc + f"pool:\n  maxTotal: *a{depth - 1}\n"


@pytest.mark.parametrize("doc", [_laughs(9), "a: &a [*a]\npool:\n  maxTotal: *a\n",
                                 "x: &x {k: *x}\ndocker: *x\n"],
                         ids=["billion-laughs", "recursive-list", "recursive-map"])
def test_hostile_yaml_is_refused_quickly(tmp_path: Path, doc: str) -> None:
    path = tmp_path / "dockercc.yaml"
    path.write_text(doc)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        DockerCCConfig.from_yaml(path)
    assert time.monotonic() - t0 < 5
    assert "aliases expanded" in str(info.value)


def test_self_referencing_overrides_are_a_config_error() -> None:
    loop: dict[str, Any] = {}
    loop["x"] = loop
    items: list[Any] = []
    items.append(items)
    for bad in ({"pool": loop}, {"docker": {"binds": items}}):
        with pytest.raises(ConfigError) as info:
            resolve_config(bad)
        assert "contains itself" in str(info.value)


# -------------------------------------------------------------------- envelopes and events


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_envelope_decode_never_raises(data: bytes) -> None:
    env = Envelope.decode(data)
    if env is not None:
        assert isinstance(env.seq, int) and isinstance(env.event, dict)


@FUZZ
@given(st.integers(0, 2**62), st.integers(0, 2**45),
       st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_envelope_round_trip(seq: int, ts: int, event: dict[str, Any]) -> None:
    raw = encode_envelope(seq, ts, json.dumps(event, ensure_ascii=False))
    env = Envelope.decode(raw)
    if seq > SEQ_MAX:  # beyond what a runner can reach: a forged seq is dropped, not trusted
        assert env is None
    else:
        assert env is not None and (env.seq, env.ts, env.event) == (seq, ts, event)


def _mutate(obj: Any, data: st.DataObject) -> Any:
    if isinstance(obj, dict) and obj and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(obj)))
        out = dict(obj)
        choice = data.draw(st.integers(0, 2))
        if choice == 0:
            del out[key]
        elif choice == 1:
            out[key] = data.draw(json_values)
        else:
            out[key] = _mutate(obj[key], data)
        return out
    if isinstance(obj, list) and obj and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(obj) - 1))
        return [*obj[:i], _mutate(obj[i], data), *obj[i + 1:]]
    return obj


@pytest.mark.usefixtures("cli_fixtures")  # (without them, half the cases vanish)
@HEAVY
@given(st.data())
def test_event_mapper_never_raises_on_mutated_and_random_streams(data: st.DataObject) -> None:
    mapper = EventMapper("fuzz")
    count = data.draw(st.integers(1, 25))
    seq = 0
    for _ in range(count):
        if OBJECTS and data.draw(st.booleans()):
            event = _mutate(data.draw(st.sampled_from(OBJECTS)), data)
        else:
            event = data.draw(st.dictionaries(
                st.sampled_from(["type", "subtype", "message", "event", "result", "is_error",
                                 "session_id", "parent_tool_use_id", "request"]) | st.text(max_size=5),
                json_values | st.sampled_from(["result", "assistant", "user", "system",
                                               "stream_event", "dockercc", "error"]),
                max_size=6))
        seq += data.draw(st.integers(1, 3))
        if not isinstance(event, dict):
            continue
        events = mapper.map(Envelope(seq=seq, ts=0, event=event))
        for ev in events:
            assert isinstance(ev, BaseEvent) and ev.session == "fuzz" and ev.seq == seq
            if isinstance(ev, Result):
                assert event.get("type") == "result"
    assert mapper.last_seq == seq


# ------------------------------------------------------------- the runner's stdout handling


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from dockercc.agent.runner import Runner
    from dockercc.agent.settings import Assignment, RunnerSettings

    monkeypatch.setenv("HOME", str(tmp_path))  # transcripts are looked up under $HOME
    r = Runner(RunnerSettings(redis_url="redis://127.0.0.1:1/0", container="fuzz1",
                              prefix="p:"))
    r.claim(Assignment(session="fuzz"))
    return r


FIXTURE_LINES = [json.dumps(o, separators=(",", ":")).encode() for o in OBJECTS] or [b"{}"]


@pytest.mark.usefixtures("cli_fixtures")  # (without them, half the cases vanish)
@FUZZ
@given(lines=st.lists(st.binary(max_size=200)
                      | json_values.map(lambda v: json.dumps(v).encode())
                      | st.sampled_from(FIXTURE_LINES), max_size=20),
       tail=st.none() | st.sampled_from(FIXTURE_LINES).flatmap(
           lambda b: st.integers(0, len(b)).map(lambda n: b[:n])))
async def test_runner_relays_every_json_object_line_and_skips_the_rest(
        runner: Any, lines: list[bytes], tail: bytes | None) -> None:
    """Garbled and non-object lines from the CLI, and a last line cut short (the CLI died
    mid-write), are skipped; every JSON object is relayed as it was written; nothing raises;
    whatever is relayed decodes as an envelope."""
    runner.output.queue = asyncio.Queue()
    stream = [line.replace(b"\n", b" ") + b"\n" for line in lines]
    if tail is not None:
        stream.append(tail.replace(b"\n", b" "))  # no newline: EOF in the middle of a line
    expected = []
    for raw in stream:
        runner.handle_line(raw)
        try:
            obj = json.loads(raw.strip())
        except ValueError:
            continue
        if raw.strip().startswith(b"{") and isinstance(obj, dict):
            expected.append(raw.strip())
    relayed = []
    while not runner.output.queue.empty():
        data, _ops = runner.output.queue.get_nowait()
        if data is not None:
            relayed.append(data)
            assert Envelope.decode(encode_envelope(1, 0, data)) is not None
    assert relayed == expected
    for task in list(runner.tasks.running):  # MCP relays / permission answers it started
        task.cancel()
    await asyncio.gather(*runner.tasks.running, return_exceptions=True)


async def test_hostile_claude_session_id_does_not_pick_up_other_transcripts(
        runner: Any, tmp_path: Path) -> None:
    """The CLI's session id names a transcript file: glob patterns must not match others."""
    other = tmp_path / ".claude" / "projects" / "-workspace" / "someone-else.jsonl"
    other.parent.mkdir(parents=True)
    other.write_text('{"secret": "other conversation"}\n')
    class Pipe:
        def __init__(self) -> None:
            self.written: dict[str, Any] = {}

        def hset(self, key: str, mapping: dict[str, Any]) -> None:
            self.written.update(mapping)

    for sid in ("*", "some*", "[s]omeone-else", "?omeone-else", "../projects/-workspace/x"):
        runner.conversation.claude_session_id = sid
        pipe = Pipe()
        runner.conversation.transcript_op(runner.keys.transcript)(pipe)
        data = pipe.written.get("data")
        assert data is None or b"other conversation" not in zlib.decompress(data), sid


# --------------------------------------------------------------------------- MCP arguments


@FUZZ
@given(st.dictionaries(st.sampled_from(["a", "b", "c", ""]) | st.text(max_size=4),
                       json_values, max_size=4) | json_values)
async def test_bad_tool_arguments_never_reach_the_function(arguments: Any) -> None:
    calls: list[tuple[int, int]] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        assert type(a) is int and type(b) is int
        calls.append((a, b))
        return a + b

    bridge = HostBridge([add])
    try:
        await bridge.handle({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "0"}}})
        await bridge.handle({"jsonrpc": "2.0", "method": "notifications/initialized"})
        reply = await bridge.handle({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                     "params": {"name": "add", "arguments": arguments}})
    finally:
        await bridge.aclose()
    assert reply.get("id") == 7
    # valid: both present as integers (unknown extra arguments are ignored)
    good = (isinstance(arguments, dict) and {"a", "b"} <= set(arguments)
            and all(type(arguments[k]) is int for k in "ab"))
    if "error" in reply:  # a JSON-RPC error (e.g. arguments that are not an object)
        assert not calls and not good
        return
    content = reply["result"]["content"]
    if reply["result"].get("isError"):
        assert not calls and not good
        assert content[0]["type"] == "text" and "invalid arguments" in content[0]["text"]
    else:  # (lax coercion like "5" -> 5 is pydantic's; the function still gets ints)
        assert len(calls) == 1 and content[0]["text"] == str(sum(calls[0]))


@FUZZ
@given(json_values | st.binary(max_size=100) | st.dictionaries(
    st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error"]),
    json_values | st.sampled_from(["2.0", "tools/call", "tools/list", "initialize"]),
    max_size=5))
async def test_garbage_json_rpc_never_breaks_the_bridge(message: Any) -> None:
    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    bridge = HostBridge([echo])
    try:
        reply = await asyncio.wait_for(bridge.handle(message), 10)
        assert isinstance(reply, dict) and reply.get("jsonrpc") == "2.0"
        again = await bridge.handle({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert "result" in again or "error" in again
    finally:
        await bridge.aclose()


# ------------------------------------------------------- against a real pool and container


def last_tool_result(request: Any) -> str:
    content = request.tool_results[-1].get("content")
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content)


@pytest.mark.docker
async def test_bad_mcp_arguments_end_to_end(make_config: Any, api: Any) -> None:
    """The real CLI calls a host tool with wrong, missing and unknown arguments: the model
    gets clear error results, the function is never called with them, the session goes on."""
    calls: list[tuple[int, int]] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append((a, b))
        return a + b

    api.script(tool_use("mcp__host__add", {"a": "one", "b": 2}),
               tool_use("mcp__host__add", {"a": 1}),
               tool_use("mcp__host__add", {"a": [1] * 1000, "b": {"deep": {"er": True}}}),
               tool_use("mcp__host__add", {"a": 2, "b": 3}),
               text("done with the tools"))
    async with AsyncPool(make_config(), tools=[add]) as pool:
        s = pool.session()
        result = await s.ask("use the add tool", timeout=180)
        assert result.text == "done with the tools"
        assert calls == [(2, 3)]
        results = [last_tool_result(r) for r in api.message_requests[1:5]]
        assert "invalid arguments for tool 'add': a: Input should be a valid integer" in results[0]
        assert "b: Field required" in results[1], results[1]
        assert "a: " in results[2] and "b: " in results[2] and len(results[2]) < 3000, results[2]
        assert results[3].strip() == "5"
        api.script(text("still here"))
        assert (await s.ask("and now?", timeout=120)).text == "still here"
        await s.close(forget=True)


@pytest.mark.docker
async def test_oversize_and_malformed_prompts_are_refused_and_nothing_accepted_is_lost(
        make_config: Any, api: Any) -> None:
    api.on("accepted first", text("answer to the first", delay=0.2))
    api.on("big one", text("got the big one"))
    async with AsyncPool(make_config(), max_prompt_bytes=300_000) as pool:
        s = pool.session()
        await s.send("accepted first")
        for bad in ("x" * 400_000, "", "   \n", [], [{"text": "no type"}], ["not a block"],
                    [{"type": 5}]):
            with pytest.raises(InvalidPrompt):
                await s.send(bad)  # type: ignore[arg-type]
        keys = pool.transport.keys(s.id)
        result = None
        async for ev in s.receive(timeout=120):
            if isinstance(ev, Result):
                result = ev
        assert result is not None and result.text == "answer to the first"
        assert await pool.transport.client.llen(keys.input) == 0
        big = "big one " + "y" * 250_000
        assert (await s.ask(big, timeout=120)).text == "got the big one"
        assert any(r.last_user_text == big for r in api.message_requests)
        assert not any("x" * 1000 in r.last_user_text for r in api.message_requests)
        await s.close(forget=True)


FAKE_CLI = r'''#!/opt/dockercc/bin/python3
"""A hostile stand-in for the Claude Code CLI: garbage between valid lines."""
import json, sys
out = sys.stdout.buffer
def emit(b):
    out.write(b + b"\n"); out.flush()
turn = 0
for raw in sys.stdin.buffer:
    try:
        msg = json.loads(raw)
    except ValueError:
        continue
    if msg.get("type") != "user":
        continue
    turn += 1
    emit(b"\xff\xfe garbage \x00 bytes")
    emit(b'{"type": "assistant", "message": {"content": [{"type": "te')  # truncated
    emit(b"not json at all")
    emit(b"[1, 2, 3]")
    emit(json.dumps({"type": "brand_new_type", "payload": "x" * 6_000_000}).encode())
    emit(b"y" * 3_000_000)
    emit(json.dumps({"type": "stream_event", "event": {"type": "content_block_delta",
         "index": 0, "delta": {"type": "text_delta", "text": "survived"}}}).encode())
    emit(json.dumps({"type": "result", "subtype": "success", "is_error": False,
         "result": f"survived turn {turn}", "session_id": "fake-session", "num_turns": 1,
         "duration_ms": 1, "total_cost_usd": 0}).encode())
'''


@pytest.mark.docker
async def test_garbled_truncated_and_huge_cli_lines_do_not_break_the_session(
        make_config: Any, tmp_path: Path) -> None:
    """The runner relays a CLI that writes garbage, truncated JSON, a 6 MB line of an unknown
    type and a 3 MB non-JSON line: the caller gets the valid events and the result, twice."""
    bin_dir = tmp_path / "fakecli"
    bin_dir.mkdir()
    os.chmod(bin_dir, 0o755)
    fake = bin_dir / "claude"
    fake.write_text(FAKE_CLI)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IROTH)
    cfg = make_config(docker={"network": "host", "binds": [f"{bin_dir}:/opt/fakecli:ro"],
                              "env": {"DOCKERCC_CLAUDE_BIN": "/opt/fakecli/claude"}})
    async with AsyncPool(cfg) as pool:
        s = pool.session()
        for turn in (1, 2):
            events = [ev async for ev in s.stream(f"turn {turn}", timeout=120)]
            kinds = [type(ev).__name__ for ev in events]
            assert isinstance(events[-1], Result) and events[-1].text == f"survived turn {turn}"
            assert "TextDelta" in kinds
            raw = [ev for ev in events if type(ev).__name__ == "RawEvent"]
            assert any(len(json.dumps(ev.raw)) > 6_000_000 for ev in raw)  # relayed intact
            assert not any(isinstance(ev, DockerCCError) for ev in events)
        await s.close(forget=True)


BAD_PROMPTS: list[Any] = ["", "   \n", [], [{"text": "no type"}], ["not a block"],
                          [{"type": 5}], None, 42]


def test_every_entry_point_refuses_a_bad_prompt_with_invalid_prompt() -> None:
    """One check, one error: the session, the provider chain and each provider raise
    InvalidPrompt (also a ValueError, as before) before they start anything."""
    from dockercc.builtins.cron import CronScheduler
    from dockercc.protocol.control import check_prompt
    from dockercc.providers import ProviderChain

    assert issubclass(InvalidPrompt, ValueError) and issubclass(InvalidPrompt, DockerCCError)
    for good in ("hi", [{"type": "text", "text": "hi"}]):
        check_prompt(good)
    for bad in BAD_PROMPTS:
        with pytest.raises(InvalidPrompt):
            check_prompt(bad)

    async def main() -> None:
        # nothing listens on these: a check that came after any start-up would not say
        # "InvalidPrompt" but fail (or fall back) on the connection
        config = {"redis": {"url": "redis://127.0.0.1:9"},
                  "credentials": {"apiKey": "sk-ant-none"}}
        chain = ProviderChain(config, refs=["claude-cli/opus", "anthropic/claude-sonnet-4-5"],
                              claude_executable="/nonexistent/claude")
        s = chain.session()
        sessions = [s, *(p.session(s.options, f"s-{i}") for i, p in enumerate(chain.providers))]
        pool = AsyncPool(config)
        sessions.append(pool.session())
        for session in sessions:
            for bad in ("", "  ", []):
                with pytest.raises(InvalidPrompt, match="prompt"):
                    if hasattr(session, "send"):
                        await session.send(bad)
                    else:
                        async for _ in session.stream(bad):
                            pass
        # the cron tool's jobs too (a ValueError the tool turns into its error message)
        with pytest.raises(InvalidPrompt, match="the prompt is empty"):
            await CronScheduler(pool.builtins.host).create("*/5 * * * *", "  ", agent="main")
        await pool.close()

    asyncio.run(main())
