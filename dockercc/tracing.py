"""OpenTelemetry spans of claims, turns and tool calls, joined across the container boundary.

Optional: ``pip install 'dockercc[otel]'`` (``opentelemetry-api`` / ``-sdk``). Without it, or
with OpenTelemetry installed but no tracer provider configured, every function here is a
cheap no-op. Spans go to whatever tracer provider the process configured (an OTLP exporter,
...); :func:`export_to_file` sets up one that writes finished spans as JSON lines.

Spans (tracer ``dockercc``)::

    dockercc.turn                    host: send() -> the turn's result
    ├── dockercc.claim               host: a container for the session (first turn, or after
    │                                a loss); attributes: warm, claim ms
    └── dockercc.runner.turn         the runner: first output of the turn -> its result line
        └── dockercc.runner.mcp      the runner relays one MCP request to the host
            └── dockercc.tool        host: the tool runs (host tools and built-ins alike)

How the container's side joins: the runner needs only ``redis`` and ``pydantic`` (the image
has no OpenTelemetry, and no network to export to), so it makes no spans itself. The host
puts the turn's W3C ``traceparent`` into the prompt's input item; the runner keeps it for the
turn and sends it back with each MCP request it relays. Every envelope carries the runner's
own timestamp (``ts``), and every MCP request the time the runner relayed it, so the host
builds the runner's spans with those times, under the ``traceparent`` that crossed the
container boundary: one trace id from ``send()`` through the runner to the tool.
(Timestamps are the container's clock, which is the host's kernel clock under Docker.)
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["available", "enabled", "TurnTrace", "claim_span", "tool_span", "export_to_file",
           "parse_traceparent"]

try:  # optional extra
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR: Any = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    otel_trace = None  # type: ignore[assignment]
    otel_context = None  # type: ignore[assignment]
    _PROPAGATOR = None

TRACER_NAME = "dockercc"


def available() -> bool:
    """OpenTelemetry's API is installed."""
    return otel_trace is not None


def _tracer() -> Any:
    return otel_trace.get_tracer(TRACER_NAME) if otel_trace is not None else None


def enabled() -> bool:
    """A real tracer provider is configured (spans would be recorded)."""
    if otel_trace is None:
        return False
    provider = otel_trace.get_tracer_provider()
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def parse_traceparent(value: Any) -> Any:
    """The span context in a W3C ``traceparent`` (from the container: bounded, checked), or
    None."""
    if _PROPAGATOR is None or not isinstance(value, str) or len(value) > 64:
        return None
    ctx = _PROPAGATOR.extract({"traceparent": value})
    span = otel_trace.get_current_span(ctx)
    sc = span.get_span_context()
    return ctx if sc.is_valid else None


def _traceparent(span: Any) -> str:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=otel_trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


class TurnTrace:
    """The spans of one turn (host side, and the runner's built from its timestamps).

    ``TurnTrace.start(...)`` returns None when tracing is off, so callers hold an optional."""

    def __init__(self, span: Any, session: str, agent: str) -> None:
        self.span = span
        self.session = session
        self.traceparent = _traceparent(span)
        self.context = otel_trace.set_span_in_context(span)
        self.runner: Any = None  # dockercc.runner.turn, opened at the turn's first envelope
        self.runner_context: Any = None
        self._lock = threading.Lock()
        self.agent = agent

    @classmethod
    def start(cls, session: str, agent: str) -> TurnTrace | None:
        if not enabled():
            return None
        span = _tracer().start_span("dockercc.turn", attributes={
            "dockercc.session": session, "dockercc.agent": agent})
        return cls(span, session, agent)

    def envelope(self, ts_ms: int, container: str | None) -> None:
        """An envelope of this turn arrived (runner time ``ts_ms``): the first one opens the
        runner's span."""
        if self.runner is not None or not ts_ms:
            return
        with self._lock:
            if self.runner is None:
                self.runner = _tracer().start_span(
                    "dockercc.runner.turn", context=self.context, start_time=ts_ms * 1_000_000,
                    attributes={"dockercc.session": self.session,
                                "dockercc.container": container or "",
                                "dockercc.clock": "runner"})
                self.runner_context = otel_trace.set_span_in_context(self.runner)

    def mcp_parent(self, traceparent: Any) -> Any:
        """The parent of an MCP request's spans: this turn's runner span when the request
        carries this turn's trace (the traceparent came back out of the container), else the
        context it carries."""
        ctx = parse_traceparent(traceparent)
        if ctx is None:
            return None
        sc = otel_trace.get_current_span(ctx).get_span_context()
        if sc.trace_id == self.span.get_span_context().trace_id and self.runner_context:
            return self.runner_context
        return ctx

    def end(self, *, result_ts_ms: int = 0, outcome: str = "ok",
            attributes: dict[str, Any] | None = None) -> None:
        if self.runner is not None:
            self.runner.end(end_time=result_ts_ms * 1_000_000 if result_ts_ms else None)
        self.span.set_attribute("dockercc.outcome", outcome)
        for key, value in (attributes or {}).items():
            if value is not None:
                self.span.set_attribute(key, value)
        if outcome not in ("ok", "interrupted"):
            self.span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, outcome))
        self.span.end()


