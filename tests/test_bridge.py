"""dockercc.bridge: @tool schemas and results, and HostBridge against the real CLI transcript."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from typing import Annotated, Any, Literal, Optional

import pytest
from conftest import FIXTURES
from pydantic import BaseModel, Field

from dockercc.bridge import HostBridge, Tool, ToolOutput, ToolRegistry, tool
from dockercc.errors import ToolError

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16


@tool(description="Echo text")
def echo(text: str) -> str:
    return f"echo: {text}"


def _init(request_id: Any = 0) -> dict[str, Any]:
    return {
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "claude-code", "version": "2.1.328"}},
        "jsonrpc": "2.0", "id": request_id,
    }


def _call(name: str, arguments: dict[str, Any], request_id: Any = 2) -> dict[str, Any]:
    return {"method": "tools/call", "params": {"name": name, "arguments": arguments},
            "jsonrpc": "2.0", "id": request_id}


def _text(reply: dict[str, Any]) -> str:
    return "\n".join(block["text"] for block in reply["result"]["content"]
                     if block["type"] == "text")


async def _ready(bridge: HostBridge) -> None:
    assert "result" in await bridge.handle(_init())
    assert await bridge.handle({"jsonrpc": "2.0", "method": "notifications/initialized"}) == {
        "jsonrpc": "2.0", "id": None, "result": {}}


# ------------------------------------------------------------------------------ the transcript


def _fixture_exchange() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The CLI's mcp_message payloads and the driver's mcp_response replies, in order."""
    requests: list[dict[str, Any]] = []
    for line in (FIXTURES / "mcp-sdk-control.jsonl").read_text().splitlines():
        msg = json.loads(line)
        if msg.get("type") == "control_request" and msg["request"].get("subtype") == "mcp_message":
            requests.append(msg["request"]["message"])
    replies: list[dict[str, Any]] = []
    for line in (FIXTURES / "mcp-sdk-control.stdin.jsonl").read_text().splitlines():
        msg = json.loads(line)
        if msg.get("type") == "control_response":
            inner = msg["response"].get("response") or {}
            if "mcp_response" in inner:
                replies.append(inner["mcp_response"])
    return requests, replies


@pytest.mark.usefixtures("cli_fixtures")
async def test_replays_cli_transcript() -> None:
    requests, expected = _fixture_exchange()
    assert [m.get("method") for m in requests] == [
        "initialize", "notifications/initialized", "tools/list", "tools/call"]
    async with HostBridge([echo], server_name="host") as bridge:
        replies = [await bridge.handle(m) for m in requests]

    assert [r["id"] for r in replies] == [e["id"] for e in expected] == [0, None, 1, 2]
    assert all(r["jsonrpc"] == "2.0" and "error" not in r for r in replies)
    init = replies[0]["result"]
    assert init["protocolVersion"] == requests[0]["params"]["protocolVersion"]
    assert init["serverInfo"] == expected[0]["result"]["serverInfo"] == {
        "name": "host", "version": "1"}
    assert "tools" in init["capabilities"]
    assert replies[1] == expected[1]
    # the tool definition is exactly what the driver sent
    assert replies[2]["result"] == expected[2]["result"]
    tools = replies[2]["result"]["tools"]
    assert [set(t) for t in tools] == [{"name", "description", "inputSchema"}]
    assert replies[3]["result"]["content"] == expected[3]["result"]["content"]
    assert _text(replies[3]) == "echo: ping"
    assert replies[3]["result"].get("isError", False) is False


