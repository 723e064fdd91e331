"""One error tree for the whole SDK, rooted at :class:`DockerCCError`.

Every error says what went wrong and, where it can, what to do about it. Errors never carry
secrets: messages are built from redacted values only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .events import Result

__all__ = [
    "DockerCCError",
    "WorkspaceError",
    "PathEscape",
    "FileNotFoundInWorkspace",
    "ArchiveRefused",
    "CommandTimeout",
    "ConfigError",
    "IsolationError",
    "InvalidSessionId",
    "InvalidPrompt",
    "TransportError",
    "RedisServerError",
    "PoolError",
    "PoolExhausted",
    "StartupTimeout",
    "ContainerLost",
    "CLIDied",
    "ImageError",
    "AgentError",
    "ToolError",
    "ProviderUnavailable",
    "DeadlockError",
    "SessionClosed",
]


class DockerCCError(Exception):
    """Base of every error raised by dockercc."""


class ConfigError(DockerCCError, ValueError):
    """Configuration is invalid. ``problems`` lists ``(path, value, allowed)`` for each bad key."""

    def __init__(self, message: str, problems: list[tuple[str, Any, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, Any, str]] = problems or []


class IsolationError(ConfigError):
    """The Redis server cannot keep containers apart: it has no ACLs (Redis 7+ needed) or the
    pool's Redis user may not manage ACL users. The message says what to grant, or how to
    opt out (``redis.containerAcl: false``)."""


class InvalidSessionId(DockerCCError, ValueError):
    """A session id (or agent name) is not safe to use in a Redis key or a container name."""


class InvalidPrompt(DockerCCError, ValueError):
    """A prompt is empty, malformed or larger than ``max_prompt_bytes``."""


class TransportError(DockerCCError):
    """Redis could not be reached or answered unexpectedly."""


class RedisServerError(TransportError):
    """A throwaway ``redis-server`` (:class:`dockercc.testing.RedisServer`) is not installed
    or did not start; the message says why (with the tail of its log)."""


class BudgetExceeded(DockerCCError):
    """A spend limit is reached: ``scope`` (``"pool"``, ``"agent:<name>"`` or ``"session"``),
    ``spent_usd`` against ``limit_usd`` over ``window_s``; ``in_flight_usd``: what turns
    already admitted (running, cost not known yet) are expected to add."""

    def __init__(self, scope: str, spent_usd: float, limit_usd: float,
                 window_s: float | None = None, *, in_flight_usd: float = 0.0) -> None:
        where = f" in the last {window_s:g} s" if window_s else ""
        running = (f" (+ ${in_flight_usd:.4f} expected from turns still running)"
                   if in_flight_usd else "")
        hint = ("raise max_budget_usd" if scope == "session" else
                "raise its `budget.usd` or wait until the window has moved on")
        super().__init__(f"{scope} budget exceeded: ${spent_usd:.4f} spent{where}{running} "
                         f"of ${limit_usd:.4f}; {hint}")
        self.in_flight_usd = in_flight_usd
        self.scope = scope
        self.spent_usd = spent_usd
        self.limit_usd = limit_usd
        self.window_s = window_s


class PoolError(DockerCCError):
    """The container pool could not provide a container."""


class PoolExhausted(PoolError):
    """A claim waited for a free slot longer than the acquire timeout allows."""

    def __init__(self, message: str, *, limit: str, counts: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.counts = counts or {}


class StartupTimeout(PoolError):
    """A container did not report ready within ``startupMs``."""


class ContainerLost(PoolError):
    """A container died, stopped heartbeating or was removed while it served a session."""


class CLIDied(ContainerLost):
    """The session's Claude Code CLI died mid-turn; the runner restarted it, so the turn was
    lost but the session goes on (the next prompt continues the conversation). ``exit_code``
    is the CLI's (negative: the signal), ``reason`` the likely cause the runner found
    (``"out_of_memory"``, ``"pids_limit"``) or None."""

    def __init__(self, message: str, *, exit_code: int | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.reason = reason


class ImageError(DockerCCError):
    """The agent image is missing or could not be built."""


class AgentError(DockerCCError):
    """The agent finished a turn with an error. ``result`` is the turn's :class:`~dockercc.events.Result`."""

    def __init__(self, message: str, result: Result | Any | None = None) -> None:
        super().__init__(message)
        self.result = result


class StructuredOutputError(AgentError):
    """With ``output_format``: the turn's structured output is missing or does not match the
    schema. ``result`` is the turn's Result; ``problems`` lists each mismatch."""

    def __init__(self, message: str, result: Any = None,
                 problems: list[str] | None = None) -> None:
        super().__init__(message, result)
        self.problems: list[str] = problems or []


class ToolError(DockerCCError):
    """A host tool failed or was called with bad arguments."""


class ProviderUnavailable(DockerCCError):
    """No provider in the fallback chain could serve the request."""

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or {}


class DeadlockError(DockerCCError, RuntimeError):
    """A sync call was made from the facade's own event-loop thread, where it would hang."""


class SessionClosed(DockerCCError):
    """The session was closed; open a new one (or resume it) to go on."""


class BadData(DockerCCError, ValueError):
    """Data from a container or from Redis failed validation (too big, too deep, not JSON,
    wrong types): it is dropped (or quarantined), never acted on."""


class TranscriptRejected(DockerCCError):
    """A session's saved CLI transcript failed the host's check (missing or wrong seal, bad
    shape): it is not restored into a container; open a new session instead."""


class SessionExists(DockerCCError, ValueError):
    """A new session was given an id that already has keys in Redis (a closed session's, or
    planted ones): pass ``resume=`` to continue that session, or use another id."""


class WorkspaceError(DockerCCError):
    """A file or command operation on a session's workspace failed (the session has no
    container, the container refused, a limit was hit). The message says what and where."""


class PathEscape(WorkspaceError, ValueError):
    """A workspace path is absolute, holds ``..``, or resolves (through a symlink) outside
    the workspace: refused before anything is read or written."""


class FileNotFoundInWorkspace(WorkspaceError, FileNotFoundError):
    """The path does not exist in the session's workspace."""


class ArchiveRefused(WorkspaceError):
    """A tar stream from the container was refused while unpacking it on the host: a member
    with an absolute path, ``..``, a link leading out, a device, or more bytes or members
    than the download's limits (a tar bomb). Nothing outside the destination was written."""


class CommandTimeout(WorkspaceError, TimeoutError):
    """``session.run`` did not finish within its ``timeout``; the command was killed.
    ``result`` holds what it printed until then."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
