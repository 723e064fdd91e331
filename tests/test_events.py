"""The public events (dockercc.events) against the real CLI 2.1.328 transcripts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from dockercc._mapper import EventMapper
from dockercc.errors import AgentError
from dockercc.events import (
    AssistantMessage,
    BaseEvent,
    ErrorEvent,
    Event,
    RawEvent,
    Result,
    SystemEvent,
    SystemInit,
    TextBlock,
    TextDelta,
    ThinkingDelta,
    ToolResult,
    ToolUse,
    UserMessage,
    text_of,
)
from dockercc.protocol import (
    MESSAGE_TYPES,
    Envelope,
    TurnAccumulator,
    WireResultMessage,
    parse_message,
)

SESSION = "sess-1"

needs_fixtures = pytest.mark.usefixtures("cli_fixtures")


def fixture_objects(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]


def envelopes(objects: list[dict[str, Any]], start: int = 1) -> list[Envelope]:
    return [Envelope(seq=i, ts=1_000 + i, event=obj) for i, obj in enumerate(objects, start)]


def run(objects: list[dict[str, Any]], mapper: EventMapper | None = None) -> list[Event]:
    mapper = mapper or EventMapper(SESSION)
    return [event for env in envelopes(objects) for event in mapper.map(env)]


def of(events: list[Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def by_seq(events: list[Event]) -> dict[int, list[Event]]:
    out: dict[int, list[Event]] = {}
    for e in events:
        out.setdefault(e.seq, []).append(e)
    return out


def stream(event: dict[str, Any], message_id: str | None = "msg_s1",
           parent: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "stream_event", "event": event, "session_id": "cs",
                            "parent_tool_use_id": parent}
    if message_id is not None:
        line["api_message_id"] = message_id
    return line


def assistant(message_id: str, *content: dict[str, Any], parent: str | None = None,
              **extra: Any) -> dict[str, Any]:
    return {"type": "assistant", "message": {"id": message_id, "type": "message",
                                             "role": "assistant", "model": "m",
                                             "content": list(content)},
            "parent_tool_use_id": parent, "session_id": "cs", **extra}


def result_line(**extra: Any) -> dict[str, Any]:
    return {"type": "result", "subtype": "success", "is_error": False, "session_id": "cs",
            "num_turns": 1, "total_cost_usd": 0.5, "duration_ms": 10, **extra}


def streamed_tool(message_id: str, tool_id: str, fragments: list[str],
                  *, assistant_before_stop: bool,
                  full: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A streamed message: text, then a tool_use block whose input arrives in fragments."""
    lines = [
        stream({"type": "message_start", "message": {"id": message_id, "model": "m",
                                                     "content": []}}),
        stream({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}, message_id),
        stream({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "Let me look."}}, message_id),
        stream({"type": "content_block_stop", "index": 0}, message_id),
        stream({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": tool_id, "name": "Read",
                                  "input": {}}}, message_id),
    ]
    lines += [stream({"type": "content_block_delta", "index": 1,
                      "delta": {"type": "input_json_delta", "partial_json": part}}, message_id)
              for part in fragments]
    full = json.loads("".join(fragments)) if full is None else full
    copies = [assistant(message_id, {"type": "text", "text": "Let me look."}),
              assistant(message_id, {"type": "tool_use", "id": tool_id, "name": "Read",
                                     "input": full})]
    stop = stream({"type": "content_block_stop", "index": 1}, message_id)
    lines += [*copies, stop] if assistant_before_stop else [stop, *copies]
    lines += [
        stream({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 7}}, message_id),
        stream({"type": "message_stop"}, message_id),
    ]
    return lines


# ------------------------------------------------------------------------------ fixtures


