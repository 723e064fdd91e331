"""Metrics, traces and logs (docs/observability.md): the figures ``/metrics`` shows are the
ones the sessions measured; one turn's spans join across the container boundary; JSON log
lines carry the ids and redact secrets."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from typing import Any

import httpx
import pytest
from conftest import dev_import
from prometheus_client.parser import text_string_to_metric_families

from dockercc import logs, metrics
from dockercc.client import AsyncPool
from dockercc.events import Result, TextDelta
from dockercc.gateway import METRICS_PATH, Gateway
from dockercc.testing import text, tool_use


def samples(blob: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(blob):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= set(ls))


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# -- metrics -------------------------------------------------------------------------------


async def test_metrics_endpoint_without_token_and_standalone_server(redis_server: Any,
                                                                   prefix: str) -> None:
    """Loopback without a token: /metrics is open (like the health report's public view);
    the Host check applies. A process without the gateway serves the same registry."""
    # never started: the route works on the app alone
    gateway = Gateway({"redis": {"url": redis_server.url, "keyPrefix": prefix}})
    transport = httpx.ASGITransport(app=gateway.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        resp = await http.get(METRICS_PATH)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        assert "dockercc_claim_seconds" in resp.text and "dockercc_turn_seconds" in resp.text
        bad = await http.get(METRICS_PATH, headers={"host": "rebound.example"})
        assert bad.status_code == 421
    await gateway.pool.close()

    server, thread = metrics.start_http_server(0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        async with httpx.AsyncClient(timeout=10) as http:
            body = (await http.get(url)).text
        assert "# TYPE dockercc_claims_total counter" in body
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.docker
async def test_metrics_match_what_the_sessions_measured(make_config: Any, api: Any) -> None:
    from dockercc import tool

    @tool
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        return f"value-of-{key}"

    token = f"metrics-{uuid.uuid4().hex}"
    pool = AsyncPool(make_config(pool={"minWarm": 1}, timeouts={"healthIntervalMs": 500}),
                     tools=[lookup])
    gateway = Gateway(pool=pool, port=0, token=token)
    api.script(tool_use("mcp__host__lookup", {"key": "alpha"}), text("found it"),
               text("second session here"), text("third session answers"))
    await gateway.start()
    url = f"http://127.0.0.1:{gateway.port}{METRICS_PATH}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            # with a token configured, /metrics needs it
            assert (await http.get(url)).status_code == 401
            assert (await http.get(url, headers={"Authorization": "Bearer nope"})
                    ).status_code == 401
            before = samples((await http.get(url, headers=auth)).text)

            leases, first_tokens, turns, deltas, results = [], [], [], 0, []
            for i in range(3):
                s = pool.session(session_id=f"obs-{uuid.uuid4().hex[:8]}-{i}")
                t0 = time.perf_counter()
                first = None
                async for ev in s.stream("go", timeout=120):
                    if isinstance(ev, TextDelta):
                        deltas += 1
                        first = first or time.perf_counter()
                    elif isinstance(ev, Result):
                        turns.append(time.perf_counter() - t0)
                        results.append(ev)
                assert first is not None and results[-1].ok
                first_tokens.append(first - t0)
                assert s.lease is not None
                leases.append(s.lease)
                await s.close(forget=True)
            await pool.containers.wait_warm(timeout=60)
            after = samples((await http.get(url, headers=auth)).text)

        # claims: count and latency by kind, exactly what the leases measured
        for kind in ("warm", "cold"):
            mine = [lease.claim_ms / 1000 for lease in leases if lease.warm == (kind == "warm")]
            assert delta(before, after, "dockercc_claims_total", agent="main",
                         kind=kind) == len(mine)
            assert delta(before, after, "dockercc_claim_seconds_count", kind=kind) == len(mine)
            assert delta(before, after, "dockercc_claim_seconds_sum",
                         kind=kind) == pytest.approx(sum(mine), abs=1e-6)
        assert leases[0].warm  # the first session took the warm container
        # first token and turn: measured from send(), a hair after this test's own clock
        # started, so never more than the test's figure and within milliseconds of it
        ft = delta(before, after, "dockercc_first_token_seconds_sum", agent="main")
        assert delta(before, after, "dockercc_first_token_seconds_count", agent="main") == 3
        assert 0 < ft <= sum(first_tokens) and sum(first_tokens) - ft < 0.05, \
            (ft, first_tokens)
        tt = delta(before, after, "dockercc_turn_seconds_sum", agent="main", outcome="ok")
        assert delta(before, after, "dockercc_turn_seconds_count", agent="main",
                     outcome="ok") == 3
        assert 0 < tt <= sum(turns) and sum(turns) - tt < 0.05, (tt, turns)
        assert delta(before, after, "dockercc_turns_total", agent="main", outcome="ok") == 3
        # events: every text delta and result the caller got
        assert delta(before, after, "dockercc_events_relayed_total", agent="main",
                     type="text_delta") == deltas
        assert delta(before, after, "dockercc_events_relayed_total", agent="main",
                     type="result") == 3
        # cost and tokens as the CLI reported them
        cost = sum(r.cost_usd or 0 for r in results)
        assert delta(before, after, "dockercc_cost_usd_total",
                     agent="main") == pytest.approx(cost, abs=1e-9)
        out_tokens = sum(int(r.usage.get("output_tokens") or 0) for r in results)
        assert out_tokens > 0
        assert delta(before, after, "dockercc_tokens_total", agent="main",
                     kind="output") == out_tokens
        # the host tool, once
        assert delta(before, after, "dockercc_tool_calls_total", tool="lookup",
                     outcome="ok") == 1
        assert delta(before, after, "dockercc_errors_total") == 0
        # pool sizes as of the scrape: the refilled warm container, nothing busy
        assert value(after, "dockercc_pool_containers", state="warm") == 1
        assert value(after, "dockercc_pool_containers", state="busy") == 0
    finally:
        await gateway.stop()


# -- traces --------------------------------------------------------------------------------


def test_tracing_is_a_no_op_without_a_provider_or_otel() -> None:
    """In a fresh process (a tracer provider, once set by another test, stays for the
    process): without one, tracing makes nothing."""
    import subprocess
    import sys

    code = ("from dockercc import tracing\n"
            "assert not tracing.enabled()\n"
            "assert tracing.TurnTrace.start('s', 'main') is None\n"
            "with tracing.claim_span(None, 's', 'main') as span:\n"
            "    assert span is None\n"
            "with tracing.tool_span(None, {'traceparent': 'junk'}, 's') as span:\n"
            "    assert span is None\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_spans_exported_to_a_local_file(tmp_path: Any) -> None:
    """``tracing.export_to_file``: one JSON span per line (in a fresh process: a tracer
    provider is set once per process)."""
    dev_import("opentelemetry.sdk")
    import subprocess
    import sys

    out = tmp_path / "spans.jsonl"
    code = ("from dockercc import tracing\n"
            f"p = tracing.export_to_file({str(out)!r})\n"
            "t = tracing.TurnTrace.start('s-file', 'main')\n"
            "with tracing.claim_span(t, 's-file', 'main'): pass\n"
            "t.end(outcome='ok')\n"
            "p.shutdown()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    spans = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["name"] for s in spans] == ["dockercc.claim", "dockercc.turn"]
    assert spans[0]["context"]["trace_id"] == spans[1]["context"]["trace_id"]
    assert spans[0]["parent_id"] == spans[1]["context"]["span_id"]


def _memory_exporter() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # (set once per process)
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.mark.docker
async def test_one_turn_with_a_host_tool_is_one_trace_across_the_container(
        make_config: Any, api: Any) -> None:
    dev_import("opentelemetry.sdk")
    from dockercc import tool

    @tool
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        return f"value-of-{key}"

    exporter = _memory_exporter()
    api.script(tool_use("mcp__host__lookup", {"key": "beta"}), text("found beta"))
    async with AsyncPool(make_config(pool={"minWarm": 1}), tools=[lookup]) as pool:
        s = pool.session(session_id=f"trace-{uuid.uuid4().hex[:8]}")
        result = await s.ask("look up beta", timeout=120)
        assert result.text == "found beta"
        await s.close(forget=True)
    spans = [sp for sp in exporter.get_finished_spans()
             if sp.attributes.get("dockercc.session") == s.id
             or sp.name == "dockercc.tool"]
    exporter.shutdown()  # (the provider stays for the process: keep nothing more)
    by_name: dict[str, list[Any]] = {}
    for sp in spans:
        by_name.setdefault(sp.name, []).append(sp)
    (turn,) = by_name["dockercc.turn"]
    (claim,) = by_name["dockercc.claim"]
    (runner,) = by_name["dockercc.runner.turn"]
    call = [sp for sp in by_name["dockercc.runner.mcp"]
            if sp.attributes.get("mcp.method") == "tools/call"]
    assert len(call) == 1
    (relay,) = call
    (tool_span,) = [sp for sp in by_name["dockercc.tool"]
                    if sp.attributes.get("dockercc.tool") == "lookup"]
    trace_id = turn.context.trace_id
    assert turn.parent is None
    for child in (claim, runner, relay, tool_span):
        assert child.context.trace_id == trace_id, child.name
    assert claim.parent.span_id == turn.context.span_id
    assert claim.attributes["dockercc.warm"] is True
    assert runner.parent.span_id == turn.context.span_id
    # the runner sent the turn's traceparent back with its MCP request: the relay span hangs
    # under the runner's turn, the tool under the relay
    assert relay.attributes["dockercc.traceparent_echoed"] is True
    assert relay.parent.span_id == runner.context.span_id
    assert tool_span.parent.span_id == relay.context.span_id
    # the runner's times (its clock) sit inside the host's turn
    assert turn.start_time <= runner.start_time <= relay.start_time
    assert tool_span.end_time <= runner.end_time <= turn.end_time
    assert turn.attributes["dockercc.outcome"] == "ok"


# -- logs ----------------------------------------------------------------------------------


def test_json_log_lines_carry_ids_and_redact() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JSONFormatter("gateway"))
    log = logging.getLogger("dockercc.test_observability")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with logs.bound(session="s-1", container="c0ffee"):
            log.warning("redis at %s refused", "redis://:hunter2secret@127.0.0.1:6379/0")
            try:
                raise ValueError("key sk-ant-api03-SECRETSECRETSECRET in the way")
            except ValueError:
                log.exception("failed")
        log.info("outside", extra={"session": "s-2"})
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    assert lines[0]["session"] == "s-1" and lines[0]["container"] == "c0ffee"
    assert lines[0]["process"] == "gateway" and lines[0]["level"] == "WARNING"
    assert "hunter2secret" not in stream.getvalue() and "SECRETSECRET" not in stream.getvalue()
    assert "***" in lines[0]["msg"] and "ValueError" in lines[1]["exc"]
    assert lines[2]["session"] == "s-2" and "container" not in lines[2]
    with pytest.raises(ValueError, match="json or text"):
        logs.configure("xml")


def test_labels_from_the_container_stay_bounded() -> None:
    """Error codes and result subtypes come from the container: unknown ones share a label."""
    assert metrics.runner_error("cli_exited") == "cli_exited"
    assert metrics.runner_error("anything-a-runner-says-1234") == "runner_error"
    assert metrics.result_error("error_max_turns") == "result_error_max_turns"
    assert metrics.result_error("error_" + "x" * 500) == "result_error"
    assert metrics.loss_reason("out of memory (killed by the memory limit)") == "out_of_memory"
    assert metrics.loss_reason("container exited (exit code 137)") == "exited"
