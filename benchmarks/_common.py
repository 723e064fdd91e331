"""Shared parts of the benchmarks: a private Redis, clean CLI environments, statistics."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockercc import testing
from dockercc.errors import RedisServerError

PROMPT = "Say hello in a few words."
REPLY = "Hello there! This is a short answer, streamed word by word."


class RedisServer(testing.RedisServer):
    """The benchmark's own redis-server (loopback port, temporary directory), removed by
    ``close()``; exits with what to do when ``redis-server`` is missing or does not start."""

    def __init__(self) -> None:
        try:
            super().__init__()
        except RedisServerError as exc:
            raise SystemExit(str(exc)) from None


def clean_env(api_env: dict[str, str], home: str) -> dict[str, str]:
    """The host environment without Anthropic/Claude variables, pointed at the scripted API."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC", "CLAUDE")) and k != "DOCKERCC_CLAUDE_BIN"}
    env.update(api_env)
    env["HOME"] = home
    env["IS_SANDBOX"] = "1"
    env["DISABLE_AUTOUPDATER"] = "1"
    return env


def median(xs: Iterable[float]) -> float:
    values = list(xs)
    return statistics.median(values) if values else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not xs:
        return float("nan")
    ordered = sorted(xs)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Samples:
    """Named lists of measurements (milliseconds unless said otherwise)."""

    data: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.data.setdefault(name, []).append(value)

    def extend(self, name: str, values: Iterable[float]) -> None:
        self.data.setdefault(name, []).extend(values)

    def get(self, name: str) -> list[float]:
        return self.data.get(name, [])

    def med(self, name: str) -> float:
        return median(self.get(name))


def load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def fmt_ms(v: float) -> str:
    if v != v:  # nan
        return "-"
    if v >= 100:
        return f"{v:,.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def fmt_ratio(v: float) -> str:
    return "-" if v != v else f"{v:.2f}x"


def render_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
                 notes: Sequence[str] = ()) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)

    def fmt(r: Sequence[str]) -> str:
        return "|".join(f" {c:<{w}} " for c, w in zip(r, widths, strict=True))

    out = [title, line, fmt(cells[0]), line, *[fmt(r) for r in cells[1:]], line, *notes]
    return "\n".join(out)


def write_executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path