@needs_fixtures
def test_text_partial() -> None:
    events = run(fixture_objects("text-partial.jsonl"))
    results = of(events, Result)
    assert len(results) == 1
    result = results[0]
    deltas = of(events, TextDelta)
    assert len(deltas) == 7
    assert text_of(events) == result.text == "Hello — ünïcode ✓ from the stub."
    assert str(result) == result.text
    assert result.ok and not result.is_error and not result.interrupted
    assert result.subtype == "success" and result.terminal_reason == "completed"
    assert result.stop_reason == "end_turn"
    assert result.cost_usd == pytest.approx(0.00028)
    assert result.total_cost_usd == result.cost_usd
    assert result.usage["output_tokens"] == 12
    # timings and the session id change with every capture: compare with the wire values
    raw = fixture_objects("text-partial.jsonl")
    assert result.duration_ms == raw[-1]["duration_ms"] > 0
    assert result.duration_api_ms == raw[-1]["duration_api_ms"] > 0
    assert result.num_turns == 1
    assert result.session_id == raw[0]["session_id"] == raw[-1]["session_id"]
    assert result.model == "claude-opus-5-5"
    assert result.tool_calls == [] and result.errors == []
    assert result.provider == "docker-claude-code"
    assert result.raw["type"] == "result"
    # the assistant line passes through but adds no text
    seqs = by_seq(events)
    (msg,) = of(events, AssistantMessage)
    assert seqs[msg.seq] == [msg]
    assert msg.text == result.text and msg.message_id == "msg_text_1"
    # message_start / content_block_start / stop / message_delta / message_stop: nothing
    for seq in (3, 4, 13, 14, 15):
        assert seq not in seqs
    init = of(events, SystemInit)[0]
    assert init.claude_session_id == result.session_id
    assert "Bash" in init.tools and init.permission_mode == "default"
    assert init.cwd.endswith("/dockercc-capture/work")  # where the capture script runs the CLI
    assert init.data is init.raw
    (status,) = of(events, SystemEvent)
    assert status.subtype == "status" and status.data["status"] == "requesting"


@needs_fixtures
def test_bash_tool_without_partial_messages() -> None:
    events = run(fixture_objects("bash-tool.jsonl"))
    (tool,) = of(events, ToolUse)
    assert tool.name == "Bash" and tool.id == "toolu_01"
    assert tool.input["command"] == "echo hi-from-bash && echo $((6 * 7))"
    assert tool.message_id == "msg_bash_1"
    (tool_result,) = of(events, ToolResult)
    assert tool_result.tool_use_id == "toolu_01" and tool_result.tool_name == "Bash"
    assert "hi-from-bash" in tool_result.text and not tool_result.is_error
    assert tool_result.structured["stdout"].startswith("hi-from-bash")
    (result,) = of(events, Result)
    assert result.tool_calls == [tool]
    assert result.tool_calls[0].input == {"command": "echo hi-from-bash && echo $((6 * 7))",
                                          "description": "say hi"}
    assert result.text == "The command printed hi." and result.num_turns == 2
    # without partial messages the text comes from the assistant lines, each once
    assert text_of(events) == "Running a command.\n\nThe command printed hi."
    assert len(of(events, AssistantMessage)) == 3
    assert events.index(tool) < events.index(tool_result) < events.index(result)


@needs_fixtures
def test_interrupt_then_second_turn() -> None:
    mapper = EventMapper(SESSION)
    events = run(fixture_objects("interrupt-multiturn.jsonl"), mapper)
    first, second = of(events, Result)
    assert first.subtype == "error_during_execution" and first.is_error
    assert first.interrupted and not first.ok
    assert first.terminal_reason == "aborted_streaming"
    assert first.text == "one two three "
    assert first.errors and "ede_diagnostic" in first.errors[0]
    assert second.ok and not second.interrupted
    assert second.text == "(end of scenario slow)"
    assert second.raise_for_error() is second
    # deltas of each turn add up to that turn's text
    cut = events.index(first)
    assert text_of(events[:cut]) == first.text
    assert text_of(events[cut:]) == second.text
    with pytest.raises(AgentError) as info:
        first.raise_for_error()
    assert info.value.result == first
    (note,) = of(events, UserMessage)
    assert note.text == "[Request interrupted by user]"
    aborted = [m for m in of(events, AssistantMessage) if m.aborted]
    assert [m.message_id for m in aborted] == ["msg_slow_1"]
    # the control_response (line 8) gives nothing; the turn state was reset after each result
    assert 8 not in by_seq(events)
    assert mapper.turn.result is None and mapper.turn.text == ""
    assert mapper.last_turn is not None and mapper.last_turn.text == second.text
    assert mapper.last_result is second
    assert mapper.last_seq == 27


