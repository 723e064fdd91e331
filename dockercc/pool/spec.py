"""What a container is made of (:class:`ContainerSpec`) and the key that groups warm sets.

Two sessions can share a warm set only when everything baked in at create time is equal:
image, resources, network, binds, security options and environment. The spec key is a short
hash over all of it; environment *values* enter only as a hash, never in clear, so secrets
stay out of labels and Redis.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from ..config import AgentConfig, DockerCCConfig, container_env
from ..egress.proxy import DEFAULT_API, SOCKET_NAME, Upstream
from ..errors import PoolError
from ..protocol.cli import start_time_args
from ..storage.sentinel import parse_sentinel_url

CONTAINER_HOME = "/home/agent"
RUNNER_DIR = "/run/dockercc"
"""What only the runner may reach is mounted here: a tmpfs of the runner's uid, mode 0700 (the
image has it root's 0700 too)."""
CREDENTIALS_MOUNT = f"{RUNNER_DIR}/credentials.json"
SOCKET_DIR = f"{RUNNER_DIR}/redis"
RUNNER_USER = "0:0"
RUNNER_CAPS = ("SETUID", "SETGID", "KILL")
"""All the root runner keeps: start the CLI as the agent (and look at its files as the agent,
``setfsuid``), and signal the agent's processes. No DAC_OVERRIDE: root cannot open the
agent's files except as the agent."""
RELAY_SOCKET = f"{SOCKET_DIR}/relay.sock"
"""Where a container on the ``none`` network finds the pool's relay to a TCP Redis."""
EGRESS_DIR = f"{RUNNER_DIR}/egress"
"""Where the container's egress proxy socket directory is mounted (the runner forwards to it)."""
EGRESS_PORT = 3128
"""The runner's forwarder on the container's own loopback: the CLI's API base URL and
HTTP(S) proxy (each container has its own network namespace, so a fixed port is fine)."""
PLACEHOLDER = "dockercc-proxy-placeholder"
"""What the container holds instead of a credential: the proxy replaces it on the way out."""
OTHER_PROVIDERS = ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
               "no_proxy", "all_proxy")


