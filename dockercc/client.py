"""AsyncPool: the async entry point — a container pool plus the sessions that use it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bridge import Tool, ToolRegistry
from .bridge import tool as make_tool
from .builtins import (
    ChannelHandler,
    ChannelRegistry,
    CronScheduler,
    PoolBuiltins,
    SearchProvider,
)
from .config import DockerCCConfig, load_config
from .events import Event, Result
from .pool.admission import FirstTurnGate
from .pool.backend import Backend
from .pool.manager import ContainerPool, PoolStats
from .pool.spec import spec_for
from .session import (
    AsyncSession,
    EventCallback,
    SessionOptions,
    default_prestart,
    session_options,
)
from .storage.connection import RedisTransport
from .types import ClaudeAgentOptions

if TYPE_CHECKING:  # pragma: no cover
    from .batch import MapRun

ConfigLike = DockerCCConfig | str | Path | dict[str, Any] | None

MAX_PROMPT_BYTES = 8 * 1024 * 1024


def default_tenant() -> str:
    """The tenant when ``pool.tenant`` is unset: the OS user on this host (stable across
    restarts, so cron jobs outlive their process; distinct for people sharing a Redis)."""
    import getpass
    import re
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (a container's random uid)
        user = str(os.getuid())
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{user}.{socket.gethostname()}")[:128]


class AsyncPool:
    """A pool of agent containers and its sessions.

    ``config`` is ``None`` (defaults + environment + discovered YAML), a
    :class:`DockerCCConfig`, a path to a YAML file, or a dict of overrides.
    ``tools`` (``@tool`` functions) are offered to every session's agent over MCP.
    """

    def __init__(self, config: ConfigLike = None, *, tools: Iterable[Any] = (),
                 env: dict[str, str] | None = None, backend: Backend | None = None,
                 on_event: EventCallback | None = None,
                 max_prompt_bytes: int = MAX_PROMPT_BYTES) -> None:
        self.config = load_config(config)
        self.env = env
        self.on_event = on_event
        self.max_prompt_bytes = max_prompt_bytes
        self.transport = RedisTransport(self.config.redis.url_secret(),
                                        self.config.redis.key_prefix)
        self.containers = ContainerPool(self.config, self.transport, backend=backend, env=env)
        #: arrival-order admission of new sessions' first turns (pool.firstTurnAdmission)
        self.first_turns = FirstTurnGate(self.config.pool.first_turn_admission,
                                         self.config.pool.first_turn_hold_ms / 1000)
        if self.first_turns.enabled:  # a first turn's slot frees as its API request leaves
            self.containers.on_api_request(self._first_request_sent)
        self.tools = ToolRegistry(tools)
        self.sessions_key = self.transport.sessions_key
        #: who the built-in tools of this pool's sessions act for: they reach only sessions
        #: and cron jobs of this tenant (``pool.tenant``; default: the OS user on this host)
        self.tenant: str = self.config.pool.tenant or default_tenant()
        #: ``web_search`` provider set in code (else ``tools.webSearch`` configures one)
        self.search_provider: SearchProvider | None = None
        #: the built-in tools' side: their narrow context, channels and cron scheduler
        self.builtins = PoolBuiltins.for_pool(self)
        self._sessions: dict[str, AsyncSession] = {}
        self._started = False
        self._closed = False
        self._start_lock: asyncio.Lock | None = None
        #: map runs going on (closing the pool stops them first)
        self._map_runs: weakref.WeakSet[MapRun] = weakref.WeakSet()

    def __repr__(self) -> str:
        return (f"AsyncPool(redis={self.transport.url!r}, image={self.config.image!r}, "
                f"sessions={len(self._sessions)})")

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> AsyncPool:
        """Connect, reap what dead owners left, and warm ``minWarm`` containers (and each
        configured agent's ``agents.<name>.minWarm``)."""
        if self._started:
            return self
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return self
            # a warm set per configured agent, its CLI pre-started with that agent's own
            # default session (system prompt, model, tools): `main` keeps pool.minWarm
            for name, agent in self.config.agents.items():
                want = agent.min_warm
                if name == "main":
                    want = max(want, self.config.pool.min_warm)
                if want:
                    self.containers.register_spec(spec_for(self.config, name, env=self.env),
                                                  warm=want,
                                                  prestart=default_prestart(self, name))
            await self.containers.start()
            await self.builtins.start()
            self._started = True
        return self

    async def warm(self, agent: str = "main", count: int | None = None, *,
                   wait: bool = True, timeout: float = 120,
                   workspace: str | os.PathLike[str] | None = None,
                   add_dirs: Iterable[str | os.PathLike[str]] | None = None) -> None:
        """Keep ``count`` (default ``minWarm``, at least 1) warm containers for ``agent``.

        With ``workspace`` / ``add_dirs`` the warm containers are made with those mounts:
        sessions opened with the same ones are then served warm (a container cannot gain a
        mount once started; see docs/workspaces.md)."""
        await self.start()
        target = count if count is not None else max(1, self.config.pool.min_warm)
        if workspace is None and add_dirs is None:
            spec, prestart = spec_for(self.config, agent, env=self.env), default_prestart(
                self, agent)
        else:
            probe = AsyncSession(self, SessionOptions(
                agent=agent, workspace=os.fspath(workspace) if workspace else None,
                add_dirs=None if add_dirs is None else [os.fspath(d) for d in add_dirs]))
            spec, prestart = probe.spec(), probe.prestart()
        self.containers.register_spec(spec, warm=target, prestart=prestart)
        await self.containers.top_up()
        if wait:
            await self.containers.wait_warm(timeout=timeout)

    async def close(self) -> None:
        """Close every session of this pool and remove the containers it owns."""
        if self._closed:
            return
        self._closed = True
        for run in list(self._map_runs):
            with contextlib.suppress(Exception):
                await run.aclose()
        await self.builtins.close()
        await asyncio.gather(*(s.close() for s in list(self._sessions.values())),
                             return_exceptions=True)
        await self.containers.close()
        await self.transport.close()

    async def __aenter__(self) -> AsyncPool:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sessions --------------------------------------------------------------------------

    def session(self, agent: str = "main", options: ClaudeAgentOptions | None = None, *,
                session_id: str | None = None, on_event: EventCallback | None = None,
                **shorthands: Any) -> AsyncSession:
        """A new session (its container is claimed on first use or ``async with``).

        ``options`` is a :class:`dockercc.ClaudeAgentOptions` (claude-agent-sdk's names);
        keyword shorthands (any ``ClaudeAgentOptions`` field name, plus ``tools`` = host
        Python tools, ``workspace``, ``append_system_prompt``: see
        :func:`dockercc.session.session_options`) win over its fields; the agent config
        supplies what neither sets.

        ``workspace``: an absolute host folder mounted at ``/workspace`` (``:ro`` read-only),
        ``volume:NAME`` (a named Docker volume, created on demand and kept), or None (a
        scratch workspace: a volume the session keeps, see ``docker.scratchVolumes``);
        ``add_dirs``: more host folders (read-only unless ``:rw``). Checked
        here, :class:`~dockercc.errors.ConfigError` before any container starts. See
        docs/workspaces.md."""
        opts = session_options(agent, options, **shorthands)
        return self._open(opts, session_id=session_id, on_event=on_event)

    def _open(self, options: SessionOptions, *, session_id: str | None = None,
              on_event: EventCallback | None = None) -> AsyncSession:
        s = AsyncSession(self, options, session_id=session_id, on_event=on_event)
        if s.id in self._sessions:
            raise ValueError(f"session {s.id!r} is already open in this pool")
        self._sessions[s.id] = s
        return s

    def _forget(self, session: AsyncSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def get(self, session_id: str) -> AsyncSession | None:
        """An open session of this pool by id."""
        return self._sessions.get(session_id)

    def _first_request_sent(self, container: str) -> None:
        """A container's CLI sent its API request: its session's first turn is past the
        CPU-heavy start, so the next first turn may go (see :class:`FirstTurnGate`)."""
        for s in self._sessions.values():
            if s.lease is not None and s.lease.container == container:
                self.first_turns.release(s.id)
                return

    @property
    def open_sessions(self) -> list[AsyncSession]:
        return list(self._sessions.values())

    async def sessions(self) -> list[dict[str, Any]]:
        """Every open session in the shared registry (all processes), with its state."""
        out = []
        for sid, record in (await self.transport.session_records()).items():
            out.append({**record, "id": sid, "state": await self.transport.state(sid)})
        return out

    def tool(self, fn: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """Register a host tool for every session (usable as ``@pool.tool``)."""
        def register(f: Callable[..., Any]) -> Tool[Any, Any]:
            t = f if isinstance(f, Tool) else make_tool(f, **kwargs) if kwargs else make_tool(f)
            self.tools.add(t)
            return t
        return register(fn) if fn is not None else register

    def channel(self, name: str, handler: ChannelHandler | None = None, *, redis: bool = False,
                description: str | None = None, replace: bool = False) -> Any:
        """Register a channel for the built-in ``message`` tool: ``handler(ChannelMessage)``
        (sync or async; usable as ``@pool.channel("name")``), or ``redis=True`` to publish on
        ``{keyPrefix}channel:<name>``. Sessions opened afterwards list it."""
        if handler is None and not redis:
            def register(fn: ChannelHandler) -> ChannelHandler:
                self.channels.add(name, fn, description=description, replace=replace)
                return fn
            return register
        self.channels.add(name, handler, redis=redis, description=description, replace=replace)
        return handler

    @property
    def channels(self) -> ChannelRegistry:
        """Channels of the built-in ``message`` tool (see :meth:`channel`)."""
        return self.builtins.channels

    @property
    def cron(self) -> CronScheduler:
        """Scheduled prompts (``cron_*`` tools); the scheduler runs while the pool is started."""
        return self.builtins.cron

    async def stats(self) -> PoolStats:
        return await self.containers.stats()

    def map(self, prompts: Iterable[Any], options: ClaudeAgentOptions | str | None = None, *,
            agent: str = "main", template: str | None = None, concurrency: int | None = None,
            retries: int = 2, budget_usd: float | None = None, name: str | None = None,
            timeout: float | None = 600.0, progress: Any = True,
            retention_s: int = 7 * 86400, keep_sessions: bool = False,
            backoff_s: float = 1.0, reuse: bool = True) -> MapRun:
        """Run every prompt, each in a fresh conversation, ``concurrency`` at a time.

        ``async for r in pool.map(...)`` yields :class:`~dockercc.batch.ItemResult` in
        completion order; ``await pool.map(...).gather()`` (or ``await pool.map(...)``) gives
        :class:`~dockercc.batch.MapResults` in input order. An item is a string, a dict of
        ``template`` fields, or a ``(prompt, options)`` pair; ``options`` is a
        :class:`ClaudeAgentOptions` or the name of a configured agent. Transient failures are
        tried again up to ``retries`` times; with ``name`` finished items are kept in Redis
        for ``retention_s`` and a second call with the same name runs only what is missing;
        ``budget_usd`` stops new items once the run's cost reaches it. ``reuse`` (default):
        each worker keeps a session (container) open and runs each item in a new
        conversation in it (the CLI's ``/clear``): the model sees no other item, but the
        worker's items share its workspace and CLI process; ``reuse=False``: a new session
        (container) per item. Everything is checked here, before anything starts. See docs/experiments.md and :mod:`dockercc.batch`."""
        from .batch import start_map

        return start_map(self, prompts, options=options, agent=agent, template=template,
                         concurrency=concurrency, retries=retries, budget_usd=budget_usd,
                         name=name, timeout=timeout, progress=progress,
                         retention_s=retention_s, keep_sessions=keep_sessions,
                         backoff_s=backoff_s, reuse=reuse)

    async def forget_run(self, name: str) -> bool:
        """Drop the kept items of the named map run (the next call with that name starts
        over); True if there were any."""
        return await self.transport.delete_run(name)

    async def ask(self, prompt: str, **options: Any) -> Result:
        """One prompt in a fresh session, closed afterwards."""
        timeout = options.pop("timeout", None)
        async with self.session(**options) as s:
            return await s.ask(prompt, timeout=timeout)


async def aquery(prompt: str, options: ClaudeAgentOptions | None = None, *,
                 config: ConfigLike = None, timeout: float | None = None,
                 **kwargs: Any) -> AsyncIterator[Event]:
    """claude-agent-sdk's ``query``: one prompt in a fresh session (its own pool), yielding
    the turn's events up to its :class:`Result`; everything is cleaned up when the iteration
    ends. ``ask`` is the way to get just the :class:`Result`."""
    async with AsyncPool(config) as pool, pool.session(options=options, **kwargs) as s:
        async for event in s.stream(prompt, timeout=timeout):
            yield event