@needs_fixtures
def test_mcp_sdk_control() -> None:
    objects = fixture_objects("mcp-sdk-control.jsonl")
    events = run(objects)
    (tool,) = of(events, ToolUse)
    assert tool.name == "mcp__host__echo" and tool.input == {"text": "ping"}
    (tool_result,) = of(events, ToolResult)
    assert tool_result.text == "echo: ping" and tool_result.tool_use_id == tool.id
    assert isinstance(tool_result.content, list)
    control = {i for i, obj in enumerate(objects, 1)
               if obj["type"] in ("control_request", "control_response")}
    assert control and not control & set(by_seq(events))
    (result,) = of(events, Result)
    assert [t.name for t in result.tool_calls] == ["mcp__host__echo"]
    assert result.text == "Tool answered."


@needs_fixtures
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.jsonl")
                                        if not p.name.endswith(".stdin.jsonl")))
def test_every_event_carries_session_and_seq(name: str) -> None:
    objects = fixture_objects(name)
    events = run(objects)
    assert events
    assert not of(events, RawEvent)
    for event in events:
        assert isinstance(event, BaseEvent)
        assert event.session == SESSION
        assert 1 <= event.seq <= len(objects) and event.ts == 1_000 + event.seq
        assert event.raw is objects[event.seq - 1]
        assert "raw=" not in repr(event)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len(of(events, Result)) == sum(obj["type"] == "result" for obj in objects)


@needs_fixtures
def test_events_round_trip_through_the_union() -> None:
    adapter: TypeAdapter[Event] = TypeAdapter(Event)
    for name in ("bash-tool.jsonl", "interrupt-multiturn.jsonl"):
        for event in run(fixture_objects(name)):
            back = adapter.validate_python(event.model_dump())
            assert type(back) is type(event)
            assert back == event


# ------------------------------------------------------------------------ synthetic


@pytest.mark.parametrize("assistant_before_stop", [False, True])
def test_streamed_tool_use_is_emitted_once(assistant_before_stop: bool) -> None:
    fragments = ['{"file_', 'path": "/etc/', 'hosts", "limit"', ": 3}"]
    lines = streamed_tool("msg_t1", "toolu_9", fragments,
                          assistant_before_stop=assistant_before_stop)
    lines += [
        {"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_9",
             "content": [{"type": "text", "text": "127.0.0.1"},
                         {"type": "text", "text": "::1"}], "is_error": False}]}},
        result_line(result=""),
    ]
    mapper = EventMapper(SESSION)
    events = run(lines, mapper)
    (tool,) = of(events, ToolUse)
    assert tool.id == "toolu_9" and tool.name == "Read" and tool.message_id == "msg_t1"
    assert tool.input == {"file_path": "/etc/hosts", "limit": 3}
    if not assistant_before_stop:  # complete at its content_block_stop
        assert tool.raw["event"] == {"type": "content_block_stop", "index": 1}
    (tool_result,) = of(events, ToolResult)
    assert tool_result.text == "127.0.0.1\n::1" and tool_result.tool_name == "Read"
    # the text was streamed once; the assistant copies add none
    assert [d.text for d in of(events, TextDelta)] == ["Let me look."]
    (result,) = of(events, Result)
    assert result.text == "Let me look."  # empty CLI result: the accumulated text
    assert result.tool_calls == [tool]
    assert result.stop_reason is not None


def test_streamed_tool_use_with_bad_json_falls_back_to_the_assistant_copy() -> None:
    lines = streamed_tool("msg_t2", "toolu_b", ['{"file_path": "/x"'],
                          assistant_before_stop=False, full={"file_path": "/x"})
    # the stream's fragments alone are not valid JSON: nothing at content_block_stop
    events = run([line for line in lines if line["type"] != "assistant"])
    assert not of(events, ToolUse)
    events = run(lines)
    (tool,) = of(events, ToolUse)
    assert tool.input == {"file_path": "/x"} and tool.raw["type"] == "assistant"


