"""The sync facade: :class:`Pool` and :class:`Session` run the async core on the portal.

They hold no logic of their own: every method submits the matching AsyncPool/AsyncSession
call to the process's background loop (see :mod:`dockercc._portal`). Ctrl-C during
:meth:`Session.stream` or :meth:`Session.ask` interrupts the agent, waits for the turn to
end (so the session stays usable), then raises KeyboardInterrupt.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ._portal import portal
from .batch import ItemResult, MapResults, MapRun
from .client import AsyncPool, ConfigLike
from .events import Event, Result
from .files import AsyncFiles, CommandResult, FileInfo
from .pool.manager import PoolStats
from .session import AsyncSession
from .types import ClaudeAgentOptions

_open_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
_sigterm_installed = False


def _install_exit_cleanup() -> None:
    """Close open pools at exit and on SIGTERM (their containers are removed)."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_installed = True
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            def on_term(signum: int, frame: Any) -> None:
                raise SystemExit(128 + signum)
            signal.signal(signal.SIGTERM, on_term)


def _close_open_pools() -> None:
    for pool in list(_open_pools):
        with contextlib.suppress(BaseException):
            pool.close()


# Run before interpreter shutdown stops thread pools (the Docker calls need one): threading's
# own exit hooks run before atexit's, newest first. Fall back to atexit where it is missing.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_close_open_pools)
else:  # pragma: no cover
    atexit.register(_close_open_pools)


class Files:
    """Sync twin of :class:`~dockercc.files.AsyncFiles`: same methods, same errors."""

    def __init__(self, inner: AsyncFiles) -> None:
        self.aio = inner

    def write(self, path: str, data: bytes | str) -> None:
        portal().run(self.aio.write(path, data))

    def read(self, path: str, **kwargs: Any) -> bytes:
        return portal().run(self.aio.read(path, **kwargs))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return portal().run(self.aio.read_text(path, encoding))

    def list(self, path: str = "") -> list[FileInfo]:
        return portal().run(self.aio.list(path))

    def exists(self, path: str) -> bool:
        return portal().run(self.aio.exists(path))

    def remove(self, path: str) -> None:
        portal().run(self.aio.remove(path))

    def upload(self, local: str | os.PathLike[str], remote: str) -> int:
        return portal().run(self.aio.upload(local, remote))

    def download(self, remote: str, local: str | os.PathLike[str], **kwargs: Any) -> int:
        return portal().run(self.aio.download(remote, local, **kwargs))


