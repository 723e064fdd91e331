"""The protocol layer against the real CLI 2.1.328 transcripts in tests/fixtures."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from conftest import FIXTURES

from dockercc.protocol import (
    MESSAGE_TYPES,
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ControlRequest,
    ControlResponse,
    InitializeRequest,
    InterruptRequest,
    LineParser,
    McpMessageRequest,
    Message,
    MessageDeltaEvent,
    MessageStartEvent,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    TurnAccumulator,
    UnknownMessage,
    WireAssistantMessage,
    WireResultMessage,
    WireTextDelta,
    WireUserMessage,
    control_error,
    control_success,
    control_success_dict,
    initialize_request,
    interrupt_request,
    mcp_response,
    new_request_id,
    parse_message,
    user_message,
)

pytestmark = pytest.mark.usefixtures("cli_fixtures")


CAPTURE_CWD = "/dockercc-capture/work"  # scripts/capture_transcripts.py runs the CLI there
BASH_COMMAND = "echo hi-from-bash && echo $((6 * 7))"


def load(name: str) -> list[Message]:
    parser = LineParser()
    msgs = parser.feed((FIXTURES / name).read_bytes()) + parser.flush()
    assert parser.skipped == 0
    return msgs


def raw_lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]


def kind(msg: Message) -> tuple[str, str | None]:
    """(type, subtype) where subtype is the system/result subtype, the SSE event type, or
    the control request subtype."""
    if isinstance(msg, StreamEvent):
        return ("stream_event", msg.event_type)
    if isinstance(msg, SystemMessage | WireResultMessage | ControlRequest):
        return (msg.type, msg.subtype)
    return (msg.type, None)


def split_turns(msgs: list[Message]) -> list[list[Message]]:
    turns: list[list[Message]] = [[]]
    for m in msgs:
        turns[-1].append(m)
        if isinstance(m, WireResultMessage):
            turns.append([])
    return [t for t in turns if t]


def accumulate(msgs: list[Message]) -> TurnAccumulator:
    acc = TurnAccumulator()
    appended = "".join(acc.add(m) for m in msgs)
    assert appended == acc.text  # add() returns exactly what it appends
    return acc


# ------------------------------------------------------------------------------ sequences

SYS_INIT = ("system", "init")
SYS_STATUS = ("system", "status")
START = ("stream_event", "message_start")
BSTART = ("stream_event", "content_block_start")
DELTA = ("stream_event", "content_block_delta")
BSTOP = ("stream_event", "content_block_stop")
MDELTA = ("stream_event", "message_delta")
MSTOP = ("stream_event", "message_stop")
ASSISTANT = ("assistant", None)
USER = ("user", None)
OK = ("result", "success")
CTL_RESP = ("control_response", None)
MCP = ("control_request", "mcp_message")

EXPECTED: dict[str, list[tuple[str, str | None]]] = {
    "text-partial.jsonl": [
        SYS_INIT,
        SYS_STATUS,
        START,
        BSTART,
        *[DELTA] * 7,
        ASSISTANT,
        BSTOP,
        MDELTA,
        MSTOP,
        OK,
    ],
    "bash-tool.jsonl": [SYS_INIT, ASSISTANT, ASSISTANT, USER, ASSISTANT, OK],
    "api-error.jsonl": [SYS_INIT, ASSISTANT, OK],
    "interrupt-multiturn.jsonl": [
        SYS_INIT,
        SYS_STATUS,
        START,
        BSTART,
        DELTA,
        DELTA,
        DELTA,
        CTL_RESP,
        ASSISTANT,
        USER,
        BSTOP,
        MDELTA,
        MSTOP,
        ("result", "error_during_execution"),
        SYS_INIT,
        SYS_STATUS,
        START,
        BSTART,
        *[DELTA] * 4,
        ASSISTANT,
        BSTOP,
        MDELTA,
        MSTOP,
        OK,
    ],
    "interrupt-multiturn.stdin.jsonl": [USER, ("control_request", "interrupt"), USER],
    "mcp-sdk-control.jsonl": [
        MCP,
        CTL_RESP,
        MCP,
        MCP,
        SYS_INIT,
        ASSISTANT,
        MCP,
        USER,
        ASSISTANT,
        OK,
    ],
    "mcp-sdk-control.stdin.jsonl": [
        ("control_request", "initialize"),
        USER,
        CTL_RESP,
        CTL_RESP,
        CTL_RESP,
        CTL_RESP,
    ],
}

CLASSES = {
    "system": SystemMessage,
    "stream_event": StreamEvent,
    "assistant": WireAssistantMessage,
    "user": WireUserMessage,
    "result": WireResultMessage,
    "control_request": ControlRequest,
    "control_response": ControlResponse,
}


def test_every_fixture_is_covered() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.jsonl")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_sequence(name: str) -> None:
    msgs = load(name)
    assert [kind(m) for m in msgs] == EXPECTED[name]
    for m, raw in zip(msgs, raw_lines(name), strict=True):
        assert type(m) is CLASSES[m.type]
        assert m.raw == raw  # the original dict is kept, unchanged
        assert "raw" not in m.model_dump() and "_wire" not in m.model_dump()


def test_message_types_table() -> None:
    assert MESSAGE_TYPES == CLASSES


def test_parse_line_and_parse_message_agree() -> None:
    parser = LineParser()
    for line in (FIXTURES / "text-partial.jsonl").read_text().splitlines():
        a = parser.parse_line(line)
        b = parse_message(json.loads(line))
        assert a is not None
        assert a == b
        assert type(a) is type(b)


# ---------------------------------------------------------------------------- typed fields


def test_system_init_fields() -> None:
    msgs = load("bash-tool.jsonl")
    init, res = msgs[0], msgs[-1]
    assert isinstance(init, SystemMessage) and init.is_init
    # the CLI's session id changes with every capture: the typed field is the wire value, a
    # UUID, and the same one the result reports
    assert init.session_id == raw_lines("bash-tool.jsonl")[0]["session_id"]
    assert str(uuid.UUID(init.session_id)) == init.session_id
    assert isinstance(res, WireResultMessage) and res.session_id == init.session_id
    assert init.model == "claude-opus-5-5"
    assert init.permissionMode == "bypassPermissions"
    assert init.cwd is not None and init.cwd.endswith(CAPTURE_CWD)
    assert init.tools is not None and "Bash" in init.tools
    assert init.mcp_servers == []
    assert init.claude_code_version == "2.1.328"
    assert init.apiKeySource == "ANTHROPIC_API_KEY"
    # fields this SDK does not model are kept
    assert init.model_extra is not None
    socket_path = init.model_extra["messaging_socket_path"]
    assert socket_path.startswith("/tmp/cc-socks/") and socket_path.endswith(".sock")
    assert init.data["view_mode"] == "default"


def test_system_status() -> None:
    status = load("text-partial.jsonl")[1]
    assert isinstance(status, SystemMessage)
    assert status.subtype == "status" and status.status == "requesting"
    assert not status.is_init


def test_result_fields_typed() -> None:
    msgs = load("text-partial.jsonl")
    res, raw = msgs[-1], raw_lines("text-partial.jsonl")[-1]
    assert isinstance(res, WireResultMessage)
    assert res.subtype == "success"
    assert res.is_error is False and res.ok
    assert res.result == "Hello — ünïcode ✓ from the stub."
    assert res.total_cost_usd == pytest.approx(0.00028)
    assert isinstance(res.total_cost_usd, float)
    assert res.usage is not None and res.usage["output_tokens"] == 12
    # timings change with every capture: typed as ints, equal to the wire values
    assert res.duration_ms == raw["duration_ms"] and isinstance(res.duration_ms, int)
    assert res.duration_api_ms == raw["duration_api_ms"] and isinstance(res.duration_api_ms, int)
    assert 0 < res.duration_api_ms <= res.duration_ms
    assert res.num_turns == 1
    assert res.stop_reason == "end_turn"
    assert res.terminal_reason == "completed"
    assert res.permission_denials == []
    assert res.modelUsage is not None
    assert res.modelUsage["claude-opus-5-5"]["costUSD"] == pytest.approx(0.00028)
    assert res.session_id == msgs[0].session_id == raw["session_id"]  # type: ignore[union-attr]
    assert res.model_extra is not None and res.model_extra["ttft_ms"] == raw["ttft_ms"]
    assert isinstance(res.model_extra["ttft_ms"], int)


def test_error_result_fields() -> None:
    res = next(m for m in load("interrupt-multiturn.jsonl") if isinstance(m, WireResultMessage))
    assert res.subtype == "error_during_execution"
    assert res.is_error is True and not res.ok
    assert res.terminal_reason == "aborted_streaming"
    assert res.result is None
    assert res.stop_reason is None
    assert res.errors == [
        "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null"
    ]
    assert res.num_turns == 2


def test_stream_events_typed() -> None:
    msgs = load("text-partial.jsonl")
    start = msgs[2]
    assert isinstance(start, StreamEvent) and isinstance(start.event, MessageStartEvent)
    assert start.event.message.id == "msg_text_1"
    assert start.api_message_id == "msg_text_1"
    assert start.parent_tool_use_id is None
    bstart = msgs[3]
    assert isinstance(bstart, StreamEvent) and isinstance(bstart.event, ContentBlockStartEvent)
    assert isinstance(bstart.event.content_block, TextBlock)
    delta = msgs[4]
    assert isinstance(delta, StreamEvent) and isinstance(delta.event, ContentBlockDeltaEvent)
    assert isinstance(delta.event.delta, WireTextDelta) and delta.event.delta.text == "Hello "
    mdelta = msgs[-3]
    assert isinstance(mdelta, StreamEvent) and isinstance(mdelta.event, MessageDeltaEvent)
    assert mdelta.event.delta.stop_reason == "end_turn"


def test_assistant_and_user_blocks() -> None:
    msgs = load("bash-tool.jsonl")
    text, tool, user = msgs[1], msgs[2], msgs[3]
    assert isinstance(text, WireAssistantMessage)
    assert text.message_id == "msg_bash_1" and text.text == "Running a command."
    assert text.model == "claude-opus-5-5"
    assert isinstance(tool, WireAssistantMessage) and tool.message_id == "msg_bash_1"
    (use,) = tool.tool_uses
    assert isinstance(use, ToolUseBlock) and use.name == "Bash" and use.id == "toolu_01"
    assert use.input["command"] == BASH_COMMAND
    assert isinstance(user, WireUserMessage)
    (res,) = user.tool_results
    assert isinstance(res, ToolResultBlock)
    assert res.tool_use_id == "toolu_01" and res.content == "hi-from-bash\n42"
    assert res.is_error is False
    assert user.tool_use_result["stdout"] == "hi-from-bash\n42"
    assert user.model_extra is not None and "tool_result_meta" in user.model_extra


def test_aborted_assistant() -> None:
    msgs = load("interrupt-multiturn.jsonl")
    aborted = [m for m in msgs if isinstance(m, WireAssistantMessage) and m.aborted]
    assert len(aborted) == 1 and aborted[0].text == "one two three "


def test_control_messages() -> None:
    msgs = load("mcp-sdk-control.jsonl")
    requests = [m for m in msgs if isinstance(m, ControlRequest)]
    assert [
        r.request.message["method"] for r in requests if isinstance(r.request, McpMessageRequest)
    ] == [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call",
    ]
    for r in requests:
        assert isinstance(r.request, McpMessageRequest)
        assert r.request.server_name == "host"
        assert r.request_id and r.subtype == "mcp_message"
    call = requests[-1].request
    assert isinstance(call, McpMessageRequest)
    assert call.message["params"]["arguments"] == {"text": "ping"}
    assert call.message["id"] == 2
    resp = msgs[1]
    assert isinstance(resp, ControlResponse)
    assert resp.request_id == "req_init" and resp.subtype == "success" and not resp.is_error
    assert resp.response.response is not None and "commands" in resp.response.response

    stdin = load("interrupt-multiturn.stdin.jsonl")
    interrupt = stdin[1]
    assert isinstance(interrupt, ControlRequest) and isinstance(interrupt.request, InterruptRequest)
    assert interrupt.request_id == "req_int_1"
    init = load("mcp-sdk-control.stdin.jsonl")[0]
    assert isinstance(init, ControlRequest) and isinstance(init.request, InitializeRequest)


def test_can_use_tool_and_unknown_control_subtypes() -> None:
    m = parse_message(
        {
            "type": "control_request",
            "request_id": "r1",
            "request": {
                "subtype": "can_use_tool",
                "tool_name": "Bash",
                "input": {"command": "ls"},
                "permission_suggestions": [],
            },
        }
    )
    assert isinstance(m, ControlRequest) and m.subtype == "can_use_tool"
    assert m.request.tool_name == "Bash" and m.request.input == {"command": "ls"}  # type: ignore[union-attr]
    m = parse_message(
        {
            "type": "control_request",
            "request_id": "r2",
            "request": {"subtype": "hook_callback", "x": 1},
        }
    )
    assert isinstance(m, ControlRequest) and m.subtype == "hook_callback"
    assert m.request == {"subtype": "hook_callback", "x": 1}
    err = parse_message(json.loads(control_error("r3", "boom")))
    assert isinstance(err, ControlResponse) and err.is_error and err.response.error == "boom"


# ----------------------------------------------------------------------- unknown / lenient


def test_unknown_type_kept() -> None:
    obj = {"type": "tool_progress", "tool_use_id": "t1", "elapsed": 3, "_fields_set": 1}
    m = parse_message(obj)
    assert isinstance(m, UnknownMessage)
    assert m.type == "tool_progress" and m.raw is obj


def test_unknown_fields_kept_everywhere() -> None:
    m = parse_message(
        {
            "type": "assistant",
            "new_top": 1,
            "message": {
                "id": "m1",
                "new_msg": 2,
                "content": [
                    {"type": "text", "text": "hi", "citations": [{"x": 1}]},
                    {"type": "server_tool_use", "id": "s1", "name": "web_search"},
                    {"type": "redacted_thinking", "data": "xx"},
                ],
            },
        }
    )
    assert isinstance(m, WireAssistantMessage)
    assert m.model_extra == {"new_top": 1}
    assert m.message.model_extra == {"new_msg": 2}
    text, server, redacted = m.content
    assert isinstance(text, TextBlock) and text.model_extra == {"citations": [{"x": 1}]}
    assert server == {"type": "server_tool_use", "id": "s1", "name": "web_search"}
    assert redacted == {"type": "redacted_thinking", "data": "xx"}
    assert text.raw == {"type": "text", "text": "hi", "citations": [{"x": 1}]}


def test_unknown_stream_event_kept_raw() -> None:
    m = parse_message({"type": "stream_event", "event": {"type": "ping"}})
    assert isinstance(m, StreamEvent) and m.event == {"type": "ping"} and m.event_type == "ping"
    m = parse_message(
        {
            "type": "stream_event",
            "event": {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "citations_delta"},
            },
        }
    )
    assert isinstance(m, StreamEvent) and isinstance(m.event, ContentBlockDeltaEvent)
    assert m.event.delta == {"type": "citations_delta"}


def test_invalid_known_type_falls_back() -> None:
    obj = {"type": "result", "num_turns": "many"}
    m = parse_message(obj)
    assert isinstance(m, UnknownMessage) and m.type == "result" and m.raw is obj
    for bad in ({}, {"type": 5}, {"type": ["x"]}, {"type": None}):
        m = parse_message(bad)
        assert isinstance(m, UnknownMessage) and m.type == ""
    m = parse_message([1, 2])  # not even a dict
    assert isinstance(m, UnknownMessage) and m.raw == {"value": [1, 2]}


def test_minimal_messages_use_defaults() -> None:
    m = parse_message({"type": "result"})
    assert isinstance(m, WireResultMessage)
    assert m.is_error is False and m.subtype is None and m.usage is None
    m = parse_message({"type": "assistant"})
    assert isinstance(m, WireAssistantMessage) and m.content == [] and m.text == ""
    m = parse_message({"type": "user", "message": {"role": "user", "content": "hi"}})
    assert isinstance(m, WireUserMessage) and m.content == "hi" and m.tool_results == []
    m = parse_message({"type": "stream_event"})
    assert isinstance(m, StreamEvent) and m.event == {}
    m = parse_message({"type": "control_response"})
    assert isinstance(m, ControlResponse) and m.request_id is None


# ------------------------------------------------------------------------------ parser


def test_parser_skips_garbage_and_keeps_diagnostics() -> None:
    parser = LineParser(keep_skipped=2)
    data = (
        b"npm WARN something\n"
        b'{"type":"system","subtype":"init"}\r\n'
        b"\n   \n"
        b"[1,2,3]\n"
        b'"just a string"\n'
        b'{"type":"result","subtype":"success","is_error":false}\n'
        b"{broken\n"
        b'{"type":"brand_new","x":1}'
    )
    msgs = parser.feed(data)
    assert [kind(m) for m in msgs] == [SYS_INIT, OK]
    assert parser.pending_bytes > 0
    (last,) = parser.flush()
    assert isinstance(last, UnknownMessage) and last.type == "brand_new"
    assert parser.skipped == 4
    assert parser.parsed == 3
    assert [s.reason for s in parser.skipped_lines] == ["not a JSON object", "not JSON"]
    assert parser.skipped_lines[-1].preview == "{broken"


def test_parser_partial_lines_across_chunks() -> None:
    data = (FIXTURES / "interrupt-multiturn.jsonl").read_bytes()
    expected = [m.raw for m in load("interrupt-multiturn.jsonl")]
    for size in (1, 2, 7, 100, 4096):
        parser = LineParser()
        got: list[Message] = []
        for i in range(0, len(data), size):
            got += parser.feed(data[i : i + size])
        got += parser.flush()
        assert [m.raw for m in got] == expected, size
    # str chunks work too (multi-byte characters split anywhere)
    text = (FIXTURES / "text-partial.jsonl").read_text()
    parser = LineParser()
    got = []
    for i in range(0, len(text), 3):
        got += parser.feed(text[i : i + 3])
    assert [m.raw for m in got] == [m.raw for m in load("text-partial.jsonl")]


def test_parser_invalid_utf8_is_replaced_not_fatal() -> None:
    parser = LineParser()
    (m,) = parser.feed(
        b'{"type":"assistant","message":{"content":[{"type":"text","text":"a\xff\xfeb"}]}}\n'
    )
    assert isinstance(m, WireAssistantMessage) and m.text == "a\ufffd\ufffdb"


def test_parser_bom_and_memoryview() -> None:
    parser = LineParser()
    msgs = parser.feed(memoryview('\ufeff{"type":"result"}\n'.encode()))
    assert [kind(m) for m in msgs] == [("result", None)]
    assert parser.parse_line(bytearray(b'{"type":"result"}')) is not None


def test_parser_max_line_bytes() -> None:
    parser = LineParser(max_line_bytes=100)
    long_line = json.dumps({"type": "user", "pad": "x" * 500}).encode()
    ok = b'{"type":"result"}'
    # long line inside one chunk
    assert [kind(m) for m in parser.feed(long_line + b"\n" + ok + b"\n")] == [("result", None)]
    assert parser.skipped == 1
    # long line streamed in small chunks is dropped without being buffered whole
    got: list[Message] = []
    for i in range(0, len(long_line), 30):
        got += parser.feed(long_line[i : i + 30])
        assert parser.pending_bytes <= 100
    got += parser.feed(b"\n" + ok + b"\n")
    assert [kind(m) for m in got] == [("result", None)]
    assert parser.skipped == 2
    assert parser.skipped_lines[-1].reason == "line too long"
    assert parser.skipped_lines[-1].length == len(long_line)
    # and via parse_line
    assert parser.parse_line(long_line) is None and parser.skipped == 3
    with pytest.raises(ValueError):
        LineParser(max_line_bytes=0)


def test_parser_64_mib_line() -> None:
    big = "é" + "x" * (64 * 1024 * 1024)
    obj = {
        "type": "user",
        "message": {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t", "content": big}],
        },
    }
    line = json.dumps(obj, ensure_ascii=False).encode() + b"\n"
    assert len(line) > 64 * 1024 * 1024
    parser = LineParser()
    t0 = time.perf_counter()
    got: list[Message] = []
    chunk = 1 << 20
    for i in range(0, len(line), chunk):
        got += parser.feed(line[i : i + chunk])
    elapsed = time.perf_counter() - t0
    (m,) = got
    assert isinstance(m, WireUserMessage)
    (res,) = m.tool_results
    assert res.content == big
    assert parser.skipped == 0 and parser.pending_bytes == 0
    assert elapsed < 20  # linear, not quadratic
    # and as one chunk, one line
    parser = LineParser()
    m2 = parser.parse_line(line)
    assert isinstance(m2, WireUserMessage)


# ------------------------------------------------------------------------- accumulator


def test_accumulator_text_partial_counts_text_once() -> None:
    acc = accumulate(load("text-partial.jsonl"))
    assert acc.done
    assert acc.text == "Hello — ünïcode ✓ from the stub."
    assert acc.result is not None and acc.result.result == acc.text
    assert acc.tool_calls == [] and acc.tool_results == {}
    assert acc.is_error is False and acc.subtype == "success"
    assert acc.stop_reason == "end_turn"
    assert acc.session_id == raw_lines("text-partial.jsonl")[0]["session_id"]
    assert acc.message_ids == ["msg_text_1"]


def test_accumulator_bash_tool_without_partial_messages() -> None:
    acc = accumulate(load("bash-tool.jsonl"))
    assert acc.done and acc.is_error is False
    (call,) = acc.tool_calls
    assert call.id == "toolu_01" and call.name == "Bash"
    assert "echo hi-from-bash" in call.input["command"]
    assert call.complete
    res = acc.tool_results["toolu_01"]
    assert res.content == "hi-from-bash\n42" and res.is_error is False
    assert res.structured["stdout"] == "hi-from-bash\n42"
    assert acc.text == "Running a command.\n\nThe command printed hi."
    assert acc.text.endswith("The command printed hi.")
    assert acc.result is not None and acc.result.result == "The command printed hi."


def test_accumulator_interrupt_multiturn() -> None:
    first, second = split_turns(load("interrupt-multiturn.jsonl"))
    acc = accumulate(first)
    assert acc.done and acc.aborted
    assert acc.text == "one two three "
    assert acc.result is not None
    assert acc.result.subtype == "error_during_execution" and acc.is_error is True
    assert acc.result.terminal_reason == "aborted_streaming"
    acc2 = accumulate(second)
    assert acc2.text == "(end of scenario slow)" and acc2.is_error is False and not acc2.aborted


def test_accumulator_interrupted_midway_has_streamed_text() -> None:
    msgs = load("interrupt-multiturn.jsonl")
    acc = TurnAccumulator()
    for m in msgs[:7]:  # up to the third delta, before the CLI acknowledged the interrupt
        acc.add(m)
    assert acc.text == "one two three " and not acc.done


def test_accumulator_mcp_tool() -> None:
    acc = accumulate(load("mcp-sdk-control.jsonl"))
    (call,) = acc.tool_calls
    assert call.name == "mcp__host__echo" and call.input == {"text": "ping"}
    assert acc.tool_results["toolu_02"].content == [{"type": "text", "text": "echo: ping"}]
    assert acc.text == "Tool answered."


def test_accumulator_ignores_after_result() -> None:
    msgs = load("interrupt-multiturn.jsonl")
    acc = accumulate(msgs)  # both turns: the second is ignored
    assert acc.text == "one two three " and acc.subtype == "error_during_execution"


def _ev(event: dict[str, Any], mid: str = "msg_s", parent: str | None = None) -> dict[str, Any]:
    return {
        "type": "stream_event",
        "event": event,
        "api_message_id": mid,
        "parent_tool_use_id": parent,
    }


def test_accumulator_streamed_tool_use_and_thinking() -> None:
    tool_block = {"type": "tool_use", "id": "toolu_9", "name": "Read", "input": {}}
    full_tool = dict(tool_block, input={"file_path": "/etc/hosts", "limit": 2})
    lines: list[dict[str, Any]] = [
        {"type": "system", "subtype": "init", "session_id": "s1", "model": "m"},
        _ev({"type": "message_start", "message": {"id": "msg_s", "content": [], "model": "m"}}),
        _ev(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            }
        ),
        _ev(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm "},
            }
        ),
        _ev(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "ok"},
            }
        ),
        _ev(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig"},
            }
        ),
        {
            "type": "assistant",
            "message": {"id": "msg_s", "content": [{"type": "thinking", "thinking": "hmm ok"}]},
        },
        _ev({"type": "content_block_stop", "index": 0}),
        _ev(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        _ev(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "text_delta", "text": "Reading."},
            }
        ),
        {
            "type": "assistant",
            "message": {"id": "msg_s", "content": [{"type": "text", "text": "Reading."}]},
        },
        _ev({"type": "content_block_stop", "index": 1}),
        _ev({"type": "content_block_start", "index": 2, "content_block": tool_block}),
        _ev(
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            }
        ),
        _ev(
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": '{"file_path": "/etc/h'},
            }
        ),
        _ev(
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": 'osts", "limit": 2}'},
            }
        ),
        {"type": "assistant", "message": {"id": "msg_s", "content": [full_tool]}},
        _ev({"type": "content_block_stop", "index": 2}),
        _ev({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
        _ev({"type": "message_stop"}),
        # a sub-agent's chatter is not the turn's text
        _ev({"type": "message_start", "message": {"id": "msg_sub"}}, "msg_sub", parent="toolu_9"),
        _ev(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": "sub"},
            },
            "msg_sub",
            parent="toolu_9",
        ),
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_9",
                        "content": "denied",
                        "is_error": True,
                    }
                ],
            },
        },
        {
            "type": "assistant",
            "message": {"id": "msg_t", "content": [{"type": "text", "text": "Could not read."}]},
        },
        {"type": "result", "subtype": "success", "is_error": False, "result": "Could not read."},
    ]
    acc = accumulate([parse_message(o) for o in lines])
    assert acc.thinking == "hmm ok"
    assert acc.text == "Reading.\n\nCould not read."
    (call,) = acc.tool_calls
    assert call.input == {"file_path": "/etc/hosts", "limit": 2} and call.complete
    assert call.partial_json == '{"file_path": "/etc/hosts", "limit": 2}'
    assert acc.tool_results["toolu_9"].is_error is True
    assert acc.session_id == "s1" and acc.model == "m"

    sub = TurnAccumulator(include_subagents=True)
    sub.extend(parse_message(o) for o in lines)
    assert "sub" in sub.text


def test_accumulator_tool_input_from_deltas_when_no_assistant_copy() -> None:
    lines = [
        _ev({"type": "message_start", "message": {"id": "msg_x"}}),
        _ev(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}},
            }
        ),
        _ev(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"command":'},
            }
        ),
        _ev(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": ' "ls"}'},
            }
        ),
    ]
    acc = accumulate([parse_message(o) for o in lines])
    (call,) = acc.tool_calls
    assert call.input == {} and not call.complete and call.partial_json == '{"command": "ls"}'
    acc.add(parse_message(_ev({"type": "content_block_stop", "index": 0})))
    assert call.input == {"command": "ls"} and call.complete


# ----------------------------------------------------------------------------- control


def stdin_lines(name: str) -> list[dict[str, Any]]:
    return raw_lines(name)


def test_builders_reproduce_interrupt_stdin() -> None:
    expected = stdin_lines("interrupt-multiturn.stdin.jsonl")
    built = [
        user_message("count slowly"),
        interrupt_request("req_int_1"),
        user_message("second turn"),
    ]
    assert [json.loads(b) for b in built] == expected


def test_builders_reproduce_mcp_stdin() -> None:
    expected = stdin_lines("mcp-sdk-control.stdin.jsonl")
    replies = [e["response"]["response"]["mcp_response"] for e in expected[2:]]
    ids = [e["response"]["request_id"] for e in expected[2:]]
    built = [
        initialize_request("req_init"),
        user_message("use the echo tool"),
        *[mcp_response(rid, reply) for rid, reply in zip(ids, replies, strict=True)],
    ]
    assert [json.loads(b) for b in built] == expected
    assert replies[1] == {"jsonrpc": "2.0", "id": None, "result": {}}  # a notification's ack
    # and the ids are those the CLI asked with
    cli = [m for m in load("mcp-sdk-control.jsonl") if isinstance(m, ControlRequest)]
    assert [r.request_id for r in cli] == ids


def test_builders_are_compact_single_lines() -> None:
    for line in (
        user_message("multi\nline\r\nprompt \u2028 ünïcode \ud800"),
        interrupt_request(new_request_id()),
        initialize_request("r", hooks={"PreToolUse": []}),
        mcp_response("r", {"jsonrpc": "2.0", "id": 1, "result": {"text": "a\nb"}}),
        control_error("r", "no such server"),
    ):
        assert "\n" not in line and "\r" not in line and ", " not in line and ": " not in line
        assert line.isascii()
        line.encode("utf-8")
    assert json.loads(user_message("x\ny"))["message"]["content"] == "x\ny"


def test_builder_forms() -> None:
    assert json.loads(user_message(
        [{"type": "text", "text": "hi"}], session_id="s", parent_tool_use_id="p"
    )) == {
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        "parent_tool_use_id": "p",
        "session_id": "s",
    }
    assert json.loads(initialize_request("r")) == {
        "type": "control_request",
        "request_id": "r",
        "request": {"subtype": "initialize", "hooks": None},
    }
    assert json.loads(mcp_response("r", {"jsonrpc": "2.0", "id": 3, "result": {}})) == {
        "type": "control_response",
        "response": {
            "subtype": "success",
            "request_id": "r",
            "response": {"mcp_response": {"jsonrpc": "2.0", "id": 3, "result": {}}},
        },
    }
    assert json.loads(control_error("r", "bad")) == {
        "type": "control_response",
        "response": {"subtype": "error", "request_id": "r", "error": "bad"},
    }
    assert json.loads(control_success("r"))["response"]["response"] == {}
    assert json.loads(control_success("r", {"behavior": "allow"})) == control_success_dict(
        "r", {"behavior": "allow"})
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("req_") for i in ids)


def test_built_lines_parse_back() -> None:
    m = parse_message(json.loads(interrupt_request("abc")))
    assert isinstance(m, ControlRequest) and isinstance(m.request, InterruptRequest)
    assert m.request_id == "abc"
    m = parse_message(json.loads(mcp_response("abc", {"jsonrpc": "2.0", "id": 1, "result": {}})))
    assert isinstance(m, ControlResponse) and m.request_id == "abc"
    assert m.response.response == {"mcp_response": {"jsonrpc": "2.0", "id": 1, "result": {}}}


def test_thinking_block_model() -> None:
    m = parse_message(
        {
            "type": "assistant",
            "message": {"content": [{"type": "thinking", "thinking": "t", "signature": "s"}]},
        }
    )
    assert isinstance(m, WireAssistantMessage)
    (b,) = m.content
    assert isinstance(b, ThinkingBlock) and b.thinking == "t" and b.signature == "s"