def test_tool_use_with_empty_input() -> None:
    lines = [
        stream({"type": "message_start", "message": {"id": "msg_e", "content": []}}, None),
        stream({"type": "content_block_start", "index": 0, "content_block":
                {"type": "tool_use", "id": "toolu_e", "name": "ListAgents", "input": {}}}, None),
        stream({"type": "content_block_stop", "index": 0}, None),
        assistant("msg_e", {"type": "tool_use", "id": "toolu_e", "name": "ListAgents",
                            "input": {}}),
        assistant("msg_f", {"type": "tool_use", "id": "toolu_f", "name": "CronList",
                            "input": {}}),
        result_line(),
    ]
    events = run(lines)
    assert [(t.id, t.input, t.message_id) for t in of(events, ToolUse)] == [
        ("toolu_e", {}, "msg_e"), ("toolu_f", {}, "msg_f")]
    assert [t.id for t in of(events, Result)[0].tool_calls] == ["toolu_e", "toolu_f"]


def test_thinking_deltas() -> None:
    lines = [
        stream({"type": "message_start", "message": {"id": "msg_k", "content": []}}, "msg_k"),
        stream({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": ""}}, "msg_k"),
        stream({"type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm, "}}, "msg_k"),
        stream({"type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "yes"}}, "msg_k"),
        stream({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig"}}, "msg_k"),
        assistant("msg_k", {"type": "thinking", "thinking": "hmm, yes", "signature": "sig"}),
        # not streamed: the assistant line's thinking becomes one delta
        assistant("msg_l", {"type": "thinking", "thinking": "later"},
                  {"type": "text", "text": "ok"}),
        result_line(result="ok"),
    ]
    events = run(lines)
    thinking = of(events, ThinkingDelta)
    assert [(t.text, t.message_id) for t in thinking] == [
        ("hmm, ", "msg_k"), ("yes", "msg_k"), ("later", "msg_l")]
    assert text_of(events) == "ok"
    (result,) = of(events, Result)
    assert result.thinking == "hmm, yes\n\nlater"
    assert of(events, AssistantMessage)[0].thinking == "hmm, yes"


def test_subagent_messages_are_marked_and_kept_out_of_the_answer() -> None:
    lines = [
        assistant("msg_a", {"type": "tool_use", "id": "toolu_task", "name": "Task",
                            "input": {"prompt": "look"}}),
        assistant("msg_sub", {"type": "text", "text": "sub text"},
                  {"type": "tool_use", "id": "toolu_sub", "name": "Read", "input": {"p": 1}},
                  parent="toolu_task"),
        {"type": "user", "parent_tool_use_id": "toolu_task", "message": {"role": "user",
         "content": [{"type": "tool_result", "tool_use_id": "toolu_sub", "content": "x"}]}},
        {"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_task", "content": "done"}]}},
        assistant("msg_b", {"type": "text", "text": "main text"}),
        result_line(result="main text"),
    ]
    events = run(lines)
    assert text_of(events) == "main text"
    assert [(t.name, t.parent_tool_use_id) for t in of(events, ToolUse)] == [
        ("Task", None), ("Read", "toolu_task")]
    assert [(r.tool_name, r.parent_tool_use_id) for r in of(events, ToolResult)] == [
        ("Read", "toolu_task"), ("Task", None)]
    assert [t.name for t in of(events, Result)[0].tool_calls] == ["Task"]
    events = run(lines, EventMapper(SESSION, include_subagents=True))
    assert text_of(events) == "sub text\n\nmain text"
    assert [t.name for t in of(events, Result)[0].tool_calls] == ["Task", "Read"]


def test_tool_use_is_not_repeated_across_a_stray_late_line() -> None:
    call = assistant("msg_x", {"type": "tool_use", "id": "toolu_x", "name": "Bash",
                               "input": {"command": "ls"}})
    events = run([call, result_line(), call])
    assert len(of(events, ToolUse)) == 1
    assert len(of(events, AssistantMessage)) == 2


def test_aborted_assistant_tool_use_is_not_emitted() -> None:
    lines = [assistant("msg_ab", {"type": "tool_use", "id": "toolu_ab", "name": "Bash",
                                  "input": {"command": "sl"}}, aborted=True),
             result_line(subtype="error_during_execution", is_error=True,
                         terminal_reason="aborted_tools")]
    events = run(lines)
    assert not of(events, ToolUse)
    (result,) = of(events, Result)
    assert result.interrupted and not result.ok


def test_user_line_with_results_and_a_note() -> None:
    line = {"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "Interrupted", "is_error": True},
        {"type": "tool_result", "tool_use_id": "t2"},
        {"type": "text", "text": "[Request interrupted by user for tool use]"}]},
        "tool_use_result": "Error: interrupted"}
    events = run([line])
    first, second = of(events, ToolResult)
    assert first.is_error and first.text == "Interrupted" and first.structured is None
    assert second.content == "" and not second.is_error and second.tool_name is None
    (note,) = of(events, UserMessage)
    assert note.text == "[Request interrupted by user for tool use]"
    assert isinstance(note.content, list) and isinstance(note.content[0], TextBlock)


