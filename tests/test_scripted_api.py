"""Tests for dockercc.testing.ScriptedAPI: the wire format over HTTP, then the REAL Claude Code CLI.

The CLI tests need ``claude`` (npm ``@anthropic-ai/claude-code@2.1.328``) on PATH; they fail,
not skip, when it is missing, because CI installs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockercc.testing import (
    Reply,
    ScriptedAPI,
    TextBlock,
    ToolUseBlock,
    echo,
    error,
    last_user_text,
    reply,
    text,
    thinking,
    tool_use,
)

CLI_VERSION = "2.1.328"
CLI_TIMEOUT = 60.0


# --------------------------------------------------------------------------- helpers


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse an SSE body strictly: every event has one ``event:`` and one JSON ``data:`` line."""
    assert raw.endswith("\n\n"), "stream must end with a blank line"
    events: list[tuple[str, dict[str, Any]]] = []
    for frame in raw.split("\n\n"):
        if not frame:
            continue
        lines = frame.split("\n")
        assert len(lines) == 2, f"bad frame {frame!r}"
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        name = lines[0][len("event: ") :]
        data = json.loads(lines[1][len("data: ") :])
        assert data["type"] == name, f"event name {name!r} != data type {data['type']!r}"
        events.append((name, data))
    return events


def messages_body(prompt: str = "hello", *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test-model",
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def post_stream(
    client: httpx.Client, prompt: str = "hello", **extra: Any
) -> tuple[httpx.Response, list[tuple[str, dict[str, Any]]]]:
    resp = client.post("/v1/messages?beta=true", json=messages_body(prompt, **extra))
    if resp.status_code != 200:
        return resp, []
    assert resp.headers["content-type"].startswith("text/event-stream")
    return resp, sse_events(resp.text)


def check_envelope(events: list[tuple[str, dict[str, Any]]]) -> None:
    """message_start, ping, blocks (start, deltas, stop), message_delta, message_stop."""
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["role"] == "assistant"
    assert start["content"] == [] and start["model"] == "claude-test-model"
    usage = start["usage"]
    assert isinstance(usage["input_tokens"], int) and 0 < usage["input_tokens"] < 1000
    open_index: int | None = None
    next_index = 0
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index, next_index = None, next_index + 1
        else:
            assert name == "ping", name
    assert open_index is None
    out = events[-2][1]["usage"]["output_tokens"]
    assert isinstance(out, int) and 0 < out < 10_000


def blocks_of(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Re-assemble content blocks from the deltas, like a client does."""
    blocks: list[dict[str, Any]] = []
    partial: list[str] = []
    for name, data in events:
        if name == "content_block_start":
            blocks.append(dict(data["content_block"]))
            partial = []
        elif name == "content_block_delta":
            d = data["delta"]
            b = blocks[data["index"]]
            if d["type"] == "text_delta":
                b["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                b["signature"] = d["signature"]
            elif d["type"] == "input_json_delta":
                partial.append(d["partial_json"])
            else:
                raise AssertionError(f"unknown delta {d}")
        elif name == "content_block_stop" and blocks[data["index"]]["type"] == "tool_use":
            blocks[data["index"]]["input"] = json.loads("".join(partial))
    return blocks


def stop_reason(events: list[tuple[str, dict[str, Any]]]) -> str:
    return str(events[-2][1]["delta"]["stop_reason"])


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    with ScriptedAPI() as server:
        yield server


@pytest.fixture
def client(api: ScriptedAPI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10) as c:
        yield c


# --------------------------------------------------------------------------- wire format


def test_text_stream_is_well_formed_and_recorded(api: ScriptedAPI, client: httpx.Client) -> None:
    api.script(text("Hello — ünïcode ✓ from the stub."))
    resp, events = post_stream(client, "say hi")
    check_envelope(events)
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert [d["text"] for d in deltas] == [
        "Hello ",
        "— ",
        "ünïcode ",
        "✓ ",
        "from ",
        "the ",
        "stub.",
    ]
    assert blocks_of(events) == [{"type": "text", "text": "Hello — ünïcode ✓ from the stub."}]
    assert stop_reason(events) == "end_turn"
    assert resp.headers["request-id"].startswith("req_")

    (req,) = api.requests
    assert (req.method, req.path, req.query) == ("POST", "/v1/messages", {"beta": "true"})
    assert req.kind == "stream" and req.source == "script" and req.stream
    assert req.body["messages"] == [{"role": "user", "content": "say hi"}]
    assert req.last_user_text == "say hi"
    assert req.headers["Content-Type"] == "application/json"  # case-insensitive
    assert req.headers.get("content-type") == "application/json"
    assert api.pending == 0


def test_fixed_size_chunks_and_delay() -> None:
    with (
        ScriptedAPI(text("abcdefghij", chunk=4, delay=0.1)) as api,
        httpx.Client(base_url=api.url, timeout=10) as c,
    ):
        t0 = time.monotonic()
        _, events = post_stream(c, "x")
        took = time.monotonic() - t0
    deltas = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert deltas == ["abcd", "efgh", "ij"]
    assert took >= 0.18  # two waits between three deltas


def test_tool_use_stream(api: ScriptedAPI, client: httpx.Client) -> None:
    api.script(tool_use("Bash", {"command": "echo hi-from-bash", "n": [1, 2]}, text="Running."))
    _, events = post_stream(client)
    check_envelope(events)
    blocks = blocks_of(events)
    assert blocks[0] == {"type": "text", "text": "Running."}
    assert blocks[1]["type"] == "tool_use" and blocks[1]["name"] == "Bash"
    assert blocks[1]["id"].startswith("toolu_")
    assert blocks[1]["input"] == {"command": "echo hi-from-bash", "n": [1, 2]}
    json_deltas = [d for n, d in events if n == "content_block_delta" and d["index"] == 1]
    assert len(json_deltas) > 1 and all(
        d["delta"]["type"] == "input_json_delta" for d in json_deltas
    )
    assert stop_reason(events) == "tool_use"


def test_tool_ids_fresh_or_fixed(api: ScriptedAPI, client: httpx.Client) -> None:
    api.script(tool_use("Read", {"file_path": "/x"}, id="toolu_fixed"))
    api.on("again", tool_use("Bash", {"command": "true"}))
    assert blocks_of(post_stream(client)[1])[0]["id"] == "toolu_fixed"
    first = blocks_of(post_stream(client, "again")[1])[0]["id"]
    second = blocks_of(post_stream(client, "again")[1])[0]["id"]
    assert first != second  # a repeated route reply never reuses a tool id


def test_message_ids_fresh_or_fixed(api: ScriptedAPI, client: httpx.Client) -> None:
    fixed = Reply(blocks=(TextBlock("a"),), message_id="msg_fixed") + text("b")
    api.script(fixed, text("c"))
    first = post_stream(client)[1][0][1]["message"]
    assert first["id"] == "msg_fixed"  # kept through `+`, as the capture script uses it
    second = post_stream(client)[1][0][1]["message"]
    assert second["id"].startswith("msg_scripted_") and second["id"] != "msg_fixed"


def test_thinking_stream(api: ScriptedAPI, client: httpx.Client) -> None:
    api.script(thinking("let me think about it", "The answer is 4."))
    _, events = post_stream(client)
    check_envelope(events)
    blocks = blocks_of(events)
    assert blocks[0]["type"] == "thinking" and blocks[0]["thinking"] == "let me think about it"
    assert blocks[0]["signature"]
    assert blocks[1] == {"type": "text", "text": "The answer is 4."}
    kinds = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert kinds.index("signature_delta") == kinds.count("thinking_delta")  # after the thinking
    assert stop_reason(events) == "end_turn"


def test_multi_block_reply_and_plus(api: ScriptedAPI, client: httpx.Client) -> None:
    api.script(
        reply(ToolUseBlock("Bash", {"command": "a"}), ToolUseBlock("Bash", {"command": "b"})),
        thinking("hmm") + text("done"),
    )
    blocks = blocks_of(post_stream(client)[1])
    assert [b["input"]["command"] for b in blocks] == ["a", "b"]
    _, events = post_stream(client)
    assert [b["type"] for b in blocks_of(events)] == ["thinking", "text"]
    r = Reply(blocks=(TextBlock("x"),), stop_reason="max_tokens")
    api.script(r)
    assert stop_reason(post_stream(client)[1]) == "max_tokens"


def test_error_reply(api: ScriptedAPI, client: httpx.Client) -> None:
    api.script(error(400, message="bad thing"), error(529, "overloaded_error", should_retry=True))
    api.script(text("after"))
    resp, _ = post_stream(client)
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad thing"},
    }
    resp, _ = post_stream(client)
    assert resp.status_code == 529 and resp.headers["x-should-retry"] == "true"
    assert resp.json()["error"]["type"] == "overloaded_error"
    _, events = post_stream(client)
    assert blocks_of(events) == [{"type": "text", "text": "after"}]
    assert [r.source for r in api.requests] == ["script"] * 3


def test_in_stream_error(api: ScriptedAPI, client: httpx.Client) -> None:
    api.script(error(529, "overloaded_error", in_stream=True))
    resp, events = post_stream(client)
    assert resp.status_code == 200
    assert [n for n, _ in events] == ["message_start", "error"]
    assert events[1][1]["error"]["type"] == "overloaded_error"


def test_side_requests_do_not_consume_the_script(api: ScriptedAPI, client: httpx.Client) -> None:
    api.script(text("scripted"))
    resp = client.post("/v1/messages?beta=true", json=messages_body("title?", stream=False))
    assert resp.status_code == 200
    msg = resp.json()
    assert msg["type"] == "message" and msg["content"] == [{"type": "text", "text": "OK"}]
    assert msg["stop_reason"] == "end_turn" and msg["usage"]["output_tokens"] > 0
    tokens = client.post("/v1/messages/count_tokens?beta=true", json=messages_body())
    assert tokens.status_code == 200 and tokens.json()["input_tokens"] > 0
    assert client.head("/").status_code == 200
    assert client.get("/").json() == {}
    assert client.get("/v1/models").json()["data"][0]["type"] == "model"
    missing = client.post("/v1/nope", content=b"not json")
    assert missing.status_code == 404 and missing.json()["type"] == "error"
    assert api.pending == 1
    assert blocks_of(post_stream(client)[1])[0]["text"] == "scripted"
    kinds = [(r.kind, r.source) for r in api.requests]
    assert kinds[0] == ("message", "side") and kinds[-1] == ("stream", "script")
    assert api.requests[-2].body is None and api.requests[-2].raw_body == b"not json"


def test_default_echo_and_responders() -> None:
    with ScriptedAPI() as api, httpx.Client(base_url=api.url, timeout=10) as c:
        assert blocks_of(post_stream(c, "ping 1")[1])[0]["text"] == "echo: ping 1"
        assert api.requests[0].source == "default"
        api.set_default("fixed")
        assert blocks_of(post_stream(c)[1])[0]["text"] == "fixed"

    def count_messages(body: dict[str, Any]) -> Reply | str:
        return f"{len(body['messages'])} messages"

    with ScriptedAPI(default=count_messages) as api, httpx.Client(base_url=api.url) as c:
        assert blocks_of(post_stream(c)[1])[0]["text"] == "1 messages"

    def broken(body: dict[str, Any]) -> Reply:
        raise RuntimeError("boom")

    with ScriptedAPI(default=broken) as api, httpx.Client(base_url=api.url) as c:
        resp, _ = post_stream(c)
        assert resp.status_code == 500 and resp.json()["error"]["type"] == "api_error"
        assert [str(e) for e in api.errors] == ["boom"]
        assert c.get("/").status_code == 200  # still serving


def test_routes_by_marker(api: ScriptedAPI, client: httpx.Client) -> None:
    api.on("count slowly", text("one two"), text("three"))
    api.on("once", text("only once"), repeat=False)
    api.script(text("from the queue"))
    assert blocks_of(post_stream(client, "please count slowly")[1])[0]["text"] == "one two"
    assert blocks_of(post_stream(client, "once please")[1])[0]["text"] == "only once"
    assert blocks_of(post_stream(client, "count slowly again")[1])[0]["text"] == "three"
    assert blocks_of(post_stream(client, "count slowly more")[1])[0]["text"] == "three"  # repeats
    assert blocks_of(post_stream(client, "once more")[1])[0]["text"] == "from the queue"
    assert blocks_of(post_stream(client, "once more")[1])[0]["text"] == "echo: once more"
    assert [r.source for r in api.message_requests] == [
        "route:count slowly",
        "route:once",
        "route:count slowly",
        "route:count slowly",
        "script",
        "default",
    ]
    api.reset()
    assert api.requests == [] and api.pending == 0
    assert blocks_of(post_stream(client, "count slowly")[1])[0]["text"] == "echo: count slowly"


def test_last_user_text_skips_reminders_and_tool_results() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>\nstuff\n</system-reminder>"},
                    {"type": "text", "text": "run it"},
                ],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "B"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
        ]
    }
    assert last_user_text(body) == "run it"
    assert echo(body).text == "echo: run it"
    body["messages"].append(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "[Request interrupted by user]"},
                {"type": "text", "text": "second turn"},
            ],
        }
    )
    assert last_user_text(body) == "second turn"
    assert last_user_text({}) == "" and last_user_text(None) == ""


def test_concurrent_slow_streams_and_close_aborts() -> None:
    api = ScriptedAPI().start()
    api.on("slow-a", text("a " * 6, delay=0.15))
    api.on("slow-b", text("b " * 6, delay=0.15))
    results: dict[str, str] = {}

    def run(marker: str) -> None:
        with httpx.Client(base_url=api.url, timeout=10) as c:
            results[marker] = "".join(b["text"] for b in blocks_of(post_stream(c, marker)[1]))

    threads = [threading.Thread(target=run, args=(m,)) for m in ("slow-a", "slow-b")]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 1.4  # served in parallel (each alone takes ~0.75 s)
    assert results == {"slow-a": "a " * 6, "slow-b": "b " * 6}

    # a client that goes away mid-stream does not hurt the server
    api.script(text("x " * 50, delay=0.05))
    with httpx.Client(base_url=api.url, timeout=10) as c:
        with c.stream("POST", "/v1/messages", json=messages_body()) as resp:
            for _ in resp.iter_bytes():
                break
    with httpx.Client(base_url=api.url, timeout=10) as c:
        assert blocks_of(post_stream(c, "alive?")[1])[0]["text"] == "echo: alive?"

    # close() cuts a stream in progress instead of waiting for it
    api.script(text("z " * 100, delay=1.0))
    got: list[BaseException | str] = []

    def slow() -> None:
        try:
            with httpx.Client(base_url=api.url, timeout=10) as c:
                got.append(c.post("/v1/messages", json=messages_body()).text)
        except httpx.HTTPError as exc:
            got.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    api.wait_for_requests(5)
    t0 = time.monotonic()
    api.close()
    t.join(5)
    assert time.monotonic() - t0 < 3 and got
    assert not api.running
    api.close()  # idempotent


async def test_works_inside_a_running_event_loop() -> None:
    async with ScriptedAPI(text("async hello")) as api:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as c:
            resp = await c.post("/v1/messages", json=messages_body())
            assert blocks_of(sse_events(resp.text))[0]["text"] == "async hello"
            results = await asyncio.gather(
                *(c.post("/v1/messages", json=messages_body(f"n{i}")) for i in range(5))
            )
        texts = sorted(blocks_of(sse_events(r.text))[0]["text"] for r in results)
        assert texts == [f"echo: n{i}" for i in range(5)]
        assert len(api.requests) == 6


def test_env_and_fixed_port() -> None:
    with ScriptedAPI() as first:
        port = first.port
    with ScriptedAPI(port=port) as api:
        assert api.port == port and api.url == f"http://127.0.0.1:{port}"
        assert api.env() == {
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "sk-ant-scripted-test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        oauth = api.env(oauth_token="tok")
        assert oauth["CLAUDE_CODE_OAUTH_TOKEN"] == "tok" and "ANTHROPIC_API_KEY" not in oauth


def test_command_line_entry() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockercc.testing", "--port", "0", "--text", "cli says hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert proc.stdout.readline().startswith("export ")
        with httpx.Client(base_url=url, timeout=10) as c:
            assert blocks_of(post_stream(c)[1])[0]["text"] == "cli says hi"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- the real CLI


def claude_binary() -> str:
    path = shutil.which("claude")
    if path is None:
        pytest.fail(
            "the Claude Code CLI is not on PATH: install it with "
            f"`npm install -g @anthropic-ai/claude-code@{CLI_VERSION}`"
        )
    return path


def run_claude(
    api: ScriptedAPI,
    home: Path,
    *args: str,
    oauth_token: str | None = None,
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run ``claude -p ...`` against ``api`` with a clean env and an empty HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "CLAUDE")) and k != "IS_SANDBOX"
    }
    env.update(api.env(oauth_token=oauth_token))
    env["HOME"] = str(home)
    if "bypassPermissions" in args and os.geteuid() == 0:
        # The CLI refuses bypassPermissions as root ("--dangerously-skip-permissions cannot be
        # used with root/sudo privileges") unless it is told it runs in a sandbox.
        env["IS_SANDBOX"] = "1"
    proc = subprocess.run(
        [claude_binary(), *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    lines = []
    for line in proc.stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return proc, lines


def result_line(
    proc: subprocess.CompletedProcess[str], lines: list[dict[str, Any]]
) -> dict[str, Any]:
    results = [m for m in lines if m.get("type") == "result"]
    assert results, f"no result line; rc={proc.returncode} stderr={proc.stderr[-2000:]!r}"
    return results[-1]


def test_cli_version() -> None:
    out = subprocess.run([claude_binary(), "--version"], capture_output=True, text=True, timeout=60)
    assert CLI_VERSION in out.stdout, out.stdout


def test_cli_streams_scripted_text(tmp_path: Path) -> None:
    scripted = "Hello — ünïcode ✓ from the stub."
    with ScriptedAPI(text(scripted)) as api:
        proc, lines = run_claude(
            api,
            tmp_path,
            "-p",
            "say hi",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
        )
    deltas = [
        m["event"]["delta"]["text"]
        for m in lines
        if m.get("type") == "stream_event"
        and m["event"].get("type") == "content_block_delta"
        and m["event"]["delta"].get("type") == "text_delta"
    ]
    assert len(deltas) > 1 and "".join(deltas) == scripted
    result = result_line(proc, lines)
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == scripted
    assert result["total_cost_usd"] > 0
    (req,) = api.message_requests
    assert req.last_user_text == "say hi"
    assert req.query == {"beta": "true"} and req.headers["x-api-key"] == "sk-ant-scripted-test"
    assert req.headers["user-agent"].startswith("claude-cli/")


def test_cli_runs_scripted_bash_tool(tmp_path: Path) -> None:
    with ScriptedAPI(
        tool_use("Bash", {"command": "echo hi-from-bash"}, text="Running a command."),
        text("The command printed hi."),
    ) as api:
        proc, lines = run_claude(
            api,
            tmp_path,
            "-p",
            "run echo",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "bypassPermissions",
        )
    result = result_line(proc, lines)
    assert result["subtype"] == "success" and result["result"] == "The command printed hi."
    first, second = api.message_requests
    assert first.tool_results == []
    (tool_result,) = second.tool_results
    assert "hi-from-bash" in second.tool_result_text
    assert tool_result["is_error"] is False
    assert second.last_user_text == "run echo"  # the prompt is still the latest user text
    tool_id = next(b["id"] for b in second.messages[-2]["content"] if b["type"] == "tool_use")
    assert tool_result["tool_use_id"] == tool_id
    assert any(m.get("type") == "user" for m in lines)  # the CLI reported the tool_result


def test_cli_survives_api_error(tmp_path: Path) -> None:
    # compare fixtures/claude-code-2.1.328/api-error.jsonl: on a 400 invalid_request_error the
    # CLI retries (dropping some anthropic-beta flags), then reports the text turn
    with ScriptedAPI(error(400), text("(end of scenario err)")) as api:
        proc, lines = run_claude(
            api, tmp_path, "-p", "say hi", "--output-format", "stream-json", "--verbose"
        )
    result = result_line(proc, lines)
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == "(end of scenario err)"
    assert len(api.message_requests) == 2 and api.pending == 0

    # a 403 is not retried: the turn ends with an error result (subtype still "success")
    with ScriptedAPI(error(403, "permission_error", "no access")) as api:
        proc, lines = run_claude(
            api, tmp_path, "-p", "say hi", "--output-format", "stream-json", "--verbose"
        )
    result = result_line(proc, lines)
    assert result["is_error"] is True and result["api_error_status"] == 403
    assert "no access" in result["result"]


def test_cli_sends_oauth_token_as_bearer(tmp_path: Path) -> None:
    canary = "canary-oauth-7f3a9c"
    with ScriptedAPI(text("hi there")) as api:
        proc, lines = run_claude(
            api,
            tmp_path,
            "-p",
            "say hi",
            "--output-format",
            "stream-json",
            "--verbose",
            oauth_token=canary,
        )
    assert result_line(proc, lines)["result"] == "hi there"
    req = api.message_requests[0]
    assert req.headers["authorization"] == f"Bearer {canary}"
    assert "x-api-key" not in req.headers
    assert "oauth-2025-04-20" in req.headers["anthropic-beta"]
