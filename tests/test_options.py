"""ClaudeAgentOptions: claude-agent-sdk's options object, checked once and resolved to the
CLI's arguments the same way for containers and the local CLI (and as the SDK does)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import dev_import, host_claude

import dockercc
from dockercc import (
    AsyncPool,
    ClaudeAgentOptions,
    OptionsError,
    Result,
    ToolResult,
    create_sdk_mcp_server,
    tool,
)
from dockercc.protocol.cli import build_cli_args
from dockercc.session import SessionOptions, resolve_cli_args, session_options
from dockercc.testing import text, tool_use

# -- pure -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"permission_mode": "yolo"}, "permission_mode"),
    ({"max_turns": 0}, "max_turns"),
    ({"max_budget_usd": -1}, "max_budget_usd"),
    ({"system_prompt": {"type": "preset", "preset": "other"}}, "system_prompt"),
    ({"mcp_servers": {"x": {"type": "stdio"}}}, "mcp_servers.x"),
    ({"mcp_servers": {"x": {"type": "ws", "url": "u"}}}, "mcp_servers.x"),
    ({"agents": {"r": {"prompt": "p"}}}, "agents.r"),
    ({"effort": "huge"}, "effort"),
    ({"thinking": {"type": "enabled"}}, "thinking"),
    ({"output_format": {"type": "json_schema"}}, "output_format"),
    ({"extra_args": {"--x": None}}, "extra_args"),
    ({"setting_sources": ["global"]}, "setting_sources"),
    ({"fork_session": True}, "fork_session"),
    ({"can_use_tool": "yes"}, "can_use_tool"),
])
def test_bad_options_name_their_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(OptionsError) as err:
        session_options("main", ClaudeAgentOptions(**kwargs))
    assert err.value.field == field and str(err.value).startswith(field)
    assert isinstance(err.value, dockercc.DockerCCError)


def test_unknown_keyword_is_a_typed_error() -> None:
    with pytest.raises(OptionsError, match="max_budget"):
        AsyncPool({"redis": {"url": "redis://127.0.0.1:1"}}).session(max_budget=1)


def test_the_pool_and_the_chain_take_the_same_shorthands(tmp_path: Path) -> None:
    """One merge (session_options) behind AsyncPool.session and ProviderChain.session: the
    same keywords give the same options, and the same unknown keyword the same error."""
    from dockercc.providers import ProviderChain

    cfg = {"redis": {"url": "redis://127.0.0.1:1"}}
    kw: dict[str, Any] = dict(system_prompt="be brief", permission_mode="acceptEdits",
                              allowed_tools=["Read"], env={"A": "1"}, max_turns=3,
                              workspace=tmp_path, effort="low", fallback_model="haiku")
    pool_side = AsyncPool(cfg).session(**kw).options
    chain = ProviderChain(cfg, refs=["anthropic/claude-sonnet-4-5"], env={})
    chain_side = chain.session(**kw).options
    assert pool_side == chain_side
    assert pool_side.workspace == str(tmp_path) and pool_side.effort == "low"
    for make in (AsyncPool(cfg).session, chain.session):
        with pytest.raises(OptionsError, match="max_budget"):
            make(max_budget=1)


class _Agent:
    """An agent config with nothing set (the options decide)."""

    system_prompt = append_system_prompt = permission_mode = None
    allowed_tools = disallowed_tools = max_turns = model = None


def test_default_options_keep_the_warm_containers_arguments() -> None:
    # the pre-started CLI of a warm container is matched on these: no new flag by default
    a = _Agent()
    o = session_options("main", ClaudeAgentOptions())
    assert o == SessionOptions(agent="main")
    assert resolve_cli_args(o, a, model=None, resume=None, mcp_server="host",
                            default_permission_mode="bypassPermissions") == build_cli_args(
        permission_mode="bypassPermissions", mcp_server="host")


def test_keywords_win_over_the_object_and_sdk_servers_map_to_the_bridge() -> None:
    @tool("add", "Add two numbers", {"a": float, "b": float})
    async def add(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": str(args["a"] + args["b"])}]}

    opts = ClaudeAgentOptions(
        model="m1", allowed_tools=["mcp__calc__add", "Read"], max_turns=3,
        mcp_servers={"calc": create_sdk_mcp_server("calc", tools=[add]),
                     "files": {"command": "mcp-files", "args": ["--ro"]}})
    o = session_options("main", opts, model="m2", max_turns=None)
    assert o.model == "m2" and o.max_turns == 3 and o.tools == [add]
    assert o.allowed_tools == ["mcp__host__add", "Read"]
    args = resolve_cli_args(o, _Agent(), model=o.model, resume=None, mcp_server="host")
    mcp = json.loads(args[args.index("--mcp-config") + 1])["mcpServers"]
    assert mcp == {"files": {"command": "mcp-files", "args": ["--ro"]},
                   "host": {"type": "sdk", "name": "host"}}


async def test_sdk_style_tool_keeps_its_result_meaning() -> None:
    @tool("div", "Divide", {"a": int, "b": int})
    def div(args: dict[str, Any]) -> dict[str, Any]:
        if args["b"] == 0:
            return {"content": [{"type": "text", "text": "division by zero"}], "is_error": True}
        return {"content": [{"type": "text", "text": str(args["a"] // args["b"])}]}

    assert div.input_schema["required"] == ["a", "b"]
    ok, bad, missing = (await div.call({"a": 7, "b": 2}), await div.call({"a": 1, "b": 0}),
                        await div.call({"a": 1}))
    assert ok.text == "3" and not ok.is_error
    assert bad.text == "division by zero" and bad.is_error
    assert missing.is_error and "'b'" in missing.text


# -- parity with claude-agent-sdk, real CLI and a real container ----------------------------

# flags that take no value (the SDK and dockercc spell valued flags differently)
_BOOLEAN = {"--verbose", "--include-partial-messages", "--fork-session",
            "--replay-user-messages", "--continue", "--strict-mcp-config"}
_JSON = {"--json-schema", "--mcp-config", "--agents"}


def _flags(argv: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if not a.startswith("--"):
            continue
        if "=" in a:
            flag, value = a.split("=", 1)
        elif a in _BOOLEAN or i >= len(argv):
            flag, value = a, None
        else:
            flag, value = a, argv[i]
            i += 1
        out[flag] = json.loads(value) if flag in _JSON and value else value
    return out


def _sdk_options(sdk: Any, cli: str | None, calc: Any, approve: Any, hook: Any) -> Any:
    return sdk.ClaudeAgentOptions(
        system_prompt={"type": "preset", "preset": "claude_code", "append": "Be brief."},
        allowed_tools=["Read", "mcp__calc__add"], disallowed_tools=["WebFetch"],
        permission_mode="acceptEdits", max_turns=6, max_budget_usd=2.5,
        model="claude-sonnet-4-5", fallback_model="claude-haiku-4-5", effort="low",
        setting_sources=["project"], include_partial_messages=True,
        extra_args={"replay-user-messages": None},
        output_format=None, can_use_tool=approve,
        hooks={"PreToolUse": [sdk.HookMatcher(matcher="Bash", hooks=[hook])],
               "UserPromptSubmit": [sdk.HookMatcher(hooks=[hook])]},
        agents={"reviewer": sdk.AgentDefinition(description="Reviews code",
                                                prompt="You review code.", tools=["Read"])},
        mcp_servers={"calc": calc}, **({"cli_path": cli} if cli else {}))


# what legitimately differs between the SDK's stream to its CLI and dockercc's: ids, the
# names of the tool server (calc / host), paths and session ids; everything else must match
_IDS = ("request_id", "session_id", "tool_use_id", "uuid", "id")
_SERVER = re.compile(r"mcp__(calc|host)__")


def _normalised(lines: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The CLI's stdin messages with what legitimately differs taken out: ids, the tool
    server's name, dockercc's own built-in host tools in ``tools/list``, a notification
    ack's ``"id": null`` (the SDK leaves the id out), and how the answers interleave with
    the prompt (timing): the answers in order, the other messages in order."""
    from dockercc.builtins import BUILTIN_TOOL_NAMES

    def norm(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            out = {k: norm(v, k) for k, v in sorted(value.items())
                   if k not in ("agents", "serverInfo") and not (k == "id" and v is None)}
            if isinstance(out.get("tools"), list):
                out["tools"] = [t for t in out["tools"] if not (
                    isinstance(t, dict) and t.get("name") in BUILTIN_TOOL_NAMES)]
            return out
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, str):
            if key in _IDS or key.endswith("_id"):
                return "<id>"
            return _SERVER.sub("mcp__<server>__", value)
        return value

    answers = [norm(line.get("response") or {}) for line in lines
               if line.get("type") == "control_response"]
    others = [norm(line) for line in lines if line.get("type") != "control_response"]
    return {"answers": answers, "others": others}


