"""The warm-up turn's loopback Messages API (dockercc.agent.warmup).

Its replies are read by the real ``anthropic`` SDK here (the same wire format the CLI reads);
the warm-up itself, with the real CLI in a warm container, is covered in test_perf_paths.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from dockercc.agent.warmup import WarmupAPI, warmup_supported
from dockercc.client import AsyncPool


async def test_streams_a_reply_the_sdk_parses() -> None:
    async with WarmupAPI() as api:
        client = anthropic.AsyncAnthropic(base_url=api.url, api_key="sk-ant-not-sent-anywhere",
                                          max_retries=0)
        async with client.messages.stream(model="claude-sonnet-5", max_tokens=10,
                                          messages=[{"role": "user", "content": "hi"}]) as s:
            deltas = [t async for t in s.text_stream]
            final = await s.get_final_message()
        assert deltas == ["OK"]
        assert final.model == "claude-sonnet-5" and final.stop_reason == "end_turn"
        # keep-alive: a second request on the same client
        plain = await client.messages.create(model="m", max_tokens=5,
                                             messages=[{"role": "user", "content": "again"}])
        assert plain.content[0].type == "text" and plain.content[0].text == "OK"  # type: ignore[union-attr]
        assert api.message_requests == 2
        await client.close()
    # closed with the block: nothing listens on the port any more
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(api.url)


async def test_other_paths_and_garbage_get_errors_not_crashes() -> None:
    async with WarmupAPI() as api, httpx.AsyncClient(base_url=api.url) as http:
        r = await http.get("/v1/models")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = await http.post("/v1/messages", content=b"{not json")
        assert r.status_code == 200 and r.json()["content"][0]["text"] == "OK"
        assert api.message_requests == 1


@pytest.mark.parametrize(("env", "supported"), [
    ({}, True),
    ({"ANTHROPIC_BASE_URL": "https://gateway.example/anthropic"}, True),
    ({"CLAUDE_CODE_USE_BEDROCK": "1"}, False),
    ({"CLAUDE_CODE_USE_VERTEX": "true"}, False),
    ({"CLAUDE_CODE_USE_FOUNDRY": "1"}, False),
    ({"CLAUDE_CODE_USE_BEDROCK": "0"}, True),
])
def test_warm_up_only_where_the_base_url_routes_requests(env: dict[str, str],
                                                          supported: bool) -> None:
    assert warmup_supported(env) is supported


@pytest.mark.docker
async def test_other_provider_gets_no_warm_up_turn(make_config: Any, api: Any) -> None:
    """With Bedrock configured, ANTHROPIC_BASE_URL would not route the throwaway turn: the
    runner pre-starts and primes the CLI but sends it no prompt."""
    cfg = make_config(timeouts={"startupMs": 90000},
                      docker={"env": {"CLAUDE_CODE_USE_BEDROCK": "1",
                                      "AWS_REGION": "us-east-1"}})
    async with AsyncPool(cfg) as pool:
        await pool.warm("main", count=1, timeout=180)
        (rec,) = [r for r in await pool.containers.records() if r.status == "warm"]
        state = await pool.transport.client.hgetall(
            pool.transport.pool_keys.container_state(rec.id))
        assert state.get(b"prestarted") == b"1", state
        assert state.get(b"warmed_up") == b"0", state
        assert api.message_requests == []
