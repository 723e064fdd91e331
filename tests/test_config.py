"""Tests of dockercc.config: the seed's tables, loading, precedence, errors and secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from dockercc.config import (
    DEFAULT_PASSTHROUGH_ENV,
    AgentConfig,
    DockerCCConfig,
    PoolConfig,
    RedisConfig,
    RedisUrl,
    ResourcesConfig,
    container_env,
    discover_config_files,
    load_config,
    mask_url,
    parse_memory,
    reference_markdown,
    resolve,
    resolve_config,
    secret_env,
)
from dockercc.errors import ConfigError

# The seed's config.yaml example, verbatim (seed/000_39bf1bb3ef456331.txt, "Enable Docker Claude Code").
SEED_CONFIG_YAML = """\
agents:
  defaults:
    model:
      primary: docker-claude-code/opus
      fallbacks:
        - claude-cli/opus
        - anthropic/claude-sonnet-4-5

    dockerClaudeCode:
      enabled: true
      pool:
        minWarm: 2      # Warm containers for fast startup
        maxTotal: 10    # Maximum concurrent containers
        maxPerAgent: 3  # Max containers per agent
      image: clawdbot/docker-cc:latest
      resources:
        memory: 4g
        cpus: 2
      redis:
        url: redis://localhost:6379
