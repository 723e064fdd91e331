"""Configuration: the seed's ``dockerClaudeCode`` block as typed, validated pydantic models.

The option names, types and defaults are the seed's configuration tables (``pool``,
``resources``, ``timeouts``, ``redis``, ``docker``) plus a few options the SDK needs
(``credentials``, ``model``, ``agents``, ...). Every option has a camelCase key (the seed's
spelling, used in YAML and in dumps) and a snake_case Python attribute; both spellings are
accepted on input. Unknown keys are errors, with the closest valid name suggested.

Building one: :func:`load_config` is the one entry point. It takes what a caller passes as
``config=`` (``None``, a path, a mapping or a :class:`DockerCCConfig`); ``resolve_config``,
``resolve`` and ``DockerCCConfig.load`` / ``.resolve`` / ``.from_yaml`` are thin names for
it, and ``AsyncPool``, ``ProviderChain``, the gateway, the CLI and the Jupyter magics call it.
(Constructing the models directly, ``DockerCCConfig(...)``, is plain pydantic: defaults and
the values given, no files, no environment layer.)

Loading, later layers win::

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

Where things live (one module per job)::

    fields.py       shared constants, field types and validators, RedisUrl, the base model
    models.py       the section models and DockerCCConfig (every option but the tools')
    tools.py        the built-in tools' options (tools.webFetch, tools.nodes, ...)
    loading.py      load_config: the layers, file discovery, the seed's file shape
    environment.py  the environment layer (REDIS_URL, DOCKERCC_*)
    schema.py       walking the model tree by key path (either spelling, suggestions)
    problems.py     what is wrong, in the user's words: the one ConfigError
    redaction.py    which config values are secret (text rules: dockercc.redaction)
    credentials.py  secret_env / container_env: the real values for containers
    reference.py    the generated reference (docs/configuration.md)
"""

from __future__ import annotations

from ..redaction import MASK
from .credentials import container_env, secret_env
from .environment import CONFIG_PATH_ENV, ENV_PREFIX
from .fields import (
    DEFAULT_PASSTHROUGH_ENV,
    DEFAULT_REDIS_URL,
    PERMISSION_MODES,
    AgentName,
    EnvName,
    EnvSecret,
    Float,
    Int,
    PermissionMode,
    RedisUrl,
    parse_memory,
)
from .loading import (
    MAX_CONFIG_VALUES,
    SEED_SECTION,
    ConfigSource,
    discover_config_files,
    load_config,
    resolve,
    resolve_config,
)
from .models import (
    AgentConfig,
    AgentEgressConfig,
    BudgetConfig,
    CredentialsConfig,
    DockerCCConfig,
    DockerConfig,
    EgressConfig,
    GatewayConfig,
    LoggingConfig,
    ModelConfig,
    PoolConfig,
    RedisConfig,
    ResourcesConfig,
    TimeoutsConfig,
)
from .redaction import mask_url
from .reference import reference_markdown
from .tools import (
    CronConfig,
    MessageConfig,
    NodeConfig,
    NodesConfig,
    SessionToolsConfig,
    ToolsConfig,
    WebFetchConfig,
    WebSearchConfig,
)

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

# Not in __all__ (as before the split), importable by name as before.
_ALSO_EXPORTED = (
    AgentName, BudgetConfig, CONFIG_PATH_ENV, ConfigSource, ENV_PREFIX, EnvName, EnvSecret,
    Float, GatewayConfig, Int, LoggingConfig, MASK, MAX_CONFIG_VALUES, PermissionMode,
    SEED_SECTION,
)