def _stdin_of_turn(text: str) -> list[dict[str, Any]]:
    """The JSON lines a CLI read on its stdin (in a container: the file of the CLI that got
    the prompt; a warm container's pre-started CLI wrote its own)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.docker
def test_options_parity_with_claude_agent_sdk(make_config: Any, api: Any, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The claude-agent-sdk quick-start (an SDK tool server, an approver, hooks), run by the
    SDK against the host's CLI and, with only the import changed, by dockercc in a
    container: the same CLI flags, the same subagents (initialize request vs ``--agents``),
    and the same stream of messages into the CLI (initialize with its hooks, the prompt, the
    MCP, permission and hook answers), but for ids, server names and paths."""
    sdk = dev_import("claude_agent_sdk")
    claude = host_claude()
    log = tmp_path / "argv.json"
    wrapper = tmp_path / "claude"
    # records what the SDK starts and writes, then is the real CLI
    wrapper.write_text(
        "#!/bin/sh\n"
        f"python3 -c 'import json,sys; json.dump(sys.argv[1:], open(\"{log}\",\"w\"))' "
        "\"$@\"\n"
        f"tee {tmp_path}/stdin.jsonl | {claude} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-scripted-test")
    # as in the container: no side requests (a session title) that would take a scripted
    # reply, and no project settings of this checkout
    monkeypatch.setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    monkeypatch.chdir(tmp_path)
    # (not a read-only command: the CLI asks the approver, which changes it to an echo)
    script = (tool_use("Bash", {"command": "rm -f /tmp/no-such-parity-file"}),
              tool_use("mcp__calc__add", {"a": 2, "b": 3}), text("five"))

    def approver(types: Any) -> Any:
        async def approve(name: str, tool_input: dict[str, Any], ctx: Any) -> Any:
            return types.PermissionResultAllow(
                updated_input={**tool_input, "command": "echo approved"})
        return approve

    hooked: list[tuple[str, Any]] = []

    async def hook(data: dict[str, Any], tool_use_id: Any, ctx: Any) -> Any:
        hooked.append((data.get("hook_event_name"), data.get("tool_name")))
        return {}

    # -- the SDK's quick-start, as written for claude-agent-sdk
    @sdk.tool("add", "Add two numbers", {"a": float, "b": float})
    async def sdk_add(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": f"sum={args['a'] + args['b']:g}"}]}

    api.script(*script)
    sdk_opts = _sdk_options(sdk, str(wrapper), sdk.create_sdk_mcp_server(
        "calc", "1.0.0", [sdk_add]), approver(sdk), hook)

    async def run_sdk() -> list[Any]:
        async def prompt() -> Any:  # (an approver needs the SDK's streaming input)
            yield {"type": "user", "message": {"role": "user", "content": "add 2 and 3"},
                   "parent_tool_use_id": None, "session_id": "default"}
        return [m async for m in sdk.query(prompt=prompt(), options=sdk_opts)]

    sdk_messages = asyncio.run(run_sdk())
    assert type(sdk_messages[-1]).__name__ == "ResultMessage"
    assert sdk_messages[-1].result == "five"
    sdk_hooked = list(hooked)
    hooked.clear()
    sdk_flags = _flags(json.loads(log.read_text()))
    sdk_stdin = _stdin_of_turn((tmp_path / "stdin.jsonl").read_text())
    init = [m for m in sdk_stdin if m.get("type") == "control_request"
            and m["request"]["subtype"] == "initialize"][0]["request"]

    # -- the same, with dockercc's import (the model now sees the bridge's name); the
    # container's CLI is the same kind of wrapper (its stdin into /tmp, one file per CLI)
    @dockercc.tool("add", "Add two numbers", {"a": float, "b": float})
    async def add(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": f"sum={args['a'] + args['b']:g}"}]}

    opts = _sdk_options(dockercc, None, dockercc.create_sdk_mcp_server("calc", "1.0.0", [add]),
                        approver(dockercc), hook)
    api.script(*script[:1], tool_use("mcp__host__add", {"a": 2, "b": 3}), *script[2:])
    tee = "sh -c 'tee /tmp/cli-stdin.$$.jsonl | exec claude \"$@\"' claude"

    async def run_dockercc() -> tuple[list[str], list[Any], str]:
        cfg = make_config(docker={"env": {"DOCKERCC_CLAUDE_BIN": tee}})
        async with AsyncPool(cfg) as pool, pool.session(
                options=opts, session_id=f"opts-{uuid.uuid4().hex[:8]}") as s:
            events = [e async for e in s.stream("add 2 and 3", timeout=120)]
            found = await s.run("grep -l '\"add 2 and 3\"' /tmp/cli-stdin.*.jsonl | head -1 "
                                "| xargs cat")
            await s.close(forget=True)
            return s.cli_args(), events, found.stdout

    argv, events, stdin_text = asyncio.run(run_dockercc())
    result = events[-1]
    assert isinstance(result, Result) and result.text == "five", result
    assert [e.text for e in events if isinstance(e, ToolResult)][-1] == "sum=5"
    ours = _flags(argv)

    # dockercc's own: the host bridge (every session has one) and its tools' permission
    assert set(ours.pop("--mcp-config")["mcpServers"]) == {"host"}
    assert set(sdk_flags.pop("--mcp-config")["mcpServers"]) == {"calc"}
    ours["--allowedTools"] = ",".join(
        t for t in ours["--allowedTools"].split(",") if t != "mcp__host__*")
    sdk_flags["--allowedTools"] = sdk_flags["--allowedTools"].replace("mcp__calc__",
                                                                      "mcp__host__")
    # subagents: the SDK sends them in its initialize request, dockercc as --agents
    assert ours.pop("--agents") == init["agents"]
    for flag in ("--output-format", "--input-format", "--verbose"):
        sdk_flags.pop(flag, None)
    assert ours == sdk_flags
    assert {"--max-budget-usd", "--fallback-model", "--effort", "--setting-sources",
            "--append-system-prompt", "--replay-user-messages", "--disallowedTools",
            "--permission-prompt-tool"} <= set(ours)

    # the messages into the CLI
    ours_in = _normalised(_stdin_of_turn(stdin_text))
    sdk_in = _normalised(sdk_stdin)
    assert hooked == sdk_hooked == [("UserPromptSubmit", None), ("PreToolUse", "Bash")]
    # every kind of answer is in the comparison: MCP, the approver's and the hooks'
    answers = json.dumps(sdk_in["answers"])
    assert '"behavior": "allow"' in answers and '"echo approved"' in answers
    assert '"mcp_response"' in answers and '"inputSchema"' in answers
    assert [e.text.strip() for e in events if isinstance(e, ToolResult)][0] == "approved"
    assert ours_in == sdk_in


@pytest.mark.docker
async def test_structured_output_is_checked(make_config: Any, api: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"]}
    opts = ClaudeAgentOptions(output_format={"type": "json_schema", "schema": schema})
    api.script(tool_use("StructuredOutput", {"city": "Oslo", "population": 709000}),
               text("done"),
               # a wrong answer the CLI sends back to the model, then no structured output
               tool_use("StructuredOutput", {"city": "Oslo"}), text("gave up"), text("gave up"))
    async with AsyncPool(make_config()) as pool, pool.session(
            options=opts, session_id=f"opts-so-{uuid.uuid4().hex[:8]}") as s:
        r = await s.ask("largest city of Norway?", timeout=90)
        assert r.structured_output == {"city": "Oslo", "population": 709000}
        with pytest.raises(dockercc.StructuredOutputError) as err:
            await s.ask("again, wrongly", timeout=90)
        assert isinstance(err.value, dockercc.AgentError) and err.value.problems
        await s.close(forget=True)


@pytest.mark.docker
async def test_can_use_tool_denies_changes_and_allows(make_config: Any, api: Any) -> None:
    """An SDK-style approver: ``rm -rf`` denied, another command's input changed, the rest
    allowed; its requests come from the CLI in the container, relayed through Redis."""
    from dockercc import PermissionResultAllow, PermissionResultDeny, ToolPermissionContext

    asked: list[str] = []

    async def approve(name: str, tool_input: dict[str, Any],
                      ctx: ToolPermissionContext) -> Any:
        command = str(tool_input.get("command", ""))
        asked.append(command)
        if "rm -rf" in command:
            return PermissionResultDeny(message="rm -rf is not allowed here")
        if "original" in command:
            return PermissionResultAllow(
                updated_input={**tool_input, "command": command.replace("original", "changed")})
        return PermissionResultAllow()

    api.script(tool_use("Bash", {"command": "rm -rf /tmp/precious"}),
               tool_use("Bash", {"command": "printf original > /tmp/o.txt; cat /tmp/o.txt"}),
               tool_use("Bash", {"command": "printf fine > /tmp/f.txt; cat /tmp/f.txt"}),
               text("done"))
    opts = ClaudeAgentOptions(can_use_tool=approve, allowed_tools=["Read"])
    async with AsyncPool(make_config()) as pool, pool.session(
            options=opts, session_id=f"opts-ap-{uuid.uuid4().hex[:8]}") as s:
        assert "--permission-prompt-tool" in s.cli_args()
        assert "--permission-mode" not in s.cli_args()  # the CLI's default: it asks
        events = [e async for e in s.stream("clean up", timeout=120)]
        await s.close(forget=True)
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [c for c in asked if "rm -rf" in c] == ["rm -rf /tmp/precious"]
    assert results[0].is_error and "rm -rf is not allowed here" in results[0].text
    assert results[1].text.strip() == "changed", results[1]
    assert results[2].text.strip() == "fine", results[2]
    assert isinstance(events[-1], Result) and events[-1].text == "done"


@pytest.mark.docker
async def test_a_slow_approver_is_denied_after_timeouts_permission_ms(make_config: Any,
                                                                     api: Any) -> None:
    """The CLI in a container asks; the approver does not answer within
    ``timeouts.permissionMs``: the tool is denied with a message that says why, the command
    never runs, and the turn goes on."""
    slow: list[str] = []

    async def approve(name: str, tool_input: dict[str, Any], ctx: Any) -> Any:
        slow.append(str(tool_input.get("command", "")))
        await asyncio.sleep(5)
        return dockercc.PermissionResultAllow()

    api.script(tool_use("Bash", {"command": "printf ran > /tmp/slow.txt; cat /tmp/slow.txt"}),
               text("after the denial"))
    opts = ClaudeAgentOptions(can_use_tool=approve)
    cfg = make_config(timeouts={"permission_ms": 400})
    async with AsyncPool(cfg) as pool, pool.session(
            options=opts, session_id=f"opts-pt-{uuid.uuid4().hex[:8]}") as s:
        t0 = time.monotonic()
        events = [e async for e in s.stream("run it", timeout=120)]
        elapsed = time.monotonic() - t0
        ran = await s.run("test -e /tmp/slow.txt && echo yes || echo no", timeout=30)
        await s.close(forget=True)
    (denied,) = [e for e in events if isinstance(e, ToolResult)]
    assert slow and denied.is_error
    assert "timeouts.permissionMs" in denied.text and "denied" in denied.text, denied.text
    assert ran.stdout.strip() == "no"
    assert isinstance(events[-1], Result) and events[-1].text == "after the denial"
    assert elapsed < 4, elapsed  # denied at the limit, not after the approver answered (5 s)


@pytest.mark.docker
async def test_hooks_see_the_turn_and_block_a_tool(make_config: Any, api: Any) -> None:
    from dockercc import HookMatcher

    seen: list[tuple[str, Any]] = []

    async def no_bash(data: dict[str, Any], tool_use_id: str | None, ctx: Any) -> Any:
        seen.append(("pre", data.get("tool_input")))
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                       "permissionDecision": "deny",
                                       "permissionDecisionReason": "Bash is blocked by a hook"}}

    def on_prompt(data: dict[str, Any], tool_use_id: str | None, ctx: Any) -> Any:
        seen.append(("prompt", data.get("prompt")))
        return {}

    async def on_stop(data: dict[str, Any], tool_use_id: str | None, ctx: Any) -> Any:
        seen.append(("stop", None))
        return {}

    opts = ClaudeAgentOptions(hooks={
        "PreToolUse": [HookMatcher(matcher="Bash", hooks=[no_bash])],
        "UserPromptSubmit": [HookMatcher(hooks=[on_prompt])],
        "Stop": [HookMatcher(hooks=[on_stop])]})
    api.script(tool_use("Bash", {"command": "echo should-not-run"}), text("blocked"))
    async with AsyncPool(make_config()) as pool, pool.session(
            options=opts, session_id=f"opts-hk-{uuid.uuid4().hex[:8]}") as s:
        events = [e async for e in s.stream("run it", timeout=120)]
        await s.close(forget=True)
    results = [e for e in events if isinstance(e, ToolResult)]
    assert results and results[0].is_error, results
    assert "blocked by a hook" in results[0].text and "should-not-run" not in results[0].text
    assert ("prompt", "run it") in seen
    assert ("pre", {"command": "echo should-not-run"}) in seen
    assert ("stop", None) in seen


_OTHER_PROCESS = """
import json, sys
from dockercc import BudgetExceeded, Pool
cfg = json.loads(sys.argv[1])
with Pool(cfg) as pool:
    s = pool.session(session_id=sys.argv[2])
    try:
        s.ask("one more", timeout=60)
        print(json.dumps({"refused": False}))
    except BudgetExceeded as exc:
        print(json.dumps({"refused": True, "scope": exc.scope, "spent": exc.spent_usd,
                          "limit": exc.limit_usd}))
    s.close(forget=True)
"""


@pytest.mark.docker
def test_pool_budget_is_shared_by_processes_and_survives_a_redis_restart(
        make_config: Any, api: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    from dockercc import BudgetExceeded, Pool
    from dockercc import budget as ledger
    from dockercc.testing import RedisServer

    with RedisServer(tmp_path / "redis", appendonly=True) as redis:
        cfg = make_config(redis={"url": redis.url}, budget={"usd": 0.000001, "windowS": 3600})
        prefix = cfg["redis"]["keyPrefix"]
        api.script(text("the turn that crosses the budget"))
        sid = f"opts-bud-{uuid.uuid4().hex[:8]}"
        with Pool(cfg) as pool, pool.session(session_id=sid) as s:
            r = s.ask("spend", timeout=60)  # under budget when it starts, over when done
            assert r.cost_usd and r.cost_usd > 0.000001
            # another process on the same Redis: its next turn is refused
            other = subprocess.run(
                [sys.executable, "-c", _OTHER_PROCESS, json.dumps(cfg),
                 f"opts-bud2-{uuid.uuid4().hex[:8]}"],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, "PYTHONPATH": str(Path(dockercc.__file__).parents[1])})
            assert other.returncode == 0, other.stderr[-2000:]
            got = json.loads(other.stdout.strip().splitlines()[-1])
            assert got["refused"] and got["scope"] == "pool"
            assert got["spent"] == pytest.approx(r.cost_usd)
            with pytest.raises(BudgetExceeded):
                s.ask("and this one?", timeout=60)
            # Redis restarts (its append-only file keeps the ledger); the same turn recorded
            # again, as a replay after a reconnect would, is not counted twice
            redis.restart()

            async def replay() -> tuple[bool, float, list[dict[str, Any]]]:
                from dockercc.storage.connection import RedisTransport

                store = RedisTransport(redis.url, prefix)
                try:
                    again = await ledger.record(store, sid, r.seq, "main", r.cost_usd)
                    spent = await ledger.spend(store, 3600)
                    status = await ledger.report(store, pool.config)
                    return again, spent, status
                finally:
                    await store.close()

            again, spent, status = asyncio.run(replay())
            assert not again and spent == pytest.approx(r.cost_usd)
            assert status[0]["scope"] == "pool" and status[0]["spent_usd"] == pytest.approx(spent)
            from dockercc.health import collect_health

            health = asyncio.run(collect_health(pool.config))
            assert [(b["scope"], b["limit_usd"]) for b in health.budgets] == [("pool", 0.000001)]
            assert health.budgets[0]["spent_usd"] == pytest.approx(spent)
            s.close(forget=True)


@pytest.mark.docker
async def test_set_model_mid_session_and_fork_on_resume(make_config: Any, api: Any) -> None:
    api.script(text("first"), text("second"), text("forked"))
    sid = f"opts-ctl-{uuid.uuid4().hex[:8]}"
    async with AsyncPool(make_config()) as pool:
        async with pool.session(session_id=sid) as s:
            r1 = await s.ask("one", timeout=60)
            await s.set_model("claude-haiku-4-5")
            await s.set_permission_mode("acceptEdits")
            r2 = await s.ask("two", timeout=60)
            assert r2.text == "second"
            assert api.message_requests[-1].body["model"] == "claude-haiku-4-5"
            with pytest.raises(OptionsError):
                await s.set_permission_mode("anything")
        fork = pool.session(options=ClaudeAgentOptions(resume=sid, fork_session=True),
                            session_id=f"opts-fork-{uuid.uuid4().hex[:8]}")
        async with fork:
            r3 = await fork.ask("three", timeout=60)
            assert r3.text == "forked"
            assert r3.session_id and r3.session_id != r1.session_id
            assert "--fork-session" in fork.cli_args()
            # the fork saw the conversation it came from
            assert "one" in json.dumps(api.message_requests[-1].body["messages"])
            await fork.close(forget=True)
        await pool.get(sid).close(forget=True) if pool.get(sid) else None


@pytest.mark.docker
async def test_sdk_quick_start_ported_by_the_import(make_config: Any, api: Any) -> None:
    """claude-agent-sdk's quick-start, with ``from dockercc import ...`` and a ``config=``
    (where the SDK finds its CLI, dockercc finds its pool) as the only changes."""
    from dockercc import AssistantMessage, ResultMessage, TextBlock
    from dockercc import aquery as query

    api.script(text("4"), text("Hello from a helpful assistant"))
    cfg = make_config()
    printed: list[str] = []

    # example 1: a simple query
    async for message in query(prompt="What is 2 + 2?", config=cfg):
        if isinstance(message, AssistantMessage):
            for block in message.content:
                if isinstance(block, TextBlock):
                    printed.append(block.text)

    # example 2: with options
    options = ClaudeAgentOptions(system_prompt="You are a helpful assistant", max_turns=1)
    async for message in query(prompt="Tell me a joke", options=options, config=cfg):
        if isinstance(message, ResultMessage):
            printed.append(f"{message.result} ${message.total_cost_usd:.6f}")
    assert printed[0] == "4"
    assert printed[-1].startswith("Hello from a helpful assistant $")
    assert api.message_requests[-1].body["system"][-1]["text"].startswith(
        "You are a helpful assistant")


async def test_local_cli_provider_asks_the_same_approver_and_hooks(
        redis_server: Any, prefix: str, api: Any, tmp_path: Path) -> None:
    """The provider chain's local CLI (no container) resolves the same options the same way:
    the approver changes an input, a hook sees the prompt."""
    from dockercc import HookMatcher, PermissionResultAllow
    from dockercc.providers import ProviderChain

    host_claude()
    prompts: list[str] = []

    def approve(name: str, tool_input: dict[str, Any], ctx: Any) -> Any:
        return PermissionResultAllow(updated_input={"command": "printf local-changed > "
                                                               f"{tmp_path}/o; cat {tmp_path}/o"})

    def on_prompt(data: dict[str, Any], tool_use_id: Any, ctx: Any) -> Any:
        prompts.append(data.get("prompt"))
        return {}

    cfg = {"redis": {"url": redis_server.url, "keyPrefix": prefix},
           "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
           "timeouts": {"startupMs": 30000}, "model": {"primary": "claude-cli/opus"}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    (tmp_path / "home").mkdir()
    env.update(HOME=str(tmp_path / "home"), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    opts = ClaudeAgentOptions(can_use_tool=approve,
                              hooks={"UserPromptSubmit": [HookMatcher(hooks=[on_prompt])]})
    api.script(tool_use("Bash", {"command": f"printf original > {tmp_path}/o; cat {tmp_path}/o"}),
               text("done"))
    async with ProviderChain(cfg, env=env) as chain, chain.session(
            options=opts, workspace=str(tmp_path)) as s:
        events = [e async for e in s.stream("go local", timeout=90)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.text.strip() for r in results] == ["local-changed"], events
    assert prompts == ["go local"]


@pytest.mark.docker
async def test_max_budget_usd_stops_the_session_with_a_typed_error(make_config: Any,
                                                                   api: Any) -> None:
    # each tool round costs something: the CLI's own limit ends the turn after the first
    api.script(*[tool_use("Bash", {"command": f"echo {i}"}) for i in range(4)], text("never"))
    async with AsyncPool(make_config()) as pool, pool.session(
            options=ClaudeAgentOptions(max_budget_usd=0.000001),
            session_id=f"opts-mb-{uuid.uuid4().hex[:8]}") as s:
        with pytest.raises(dockercc.BudgetExceeded) as err:
            await s.ask("loop", timeout=90)
        assert err.value.scope == "session" and err.value.limit_usd == 0.000001
        await s.close(forget=True)
