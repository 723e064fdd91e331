"""Everything a notebook needs to run the real stack offline: a throwaway ``redis-server``
and the scripted Messages API (:class:`~dockercc.testing.ScriptedAPI`), so the real Claude
Code CLI runs in real containers with no credentials and no network."""

from __future__ import annotations

import atexit
import contextlib
from typing import Any

__all__ = ["OfflineStack", "OFFLINE_API_KEY"]

OFFLINE_API_KEY = "sk-ant-offline-notebook"
"""A placeholder key: the scripted API accepts anything (it is not a credential)."""


class OfflineStack:
    """A redis-server on a random loopback port plus a :class:`ScriptedAPI`.

    ::

        stack = OfflineStack()
        stack.api.script(text("Hello from a container!"))
        pool = dockercc.Pool(stack.config)
        ...
        pool.close(); stack.close()

    ``config`` is the override dict for :class:`~dockercc.Pool` (host network, the stack's
    Redis, the scripted API as the CLI's ``ANTHROPIC_BASE_URL``). ``redis_url`` may name a
    Redis you already run instead; without it a missing ``redis-server`` raises
    :class:`~dockercc.errors.RedisServerError` (a ``TransportError``). Closed at interpreter
    exit if you forget.
    """

    def __init__(self, *, redis_url: str | None = None) -> None:
        from ..testing import RedisServer, ScriptedAPI

        self._stack = contextlib.ExitStack()
        try:
            self.redis_url = redis_url or self._stack.enter_context(RedisServer()).url
            self.api = self._stack.enter_context(ScriptedAPI())
        except BaseException:
            self._stack.close()
            raise
        self.closed = False
        atexit.register(self.close)

    @property
    def config(self) -> dict[str, Any]:
        """Config overrides that point a pool at this stack."""
        return {
            "redis": {"url": self.redis_url},
            # the stack's Redis goes with it, so its closed sessions can never be resumed:
            # their workspaces stay tmpfs instead of volumes that would outlive their use
            "docker": {"network": "host", "scratchVolumes": False},
            "credentials": {"baseUrl": self.api.url, "apiKey": OFFLINE_API_KEY},
        }

    def close(self) -> None:
        """Stop the scripted API and the redis-server (idempotent)."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        self._stack.close()

    def __enter__(self) -> OfflineStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"redis {self.redis_url}, api {self.api.url}"
        return f"OfflineStack({state})"
