"""The fallback chain: ``model.primary`` then ``model.fallbacks``, exactly as in the seed::

    model:
      primary: docker-claude-code/opus
      fallbacks:
        - claude-cli/opus              # Falls back to CLI if Docker unavailable
        - anthropic/claude-sonnet-4-5  # Falls back to API if CLI fails

A :class:`ChainSession` picks its provider when it starts (``async with`` or the first
prompt): the first entry whose session starts. A provider that cannot serve (Redis down,
Docker not running, image missing, start-up timeout, no CLI on PATH, API unreachable, ...)
raises :class:`~dockercc.errors.ProviderUnavailable`, and the chain moves on. The same happens
when a provider fails a later turn *before that turn produced any event*; once an event has
been yielded, errors propagate (output is never produced twice, by two providers).

Every :class:`~dockercc.events.Result` says who served (``provider``, e.g.
``"claude-cli/opus"``) and why the entries before it were passed over (``fallback_reasons``).
When no entry can serve, :class:`ProviderUnavailable` lists every reason (``reasons``).

A session stays on the provider that served it (the conversation lives there). If that
provider is lost between turns, the next turn starts a *new* conversation on the next entry
of the chain; ``fallback_reasons`` then names the lost provider too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from ..bridge import ToolRegistry
from ..config import DockerCCConfig, load_config
from ..errors import ProviderUnavailable, SessionClosed
from ..events import Event, Result
from ..protocol import control
from ..protocol.keys import validate_id
from ..session import EventCallback, SessionOptions, ask_turn, session_options
from ..types import OptionsError
from .anthropic_api import AnthropicProvider
from .base import ModelRef, Prompt, Provider, ProviderContext, ProviderSession, parse_model_ref
from .claude_cli import ClaudeCLIProvider
from .docker_cc import DockerClaudeCodeProvider

__all__ = ["ProviderChain", "ChainSession", "chain_refs", "make_provider", "PROVIDERS"]

log = logging.getLogger("dockercc.providers")

PROVIDERS: dict[str, type[Provider]] = {
    "docker-claude-code": DockerClaudeCodeProvider,
    "claude-cli": ClaudeCLIProvider,
    "anthropic": AnthropicProvider,
}


def chain_refs(config: DockerCCConfig) -> list[ModelRef]:
    """The configured chain (``model.primary`` then ``model.fallbacks``), validated."""
    refs = [parse_model_ref(config.model.primary, "model.primary")]
    refs += [parse_model_ref(value, f"model.fallbacks[{i}]")
             for i, value in enumerate(config.model.fallbacks)]
    return refs


def make_provider(ref: ModelRef, context: ProviderContext, *,
                  claude_executable: str | None = None) -> Provider:
    if ref.provider == "claude-cli":
        return ClaudeCLIProvider(ref, context, executable=claude_executable)
    return PROVIDERS[ref.provider](ref, context)


class ProviderChain:
    """The providers of ``model.primary`` + ``model.fallbacks`` and their sessions.

    ``config`` is anything :func:`~dockercc.config.load_config` takes. ``refs`` replaces
    the configured chain (``["claude-cli/opus", "anthropic/claude-sonnet-4-5"]``). ``tools``
    are host tools for every session; ``env`` is the environment the local CLI and the
    anthropic SDK see (default ``os.environ``); ``pool`` an existing started-or-not
    :class:`~dockercc.client.AsyncPool` for the docker entry (else the chain starts its own on
    first use and closes it in :meth:`aclose`).
    """

    def __init__(self, config: DockerCCConfig | str | Mapping[str, Any] | None = None, *,
                 refs: Sequence[str | ModelRef] | None = None, tools: Iterable[Any] = (),
                 env: Mapping[str, str] | None = None, pool: Any = None,
                 claude_executable: str | None = None) -> None:
        self.config = load_config(config)
        if refs is None:
            self.refs = chain_refs(self.config)
        else:
            if not refs:
                raise ValueError("refs must name at least one provider")
            self.refs = [r if isinstance(r, ModelRef) else parse_model_ref(r, f"refs[{i}]")
                         for i, r in enumerate(refs)]
        self.context = ProviderContext(self.config, tools=ToolRegistry(tools), env=env,
                                       pool=pool)
        self.providers = [make_provider(r, self.context, claude_executable=claude_executable)
                          for r in self.refs]
        self._sessions: dict[str, ChainSession] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"ProviderChain({[str(r) for r in self.refs]!r})"

    def session(self, agent: str = "main", options: Any = None, *,
                session_id: str | None = None, on_event: EventCallback | None = None,
                **shorthands: Any) -> ChainSession:
        """A new session; its provider is chosen when it starts. ``options`` is a
        :class:`dockercc.ClaudeAgentOptions` and ``shorthands`` the same keywords as
        :meth:`dockercc.AsyncPool.session` (one merge: :func:`dockercc.session.session_options`;
        a ``model`` is ignored: each provider of the chain names its own)."""
        if self._closed:
            raise SessionClosed("the provider chain is closed")
        self.config.agent(agent)  # a clear ConfigError for an unknown agent, now
        options = session_options(agent, options, **shorthands)
        for provider in self.providers:
            # any entry may end up serving it: an option one of them would ignore is an
            # error now, not a surprise after a fallback
            problem = provider.unsupported(options)
            if problem is not None:
                raise OptionsError(*problem)
        sid = validate_id(session_id or f"s-{uuid.uuid4().hex[:12]}")
        if sid in self._sessions:
            raise ValueError(f"session {sid!r} is already open in this chain")
        s = ChainSession(self, options, sid, on_event=on_event)
        self._sessions[sid] = s
        return s

    async def ask(self, prompt: Prompt, *, timeout: float | None = None, check: bool = True,
                  **options: Any) -> Result:
        """One prompt in a fresh session, closed afterwards."""
        async with self.session(**options) as s:
            return await s.ask(prompt, timeout=timeout, check=check)

    async def aclose(self) -> None:
        """Close every session and what the providers hold (the chain's own pool)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(s.close() for s in list(self._sessions.values())),
                             return_exceptions=True)
        for provider in self.providers:
            with contextlib.suppress(Exception):
                await provider.aclose()

    async def __aenter__(self) -> ProviderChain:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class ChainSession:
    """One conversation, served by the first provider of the chain that can."""

    def __init__(self, chain: ProviderChain, options: SessionOptions, session_id: str, *,
                 on_event: EventCallback | None = None) -> None:
        self.chain = chain
        self.options = options
        self.id = session_id
        self.on_event = on_event
        self.current: ProviderSession | None = None
        #: chain entry -> why it was passed over (for this session)
        self.fallback_reasons: dict[str, str] = {}
        self.closed = False
        self._index = -1
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ChainSession(id={self.id!r}, provider={self.provider!r}, closed={self.closed})"

    @property
    def provider(self) -> str | None:
        """The chain entry serving this session (``"claude-cli/opus"``), once started."""
        return self.current.name if self.current is not None else None

    async def start(self) -> ChainSession:
        """Choose the provider now (done by the first prompt anyway)."""
        async with self._lock:
            if self.current is None:
                await self._select(0)
        return self

    async def _select(self, first: int) -> ProviderSession:
        if self.closed:
            raise SessionClosed(f"session {self.id!r} is closed")
        providers = self.chain.providers
        for i in range(first, len(providers)):
            provider = providers[i]
            known = provider.unavailable_reason()
            if known is not None:
                self.fallback_reasons[provider.name] = known
                continue
            session = provider.session(self.options, self.id)
            try:
                await session.start()
            except ProviderUnavailable as exc:
                self.fallback_reasons[provider.name] = exc.reasons.get(provider.name, str(exc))
                log.warning("session %s: %s unavailable (%s); trying the next provider",
                            self.id, provider.name, self.fallback_reasons[provider.name])
                with contextlib.suppress(Exception):
                    await session.close()
                continue
            except BaseException:
                with contextlib.suppress(Exception):
                    await session.close()
                raise
            self.current, self._index = session, i
            return session
        tried = "; ".join(f"{name}: {why}" for name, why in self.fallback_reasons.items())
        raise ProviderUnavailable(
            f"no provider of the chain could serve session {self.id!r} ({tried})",
            dict(self.fallback_reasons))

    async def stream(self, prompt: Prompt, *, timeout: float | None = None
                     ) -> AsyncIterator[Event]:
        """Send ``prompt`` and yield the turn's events, ending with its ``Result``."""
        if self.closed:
            raise SessionClosed(f"session {self.id!r} is closed")
        control.check_prompt(prompt)
        await self.start()
        while True:
            session = self.current
            assert session is not None
            began = False
            try:
                async for event in session.stream(prompt, timeout=timeout):
                    began = True
                    if isinstance(event, Result):
                        event = event.model_copy(
                            update={"fallback_reasons": dict(self.fallback_reasons)})
                    await self._dispatch(event)
                    yield event
                return
            except ProviderUnavailable as exc:
                if began:
                    raise
                reason = exc.reasons.get(session.name, str(exc))
                log.warning("session %s: %s failed before output (%s); falling back",
                            self.id, session.name, reason)
                self.fallback_reasons[session.name] = reason
                self.current = None
                with contextlib.suppress(Exception):
                    await session.close()
                async with self._lock:
                    await self._select(self._index + 1)

    async def _dispatch(self, event: Event) -> None:
        if self.on_event is None:
            return
        try:
            res = self.on_event(event)
            if asyncio.iscoroutine(res):
                await res
        except Exception:
            log.exception("on_event callback failed")

    async def ask(self, prompt: Prompt, *, timeout: float | None = None,
                  check: bool = True) -> Result:
        """Send ``prompt`` and return the turn's ``Result`` (see
        :func:`~dockercc.session.ask_turn`)."""
        return await ask_turn(self.stream(prompt, timeout=timeout), self.id, self.options,
                              check=check)

    async def interrupt(self) -> None:
        """Stop the current turn; the session stays usable."""
        if self.current is not None:
            await self.current.interrupt()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        session, self.current = self.current, None
        try:
            if session is not None:
                await session.close()
        finally:
            if self.chain._sessions.get(self.id) is self:
                del self.chain._sessions[self.id]

    async def __aenter__(self) -> ChainSession:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
