"""Sessions, the pool and the host-tool bridge on the local backend: the real runner and the
real (pinned) Claude Code CLI as subprocesses of this process, the real Redis and the scripted
Messages API; no Docker. The Docker suite keeps what needs a container (limits, isolation,
images): see docs/pool.md#the-local-backend."""

from __future__ import annotations

from typing import Any

from dockercc import AsyncPool, Result, TextDelta
from dockercc.testing import text


async def test_ask_and_stream(local_config: Any, api: Any) -> None:
    api.script(text("streamed here"), text("asked"))
    async with AsyncPool(local_config()) as pool:
        async with pool.session() as s:
            got = [ev async for ev in s.stream("go", timeout=60)]
            assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "streamed here"
            assert isinstance(got[-1], Result)
            r = await s.ask("again", timeout=60)
            assert r.text == "asked"
