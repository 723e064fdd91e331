"""The built-in tools' options (``tools.webFetch``, ``tools.webSearch``, ``tools.sessions``,
``tools.nodes``, ``tools.cron``, ``tools.message``): :class:`ToolsConfig` and its sections.

They live in the config package, not in :mod:`dockercc.builtins`, because
:class:`~dockercc.config.DockerCCConfig` holds them (validation, the ``DOCKERCC_TOOLS__*``
variables, error wording and the generated reference all walk one model tree), and the
config sits below the builtins: ``dockercc.builtins`` imports the bridge, the pool and the
config, so the config importing it back would be a cycle and an upward arrow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator

from .fields import (
    _MEMORY_ALLOWED,
    AgentName,
    Float,
    Int,
    _check_agent_name,
    _doc,
    _Model,
    parse_memory,
)


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

