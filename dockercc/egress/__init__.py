"""Egress for agent containers: a host-side proxy per pool (:mod:`.proxy`), reached over one
unix socket per container, and the pure allow-list logic it applies (:mod:`.policy`).
See docs/egress.md."""

from .policy import EgressPolicy, Refused, normalize_host, parse_rule
from .proxy import (
    DENIED_HEADER,
    Denial,
    EgressError,
    EgressProxy,
    UnixRelay,
    Upstream,
    default_runtime_dir,
)

__all__ = ["EgressPolicy", "Refused", "normalize_host", "parse_rule", "DENIED_HEADER",
           "Denial", "EgressError", "EgressProxy", "UnixRelay", "Upstream",
           "default_runtime_dir"]
