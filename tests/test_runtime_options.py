"""A session's own model, permission mode, env and allowed / disallowed tools are applied to
the warm container's pre-started CLI at the claim (control requests), not by restarting it,
and it behaves as if started with them (docs/cli-runtime.md). Real containers, the real CLI,
the scripted Messages API."""

from __future__ import annotations

from typing import Any

import pytest

from dockercc.agent.settings import Assignment
from dockercc.client import AsyncPool
from dockercc.protocol.cli import (
    build_cli_args,
    runtime_requests,
    split_cli_args,
    split_session_env,
    start_time_args,
)
from dockercc.session import AsyncSession, SessionOptions
from dockercc.testing import text, tool_use


def test_split_keeps_start_time_args_and_takes_run_time_ones() -> None:
    args = build_cli_args(model="claude-sonnet-4-5", system_prompt="be brief",
                          permission_mode="plan", allowed_tools=["Bash", "Read"],
                          disallowed_tools=["WebFetch"], mcp_server="host")
    start, run = split_cli_args(args)
    assert run == {"model": "claude-sonnet-4-5", "permission_mode": "plan",
                   "allowed_tools": ["Bash", "Read", "mcp__host__*"],
                   "disallowed_tools": ["WebFetch"]}
    assert "--system-prompt" in start and "--mcp-config" in start
    assert not {"--model", "--permission-mode", "--allowedTools", "--disallowedTools"} & set(start)
    assert start_time_args(args) == start
    assert start_time_args(build_cli_args(model="m", mcp_server="host")) == start_time_args(
        build_cli_args(mcp_server="host", permission_mode="acceptEdits"))
    # the system prompt is start-time: another one is another CLI
    assert start_time_args(build_cli_args(system_prompt="a")) != start_time_args(
        build_cli_args(system_prompt="b"))


def test_runtime_requests() -> None:
    base = {"permission_mode": "bypassPermissions", "allowed_tools": ["mcp__host__*"]}
    assert runtime_requests(base, base) == []
    reqs = runtime_requests(base, {"permission_mode": "default", "model": "claude-x",
                                   "allowed_tools": ["Bash", "mcp__host__*"],
                                   "disallowed_tools": ["Write"], "env": {"A": "1"}})
    assert reqs == [("set_permission_mode", {"mode": "default"}),
                    ("set_model", {"model": "claude-x"}),
                    ("apply_flag_settings", {"settings": {
                        "permissions": {"allow": ["Bash"], "deny": ["Write"]},
                        "env": {"A": "1"}}})]
    # back to the default model when the pre-started CLI had another one
    assert runtime_requests({"model": "m"}, {}) == [("set_model", {"model": "default"})]
    # what the CLI cannot do at run time: a new CLI
    assert runtime_requests({"permission_mode": "default"},
                            {"permission_mode": "bypassPermissions"}) is None
    assert runtime_requests({"allowed_tools": ["Bash"]}, {}) is None  # a rule taken away
    assert runtime_requests({"env": {"A": "1"}}, {}) is None


def test_session_env_is_run_time_except_what_the_container_needs() -> None:
    spec, run = split_session_env({"MY_FLAG": "on", "ANTHROPIC_MODEL": "x",
                                   "HTTPS_PROXY": "http://p", "CLAUDE_CODE_USE_BEDROCK": "1"})
    assert run == {"MY_FLAG": "on"}
    assert spec == {"ANTHROPIC_MODEL": "x", "HTTPS_PROXY": "http://p",
                    "CLAUDE_CODE_USE_BEDROCK": "1"}
    a = Assignment.decode('{"session": "s-1", "args": ["--model", "m"], '
                          '"runtime": {"env": {"SECRET_X": "v"}}}')
    assert a.wanted_runtime() == {"model": "m", "env": {"SECRET_X": "v"}}
    assert "SECRET_X" not in repr(a) and "v'" not in repr(a)


