"""Configuration: the seed's ``dockerClaudeCode`` block as typed, validated pydantic models.

The option names, types and defaults are the seed's configuration tables (``pool``,
``resources``, ``timeouts``, ``redis``, ``docker``) plus a few options the SDK needs
(``credentials``, ``model``, ``agents``, ...). Every option has a camelCase key (the seed's
spelling, used in YAML and in dumps) and a snake_case Python attribute; both spellings are
accepted on input. Unknown keys are errors, with the closest valid name suggested.

Loading (:func:`load_config`), later layers win::

    1. defaults           the models' defaults (``redis.url`` from ``REDIS_URL``, credentials
                          from ``CLAUDE_CODE_OAUTH_TOKEN`` / ``ANTHROPIC_API_KEY`` /
                          ``ANTHROPIC_BASE_URL``)
    2. files              a) ``$HOME/.clawdbot/config.yaml`` in the seed's shape: the config is
                             ``agents.defaults.dockerClaudeCode``, and ``agents.defaults.model``
                             (``primary`` / ``fallbacks``, or a plain string) gives ``model``;
                             every other key of that file belongs to the gateway and is ignored
                          b) a standalone file whose top-level keys are DockerCCConfig's:
                             ``$DOCKERCC_CONFIG`` if set, else ``./dockercc.yaml`` (or ``.yml``)
                          An explicit ``path`` replaces a) and b); its kind is detected by
                          content (``agents.defaults.dockerClaudeCode`` or
                          ``agents.defaults.model`` present means the seed's shape).
    3. environment        ``REDIS_URL``, ``CLAUDE_CODE_OAUTH_TOKEN``, ``ANTHROPIC_API_KEY``,
                          ``ANTHROPIC_BASE_URL``, then ``DOCKERCC_*`` variables (which win)
    4. keyword overrides  ``load_config(pool={"minWarm": 2}, image="x")``: nested dicts or model
                          instances (only the fields set on an instance count), either key
                          spelling, deep-merged into the layers below

Mappings are deep-merged across layers (``agents`` per agent name, ``env`` per variable);
lists and scalars are replaced. The agent ``main`` always exists (it is the default agent).

Environment variable scheme (layer 3)::

    DOCKERCC_<KEY>[__<KEY>...]=<value>

* ``__`` (two underscores) separates nesting levels; a key is matched case-insensitively
  against the snake_case or camelCase name: ``DOCKERCC_POOL__MIN_WARM=2``,
  ``DOCKERCC_IMAGE=clawdbot/docker-cc:dev``, ``DOCKERCC_REDIS__KEY_PREFIX=test:cc:``,
  ``DOCKERCC_HISTORY_MAX=50``, ``DOCKERCC_CREDENTIALS__OAUTH_TOKEN=...``.
* Mapping keys (agent names, ``env`` variable names) are taken verbatim, except that an agent
  name matches an already-configured agent case-insensitively:
  ``DOCKERCC_AGENTS__MAIN__MODEL=sonnet``, ``DOCKERCC_AGENTS__reviewer__MAX_TURNS=5``,
  ``DOCKERCC_DOCKER__ENV__HTTP_PROXY=http://proxy:3128``.
* Values: numbers and booleans as text (``2``, ``1.5``, ``true``); lists as JSON
  (``["ALL"]``) or comma-separated (``ALL,NET_RAW``); a whole section or mapping as a JSON
  object (``DOCKERCC_POOL='{"minWarm": 2}'``); an empty value sets an optional option to
  null.
* ``DOCKERCC_CONFIG`` names the standalone file (layer 2). Other single-segment
  ``DOCKERCC_*`` names that are no option are left alone (tools may share the prefix); a
  ``__`` name that does not resolve is an error.

Errors: everything wrong with the files, the environment and the overrides is reported in ONE
:class:`~dockercc.errors.ConfigError` that lists every bad key in the user's own spelling
(``agents.defaults.dockerClaudeCode.pool.minWarm``, ``DOCKERCC_POOL__MIN_WARM``,
``pool.min_warm``) with where it came from, the (redacted) value and what is allowed;
``problems`` holds ``(path, value, allowed)`` tuples.

Secrets: tokens, keys and ``env`` values are :class:`pydantic.SecretStr`; the Redis URL is a
:class:`RedisUrl` whose password is masked (``redis://:***@host:6379``) everywhere except
:meth:`RedisConfig.url_secret`. ``repr``/``str``/``model_dump_json`` never show a secret,
:meth:`DockerCCConfig.redacted_dump` is a JSON-able dict with secrets as ``"***"``, and error
messages are built from redacted values only. :func:`secret_env` is the one place that hands
out real credential values (to the pool, for container environments).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from .errors import ConfigError, InvalidSessionId
from .protocol.keys import DEFAULT_PREFIX, validate_id
from .redaction import redact

__all__ = [
    "DEFAULT_REDIS_URL",
    "DEFAULT_PASSTHROUGH_ENV",
    "PERMISSION_MODES",
    "RedisUrl",
    "PoolConfig",
    "ResourcesConfig",
    "TimeoutsConfig",
    "RedisConfig",
    "DockerConfig",
    "EgressConfig",
    "AgentEgressConfig",
    "CredentialsConfig",
    "AgentConfig",
    "ModelConfig",
    "ToolsConfig",
    "WebFetchConfig",
    "WebSearchConfig",
    "SessionToolsConfig",
    "NodeConfig",
    "NodesConfig",
    "CronConfig",
    "MessageConfig",
    "DockerCCConfig",
    "load_config",
    "resolve",
    "resolve_config",
    "discover_config_files",
    "secret_env",
    "container_env",
    "parse_memory",
    "mask_url",
    "reference_markdown",
]

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

ENV_PREFIX = "DOCKERCC_"
CONFIG_PATH_ENV = "DOCKERCC_CONFIG"
SEED_SECTION = "dockerClaudeCode"
MASK = "***"

# --------------------------------------------------------------------------- helpers (pure)

_SECRET_WORD_RE = re.compile(r"(?i)(token|secret|passw|pwd|api[_-]?key|credential|auth|private)")
_TOKEN_LIKE_RE = re.compile(r"sk-ant-|sk-[A-Za-z0-9]{20,}")


def mask_url(text: str) -> str:
    """Mask credentials in ``text``: URL userinfo, secret query parameters, ``sk-ant-``
    keys, bearer tokens (one rule set for the whole SDK: :func:`dockercc.redaction.redact`)."""
    return redact(text)


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
            from .sentinel import parse_sentinel_url

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
        return mask_url(self._url)

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
            yield name, (mask_url(value) if isinstance(value, str) else value)


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


class PoolConfig(_Model):
    """The warm container pool (seed: Pool Configuration)."""

    min_warm: Int = Field(0, ge=0, **_doc("Minimum warm containers to maintain"))
    max_total: Int = Field(10, ge=1, **_doc("Maximum total containers allowed"))
    max_per_agent: Int = Field(3, ge=1, **_doc("Maximum containers per agent"))
    first_turn_admission: Int = Field(
        0,
        ge=0,
        **_doc(
            "At most this many new sessions' first turns of one process start their CLI work "
            "at once, in arrival order, each until its first model event or "
            "`firstTurnHoldMs` (see docs/pool.md); 0: no admission"
        ),
    )
    first_turn_hold_ms: Int = Field(
        300, ge=1, **_doc("Longest a first turn holds its admission slot (ms)")
    )
    demand_min_hits: Int = Field(
        2,
        ge=0,
        **_doc(
            "Sessions with the same start-time CLI arguments (and container spec) within "
            "`demandWindowMs` after which the pool keeps a warm container pre-started for them "
            "(a demand warm set, see docs/pool.md); 0 turns demand warm sets off"
        ),
    )
    demand_window_ms: Int = Field(
        300000,
        ge=1000,
        **_doc("How far back sessions count as demand for a warm set (ms)"),
    )
    demand_warm: Int = Field(
        1, ge=0, **_doc("Warm containers kept for each demand warm set (within `maxTotal`)")
    )
    demand_max_sets: Int = Field(
        8, ge=0, **_doc("At most this many demand warm sets, the most recently demanded first")
    )
    acquire_timeout_ms: Int = Field(
        60000,
        ge=0,
        **_doc("How long a claim waits in the queue for a free slot before `PoolExhausted` (ms)"),
    )
    tenant: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        **_doc(
            "Tenant of the sessions this process opens: built-in tools reach only sessions and "
            "cron jobs of the same tenant; null = the OS user on this host (`user.hostname`)"
        ),
    )

    @model_validator(mode="after")
    def _check_limits(self) -> PoolConfig:
        if self.min_warm > self.max_total:
            raise PydanticCustomError(
                "cross_field",
                "minWarm must not exceed maxTotal",
                {
                    "field": "minWarm",
                    "allowed": f"an integer from 0 to maxTotal ({self.max_total})",
                },
            )
        return self


class ResourcesConfig(_Model):
    """Per-container resource limits (seed: Resources)."""

    memory: str = Field("4g", **_doc("Container memory limit", allowed=_MEMORY_ALLOWED))
    cpus: Float = Field(2.0, gt=0, **_doc("CPU limit"))
    pids_limit: Int = Field(256, ge=16, **_doc("Max PIDs in container"))

    @field_validator("memory", mode="before")
    @classmethod
    def _check_memory(cls, value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parse_memory(value)
        return value.strip() if isinstance(value, str) else str(value)

    @property
    def memory_bytes(self) -> int:
        """``memory`` in bytes (binary units, like Docker)."""
        return parse_memory(self.memory)


class TimeoutsConfig(_Model):
    """Lifecycle timeouts (seed: Timeouts)."""

    idle_ms: Int = Field(300000, gt=0, **_doc("Idle timeout (5 min)"))
    max_age_ms: Int = Field(3600000, gt=0, **_doc("Max container age (1 hour)"))
    health_interval_ms: Int = Field(10000, gt=0, **_doc("Health check interval (10s)"))
    startup_ms: Int = Field(30000, gt=0, **_doc("Container startup timeout (30s)"))
    stale_after_misses: Int = Field(
        3, gt=0, **_doc("Heartbeats missed before a container is considered lost")
    )
    orphan_ms: Int = Field(
        300000, gt=0,
        **_doc("How long a runner that cannot reach Redis keeps trying before it exits (5 min): "
               "longer than a Redis restart or Sentinel fail-over, so a claimed session "
               "goes on; short enough that an orphan of a dead owner and a stopped Redis "
               "does not linger"),
    )


class RedisConfig(_Model):
    """Redis connection (seed: Redis). The URL's password is a secret."""

    url: RedisUrl = Field(
        default_factory=_default_redis_url,
        **_doc(
            "Redis connection URL",
            allowed=_REDIS_URL_ALLOWED,
            default_doc="`REDIS_URL` env",
        ),
    )
    key_prefix: str = Field(DEFAULT_PREFIX, min_length=1, **_doc("Key prefix for all Redis keys"))
    container_url: RedisUrl | None = Field(
        None,
        **_doc(
            "Redis URL as the runners inside containers see it",
            allowed=_REDIS_URL_ALLOWED,
            default_doc="`url`, with localhost mapped to the Docker host",
        ),
    )
    container_acl: bool = Field(
        True,
        **_doc(
            "Give each container's runner its own Redis ACL user, limited to its own keys and "
            "channels (needs Redis 7+ and a pool user that may run `ACL`); false runs every "
            "runner with the pool's own Redis rights (not isolated)"
        ),
    )

    def url_secret(self) -> str:
        """The real URL, password included: pass it to the Redis client, never log it."""
        return self.url.get_secret_value()

    def redacted(self) -> str:
        """The URL with its password masked (``redis://:***@host:6379``)."""
        return self.url.redacted()