@contextlib.contextmanager
def claim_span(turn: TurnTrace | None, session: str, agent: str) -> Iterator[Any]:
    """``dockercc.claim`` under the turn (or a root span when the claim has no turn)."""
    if not enabled():
        yield None
        return
    ctx = turn.context if turn is not None else None
    with _tracer().start_as_current_span("dockercc.claim", context=ctx, attributes={
            "dockercc.session": session, "dockercc.agent": agent}) as span:
        yield span


def tool_span(turn: TurnTrace | None, request: dict[str, Any], session: str) -> Any:
    """Spans for one relayed MCP request: ``dockercc.runner.mcp`` (from the time the runner
    relayed it) and ``dockercc.tool`` below it; a context manager yielding the tool span."""
    return _ToolSpans(turn, request, session)


class _ToolSpans:
    def __init__(self, turn: TurnTrace | None, request: dict[str, Any], session: str) -> None:
        self.turn, self.request, self.session = turn, request, session
        self.relay: Any = None
        self.tool: Any = None

    def __enter__(self) -> Any:
        if not enabled():
            return None
        req = self.request
        echoed = parse_traceparent(req.get("traceparent")) is not None
        if self.turn is not None:
            # no traceparent: the CLI's start-up handshake of a cold container, which runs
            # during the session's first turn (before any prompt reached the runner)
            parent = (self.turn.mcp_parent(req.get("traceparent")) if echoed
                      else self.turn.runner_context or self.turn.context)
        elif echoed:
            parent = parse_traceparent(req.get("traceparent"))
        else:
            return None  # between turns, from no turn: nothing to join
        message = req.get("message")
        message = message if isinstance(message, dict) else {}
        method = str(message.get("method") or "")[:64]
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        name = str(params.get("name") or "")[:128] if method == "tools/call" else ""
        ts = req.get("ts")
        start = int(ts) * 1_000_000 if isinstance(ts, int) and not isinstance(ts, bool) else None
        tracer = _tracer()
        self.relay = tracer.start_span("dockercc.runner.mcp", context=parent, start_time=start,
                                       attributes={"dockercc.session": self.session,
                                                   "dockercc.container":
                                                       str(req.get("container") or "")[:64],
                                                   "mcp.method": method,
                                                   "dockercc.traceparent_echoed": echoed,
                                                   "dockercc.clock": "runner"})
        self.tool = tracer.start_span(
            "dockercc.tool", context=otel_trace.set_span_in_context(self.relay),
            attributes={"mcp.method": method, "dockercc.tool": name})
        return self.tool

    def __exit__(self, *exc: Any) -> None:
        if self.tool is not None:
            if exc[0] is not None:
                self.tool.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR,
                                                       str(exc[0].__name__)))
            self.tool.end()
            self.relay.end()


def export_to_file(path: str) -> Any:
    """Configure a tracer provider that writes each finished span as one JSON line to ``path``
    (needs ``opentelemetry-sdk``). Returns the provider (``provider.shutdown()`` flushes)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class _FileExporter(SpanExporter):
        def __init__(self) -> None:
            self._lock = threading.Lock()

        def export(self, spans: Any) -> Any:
            with self._lock, open(path, "a", encoding="utf-8") as f:
                for span in spans:
                    f.write(json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_FileExporter()))
    otel_trace.set_tracer_provider(provider)
    return provider