"""

# The seed's "Configuration Reference" table rows, verbatim, but for docker.network: the seed
# says "clawdbot-net" (a bridge with open egress); dockercc's default is "none" plus the host
# egress proxy (docs/egress.md), so that row is left out here and checked in test_docs.
SEED_TABLE_ROWS = """\
| `minWarm` | number | 0 | Minimum warm containers to maintain |
| `maxTotal` | number | 10 | Maximum total containers allowed |
| `maxPerAgent` | number | 3 | Maximum containers per agent |
| `memory` | string | "4g" | Container memory limit |
| `cpus` | number | 2 | CPU limit |
| `pidsLimit` | number | 256 | Max PIDs in container |
| `idleMs` | number | 300000 | Idle timeout (5 min) |
| `maxAgeMs` | number | 3600000 | Max container age (1 hour) |
| `healthIntervalMs` | number | 10000 | Health check interval (10s) |
| `startupMs` | number | 30000 | Container startup timeout (30s) |
| `url` | string | `REDIS_URL` env | Redis connection URL |
| `keyPrefix` | string | "clawdbot:cc:" | Key prefix for all Redis keys |
| `containerPrefix` | string | "clawdbot-cc-" | Container name prefix |
| `capDrop` | string[] | ["ALL"] | Capabilities to drop |
| `securityOpts` | string[] | ["no-new-privileges"] | Security options |
| `binds` | string[] | - | Additional volume binds |
| `env` | object | - | Additional environment variables |
""".splitlines()

SEED_SECTIONS = [
    "### Pool Configuration",
    "### Resources",
    "### Timeouts",
    "### Redis",
    "### Docker",
]

TOKEN = "sk-ant-oat01-CANARY-token-5f1e2d3c"
PASSWORD = "hunter2-CANARY-pw"
ENV_SECRET = "CANARY-env-value-77"

_AMBIENT = (
    "HOME",
    "REDIS_URL",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ambient config: an empty cwd and no config-related variables in os.environ."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    import os

    for name in list(os.environ):
        if name in _AMBIENT or name.upper().startswith("DOCKERCC_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    return work


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def seed_home(tmp_path: Path, text: str = SEED_CONFIG_YAML) -> dict[str, str]:
    write(tmp_path / ".clawdbot" / "config.yaml", text)
    return {"HOME": str(tmp_path)}


def all_outputs(config: DockerCCConfig) -> list[str]:
    return [
        repr(config),
        str(config),
        config.model_dump_json(),
        config.model_dump_json(by_alias=True),
        json.dumps(config.model_dump(mode="json")),
        json.dumps(config.redacted_dump()),
        repr(config.redis),
        str(config.redis.url),
        config.redis.redacted(),
        repr(config.credentials),
        repr(config.docker),
        repr(config.agents),
    ]


# ----------------------------------------------------------------------------- defaults


def check_seed_defaults(config: DockerCCConfig) -> None:
    # Pool Configuration
    assert config.pool.min_warm == 0
    assert config.pool.max_total == 10
    assert config.pool.max_per_agent == 3
    # Resources
    assert config.resources.memory == "4g"
    assert config.resources.memory_bytes == 4 * 1024**3
    assert config.resources.cpus == 2
    assert config.resources.pids_limit == 256
    # Timeouts
    assert config.timeouts.idle_ms == 300000
    assert config.timeouts.max_age_ms == 3600000
    assert config.timeouts.health_interval_ms == 10000
    assert config.timeouts.startup_ms == 30000
    # Redis
    assert config.redis.url_secret() == "redis://localhost:6379"
    assert config.redis.key_prefix == "clawdbot:cc:"
    # Docker
    assert config.docker.container_prefix == "clawdbot-cc-"
    # (the seed says "clawdbot-net"; dockercc isolates by default: docs/egress.md)
    assert config.docker.network == "none"
    assert config.docker.cap_drop == ["ALL"]
    assert config.docker.security_opts == ["no-new-privileges"]
    assert config.docker.binds is None
    assert config.docker.env is None


def test_defaults_match_the_seed_tables() -> None:
    config = load_config(env={})
    check_seed_defaults(config)
    # the additions
    assert config.enabled is True
    assert config.image == "clawdbot/docker-cc:latest"
    assert config.pool.acquire_timeout_ms == 60000
    assert config.timeouts.stale_after_misses == 3
    assert config.docker.read_only is True
    assert config.docker.user == "1000:1000"
    assert config.docker.base_url is None
    assert config.credentials.oauth_token is None
    assert config.credentials.api_key is None
    assert config.credentials.credentials_file is None
    assert config.credentials.base_url is None
    assert config.credentials.passthrough_env == list(DEFAULT_PASSTHROUGH_ENV)
    assert config.model.primary == "docker-claude-code/opus"
    assert config.model.fallbacks == []
    assert list(config.agents) == ["main"]
    assert config.agents["main"] == AgentConfig()
    assert config.history_max == 1000
    assert config.sources == ("defaults",)


def test_direct_construction_has_the_same_defaults() -> None:
    check_seed_defaults(DockerCCConfig())


def test_redis_url_default_comes_from_redis_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/2")
    assert DockerCCConfig().redis.url_secret() == "redis://cache:6380/2"
    assert load_config(env={"REDIS_URL": "unix:///tmp/r.sock"}).redis.url_secret() == (
        "unix:///tmp/r.sock"
    )


def test_redacted_dump_uses_camel_case_and_seed_defaults() -> None:
    dump = load_config(env={}).redacted_dump()
    assert dump["pool"] == {
        "minWarm": 0,
        "maxTotal": 10,
        "maxPerAgent": 3,
        "acquireTimeoutMs": 60000,
        "tenant": None,
    }
    assert dump["resources"] == {"memory": "4g", "cpus": 2, "pidsLimit": 256}
    assert dump["redis"] == {
        "url": "redis://localhost:6379",
        "keyPrefix": "clawdbot:cc:",
        "containerUrl": None,
        "containerAcl": True,
    }
    assert dump["docker"]["capDrop"] == ["ALL"]
    assert dump["docker"]["securityOpts"] == ["no-new-privileges"]
    assert dump["historyMax"] == 1000
    json.dumps(dump)  # JSON-able


# ----------------------------------------------------------------------------- files


def test_seed_config_yaml_loads_verbatim(tmp_path: Path) -> None:
    config = load_config(env=seed_home(tmp_path))
    assert config.enabled is True
    assert config.pool.min_warm == 2
    assert config.pool.max_total == 10
    assert config.pool.max_per_agent == 3
    assert config.image == "clawdbot/docker-cc:latest"
    assert config.resources.memory == "4g"
    assert config.resources.cpus == 2
    assert config.redis.url_secret() == "redis://localhost:6379"
    assert config.model.primary == "docker-claude-code/opus"
    assert config.model.fallbacks == ["claude-cli/opus", "anthropic/claude-sonnet-4-5"]
    assert config.sources == ("defaults", str(tmp_path / ".clawdbot" / "config.yaml"))
    # untouched options keep the seed's defaults
    assert config.timeouts.idle_ms == 300000
    assert config.docker.network == "none"


def test_seed_file_by_explicit_path_is_detected_by_content(tmp_path: Path) -> None:
    path = write(tmp_path / "anything.yaml", SEED_CONFIG_YAML)
    config = load_config(path, env={})
    assert config.pool.min_warm == 2
    assert config.model.fallbacks == ["claude-cli/opus", "anthropic/claude-sonnet-4-5"]
    assert DockerCCConfig.from_yaml(path).pool.min_warm == 2


def test_seed_file_ignores_the_gateways_other_keys(tmp_path: Path) -> None:
    text = "gateway:\n  port: 18789\nchannels: [telegram]\n" + SEED_CONFIG_YAML.replace(
        "  defaults:\n", "  defaults:\n    workspace: ~/clawd\n    thinking: low\n"
    )
    config = load_config(env=seed_home(tmp_path, text))
    assert config.pool.min_warm == 2


def test_seed_file_model_may_be_a_string(tmp_path: Path) -> None:
    text = "agents:\n  defaults:\n    model: anthropic/claude-sonnet-4-5\n"
    assert load_config(env=seed_home(tmp_path, text)).model.primary == "anthropic/claude-sonnet-4-5"


def test_seed_file_without_our_block_changes_nothing(tmp_path: Path) -> None:
    config = load_config(env=seed_home(tmp_path, "gateway:\n  port: 1\n"))
    check_seed_defaults(config)


STANDALONE = """\
pool:
  minWarm: 1
  max_total: 4
