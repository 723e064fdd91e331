"""Say why it waits (issue 19): the CLI's ``system`` events (``api_retry``, ``status``) and the
egress proxy's verdict on the API's upstream leg become typed events with their cause."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from typing import Any

import pytest
from pydantic import TypeAdapter

from dockercc.client import AsyncPool
from dockercc.events import ApiRetry, ApiUnreachable, Event, EventMapper, SystemEvent, SystemStatus
from dockercc.protocol.envelope import Envelope, runner_event

# as the real CLI 2.1.328 wrote it, pointed at a closed loopback port (no proxy between)
CLI_API_RETRY = {"type": "system", "subtype": "api_retry", "attempt": 1, "max_retries": 10,
                 "retry_delay_ms": 594, "error_status": None, "error": "unknown",
                 "session_id": "2e349ba2-fa63-4958-a9c6-0486012de317",
                 "uuid": "7d56e638-668d-4321-9956-0e5f2a42dbed"}
CLI_STATUS = {"type": "system", "subtype": "status", "status": "requesting",
              "session_id": "aed524a9-a823-48f5-834a-fbc98ab232dc",
              "uuid": "d98ecd3c-00c6-4b3a-ba69-bfb000b51500"}


def test_cli_system_events_are_typed() -> None:
    mapper = EventMapper("s1")
    [retry] = mapper.map(Envelope(seq=1, ts=1, event=CLI_API_RETRY))
    assert isinstance(retry, ApiRetry) and isinstance(retry, SystemEvent)
    assert (retry.attempt, retry.max_retries, retry.retry_delay_ms) == (1, 10, 594)
    assert retry.error_status is None
    assert "connection refused" in retry.message and "retry 1/10" in retry.message
    [status] = mapper.map(Envelope(seq=2, ts=2, event=CLI_STATUS))
    assert isinstance(status, SystemStatus) and status.status == "requesting"
    assert status.subtype == "status"
    # they survive a JSON round trip through the public union
    adapter: TypeAdapter[Any] = TypeAdapter(Event)
    for ev in (retry, status):
        assert type(adapter.validate_python(json.loads(ev.model_dump_json()))) is type(ev)


def test_the_proxys_cause_goes_with_the_retry_that_follows() -> None:
    mapper = EventMapper("s1")
    proxy = json.loads(runner_event("api_unreachable", cause="connection refused",
                                    target="127.0.0.1:9", status=502))
    [unreachable] = mapper.map(Envelope(seq=1, ts=1, event=proxy))
    assert isinstance(unreachable, ApiUnreachable)
    assert unreachable.message == "the API at 127.0.0.1:9 is unreachable: connection refused"
    [retry] = mapper.map(Envelope(seq=2, ts=2, event={**CLI_API_RETRY, "error_status": 502}))
    assert isinstance(retry, ApiRetry) and retry.cause == "connection refused"
    assert "connection refused" in retry.message
    # a later 429 is not blamed on the old refusal
    [later] = mapper.map(Envelope(seq=3, ts=3, event={**CLI_API_RETRY, "error_status": 429}))
    assert isinstance(later, ApiRetry) and later.cause == "" and "429" in later.message


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_a_session_whose_api_refuses_connections_says_why_within_5s(
        make_config: Any) -> None:
    cfg = make_config(credentials={"baseUrl": f"http://127.0.0.1:{closed_port()}",
                                   "apiKey": "sk-ant-scripted-test"})
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id=f"why-{uuid.uuid4().hex[:6]}")
        await s.start()
        sent = time.monotonic()
        await s.send("hello?")
        seen: list[Any] = []

        async def first_cause() -> None:
            async for ev in s.receive(timeout=30):
                if isinstance(ev, ApiUnreachable | ApiRetry):
                    seen.append((time.monotonic() - sent, ev))
                    if isinstance(ev, ApiRetry):
                        return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first_cause(), 5)
        assert seen, "no cause within 5 s"
        took, first = seen[0]
        print(f"\nfirst cause after {took * 1000:.0f} ms: {first.message}; then "
              f"{[ev.message for _, ev in seen[1:]]}")
        assert isinstance(first, ApiUnreachable) and first.cause == "connection refused"
        assert isinstance(seen[-1][1], ApiRetry) and seen[-1][1].cause == "connection refused"
        # a caller that only waits for the result hears the cause in the timeout
        with pytest.raises(TimeoutError, match="it was waiting: the API"):
            async for _ in s.receive(timeout=3):
                pass
        await s.close(forget=True)
