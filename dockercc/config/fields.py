"""The building blocks of the config models: shared constants, field types and validators,
the :class:`RedisUrl` secret, and ``_Model`` (the base every section model derives from:
camelCase aliases, unknown keys forbidden, secrets masked in ``repr``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SecretStr,
    StringConstraints,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ..errors import ConfigError, InvalidSessionId
from ..protocol.keys import validate_id
from ..redaction import MASK, redact

DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_PASSTHROUGH_ENV: tuple[str, ...] = (
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
#: ``--permission-mode`` choices of the Claude Code CLI (2.1.x) plus ``default``.
PERMISSION_MODES: tuple[str, ...] = (
    "default",
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "manual",
    "dontAsk",
    "plan",
)
PermissionMode = Literal[
    "default", "acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan"
]


_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_MEMORY_ALLOWED = (
    "a size like 4g, 512m, 1024k, 2G, 1.5g (binary units b/k/m/g/t, optional 'b'/'ib') "
    "or a byte count, above 0 (Docker itself refuses less than 6m)"
)


def parse_memory(value: str | int) -> int:
    """Bytes of a Docker memory size (``"4g"``, ``"512m"``, ``"1.5g"``, ``1073741824``).

    Units are binary, like Docker's. Raises :class:`ValueError` for anything else or for a
    size of 0 bytes. (Docker's own minimum, 6 MiB, is left for Docker to enforce.)"""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"memory must be {_MEMORY_ALLOWED}")
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY_RE.fullmatch(value)
        if match is None:
            raise ValueError(f"memory must be {_MEMORY_ALLOWED}")
        size = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"memory must be {_MEMORY_ALLOWED}")
    return size


def _reject_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


def _scalar_to_str(value: Any) -> Any:
    """Environment values: YAML ``1`` / ``true`` become ``"1"`` / ``"true"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _check_agent_name(value: str) -> str:
    try:
        return validate_id(value, "agent name")
    except InvalidSessionId as exc:
        raise ValueError(str(exc)) from None


Int = Annotated[int, BeforeValidator(_reject_bool)]
Float = Annotated[float, BeforeValidator(_reject_bool)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
EnvSecret = Annotated[SecretStr, BeforeValidator(_scalar_to_str)]
AgentName = Annotated[str, AfterValidator(_check_agent_name)]

_ENV_NAME_ALLOWED = "an environment variable name: letters, digits and _, not starting with a digit"
_AGENT_NAME_ALLOWED = (
    "an agent name: 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
)


def _env_secret(name: str) -> SecretStr | None:
    value = os.environ.get(name)
    return SecretStr(value) if value else None


# --------------------------------------------------------------------------- Redis URL secret

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")
_REDIS_URL_ALLOWED = ("a redis://, rediss://, unix:// or "
                      "redis+sentinel://host:port[,host:port]/service[/db] URL")


class RedisUrl:
    """A Redis URL whose password never shows: ``str``/``repr``/JSON dumps give
    ``redis://:***@host:6379``; :meth:`get_secret_value` gives the real URL for connecting."""

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise ValueError(f"must be {_REDIS_URL_ALLOWED}")
        url = url.strip()
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in _REDIS_SCHEMES or not rest.strip("/"):
            raise ValueError(f"must be {_REDIS_URL_ALLOWED}")
        if scheme.lower() == "redis+sentinel":
            from ..storage.sentinel import parse_sentinel_url

            try:
                parse_sentinel_url(url)
            except ValueError as exc:
                raise ValueError(f"{exc}; must be {_REDIS_URL_ALLOWED}") from None
        self._url = url

    def get_secret_value(self) -> str:
        """The real URL, password included (for connecting; never log it)."""
        return self._url

    def redacted(self) -> str:
        """The URL with its password masked."""
        return redact(self._url)

    @property
    def has_password(self) -> bool:
        return self.redacted() != self._url

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"RedisUrl({self.redacted()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RedisUrl) and other._url == self._url

    def __hash__(self) -> int:
        return hash(("RedisUrl", self._url))

    @classmethod
    def _validate(cls, value: Any) -> RedisUrl:
        if isinstance(value, RedisUrl):
            return value
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return cls(value)

    @staticmethod
    def _serialize(value: RedisUrl, info: core_schema.SerializationInfo) -> Any:
        return value.redacted() if info.mode_is_json() else value

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                cls._serialize, info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "uri", "writeOnly": True}


def _default_redis_url() -> RedisUrl:
    try:
        return RedisUrl(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    except ValueError as exc:
        raise ConfigError(
            f"REDIS_URL (environment): {exc}", [("REDIS_URL", MASK, _REDIS_URL_ALLOWED)]
        ) from None


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        hide_input_in_errors=True,
        validate_assignment=True,
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (redact(value) if isinstance(value, str) else value)


def _doc(
    description: str, *, allowed: str | None = None, default_doc: str | None = None
) -> dict[str, Any]:
    """Keyword arguments of ``Field`` carrying the reference docs."""
    extra: dict[str, Any] = {}
    if allowed is not None:
        extra["allowed"] = allowed
    if default_doc is not None:
        extra["default_doc"] = default_doc
    return {"description": description, "json_schema_extra": extra or None}


def _alias(name: str, field: FieldInfo) -> str:
    """The camelCase key of the field ``name`` (its alias), or ``name`` if it has none."""
    return field.alias or name