# -------------------------------------------------------------------- runner & pool


def test_runner_and_pool_events() -> None:
    mapper = EventMapper(SESSION)
    lines: list[dict[str, Any]] = [
        {"type": "dockercc", "subtype": "started", "container": "c1", "pid": 7, "restarts": 0},
        {"type": "dockercc", "subtype": "warning", "warning": "line_too_long", "limit": 10},
        stream({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "lost "}}),
        {"type": "dockercc", "subtype": "error", "error": "cli_exited", "exit_code": 137,
         "restart": True, "stderr_tail": "Killed"},
        {"type": "dockercc", "subtype": "error", "error": "container_lost",
         "message": "container c1 stopped heartbeating", "reason": "heartbeat"},
        assistant("msg_n", {"type": "text", "text": "fresh"}),
        result_line(result=""),
    ]
    events = run(lines, mapper)
    started, warning = of(events, SystemEvent)
    assert started.subtype == "dockercc.started" and started.data["pid"] == 7
    assert warning.subtype == "dockercc.warning" and warning.data["warning"] == "line_too_long"
    exited, lost = of(events, ErrorEvent)
    assert exited.error == "cli_exited" and exited.exit_code == 137 and exited.restart
    assert exited.stderr_tail == "Killed" and "137" in exited.message
    assert lost.error == "container_lost" and not lost.restart and lost.reason == "heartbeat"
    assert lost.message == "container c1 stopped heartbeating" and lost.exit_code is None
    # the turn in flight was dropped: its text does not leak into the next result
    assert mapper.last_turn is not None
    assert of(events, Result)[0].text == "fresh"


# --------------------------------------------------------------------------- garbage


def test_unknown_and_malformed_lines_become_raw_events() -> None:
    lines: list[dict[str, Any]] = [
        {"type": "rate_limit_event", "info": {"x": 1}},
        {"no_type": True},
        {"type": "result", "is_error": "very"},
        {"type": "assistant", "message": "nope"},
        stream({"type": "error", "error": {"type": "overloaded_error"}}),
        stream({"type": "ping"}),
    ]
    events = run(lines)
    raws = of(events, RawEvent)
    assert raws == events
    assert [(e.seq, e.wire_type) for e in raws] == [
        (1, "rate_limit_event"), (2, ""), (3, "result"), (4, "assistant"), (5, "stream_event")]
    assert "unknown" in raws[0].reason and "malformed" in raws[2].reason
    assert events[0].raw is lines[0]


