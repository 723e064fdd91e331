"""A stand-in for the Claude Code CLI that only measures the relay (stdlib only).

It is bind-mounted into the agent container and named by ``DOCKERCC_CLAUDE_BIN`` for the relay
benchmark: it speaks the CLI's stream-json protocol (answers control requests, ends each turn
with a ``result``), and for a user message ``burst N`` or ``paced N MICROSECONDS`` writes N
``stream_event`` text deltas whose text is the wall-clock time it wrote them. The caller
subtracts that from the time the delta reaches it: container stdout -> caller, per event. A
last word ``nowait`` skips the pause before the first event (a turn that outruns a late
reader).
The real CLI cannot be driven this fast, so this isolates what dockercc adds.
"""

from __future__ import annotations

import json
import sys
import time

SESSION = "00000000-0000-4000-8000-00000000fa4e"


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def delta_line(text: str) -> str:
    return ('{"type":"stream_event","event":{"type":"content_block_delta","index":0,'
            '"delta":{"type":"text_delta","text":"' + text + '"}},"session_id":"' + SESSION
            + '","parent_tool_use_id":null}')


def turn(prompt: str, n_turn: int) -> None:
    words = prompt.split()
    nowait = words[-1:] == ["nowait"]
    if nowait:
        words.pop()
    mode = words[0] if words else "burst"
    count = int(words[1]) if len(words) > 1 else 1000
    interval = int(words[2]) / 1e6 if len(words) > 2 else 0.0
    # the real CLI's first event comes tens of ms after the prompt: give the caller the same
    # time to subscribe (a caller that subscribes after sending and then falls more than
    # the 1000 buffered envelopes behind would miss the first ones)
    if not nowait:
        time.sleep(0.1)
    mid = f"msg_fake_{n_turn}"
    out(json.dumps({"type": "system", "subtype": "init", "session_id": SESSION, "tools": [],
                    "mcp_servers": [], "model": "fake-relay", "cwd": "/workspace"}))
    out(json.dumps({"type": "stream_event", "session_id": SESSION, "parent_tool_use_id": None,
                    "event": {"type": "message_start", "message": {
                        "id": mid, "type": "message", "role": "assistant", "content": [],
                        "model": "fake-relay", "usage": {"input_tokens": 1,
                                                         "output_tokens": 1}}}}))
    out(json.dumps({"type": "stream_event", "session_id": SESSION, "parent_tool_use_id": None,
                    "event": {"type": "content_block_start", "index": 0,
                              "content_block": {"type": "text", "text": ""}}}))
    t0 = time.time()
    if mode == "paced":
        for _ in range(count):
            out(delta_line(f"{time.time():.6f}"))
            if interval:
                time.sleep(interval)
    else:
        chunk = 256
        for start in range(0, count, chunk):
            now = f"{time.time():.6f}"
            sys.stdout.write("".join(delta_line(now) + "\n"
                                     for _ in range(min(chunk, count - start))))
        sys.stdout.flush()
    for event in ({"type": "content_block_stop", "index": 0},
                  {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                   "usage": {"output_tokens": count}},
                  {"type": "message_stop"}):
        out(json.dumps({"type": "stream_event", "session_id": SESSION,
                        "parent_tool_use_id": None, "event": event}))
    out(json.dumps({"type": "result", "subtype": "success", "is_error": False,
                    "result": f"{mode} {count} done", "session_id": SESSION, "num_turns": 1,
                    "duration_ms": int((time.time() - t0) * 1000), "total_cost_usd": 0.0,
                    "stop_reason": "end_turn", "terminal_reason": "completed"}))


def main() -> int:
    n_turn = 0
    for raw in sys.stdin:
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        kind = msg.get("type")
        if kind == "control_request":
            rid = msg.get("request_id", "")
            sub = (msg.get("request") or {}).get("subtype")
            response: dict[str, list[str]] = {"commands": []} if sub == "initialize" else {}
            out(json.dumps({"type": "control_response", "response": {
                "subtype": "success", "request_id": rid, "response": response}}))
        elif kind == "user":
            content = (msg.get("message") or {}).get("content")
            if isinstance(content, list):
                content = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
            n_turn += 1
            turn(str(content or ""), n_turn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