async def test_first_request_without_initialize_does_internal_handshake() -> None:
    # a CLI pre-started elsewhere already initialized; this bridge only sees tools/*
    async with HostBridge([echo]) as bridge:
        listed = await bridge.handle({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
        assert listed["id"] == 7
        assert [t["name"] for t in listed["result"]["tools"]] == ["echo"]
        called = await bridge.handle(_call("echo", {"text": "x"}, request_id=8))
        assert _text(called) == "echo: x"
        # a late initialize is still answered
        assert "result" in await bridge.handle(_init(9))


async def test_lazy_start_and_aclose() -> None:
    bridge = HostBridge([echo])
    assert not bridge.started
    assert _text(await bridge.handle(_call("echo", {"text": "a"}))) == "echo: a"
    assert bridge.started
    await bridge.aclose()
    await bridge.aclose()  # idempotent
    reply = await bridge.handle(_call("echo", {"text": "a"}, request_id=3))
    assert reply["id"] == 3 and "error" in reply
    assert await bridge.handle({"jsonrpc": "2.0", "method": "notifications/initialized"}) == {
        "jsonrpc": "2.0", "id": None, "result": {}}


async def test_json_text_messages_are_accepted() -> None:
    async with HostBridge([echo]) as bridge:
        reply = await bridge.handle(json.dumps(_call("echo", {"text": "t"}, request_id="s1")))
        assert reply["id"] == "s1" and _text(reply) == "echo: t"


# ------------------------------------------------------------------------------ schemas


def test_schema_basic_types_and_defaults() -> None:
    @tool
    def f(s: str, i: int, x: float, b: bool, names: list[str], maybe: Optional[int] = None,  # noqa: UP045
          other: int | None = None, count: int = 3, mode: Literal["fast", "slow"] = "fast",
          note: Annotated[str, Field(description="a note")] = "") -> None:
        """Do the thing."""

    schema = f.input_schema
    assert schema["type"] == "object"
    props = schema["properties"]
    assert props["s"] == {"type": "string"}
    assert props["i"] == {"type": "integer"}
    assert props["x"] == {"type": "number"}
    assert props["b"] == {"type": "boolean"}
    assert props["names"] == {"type": "array", "items": {"type": "string"}}
    assert props["maybe"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert props["maybe"]["default"] is None
    assert props["other"] == props["maybe"]
    assert props["count"] == {"type": "integer", "default": 3}
    assert props["mode"]["enum"] == ["fast", "slow"] and props["mode"]["default"] == "fast"
    assert props["note"]["description"] == "a note"
    assert schema["required"] == ["s", "i", "x", "b", "names"]
    assert "title" not in json.dumps(schema)
    assert f.name == "f" and f.description == "Do the thing." and f.timeout == 60


def test_schema_no_arguments() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert ping.input_schema == {"type": "object", "properties": {}}


def test_schema_pydantic_model_parameter() -> None:
    class Order(BaseModel):
        sku: str
        qty: int = 1
        title: str = ""  # a field called "title" survives title stripping

    @tool
    def place(order: Order) -> str:
        return f"{order.qty} x {order.sku}"

    schema = place.input_schema
    assert schema["required"] == ["order"]
    ref = schema["properties"]["order"]["$ref"]
    model_schema = schema["$defs"][ref.rsplit("/", 1)[-1]]
    assert model_schema["required"] == ["sku"]
    assert set(model_schema["properties"]) == {"sku", "qty", "title"}


async def test_pydantic_model_parameter_nested_or_whole_input() -> None:
    class Order(BaseModel):
        sku: str
        qty: int = 1

    @tool
    def place(order: Order) -> Order:
        return Order(sku=order.sku.upper(), qty=order.qty)

    nested = await place.call({"order": {"sku": "ab", "qty": 2}})
    assert not nested.is_error and json.loads(nested.text) == {"sku": "AB", "qty": 2}
    whole = await place.call({"sku": "cd"})
    assert not whole.is_error and json.loads(whole.text) == {"sku": "CD", "qty": 1}


def test_docstring_description_and_arg_descriptions() -> None:
    @tool
    def search(query: str, limit: int = 10) -> list[str]:
        """Search the notes.

        Returns the best matches first.

        Args:
            query: words to look for,
                matched case-insensitively.
            limit (int): at most this many results.
        """
        return []

    assert search.description == "Search the notes.\n\nReturns the best matches first."
    props = search.input_schema["properties"]
    assert props["query"]["description"] == "words to look for, matched case-insensitively."
    assert props["limit"]["description"] == "at most this many results."


def test_decorator_forms_and_direct_calls() -> None:
    @tool(name="adder", description="Adds.", timeout=5)
    def add(a: int, b: int = 1) -> int:
        return a + b

    assert isinstance(add, Tool)
    assert (add.name, add.description, add.timeout) == ("adder", "Adds.", 5)
    assert add(2, 3) == 5  # still the plain function
    assert add.__name__ == "add" and add.fn(1) == 2

    @tool
    async def aget(key: str) -> str:
        return key

    assert aget.is_async and not add.is_async
    assert asyncio.run(aget("k")) == "k"

    tool_from_fn = Tool.from_function(lambda x: x, name="ident")
    assert tool_from_fn.name == "ident" and tool_from_fn(4) == 4


def test_invalid_tool_names() -> None:
    for bad in ("", "has space", "x" * 65, "dots.are.bad", "ümlaut"):
        with pytest.raises(ToolError):
            Tool.from_function(echo.fn, name=bad)
    with pytest.raises(ToolError):
        Tool.from_function(lambda: None)  # no usable name
    assert Tool.from_function(echo.fn, name="a-b_C9").name == "a-b_C9"


def test_registry() -> None:
    def one() -> int:
        return 1

    reg = ToolRegistry([echo, one])
    assert reg.names() == ["echo", "one"]
    assert "echo" in reg and echo in reg and "nope" not in reg
    assert reg.get("one") is not None and reg.get("nope") is None
    assert len(reg) == 2
    reg.add(echo)  # the same object again is fine
    with pytest.raises(ToolError, match="duplicate"):
        reg.add(Tool.from_function(echo.fn))
    other = ToolRegistry([Tool.from_function(one, name="two")])
    merged = reg.merge(other)
    assert merged.names() == ["echo", "one", "two"] and reg.names() == ["echo", "one"]
    with pytest.raises(ToolError):
        reg.merge(ToolRegistry([Tool.from_function(one)]))
    with pytest.raises(ToolError):
        reg.extend([Tool.from_function(one, name="three"), Tool.from_function(one)])
    assert reg.names() == ["echo", "one"]  # nothing added on a duplicate


# ------------------------------------------------------------------------------ results


def test_return_value_conversion() -> None:
    class Point(BaseModel):
        x: int
        y: int

    cases: list[tuple[Any, str]] = [
        ("plain", "plain"),
        ({"a": [1, 2]}, '{"a": [1, 2]}'),
        ([1, "b"], '[1, "b"]'),
        (Point(x=1, y=2), '{"x": 1, "y": 2}'),
        (3, "3"),
        (2.5, "2.5"),
        (True, "true"),
        (None, "null"),
    ]
    for value, text in cases:
        out = ToolOutput.from_value(value)
        assert out.content == [{"type": "text", "text": text}] and not out.is_error
    png = ToolOutput.from_value(PNG)
    assert png.content == [{"type": "image", "data": base64.b64encode(PNG).decode(),
                            "mimeType": "image/png"}]
    assert ToolOutput.from_value(JPEG).content[0]["mimeType"] == "image/jpeg"


async def test_image_tool_over_bridge() -> None:
    @tool
    def snapshot() -> bytes:
        return PNG

    async with HostBridge([snapshot]) as bridge:
        reply = await bridge.handle(_call("snapshot", {}))
    block = reply["result"]["content"][0]
    assert block["type"] == "image" and block["mimeType"] == "image/png"
    assert base64.b64decode(block["data"]) == PNG


async def test_tool_output_passthrough_and_invalid_content() -> None:
    @tool
    def custom() -> ToolOutput:
        return ToolOutput(content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])

    @tool
    def broken() -> ToolOutput:
        return ToolOutput(content=[{"type": "no-such-block"}])

    async with HostBridge([custom, broken]) as bridge:
        ok = await bridge.handle(_call("custom", {}))
        assert _text(ok) == "a\nb"
        bad = await bridge.handle(_call("broken", {}, request_id=3))
        assert bad["result"]["isError"] is True and "invalid MCP content" in _text(bad)


async def test_sync_tool_mutates_host_state_in_worker_thread() -> None:
    state: dict[str, Any] = {"count": 0, "items": []}
    seen_threads: list[int] = []

    @tool
    def record(item: str) -> int:
        """Remember an item."""
        seen_threads.append(threading.get_ident())
        state["items"].append(item)
        state["count"] += 1
        return int(state["count"])

    async with HostBridge([record]) as bridge:
        await _ready(bridge)
        first = await bridge.handle(_call("record", {"item": "apple"}))
        second = await bridge.handle(_call("record", {"item": "pear"}, request_id=3))
    assert (_text(first), _text(second)) == ("1", "2")
    assert state == {"count": 2, "items": ["apple", "pear"]}
    assert seen_threads and threading.get_ident() not in seen_threads


async def test_tool_exception_gives_error_result_and_bridge_keeps_working() -> None:
    @tool
    def boom(x: int) -> int:
        raise ValueError(f"bad x {x}")

    async with HostBridge([boom, echo]) as bridge:
        await _ready(bridge)
        reply = await bridge.handle(_call("boom", {"x": 4}))
        assert reply["id"] == 2 and "error" not in reply
        assert reply["result"]["isError"] is True
        assert _text(reply) == "ValueError: bad x 4"
        again = await bridge.handle(_call("echo", {"text": "still"}, request_id=3))
        assert _text(again) == "echo: still" and not again["result"].get("isError")


async def test_bad_arguments_give_clear_error() -> None:
    @tool
    def scale(value: int, factor: float = 2.0) -> float:
        return value * factor

    missing = await scale.call({})
    assert missing.is_error and "scale" in missing.text and "value: Field required" in missing.text
    wrong = await scale.call({"value": "ten", "factor": "big"})
    assert wrong.is_error
    assert "value:" in wrong.text and "factor:" in wrong.text and "'ten'" in wrong.text
    assert (await scale.call({"value": "3"})).text == "6.0"  # JSON-ish coercion is lenient

    async with HostBridge([scale]) as bridge:
        reply = await bridge.handle(_call("scale", {"factor": 1}))
        assert reply["result"]["isError"] is True and "value: Field required" in _text(reply)


async def test_timeout() -> None:
    @tool(timeout=0.2)
    async def slow_async() -> str:
        await asyncio.sleep(5)
        return "late"

    @tool(timeout=0.2)
    def slow_sync() -> str:
        time.sleep(0.6)
        return "late"

    started = time.monotonic()
    out = await slow_async.call({})
    assert out.is_error and out.text == "tool slow_async timed out after 0.2 s"
    out = await slow_sync.call({})
    assert out.is_error and out.text == "tool slow_sync timed out after 0.2 s"
    assert time.monotonic() - started < 2


async def test_allowlist() -> None:
    @tool
    def secret() -> str:
        return "s3cret"

    async with HostBridge([echo, secret], allow=["mcp__host__echo"]) as bridge:
        listed = await bridge.handle({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert [t["name"] for t in listed["result"]["tools"]] == ["echo"]
        denied = await bridge.handle(_call("secret", {}))
        assert denied["result"]["isError"] is True and "not allowed" in _text(denied)
        assert "s3cret" not in json.dumps(denied)
        unknown = await bridge.handle(_call("nope", {}, request_id=3))
        assert unknown["result"]["isError"] is True and "unknown tool" in _text(unknown)


async def test_concurrent_calls_and_list_while_busy() -> None:
    @tool
    async def nap(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @tool
    def nap_sync(seconds: float) -> str:
        time.sleep(seconds)
        return f"slept {seconds}"

    async with HostBridge([nap, nap_sync]) as bridge:
        await _ready(bridge)
        started = time.monotonic()
        first = asyncio.create_task(bridge.handle(_call("nap", {"seconds": 0.5}, request_id=10)))
        second = asyncio.create_task(bridge.handle(_call("nap", {"seconds": 0.5}, request_id=11)))
        third = asyncio.create_task(
            bridge.handle(_call("nap_sync", {"seconds": 0.5}, request_id=12)))
        await asyncio.sleep(0.05)
        listed = await bridge.handle({"jsonrpc": "2.0", "id": 13, "method": "tools/list"})
        assert time.monotonic() - started < 0.4  # not stuck behind the sleeping tools
        assert len(listed["result"]["tools"]) == 2
        replies = await asyncio.gather(first, second, third)
        elapsed = time.monotonic() - started
    assert [r["id"] for r in replies] == [10, 11, 12]
    assert [_text(r) for r in replies] == ["slept 0.5"] * 3
    assert elapsed < 1.2  # ~max, not the 1.5 s sum


async def test_same_ids_from_two_clients_do_not_collide() -> None:
    @tool
    async def delayed(tag: str, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return tag

    async with HostBridge([delayed]) as bridge:
        a = asyncio.create_task(bridge.handle(_call("delayed", {"tag": "a", "seconds": 0.3})))
        b = asyncio.create_task(bridge.handle(_call("delayed", {"tag": "b", "seconds": 0.05})))
        ra, rb = await asyncio.gather(a, b)
    assert (ra["id"], _text(ra)) == (2, "a")
    assert (rb["id"], _text(rb)) == (2, "b")


async def test_cancelled_notification_answers_request() -> None:
    release = asyncio.Event()

    @tool
    async def wait_forever() -> str:
        await release.wait()
        return "done"

    async with HostBridge([wait_forever]) as bridge:
        await _ready(bridge)
        pending = asyncio.create_task(bridge.handle(_call("wait_forever", {}, request_id=5)))
        await asyncio.sleep(0.05)
        ack = await bridge.handle({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                   "params": {"requestId": 5, "reason": "user"}})
        assert ack == {"jsonrpc": "2.0", "id": None, "result": {}}
        reply = await asyncio.wait_for(pending, 2)
        assert reply["id"] == 5 and "error" in reply


async def test_caller_cancellation_cancels_the_tool() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @tool
    async def hang() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async with HostBridge([hang, echo]) as bridge:
        task = asyncio.create_task(bridge.handle(_call("hang", {})))
        await asyncio.wait_for(started.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(cancelled.wait(), 2)
        assert _text(await bridge.handle(_call("echo", {"text": "after"}, 3))) == "echo: after"


async def test_aclose_answers_in_flight_requests() -> None:
    started = asyncio.Event()

    @tool
    async def hang() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    bridge = HostBridge([hang])
    task = asyncio.create_task(bridge.handle(_call("hang", {}, request_id="r1")))
    await asyncio.wait_for(started.wait(), 2)
    await asyncio.wait_for(bridge.aclose(), 6)
    reply = await asyncio.wait_for(task, 2)
    assert reply["id"] == "r1" and "error" in reply
    assert not bridge.started and bridge.closed


# ------------------------------------------------------------------------------ JSON-RPC edges


async def test_malformed_messages_get_error_replies() -> None:
    async with HostBridge([echo]) as bridge:
        cases: list[tuple[Any, Any]] = [
            ("not json {", None),
            ([1, 2, 3], None),
            ({"jsonrpc": "2.0", "id": 4}, 4),
            ({"jsonrpc": "1.0", "id": 5, "method": "tools/list"}, 5),
            ({"jsonrpc": "2.0", "id": 6, "method": 42}, 6),
            ({"jsonrpc": "2.0", "id": [6], "method": "tools/list"}, None),
            ({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": [1]}, 7),
        ]
        for message, expected_id in cases:
            reply = await bridge.handle(message)
            assert reply["jsonrpc"] == "2.0" and reply["id"] == expected_id, message
            assert isinstance(reply["error"]["code"], int) and reply["error"]["message"], message
        # requests the server cannot serve get its JSON-RPC error
        unknown = await bridge.handle({"jsonrpc": "2.0", "id": 8, "method": "no/such"})
        assert unknown["id"] == 8 and unknown["error"]["code"] == -32601
        bad_params = await bridge.handle(
            {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"arguments": {}}})
        assert bad_params["id"] == 9 and bad_params["error"]["code"] == -32602
        # and the bridge still works
        assert _text(await bridge.handle(_call("echo", {"text": "ok"}, request_id=10))) == (
            "echo: ok")


async def test_notifications_are_acknowledged() -> None:
    async with HostBridge([echo]) as bridge:
        for note in (
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
            {"jsonrpc": "2.0", "method": "notifications/whatever", "params": {"x": 1}},
            {"jsonrpc": "2.0", "id": 99, "result": {}},  # a response to nothing: acked too
        ):
            assert await bridge.handle(note) == {"jsonrpc": "2.0", "id": None, "result": {}}