_DOCKER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class DockerConfig(_Model):
    """How containers are created (seed: Docker)."""

    container_prefix: str = Field(
        "clawdbot-cc-",
        pattern=_DOCKER_NAME,
        **_doc(
            "Container name prefix",
            allowed="a Docker name prefix: A-Z a-z 0-9 _ . -, starting with a letter or digit",
        ),
    )
    network: str = Field(
        "none",
        min_length=1,
        **_doc(
            "Docker network: `none` (no network; the API and `egress.allow` through the "
            "host's egress proxy, credentials stay on the host), or `host` / a network name "
            "(weaker: open egress, credentials in the container; see docs/egress.md)"
        ),
    )
    cap_drop: list[str] = Field(default_factory=lambda: ["ALL"], **_doc("Capabilities to drop"))
    security_opts: list[str] = Field(
        default_factory=lambda: ["no-new-privileges"], **_doc("Security options")
    )
    binds: list[str] | None = Field(
        None,
        **_doc(
            "Additional volume binds",
            allowed="a list of 'host-path-or-volume:container-path[:ro|rw]' strings, or null",
        ),
    )
    env: dict[EnvName, EnvSecret] | None = Field(None, **_doc("Additional environment variables"))
    read_only: bool = Field(True, **_doc("Mount the container's root filesystem read-only"))
    scratch_volumes: bool = Field(
        False, **_doc("Give each container a fresh Docker volume at /workspace instead of a "
                      "tmpfs; a session keeps its container's volume, so a scratch workspace "
                      "survives container loss and `resume=` (docs/workspaces.md)"))
    user: str = Field(
        "1000:1000",
        pattern=r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$",
        **_doc(
            "User (and group) the agent runs as: the CLI and its tools (no supplementary groups)",
            allowed="'user' or 'user:group' as a quoted string, e.g. \"1000:1000\"",
        ),
    )
    isolate_runner: bool = Field(
        True,
        **_doc(
            "Run the container's runner as root with only SETUID, SETGID and KILL, apart from "
            "the agent (`user`), which then cannot read, signal or trace it; false: everything "
            "runs as `user` (the agent can read the runner's Redis secret)"
        ),
    )
    base_url: str | None = Field(
        None,
        **_doc("Docker engine URL (e.g. `unix:///var/run/docker.sock`); null = `DOCKER_HOST` env"),
    )

    @field_validator("binds")
    @classmethod
    def _check_binds(cls, value: list[str] | None) -> list[str] | None:
        for bind in value or []:
            src, sep, dst = bind.partition(":")
            if not src or not sep or not dst:
                raise ValueError("binds must look like 'host-path-or-volume:container-path[:mode]'")
        return value

    def env_values(self) -> dict[str, str]:
        """``env`` with real values (for creating containers; never log it)."""
        return {k: v.get_secret_value() for k, v in (self.env or {}).items()}


