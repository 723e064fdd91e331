"""The configuration models: one pydantic model per section of the seed's
``dockerClaudeCode`` block (pool, resources, timeouts, redis, docker, egress, credentials,
agents, model, budget, gateway, logging) and :class:`DockerCCConfig`, which holds them all.

Every option is defined here (the built-in tools' options in :mod:`.tools`), with its
camelCase key, default, bounds and the text of the generated reference
(docs/configuration.md). Build a config with :func:`dockercc.config.load_config`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import ConfigError
from ..protocol.keys import DEFAULT_PREFIX
from .fields import (
    _MEMORY_ALLOWED,
    _REDIS_URL_ALLOWED,
    DEFAULT_PASSTHROUGH_ENV,
    PERMISSION_MODES,
    AgentName,
    EnvName,
    EnvSecret,
    Float,
    Int,
    PermissionMode,
    RedisUrl,
    _default_redis_url,
    _doc,
    _env_secret,
    _Model,
    parse_memory,
)
from .redaction import _redact_dump
from .tools import ToolsConfig


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
            "at once, in arrival order, each until its API request leaves, its first model "
            "event or "
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
    resume_ms: Int = Field(
        604800000, gt=0,
        **_doc("How long a closed session stays resumable (7 days): its state, history, "
               "sealed transcript and scratch workspace volume are kept this long; then the "
               "keys expire and `dockercc gc` removes the volume"),
    )
    permission_ms: Int = Field(
        300000, gt=0,
        **_doc("How long a permission request (`can_use_tool`, a notebook's Approve / Deny) "
               "or a hook callback may take; an approver slower than this is denied, a slower "
               "hook is skipped (5 min)"),
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
        True, **_doc("Give each container a fresh Docker volume at /workspace instead of a "
                     "tmpfs; a session keeps its container's volume, so a scratch workspace "
                     "survives container loss, `maxAgeMs` parking and `resume=`; it is "
                     "removed with the session (`close(forget=True)`) or by `dockercc gc` "
                     "once the session is no longer resumable. false: a tmpfs, lost with "
                     "its container and leaving nothing to clean (docs/workspaces.md)"))
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
    backend: Literal["docker", "local"] = Field(
        "docker",
        **_doc(
            "What runs the agents: `docker` (containers, isolated), or `local` (the runner and "
            "the CLI as local subprocesses of this process, NOT isolated: no limits, no "
            "network or uid separation; for fast tests, see docs/pool.md#the-local-backend)"
        ),
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
    from ..egress.policy import parse_rule

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
                     "(`:ro` for read-only) or `volume:NAME`; null = a scratch "
                     "workspace (`docker.scratchVolumes`, docs/workspaces.md)"))
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
        ``DOCKERCC_*`` variables. Same as ``load_config(path, environment=False)``."""
        return _loader()(path, environment=False)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> DockerCCConfig:
        """Same as :func:`~dockercc.config.load_config`."""
        return _loader()(path, env=env, **overrides)

    @classmethod
    def resolve(
        cls, config: DockerCCConfig | str | os.PathLike[str] | Mapping[str, Any] | None = None
    ) -> DockerCCConfig:
        """Same as :func:`~dockercc.config.load_config` with ``config`` as its source."""
        return _loader()(config)


#: :func:`~dockercc.config.loading.load_config`, set by that module when it is imported (the
#: package imports it), so these models do not import the loader that imports them.
LOADER: list[Callable[..., DockerCCConfig]] = []


def _loader() -> Callable[..., DockerCCConfig]:
    return LOADER[0]  # (importing dockercc.config imports the loader first)
