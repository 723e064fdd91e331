"""The built-in tools end to end: the real CLI in a real container calls each one through the
MCP bridge (the scripted API answers with ``mcp__host__<tool>`` tool_use blocks) and the tool's
answer reaches the model in the next API request. Several calls share one conversation, as
an agent would make them; each step's result (and error flag) is checked.

Real Docker, real Redis, the real CLI 2.1.328; web traffic goes to loopback servers only.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from test_builtins_web import PAGE, LocalSite

from dockercc.builtins import ChannelMessage
from dockercc.client import AsyncPool
from dockercc.events import Result, SystemInit
from dockercc.testing import text, tool_use

pytestmark = pytest.mark.docker

HOST = "mcp__host__"


def steps(api: Any, marker: str) -> list[tuple[str, bool]]:
    """For a conversation whose prompt contains ``marker``: the (text, is_error) of the tool
    result each follow-up API request carried, in order."""
    out = []
    requests = [r for r in api.message_requests if marker in r.last_user_text]
    seen: int | None = None
    for request in requests:
        blocks = request.tool_results
        count, seen = len(blocks), len(blocks) if seen is None else seen
        if count <= seen:
            continue  # the conversation's first request: no new tool result yet
        seen = count
        last = blocks[-1]
        content = last.get("content")
        if isinstance(content, list):
            content = "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        out.append((str(content), bool(last.get("is_error"))))
    return out


def ok_json(step: tuple[str, bool]) -> Any:
    body, is_error = step
    assert not is_error, body
    return json.loads(body)


def error_text(step: tuple[str, bool]) -> str:
    body, is_error = step
    assert is_error, f"expected an error result, got: {body}"
    return body


async def run_turn(session: Any, prompt: str, timeout: float = 240) -> tuple[SystemInit,
                                                                              Result]:
    init: SystemInit | None = None
    result: Result | None = None
    async for event in session.stream(prompt, timeout=timeout):
        if isinstance(event, SystemInit):
            init = event
        elif isinstance(event, Result):
            result = event
    assert init is not None and result is not None
    return init, result


async def test_agent_spawns_a_child_talks_to_it_reads_its_history_and_lists_both(
        make_config: Any, api: Any) -> None:
    kid, boss = f"kid-{uuid.uuid4().hex[:6]}", f"boss-{uuid.uuid4().hex[:6]}"
    api.on("child-hello",
           tool_use(HOST + "sessions_spawn", {"prompt": "grandchild please"}),
           # the parent is mid-turn waiting for this very reply: refused, not a deadlock
           tool_use(HOST + "sessions_send", {"session_id": boss, "prompt": "hello boss",
                                            "wait": True}),
           text("hi from the child"))
    api.on("child-second", text("second answer from the child"))
    api.on("orchestrate",
           tool_use(HOST + "sessions_spawn", {"session_id": kid, "prompt": "child-hello",
                                             "wait": True, "timeout_s": 120}),
           tool_use(HOST + "sessions_spawn", {"prompt": "one child too many"}),
           tool_use(HOST + "sessions_send", {"session_id": kid, "prompt": "child-second now",
                                            "wait": True}),
           tool_use(HOST + "sessions_history", {"session_id": kid}),
           tool_use(HOST + "sessions_list", {}),
           tool_use(HOST + "session_status", {"session_id": kid}),
           tool_use(HOST + "sessions_history", {"session_id": "../../etc"}),
           tool_use(HOST + "sessions_send", {"session_id": "nobody-here", "prompt": "x"}),
           tool_use(HOST + "sessions_send", {"session_id": kid}),
           tool_use(HOST + "session_status", {"session_id": "ghost-1"}),
           tool_use(HOST + "sessions_spawn", {"agent": "no-such-agent"}),
           tool_use(HOST + "sessions_list", {"agent": 123}),
           text("orchestration done"))
    config = make_config(tools={"sessions": {"maxChildren": 1, "maxDepth": 1}})
    async with AsyncPool(config) as pool:
        parent = pool.session(session_id=boss)
        init, result = await run_turn(parent, "orchestrate the children")
        assert result.text == "orchestration done"
        # off unless configured / enabled for the agent
        assert HOST + "sessions_spawn" in init.tools
        assert HOST + "nodes_exec" not in init.tools and HOST + "web_search" not in init.tools

        got = steps(api, "orchestrate")
        assert len(got) == 12, got
        spawned = ok_json(got[0])
        assert spawned["session_id"] == kid and spawned["parent"] == parent.id
        assert spawned["depth"] == 1 and spawned["status"] == "done"
        assert spawned["result"]["text"] == "hi from the child"
        assert "maxChildren is 1" in error_text(got[1])
        sent = ok_json(got[2])
        assert sent["status"] == "done"
        assert sent["result"]["text"] == "second answer from the child"
        history = ok_json(got[3])
        assert history["total"] == 2
        first, second = history["entries"]
        assert first["prompt"] == "child-hello" and first["text"] == "hi from the child"
        spawn_call, send_call = first["tool_calls"]
        assert spawn_call["name"] == HOST + "sessions_spawn"
        assert spawn_call["is_error"] and "maxDepth is 1" in spawn_call["result"]
        assert send_call["name"] == HOST + "sessions_send"
        assert send_call["is_error"] and "middle of a turn" in send_call["result"]
        assert second["prompt"] == "child-second now"
        assert second["text"] == "second answer from the child"
        listed = ok_json(got[4])
        by_id = {s["id"]: s for s in listed["sessions"]}
        assert {parent.id, kid} <= set(by_id)
        assert by_id[kid]["parent"] == parent.id and by_id[parent.id]["this_session"]
        assert by_id[kid]["turns"] == 2 and by_id[kid]["status"] == "idle"
        status = ok_json(got[5])
        assert status["id"] == kid and status["parent"] == parent.id and status["turns"] == 2
        assert status["last_result"]["text"] == "second answer from the child"
        assert status["container"] and status["heartbeat_age_s"] is not None
        assert "invalid session id" in error_text(got[6])
        assert "no open session 'nobody-here'" in error_text(got[7])
        assert "prompt: Field required" in error_text(got[8])
        assert "no session 'ghost-1'" in error_text(got[9])
        assert "unknown agent 'no-such-agent'" in error_text(got[10])
        assert "invalid arguments for tool 'sessions_list'" in error_text(got[11])

        # the child's own spawn attempt hit the depth limit, and that reached its model
        child_steps = steps(api, "child-hello")
        assert "maxDepth is 1" in error_text(child_steps[0])
        assert "middle of a turn" in error_text(child_steps[1])

        # closing the parent closes the child it spawned
        child = pool.get(kid)
        assert child is not None and not child.closed
        await parent.close(forget=True)
        assert child.closed and pool.get(kid) is None
        assert await pool.transport.client.hget(pool.sessions_key, kid) is None


async def test_system_tools_through_the_cli(make_config: Any, api: Any,
                                            redis_server: Any) -> None:
    site = LocalSite()
    site.page("/page.html", PAGE)
    site.json("/res/v1/web/search", {"web": {"results": [
        {"title": "Pools", "url": "https://a.example/", "description": "warm pools"},
        {"title": "Redis", "url": "https://b.example/", "description": "pub/sub"}]}})
    closed_port = LocalSite()
    dead_url = f"tcp://127.0.0.1:{closed_port.server.server_address[1]}"
    closed_port.close()  # nothing listens there any more
    secret = f"brave-secret-{uuid.uuid4().hex}"
    env_secret = f"reviewer-env-{uuid.uuid4().hex}"
    config = make_config(
        agents={"main": {"nodesExec": True},
                "reviewer": {"model": "haiku", "env": {"REVIEW_TOKEN": env_secret},
                             "tools": ["sessions_list", "message"]}},
        tools={"webFetch": {"allowNetworks": ["127.0.0.0/8"]},
               "webSearch": {"provider": "brave", "apiKey": secret,
                             "baseUrl": site.url + "/res/v1/web/search"},
               "nodes": {"remote": {"twin": {"url": "unix:///var/run/docker.sock",
                                             "description": "the same engine, by URL"},
                                    "gone": {"url": dead_url}},
                         "execMaxOutputBytes": 1024, "execTimeoutMs": 20000},
               "message": {"redisChannels": ["events"]}})
    api.on("systems-check",
           tool_use(HOST + "message", {"channel": "notes", "text": "hello notes",
                                       "data": {"n": 1}}),
           tool_use(HOST + "message", {"channel": "events", "text": "to redis"}),
           tool_use(HOST + "message", {"channel": "nowhere", "text": "x"}),
           tool_use(HOST + "web_fetch", {"url": site.url + "/page.html"}),
           tool_use(HOST + "web_fetch", {"url": "ftp://example.com/file"}),
           tool_use(HOST + "web_fetch", {"url": site.url + "/missing"}),
           tool_use(HOST + "web_search", {"query": "dockercc pools", "count": 2}),
           tool_use(HOST + "web_search", {"query": ""}),
           tool_use(HOST + "agents_list", {}),
           tool_use(HOST + "config_get", {}),
           tool_use(HOST + "config_get", {"path": "tools.webSearch"}),
           tool_use(HOST + "config_get", {"path": "pool.nope"}),
           tool_use(HOST + "nodes_list", {}),
           tool_use(HOST + "nodes_exec", {"command": "echo out-$((6*7)); echo err-line >&2; "
                                                     "id -u; exit 3"}),
           tool_use(HOST + "nodes_exec", {"command": "head -c 5000 /dev/zero | tr '\\0' a; "
                                                     "touch /etc/x 2>/dev/null || echo ro"}),
           tool_use(HOST + "nodes_exec", {"command": "sleep 60", "timeout_s": 2}),
           tool_use(HOST + "nodes_exec", {"command": "true", "node": "mars"}),
           tool_use(HOST + "nodes_exec", {"command": ""}),
           tool_use(HOST + "cron_create", {"schedule": "0 0 1 1 *", "prompt": "happy new year",
                                           "description": "yearly"}),
           tool_use(HOST + "cron_create", {"schedule": "every tuesday", "prompt": "x"}),
           tool_use(HOST + "cron_list", {}),
           tool_use(HOST + "cron_delete", {"job_id": "job-nope"}),
           text("systems ok"))
    notes: list[ChannelMessage] = []
    sub = aioredis.from_url(redis_server.url)
    pubsub = sub.pubsub(ignore_subscribe_messages=True)
    try:
        async with AsyncPool(config) as pool:
            pool.channel("notes", notes.append, description="collected by the test")
            await pubsub.subscribe(pool.channels.redis_key("events"))
            s = pool.session()
            init, result = await run_turn(s, "systems-check please")
            assert result.text == "systems ok"
            assert HOST + "nodes_exec" in init.tools and HOST + "web_search" in init.tools
            got = steps(api, "systems-check")
            assert len(got) == 22, got

            # message: python callback, redis pub/sub, unknown channel
            assert ok_json(got[0]) == {"delivered": True, "channel": "notes", "kind": "python"}
            assert [(m.text, m.data, m.session, m.agent) for m in notes] == [
                ("hello notes", {"n": 1}, s.id, "main")]
            published = ok_json(got[1])
            assert published["kind"] == "redis" and published["receivers"] == 1
            msg = None
            for _ in range(50):  # the first read may be the (ignored) subscribe confirmation
                msg = await pubsub.get_message(timeout=0.1)
                if msg is not None:
                    break
            assert msg is not None
            assert json.loads(msg["data"])["text"] == "to redis"
            assert json.loads(msg["data"])["session"] == s.id
            assert "unknown channel 'nowhere'" in error_text(got[2])
            assert "events, notes" in error_text(got[2])

            # web_fetch: a loopback page (allowed by allowNetworks), bad scheme, HTTP 404
            page, is_error = got[3]
            assert not is_error and "Title: Pool Notes" in page
            assert "# Warm pools" in page and "script-body" not in page
            assert "only http and https" in error_text(got[4])
            assert "HTTP 404" in error_text(got[5])

            # web_search through the Brave provider against the stand-in
            found = ok_json(got[6])
            assert found["provider"] == "brave"
            assert [r["url"] for r in found["results"]] == ["https://a.example/",
                                                           "https://b.example/"]
            search_request = next(r for r in site.requests if r["path"].startswith("/res/"))
            assert search_request["headers"]["X-Subscription-Token"] == secret
            assert "query" in error_text(got[7])

            # agents_list: names, models, tools; no secret values
            agents = ok_json(got[8])
            by_name = {a["name"]: a for a in agents["agents"]}
            assert set(by_name) == {"main", "reviewer"}
            assert by_name["reviewer"]["model"] == "haiku"
            assert by_name["reviewer"]["tools"] == ["sessions_list", "message"]
            assert by_name["reviewer"]["env_vars"] == ["REVIEW_TOKEN"]
            assert "nodes_exec" in by_name["main"]["tools"]
            assert "web_search" in by_name["main"]["tools"]
            assert env_secret not in got[8][0]

            # config_get: everything, secrets redacted; a part; a bad path
            whole = ok_json(got[9])
            assert whole["tools"]["webSearch"]["apiKey"] == "***"
            assert whole["credentials"]["apiKey"] == "***"
            assert whole["agents"]["reviewer"]["env"] == {"REVIEW_TOKEN": "***"}
            assert whole["pool"]["maxTotal"] == 10
            for text_ in (got[9][0], got[10][0]):
                assert secret not in text_ and env_secret not in text_
                assert "sk-ant-scripted-test" not in text_
            part = ok_json(got[10])
            assert part["path"] == "tools.webSearch" and part["value"]["apiKey"] == "***"
            assert "no key 'nope' in pool" in error_text(got[11])

            # nodes_list: local, the same engine by URL, and an unreachable one
            nodes = {n["name"]: n for n in ok_json(got[12])["nodes"]}
            assert set(nodes) == {"local", "twin", "gone"}
            assert nodes["local"]["reachable"] and nodes["twin"]["reachable"]
            assert nodes["local"]["exec_image_present"] is True
            assert nodes["local"]["server_version"] == nodes["twin"]["server_version"]
            assert not nodes["gone"]["reachable"] and nodes["gone"]["error"]

            # nodes_exec: exit code and both streams; output cap and read-only root; timeout
            ran = ok_json(got[13])
            assert ran["exit_code"] == 3 and not ran["timed_out"]
            assert ran["stdout"] == "out-42\n1000\n" and ran["stderr"] == "err-line\n"
            capped = ok_json(got[14])
            assert capped["stdout_truncated"] and len(capped["stdout"]) == 1024
            assert capped["exit_code"] == 0
            slow = ok_json(got[15])
            assert slow["timed_out"] and slow["exit_code"] is None
            assert slow["duration_ms"] < 15000
            assert "unknown node 'mars'" in error_text(got[16])
            assert "at least 1 character" in error_text(got[17])

            # cron: create, bad schedule, list, delete an unknown job
            job = ok_json(got[18])
            assert job["created"] and job["agent"] == "main" and job["created_by"] == s.id
            assert job["next_run"].endswith("-01-01T00:00:00+00:00")
            assert "invalid schedule 'every tuesday'" in error_text(got[19])
            listed = ok_json(got[20])
            assert [j["id"] for j in listed["jobs"]] == [job["id"]]
            assert "no cron job 'job-nope'" in error_text(got[21])

            # a second turn deletes the job by its id
            api.on("cron-cleanup", tool_use(HOST + "cron_delete", {"job_id": job["id"]}),
                   text("deleted"))
            _, result = await run_turn(s, "cron-cleanup now")
            assert ok_json(steps(api, "cron-cleanup")[0]) == {"deleted": job["id"]}
            assert await pool.cron.jobs() == []
            await s.close(forget=True)
    finally:
        await pubsub.aclose()
        await sub.aclose()
        site.close()