class CredentialsConfig(_Model):
    """How the CLI in the container authenticates. Values are secrets."""

    oauth_token: SecretStr | None = Field(
        default_factory=lambda: _env_secret("CLAUDE_CODE_OAUTH_TOKEN"),
        **_doc(
            "Claude subscription OAuth token (`claude setup-token`)",
            default_doc="`CLAUDE_CODE_OAUTH_TOKEN` env",
        ),
    )
    api_key: SecretStr | None = Field(
        default_factory=lambda: _env_secret("ANTHROPIC_API_KEY"),
        **_doc("Anthropic API key", default_doc="`ANTHROPIC_API_KEY` env"),
    )
    credentials_file: Path | None = Field(
        None,
        **_doc(
            "Claude credentials file mounted into containers, e.g. `~/.claude/.credentials.json`"
        ),
    )
    base_url: str | None = Field(
        default_factory=lambda: os.environ.get("ANTHROPIC_BASE_URL") or None,
        **_doc("Anthropic API base URL", default_doc="`ANTHROPIC_BASE_URL` env"),
    )
    passthrough_env: list[EnvName] = Field(
        default_factory=lambda: list(DEFAULT_PASSTHROUGH_ENV),
        **_doc("Environment variables copied from the caller's environment into containers"),
    )

    @field_validator("credentials_file")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None


def _check_egress(value: list[str] | None) -> list[str] | None:
    from .egress.policy import parse_rule

    for item in value or []:
        parse_rule(item)
    return value


_EGRESS_ALLOWED = (
    "a list of 'example.com', '*.example.com', 'host:port', an IP address or CIDR "
    "('10.0.0.0/8', '[::1]:8080'), or '*' (any public name)"
)


class EgressConfig(_Model):
    """The host egress proxy of containers on the `none` network (see docs/egress.md)."""

    allow: Annotated[list[str], AfterValidator(_check_egress)] = Field(
        default_factory=list,
        **_doc(
            "Targets every agent may reach besides the API (agents.<name>.egress.allow "
            "replaces it); private, loopback and link-local addresses only by IP/CIDR or "
            "exact host:port",
            allowed=_EGRESS_ALLOWED,
        ),
    )
    max_connections: Int = Field(
        64, ge=1, **_doc("Open connections one container may have through the proxy")
    )
    connect_timeout_ms: Int = Field(
        10_000, gt=0, **_doc("Time limit to resolve and connect to a target or the API (ms)")
    )
    idle_timeout_ms: Int = Field(
        600_000, gt=0, **_doc("A proxied connection with no data for this long is closed (ms)")
    )
    runtime_dir: Path | None = Field(
        None,
        **_doc(
            "Host directory for the per-container sockets",
            default_doc="`$XDG_RUNTIME_DIR/dockercc`, else `<tmp>/dockercc-<uid>`",
        ),
    )


class AgentEgressConfig(_Model):
    """One agent's egress (see EgressConfig)."""

    allow: Annotated[list[str] | None, AfterValidator(_check_egress)] = Field(
        None,
        **_doc(
            "Targets this agent may reach besides the API; null = `egress.allow`",
            allowed=_EGRESS_ALLOWED + ", or null",
        ),
    )


class BudgetConfig(_Model):
    """A spending limit over a sliding time window, shared by every process on the Redis."""

    usd: float | None = Field(None, gt=0, **_doc("Limit in USD over the window; null = none"))
    window_s: Int = Field(86400, ge=1, **_doc("The window in seconds"))


class AgentConfig(_Model):
    """One named agent: how its Claude Code CLI is launched. Unset options use the CLI's."""

    model: str | None = Field(None, **_doc("Model for this agent (`--model`)"))
    system_prompt: str | None = Field(None, **_doc("System prompt (`--system-prompt`)"))
    append_system_prompt: str | None = Field(
        None, **_doc("Text appended to the system prompt (`--append-system-prompt`)")
    )
    permission_mode: PermissionMode | None = Field(
        None,
        **_doc(
            "Permission mode (`--permission-mode`)",
            allowed="one of " + ", ".join(PERMISSION_MODES) + ", or null",
        ),
    )
    allowed_tools: list[str] | None = Field(
        None, **_doc("Tools allowed without asking (`--allowedTools`)")
    )
    disallowed_tools: list[str] | None = Field(
        None, **_doc("Tools the agent may not use (`--disallowedTools`)")
    )
    tools: list[str] | None = Field(
        None, **_doc("Host bridge (MCP) tools this agent may call; null = all")
    )
    max_turns: Int | None = Field(None, ge=1, **_doc("Maximum agentic turns (`--max-turns`)"))
    min_warm: Int = Field(
        0,
        ge=0,
        **_doc(
            "Warm containers kept for this agent, their CLI pre-started with the agent's own "
            "default session options (system prompt, model, tools); for `main` the larger of "
            "this and `pool.minWarm`"
        ),
    )
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig, **_doc("This agent's spend limit (see docs/sessions.md)")
    )
    env: dict[EnvName, EnvSecret] | None = Field(
        None, **_doc("Additional environment variables for this agent's containers")
    )
    image: str | None = Field(None, min_length=1, **_doc("Image override for this agent"))
    workspace: str | None = Field(
        None, **_doc("Default `workspace=` of this agent's sessions: an absolute host folder "
                     "(`:ro` for read-only) or `volume:NAME`; null = a scratch tmpfs "
                     "(docs/workspaces.md)"))
    add_dirs: list[str] | None = Field(
        None, **_doc("Default `add_dirs=`: more host folders, read-only (`:rw` to write), at "
                     "/mnt/dirs/NAME and given to the CLI with `--add-dir`"))
    nodes_exec: bool = Field(
        False, **_doc("Offer the `nodes_exec` built-in tool (commands in throwaway containers)")
    )
    subagents: list[AgentName] = Field(
        default_factory=list,
        **_doc(
            "Other agents this agent's sessions may start with `sessions_spawn` or schedule "
            "with `cron_create` (its own agent always; others only if listed here)"
        ),
    )
    egress: AgentEgressConfig = Field(
        default_factory=AgentEgressConfig, **_doc("This agent's egress allow-list")
    )

    def env_values(self) -> dict[str, str]:
        """``env`` with real values (for creating containers; never log it)."""
        return {k: v.get_secret_value() for k, v in (self.env or {}).items()}


def _check_networks(value: list[str]) -> list[str]:
    import ipaddress

    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not a CIDR range like 127.0.0.0/8 or ::1/128") from None
    return value


class WebFetchConfig(_Model):
    """The ``web_fetch`` built-in tool (see docs/tools.md)."""

    max_bytes: Int = Field(
        2_000_000, ge=1024, **_doc("Largest response body read (bytes); the rest is cut off")
    )
    max_chars: Int = Field(
        40_000, ge=100, **_doc("Most characters of page text returned to the agent")
    )
    timeout_ms: Int = Field(
        20_000, gt=0, **_doc("Time limit for one fetch, redirects included (ms)")
    )
    max_redirects: Int = Field(
        5, ge=0, **_doc("Redirects followed; every target is checked again")
    )
    allow_private: bool = Field(
        False,
        **_doc(
            "Allow loopback, private, link-local and other non-public targets (turns the SSRF "
            "guard off; cloud-metadata addresses stay refused unless in `allowNetworks`)"
        ),
    )
    allow_networks: Annotated[list[str], AfterValidator(_check_networks)] = Field(
        default_factory=list,
        **_doc(
            "Address ranges allowed despite the SSRF guard, e.g. `127.0.0.0/8`",
            allowed="a list of CIDR ranges",
        ),
    )
    user_agent: str = Field(
        "dockercc-web-fetch/0.1", min_length=1, **_doc("User-Agent header of web_fetch")
    )


