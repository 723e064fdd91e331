"""``python -m benchmarks --metrics``: scrape the benchmark process's own ``/metrics`` (served
by :func:`dockercc.metrics.start_http_server` on the loopback) around the measured sections and
compare what Prometheus would see with what the benchmark measured itself.

Histograms keep counts and sums, not samples, so the comparison is of counts and means: claims
by kind (the pool's ``Lease.claim_ms``, the same figure the benchmark reports), first tokens
(``send()`` -> first text delta; the benchmark's clock starts before it builds the session
object, about 2 ms earlier on a busy 2-core machine) and turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dockercc import metrics

from ._common import render_table


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    text = httpx.get(url, timeout=30).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= set(ls))


@dataclass
class MetricsCheck:
    """Deltas of the scraped metrics over the windows between :meth:`begin` and :meth:`end`,
    next to what the benchmark recorded in the same windows (:meth:`record`)."""

    url: str = ""
    active: bool = False
    deltas: dict[str, float] = field(default_factory=dict)
    measured: dict[str, list[float]] = field(default_factory=dict)
    _server: Any = None
    _before: dict[Any, float] = field(default_factory=dict)

    NAMES = {  # figure -> (metric, labels)
        "claims_warm": ("dockercc_claim_seconds_count", {"kind": "warm"}),
        "claim_warm_s": ("dockercc_claim_seconds_sum", {"kind": "warm"}),
        "claims_cold": ("dockercc_claim_seconds_count", {"kind": "cold"}),
        "claim_cold_s": ("dockercc_claim_seconds_sum", {"kind": "cold"}),
        "first_tokens": ("dockercc_first_token_seconds_count", {}),
        "first_token_s": ("dockercc_first_token_seconds_sum", {}),
        "turns": ("dockercc_turn_seconds_count", {}),
    }

    def start(self) -> None:
        self._server, _thread = metrics.start_http_server(0)
        self.url = f"http://127.0.0.1:{self._server.server_port}/metrics"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def begin(self) -> None:
        self._before = _scrape(self.url)
        self.active = True

    def end(self) -> None:
        if not self.active:
            return
        self.active = False
        after = _scrape(self.url)
        for key, (name, labels) in self.NAMES.items():
            self.deltas[key] = self.deltas.get(key, 0.0) + (
                _value(after, name, **labels) - _value(self._before, name, **labels))

    def record(self, name: str, value: float) -> None:
        if self.active:
            self.measured.setdefault(name, []).append(value)

    def table(self) -> str:
        d, m = self.deltas, self.measured
        rows: list[list[str]] = []

        def row(label: str, bench: float, scraped: float, unit: str = "") -> None:
            fmt = (lambda x: f"{x:.0f}") if not unit else (lambda x: f"{x:.1f} {unit}")
            diff = scraped - bench
            rows.append([label, fmt(bench), fmt(scraped),
                         f"{diff:+.2f}{' ' + unit if unit else ''}"])

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs) if xs else float("nan")

        for kind in ("warm", "cold"):
            claims = m.get(f"claim_{kind}", [])
            n = d.get(f"claims_{kind}", 0.0)
            row(f"claims, {kind}", len(claims), n)
            if claims and n:
                row(f"claim latency, {kind}: mean", mean(claims),
                    d[f"claim_{kind}_s"] * 1000 / n, "ms")
        tokens = m.get("first_token", [])
        n = d.get("first_tokens", 0.0)
        row("first tokens", len(tokens), n)
        if tokens and n:
            row("first token: mean", mean(tokens), d["first_token_s"] * 1000 / n, "ms")
        row("turns", len(m.get("turn", [])), d.get("turns", 0.0))
        notes = [f"scraped {self.url} before and after the measured sections (first-token, "
                 "the concurrency runs, warm-ups included); counts must match exactly, claim "
                 "latencies to the rounding, first tokens within a few ms (the benchmark's "
                 "clock starts before it builds the session object, /metrics' at send())"]
        return render_table("/metrics vs the benchmark's own figures",
                            ["figure", "benchmark", "/metrics", "difference"], rows, notes)
