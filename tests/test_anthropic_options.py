"""The Messages-API provider (``anthropic/<model>``) runs host tools itself, so it applies the
session's approver, hooks and output_format itself, as the CLI does in a container; an
option it cannot honour is refused when the session is created. Against the scripted API."""

from __future__ import annotations

import json
from typing import Any

import pytest

import dockercc
from dockercc import (
    ClaudeAgentOptions,
    HookMatcher,
    OptionsError,
    PermissionResultAllow,
    PermissionResultDeny,
    ToolResult,
    tool,
)
from dockercc.providers import ProviderChain
from dockercc.testing import text, tool_use

REF = "anthropic/claude-sonnet-4-5"


def _config(api: Any, **extra: Any) -> dict[str, Any]:
    return {"redis": {"url": "redis://127.0.0.1:1", "keyPrefix": "tnone:"},
            "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
            "model": {"primary": REF}, **extra}


def _tools() -> list[Any]:
    @tool("shell", "Run a command", {"command": str})
    def shell(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": f"ran: {args['command']}"}]}

    @tool("add", "Add two numbers", {"a": int, "b": int})
    def add(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": str(args["a"] + args["b"])}]}

    return [shell, add]


def _tool_results(api: Any) -> list[dict[str, Any]]:
    """What the model was told about each tool call (the API requests' tool_result blocks)."""
    last = api.message_requests[-1].body["messages"]
    return [b for m in last if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_result"]


async def test_approver_denies_changes_and_allows(api: Any) -> None:
    asked: list[tuple[str, dict[str, Any]]] = []

    async def approve(name: str, tool_input: dict[str, Any], ctx: Any) -> Any:
        asked.append((name, tool_input))
        command = str(tool_input.get("command", ""))
        if "rm -rf" in command:
            return PermissionResultDeny(message="rm -rf is not allowed here")
        if "original" in command:
            return PermissionResultAllow(updated_input={"command": "changed"})
        return PermissionResultAllow()

    api.script(tool_use("mcp__host__shell", {"command": "rm -rf /"}),
               tool_use("mcp__host__shell", {"command": "original"}),
               tool_use("mcp__host__shell", {"command": "fine"}),
               tool_use("mcp__host__add", {"a": 2, "b": 3}),  # allowed: never asked
               text("done"))
    opts = ClaudeAgentOptions(can_use_tool=approve, allowed_tools=["mcp__host__add"])
    async with ProviderChain(_config(api), tools=_tools()) as chain, chain.session(
            options=opts) as s:
        events = [e async for e in s.stream("clean up", timeout=60)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(r.is_error, r.text) for r in results] == [
        (True, "rm -rf is not allowed here"), (False, "ran: changed"), (False, "ran: fine"),
        (False, "5")]
    assert [name for name, _ in asked] == ["mcp__host__shell"] * 3
    final = events[-1]
    assert isinstance(final, dockercc.Result) and final.text == "done"
    assert final.provider == REF
    assert [d["tool_name"] for d in final.raw.get("permission_denials", [])] == [
        "mcp__host__shell"]


async def test_slow_approver_is_denied_after_permission_ms(api: Any) -> None:
    import asyncio

    async def slow(name: str, tool_input: dict[str, Any], ctx: Any) -> Any:
        await asyncio.sleep(5)
        return PermissionResultAllow()

    api.script(tool_use("mcp__host__shell", {"command": "ls"}), text("gave up"))
    cfg = _config(api, timeouts={"permission_ms": 300})  # the snake_case alias works too
    async with ProviderChain(cfg, tools=_tools()) as chain, chain.session(
            options=ClaudeAgentOptions(can_use_tool=slow)) as s:
        events = [e async for e in s.stream("list", timeout=60)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert len(results) == 1 and results[0].is_error
    assert results[0].text == ("the approver (can_use_tool) did not answer within 0.3s "
                               "(timeouts.permissionMs): denied")


async def test_hooks_block_change_add_and_go_on(api: Any) -> None:
    seen: list[tuple[str, Any]] = []

    def on_prompt(data: dict[str, Any], tool_use_id: Any, ctx: Any) -> Any:
        seen.append(("prompt", data["prompt"]))
        return {"hookSpecificOutput": {"hookEventName": "UserPromptSubmit",
                                       "additionalContext": "The user is in Oslo."}}

    async def pre(data: dict[str, Any], tool_use_id: Any, ctx: Any) -> Any:
        seen.append(("pre", data["tool_input"]))
        if "secret" in data["tool_input"]["command"]:
            return {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                           "permissionDecision": "deny",
                                           "permissionDecisionReason": "blocked by a hook"}}
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                       "updatedInput": {"command": "echo safe"}}}

    def post(data: dict[str, Any], tool_use_id: Any, ctx: Any) -> Any:
        seen.append(("post", data["tool_response"]))
        return {"hookSpecificOutput": {"hookEventName": "PostToolUse",
                                       "additionalContext": "checked by PostToolUse"}}

    stops: list[bool] = []

    def on_stop(data: dict[str, Any], tool_use_id: Any, ctx: Any) -> Any:
        stops.append(data["stop_hook_active"])
        return {} if data["stop_hook_active"] else {"decision": "block",
                                                    "reason": "Also say goodbye."}

    opts = ClaudeAgentOptions(hooks={
        "UserPromptSubmit": [HookMatcher(hooks=[on_prompt])],
        "PreToolUse": [HookMatcher(matcher="mcp__host__shell", hooks=[pre])],
        "PostToolUse": [HookMatcher(matcher="mcp__host__.*", hooks=[post])],
        "Stop": [HookMatcher(hooks=[on_stop])]})
    api.script(tool_use("mcp__host__shell", {"command": "cat secret"}),
               tool_use("mcp__host__shell", {"command": "anything"}),
               text("hello"), text("goodbye"))
    async with ProviderChain(_config(api), tools=_tools()) as chain, chain.session(
            options=opts) as s:
        r = await s.ask("go", timeout=60)
    assert r.text == "goodbye" and stops == [False, True]
    first = api.message_requests[0].body["messages"][0]["content"]
    assert [b["text"] for b in first] == ["go", "The user is in Oslo."]
    results = _tool_results(api)
    assert results[0]["is_error"] and results[0]["content"][0]["text"] == "blocked by a hook"
    assert [b["text"] for b in results[1]["content"]] == ["ran: echo safe",
                                                         "checked by PostToolUse"]
    assert ("pre", {"command": "cat secret"}) in seen and ("prompt", "go") in seen
    # the Stop hook's reason was the model's next prompt
    assert "Also say goodbye." in json.dumps(api.message_requests[-1].body["messages"][-1])


async def test_a_blocking_prompt_hook_ends_the_turn_with_its_reason(api: Any) -> None:
    def no(data: dict[str, Any], tool_use_id: Any, ctx: Any) -> Any:
        return {"decision": "block", "reason": "prompts about passwords are blocked"}

    opts = ClaudeAgentOptions(hooks={"UserPromptSubmit": [HookMatcher(hooks=[no])]})
    async with ProviderChain(_config(api)) as chain, chain.session(options=opts) as s:
        with pytest.raises(dockercc.AgentError, match="prompts about passwords are blocked"):
            await s.ask("my password?", timeout=30)
    assert api.message_requests == []  # the model never saw it


async def test_structured_output_is_checked_like_in_a_container(api: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"]}
    opts = ClaudeAgentOptions(output_format={"type": "json_schema", "schema": schema})
    api.script(
        # a wrong answer goes back to the model (as the CLI does), then a right one
        tool_use("StructuredOutput", {"city": "Oslo"}),
        tool_use("StructuredOutput", {"city": "Oslo", "population": 709000}), text("done"),
        # a turn that never gives structured output: the typed error
        text("no structure"))
    async with ProviderChain(_config(api)) as chain, chain.session(options=opts) as s:
        r = await s.ask("largest city of Norway?", timeout=60)
        assert r.structured_output == {"city": "Oslo", "population": 709000}
        offered = api.message_requests[0].body["tools"]
        assert [t["name"] for t in offered] == ["StructuredOutput"]
        assert offered[0]["input_schema"] == schema
        told = _tool_results(api)
        assert told[0]["is_error"] and "population" in told[0]["content"][0]["text"]
        with pytest.raises(dockercc.StructuredOutputError) as err:
            await s.ask("again", timeout=60)
        assert err.value.problems == ["missing"]


def test_hook_events_the_api_cannot_have_are_refused_at_session_creation(api: Any) -> None:
    opts = ClaudeAgentOptions(hooks={"PreCompact": [HookMatcher(hooks=[lambda *a: {}])]})
    chain = ProviderChain(_config(api))
    with pytest.raises(OptionsError) as err:
        chain.session(options=opts)
    assert err.value.field == "hooks.PreCompact"
    assert "anthropic/claude-sonnet-4-5" in str(err.value) and "PreToolUse" in str(err.value)