def test_a_non_dict_event_or_bad_seq_never_raises() -> None:
    mapper = EventMapper(SESSION)
    odd: list[Any] = [
        Envelope(seq=1, ts=0, event=["not", "a", "dict"]),  # type: ignore[arg-type]
        Envelope(seq="x", ts=None, event={"type": "user"}),  # type: ignore[arg-type]
        Envelope(seq=3, ts=0, event={"type": "dockercc", "subtype": "error", "exit_code": "?"}),
        object(),
    ]
    for env in odd:
        (event,) = mapper.map(env)
        assert isinstance(event, BaseEvent) and event.session == SESSION
    assert mapper.last_seq == 3


def test_standalone_result_from_turn() -> None:
    acc = TurnAccumulator()
    acc.add(parse_message(assistant("m1", {"type": "text", "text": "partial"},
                                    {"type": "tool_use", "id": "t", "name": "Bash",
                                     "input": {"command": "ls"}}, aborted=True)))
    msg = parse_message(result_line(subtype="error_during_execution", is_error=True,
                                    terminal_reason="aborted_streaming", duration_ms=12.7,
                                    errors=["boom", {"code": 1}], api_error_status=529,
                                    modelUsage={"claude-x": {}}))
    assert isinstance(msg, WireResultMessage)
    result = Result.from_turn(msg, acc, session="s", seq=9, ts=5)
    assert str(result) == "partial" and result.interrupted and not result.ok
    assert result.duration_ms == 12 and result.errors == ["boom", '{"code": 1}']
    assert result.api_error_status == 529 and result.model == "m"
    assert [(t.name, t.seq, t.session) for t in result.tool_calls] == [("Bash", 9, "s")]
    with pytest.raises(AgentError, match="529"):
        result.raise_for_error()
    bare = Result.from_turn(msg)
    assert bare.text == "" and bare.model == "claude-x" and not bare.tool_calls


FUZZ = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats() | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)
type_names = st.sampled_from([*MESSAGE_TYPES, "dockercc", "unknown_thing", ""])
known_keys = st.sampled_from(["subtype", "message", "event", "content", "content_block",
                              "delta", "index", "id", "type", "error", "exit_code", "restart",
                              "result", "api_message_id", "parent_tool_use_id", "input",
                              "partial_json", "tool_use_id", "aborted", "usage"])


@st.composite
def garbage_events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8) | known_keys, json_values,
                                                 max_size=6))
    event["type"] = draw(type_names | json_values)
    if draw(st.booleans()):  # nest plausible-looking structures
        event[draw(known_keys)] = draw(st.dictionaries(known_keys, json_values, max_size=5))
    return event


FIXTURE_OBJECTS: list[dict[str, Any]] = (
    [obj for p in sorted(FIXTURES.glob("*.jsonl")) for obj in fixture_objects(p.name)]
    if FIXTURES.is_dir() else [])


@st.composite
def mutated_fixture_events(draw: st.DrawFn) -> dict[str, Any]:
    if not FIXTURE_OBJECTS:
        return draw(garbage_events())
    obj = json.loads(json.dumps(draw(st.sampled_from(FIXTURE_OBJECTS))))
    target = obj
    for _ in range(draw(st.integers(0, 3))):  # walk into a nested dict, then break it
        nested = [k for k, v in target.items() if isinstance(v, dict)]
        if not nested:
            break
        target = target[draw(st.sampled_from(nested))]
    if target:
        key = draw(st.sampled_from(sorted(target)))
        if draw(st.booleans()):
            del target[key]
        else:
            target[key] = draw(json_values)
    return obj


@FUZZ
@given(st.lists(st.tuples(st.integers(-5, 2**40), st.integers(-5, 2**40),
                          garbage_events() | mutated_fixture_events()), max_size=6))
def test_garbage_never_raises(items: list[tuple[int, int, dict[str, Any]]]) -> None:
    mapper = EventMapper(SESSION)
    for seq, ts, event in items:
        out = mapper.map(Envelope(seq=seq, ts=ts, event=event))
        for e in out:
            assert isinstance(e, BaseEvent)
            assert e.session == SESSION and e.seq == seq
            repr(e)
        if isinstance(event.get("type"), str) and event["type"] not in (*MESSAGE_TYPES,
                                                                        "dockercc"):
            assert [type(e) for e in out] == [RawEvent]