class WebSearchConfig(_Model):
    """The ``web_search`` built-in tool: offered only when a provider is configured."""

    provider: Literal["brave", "tavily"] | None = Field(
        None,
        **_doc(
            "Search API: `brave` (Brave Search API) or `tavily`; null = web_search is not offered",
            allowed="brave, tavily or null",
        ),
    )
    api_key: SecretStr | None = Field(
        None,
        **_doc(
            "API key of the provider",
            default_doc="`BRAVE_API_KEY` / `TAVILY_API_KEY` env",
        ),
    )
    base_url: str | None = Field(
        None, **_doc("Endpoint override (a proxy, a test server); null = the provider's own")
    )
    max_results: Int = Field(5, ge=1, le=20, **_doc("Results per search (the agent may ask for fewer)"))
    timeout_ms: Int = Field(15_000, gt=0, **_doc("Time limit for one search (ms)"))


class SessionToolsConfig(_Model):
    """The session built-in tools (``sessions_*``, ``session_status``)."""

    max_depth: Int = Field(
        2, ge=0, **_doc("How deep spawned sessions may nest (a session you open is depth 0)")
    )
    max_children: Int = Field(
        4, ge=0, **_doc("Open child sessions one session may have at a time")
    )
    max_wait_ms: Int = Field(
        240_000,
        gt=0,
        le=290_000,
        **_doc("Longest `sessions_send` / `sessions_spawn` wait for a reply (ms)"),
    )
    history_page_max: Int = Field(
        50, ge=1, **_doc("Most history entries `sessions_history` returns per page")
    )


class NodeConfig(_Model):
    """One remote Docker engine ``nodes_exec`` may run commands on."""

    url: str = Field(
        ...,
        min_length=1,
        **_doc(
            "Docker engine URL: `tcp://host:2376`, `ssh://user@host`, `unix:///path`",
            default_doc="required",
        ),
    )
    image: str | None = Field(
        None, min_length=1, **_doc("Image for commands on this node; null = `nodes.execImage`")
    )
    description: str | None = Field(None, **_doc("What this node is for (shown by nodes_list)"))


class NodesConfig(_Model):
    """``nodes_list`` / ``nodes_exec``: the local Docker engine plus remote ones."""

    remote: dict[AgentName, NodeConfig] = Field(
        default_factory=dict, **_doc("Remote Docker engines by node name (`local` is the pool's)")
    )
    exec_image: str | None = Field(
        None, min_length=1, **_doc("Image for `nodes_exec` containers; null = `image`")
    )
    exec_timeout_ms: Int = Field(
        30_000, gt=0, le=280_000, **_doc("Default and longest run time of one command (ms)")
    )
    exec_max_output_bytes: Int = Field(
        65_536, ge=256, **_doc("Bytes of stdout (and of stderr) returned; the rest is cut off")
    )
    exec_memory: str = Field("256m", **_doc("Memory limit of a command's container", allowed=_MEMORY_ALLOWED))
    exec_cpus: Float = Field(0.5, gt=0, **_doc("CPU limit of a command's container"))
    exec_pids_limit: Int = Field(64, ge=8, **_doc("PID limit of a command's container"))

    @field_validator("exec_memory", mode="before")
    @classmethod
    def _check_memory(cls, value: Any) -> Any:
        parse_memory(value)
        return value.strip() if isinstance(value, str) else str(value)


class CronConfig(_Model):
    """Scheduled prompts (``cron_*`` tools) run by the pool owner's scheduler."""

    enabled: bool = Field(True, **_doc("Run the cron scheduler in the pool's process"))
    max_jobs: Int = Field(50, ge=0, **_doc("Most cron jobs in one pool (key prefix)"))
    run_timeout_ms: Int = Field(
        300_000, gt=0, **_doc("Longest a scheduled prompt may run before it is abandoned (ms)")
    )
    missed_grace_ms: Int = Field(
        3_600_000,
        ge=0,
        **_doc(
            "A run missed while no scheduler ran is made up once if it is at most this late (ms)"
        ),
    )
    min_interval_s: Int = Field(
        60, ge=1, **_doc("Shortest interval between two runs of a job an agent may schedule (s)")
    )


class MessageConfig(_Model):
    """The ``message`` built-in tool's Redis channels (Python channels are registered in code)."""

    redis_channels: list[str] = Field(
        default_factory=list,
        **_doc("Channels published on Redis pub/sub as `{keyPrefix}channel:<name>`"),
    )

    @field_validator("redis_channels")
    @classmethod
    def _check_names(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_agent_name(name)
        return value


class ToolsConfig(_Model):
    """Options of the built-in tools every agent gets over the MCP bridge."""

    web_fetch: WebFetchConfig = Field(default_factory=WebFetchConfig, **_doc("web_fetch"))
    web_search: WebSearchConfig = Field(default_factory=WebSearchConfig, **_doc("web_search"))
    sessions: SessionToolsConfig = Field(
        default_factory=SessionToolsConfig, **_doc("Session tools")
    )
    nodes: NodesConfig = Field(default_factory=NodesConfig, **_doc("nodes_list / nodes_exec"))
    cron: CronConfig = Field(default_factory=CronConfig, **_doc("cron_* tools and scheduler"))
    message: MessageConfig = Field(default_factory=MessageConfig, **_doc("message tool"))


class ModelConfig(_Model):
    """The model and its fallback chain (seed: ``agents.defaults.model``)."""

    primary: str = Field(
        "docker-claude-code/opus", min_length=1, **_doc("Primary model (`provider/model`)")
    )
    fallbacks: list[str] = Field(
        default_factory=list, **_doc("Models tried in order when the primary is unavailable")
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"primary": value} if isinstance(value, str) else value


class GatewayConfig(_Model):
    """``dockercc serve``: who may read the health endpoint (see docs/security.md)."""

    token: SecretStr | None = Field(
        None,
        **_doc(
            "Bearer token for the full health report; without it callers get only "
            '`{"status": ...}`. Required when the gateway binds a non-loopback address'
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        **_doc("Host header values the gateway answers (DNS rebinding guard); the bind "
               "address is added"),
    )


class LoggingConfig(_Model):
    """Log lines of ``dockercc serve`` and the runners (see docs/observability.md)."""

    format: Literal["text", "json"] = Field(
        "text",
        **_doc("`json`: one JSON object per line with session and container ids, for the "
               "gateway and every runner it starts (`DOCKERCC_LOG_FORMAT` in the containers)"),
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", **_doc("Level of dockercc's loggers in `dockercc serve` and the runners")
    )


class DockerCCConfig(_Model):
    """All of dockercc's configuration (the seed's ``dockerClaudeCode`` block)."""

    enabled: bool = Field(True, **_doc("Enable the Docker Claude Code provider"))
    pool: PoolConfig = Field(default_factory=PoolConfig, **_doc("Container pool"))
    image: str = Field("clawdbot/docker-cc:latest", min_length=1, **_doc("Agent container image"))
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, **_doc("Container resource limits")
    )
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig, **_doc("Timeouts"))
    redis: RedisConfig = Field(default_factory=RedisConfig, **_doc("Redis connection"))
    docker: DockerConfig = Field(default_factory=DockerConfig, **_doc("Docker options"))
    egress: EgressConfig = Field(
        default_factory=EgressConfig, **_doc("Egress proxy (network `none`)")
    )
    credentials: CredentialsConfig = Field(
        default_factory=CredentialsConfig, **_doc("Credentials for the CLI in containers")
    )
    model: ModelConfig = Field(default_factory=ModelConfig, **_doc("Model and fallback chain"))
    agents: dict[AgentName, AgentConfig] = Field(
        default_factory=lambda: {"main": AgentConfig()},
        **_doc(
            "Named agents (see Agents); `main` always exists",
            default_doc='{"main": {}}',
        ),
    )
    history_max: Int = Field(1000, ge=0, **_doc("Messages kept in a session's history"))
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig,
        **_doc("The pool's spend limit, all agents (see docs/sessions.md)"),
    )
    tools: ToolsConfig = Field(
        default_factory=ToolsConfig, **_doc("Built-in tools (see docs/tools.md)")
    )
    gateway: GatewayConfig = Field(
        default_factory=GatewayConfig, **_doc("The `dockercc serve` health endpoint")
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, **_doc("Log format and level (gateway and runners)")
    )

    _sources: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("agents")
    @classmethod
    def _ensure_main(cls, value: dict[str, AgentConfig]) -> dict[str, AgentConfig]:
        return value if "main" in value else {"main": AgentConfig(), **value}

    @property
    def sources(self) -> tuple[str, ...]:
        """Where this config came from, lowest precedence first (files, ``environment``, ...)."""
        return self._sources

    def agent(self, name: str = "main") -> AgentConfig:
        """The named agent's config; a :class:`ConfigError` suggesting a name if unknown."""
        try:
            return self.agents[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.agents), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self.agents))
            raise ConfigError(
                f"unknown agent {name!r}{hint} (configured: {known})",
                [(f"agents.{name}", None, f"one of {known}")],
            ) from None

    def redacted_dump(self) -> dict[str, Any]:
        """A JSON-able dict (camelCase keys) with every secret shown as ``"***"``."""
        return _redact_dump(self.model_dump(mode="python", by_alias=True))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> DockerCCConfig:
        """Defaults + one YAML file (either shape, detected by content); no discovery, no
        ``DOCKERCC_*`` variables."""
        return _load(path, os.environ, {}, use_env=False)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> DockerCCConfig:
        """Same as :func:`load_config`."""
        return load_config(path, env=env, **overrides)

    @classmethod
    def resolve(
        cls, config: DockerCCConfig | str | os.PathLike[str] | Mapping[str, Any] | None = None
    ) -> DockerCCConfig:
        """Same as :func:`resolve_config`."""
        return resolve_config(config)


