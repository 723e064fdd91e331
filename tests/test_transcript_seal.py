"""A saved transcript reaches the next container only as the host sealed it, at its fixed
path; a new session never adopts keys already in Redis under its id."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import pytest

from dockercc.client import AsyncPool
from dockercc.errors import BadData, SessionExists, TranscriptRejected
from dockercc.protocol import transcript as sealing
from dockercc.testing import text

CID = "0b5e4c1a-1111-4222-8333-944455556666"
GOOD = {b"meta": json.dumps({"path": f"projects/-workspace/{CID}.jsonl",
                              "claude_session_id": CID}).encode(),
        b"data": zlib.compress(b'{"type":"user"}\n')}
KEY = b"k" * 32


@pytest.mark.parametrize("path", [
    "settings.json", "projects/-workspace/settings.json", f"projects/../{CID}.jsonl",
    f"/home/agent/.claude/projects/x/{CID}.jsonl", f"projects/x/y/{CID}.jsonl",
    "projects/-workspace/other-id.jsonl", f"hooks/{CID}.jsonl", f"projects/../../{CID}.jsonl",
    f"projects/./{CID}.jsonl", "projects/-workspace/" + CID + ".jsonl/../../settings.json",
])
def test_only_the_fixed_transcript_path_is_accepted(path: str) -> None:
    meta = json.dumps({"path": path, "claude_session_id": CID})
    with pytest.raises(BadData):
        sealing.check_meta(meta)


def test_seal_binds_data_session_and_conversation() -> None:
    assert sealing.check_meta(GOOD[b"meta"]) == (f"projects/-workspace/{CID}.jsonl", CID)
    sealed = {**GOOD, b"mac": sealing.seal(KEY, "s1", GOOD).encode()}  # type: ignore[union-attr]
    assert sealing.verify(KEY, "s1", sealed)
    assert sealing.verify(KEY, "s1", {}) == ""  # nothing saved: nothing to restore
    tampered = [
        {**sealed, b"data": zlib.compress(b'{"type":"evil"}\n')},  # other bytes
        {k: v for k, v in sealed.items() if k != b"mac"},  # the seal removed
        {**sealed, b"meta": json.dumps({"path": "settings.json",
                                         "claude_session_id": CID}).encode()},
    ]
    for raw in tampered:
        with pytest.raises(TranscriptRejected):
            sealing.verify(KEY, "s1", raw)
    with pytest.raises(TranscriptRejected):  # another session's sealed transcript
        sealing.verify(KEY, "s2", sealed)
    with pytest.raises(TranscriptRejected):  # another host's key
        sealing.verify(b"x" * 32, "s1", sealed)


@pytest.mark.docker
async def test_a_tampered_transcript_is_refused_and_a_used_id_is_not_reopened(
        make_config: Any, api: Any) -> None:
    api.on("remember the word", text("remembered: pelican"))
    api.on("what was the word", text("it was pelican"))
    async with AsyncPool(make_config()) as pool:
        r = pool.transport.client
        first = pool.session()
        await first.ask("please remember the word pelican", timeout=60)
        old_id, claude_id = first.id, first.claude_session_id
        await first.close()
        tkey = pool.transport.keys(old_id).transcript
        saved = await r.hgetall(tkey)
        assert saved.get(b"mac"), "closing sealed the transcript"
        try:
            # a new session under a used id does not adopt its keys
            with pytest.raises(SessionExists):
                await pool.session(session_id=old_id).start()
            # a settings.json with a hook, put where the transcript was
            hook = json.dumps({"hooks": {"SessionStart": [{"hooks": [
                {"type": "command", "command": "touch /tmp/pwned"}]}]}}).encode()
            await r.hset(tkey, mapping={
                "meta": json.dumps({"path": "settings.json", "claude_session_id": claude_id}),
                "data": zlib.compress(hook)})
            with pytest.raises(TranscriptRejected):
                await pool.session(resume=old_id).ask("what was the word?", timeout=60)
            # the right shape, other bytes, the old seal
            await r.hset(tkey, mapping={"meta": saved[b"meta"],
                                        "data": zlib.compress(b'{"type":"forged"}\n')})
            with pytest.raises(TranscriptRejected):
                await pool.session(resume=old_id).ask("what was the word?", timeout=60)
            # restored as sealed, it resumes
            await r.hset(tkey, mapping={"data": saved[b"data"]})
            again = pool.session(resume=old_id)
            result = await again.ask("what was the word?", timeout=90)
            assert result.text == "it was pelican" and result.session_id == claude_id
            await again.close(forget=True)
        finally:
            await pool.transport.delete_session(old_id)
            await r.hdel(f"{pool.transport.prefix}claude_sessions", claude_id or "")


KILLED_OWNER = textwrap.dedent("""
    import asyncio, json, sys
    from dockercc.client import AsyncPool

    async def main():
        pool = AsyncPool(json.loads(sys.argv[1]))
        s = pool.session()
        await s.ask("please remember the word heron", timeout=120)
        print("ready", s.id, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


@pytest.mark.docker
async def test_a_session_whose_owner_was_killed_resumes_in_a_new_process(
        make_config: Any, api: Any) -> None:
    """Its owner never closed it, so nobody sealed its transcript; the next pool start finds
    the dead owner's container, removes it and seals what it saved: resume= restores it."""
    api.on("remember the word", text("remembered: heron"))
    api.on("what was the word", text("it was heron"))
    cfg = make_config(timeouts={"healthIntervalMs": 300})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_OWNER, json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 180)
        assert line.startswith(b"ready "), proc.stderr.read().decode() if proc.stderr else ""
        session_id = line.split()[1].decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    await asyncio.sleep(1.5)  # its heartbeat goes stale (3 x 300 ms)
    async with AsyncPool(cfg) as pool:  # start: reconcile removes and seals
        r = pool.transport.client
        tkey = pool.transport.keys(session_id).transcript
        assert (await r.hget(tkey, "mac")), "the dead owner's session was sealed"
        again = pool.session(resume=session_id)
        try:
            assert (await again.ask("what was the word?", timeout=120)).text == "it was heron"
        finally:
            await again.close(forget=True)
        # closed as its owner would have: no record, no live keys (conftest checks the rest)
        assert session_id.encode() not in await r.hkeys(f"{pool.transport.prefix}sessions")
