"""``docker-claude-code/<model>``: the container pool, i.e. :class:`~dockercc.client.AsyncPool`
sessions. Unavailable when Redis or Docker cannot be reached, the image is missing, the pool
cannot provide a container, or the container does not start within ``startupMs``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..errors import (
    ContainerLost,
    ImageError,
    PoolError,
    PoolExhausted,
    StartupTimeout,
    TransportError,
)
from ..events import Event
from ..session import AsyncSession, SessionOptions
from .base import ModelRef, Prompt, Provider, ProviderContext, ProviderSession, unavailable

if TYPE_CHECKING:  # pragma: no cover
    from ..client import AsyncPool

#: errors that mean "the pool cannot serve" (fallback is allowed before output)
POOL_UNAVAILABLE = (TransportError, PoolError, ImageError, OSError)


def describe(exc: BaseException) -> str:
    """A one-line reason for a pool failure, saying which part failed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, TransportError):
        return f"Redis: {text}"
    if isinstance(exc, ImageError):
        return f"image: {text}"
    if isinstance(exc, StartupTimeout):
        return f"start-up timed out: {text}"
    if isinstance(exc, PoolExhausted):
        return f"pool exhausted: {text}"
    if isinstance(exc, ContainerLost):
        return f"container lost: {text}"
    if isinstance(exc, PoolError):
        return f"Docker: {text}"
    return f"{type(exc).__name__}: {text}"


class DockerClaudeCodeProvider(Provider):
    """Sessions in pooled containers. The pool is the context's (``ProviderChain(pool=...)``)
    or one the provider starts on first use and closes in :meth:`aclose`."""

    kind = "docker-claude-code"

    def __init__(self, ref: ModelRef, context: ProviderContext) -> None:
        super().__init__(ref, context)
        self._own_pool: AsyncPool | None = None
        self._lock: asyncio.Lock | None = None

    def unavailable_reason(self) -> str | None:
        if not self.context.config.enabled:
            return "disabled in the configuration (dockerClaudeCode.enabled: false)"
        return None

    async def pool(self) -> AsyncPool:
        """The started pool; raises the pool's own errors when it cannot start."""
        if self.context.pool is not None:
            pool: AsyncPool = self.context.pool
            await pool.start()
            return pool
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._own_pool is None:
                from ..client import AsyncPool

                self._own_pool = AsyncPool(self.context.config, tools=self.context.tools,
                                           env=self.context.explicit_env)
            try:
                await self._own_pool.start()
            except BaseException:
                # a pool that failed to start is dropped: the next session tries a fresh one
                failed, self._own_pool = self._own_pool, None
                await _quiet_close(failed)
                raise
            return self._own_pool

    def session(self, options: SessionOptions, session_id: str) -> ProviderSession:
        return DockerSession(self, options, session_id)

    async def aclose(self) -> None:
        pool, self._own_pool = self._own_pool, None
        if pool is not None:
            await _quiet_close(pool)


async def _quiet_close(pool: AsyncPool) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pool.close(), 30)


class DockerSession(ProviderSession):
    def __init__(self, provider: DockerClaudeCodeProvider, options: SessionOptions,
                 session_id: str) -> None:
        super().__init__(provider.ref, provider.context, options, session_id)
        self.provider = provider
        self.inner: AsyncSession | None = None

    async def start(self) -> None:
        if self.inner is not None:
            return
        try:
            pool = await self.provider.pool()
        except POOL_UNAVAILABLE as exc:
            raise unavailable(self.ref, describe(exc)) from exc
        o = self.options
        inner = pool._open(
            o.model_copy(update={"model": self.ref.model,
                                 "tools": [*self.context.tools, *o.tools]}),
            session_id=self.id)
        try:
            await inner.start()
        except POOL_UNAVAILABLE as exc:
            await self._discard(inner)
            raise unavailable(self.ref, describe(exc)) from exc
        except BaseException:
            await self._discard(inner)
            raise
        self.inner = inner

    @staticmethod
    async def _discard(inner: AsyncSession) -> None:
        # never started: leave nothing behind in Redis (not even a resumable state)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(inner.close(forget=True), 30)
        inner.pool._forget(inner)

    async def stream(self, prompt: Prompt, *, timeout: float | None = None
                     ) -> AsyncIterator[Event]:
        await self.start()
        assert self.inner is not None
        began = False
        try:
            async for event in self.inner.stream(prompt, timeout=timeout):
                began = True
                yield self.stamp(event)
        except POOL_UNAVAILABLE as exc:
            if began:
                raise
            raise unavailable(self.ref, describe(exc)) from exc

    async def interrupt(self) -> None:
        if self.inner is not None:
            await self.inner.interrupt()

    async def close(self) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            await inner.close()

    @property
    def container(self) -> str | None:
        """The name of the container serving this session (once started)."""
        lease = self.inner.lease if self.inner is not None else None
        return lease.name if lease is not None else None