def _redact_dump(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, RedisUrl):
        return value.redacted()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_redact_dump(v) for v in value]
    return value


# --------------------------------------------------------------------------- schema helpers


def _strip(annotation: Any) -> tuple[Any, bool]:
    """``(type, nullable)`` without ``Annotated`` and ``| None``."""
    nullable = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, nullable
            annotation = args[0]
        else:
            return annotation, nullable


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


@dataclass(frozen=True)
class _Node:
    """What the keys of a mapping at some place in the config mean."""

    kind: Literal["model", "agents", "dict", "leaf"]
    model: type[BaseModel] | None = None


_LEAF = _Node("leaf")
_ROOT = _Node("model", DockerCCConfig)


def _node_for(field: FieldInfo) -> _Node:
    tp, _ = _strip(field.annotation)
    if _is_model(tp):
        return _Node("model", tp)
    if get_origin(tp) is dict:
        value_tp, _ = _strip(get_args(tp)[1])
        if _is_model(value_tp):
            return _Node("agents", value_tp)
        return _Node("dict")
    return _LEAF


def _alias(name: str, field: FieldInfo) -> str:
    return field.alias or name


def _match_field(
    model: type[BaseModel], key: str, *, ignore_case: bool = False
) -> tuple[str, FieldInfo] | None:
    """``(camelCase key, field)`` for ``key`` given as the field's name or alias."""
    for name, field in model.model_fields.items():
        alias = _alias(name, field)
        if key in (name, alias):
            return alias, field
    if ignore_case:
        low = key.lower()
        for name, field in model.model_fields.items():
            alias = _alias(name, field)
            if low in (name.lower(), alias.lower()):
                return alias, field
    return None


def _suggest(model: type[BaseModel], key: str) -> str | None:
    """The field name closest to ``key`` (python name)."""

    def norm(s: str) -> str:
        return s.replace("_", "").replace("-", "").lower()

    names = {norm(name): name for name in model.model_fields}
    close = difflib.get_close_matches(norm(key), list(names), n=1, cutoff=0.6)
    return names[close[0]] if close else None


def _spell(model: type[BaseModel], name: str, like: str) -> str:
    """Field ``name`` spelled in the style of the user's key ``like``."""
    field = model.model_fields[name]
    if like.isupper():
        return name.upper()
    return name if "_" in like else _alias(name, field)


def _type_phrase(annotation: Any) -> str:
    tp, nullable = _strip(annotation)
    origin = get_origin(tp)
    if tp is bool:
        text = "true or false"
    elif tp is int:
        text = "an integer"
    elif tp is float:
        text = "a number"
    elif tp is str:
        text = "a string"
    elif tp is SecretStr:
        text = "a string (secret)"
    elif tp is RedisUrl:
        text = _REDIS_URL_ALLOWED
    elif isinstance(tp, type) and issubclass(tp, Path):
        text = "a file path"
    elif origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in get_args(tp))
    elif origin is list:
        inner = _type_phrase(get_args(tp)[0])
        plural = {"a string": "strings", "an integer": "integers", "a number": "numbers"}
        text = "a list of " + plural.get(inner, inner)
    elif origin is dict:
        value_tp, _ = _strip(get_args(tp)[1])
        if _is_model(value_tp):
            text = "a mapping of names to option mappings"
        else:
            text = "a mapping of names to strings"
    elif _is_model(tp):
        keys = ", ".join(_alias(n, f) for n, f in tp.model_fields.items())
        text = f"a mapping with keys {keys}"
    else:
        text = getattr(tp, "__name__", str(tp))
    return f"{text}, or null" if nullable else text