@pytest.mark.docker
async def test_session_env_does_not_change_the_spec_key(make_config: Any) -> None:
    pool = AsyncPool(make_config())
    plain = AsyncSession(pool, SessionOptions()).spec().key()
    assert AsyncSession(pool, SessionOptions(env={"MY_FLAG": "x"})).spec().key() == plain
    # (what the pool builds the container from still makes it another container)
    assert AsyncSession(pool, SessionOptions(
        env={"ANTHROPIC_MODEL": "y"})).spec().key() != plain


def bash(cmd: str) -> Any:
    return tool_use("Bash", {"command": cmd})


@pytest.mark.docker
async def test_own_options_are_applied_to_the_prestarted_cli(make_config: Any,
                                                             api: Any) -> None:
    cfg = make_config(timeouts={"startupMs": 90000})
    async with AsyncPool(cfg) as pool:
        await pool.warm("main", count=1, timeout=180)

        # own model and env entry: the same CLI, the session's model in the request, the
        # env var seen by a Bash tool call
        api.script(bash("echo flag=$RT_FLAG"), text("done 1"))
        s = pool.session(model="claude-sonnet-4-5", env={"RT_FLAG": "rt-on"})
        result = await s.ask("model and env", timeout=120)
        assert result.text == "done 1"
        assert s.lease is not None and s.lease.warm
        state = await s.state()
        assert state.get("prestarted") == "1", state  # not restarted
        assert state.get("runtime_applied") == "2", state  # set_model, apply_flag_settings
        reqs = [r for r in api.message_requests if r.stream]
        assert [r.body["model"] for r in reqs] == ["claude-sonnet-4-5"] * 2
        assert "flag=rt-on" in reqs[-1].tool_result_text
        await s.close(forget=True)

        # a disallowed tool is refused (bypassPermissions is the pool's default mode here)
        await pool.warm("main", count=1, timeout=180)
        api.reset()
        api.script(bash("touch /tmp/should-not-exist"), text("done 2"))
        s = pool.session(disallowed_tools=["Bash"])
        assert (await s.ask("disallowed", timeout=120)).text == "done 2"
        assert (await s.state()).get("prestarted") == "1"
        refused = api.message_requests[-1].tool_result_text
        assert "denied" in refused, refused
        assert (await s.run("ls /tmp/should-not-exist || echo absent")).stdout.strip() \
            .endswith("absent")
        await s.close(forget=True)

        # permission mode "default" asks before a file-changing command (and nobody answers):
        # refused; with "Bash" allowed it runs. Both in the pre-started CLI
        await pool.warm("main", count=1, timeout=180)
        api.reset()
        api.script(bash("touch asked-first"), text("done 3"))
        s = pool.session(permission_mode="default")
        assert (await s.ask("mode", timeout=120)).text == "done 3"
        assert (await s.state()).get("prestarted") == "1"
        assert "needs approval" in api.message_requests[-1].tool_result_text
        await s.close(forget=True)

        await pool.warm("main", count=1, timeout=180)
        api.reset()
        api.script(bash("touch allowed-file && echo made"), text("done 4"))
        s = pool.session(permission_mode="default", allowed_tools=["Bash"])
        assert (await s.ask("allowed", timeout=120)).text == "done 4"
        state = await s.state()
        assert state.get("prestarted") == "1" and state.get("runtime_applied") == "2", state
        assert "made" in api.message_requests[-1].tool_result_text
        await s.close(forget=True)

        # nothing of those sessions reaches the next one (containers are single-use; the
        # next warm container's CLI runs with the pool's defaults)
        await pool.warm("main", count=1, timeout=180)
        api.reset()
        api.script(bash("echo flag=[$RT_FLAG] && touch plain-file && echo ok"), text("done 5"))
        s = pool.session()
        assert (await s.ask("plain", timeout=120)).text == "done 5"
        state = await s.state()
        assert state.get("prestarted") == "1" and state.get("runtime_applied") == "0", state
        out = api.message_requests[-1].tool_result_text
        assert "flag=[]" in out and "ok" in out, out
        assert api.message_requests[-1].body["model"] != "claude-sonnet-4-5"
        await s.close(forget=True)