class ContainerSpec(BaseModel):
    """Everything a container is created with. ``env`` holds real values: never log it."""

    model_config = ConfigDict(frozen=True)

    image: str
    memory: str = "4g"
    cpus: float = 2.0
    pids_limit: int = 256
    network: str = "none"
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opts: tuple[str, ...] = ("no-new-privileges",)
    binds: tuple[str, ...] = ()
    read_only: bool = True
    user: str = "1000:1000"  # the agent's (the CLI and its tools)
    isolate_runner: bool = True  # the runner as RUNNER_USER with RUNNER_CAPS, not as ``user``
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    redis_url: str = Field("redis://localhost:6379", repr=False)
    credentials_file: str | None = None
    command: tuple[str, ...] | None = None
    tmpfs_size: str = "1g"
    scratch_volume: bool = True
    """Without a ``/workspace`` mount: a fresh volume (:func:`scratch_volume_name`) there
    instead of the tmpfs, which the session that claims the container keeps."""
    mounts: tuple[tuple[str, str, str, bool], ...] = ()
    """The session's workspace and ``add_dirs`` as ``(kind, source, target, read_only)``
    (see :class:`dockercc.workspace.WorkspaceMount`); a ``/workspace`` one replaces the
    scratch tmpfs. Part of the key: such a session gets a cold container (docs/workspaces.md)."""
    egress: tuple[str, ...] | None = None
    """The allow-list when the container goes out through the pool's egress proxy (network
    ``none``); None: no proxy (``host`` or a named network)."""
    redis_relay: bool = False
    """The runner reaches the (TCP) Redis through the pool's unix-socket relay."""
    upstream: Upstream | None = Field(None, exclude=True, repr=False)
    """The API base URL and the real credentials, for the proxy (never in the container)."""
    egress_dir: str | None = Field(None, exclude=True)
    redis_relay_socket: str | None = Field(None, exclude=True)
    """(host paths set by the pool for one container, not part of the spec's identity)"""

    def key(self) -> str:
        """Short stable hash of the spec (secrets enter only hashed)."""
        public = self.model_dump(exclude={"env", "redis_url"})
        env_digest = hashlib.sha256(json.dumps(sorted(self.env.items())).encode()).hexdigest()
        url_digest = hashlib.sha256(self.redis_url.encode()).hexdigest()
        up = self.upstream
        # the proxy's credentials: containers of pools with other credentials never mix
        up_digest = hashlib.sha256(json.dumps(
            None if up is None else [up.base_url, up.api_key, up.bearer, up.credentials_file]
        ).encode()).hexdigest()
        blob = json.dumps([public, env_digest, url_digest, up_digest], sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def container_user(self) -> str:
        """Docker's ``User``: root (the runner, with :data:`RUNNER_CAPS` only) when the
        runner is isolated from the agent, else the agent's user for everything."""
        return RUNNER_USER if self.isolate_runner else self.user

    def cap_add(self) -> list[str]:
        return list(RUNNER_CAPS) if self.isolate_runner else []

    def redis_socket(self) -> str | None:
        """Host path of the Redis unix socket, when the runners reach Redis through one."""
        if self.redis_url.startswith("unix://"):
            return urlsplit(self.redis_url).path
        return None


def runner_redis_url(config: DockerCCConfig) -> str:
    """The Redis URL as the runner inside a container sees it.

    ``redis.containerUrl`` wins. With ``network: host`` the host's URL works as is. A unix
    socket is bind-mounted into the container. With ``network: none`` a TCP URL is reached
    through the pool's unix-socket relay (:func:`relay_url`). Otherwise ``localhost`` becomes
    ``host.docker.internal`` (mapped to the host gateway when the container is created).
    """
    if config.redis.container_url is not None:
        return config.redis.container_url.get_secret_value()
    url = config.redis.url_secret()
    if url.startswith("unix://") or config.docker.network in ("host", "none"):
        return url  # (none: a TCP URL is reached through the pool's relay, see relay_url)
    parts = urlsplit(url)
    if parts.hostname in ("localhost", "127.0.0.1", "::1"):
        netloc = parts.netloc.replace(parts.hostname, "host.docker.internal", 1)
        if parts.hostname == "::1":
            netloc = parts.netloc.replace("[::1]", "host.docker.internal", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def spec_for(config: DockerCCConfig, agent: str | AgentConfig = "main", *,
             env: dict[str, str] | None = None, extra_env: dict[str, str] | None = None,
             image: str | None = None) -> ContainerSpec:
    """The spec of an agent's containers under ``config``."""
    agent_config = config.agent(agent) if isinstance(agent, str) else agent
    values = container_env(config, agent_config, env)
    if extra_env:
        values.update(extra_env)
    creds = config.credentials.credentials_file
    egress: tuple[str, ...] | None = None
    upstream: Upstream | None = None
    redis_url = runner_redis_url(config)
    relay = False
    if config.docker.network == "none":
        allow = agent_config.egress.allow
        egress = tuple(config.egress.allow if allow is None else allow)
        values, upstream = proxied_env(values, str(creds) if creds else None)
        creds = None  # read by the proxy on the host, never mounted
        relay = not redis_url.startswith("unix://")
        if relay and not redis_url.startswith(("redis://", "redis+sentinel://")):
            raise PoolError("a container on the `none` network reaches a TCP Redis through a "
                            "plain relay: use a redis:// or unix:// URL, or set "
                            "redis.containerUrl")
    return ContainerSpec(
        image=image or agent_config.image or config.image,
        memory=config.resources.memory,
        cpus=config.resources.cpus,
        pids_limit=config.resources.pids_limit,
        network=config.docker.network,
        cap_drop=tuple(config.docker.cap_drop),
        security_opts=tuple(config.docker.security_opts),
        binds=tuple(config.docker.binds or ()),
        read_only=config.docker.read_only,
        scratch_volume=config.docker.scratch_volumes,
        user=config.docker.user,
        isolate_runner=config.docker.isolate_runner,
        env=values,
        redis_url=redis_url,
        credentials_file=str(creds) if creds else None,
        egress=egress,
        redis_relay=relay,
        upstream=upstream,
    )


def scratch_volume_name(container: str) -> str:
    """The scratch workspace volume of pool container ``container`` (its pool id)."""
    return f"dockercc-ws-{container}"


def other_provider(env: dict[str, str]) -> bool:
    """Whether the CLI talks to Bedrock / Vertex / Foundry (not the Anthropic API)."""
    return any(env.get(k, "").strip().lower() not in ("", "0", "false", "no")
               for k in OTHER_PROVIDERS)


def proxied_env(values: dict[str, str], credentials_file: str | None
                ) -> tuple[dict[str, str], Upstream]:
    """A container environment for the egress proxy: the CLI's API base URL and HTTP(S)
    proxy are the runner's forwarder, and each credential becomes :data:`PLACEHOLDER` (the
    CLI still sends its header, the proxy puts the real value in). Returns the environment
    and the :class:`Upstream` (real base URL and credentials) for the proxy.

    Bedrock / Vertex / Foundry cannot work that way (their requests are signed in the
    container): with ``CLAUDE_CODE_USE_*`` set the credentials stay in the environment as
    without the proxy, and their endpoints must be in the allow-list."""
    out = {k: v for k, v in values.items() if k not in _PROXY_VARS}
    forwarder = f"http://127.0.0.1:{EGRESS_PORT}"
    if other_provider(out):
        upstream = Upstream(out.get("ANTHROPIC_BASE_URL") or DEFAULT_API)
    else:
        api_key = out.pop("ANTHROPIC_API_KEY", "") or None
        oauth = out.pop("CLAUDE_CODE_OAUTH_TOKEN", "") or None
        auth_token = out.pop("ANTHROPIC_AUTH_TOKEN", "") or None
        upstream = Upstream(out.pop("ANTHROPIC_BASE_URL", "") or DEFAULT_API, api_key=api_key,
                            bearer=oauth or auth_token, credentials_file=credentials_file)
        if api_key:
            out["ANTHROPIC_API_KEY"] = PLACEHOLDER
        if oauth or credentials_file:
            out["CLAUDE_CODE_OAUTH_TOKEN"] = PLACEHOLDER
        if auth_token and not oauth:
            out["ANTHROPIC_AUTH_TOKEN"] = PLACEHOLDER
        out["ANTHROPIC_BASE_URL"] = forwarder
    no_proxy = "localhost,127.0.0.1,::1"
    out.update({"HTTP_PROXY": forwarder, "HTTPS_PROXY": forwarder, "http_proxy": forwarder,
                "https_proxy": forwarder, "NO_PROXY": no_proxy, "no_proxy": no_proxy})
    return out, upstream


def relay_url(url: str) -> str:
    """The runner's URL for a TCP Redis reached through the pool's relay: the same user,
    password, database and options, over :data:`RELAY_SOCKET`."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    db = parts.path.strip("/") or "0"
    if parts.scheme.lower() == "redis+sentinel":  # (path /service[/db]; the relay resolves)
        db = str(parse_sentinel_url(url).db)
        parts = parts._replace(query="&".join(q for q in parts.query.split("&")
                                              if q and not q.startswith("sentinel_password=")))
    query = "&".join(q for q in (f"db={db}", parts.query) if q)
    return f"unix://{userinfo + '@' if userinfo else ''}{RELAY_SOCKET}?{query}"


def runner_env(spec: ContainerSpec, *, container: str, prefix: str,
               health_interval_ms: int, prestart: dict[str, Any] | None = None,
               orphan_ms: int | None = None, permission_ms: int | None = None
               ) -> dict[str, str]:
    """The container's full environment: the spec's env plus the runner's settings.

    ``prestart`` (warm containers) makes the runner start the CLI before the claim with
    ``prestart["args"]`` and answer its start-up MCP ``tools/list`` with
    ``prestart["tools"]`` (see :class:`dockercc.agent.settings.Prestart`). It is not part of
    the spec key: a session whose arguments differ still takes the container (the runner
    restarts the CLI).
    """
    url = spec.redis_url
    socket = spec.redis_socket()
    if socket:
        url = f"unix://{SOCKET_DIR}/{socket.rsplit('/', 1)[-1]}"
    elif spec.redis_relay:
        url = relay_url(url)
    env: dict[str, Any] = {
        **spec.env,
        "DOCKERCC_REDIS_URL": url,
        "DOCKERCC_CONTAINER": container,
        "DOCKERCC_KEY_PREFIX": prefix,
        "DOCKERCC_HEALTH_INTERVAL_MS": str(health_interval_ms),
        **({"DOCKERCC_ORPHAN_MS": str(orphan_ms)} if orphan_ms else {}),
        **({"DOCKERCC_PERMISSION_MS": str(permission_ms)} if permission_ms else {}),
        "DOCKERCC_WORKDIR": "/workspace",
        "HOME": CONTAINER_HOME,
    }
    if spec.isolate_runner:
        env["DOCKERCC_AGENT_USER"] = spec.user  # whom the root runner starts the CLI as
    if spec.credentials_file:
        env["DOCKERCC_CREDENTIALS_FILE"] = CREDENTIALS_MOUNT
    if spec.egress is not None:
        env["DOCKERCC_EGRESS_SOCKET"] = f"{EGRESS_DIR}/{SOCKET_NAME}"
        env["DOCKERCC_EGRESS_PORT"] = str(EGRESS_PORT)
    if prestart is not None and not spec.command:
        env["DOCKERCC_PRESTART"] = json.dumps(prestart, separators=(",", ":"))
    return {k: str(v) for k, v in env.items()}


# -- warm sets keyed by what a pre-started CLI cannot change ---------------------------------

def warm_fingerprint(args: list[str] | tuple[str, ...]) -> str:
    """Short hash of the start-time part of the CLI arguments a warm container's CLI is
    pre-started with (:func:`dockercc.protocol.cli.start_time_args`).

    The runner applies the run-time part (model, permission mode, allowed / disallowed
    tools) to a pre-started CLI at the claim, but a CLI whose start-time arguments differ
    (system prompt, ``--tools``, MCP servers, ...) must be restarted: warm sets are keyed by
    the spec *and* this."""
    blob = json.dumps(start_time_args(args), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def warm_set_key(spec_key: str, prestart: dict[str, Any] | None) -> str:
    """The warm-set key: ``<spec key>`` alone for containers without a pre-started CLI, else
    ``<spec key>-<fingerprint of the pre-start's arguments>``."""
    if prestart is None:
        return spec_key
    return f"{spec_key}-{warm_fingerprint(prestart.get('args') or [])}"


def set_base(set_key: str) -> str:
    """The spec key of a warm-set key."""
    return set_key.split("-", 1)[0]


_SHAREABLE_FLAGS = {
    "--include-partial-messages": 0, "--model": 1, "--system-prompt": 1,
    "--append-system-prompt": 1, "--permission-mode": 1, "--permission-prompt-tool": 1,
    "--fallback-model": 1, "--tools": 1, "--allowedTools": 1, "--disallowedTools": 1,
    "--max-turns": 1, "--max-budget-usd": 1, "--setting-sources": 1,
    "--max-thinking-tokens": 1, "--thinking": 1, "--effort": 1, "--json-schema": 1,
    "--add-dir": 1, "--mcp-config": 1,
}
"""Flags whose values are options, never credentials (an allow-list: ``extra_args`` may
carry anything, external MCP servers carry headers and environments)."""


def shareable_args(args: list[str] | tuple[str, ...]) -> bool:
    """Whether CLI arguments may be stored in Redis as a demand warm set's recipe (for other
    processes to pre-start): only allow-listed flags, and an ``--mcp-config`` naming no
    server but the host bridge (``type: sdk``). Others stay in the process's memory."""
    i = 0
    while i < len(args):
        flag = args[i]
        if flag not in _SHAREABLE_FLAGS:
            return False
        if flag == "--mcp-config":
            try:
                servers = json.loads(args[i + 1]).get("mcpServers", {})
            except (ValueError, IndexError, AttributeError):
                return False
            if not isinstance(servers, dict) or any(
                    not isinstance(v, dict) or set(v) != {"type", "name"} or v["type"] != "sdk"
                    for v in servers.values()):
                return False
        i += 1 + _SHAREABLE_FLAGS[flag]
    return True