# ------------------------------------------------------------ one name, one class; one state


def test_each_public_name_is_one_class() -> None:
    """A name the package exports (``dockercc.X``, ``dockercc.events.X``) is the same object
    wherever ``dockercc.protocol`` exports it too: the wire models that would share a name
    carry a ``Wire`` prefix (``WireTextDelta``), the content blocks are shared."""
    import dockercc
    import dockercc.events
    import dockercc.protocol

    public = {name: getattr(dockercc, name) for name in dockercc.__all__}
    public.update({name: getattr(dockercc.events, name) for name in dockercc.events.__all__})
    shared = set(public) & set(dockercc.protocol.__all__)
    assert {"TextBlock", "ToolUseBlock"} <= shared  # (the check sees something)
    for name in shared:
        assert getattr(dockercc.protocol, name) is public[name], name
    for name in ("TextDelta", "ThinkingDelta", "AssistantMessage", "UserMessage",
                 "ResultMessage", "ToolResult"):
        assert name not in dir(dockercc.protocol), name
        assert getattr(dockercc, name) is getattr(dockercc.events, name)


def test_empty_tool_input_is_final_for_the_mapper_and_the_accumulator() -> None:
    """An assistant line's ``input`` is the call's whole input, ``{}`` included (the CLI
    writes what it parsed: see the accumulator's docstring); a streamed block with no input
    fragments keeps its placeholder ``{}``. Mapper and accumulator say the same, at once."""
    lines = [
        stream({"type": "message_start", "message": {"id": "msg_e", "content": []}}, None),
        stream({"type": "content_block_start", "index": 0, "content_block":
                {"type": "tool_use", "id": "toolu_e", "name": "ListAgents", "input": {}}}, None),
        stream({"type": "content_block_stop", "index": 0}, None),
        assistant("msg_f", {"type": "tool_use", "id": "toolu_f", "name": "CronList",
                            "input": {}}),
    ]
    mapper = EventMapper(SESSION)
    events = [e for i, line in enumerate(lines, 1)
              for e in mapper.map(Envelope(seq=i, ts=0, event=line))]
    calls = {c.id: c for c in mapper.turn.tool_calls}
    assert [(t.id, t.input) for t in of(events, ToolUse)] == [("toolu_e", {}), ("toolu_f", {})]
    assert all(c.complete and c.input == {} for c in calls.values()) and len(calls) == 2


def test_subagent_tool_calls_are_events_but_not_turn_calls_without_include_subagents() -> None:
    """The accumulator keeps the state of a sub-agent's streamed call (the mapper emits its
    ToolUse from it) but leaves it out of ``tool_calls`` and the text."""
    parent = "toolu_task"
    lines = [
        stream({"type": "message_start", "message": {"id": "msg_s", "content": []}}, None,
               parent=parent),
        stream({"type": "content_block_start", "index": 0, "content_block":
                {"type": "tool_use", "id": "toolu_sub", "name": "Read", "input": {}}}, None,
               parent=parent),
        stream({"type": "content_block_delta", "index": 0, "delta":
                {"type": "input_json_delta", "partial_json": '{"file_path": "/a"}'}}, None,
               parent=parent),
        stream({"type": "content_block_stop", "index": 0}, None, parent=parent),
        result_line(),
    ]
    for include in (False, True):
        mapper = EventMapper(SESSION, include_subagents=include)
        events = [e for i, line in enumerate(lines, 1)
                  for e in mapper.map(Envelope(seq=i, ts=0, event=line))]
        (tool,) = of(events, ToolUse)
        assert (tool.id, tool.input, tool.parent_tool_use_id) == (
            "toolu_sub", {"file_path": "/a"}, parent)
        assert mapper.last_turn is not None
        assert [c.id for c in mapper.last_turn.tool_calls] == (["toolu_sub"] if include else [])
        assert [t.id for t in of(events, Result)[0].tool_calls] == (
            ["toolu_sub"] if include else [])
