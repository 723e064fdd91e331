"""The provider interface: one way of running an agent turn, yielding dockercc's typed events.

A *provider* is named by a model reference ``"<provider>/<model>"`` (the seed's
``model.primary`` / ``model.fallbacks`` entries)::

    docker-claude-code/opus         the container pool (AsyncPool sessions)
    claude-cli/opus                 the local Claude Code CLI as a subprocess (host tools kept)
    anthropic/claude-sonnet-4-5     the Messages API through the ``anthropic`` SDK

Every provider opens :class:`ProviderSession` objects whose :meth:`~ProviderSession.stream`
yields the same events as :meth:`dockercc.session.AsyncSession.stream` (``TextDelta``,
``ToolUse``, ``ToolResult``, ..., ending with a ``Result``). A provider that cannot serve
raises :class:`~dockercc.errors.ProviderUnavailable` from :meth:`~ProviderSession.start`, or
from :meth:`~ProviderSession.stream` *before its first event*; only then may the chain fall
back (see :mod:`dockercc.providers.chain`).
"""

from __future__ import annotations

import abc
import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ..bridge import ToolRegistry, session_registry
from ..config import AgentConfig, DockerCCConfig
from ..errors import ConfigError, ProviderUnavailable
from ..events import Event, Result
from ..session import SessionOptions

__all__ = [
    "PROVIDER_KINDS",
    "ProviderKind",
    "ModelRef",
    "parse_model_ref",
    "ProviderContext",
    "Provider",
    "ProviderSession",
    "ProviderUnavailable",
    "Prompt",
]

ProviderKind = Literal["docker-claude-code", "claude-cli", "anthropic"]
PROVIDER_KINDS: tuple[str, ...] = ("docker-claude-code", "claude-cli", "anthropic")
Prompt = str | list[dict[str, Any]]

_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\[\]/-]{0,199}$")
_REF_ALLOWED = (
    "'<provider>/<model>' with provider one of " + ", ".join(PROVIDER_KINDS)
    + " (e.g. docker-claude-code/opus, claude-cli/opus, anthropic/claude-sonnet-4-5)"
)


class ModelRef(BaseModel):
    """One entry of the fallback chain: ``provider/model``."""

    model_config = ConfigDict(frozen=True)

    provider: ProviderKind
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


def parse_model_ref(value: str, where: str = "model") -> ModelRef:
    """``"claude-cli/opus"`` -> ``ModelRef(provider="claude-cli", model="opus")``.

    Raises :class:`~dockercc.errors.ConfigError` naming ``where`` (e.g. ``model.primary``)
    and what is allowed for anything else."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected {_REF_ALLOWED}, got {type(value).__name__}",
                          [(where, value, _REF_ALLOWED)])
    provider, sep, model = value.strip().partition("/")
    if not sep or provider not in PROVIDER_KINDS or not _MODEL_RE.fullmatch(model):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ConfigError(f"{where}: {shown!r} is not a valid model reference; use {_REF_ALLOWED}",
                          [(where, shown, _REF_ALLOWED)])
    return ModelRef(provider=provider, model=model)  # type: ignore[arg-type]


class ProviderContext:
    """What every provider of one chain shares: the configuration, the host tools, the
    environment the caller runs in (``env``; default ``os.environ``) and an optional
    existing :class:`~dockercc.client.AsyncPool` for the docker provider."""

    def __init__(self, config: DockerCCConfig, *, tools: ToolRegistry | None = None,
                 env: Mapping[str, str] | None = None, pool: Any = None) -> None:
        self.config = config
        self.tools = tools if tools is not None else ToolRegistry()
        self._env = dict(env) if env is not None else None
        self.pool = pool

    @property
    def env(self) -> dict[str, str]:
        """The caller's environment (a copy)."""
        return dict(os.environ) if self._env is None else dict(self._env)

    @property
    def explicit_env(self) -> dict[str, str] | None:
        return None if self._env is None else dict(self._env)


class ProviderSession(abc.ABC):
    """One conversation on one provider."""

    #: the chain entry this session runs on (``"claude-cli/opus"``)
    ref: ModelRef

    def __init__(self, ref: ModelRef, context: ProviderContext, options: SessionOptions,
                 session_id: str) -> None:
        self.ref = ref
        self.context = context
        self.options = options
        self.id = session_id

    @property
    def name(self) -> str:
        return str(self.ref)

    @property
    def agent_config(self) -> AgentConfig:
        return self.context.config.agent(self.options.agent)

    @property
    def permission_timeout_s(self) -> float:
        """How long an approver or a hook may take (``timeouts.permissionMs``)."""
        return self.context.config.timeouts.permission_ms / 1000

    def tool_registry(self) -> ToolRegistry:
        """The host tools of this session: the chain's, then the session's own, limited to
        the agent's ``tools`` allowlist (as in :class:`~dockercc.session.AsyncSession`)."""
        return session_registry(self.context.tools, self.options.tools,
                                self.agent_config.tools)

    def stamp(self, event: Event) -> Event:
        """``Result.provider`` names this session's chain entry."""
        if isinstance(event, Result) and event.provider != self.name:
            return event.model_copy(update={"provider": self.name})
        return event

    @abc.abstractmethod
    async def start(self) -> None:
        """Get ready to take prompts; raise :class:`ProviderUnavailable` if this provider
        cannot serve (nothing is left running then)."""

    @abc.abstractmethod
    def stream(self, prompt: Prompt, *, timeout: float | None = None) -> AsyncIterator[Event]:
        """Send ``prompt``; yield the turn's events, ending with its ``Result``. Raises
        :class:`ProviderUnavailable` only before the first event."""

    @abc.abstractmethod
    async def interrupt(self) -> None:
        """Stop the running turn (its ``Result`` says ``interrupted``)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop and clean up; idempotent."""


class Provider(abc.ABC):
    """A kind of provider bound to one chain entry; makes :class:`ProviderSession` objects."""

    kind: ClassVar[str]

    def __init__(self, ref: ModelRef, context: ProviderContext) -> None:
        self.ref = ref
        self.context = context

    @property
    def name(self) -> str:
        return str(self.ref)

    def unavailable_reason(self) -> str | None:
        """A reason known without trying (e.g. disabled in the configuration), else None."""
        return None

    def unsupported(self, options: SessionOptions) -> tuple[str, str] | None:
        """An option this provider cannot honour, as ``(field, what to do)``; the chain
        refuses such a session when it is created (never ignores the option silently)."""
        return None

    @abc.abstractmethod
    def session(self, options: SessionOptions, session_id: str) -> ProviderSession:
        """A new, not yet started session."""

    async def aclose(self) -> None:
        """Release what the provider holds across sessions (e.g. a pool)."""
        return None


def unavailable(ref: ModelRef | str, reason: str) -> ProviderUnavailable:
    """A :class:`ProviderUnavailable` for one provider (``reasons`` = {ref: reason})."""
    return ProviderUnavailable(f"{ref} is unavailable: {reason}", {str(ref): reason})
