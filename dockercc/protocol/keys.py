"""Redis key names (the seed's key table) and validation of the ids that go into them.

Pure: no I/O. Every key the SDK touches is built here, so the seed's troubleshooting commands
(``redis-cli hgetall "clawdbot:cc:<session>:state"``) keep working verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidSessionId

DEFAULT_PREFIX = "clawdbot:cc:"
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
OUTPUT_BUFFER_MAX = 1000


def validate_id(value: object, what: str = "session id") -> str:
    """Return ``value`` if it is a safe id (``[A-Za-z0-9._-]``, 1-128 chars, no leading
    punctuation); raise :class:`InvalidSessionId` saying what is allowed otherwise."""
    if not isinstance(value, str) or not SESSION_ID_RE.fullmatch(value):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidSessionId(
            f"invalid {what} {shown}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The seed's per-session keys, plus the reliable-input processing list."""

    prefix: str
    session: str

    def __init__(self, session: str, prefix: str = DEFAULT_PREFIX) -> None:
        object.__setattr__(self, "session", validate_id(session))
        object.__setattr__(self, "prefix", prefix)

    @property
    def base(self) -> str:
        return f"{self.prefix}{self.session}"

    @property
    def input(self) -> str:
        return f"{self.base}:input"

    @property
    def processing(self) -> str:
        return f"{self.base}:input:processing"

    @property
    def output(self) -> str:
        return f"{self.base}:output"

    @property
    def output_buffer(self) -> str:
        return f"{self.base}:output_buffer"

    @property
    def state(self) -> str:
        return f"{self.base}:state"

    @property
    def result(self) -> str:
        return f"{self.base}:result"

    @property
    def control(self) -> str:
        return f"{self.base}:control"

    @property
    def mcp_requests(self) -> str:
        """List: MCP messages relayed from the CLI to the host bridge."""
        return f"{self.base}:mcp:requests"

    def mcp_reply(self, request_id: str) -> str:
        """List: the host bridge's reply to one relayed MCP message (BLPOP by the runner)."""
        return f"{self.base}:mcp:reply:{request_id}"

    @property
    def history(self) -> str:
        """List: one JSON entry per turn (prompt, text, tool calls, outcome), bounded."""
        return f"{self.base}:history"

    @property
    def transcript(self) -> str:
        """Hash: the CLI's own transcript (compressed), for resuming in a new container."""
        return f"{self.base}:transcript"

    def all(self) -> list[str]:
        """Every fixed key of this session (for cleanup)."""
        return [
            self.input,
            self.processing,
            self.output_buffer,
            self.state,
            self.result,
            self.mcp_requests,
            self.history,
            self.transcript,
            self.control,
            self.output,
        ]


@dataclass(frozen=True, slots=True)
class PoolKeys:
    """Keys of the shared pool registry."""

    prefix: str = DEFAULT_PREFIX

    @property
    def containers(self) -> str:
        """Hash: container id -> JSON record."""
        return f"{self.prefix}pool:containers"

    def warm(self, spec: str) -> str:
        """List: ids of warm containers of one spec, claimed with LPOP (atomic)."""
        return f"{self.prefix}pool:warm:{spec}"

    def assign(self, container: str) -> str:
        """List: assignment messages for one warm runner (BLPOP by the runner)."""
        return f"{self.prefix}pool:assign:{container}"

    def container_state(self, container: str) -> str:
        """Hash: a runner's own state and heartbeat before and after it gets a session."""
        return f"{self.prefix}pool:container:{container}"

    @property
    def instance(self) -> str:
        """String: this Redis's pool identity, put on every container as a label."""
        return f"{self.prefix}pool:instance"

    @property
    def owners(self) -> str:
        """Hash: pool owner id -> last heartbeat (ms)."""
        return f"{self.prefix}pool:owners"

    @property
    def lock(self) -> str:
        return f"{self.prefix}pool:lock"

    @property
    def sessions(self) -> str:
        """Hash: session id -> JSON record (agent, container, created, ...)."""
        return f"{self.prefix}sessions"

    @property
    def queue(self) -> str:
        """Sorted set: waiting claims, scored by arrival (fair queue)."""
        return f"{self.prefix}pool:queue"
