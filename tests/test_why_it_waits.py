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
from test_cli import adcc, base_env, write_config

from dockercc._mapper import EventMapper
from dockercc.client import AsyncPool
from dockercc.events import ApiRetry, ApiUnreachable, Event, SystemEvent, SystemStatus
from dockercc.protocol.envelope import Envelope, runner_event
from dockercc.testing import error

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


async def causes(s: Any, sent: float, *, retries: int = 1, within: float = 5.0,
                 ) -> list[tuple[float, ApiUnreachable | ApiRetry]]:
    """The session's ``ApiUnreachable`` / ``ApiRetry`` events (with seconds since the prompt)
    until ``retries`` ``ApiRetry`` events came, or ``within`` seconds passed."""
    seen: list[tuple[float, ApiUnreachable | ApiRetry]] = []

    async def collect() -> None:
        async for ev in s.receive(timeout=within + 30):
            if isinstance(ev, ApiUnreachable | ApiRetry):
                seen.append((time.monotonic() - sent, ev))
                if sum(isinstance(e, ApiRetry) for _, e in seen) >= retries:
                    return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), within)
    return seen


def waiting_text(events: list[Any]) -> str:
    """What the notebook widget's text rendering shows for these events."""
    from dockercc.jupyter.render import turn_text
    from dockercc.jupyter.state import TurnState

    state = TurnState(session="s")
    for ev in events:
        state.feed(ev)
    return turn_text(state)


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_a_session_whose_api_host_does_not_resolve_says_dns_within_5s(
        make_config: Any) -> None:
    # .invalid never resolves (RFC 6761); the egress proxy resolves API names on the host
    cfg = make_config(credentials={"baseUrl": "http://no-such-api.invalid",
                                   "apiKey": "sk-ant-scripted-test"})
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id=f"why-dns-{uuid.uuid4().hex[:6]}")
        await s.start()
        sent = time.monotonic()
        await s.send("hello?")
        seen = await causes(s, sent)
        assert seen, "no cause within 5 s"
        print(f"\nDNS: {[(round(t, 2), ev.message) for t, ev in seen]}")
        took, first = seen[0]
        assert isinstance(first, ApiUnreachable), first
        assert first.cause.startswith("DNS: name not resolved"), first.cause
        assert first.target == "no-such-api.invalid:80"
        retry = seen[-1][1]
        assert isinstance(retry, ApiRetry) and retry.error_status == 502
        assert retry.cause.startswith("DNS: name not resolved") and "DNS" in retry.message
        assert all(t < 5 for t, _ in seen), seen
        assert "waiting: the API is not answering (DNS: name not resolved" in waiting_text(
            [ev for _, ev in seen])
        await s.close(forget=True)


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_a_session_whose_api_refuses_its_key_says_authentication_failed_within_5s(
        make_config: Any, api: Any, tmp_path: Any) -> None:

    key = f"sk-ant-canary-{uuid.uuid4().hex}"
    conf = make_config(credentials={"baseUrl": api.url, "apiKey": key})
    api.set_default(error(401, "authentication_error", "invalid x-api-key"))
    async with AsyncPool(conf) as pool:
        s = pool.session(session_id=f"why-401-{uuid.uuid4().hex[:6]}")
        await s.start()
        sent = time.monotonic()
        await s.send("hello?")
        seen = await causes(s, sent)
        assert seen, "no cause within 5 s"
        print(f"\n401: {[(round(t, 2), ev.message) for t, ev in seen]}")
        took, retry = seen[-1]
        assert isinstance(retry, ApiRetry) and retry.error_status == 401 and took < 5
        assert "authentication failed" in retry.message
        assert "credentials.apiKey" in retry.message  # what to do
        # the key reached the API (through the egress proxy), never the message
        assert any(key in str(r.headers.get("x-api-key", "")) + str(r.headers.get(
            "authorization", "")) for r in api.message_requests)
        # the CLI keeps retrying meanwhile
        more = await causes(s, sent, retries=1, within=15)
        assert more and isinstance(more[-1][1], ApiRetry) and more[-1][1].attempt >= 2, more
        assert len(api.message_requests) >= 2
        text = waiting_text([ev for _, ev in seen + more])
        assert "waiting: the API is not answering (401: authentication failed" in text, text
        # `dockercc logs` (another process, from the session's buffer) says it too
        env = base_env(tmp_path / "home")
        out = await adcc("logs", s.id, env=env, config=write_config(tmp_path / "c.yaml", conf))
        assert out.returncode == 0, out.stderr
        assert "401: authentication failed" in out.stderr, out.stderr
        for shown in (out.stdout, out.stderr, text, *(ev.message for _, ev in seen + more)):
            assert key not in shown
        await s.close(forget=True)


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_a_rate_limited_session_says_429_within_5s_and_the_cli_honours_retry_after(
        make_config: Any, api: Any) -> None:
    api.set_default(error(429, "rate_limit_error", "Number of requests has exceeded your "
                          "per-minute rate limit", retry_after=2))
    async with AsyncPool(make_config()) as pool:
        s = pool.session(session_id=f"why-429-{uuid.uuid4().hex[:6]}")
        await s.start()
        sent = time.monotonic()
        await s.send("hello?")
        seen = await causes(s, sent)
        assert seen, "no cause within 5 s"
        took, first = seen[-1]
        assert isinstance(first, ApiRetry) and took < 5
        # then it retries, waiting what the API's retry-after asked for
        seen += await causes(s, sent, retries=1, within=15)
        print(f"\n429: {[(round(t, 2), ev.message) for t, ev in seen]}")
        retries = [ev for _, ev in seen if isinstance(ev, ApiRetry)]
        assert len(retries) >= 2 and [r.attempt for r in retries[:2]] == [1, 2], retries
        for r in retries:
            assert r.error_status == 429 and "429: rate limited" in r.message, r
            assert r.retry_delay_ms >= 1900, r  # retry-after: 2
        assert len(api.message_requests) >= 2
        assert "waiting: the API is not answering (429: rate limited" in waiting_text(retries)
        await s.close(forget=True)
