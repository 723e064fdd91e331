"""Property tests: the stdout parser never raises and never depends on chunking."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockercc.protocol import (
    MESSAGE_TYPES,
    LineParser,
    Message,
    TurnAccumulator,
    UnknownMessage,
    WireModel,
    parse_message,
)

pytestmark = pytest.mark.usefixtures("cli_fixtures")

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _fixture_streams() -> dict[str, bytes]:
    if not FIXTURES.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.jsonl"))}


STREAMS = _fixture_streams()
LINES: list[bytes] = [line for data in STREAMS.values() for line in data.splitlines() if line]
OBJECTS: list[dict[str, Any]] = [json.loads(line) for line in LINES]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
type_names = st.sampled_from([*MESSAGE_TYPES, "unknown_thing", ""]) | st.text(max_size=10)


def parse_all(chunks: list[bytes]) -> tuple[list[Message], LineParser]:
    parser = LineParser()
    out: list[Message] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.flush()
    return out, parser


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    chunks, last = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[last:p])
        last = p
    return chunks


def check(msg: Message) -> None:
    assert isinstance(msg, WireModel)
    assert isinstance(msg.raw, dict)
    assert isinstance(msg.type, str)


REFERENCE = {name: [m.raw for m in parse_all([data])[0]] for name, data in STREAMS.items()}


@FUZZ
@given(
    name=st.sampled_from(sorted(STREAMS) or ["-"]),
    cuts=st.lists(st.integers(0, 30000), max_size=40),
)
def test_chunking_does_not_matter(name: str, cuts: list[int]) -> None:
    data = STREAMS[name]
    msgs, parser = parse_all(split_at(data, cuts))
    assert [m.raw for m in msgs] == REFERENCE[name]
    assert parser.skipped == 0


@FUZZ
@given(line=st.sampled_from(LINES or [b"{}"]), data=st.data())
def test_truncated_fixture_lines(line: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(line)))
    parser = LineParser()
    msg = parser.parse_line(line[:cut])
    if msg is not None:
        check(msg)
    # a truncated last line followed by a good one: the good one still comes out
    msgs = parser.feed(line[:cut] + b"\n" + line + b"\n")
    assert msgs and msgs[-1].raw == json.loads(line)


@FUZZ
@given(garbage=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_garbled_bytes_never_raise_and_resync(garbage: bytes, cuts: list[int]) -> None:
    good = STREAMS.get("bash-tool.jsonl", b'{"type":"result"}\n')
    msgs, parser = parse_all(split_at(garbage + b"\n" + good, cuts))
    for m in msgs:
        check(m)
    expected = REFERENCE.get("bash-tool.jsonl", [{"type": "result"}])
    assert [m.raw for m in msgs[-len(expected) :]] == expected


def _stripped(line: bytes) -> str:
    text = line.decode("utf-8", "replace").strip()
    return text[1:].lstrip() if text.startswith("\ufeff") else text


@FUZZ
@given(data=st.binary(max_size=500)
       | json_values.map(lambda v: b" \xef\xbb\xbf" + json.dumps(v).encode() + b"\r"))
def test_random_bytes_never_raise(data: bytes) -> None:
    parser = LineParser(max_line_bytes=64)
    for m in parser.feed(data) + parser.flush():
        check(m)
    parser = LineParser()
    for m in parser.feed(data) + parser.flush():
        check(m)
    # one line on its own and the same line fed as a stream agree: a message exactly when
    # it is a JSON object, skipped (counted) exactly when it is neither that nor blank
    line = data.replace(b"\n", b"")
    single, streamed = LineParser(), LineParser()
    msg = single.parse_line(line)
    assert [m.raw for m in streamed.feed(line + b"\n")] == ([] if msg is None else [msg.raw])
    assert single.skipped == streamed.skipped
    text = _stripped(line)
    if msg is None:
        assert single.skipped == (1 if text else 0)
    else:
        check(msg)
        assert single.skipped == 0 and msg.raw == json.loads(text)


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_never_raises(text: str) -> None:
    parser = LineParser()
    for m in parser.feed(text) + parser.flush():
        check(m)


@FUZZ
@given(value=json_values)
def test_random_json_values(value: Any) -> None:
    parser = LineParser()
    line = json.dumps(value)
    msg = parser.parse_line(line)
    if isinstance(value, dict):
        assert msg is not None
        check(msg)
        assert msg.raw == value
    else:
        assert msg is None and parser.skipped == 1
    check(parse_message(value))


@FUZZ
@given(kind=type_names, fields=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_random_objects_of_known_types(kind: str, fields: dict[str, Any]) -> None:
    obj = {**fields, "type": kind}
    msg = parse_message(obj)
    check(msg)
    assert msg.raw is obj
    assert msg.type == kind
    if kind not in MESSAGE_TYPES:
        assert isinstance(msg, UnknownMessage)
    TurnAccumulator().add(msg)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {**obj, head: _replace(obj[head], rest, value)}
    copy = list(obj)
    copy[head] = _replace(copy[head], rest, value)
    return copy


@FUZZ
@given(data=st.data(), value=json_values)
def test_mutated_fixture_objects(data: st.DataObject, value: Any) -> None:
    obj = data.draw(st.sampled_from(OBJECTS or [{"type": "result"}]))
    path = data.draw(st.sampled_from(_paths(obj)[1:] or [("type",)]))
    mutated = _replace(obj, path, value)
    msg = parse_message(mutated)
    check(msg)
    assert msg.raw is mutated
    acc = TurnAccumulator()
    appended = acc.add(msg)
    assert isinstance(appended, str) and acc.text == appended  # what add() reports is the text


@FUZZ
@given(
    names=st.lists(st.sampled_from(sorted(STREAMS) or ["-"]), min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 60000), max_size=20),
)
def test_accumulator_never_raises_on_fixture_mixes(names: list[str], cuts: list[int]) -> None:
    data = b"".join(STREAMS[n] for n in names)
    msgs, _ = parse_all(split_at(data, cuts))
    acc = TurnAccumulator()
    appended = "".join(acc.add(m) for m in msgs)
    assert appended == acc.text


@settings(max_examples=8, deadline=None, database=None)
@given(
    size=st.integers(1 << 20, 2 << 20),
    chunk=st.integers(1, 1 << 20),
    limit=st.none() | st.integers(64, 4 << 20),
)
def test_huge_lines(size: int, chunk: int, limit: int | None) -> None:
    line = b'{"type":"user","message":{"role":"user","content":"' + b"y" * size + b'"}}'
    data = line + b"\n" + b'{"type":"result"}\n' + line[: size // 2]
    parser = LineParser(max_line_bytes=limit)
    msgs: list[Message] = []
    for i in range(0, len(data), max(chunk, 4096)):
        msgs += parser.feed(data[i : i + max(chunk, 4096)])
    msgs += parser.flush()
    if limit is None or limit >= len(line):
        assert [m.type for m in msgs] == ["user", "result"]
        assert parser.skipped == 1  # the truncated last line
    else:
        assert [m.type for m in msgs] == ["result"]
        assert parser.skipped == 2


@FUZZ
@given(depth=st.integers(1, 100_000))
def test_deep_nesting_never_raises(depth: int) -> None:
    parser = LineParser()
    assert parser.parse_line("[" * depth + "]" * depth) is None
    nested = '{"type":"assistant","message":' + '{"a":' * depth + "1" + "}" * depth + "}"
    msg = parser.parse_line(nested)
    assert msg is None or isinstance(msg, WireModel)
