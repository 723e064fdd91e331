"""Which parts of a configuration are secret, and the config's values made safe to show.

The text rules (URL userinfo, secret query parameters, ``sk-`` keys, bearer tokens) are
:func:`dockercc.redaction.redact`, the one implementation for the whole SDK; this module adds
what only the config's shape tells: ``credentials.*`` and ``env`` values are secrets whatever
they look like, and so is any option whose name says so (``token``, ``apiKey``, ...).
Used for :meth:`~dockercc.config.DockerCCConfig.redacted_dump` and for every value quoted in a
:class:`~dockercc.errors.ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from ..redaction import MASK, redact
from .fields import RedisUrl, _alias

__all__ = ["MASK", "mask_url"]

_SECRET_WORD_RE = re.compile(r"(?i)(token|secret|passw|pwd|api[_-]?key|credential|auth|private)")
_TOKEN_LIKE_RE = re.compile(r"sk-ant-|sk-[A-Za-z0-9]{20,}")

#: The config's name for :func:`dockercc.redaction.redact` (public since the first release).
mask_url = redact


def _redact_dump(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, RedisUrl):
        return value.redacted()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_redact_dump(v) for v in value]
    return value


def _is_secret_path(loc: tuple[Any, ...]) -> bool:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    for i, part in enumerate(parts):
        if part == "env" and i < len(parts) - 1:
            return True
    if len(parts) >= 2 and parts[0] == "credentials":
        return parts[1] not in (
            "passthroughEnv",
            "passthrough_env",
            "credentialsFile",
            "credentials_file",
            "baseUrl",
            "base_url",
        )
    return bool(parts) and bool(_SECRET_WORD_RE.search(parts[-1]))


def _redact_value(loc: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``value`` safe to show in an error message."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, RedisUrl):
        return value.redacted()
    if isinstance(value, Mapping):
        return {str(k): _redact_value((*loc, str(k)), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if _is_secret_path(loc):
            return [MASK for _ in value]
        return [_redact_value((*loc, i), v) for i, v in enumerate(value)]
    if _is_secret_path(loc):
        return MASK
    if isinstance(value, str):
        return MASK if _TOKEN_LIKE_RE.search(value) else redact(value)
    if isinstance(value, BaseModel):
        return _redact_value(loc, value.model_dump(by_alias=True))
    return value


def _redact_unknown(
    loc: tuple[Any, ...], value: Any, parent: type[BaseModel], suggestion: str | None
) -> Any:
    """Redact the value of an unknown key as if it were the option it was probably meant to
    be; containers are masked whole (their meaning is unknown)."""
    if suggestion is not None:
        loc = (*loc[:-1], _alias(suggestion, parent.model_fields[suggestion]))
    if isinstance(value, Mapping):
        return {str(k): MASK for k in value}
    if isinstance(value, (list, tuple)):
        return [MASK for _ in value]
    return _redact_value(loc, value)

