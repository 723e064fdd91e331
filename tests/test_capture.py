"""scripts/capture_transcripts.py still reproduces the committed CLI transcripts: the same
messages in the same order, with the same fixed ids and texts (the volatile values -- session
ids, uuids, timings -- aside). Runs the real pinned CLI on the host against the scripted API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT


def skeleton(path: Path) -> list[tuple[Any, ...]]:
    """Per line: type, subtype (or SSE event / control subtype), the fixed ids and texts."""
    out: list[tuple[Any, ...]] = []
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        event, request = obj.get("event") or {}, obj.get("request") or {}
        message = obj.get("message") if isinstance(obj.get("message"), dict) else {}
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"text": content}]
        out.append((
            obj.get("type"),
            obj.get("subtype") or event.get("type") or request.get("subtype"),
            message.get("id") or (event.get("message") or {}).get("id"),
            [(b.get("type"), b.get("id") or b.get("tool_use_id"), b.get("text"), b.get("input"))
             for b in blocks if isinstance(b, dict)],
            (event.get("delta") or {}).get("text"),
            obj.get("result"),
            (request.get("message") or {}).get("method"),
        ))
    return out


@pytest.mark.usefixtures("cli_fixtures")
def test_capture_script_reproduces_the_committed_transcripts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "scripts/capture_transcripts.py", "--out", str(out),
                          "--base", str(tmp_path / "dockercc-capture")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    committed = sorted(p.name for p in FIXTURES.glob("*.jsonl"))
    assert sorted(p.name for p in out.glob("*.jsonl")) == committed
    for name in committed:
        assert skeleton(out / name) == skeleton(FIXTURES / name), name
    # the README says how they were made and lists every transcript
    readme = (FIXTURES / "README.md").read_text()
    assert "scripts/capture_transcripts.py" in readme
    for name in committed:
        if not name.endswith(".stdin.jsonl"):
            assert f"| {name}" in readme, name
    # nothing of the capturing machine's home leaked in
    for name in committed:
        assert str(Path.home()) + "/" not in (FIXTURES / name).read_text(), name