def _allowed_for(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    text = _type_phrase(field.annotation)
    bounds = []
    for meta in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                bounds.append(f"{sym} {bound}")
        if getattr(meta, "min_length", None) == 1:
            bounds.append("(non-empty)")
    if bounds:
        head, comma, tail = text.partition(", or null")
        text = f"{head} {' '.join(bounds)}{comma}{tail}"
    return text


def _field_at(loc: tuple[Any, ...]) -> tuple[FieldInfo | None, type[BaseModel] | None, bool]:
    """``(field, model holding the last key, last key is an agent name)`` for a config path."""
    model: type[BaseModel] | None = DockerCCConfig
    field: FieldInfo | None = None
    i = 0
    while i < len(loc):
        if model is None:
            return field, None, False
        match = _match_field(model, str(loc[i]))
        if match is None:
            return None, model, False
        field = match[1]
        node = _node_for(field)
        if node.kind == "model":
            model = node.model
        elif node.kind == "agents":
            if i + 1 == len(loc) - 1:
                return field, None, True
            model = node.model
            i += 1
        else:
            model = None
        i += 1
    return field, None, False


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose keys the mapping at config path ``loc`` holds (None: not a model)."""
    model: type[BaseModel] | None = DockerCCConfig
    i = 0
    while i < len(loc):
        if model is None:
            return None
        match = _match_field(model, str(loc[i]))
        if match is None:
            return None
        node = _node_for(match[1])
        if node.kind == "model":
            model = node.model
        elif node.kind == "agents" and i + 1 < len(loc):
            model = node.model
            i += 1
        else:
            return None
        i += 1
    return model


# --------------------------------------------------------------------------- redaction


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
        return MASK if _TOKEN_LIKE_RE.search(value) else mask_url(value)
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


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- loader


@dataclass(frozen=True)
class _Source:
    label: str  # file path, "environment", "keyword overrides", "defaults"


@dataclass(frozen=True)
class _Origin:
    display: str  # the user's own spelling of the key path
    source: _Source


@dataclass
class _Problem:
    path: str
    value: Any
    allowed: str
    source: str
    detail: str | None = None  # replaces "got <value>" in the message

    def line(self) -> str:
        what = self.detail or f"got {_show(self.value)}"
        return f"  - {self.path}: {what}; allowed: {self.allowed}  [{self.source}]"


_DEFAULTS = _Source("defaults")
_ENVIRONMENT = _Source("environment")
_OVERRIDES = _Source("keyword overrides")

#: Well-known variables of the environment layer, applied before ``DOCKERCC_*``.
_WELL_KNOWN_ENV: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("REDIS_URL", ("redis", "url")),
    ("CLAUDE_CODE_OAUTH_TOKEN", ("credentials", "oauthToken")),
    ("ANTHROPIC_API_KEY", ("credentials", "apiKey")),
    ("ANTHROPIC_BASE_URL", ("credentials", "baseUrl")),
)


MAX_CONFIG_VALUES = 100_000
_TOO_BIG = (
    f"at most {MAX_CONFIG_VALUES} values with YAML aliases expanded, and no value that "
    "contains itself"
)


def _too_big(data: Any, budget: int = MAX_CONFIG_VALUES) -> bool:
    """Whether ``data`` holds more than ``budget`` values once shared parts are counted each
    time they appear (a YAML "billion laughs") or contains itself; stops at the budget."""
    stack, seen = [data], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return False


def _as_data(value: Any) -> Any:
    """Model instances as plain dicts (only fields that were set), containers copied."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def _join(display: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{display}[{key}]"
    return f"{display}.{key}" if display else str(key)


class _Builder:
    """Merges the layers into one raw dict, remembering where every key came from."""

    def __init__(self) -> None:
        self.merged: dict[str, Any] = {}
        self.origins: dict[tuple[Any, ...], _Origin] = {}
        self.problems: list[_Problem] = []
        self.sources: list[str] = ["defaults"]

    # -- merging

    def merge(
        self,
        target: dict[str, Any],
        data: Mapping[Any, Any],
        node: _Node,
        path: tuple[Any, ...],
        display: str,
        source: _Source,
    ) -> None:
        seen: dict[str, str] = {}
        for raw_key, value in data.items():
            key = str(raw_key)
            shown = _join(display, key)
            ckey, child = key, _LEAF
            if node.kind == "model" and node.model is not None:
                match = _match_field(node.model, key)
                if match is not None:
                    ckey, child = match[0], _node_for(match[1])
            elif node.kind == "agents":
                child = _Node("model", node.model)
            if ckey in seen and seen[ckey] != key:
                self.problems.append(
                    _Problem(
                        shown,
                        _redact_value((*path, ckey), value),
                        f"each option once (also given as {seen[ckey]!r})",
                        source.label,
                    )
                )
            seen[ckey] = key
            self.put(target, ckey, value, child, (*path, ckey), shown, source)

    def put(
        self,
        target: dict[str, Any],
        key: str,
        value: Any,
        node: _Node,
        path: tuple[Any, ...],
        display: str,
        source: _Source,
    ) -> None:
        value = _as_data(value)
        if isinstance(value, dict) and node.kind != "leaf":
            existing = target.get(key)
            if not isinstance(existing, dict):
                self._drop_origins(path)
                existing = target[key] = {}
            self.origins[path] = _Origin(display, source)
            self.merge(existing, value, node, path, display, source)
        else:
            self._drop_origins(path)
            target[key] = value
            self.origins[path] = _Origin(display, source)

    def put_path(
        self, path: tuple[str, ...], value: Any, node: _Node, display: str, source: _Source
    ) -> None:
        target = self.merged
        for i, key in enumerate(path[:-1]):
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
                self.origins.setdefault(path[: i + 1], _Origin(display, source))
            target = child
        self.put(target, path[-1], value, node, path, display, source)

    def _drop_origins(self, path: tuple[Any, ...]) -> None:
        n = len(path)
        for loc in [loc for loc in self.origins if len(loc) > n and loc[:n] == path]:
            del self.origins[loc]

    # -- layers

    def defaults(self, env: Mapping[str, str]) -> None:
        self.put_path(("agents", "main"), {}, _Node("model", AgentConfig), "agents.main", _DEFAULTS)
        self.put_path(("redis", "url"), DEFAULT_REDIS_URL, _LEAF, "redis.url", _DEFAULTS)
        for name, path in _WELL_KNOWN_ENV:
            if env.get(name):
                self.put_path(path, env[name], _LEAF, name, _ENVIRONMENT)
            elif path[0] == "credentials":
                self.put_path(path, None, _LEAF, ".".join(path), _DEFAULTS)

    def file(self, path: Path, kind: Literal["seed", "standalone", "auto"]) -> None:
        label = str(path)
        source = _Source(label)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.problems.append(_Problem(label, None, "an existing YAML file", label))
            return
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            self.problems.append(_Problem(label, None, f"a readable YAML file ({reason})", label))
            return
        self.sources.append(label)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            what = (
                ": ".join(
                    str(p)
                    for p in (getattr(exc, "context", None), getattr(exc, "problem", None))
                    if p
                )
                or "syntax error"
            )
            where = label
            if mark is not None:
                where = f"{label}:{mark.line + 1}"
                what = f"{what} at line {mark.line + 1}, column {mark.column + 1}"
            self.problems.append(
                _Problem(where, None, "valid YAML", label, f"invalid YAML: {what}")
            )
            return
        if data is None:
            return
        if not isinstance(data, Mapping):
            self.problems.append(
                _Problem(label, type(data).__name__, "a YAML mapping at the top level", label)
            )
            return
        if _too_big(data):
            self.problems.append(_Problem(label, None, _TOO_BIG, label, "a hostile document"))
            return
        if kind == "auto":
            kind = "seed" if _is_seed_shape(data) else "standalone"
        if kind == "standalone":
            self.merge(self.merged, data, _ROOT, (), "", source)
            return
        defaults = _seed_defaults(data)
        if defaults is None:
            return
        if "model" in defaults:
            self.merge(
                self.merged, {"model": defaults["model"]}, _ROOT, (), "agents.defaults", source
            )
        for key in (SEED_SECTION, "docker_claude_code"):
            if key not in defaults or defaults[key] is None:
                continue
            block = defaults[key]
            if isinstance(block, Mapping):
                self.merge(self.merged, block, _ROOT, (), f"agents.defaults.{key}", source)
            else:
                self.problems.append(
                    _Problem(
                        f"agents.defaults.{key}",
                        _redact_value((), block),
                        "a mapping of dockercc options",
                        label,
                    )
                )

    def environment(self, env: Mapping[str, str]) -> None:
        used = False
        for name, path in _WELL_KNOWN_ENV:
            if env.get(name):
                self.put_path(path, env[name], _LEAF, name, _ENVIRONMENT)
                used = True
        for name in sorted(env):
            if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_PATH_ENV:
                continue
            used = self._env_var(name, env[name]) or used
        if used:
            self.sources.append("environment")

    def _env_var(self, name: str, raw: str) -> bool:
        segments = name[len(ENV_PREFIX) :].split("__")
        model: type[BaseModel] | None = DockerCCConfig
        path: list[str] = []
        node = _ROOT
        field: FieldInfo | None = None
        i = 0
        while i < len(segments):
            seg = segments[i]
            if not seg:
                self._env_problem(name, path, raw, "no empty segment between '__'")
                return True
            if model is None:
                self._env_problem(name, path, raw, f"nothing below {'__'.join(segments[:i])}")
                return True
            match = _match_field(model, seg, ignore_case=True)
            if match is None:
                if i == 0 and len(segments) == 1:
                    return False  # not ours: DOCKERCC_* names are shared with other tools
                suggestion = _suggest(model, seg)
                if suggestion is not None:
                    fixed = [*segments[:i], suggestion.upper(), *segments[i + 1 :]]
                    hint = f"did you mean {ENV_PREFIX}{'__'.join(fixed)}? "
                else:
                    hint = ""
                keys = ", ".join(n.upper() for n in model.model_fields)
                shown: Any = MASK  # a value meant for some key below: can't tell, so hide it
                if i == len(segments) - 1:
                    shown = _redact_unknown((*path, seg), raw, model, suggestion)
                self.problems.append(
                    _Problem(
                        name,
                        shown,
                        f"{hint}known keys here: {keys}",
                        "environment",
                        f"unknown key (value {_show(shown)})",
                    )
                )
                return True
            ckey, field = match
            path.append(ckey)
            node = _node_for(field)
            i += 1
            if node.kind == "model":
                model = node.model
            elif node.kind in ("agents", "dict") and i < len(segments):
                key = segments[i]
                if node.kind == "agents":
                    existing = self.merged.get(ckey)
                    names = list(existing) if isinstance(existing, dict) else []
                    if key not in names:
                        key = next((n for n in names if n.lower() == key.lower()), key)
                    model, node = node.model, _Node("model", node.model)
                else:
                    model, node = None, _LEAF
                path.append(key)
                field = None
                i += 1
            else:
                model = None
        value: Any = raw
        if node.kind != "leaf":
            try:
                value = json.loads(raw)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                if node.model is ModelConfig:
                    value = raw  # DOCKERCC_MODEL=provider/model sets model.primary
                else:
                    self._env_problem(name, path, raw, "a JSON object")
                    return True
        elif field is not None:
            tp, nullable = _strip(field.annotation)
            if nullable and raw.strip() == "":
                value = None
            elif get_origin(tp) is list:
                if raw.lstrip().startswith("["):
                    try:
                        value = json.loads(raw)
                    except ValueError:
                        self._env_problem(name, path, raw, "a JSON list or comma-separated values")
                        return True
                else:
                    value = [v.strip() for v in raw.split(",") if v.strip()]
        self.put_path(tuple(path), value, node, name, _ENVIRONMENT)
        return True

    def _env_problem(self, name: str, path: list[str], raw: str, allowed: str) -> None:
        self.problems.append(
            _Problem(name, _redact_value(tuple(path), raw), allowed, "environment")
        )

    def overrides(self, overrides: Mapping[str, Any]) -> None:
        if overrides and _too_big(overrides):
            self.problems.append(_Problem("(overrides)", None, _TOO_BIG, _OVERRIDES.label,
                                          "a value too big or containing itself"))
            return
        if overrides:
            self.merge(self.merged, overrides, _ROOT, (), "", _OVERRIDES)
            self.sources.append("keyword overrides")

    # -- validation

    def build(self) -> DockerCCConfig:
        config: DockerCCConfig | None = None
        try:
            config = DockerCCConfig.model_validate(self.merged)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self.problems.append(self._describe(error))
        if self.problems or config is None:
            count = len(self.problems)
            lines = [p.line() for p in self.problems]
            raise ConfigError(
                f"invalid dockercc configuration ({count} problem{'s' if count != 1 else ''}):\n"
                + "\n".join(lines),
                [(p.path, p.value, p.allowed) for p in self.problems],
            )
        config._sources = tuple(self.sources)
        return config

    def _describe(self, error: Any) -> _Problem:
        loc: list[Any] = []
        cur: Any = self.merged
        is_key = False
        for part in error["loc"]:
            if part == "[key]":
                is_key = True
            elif isinstance(cur, dict) and part in cur:
                loc.append(part)
                cur = cur[part]
            elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
                loc.append(part)
                cur = cur[part]
            # else: a pydantic tag (union member, validator name): not part of the user's path
        ctx = error.get("ctx") or {}
        value = cur
        if error["type"] == "cross_field" and "field" in ctx:
            loc.append(ctx["field"])
            if isinstance(cur, dict):
                value = cur.get(ctx["field"])
        key = tuple(loc)
        display, source = self._display(key)
        shown = _redact_value(key, value)
        if error["type"] == "extra_forbidden" and loc:
            parent = _model_at(key[:-1]) or DockerCCConfig
            bad = str(loc[-1])
            suggestion = _suggest(parent, bad)
            shown = _redact_unknown(key, value, parent, suggestion)
            keys = ", ".join(_alias(n, f) for n, f in parent.model_fields.items())
            hint = ""
            if suggestion is not None:
                hint = f"did you mean {_spell(parent, suggestion, bad)!r}? "
            return _Problem(
                display,
                shown,
                f"{hint}known keys here: {keys}",
                source,
                f"unknown key (value {_show(shown)})",
            )
        field, _, agent_name = _field_at(key)
        if is_key:
            name_path = key
            allowed = _AGENT_NAME_ALLOWED if agent_name else _ENV_NAME_ALLOWED
            return _Problem(display, _redact_value(name_path[:-1], name_path[-1]), allowed, source)
        if error["type"] == "cross_field":
            allowed = str(ctx.get("allowed") or error["msg"])
        elif field is not None:
            allowed = _allowed_for(field)
            if agent_name:
                allowed = "a mapping of agent options"
            elif _node_for(field).kind == "dict" and _field_at(key[:-1])[0] is field:
                allowed = "a string"  # the value of one entry of an ``env`` mapping
        else:
            allowed = str(error["msg"])
        return _Problem(display, shown, allowed, source)

    def _display(self, loc: tuple[Any, ...]) -> tuple[str, str]:
        for n in range(len(loc), 0, -1):
            origin = self.origins.get(loc[:n])
            if origin is not None:
                display = origin.display
                for part in loc[n:]:
                    display = _join(display, part)
                return display, origin.source.label
        return ".".join(str(p) for p in loc) or "(config)", "defaults"


def _seed_defaults(data: Mapping[Any, Any]) -> Mapping[Any, Any] | None:
    agents = data.get("agents")
    if isinstance(agents, Mapping):
        defaults = agents.get("defaults")
        if isinstance(defaults, Mapping):
            return defaults
    return None


def _is_seed_shape(data: Mapping[Any, Any]) -> bool:
    defaults = _seed_defaults(data)
    return defaults is not None and any(
        k in defaults for k in (SEED_SECTION, "docker_claude_code", "model")
    )


def discover_config_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The files :func:`load_config` reads without an explicit path, lowest precedence first:
    ``$HOME/.clawdbot/config.yaml`` (if it exists), then ``$DOCKERCC_CONFIG`` (whether it
    exists or not) or else ``./dockercc.yaml`` / ``./dockercc.yml`` (if one exists)."""
    return [path for path, _ in _discover(os.environ if env is None else env)]


def _discover(env: Mapping[str, str]) -> list[tuple[Path, Literal["seed", "standalone", "auto"]]]:
    found: list[tuple[Path, Literal["seed", "standalone", "auto"]]] = []
    home = env.get("HOME")
    if home:
        seed = Path(home) / ".clawdbot" / "config.yaml"
        if seed.is_file():
            found.append((seed, "seed"))
    explicit = env.get(CONFIG_PATH_ENV)
    if explicit:
        found.append((Path(explicit).expanduser(), "auto"))
    else:
        for name in ("dockercc.yaml", "dockercc.yml"):
            candidate = Path.cwd() / name
            if candidate.is_file():
                found.append((candidate, "standalone"))
                break
    return found


def _load(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Any],
    *,
    use_env: bool = True,
) -> DockerCCConfig:
    builder = _Builder()
    builder.defaults(env)
    if path is not None:
        builder.file(Path(os.fspath(path)).expanduser(), "auto")
    else:
        for found, kind in _discover(env):
            builder.file(found, kind)
    if use_env:
        builder.environment(env)
    builder.overrides(overrides)
    return builder.build()


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> DockerCCConfig:
    """Load the configuration: defaults < files < environment < ``overrides`` (see the module
    docs). ``path`` replaces file discovery; ``env`` (default ``os.environ``) is the environment
    used for discovery (``HOME``, ``DOCKERCC_CONFIG``) and for layer 3. Raises one
    :class:`ConfigError` listing every problem."""
    return _load(path, os.environ if env is None else env, overrides)


def resolve_config(
    config: DockerCCConfig | str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> DockerCCConfig:
    """Turn what a caller passed as ``config=`` into a :class:`DockerCCConfig`:

    * ``None`` -> :func:`load_config` (discovered files + environment)
    * a :class:`DockerCCConfig` -> itself
    * a path (``str`` / ``PathLike``) -> :func:`load_config` with that file
    * a mapping -> :func:`load_config` with the mapping as keyword overrides
    """
    if config is None:
        return load_config()
    if isinstance(config, DockerCCConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if isinstance(config, Mapping):
        return _load(None, os.environ, config)
    raise TypeError(
        f"config must be None, a DockerCCConfig, a path or a mapping, not {type(config).__name__}"
    )


resolve = resolve_config


def secret_env(config: DockerCCConfig, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The credential variables to inject into containers, with REAL values (never log them):
    the ``passthroughEnv`` variables present in ``env`` (default ``os.environ``), then
    ``CLAUDE_CODE_OAUTH_TOKEN`` / ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL`` from
    ``credentials`` (which win)."""
    env = os.environ if env is None else env
    creds = config.credentials
    out = {name: env[name] for name in creds.passthrough_env if name in env}
    if creds.oauth_token is not None:
        out["CLAUDE_CODE_OAUTH_TOKEN"] = creds.oauth_token.get_secret_value()
    if creds.api_key is not None:
        out["ANTHROPIC_API_KEY"] = creds.api_key.get_secret_value()
    if creds.base_url:
        out["ANTHROPIC_BASE_URL"] = creds.base_url
    return out


def container_env(
    config: DockerCCConfig,
    agent: str | AgentConfig | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Everything to put in an agent container's environment, REAL values:
    :func:`secret_env` < ``docker.env`` < the agent's ``env``."""
    out = secret_env(config, env)
    out.update(config.docker.env_values())
    agent_config = config.agent(agent) if isinstance(agent, str) else agent
    if agent_config is not None:
        out.update(agent_config.env_values())
    return out


# --------------------------------------------------------------------------- reference docs

_SECTIONS: tuple[tuple[str, str, type[BaseModel]], ...] = (
    ("General", "", DockerCCConfig),
    ("Pool Configuration", "pool", PoolConfig),
    ("Resources", "resources", ResourcesConfig),
    ("Timeouts", "timeouts", TimeoutsConfig),
    ("Redis", "redis", RedisConfig),
    ("Docker", "docker", DockerConfig),
    ("Egress", "egress", EgressConfig),
    ("Agents: egress", "agents.<name>.egress", AgentEgressConfig),
    ("Credentials", "credentials", CredentialsConfig),
    ("Model", "model", ModelConfig),
    ("Agents", "agents.<name>", AgentConfig),
    ("Budget", "budget (and agents.<name>.budget)", BudgetConfig),
    ("Tools: web_fetch", "tools.webFetch", WebFetchConfig),
    ("Tools: web_search", "tools.webSearch", WebSearchConfig),
    ("Tools: sessions", "tools.sessions", SessionToolsConfig),
    ("Tools: nodes", "tools.nodes", NodesConfig),
    ("Tools: nodes (remote)", "tools.nodes.remote.<name>", NodeConfig),
    ("Tools: cron", "tools.cron", CronConfig),
    ("Tools: message", "tools.message", MessageConfig),
)


def _type_name(annotation: Any) -> str:
    tp, _ = _strip(annotation)
    origin = get_origin(tp)
    if tp is bool:
        return "boolean"
    if tp in (int, float):
        return "number"
    if origin is list:
        return _type_name(get_args(tp)[0]) + "[]"
    if origin is dict or _is_model(tp):
        return "object"
    return "string"


def _render_default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("default_doc"), str):
        return str(extra["default_doc"])
    value: Any = field.get_default(call_default_factory=True)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def reference_markdown() -> str:
    """The configuration reference (one Markdown table per section), generated from the
    models so the docs cannot drift from the code."""
    out = [
        "## Configuration Reference",
        "",
        "Options live under `agents.defaults.dockerClaudeCode` in `~/.clawdbot/config.yaml`, "
        "or at the top level of a standalone `dockercc.yaml`. Keys are camelCase (snake_case "
        "is accepted too). Environment: `DOCKERCC_<SECTION>__<OPTION>`, e.g. "
        "`DOCKERCC_POOL__MIN_WARM=2`.",
    ]
    for title, key, model in _SECTIONS:
        out += ["", f"### {title}", ""]
        if key:
            out += [f"Key: `{key}`", ""]
        out += [
            "| Option | Type | Default | Description |",
            "|--------|------|---------|-------------|",
        ]
        notes = []
        for name, field in model.model_fields.items():
            if _is_model(_strip(field.annotation)[0]):
                continue  # sections get their own table
            alias = _alias(name, field)
            desc = (field.description or "").replace("|", "\\|")
            out.append(
                f"| `{alias}` | {_type_name(field.annotation)} | {_render_default(field)} | {desc} |"
            )
            extra = field.json_schema_extra
            if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
                notes.append(f"- `{alias}`: {extra['allowed']}")
        if notes:
            out += ["", *notes]
    return "\n".join(out) + "\n"
