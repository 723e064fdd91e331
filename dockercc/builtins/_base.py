"""What every built-in tool shares: its context, per-pool state, errors and output helpers."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..bridge import Tool, ToolOutput
from ..errors import DockerCCError, ToolError

if TYPE_CHECKING:  # pragma: no cover
    from ..config import DockerCCConfig
    from ..events import Result
    from ..session import AsyncSession
    from ..storage.connection import RedisTransport
    from .cron import CronScheduler
    from .messaging import ChannelRegistry

log = logging.getLogger("dockercc.builtins")

T = TypeVar("T")

TURN_TIMEOUT_S = 1800.0
"""How long a background turn (``sessions_send`` / ``sessions_spawn`` without waiting) may run
before its reader gives up."""


class BuiltinToolError(ToolError):
    """A built-in tool refused or failed; the message goes to the agent as the error result."""


def now_ms() -> int:
    return int(time.time() * 1000)


def to_json(value: Any) -> str:
    """Compact JSON for a tool result (what the model reads)."""
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def age_s(ms: Any, now: int | None = None) -> float | None:
    """Seconds since a millisecond timestamp (None for missing or unparsable values)."""
    try:
        value = int(float(ms))
    except (TypeError, ValueError):
        return None
    if value <= 0:
        return None
    return round(((now if now is not None else now_ms()) - value) / 1000, 1)


_TEMPLATES: dict[tuple[Any, ...], Tool[..., Any]] = {}


def builtin(fn: Callable[..., Awaitable[Any]], *, name: str, description: str,
            timeout: float | None = 60.0) -> Tool[..., Any]:
    """A :class:`Tool` from ``fn`` whose :class:`BuiltinToolError` and other ``DockerCCError``
    become clean error results (the message only, no exception type).

    Tools are made per session from closures of the same code; the argument model and schema
    (the slow part, pydantic) are built once per code object and shared."""

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except DockerCCError as exc:
            return ToolOutput.error(str(exc))

    key = (fn.__code__, name, description, timeout)
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = Tool(run, name=name, description=description,
                                          timeout=timeout)
        return template
    made = copy.copy(template)
    made.fn = run
    made.__wrapped__ = run
    return made


@dataclass
class PoolState:
    """What the built-in tools keep per pool (process-local)."""

    turn_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    spawn_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    docker_clients: dict[str, Any] = field(default_factory=dict)
    exec_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    search: Any = None
    search_checked: bool = False

    def turn_lock(self, session_id: str) -> asyncio.Lock:
        lock = self.turn_locks.get(session_id)
        if lock is None:
            lock = self.turn_locks[session_id] = asyncio.Lock()
        return lock

    by_session: dict[str, set[asyncio.Task[Any]]] = field(default_factory=dict)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str,
              session: str | None = None) -> asyncio.Task[T]:
        """A background task, cancelled when the pool closes (or ``session`` closes)."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        if session is not None:
            self.by_session.setdefault(session, set()).add(task)
            task.add_done_callback(lambda t: self._untrack(session, t))
        task.add_done_callback(self._done)
        return task

    def _untrack(self, session: str, task: asyncio.Task[Any]) -> None:
        tasks = self.by_session.get(session)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self.by_session[session]

    async def cancel_session_tasks(self, session: str) -> None:
        tasks = list(self.by_session.pop(session, set()))
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task %s failed: %s", task.get_name(), task.exception())

    async def aclose(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        clients, self.docker_clients = self.docker_clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.close)


class BuiltinHost:
    """What the built-in tools may use of their pool, and nothing more: built once per pool
    (by :class:`~dockercc.builtins.PoolBuiltins`), instead of handing the tools the whole
    :class:`~dockercc.client.AsyncPool`.

    ``config`` and ``transport`` (Redis), the ``tenant`` the tools act for, ``owner`` (this
    process's id in the pool registry), ``stale_after_ms()`` (when another owner counts as
    gone), ``open_session`` / ``get`` (open a session of this pool, or find one by id),
    ``host_tool_names()`` (the pool's own host tools, for ``config_get``),
    ``explicit_search()`` (a ``web_search`` provider set in code), and ``state`` (what the
    tools keep per pool: locks, background turns, Docker clients). ``channels`` and ``cron``
    are set by the :class:`~dockercc.builtins.PoolBuiltins` that owns them."""

    def __init__(self, *, config: DockerCCConfig, transport: RedisTransport, tenant: str,
                 owner: str, stale_after_ms: Callable[[], int],
                 open_session: Callable[..., AsyncSession],
                 get: Callable[[str], AsyncSession | None],
                 host_tool_names: Callable[[], list[str]],
                 explicit_search: Callable[[], Any]) -> None:
        self.config = config
        self.transport = transport
        self.tenant = tenant
        self.owner = owner
        self.stale_after_ms = stale_after_ms
        self.open_session = open_session
        self.get = get
        self.host_tool_names = host_tool_names
        self.explicit_search = explicit_search
        self.state = PoolState()
        self.channels: ChannelRegistry
        self.cron: CronScheduler

    def __repr__(self) -> str:
        return f"BuiltinHost(tenant={self.tenant!r}, owner={self.owner!r})"


@dataclass
class ToolContext:
    """The pool (as its narrow :class:`BuiltinHost`) and the session a set of built-in tools
    serves."""

    host: BuiltinHost
    session: AsyncSession

    @property
    def config(self) -> DockerCCConfig:
        return self.host.config

    @property
    def transport(self) -> RedisTransport:
        return self.host.transport

    @property
    def state(self) -> PoolState:
        return self.host.state


async def run_turn(host: BuiltinHost, target: AsyncSession, prompt: str,
                   timeout: float = TURN_TIMEOUT_S) -> Result:
    """Send ``prompt`` to a session of this process and read that turn to its Result.

    Turns sent by tools to one session run one after the other (a per-session lock), and the
    session's own reader position advances, so its owner does not see the turn again.
    """
    from ..events import Result

    async with host.state.turn_lock(target.id):
        if is_busy(target):
            raise BuiltinToolError(f"session {target.id!r} is in the middle of a turn its "
                                   f"owner is reading; send again when it is idle")
        await target.send(prompt)
        async for event in target.receive(timeout=timeout):
            if isinstance(event, Result):
                return event
    raise BuiltinToolError(f"session {target.id!r} ended the turn without a result")


def is_busy(session: AsyncSession) -> bool:
    """Whether the session's own reader is inside a turn (a turn sent by a tool holds the
    session's turn lock while it runs, so check that lock first)."""
    return bool(getattr(session, "_turn_open", False))


def result_summary(result: Result, limit: int = 8000) -> dict[str, Any]:
    """What a tool tells the model about a finished turn."""
    text, cut = clip(result.text or "", limit)
    out: dict[str, Any] = {"text": text, "is_error": not result.ok, "subtype": result.subtype}
    if cut:
        out["text_truncated"] = True
    if result.errors:
        out["errors"] = result.errors[:5]
    for name, value in (("cost_usd", result.cost_usd), ("duration_ms", result.duration_ms),
                        ("num_turns", result.num_turns)):
        if value is not None:
            out[name] = value
    return out
