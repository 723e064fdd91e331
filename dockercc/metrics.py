"""Prometheus metrics of a dockercc process: one registry, small hooks.

Everything is registered in :data:`REGISTRY` (not ``prometheus_client``'s global one), so a
process can expose dockercc's figures next to its own or alone:

- ``dockercc serve`` serves them at ``GET /metrics`` (see :mod:`dockercc.gateway`);
- any other process: :func:`start_http_server` (loopback by default), or mount
  :func:`asgi_app` / read :func:`render` yourself.

The pool and session code call the ``on_*`` hooks below; each is a few dictionary lookups and
never raises. Labels are bounded: agent names (from the configuration), claim kinds, error
codes and loss reasons, never session ids or container names (those would grow without
bound, and they are what the gateway hides from callers without its token).

Why ``prometheus_client``: it is the reference client of the format every scraper reads
(Prometheus, the OpenTelemetry collector, Grafana Agent), pure Python, no dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "REGISTRY", "CONTENT_TYPE", "render", "start_http_server", "asgi_app",
    "on_claim", "on_first_token", "on_turn", "on_events", "on_error", "on_lost",
    "on_pool_sizes", "on_tool_call", "loss_reason",
]

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# seconds: a warm claim takes milliseconds, a cold one seconds, a turn up to minutes
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

POOL_CONTAINERS = Gauge(
    "dockercc_pool_containers", "Containers in the shared pool registry, by state "
    "(all processes on this Redis; refreshed by health passes and scrapes)",
    ["state"], registry=REGISTRY)
CLAIMS = Counter("dockercc_claims", "Containers claimed by sessions of this process",
                 ["agent", "kind"], registry=REGISTRY)
CLAIM_SECONDS = Histogram("dockercc_claim_seconds", "Time to claim a container (queue, "
                          "create if cold, runner confirmation)", ["kind"], buckets=_FAST,
                          registry=REGISTRY)
FIRST_TOKEN_SECONDS = Histogram(
    "dockercc_first_token_seconds", "From send() to the turn's first text delta",
    ["agent"], buckets=_FAST, registry=REGISTRY)
TURN_SECONDS = Histogram("dockercc_turn_seconds", "From send() to the turn's result",
                         ["agent", "outcome"], buckets=_SLOW, registry=REGISTRY)
TURNS = Counter("dockercc_turns", "Turns that ended, by outcome", ["agent", "outcome"],
                registry=REGISTRY)
EVENTS = Counter("dockercc_events_relayed", "Typed events delivered to callers, by type",
                 ["agent", "type"], registry=REGISTRY)
ERRORS = Counter("dockercc_errors", "Errors, by type (exception class or error code)",
                 ["type"], registry=REGISTRY)
LOST = Counter("dockercc_containers_lost", "Containers lost, by reason", ["reason"],
               registry=REGISTRY)
COST = Counter("dockercc_cost_usd", "Cost the CLI reported for finished turns (USD)",
               ["agent"], registry=REGISTRY)
TOKENS = Counter("dockercc_tokens", "Tokens the CLI reported for finished turns",
                 ["agent", "kind"], registry=REGISTRY)
TOOL_CALLS = Counter("dockercc_tool_calls", "Host MCP tool calls answered by this process",
                     ["tool", "outcome"], registry=REGISTRY)
TOOL_SECONDS = Histogram("dockercc_tool_seconds", "Host MCP tool call duration", ["tool"],
                         buckets=_SLOW, registry=REGISTRY)

_TOKEN_KINDS = {"input_tokens": "input", "output_tokens": "output",
                "cache_read_input_tokens": "cache_read",
                "cache_creation_input_tokens": "cache_creation"}
_LABEL_RE = re.compile(r"[^A-Za-z0-9_.:-]")


def _label(value: object, limit: int = 64) -> str:
    """A label value that cannot carry markup or grow without bound."""
    return _LABEL_RE.sub("_", str(value))[:limit] or "unknown"


def loss_reason(reason: str) -> str:
    """A bounded label for a pool loss reason (the pool's text carries exit codes)."""
    text = reason.lower()
    for key, label in (("memory", "out_of_memory"), ("removed", "removed"),
                       ("heartbeat", "heartbeat_stale"), ("exit code", "exited")):
        if key in text:
            return label
    return "other"


def on_claim(agent: str, warm: bool, ms: float) -> None:
    kind = "warm" if warm else "cold"
    CLAIMS.labels(_label(agent), kind).inc()
    CLAIM_SECONDS.labels(kind).observe(ms / 1000)


def on_first_token(agent: str, seconds: float) -> None:
    FIRST_TOKEN_SECONDS.labels(_label(agent)).observe(seconds)


def on_turn(agent: str, seconds: float | None, outcome: str, *, cost_usd: float | None = None,
            usage: Mapping[str, Any] | None = None) -> None:
    """A turn ended: ``outcome`` is ``ok``, ``error``, ``interrupted``, ``lost``,
    ``timeout``."""
    a = _label(agent)
    TURNS.labels(a, outcome).inc()
    if seconds is not None:
        TURN_SECONDS.labels(a, outcome).observe(seconds)
    if cost_usd:
        COST.labels(a).inc(max(0.0, float(cost_usd)))
    for key, kind in _TOKEN_KINDS.items():
        value = (usage or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            TOKENS.labels(a, kind).inc(value)


def on_events(agent: str, counts: Mapping[str, int]) -> None:
    """Events of one turn, counted by the reader and added once (the relay loop is hot)."""
    a = _label(agent)
    for kind, n in counts.items():
        if n:
            EVENTS.labels(a, _label(kind)).inc(n)


# error codes and result subtypes come from the container (runner events, the CLI's result
# line): only known ones become labels, anything else one bucket, so a hostile agent cannot
# grow the registry
RUNNER_ERRORS = frozenset({"cli_exited", "container_lost"})
RESULT_SUBTYPES = frozenset({"error_max_turns", "error_during_execution", "error_max_budget_usd",
                             "error_max_structured_output_retries"})


def runner_error(code: str) -> str:
    return code if code in RUNNER_ERRORS else "runner_error"


def result_error(subtype: str | None) -> str:
    return f"result_{subtype}" if subtype in RESULT_SUBTYPES else "result_error"


def on_error(kind: str) -> None:
    ERRORS.labels(_label(kind)).inc()


def on_lost(reason: str) -> None:
    LOST.labels(loss_reason(reason)).inc()


def on_pool_sizes(counts: Mapping[str, int]) -> None:
    for state in ("creating", "warm", "busy", "stopping"):
        POOL_CONTAINERS.labels(state).set(counts.get(state, 0))


def on_tool_call(tool: str, seconds: float, ok: bool) -> None:
    t = _label(tool)
    TOOL_CALLS.labels(t, "ok" if ok else "error").inc()
    TOOL_SECONDS.labels(t).observe(seconds)


def render() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)


def start_http_server(port: int, addr: str = "127.0.0.1") -> tuple[Any, Any]:
    """Serve :data:`REGISTRY` at ``http://addr:port/metrics`` from a daemon thread (loopback
    by default: the figures say what runs here). Returns ``(server, thread)``; call
    ``server.shutdown()`` to stop. ``port=0`` picks a free port (``server.server_port``)."""
    import prometheus_client

    return prometheus_client.start_http_server(port, addr=addr, registry=REGISTRY)


def asgi_app() -> Any:
    """An ASGI app serving :data:`REGISTRY` (mount it in your own server; add your own auth)."""
    import prometheus_client

    return prometheus_client.make_asgi_app(registry=REGISTRY)
