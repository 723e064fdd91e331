"""Providers and the seed's fallback chain (``model.primary`` + ``model.fallbacks``).

::

    from dockercc.providers import ProviderChain

    async with ProviderChain() as chain:             # the configured chain
        async with chain.session() as s:
            async for event in s.stream("hello"):    # the same typed events as a Session
                ...
    result.provider          # "claude-cli/opus": who served
    result.fallback_reasons  # {"docker-claude-code/opus": "Docker: cannot reach ..."}

:func:`aquery` / :func:`query` are the one-shot forms (async / sync).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ProviderUnavailable
from ..events import Result
from .anthropic_api import AnthropicProvider
from .base import (
    PROVIDER_KINDS,
    ModelRef,
    Prompt,
    Provider,
    ProviderContext,
    ProviderSession,
    parse_model_ref,
)
from .chain import PROVIDERS, ChainSession, ProviderChain, chain_refs, make_provider
from .claude_cli import ClaudeCLIProvider
from .docker_cc import DockerClaudeCodeProvider

__all__ = [
    "PROVIDER_KINDS",
    "PROVIDERS",
    "ModelRef",
    "parse_model_ref",
    "Provider",
    "ProviderContext",
    "ProviderSession",
    "ProviderUnavailable",
    "DockerClaudeCodeProvider",
    "ClaudeCLIProvider",
    "AnthropicProvider",
    "ProviderChain",
    "ChainSession",
    "chain_refs",
    "make_provider",
    "aquery",
    "query",
]


async def aquery(prompt: Prompt, *, config: Any = None, refs: Sequence[str] | None = None,
                 tools: Iterable[Any] = (), env: Mapping[str, str] | None = None,
                 timeout: float | None = None, check: bool = True, **options: Any) -> Result:
    """One prompt through the fallback chain; the :class:`Result` names the provider.
    Everything it started is cleaned up."""
    async with ProviderChain(config, refs=refs, tools=tools, env=env) as chain:
        return await chain.ask(prompt, timeout=timeout, check=check, **options)


def query(prompt: Prompt, **kwargs: Any) -> Result:
    """Sync :func:`aquery` (runs on dockercc's background loop)."""
    from .._portal import portal

    return portal().run(aquery(prompt, **kwargs))