class Session:
    """Sync twin of :class:`~dockercc.session.AsyncSession`."""

    def __init__(self, inner: AsyncSession) -> None:
        self._inner = inner

    @property
    def aio(self) -> AsyncSession:
        """The async session behind this one."""
        return self._inner

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def agent(self) -> str:
        return self._inner.agent

    @property
    def claude_session_id(self) -> str | None:
        return self._inner.claude_session_id

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def __repr__(self) -> str:
        return repr(self._inner).replace("AsyncSession", "Session", 1)

    def start(self) -> Session:
        portal().run(self._inner.start())
        return self

    def send(self, prompt: str | list[dict[str, Any]]) -> str:
        return portal().run(self._inner.send(prompt))

    def receive(self, *, timeout: float | None = None) -> Iterator[Event]:
        return self._guarded(portal().iterate(self._inner.receive(timeout=timeout)))

    def stream(self, prompt: str | list[dict[str, Any]], *,
               timeout: float | None = None) -> Iterator[Event]:
        return self._guarded(portal().iterate(self._inner.stream(prompt, timeout=timeout)))

    def _guarded(self, events: Iterator[Event]) -> Iterator[Event]:
        try:
            yield from events
        except KeyboardInterrupt:
            self._on_ctrl_c()
            raise

    def ask(self, prompt: str | list[dict[str, Any]], *, timeout: float | None = None,
            check: bool = True) -> Result:
        try:
            return portal().run(self._inner.ask(prompt, timeout=timeout, check=check))
        except KeyboardInterrupt:
            self._on_ctrl_c()
            raise

    def _on_ctrl_c(self) -> None:
        with contextlib.suppress(BaseException):
            portal().run(self._inner.stop(timeout=15), timeout=30)

    def set_model(self, model: str | None) -> None:
        portal().run(self._inner.set_model(model))

    def set_permission_mode(self, mode: str) -> None:
        portal().run(self._inner.set_permission_mode(mode))

    def interrupt(self) -> None:
        portal().run(self._inner.interrupt())

    def history(self, start: int = 0, count: int | None = None) -> list[dict[str, Any]]:
        return portal().run(self._inner.history(start, count))

    def state(self) -> dict[str, str]:
        return portal().run(self._inner.state())

    def close(self, *, forget: bool = False) -> None:
        portal().run(self._inner.close(forget=forget))

    @property
    def files(self) -> Files:
        """Sync twin of :attr:`AsyncSession.files` (see :class:`dockercc.files.AsyncFiles`)."""
        return Files(self._inner.files)

    def run(self, cmd: str | list[str], **kwargs: Any) -> CommandResult:
        """Sync twin of :meth:`AsyncSession.run` (same keywords)."""
        return portal().run(self._inner.run(cmd, **kwargs))

    def run_stream(self, cmd: str | list[str], **kwargs: Any) -> Iterator[tuple[str, bytes]]:
        """Sync twin of :meth:`AsyncSession.run_stream`."""
        return portal().iterate(self._inner.run_stream(cmd, **kwargs))

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pool:
    """Sync twin of :class:`~dockercc.client.AsyncPool`."""

    def __init__(self, config: ConfigLike = None, **kwargs: Any) -> None:
        async def make() -> AsyncPool:
            return AsyncPool(config, **kwargs)

        self._inner = portal().run(make())
        _open_pools.add(self)
        _install_exit_cleanup()

    @property
    def aio(self) -> AsyncPool:
        """The async pool behind this one."""
        return self._inner

    @property
    def config(self) -> Any:
        return self._inner.config

    def __repr__(self) -> str:
        return repr(self._inner).replace("AsyncPool", "Pool", 1)

    def start(self) -> Pool:
        portal().run(self._inner.start())
        return self

    def session(self, agent: str = "main", options: ClaudeAgentOptions | None = None,
                **kwargs: Any) -> Session:
        """A new session: ``options`` (a :class:`dockercc.ClaudeAgentOptions`) and keyword
        shorthands as :meth:`AsyncPool.session`."""
        async def make() -> AsyncSession:
            return self._inner.session(agent, options, **kwargs)

        return Session(portal().run(make()))

    def tool(self, fn: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        return self._inner.tool(fn, **kwargs)

    def channel(self, name: str, handler: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """Register a ``message`` channel (see :meth:`AsyncPool.channel`); handlers run on
        the background loop's thread."""
        return self._inner.channel(name, handler, **kwargs)

    def warm(self, agent: str = "main", count: int | None = None, *, wait: bool = True,
             timeout: float = 120) -> None:
        portal().run(self._inner.warm(agent, count, wait=wait, timeout=timeout))

    def sessions(self) -> list[dict[str, Any]]:
        return portal().run(self._inner.sessions())

    def stats(self) -> PoolStats:
        return portal().run(self._inner.stats())

    def ask(self, prompt: str, **options: Any) -> Result:
        return portal().run(self._inner.ask(prompt, **options))

    def map(self, prompts: Any, options: ClaudeAgentOptions | str | None = None,
            **kwargs: Any) -> MapResults:
        """Sync :meth:`AsyncPool.map`, gathered: blocks until every item is done (with a
        progress bar) and returns :class:`~dockercc.batch.MapResults` in input order. Bad
        input raises before anything starts. Ctrl-C stops the run (its containers are
        removed); with ``name=`` calling again goes on where it stopped."""
        async def make() -> MapRun:
            return self._inner.map(prompts, options, **kwargs)

        run = portal().run(make())
        return portal().run(run.gather())

    def imap(self, prompts: Any, options: ClaudeAgentOptions | str | None = None,
             **kwargs: Any) -> Iterator[ItemResult]:
        """Sync :meth:`AsyncPool.map` as an iterator of results in completion order."""
        async def make() -> MapRun:
            return self._inner.map(prompts, options, **kwargs)

        run = portal().run(make())
        return portal().iterate(run.__aiter__())

    def forget_run(self, name: str) -> bool:
        return portal().run(self._inner.forget_run(name))

    def close(self) -> None:
        portal().run(self._inner.close())
        _open_pools.discard(self)

    def __enter__(self) -> Pool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def query(prompt: str, options: ClaudeAgentOptions | None = None, *,
          config: ConfigLike = None, timeout: float | None = None,
          **kwargs: Any) -> Iterator[Event]:
    """claude-agent-sdk's ``query`` (sync form of :func:`dockercc.aquery`): one prompt in a
    fresh session, yielding the turn's events up to its :class:`Result`; the pool and session
    are closed when the iteration ends. Use :meth:`Pool.ask` for just the Result."""
    with Pool(config) as pool, pool.session(options=options, **kwargs) as s:
        yield from s.stream(prompt, timeout=timeout)