image: example/cc:dev
redis:
  url: redis://redis:6379/1
  keyPrefix: "test:cc:"
docker:
  binds: ["/data:/data:ro"]
  env:
    FOO: bar
agents:
  reviewer:
    model: sonnet
    permissionMode: plan
    maxTurns: 5
    tools: [web_search]
"""


def test_standalone_dockercc_yaml_in_cwd(isolated: Path) -> None:
    write(isolated / "dockercc.yaml", STANDALONE)
    config = load_config(env={})
    assert config.pool.min_warm == 1
    assert config.pool.max_total == 4
    assert config.image == "example/cc:dev"
    assert config.redis.url_secret() == "redis://redis:6379/1"
    assert config.redis.key_prefix == "test:cc:"
    assert config.docker.binds == ["/data:/data:ro"]
    assert config.docker.env_values() == {"FOO": "bar"}
    assert set(config.agents) == {"main", "reviewer"}
    reviewer = config.agent("reviewer")
    assert (reviewer.model, reviewer.permission_mode, reviewer.max_turns) == ("sonnet", "plan", 5)
    assert reviewer.tools == ["web_search"]
    assert discover_config_files({}) == [isolated / "dockercc.yaml"]


def test_dockercc_config_env_names_the_standalone_file(tmp_path: Path, isolated: Path) -> None:
    write(isolated / "dockercc.yaml", "image: from-cwd\n")
    other = write(tmp_path / "elsewhere.yml", "image: from-env-path\n")
    assert load_config(env={"DOCKERCC_CONFIG": str(other)}).image == "from-env-path"
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(env={"DOCKERCC_CONFIG": str(tmp_path / "missing.yaml")})


def test_standalone_file_wins_over_seed_file(tmp_path: Path, isolated: Path) -> None:
    env = seed_home(tmp_path)
    write(isolated / "dockercc.yaml", "pool:\n  minWarm: 5\n")
    config = load_config(env=env)
    assert config.pool.min_warm == 5
    assert config.pool.max_total == 10
    assert config.model.fallbacks == ["claude-cli/opus", "anthropic/claude-sonnet-4-5"]


def test_explicit_path_replaces_discovery(tmp_path: Path, isolated: Path) -> None:
    env = seed_home(tmp_path)
    write(isolated / "dockercc.yaml", "image: from-cwd\n")
    path = write(tmp_path / "explicit.yaml", "pool:\n  maxTotal: 7\n")
    config = load_config(path, env=env)
    assert config.pool.max_total == 7
    assert config.pool.min_warm == 0  # the seed file was not read
    assert config.image == "clawdbot/docker-cc:latest"


def test_missing_explicit_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={})
    assert "nope.yaml" in str(info.value)


def test_empty_file_is_fine(tmp_path: Path) -> None:
    check_seed_defaults(load_config(write(tmp_path / "empty.yaml", ""), env={}))


# ----------------------------------------------------------------------------- precedence


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "dockercc.yaml", "pool:\n  minWarm: 1\n  maxTotal: 8\nimage: file\n")
    env = {"DOCKERCC_POOL__MIN_WARM": "2", "DOCKERCC_IMAGE": "env"}

    assert load_config(path, env={}).pool.min_warm == 1
    from_env = load_config(path, env=env)
    assert (from_env.pool.min_warm, from_env.pool.max_total, from_env.image) == (2, 8, "env")
    overridden = load_config(path, env=env, pool={"min_warm": 3})
    assert (overridden.pool.min_warm, overridden.pool.max_total) == (3, 8)  # deep-merged
    assert overridden.image == "env"
    assert overridden.sources == ("defaults", str(path), "environment", "keyword overrides")


def test_redis_url_env_beats_the_file_and_overrides_beat_env(tmp_path: Path) -> None:
    env = seed_home(tmp_path) | {"REDIS_URL": "redis://redis:6379"}
    assert load_config(env=env).redis.url_secret() == "redis://redis:6379"
    env["DOCKERCC_REDIS__URL"] = "redis://specific:1"
    assert load_config(env=env).redis.url_secret() == "redis://specific:1"
    config = load_config(env=env, redis={"url": "rediss://override:2"})
    assert config.redis.url_secret() == "rediss://override:2"


def test_overrides_accept_model_instances_and_both_spellings(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "pool:\n  maxTotal: 20\n")
    config = load_config(
        path,
        env={},
        pool=PoolConfig(min_warm=4),  # only the fields set on the instance count
        resources={"pidsLimit": 512, "memory": "512m"},
        historyMax=5,
        agents={"helper": AgentConfig(max_turns=2), "main": {"model": "opus"}},
    )
    assert (config.pool.min_warm, config.pool.max_total) == (4, 20)
    assert config.resources.pids_limit == 512
    assert config.resources.memory_bytes == 512 * 1024**2
    assert config.history_max == 5
    assert config.agents["helper"].max_turns == 2
    assert config.agents["main"].model == "opus"


def test_both_key_spellings_load() -> None:
    camel = PoolConfig.model_validate({"minWarm": 1, "maxTotal": 2, "maxPerAgent": 1})
    snake = PoolConfig.model_validate({"min_warm": 1, "max_total": 2, "max_per_agent": 1})
    assert camel == snake == PoolConfig(min_warm=1, max_total=2, max_per_agent=1)
    assert camel.model_dump(by_alias=True) == {
        "minWarm": 1,
        "maxTotal": 2,
        "maxPerAgent": 1,
        "acquireTimeoutMs": 60000,
        "tenant": None,
    }
    config = load_config(
        env={},
        docker={"capDrop": ["NET_RAW"], "security_opts": [], "readOnly": False},
        timeouts={"idle_ms": 5, "maxAgeMs": 6, "staleAfterMisses": 9},
    )
    assert config.docker.cap_drop == ["NET_RAW"]
    assert config.docker.security_opts == []
    assert config.docker.read_only is False
    assert (config.timeouts.idle_ms, config.timeouts.max_age_ms) == (5, 6)
    assert config.timeouts.stale_after_misses == 9


def test_same_key_in_both_spellings_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "pool:\n  minWarm: 1\n  min_warm: 2\n")
    with pytest.raises(ConfigError, match="min_warm"):
        load_config(path, env={})


# ----------------------------------------------------------------------------- environment


def test_env_scheme() -> None:
    config = load_config(
        env={
            "DOCKERCC_POOL__MIN_WARM": "2",
            "DOCKERCC_POOL__MAXTOTAL": "9",
            "DOCKERCC_RESOURCES__CPUS": "1.5",
            "DOCKERCC_REDIS__KEY_PREFIX": "x:cc:",
            "DOCKERCC_DOCKER__CAP_DROP": "ALL, NET_RAW",
            "DOCKERCC_DOCKER__SECURITY_OPTS": '["no-new-privileges", "seccomp=unconfined"]',
            "DOCKERCC_DOCKER__READ_ONLY": "false",
            "DOCKERCC_DOCKER__ENV__HTTP_PROXY": "http://proxy:3128",
            "DOCKERCC_DOCKER__BASE_URL": "",
            "DOCKERCC_TIMEOUTS": '{"idleMs": 1000, "startup_ms": 2000}',
            "DOCKERCC_AGENTS__MAIN__MODEL": "sonnet",
            "DOCKERCC_AGENTS__reviewer__MAX_TURNS": "4",
            "DOCKERCC_MODEL": "anthropic/claude-sonnet-4-5",
            "DOCKERCC_HISTORY_MAX": "10",
            "DOCKERCC_ENABLED": "0",
            "DOCKERCC_SOMETHING_ELSE": "not ours, ignored",
        }
    )
    assert (config.pool.min_warm, config.pool.max_total) == (2, 9)
    assert config.resources.cpus == 1.5
    assert config.redis.key_prefix == "x:cc:"
    assert config.docker.cap_drop == ["ALL", "NET_RAW"]
    assert config.docker.security_opts == ["no-new-privileges", "seccomp=unconfined"]
    assert config.docker.read_only is False
    assert config.docker.env_values() == {"HTTP_PROXY": "http://proxy:3128"}
    assert config.docker.base_url is None
    assert (config.timeouts.idle_ms, config.timeouts.startup_ms) == (1000, 2000)
    assert config.agents["main"].model == "sonnet"
    assert config.agents["reviewer"].max_turns == 4
    assert config.model.primary == "anthropic/claude-sonnet-4-5"
    assert config.history_max == 10
    assert config.enabled is False


def test_env_typo_suggests_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"DOCKERCC_POOL__MIN_WARN": "2", "DOCKERCC_POLL__MAX_TOTAL": "3"})
    message = str(info.value)
    assert "DOCKERCC_POOL__MIN_WARM" in message
    assert "DOCKERCC_POOL__MAX_TOTAL" in message
    assert [p[0] for p in info.value.problems] == [
        "DOCKERCC_POLL__MAX_TOTAL",
        "DOCKERCC_POOL__MIN_WARN",
    ]


def test_env_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"DOCKERCC_POOL__MIN_WARM": "many"})
    assert info.value.problems == [("DOCKERCC_POOL__MIN_WARM", "many", "an integer >= 0")]
    assert "environment" in str(info.value)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4g", 4 * 1024**3),
        ("512m", 512 * 1024**2),
        ("1024k", 1024 * 1024),
        ("2G", 2 * 1024**3),
        ("1.5g", int(1.5 * 1024**3)),
        ("4gb", 4 * 1024**3),
        ("4GiB", 4 * 1024**3),
        ("1073741824", 1024**3),
        (1073741824, 1024**3),
    ],
)
def test_memory_sizes_parse(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected
    assert ResourcesConfig(memory=text).memory_bytes == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("junk", ["lots", "4x", "", "-1g", "0", "4 g b x", "0k", "g4", True, [4]])
def test_memory_junk_is_rejected(junk: Any) -> None:
    with pytest.raises(ValueError):
        parse_memory(junk)
    with pytest.raises(ConfigError) as info:
        load_config(env={}, resources={"memory": junk})
    ((path, _value, allowed),) = info.value.problems
    assert path == "resources.memory"
    assert "4g" in allowed and "512m" in allowed


def test_three_bad_keys_give_one_error_listing_all(tmp_path: Path) -> None:
    text = SEED_CONFIG_YAML.replace("minWarm: 2", "minWarm: -1").replace(
        "memory: 4g", "memory: lots"
    )
    text = text.replace("url: redis://localhost:6379", "url: http://localhost:6379")
    path = write(tmp_path / ".clawdbot" / "config.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(env={"HOME": str(tmp_path)})
    error = info.value
    message = str(error)
    assert "3 problems" in message
    assert error.problems == [
        ("agents.defaults.dockerClaudeCode.pool.minWarm", -1, "an integer >= 0"),
        (
            "agents.defaults.dockerClaudeCode.resources.memory",
            "lots",
            error.problems[1][2],
        ),
        (
            "agents.defaults.dockerClaudeCode.redis.url",
            "http://localhost:6379",
            "a redis://, rediss://, unix:// or "
            "redis+sentinel://host:port[,host:port]/service[/db] URL",
        ),
    ]
    assert "4g" in error.problems[1][2]
    for path_, value, allowed in error.problems:
        assert path_ in message
        assert repr(value) in message
        assert allowed in message
    assert str(path) in message
    assert isinstance(error, ValueError)


def test_unknown_key_suggests_the_closest_name(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.yaml", "pool:\n  minWarn: 2\nresources:\n  pids_limt: 64\nimgae: x\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problems = {p[0]: p[2] for p in info.value.problems}
    assert "did you mean 'minWarm'?" in problems["pool.minWarn"]
    assert "did you mean 'pids_limit'?" in problems["resources.pids_limt"]
    assert "did you mean 'image'?" in problems["imgae"]
    assert "unknown key" in str(info.value)


def test_unknown_agent_option_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={}, agents={"main": {"systemPromt": "hi"}})
    ((path, value, allowed),) = info.value.problems
    assert path == "agents.main.systemPromt"
    assert value == "hi"
    assert "did you mean 'systemPrompt'?" in allowed


def test_bad_yaml_gives_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "pool:\n  minWarm: 2\n  maxTotal: [1, 2\nimage: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert str(path) in message
    assert "line 4" in message
    ((where, _, allowed),) = info.value.problems
    assert where == f"{path}:4"
    assert allowed == "valid YAML"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path / "list.yaml", "- a\n- b\n"), env={})


def test_agent_names_are_validated() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={}, agents={"bad name": {}, "../x": {}, "ok-1": {}})
    paths = [p[0] for p in info.value.problems]
    assert paths == ["agents.bad name", "agents.../x"]
    assert "A-Z a-z 0-9" in info.value.problems[0][2]


def test_main_agent_always_exists() -> None:
    config = load_config(env={}, agents={"other": {}})
    assert set(config.agents) == {"main", "other"}
    assert set(DockerCCConfig(agents={"x": AgentConfig()}).agents) == {"main", "x"}
    with pytest.raises(ConfigError, match="did you mean 'other'"):
        config.agent("othr")


def test_limits_and_ranges() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            env={},
            pool={"minWarm": 5, "maxTotal": 2},
            resources={"cpus": 0, "pidsLimit": 8},
            timeouts={"idleMs": 0},
            agents={"main": {"permissionMode": "yolo", "maxTurns": True}},
            docker={"containerPrefix": "-bad", "binds": ["nocolon"]},
        )
    problems = {p[0]: p[2] for p in info.value.problems}
    assert problems["pool.minWarm"] == "an integer from 0 to maxTotal (2)"
    assert problems["resources.cpus"] == "a number > 0"
    assert problems["resources.pidsLimit"] == "an integer >= 16"
    assert problems["timeouts.idleMs"] == "an integer > 0"
    assert "bypassPermissions" in problems["agents.main.permissionMode"]
    assert "agents.main.maxTurns" in problems
    assert "docker.containerPrefix" in problems
    assert "docker.binds" in problems


def test_assignment_is_validated() -> None:
    config = load_config(env={})
    config.pool.min_warm = 2
    with pytest.raises(ValidationError):
        config.pool.min_warm = -1


# ----------------------------------------------------------------------------- secrets


def secret_config(tmp_path: Path) -> DockerCCConfig:
    text = SEED_CONFIG_YAML.replace(
        "url: redis://localhost:6379", f"url: redis://:{PASSWORD}@localhost:6379/0"
    )
    text += (
        f"      credentials:\n        oauthToken: {TOKEN}\n        apiKey: {TOKEN}-key\n"
        f"      docker:\n        env:\n          SECRET_THING: {ENV_SECRET}\n"
        f"      agents:\n        main:\n          env:\n            AGENT_SECRET: {ENV_SECRET}-a\n"
    )
    return load_config(env=seed_home(tmp_path, text))


def assert_no_canary(text: str) -> None:
    assert TOKEN not in text
    assert PASSWORD not in text
    assert ENV_SECRET not in text
    assert "CANARY" not in text


def test_secrets_never_show(tmp_path: Path) -> None:
    config = secret_config(tmp_path)
    for text in all_outputs(config):
        assert_no_canary(text)
    dump = config.redacted_dump()
    assert dump["credentials"]["oauthToken"] == "***"
    assert dump["credentials"]["apiKey"] == "***"
    assert dump["docker"]["env"] == {"SECRET_THING": "***"}
    assert dump["agents"]["main"]["env"] == {"AGENT_SECRET": "***"}
    assert dump["redis"]["url"] == "redis://:***@localhost:6379/0"
    assert config.redis.redacted() == "redis://:***@localhost:6379/0"
    assert repr(config.redis.url) == "RedisUrl('redis://:***@localhost:6379/0')"


def test_real_values_are_available_where_needed(tmp_path: Path) -> None:
    config = secret_config(tmp_path)
    assert config.redis.url_secret() == f"redis://:{PASSWORD}@localhost:6379/0"
    assert config.redis.url.get_secret_value() == config.redis.url_secret()
    assert config.credentials.oauth_token is not None
    assert config.credentials.oauth_token.get_secret_value() == TOKEN
    caller_env = {"HTTPS_PROXY": "http://proxy:3128", "UNRELATED": "x", "NO_PROXY": ""}
    env = secret_env(config, caller_env)
    assert env == {
        "CLAUDE_CODE_OAUTH_TOKEN": TOKEN,
        "ANTHROPIC_API_KEY": f"{TOKEN}-key",
        "HTTPS_PROXY": "http://proxy:3128",
        "NO_PROXY": "",
    }
    full = container_env(config, "main", caller_env)
    assert full["SECRET_THING"] == ENV_SECRET
    assert full["AGENT_SECRET"] == f"{ENV_SECRET}-a"
    assert full["CLAUDE_CODE_OAUTH_TOKEN"] == TOKEN


def test_credentials_come_from_the_environment() -> None:
    config = load_config(
        env={
            "CLAUDE_CODE_OAUTH_TOKEN": TOKEN,
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
            "ANTHROPIC_MODEL": "claude-test",
        }
    )
    assert secret_env(config, {"ANTHROPIC_MODEL": "claude-test"}) == {
        "CLAUDE_CODE_OAUTH_TOKEN": TOKEN,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
        "ANTHROPIC_MODEL": "claude-test",
    }
    for text in all_outputs(config):
        assert TOKEN not in text


def test_config_errors_never_show_secrets(tmp_path: Path) -> None:
    text = SEED_CONFIG_YAML.replace(
        "url: redis://localhost:6379", f"url: http://:{PASSWORD}@localhost:6379"
    )
    text += (
        f"      credentials:\n        oauthTokn: {TOKEN}\n        apiKey: [{TOKEN}]\n"
        f"      docker:\n        env:\n          bad-name: {ENV_SECRET}\n          OK: [{ENV_SECRET}]\n"
        f"      agents:\n        main:\n          envv:\n            X: {ENV_SECRET}\n"
    )
    env = seed_home(tmp_path, text) | {
        "DOCKERCC_CREDENTIALS__OAUTH_TOKEN": "",
        "DOCKERCC_CREDENTIALS__API_KEYY": TOKEN,
        "REDIS_URL": f"ftp://user:{PASSWORD}@x",
    }
    with pytest.raises(ConfigError) as info:
        load_config(env=env, credentials={"oauthToken": 12345, "token_x": TOKEN})
    error = info.value
    assert len(error.problems) >= 7
    assert_no_canary(str(error))
    assert_no_canary(repr(error))
    assert_no_canary(repr(error.problems))
    assert "oauthTokn" in str(error)
    assert "ftp://user:***@x" in str(error)  # REDIS_URL (env) beats the file


def test_direct_validation_errors_hide_input() -> None:
    with pytest.raises(ValidationError) as info:
        RedisConfig(url=f"http://:{PASSWORD}@h")  # type: ignore[arg-type]
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(info.value)


def test_mask_url() -> None:
    assert mask_url("redis://:pw@host:6379") == "redis://:***@host:6379"
    assert mask_url("rediss://user:p@ss@host:6379/0") == "rediss://user:***@host:6379/0"
    assert mask_url("redis://host:6379?password=pw&db=1") == "redis://host:6379?password=***&db=1"
    assert mask_url("unix:///tmp/redis.sock") == "unix:///tmp/redis.sock"
    assert str(RedisUrl("redis://u:pw@h")) == "redis://u:***@h"
    assert RedisUrl("redis://u:pw@h").has_password
    assert not RedisUrl("redis://h").has_password


# ----------------------------------------------------------------------------- helpers


def test_resolve(tmp_path: Path) -> None:
    config = load_config(env={})
    assert resolve(config) is config
    assert resolve_config is resolve
    assert DockerCCConfig.resolve(config) is config
    assert resolve(None).pool.min_warm == 0
    path = write(tmp_path / "d.yaml", "pool:\n  minWarm: 3\n")
    assert resolve(path).pool.min_warm == 3
    assert resolve(str(path)).pool.min_warm == 3
    assert resolve({"pool": {"minWarm": 4}}).pool.min_warm == 4
    assert DockerCCConfig.load(path, env={}, image="i").image == "i"
    with pytest.raises(TypeError):
        resolve(42)  # type: ignore[arg-type]


def test_load_config_is_the_one_entry_point(tmp_path: Path, monkeypatch: Any) -> None:
    """Every other way of building a config is load_config underneath: the same result."""
    path = write(tmp_path / "d.yaml", "pool:\n  minWarm: 3\nimage: from-file\n")
    monkeypatch.setenv("DOCKERCC_IMAGE", "from-env")
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    monkeypatch.chdir(tmp_path)
    dump = load_config(path).redacted_dump()
    assert dump["image"] == "from-env" and dump["pool"]["minWarm"] == 3
    for other in (resolve_config(path), DockerCCConfig.load(path), DockerCCConfig.resolve(path)):
        assert other.redacted_dump() == dump
    # from_yaml: the file without the DOCKERCC_* layer
    assert DockerCCConfig.from_yaml(path).image == "from-file"
    assert load_config(path, environment=False).image == "from-file"
    assert (DockerCCConfig.from_yaml(path).redacted_dump()
            == load_config(path, environment=False).redacted_dump())


def test_load_config_of_a_mapping_and_overrides(tmp_path: Path) -> None:
    config = load_config({"pool": {"minWarm": 1, "maxTotal": 5}}, env={}, pool={"minWarm": 2})
    assert (config.pool.min_warm, config.pool.max_total) == (2, 5)  # deep-merged, kwargs win
    assert config.sources == ("defaults", "keyword overrides")
    with pytest.raises(ConfigError) as err:
        load_config({"pool": {"minWarn": 1}}, env={})
    assert "did you mean 'minWarm'" in str(err.value)


def test_load_config_of_a_config_with_overrides(tmp_path: Path) -> None:
    base = secret_config(tmp_path)
    assert load_config(base) is base
    changed = load_config(base, pool={"minWarm": 1}, image="other")
    assert changed is not base
    assert (changed.pool.min_warm, changed.image) == (1, "other")
    assert (base.pool.min_warm, base.image) == (2, "clawdbot/docker-cc:latest")
    # everything else is the given config's, secrets included
    assert changed.redis.url_secret() == base.redis.url_secret()
    assert changed.credentials.oauth_token == base.credentials.oauth_token
    assert changed.agent("main").env_values() == base.agent("main").env_values()
    assert changed.model.fallbacks == base.model.fallbacks
    assert changed.sources == (*base.sources, "keyword overrides")
    with pytest.raises(ConfigError) as err:
        load_config(base, pool={"minWarm": -1})
    assert "pool.minWarm" in str(err.value)
    assert_no_canary(str(err.value))


def test_the_config_package_imports_nothing_above_it() -> None:
    """The config is below the builtins, the pool and the faces: importing it loads none."""
    code = ("import sys, dockercc.config; "
            "print(sorted(m for m in sys.modules if m.startswith('dockercc.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    loaded = {m.split(".")[1] for m in json.loads(out.replace("'", '"'))}
    assert loaded <= {"config", "errors", "protocol", "redaction"}, loaded


def test_secret_values_round_trip_through_overrides(tmp_path: Path) -> None:
    config = secret_config(tmp_path)
    again = load_config(env={}, **config.model_dump(by_alias=True))
    assert again.redis.url_secret() == config.redis.url_secret()
    assert again.credentials.oauth_token == SecretStr(TOKEN)


def test_reference_markdown_contains_the_seed_tables() -> None:
    text = reference_markdown()
    for row in SEED_TABLE_ROWS:
        assert row in text, row
    for title in SEED_SECTIONS:
        assert title in text
    assert text.count("| Option | Type | Default | Description |") >= len(SEED_SECTIONS)
    for extra in ("`acquireTimeoutMs`", "`staleAfterMisses`", "`oauthToken`", "`passthroughEnv`"):
        assert extra in text
    # every field is documented
    for line in text.splitlines():
        if line.startswith("| `"):
            assert not line.rstrip().endswith("|  |"), line
