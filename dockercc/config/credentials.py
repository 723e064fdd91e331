"""The one place that hands out REAL credential values: the environment of an agent's
container (never log what these return)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .models import AgentConfig, DockerCCConfig


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

