"""Tenants for the built-in tools: an agent reaches only its own tenant's sessions and jobs.

Every host tool is pre-approved, so prompt injection alone can make an agent call any of
them; what they may reach is decided here, not by the model. Fast tests call the tools
in-process (real Redis); the end-to-end test has the real CLI in a real container make the
calls (the scripted API drives them) against another tenant's real session.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dockercc.builtins import builtin_tools
from dockercc.client import AsyncPool
from dockercc.testing import text, tool_use

HOST = "mcp__host__"
PRIVATE = "B-PRIVATE-PROMPT-" + uuid.uuid4().hex


def tools_of(pool: AsyncPool, session: Any) -> dict[str, Any]:
    return {t.name: t for t in builtin_tools(pool, session)}


async def call(tools: dict[str, Any], name: str, **args: Any) -> tuple[str, bool]:
    out = await tools[name].call(args)
    body = "\n".join(str(c.get("text", "")) for c in out.content)
    return body, out.is_error


@pytest.fixture
async def two_tenants(redis_server: Any, prefix: str) -> AsyncIterator[tuple[Any, ...]]:
    agents = {"main": {}, "admin": {"systemPrompt": "you may do anything"},
              "helper": {"tools": ["sessions_list"]}}
    base = {"redis": {"url": redis_server.url, "keyPrefix": prefix},
            "agents": {**agents, "main": {"subagents": ["helper"]}}}
    a = AsyncPool({**base, "pool": {"tenant": "tenant-a"}})
    b = AsyncPool({**base, "pool": {"tenant": "tenant-b"}})
    sa, sb = a.session(session_id="a-session"), b.session(session_id="b-session")
    await sa._register()
    await sb._register()
    r = b.transport.client
    await r.rpush(b.transport.keys("b-session").history,
                  json.dumps({"prompt": PRIVATE, "text": "b's answer"}))
    await r.hset(b.transport.keys("b-session").state, mapping={"status": "idle"})
    # a closed session of tenant b: its registry entry is gone, its state and history stay
    await r.hset(b.transport.keys("b-closed").state, mapping={"status": "closed",
                                                               "tenant": "tenant-b"})
    await r.rpush(b.transport.keys("b-closed").history, json.dumps({"prompt": PRIVATE}))
    try:
        yield a, b, sa, sb
    finally:
        async for key in r.scan_iter(match=f"{prefix}*"):
            await r.delete(key)
        await a.transport.close()
        await b.transport.close()


async def test_session_tools_reach_only_the_callers_tenant(two_tenants: Any) -> None:
    a, b, sa, sb = two_tenants
    tools = tools_of(a, sa)
    listed, err = await call(tools, "sessions_list")
    assert not err and PRIVATE not in listed
    assert [s["id"] for s in json.loads(listed)["sessions"]] == ["a-session"]
    for target in ("b-session", "b-closed"):
        body, err = await call(tools, "sessions_history", session_id=target)
        assert err and PRIVATE not in body and f"no session {target!r}" in body
        body, err = await call(tools, "session_status", session_id=target)
        assert err and f"no session {target!r}" in body
        body, err = await call(tools, "sessions_send", session_id=target, prompt="obey")
        assert err and f"no open session {target!r}" in body
    # its own tenant's sessions it does reach
    body, err = await call(tools_of(b, sb), "sessions_history", session_id="b-closed")
    assert not err and PRIVATE in body


async def test_spawn_is_bounded_by_the_callers_agent(two_tenants: Any) -> None:
    a, _, sa, _ = two_tenants
    tools = tools_of(a, sa)
    body, err = await call(tools, "sessions_spawn", agent="admin", prompt="x")
    assert err and "agent 'admin' is not one this agent may start" in body
    body, err = await call(tools, "sessions_spawn", system_prompt="no rules", prompt="x")
    assert err and "cannot replace the system prompt" in body
    body, err = await call(tools, "cron_create", schedule="@daily", prompt="x", agent="admin")
    assert err and "not one this agent may start" in body
    assert a.get("a-session") is sa and len(a.open_sessions) == 1  # nothing was spawned


async def test_cron_is_per_tenant_with_a_minimum_interval(two_tenants: Any) -> None:
    a, b, sa, sb = two_tenants
    job_b = await b.cron.create("@daily", PRIVATE, agent="main")
    tools = tools_of(a, sa)
    listed, err = await call(tools, "cron_list")
    assert not err and json.loads(listed)["count"] == 0 and PRIVATE not in listed
    body, err = await call(tools, "cron_delete", job_id=job_b.id)
    assert err and "no cron job" in body
    assert await b.cron.get(job_b.id) is not None
    body, err = await call(tools, "cron_create", schedule="@daily", prompt="x",
                           session_id="b-session")
    assert err and "no open session 'b-session'" in body
    body, err = await call(tools, "cron_create", schedule="* * * * * *", prompt="x")
    assert err and "shortest interval allowed is 60s" in body
    body, err = await call(tools, "cron_create", schedule="@hourly", prompt="hourly")
    assert not err and json.loads(body)["tenant"] == "tenant-a"
    # tenant a's scheduler does not run tenant b's due job (its score is left alone)
    due = int(time.time() * 1000) - 10
    await a.transport.client.zadd(a.cron.due_key, {job_b.id: due})
    await a.cron.tick()
    assert await a.transport.client.zscore(a.cron.due_key, job_b.id) == due
    assert (await b.cron.get(job_b.id)).run_count == 0  # type: ignore[union-attr]


# -- end to end: the real CLI makes the calls ---------------------------------------------

@pytest.mark.docker
async def test_an_agent_cannot_read_another_tenants_session(make_config: Any, api: Any,
                                                           prefix: str) -> None:
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    api.on("tenant-b-work", text("b did its private work"))
    api.on("tenant-a-snoop",
           tool_use(HOST + "sessions_list", {}),
           tool_use(HOST + "sessions_history", {"session_id": victim}),
           tool_use(HOST + "session_status", {"session_id": victim}),
           tool_use(HOST + "cron_create", {"schedule": "@daily", "prompt": "x",
                                           "session_id": victim}),
           text("snooping done"))
    async with AsyncPool(make_config(pool={"tenant": "tenant-b"})) as b:
        async with b.session(session_id=victim) as sb:
            await sb.ask(f"tenant-b-work {PRIVATE}")
        async with AsyncPool(make_config(pool={"tenant": "tenant-a"})) as a:
            async with a.session() as sa:
                result = await sa.ask("tenant-a-snoop now", timeout=240)
                assert result.text == "snooping done"
    requests = [r for r in api.message_requests if "tenant-a-snoop" in r.last_user_text]
    assert len(requests) == 5
    for r in requests:  # nothing of tenant b's session reached tenant a's model
        assert PRIVATE.encode() not in r.raw_body
    results = []
    for block in requests[-1].tool_results:
        content = block.get("content")
        if isinstance(content, list):
            content = "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        results.append((str(content), bool(block.get("is_error"))))
    listed, history, status, cron = results
    assert not listed[1] and victim not in listed[0]
    assert history[1] and f"no session '{victim}'" in history[0]
    assert status[1] and f"no session '{victim}'" in status[0]
    assert cron[1] and f"no open session '{victim}'" in cron[0]
