"""The fast path for stream deltas gives exactly what the wire models give.

Nearly every line of a streamed turn is a ``stream_event`` ``content_block_delta``;
:class:`~dockercc._mapper.EventMapper` reads well-formed ones straight from the decoded dict
(:func:`~dockercc.protocol.stream_delta`, :meth:`TurnAccumulator.add_delta`) instead of
validating them into models. Every test here maps the same envelopes twice, with the fast
path and without it (``_fast_deltas = False``: every line through ``parse_message``), and
compares the events and the whole turn state: the real CLI transcripts, text / thinking /
tool-input deltas, unicode and escaped text, sub-agents, and malformed or unknown deltas
(which must take the slow path, and never raise).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockercc._mapper import EventMapper
from dockercc.events import (
    Event,
    RawEvent,
    Result,
    TextDelta,
    ThinkingDelta,
    ToolUse,
    text_of,
)
from dockercc.protocol import Envelope, TurnAccumulator, parse_message, stream_delta
from dockercc.protocol import messages as wire
from dockercc.protocol.envelope import SEQ_MAX

SESSION = "sess-fast"


# ------------------------------------------------------------------------------ helpers


def envelopes(objects: list[Any]) -> list[Envelope]:
    return [Envelope(seq=i, ts=5_000 + i, event=obj) for i, obj in enumerate(objects, 1)]


def acc_state(acc: TurnAccumulator | None) -> Any:
    """Everything a TurnAccumulator holds, comparable with ==."""
    if acc is None:
        return None
    return {
        "text": acc.text,
        "thinking": acc.thinking,
        "tool_calls": acc.tool_calls,
        "tool_results": acc.tool_results,
        "result": acc.result,
        "session_id": acc.session_id,
        "model": acc.model,
        "stop_reason": acc.stop_reason,
        "aborted": acc.aborted,
        "message_ids": acc.message_ids,
        "msgs": {k: (v.streamed, v.listed) for k, v in acc._msgs.items()},
        "blocks": {k: (v.kind, v.tool_id, v.partial) for k, v in acc._blocks.items()},
        "current": acc._current,
        "anon_ids": acc._anon_ids,
        "last_message": acc.last_message,
        "last_tool_ids": acc.last_tool_ids,
        "all_tools": {k: (v.name, v.input, v.message_id, v.parent_tool_use_id, v.partial_json,
                          v.complete) for k, v in acc._tools.items()},
        "text_parts": acc._text_parts,
        "text_msg": acc._text_msg,
        "thinking_parts": acc._thinking_parts,
        "thinking_msg": acc._thinking_msg,
        "anon": acc._anon,
    }


def mapper_state(m: EventMapper) -> Any:
    return {
        "turn": acc_state(m.turn),
        "last_turn": acc_state(m.last_turn),
        "last_result": m.last_result,
        "last_seq": m.last_seq,
        "dirty": m._dirty,
        "tools": m._tools,
        "previous_tools": m._previous_tools,
    }


def same_events(fast: list[Event], slow: list[Event]) -> None:
    assert [type(e) for e in fast] == [type(e) for e in slow]
    for a, b in zip(fast, slow, strict=True):
        assert a == b
        assert a.raw is b.raw
        assert a.model_fields_set == b.model_fields_set
        assert repr(a) == repr(b)
        assert a.model_dump() == b.model_dump()


def both_paths(objects: list[Any], **kwargs: Any) -> tuple[list[Event], EventMapper]:
    """Map ``objects`` with and without the fast path; assert the same events after every
    envelope and the same final state; return the events and the fast mapper."""
    fast = EventMapper(SESSION, **kwargs)
    slow = EventMapper(SESSION, **kwargs)
    slow._fast_deltas = False
    out: list[Event] = []
    for env in envelopes(objects):
        got = fast.map(env)
        same_events(got, slow.map(env))
        assert mapper_state(fast) == mapper_state(slow)
        out += got
    return out, fast


def stream(event: Any, message_id: str | None = "msg_f1", parent: str | None = None,
           **extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"type": "stream_event", "event": event, "session_id": "cs",
                            "parent_tool_use_id": parent, **extra}
    if message_id is not None:
        line["api_message_id"] = message_id
    return line


def delta(kind: str, value: Any, index: int = 0, **extra: Any) -> dict[str, Any]:
    key = {"text_delta": "text", "thinking_delta": "thinking",
           "input_json_delta": "partial_json"}.get(kind, "value")
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, key: value},
            **extra}


def message(message_id: str | None, *blocks: tuple[int, dict[str, Any], list[dict[str, Any]]],
            parent: str | None = None, with_ids: bool = True) -> list[dict[str, Any]]:
    """A streamed message: message_start, then each (index, content_block, events) block."""
    sid = message_id if with_ids else None
    lines = [stream({"type": "message_start", "message": {"id": message_id, "model": "m",
                                                          "content": []}}, sid, parent)]
    for index, block, deltas in blocks:
        lines.append(stream({"type": "content_block_start", "index": index,
                             "content_block": block}, sid, parent))
        # (an item that already is a whole line goes in as it is)
        lines += [d if isinstance(d, dict) and d.get("type") == "stream_event"
                  else stream(d, sid, parent) for d in deltas]
        lines.append(stream({"type": "content_block_stop", "index": index}, sid, parent))
    lines.append(stream({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                         "usage": {"output_tokens": 9}}, sid, parent))
    lines.append(stream({"type": "message_stop"}, sid, parent))
    return lines


def result_line(**extra: Any) -> dict[str, Any]:
    return {"type": "result", "subtype": "success", "is_error": False, "session_id": "cs",
            "result": "", "num_turns": 1, "total_cost_usd": 0.25, "duration_ms": 10,
            "usage": {"input_tokens": 3, "output_tokens": 9}, **extra}


def took_fast_path(obj: Any) -> bool:
    return stream_delta(obj) is not None


# ----------------------------------------------------------------------------- fixtures


@pytest.mark.usefixtures("cli_fixtures")
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.jsonl")))
def test_cli_transcripts_map_the_same_on_both_paths(name: str) -> None:
    objects = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]
    events, mapper = both_paths(objects)
    if name in ("text-partial.jsonl", "interrupt-multiturn.jsonl"):
        assert any(took_fast_path(obj) for obj in objects)  # the fast path was exercised
        results = [e for e in events if isinstance(e, Result)]
        assert results and mapper.last_result is results[-1]


@pytest.mark.usefixtures("cli_fixtures")
def test_cli_transcripts_concatenated_keep_turn_state_apart() -> None:
    """All transcripts as one session: turns end at each result, the state carries over."""
    objects = [json.loads(line) for p in sorted(FIXTURES.glob("*.jsonl"))
               if not p.name.endswith(".stdin.jsonl")
               for line in p.read_text().splitlines() if line]
    both_paths(objects)
    both_paths(objects, include_subagents=True)


# ---------------------------------------------------------------------------- synthetic


def test_text_deltas_build_the_turn_text_and_result() -> None:
    lines = [
        {"type": "system", "subtype": "init", "session_id": "cs", "model": "m", "tools": []},
        *message("msg_a", (0, {"type": "text", "text": ""},
                           [delta("text_delta", "Hello"), delta("text_delta", ", "),
                            delta("text_delta", ""), delta("text_delta", "world")])),
        {"type": "assistant", "message": {"id": "msg_a", "model": "m", "content": [
            {"type": "text", "text": "Hello, world"}]}, "session_id": "cs"},
        *message("msg_b", (0, {"type": "text", "text": "pre-"},
                           [delta("text_delta", "second message")])),
        result_line(),
    ]
    events, mapper = both_paths(lines)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert [d.text for d in deltas] == ["Hello", ", ", "world", "\n\npre-", "second message"]
    assert [d.message_id for d in deltas] == ["msg_a"] * 3 + ["msg_b"] * 2
    result = events[-1]
    assert isinstance(result, Result)
    assert result.text == text_of(events) == "Hello, world\n\npre-second message"
    assert result.usage == {"input_tokens": 3, "output_tokens": 9}
    assert result.stop_reason == "end_turn" and result.model == "m"
    assert mapper.last_turn is not None and mapper.last_turn.message_ids == ["msg_a", "msg_b"]


def test_deltas_without_api_message_id_follow_message_start() -> None:
    lines = [
        *message("msg_x", (0, {"type": "text", "text": ""},
                           [delta("text_delta", "one "), delta("text_delta", "two")]),
                 with_ids=False),
        *message(None, (0, {"type": "text", "text": ""}, [delta("text_delta", "anon")]),
                 with_ids=False),
        # a delta with no message_start before it in this turn, and no id
        stream(delta("text_delta", "orphan"), None, parent="toolu_p"),
        result_line(),
    ]
    events, _ = both_paths(lines)
    assert text_of(events) == "one two\n\nanon"
    both_paths(lines, include_subagents=True)


def test_thinking_deltas() -> None:
    lines = [
        *message("msg_t", (0, {"type": "thinking", "thinking": "", "signature": ""},
                           [delta("thinking_delta", "Let me "), delta("thinking_delta", ""),
                            delta("thinking_delta", "think."),
                            delta("signature_delta", "sig")]),
                 (1, {"type": "text", "text": ""}, [delta("text_delta", "Answer.")])),
        result_line(),
    ]
    events, mapper = both_paths(lines)
    thinking = [e for e in events if isinstance(e, ThinkingDelta)]
    assert [t.text for t in thinking] == ["Let me ", "think."]
    assert mapper.last_turn is not None and mapper.last_turn.thinking == "Let me think."
    assert events[-1].thinking == "Let me think."  # type: ignore[union-attr]


@pytest.mark.parametrize("assistant_before_stop", [False, True])
def test_tool_input_deltas(assistant_before_stop: bool) -> None:
    parts = ['{"comm', 'and": "echo \\"hi\\" ', '&& ls ü✓", "n"', ": 3}"]
    full = json.loads("".join(parts))
    lines = message("msg_u", (0, {"type": "text", "text": ""}, [delta("text_delta", "Run:")]),
                    (1, {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}},
                     [delta("input_json_delta", p, index=1) for p in parts]))
    copy = {"type": "assistant", "message": {"id": "msg_u", "model": "m", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": full}]},
        "session_id": "cs"}
    stop = next(i for i, line in enumerate(lines)
                if line["event"] == {"type": "content_block_stop", "index": 1})
    lines.insert(stop if assistant_before_stop else stop + 1, copy)
    lines += [
        {"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "hi"}]}},
        *message("msg_v", (0, {"type": "text", "text": ""}, [delta("text_delta", "Done.")])),
        result_line(),
    ]
    events, mapper = both_paths(lines)
    (tool,) = [e for e in events if isinstance(e, ToolUse)]
    assert tool.input == full and tool.name == "Bash"
    result = events[-1]
    assert isinstance(result, Result) and result.tool_calls == [tool]
    assert mapper.last_turn is not None
    (call,) = mapper.last_turn.tool_calls
    assert call.input == full and call.complete


def test_tool_input_deltas_that_never_parse() -> None:
    lines = message("msg_w", (0, {"type": "tool_use", "id": "toolu_2", "name": "Read",
                                  "input": {}},
                              [delta("input_json_delta", '{"path": '),
                               delta("input_json_delta", "[broken")]))
    lines += [result_line()]
    both_paths(lines)


def test_subagent_deltas() -> None:
    lines = [
        *message("msg_main", (0, {"type": "text", "text": ""}, [delta("text_delta", "main")])),
        *message("msg_sub", (0, {"type": "text", "text": ""}, [delta("text_delta", "sub")]),
                 (1, {"type": "thinking", "thinking": ""}, [delta("thinking_delta", "hm")]),
                 parent="toolu_task"),
        result_line(),
    ]
    events, _ = both_paths(lines)
    assert text_of(events) == "main"
    events, _ = both_paths(lines, include_subagents=True)
    assert text_of(events) == "main\n\nsub"


def test_unicode_and_escaped_text() -> None:
    """Decoded from JSON text with escapes, as the envelope decoder gives them."""
    texts = ['quote \\" backslash \\\\ slash \\/', "newline\\n tab\\t cr\\r",
             "\\u00e9\\u00fc \\ud83d\\ude00 emoji", "raw ünïcode ✓ 漢字 😀",
             "lone \\ud800 surrogate", "nul \\u0000 byte", "\\u2028\\u2029 separators"]
    raw_lines = [
        '{"type":"stream_event","event":{"type":"content_block_delta","index":0,'
        '"delta":{"type":"text_delta","text":"' + t + '"}},"session_id":"cs",'
        '"parent_tool_use_id":null,"api_message_id":"msg_u8"}' for t in texts]
    lines = [*message("msg_u8", (0, {"type": "text", "text": ""}, []))[:2],
             *[json.loads(line) for line in raw_lines], result_line()]
    assert all(took_fast_path(obj) for obj in lines[2:-1])
    events, _ = both_paths(lines)
    assert [e.text for e in events if isinstance(e, TextDelta)] == \
        [json.loads('"' + t + '"') for t in texts]


BAD_DELTA_LINES: list[tuple[str, Any]] = [
    ("text is a number", stream(delta("text_delta", 5))),
    ("text is null", stream(delta("text_delta", None))),
    ("text is a list", stream(delta("text_delta", ["a"]))),
    ("thinking is null", stream(delta("thinking_delta", None))),
    ("partial_json is an object", stream(delta("input_json_delta", {"a": 1}))),
    ("no text", stream({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta"}})),
    ("no index", stream({"type": "content_block_delta",
                         "delta": {"type": "text_delta", "text": "x"}})),
    ("index is a string", stream(delta("text_delta", "x", index="1"))),  # type: ignore[arg-type]
    ("index is a bool", stream(delta("text_delta", "x", index=True))),
    ("index is a float", stream(delta("text_delta", "x", index=2.0))),  # type: ignore[arg-type]
    ("index is a float with fraction",
     stream(delta("text_delta", "x", index=2.5))),  # type: ignore[arg-type]
    ("index is huge", stream(delta("text_delta", "x", index=2**80))),
    ("index is negative", stream(delta("text_delta", "x", index=-1))),
    ("index is null", stream(delta("text_delta", "x", index=None))),  # type: ignore[arg-type]
    ("unknown delta type", stream(delta("citations_delta", "x"))),
    ("signature delta", stream(delta("signature_delta", "x"))),
    ("delta type is a list", stream({"type": "content_block_delta", "index": 0,
                                     "delta": {"type": ["text_delta"], "text": "x"}})),
    ("delta type is a dict", stream({"type": "content_block_delta", "index": 0,
                                     "delta": {"type": {"a": 1}, "text": "x"}})),
    ("delta has no type", stream({"type": "content_block_delta", "index": 0,
                                  "delta": {"text": "x"}})),
    ("delta is a string", stream({"type": "content_block_delta", "index": 0,
                                  "delta": "text_delta"})),
    ("delta is null", stream({"type": "content_block_delta", "index": 0, "delta": None})),
    ("no delta", stream({"type": "content_block_delta", "index": 0})),
    ("event is a list", stream([1, 2])),
    ("event is null", stream(None)),
    ("no event", {"type": "stream_event", "session_id": "cs"}),
    ("event type is a list", stream({"type": ["content_block_delta"], "index": 0,
                                     "delta": {"type": "text_delta", "text": "x"}})),
    ("session_id is a number", stream(delta("text_delta", "x"), session_id=5)),
    ("uuid is a list", stream(delta("text_delta", "x"), uuid=["u"])),
    ("parent is a number", stream(delta("text_delta", "x"), parent=7)),  # type: ignore[arg-type]
    ("api_message_id is a number", stream(delta("text_delta", "x"), message_id=9)),  # type: ignore[arg-type]
    ("api_message_id is empty", stream(delta("text_delta", "x"), message_id="")),
    ("extra fields everywhere", {**stream({**delta("text_delta", "x"), "extra": [1]}),
                                 "new_field": {"a": 1}, "uuid": "u-1"}),
    ("extra field in the delta", stream({"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": "x",
                                                   "citations": None}})),
]


@pytest.mark.parametrize("line", [line for _, line in BAD_DELTA_LINES],
                         ids=[name for name, _ in BAD_DELTA_LINES])
def test_odd_delta_lines_match_the_slow_path(line: Any) -> None:
    """Each odd line amid a normal streamed message: same events (RawEvent where the models
    reject it), same state, no exception; the fast path only takes what validates."""
    parts = stream_delta(line)
    msg = parse_message(line)
    if parts is not None:  # then the models agree field by field
        assert isinstance(msg, wire.StreamEvent)
        assert isinstance(msg.event, wire.ContentBlockDeltaEvent)
        kind, value, index, parent, api_id = parts
        assert type(index) is int and type(value) is str  # nothing the models would convert
        assert msg.event.delta.type == kind  # type: ignore[union-attr]
        assert getattr(msg.event.delta, {"text_delta": "text", "thinking_delta": "thinking",
                                         "input_json_delta": "partial_json"}[kind]) == value
        assert msg.event.index == index and type(msg.event.index) is int
        assert msg.parent_tool_use_id == parent and msg.api_message_id == api_id
    lines = message("msg_f1", (0, {"type": "text", "text": ""},
                               [delta("text_delta", "before"), line,
                                delta("text_delta", "after")]))
    lines.append(result_line())
    events, _ = both_paths(lines)
    both_paths(lines, include_subagents=True)
    if not isinstance(msg, wire.StreamEvent):
        assert any(isinstance(e, RawEvent) and e.raw is line for e in events)


def test_stream_delta_reads_only_well_formed_deltas() -> None:
    assert stream_delta(stream(delta("text_delta", "hi", index=3), "m1", "p1")) == \
        ("text_delta", "hi", 3, "p1", "m1")
    assert stream_delta(stream(delta("thinking_delta", "th"), None)) == \
        ("thinking_delta", "th", 0, None, None)
    assert stream_delta(stream(delta("input_json_delta", '{"a"'))) == \
        ("input_json_delta", '{"a"', 0, None, "msg_f1")
    for name, line in BAD_DELTA_LINES:
        msg = parse_message(line)
        well_formed = (isinstance(msg, wire.StreamEvent)
                       and isinstance(msg.event, wire.ContentBlockDeltaEvent)
                       and isinstance(msg.event.delta, wire.WireTextDelta | wire.WireThinkingDelta
                                      | wire.InputJsonDelta))
        if stream_delta(line) is not None:
            assert well_formed, name
    for other in ({"type": "assistant"}, {"type": "stream_event"}, [], None, "x",
                  stream({"type": "content_block_start", "index": 0,
                          "content_block": {"type": "text", "text": "x"}})):
        assert stream_delta(other) is None  # type: ignore[arg-type]


def test_deltas_after_the_result_add_nothing() -> None:
    lines = [*message("msg_a", (0, {"type": "text", "text": ""}, [delta("text_delta", "a")])),
             result_line(), stream(delta("text_delta", "late")),
             stream(delta("input_json_delta", "{}"))]
    both_paths(lines)


def test_runner_error_mid_stream_then_next_turn() -> None:
    lines = [*message("msg_a", (0, {"type": "text", "text": ""},
                                [delta("text_delta", "lost")]))[:3],
             {"type": "dockercc", "subtype": "error", "error": "cli_exited", "restart": True},
             *message("msg_b", (0, {"type": "text", "text": ""}, [delta("text_delta", "b")])),
             result_line()]
    events, _ = both_paths(lines)
    assert events[-1].text == "b"  # type: ignore[union-attr]


# -------------------------------------------------------------------------------- fuzz

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

odd_values = (st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats(allow_nan=False)
              | st.text(max_size=6) | st.lists(st.integers(), max_size=2)
              | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def delta_lines(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["text_delta", "thinking_delta", "input_json_delta",
                                 "signature_delta", "other"]))
    line = stream(delta(kind, draw(st.text(max_size=8))),
                  draw(st.sampled_from(["msg_f1", "msg_f2", None])),
                  draw(st.sampled_from([None, None, "toolu_p"])))
    for _ in range(draw(st.integers(0, 2))):  # break a field somewhere
        targets = [line]
        if isinstance(line.get("event"), dict):
            targets.append(line["event"])
            if isinstance(line["event"].get("delta"), dict):
                targets.append(line["event"]["delta"])
        target = draw(st.sampled_from(targets))
        key = draw(st.sampled_from(["type", "index", "delta", "event", "text", "thinking",
                                    "partial_json", "session_id", "uuid", "api_message_id",
                                    "parent_tool_use_id", "extra"]))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(odd_values)
    return line


@FUZZ
@given(st.lists(delta_lines(), max_size=8), st.booleans())
def test_fuzzed_delta_lines_match_the_slow_path(lines: list[Any], subagents: bool) -> None:
    turn = message("msg_f1", (0, {"type": "text", "text": ""}, lines),
                   (1, {"type": "tool_use", "id": "toolu_f", "name": "T", "input": {}}, lines))
    both_paths([*turn, result_line()], include_subagents=subagents)


# ------------------------------------------------------------------- envelope decoding


def reference_decode(data: Any) -> tuple[Any, Any, Any] | None:
    """Envelope.decode as it was: json.loads and the same checks."""
    try:
        obj = json.loads(data)
        seq, event = obj["seq"], obj["event"]
        # a seq is an int (not a bool) a runner can reach: [0, SEQ_MAX]
        if type(seq) is not int or not 0 <= seq <= SEQ_MAX or not isinstance(event, dict):
            return None
        ts = obj.get("ts", 0)
        return seq, ts if isinstance(ts, int) else 0, event
    except (ValueError, TypeError, KeyError):
        return None


ENVELOPE_INPUTS: list[Any] = [
    b'{"seq":1,"ts":2,"event":{"type":"stream_event","text":"\\u00e9 \\ud83d\\ude00 \\" \\\\"}}',
    '{"seq":1,"ts":2,"event":{"a":"é ✓ 😀"}}',
    b'{"seq":1,"event":{"a":"\\ud800"}}',  # an escaped lone surrogate
    '{"seq":1,"event":{"a":"\ud800"}}'.encode("utf-8", "surrogatepass"),  # a raw one
    '{"seq":1,"event":{"a":"é"}}'.encode("utf-16"),
    '{"seq":1,"event":{"a":"é"}}'.encode("utf-8-sig"),
    b'{"seq":1,"event":{}}\n', b'{"seq":1,"event":{}}  \r\n', b' {"seq":1,"event":{}}',
    b'{"seq":1,"event":{}} x', b'{"seq":1,"event":{}}{"seq":2,"event":{}}',
    b'{"seq":1,"event":{"a":"\xff"}}', b'{"seq"', b'{"', b"{}", b"", b"[1]", b"null",
    b'{"seq":true,"event":{}}', b'{"seq":1.5,"event":{}}', b'{"seq":1,"event":[]}',
    b'{"seq":1,"ts":"x","event":{}}', b'{"seq":1,"ts":null,"event":{}}', b'{"event":{}}',
    b'{"seq":1,"event":{"a":NaN}}', b'{"seq":1,"event":{"a":1e999}}',
    b'{"seq":99999999999999999999999,"event":{}}', b'{"seq":1,"seq":2,"event":{}}',
    b'{"seq":1,"event":{"x":"\x00"}}', "{\"seq\":1,\"event\":{}}\u2028",
]


@pytest.mark.parametrize("data", ENVELOPE_INPUTS)
def test_envelope_decode_matches_json_loads(data: Any) -> None:
    env = Envelope.decode(data)
    want = reference_decode(data)
    got = None if env is None else (env.seq, env.ts, env.event)
    assert got == want or (got is not None and want is not None and repr(got) == repr(want))


@FUZZ
@given(st.binary(max_size=40) | st.text(max_size=40)
       | st.builds(lambda seq, ev, tail: json.dumps({"seq": seq, "ts": 1, "event": ev}) + tail,
                   st.integers(-2, 2**70) | st.booleans() | st.none(),
                   st.dictionaries(st.text(max_size=4), st.text(max_size=6), max_size=3),
                   st.sampled_from(["", " ", "\n", "x", "}"])))
def test_envelope_decode_matches_json_loads_fuzzed(data: Any) -> None:
    for item in (data, data.encode("utf-8", "surrogatepass")) if isinstance(data, str) \
            else (data,):
        env = Envelope.decode(item)
        assert (None if env is None else (env.seq, env.ts, env.event)) == reference_decode(item)
