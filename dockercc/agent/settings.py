"""What the runner is told: its settings (the container's ``DOCKERCC_*`` environment), the
CLI to pre-start in a warm container (``DOCKERCC_PRESTART``) and a session's assignment.

Plain dataclasses read from JSON and the environment; standard library and the pure
``dockercc.protocol`` only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..protocol.cli import split_cli_args
from ..protocol.keys import validate_id
from .early import AgentIds, agent_ids

log = logging.getLogger("dockercc.agent")


@dataclass
class RunnerSettings:
    """Taken from the container's environment (``DOCKERCC_*``)."""

    redis_url: str
    container: str
    prefix: str = "clawdbot:cc:"
    health_interval_ms: int = 10_000
    claude_bin: str = "claude"  # shell words: a wrapper (e.g. "nice -n 5 claude") works
    mcp_timeout_s: float = 300.0
    permission_timeout_s: float = 300.0  # the host's timeouts.permissionMs
    workdir: str | None = None
    prestart: Prestart | None = None
    agent: AgentIds | None = None  # (uid, gid) of the CLI when it is not the runner's own
    egress_socket: str | None = None  # the host egress proxy's socket (network none)
    egress_port: int = 3128
    orphan_ms: int = 300_000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RunnerSettings:
        env = dict(os.environ if env is None else env)
        return cls(
            prestart=Prestart.decode(env.get("DOCKERCC_PRESTART", "")),
            redis_url=env.get("DOCKERCC_REDIS_URL") or env.get("REDIS_URL", "redis://localhost:6379"),
            container=validate_id(env.get("DOCKERCC_CONTAINER", ""), "container id"),
            prefix=env.get("DOCKERCC_KEY_PREFIX", "clawdbot:cc:"),
            health_interval_ms=int(env.get("DOCKERCC_HEALTH_INTERVAL_MS", "10000")),
            claude_bin=env.get("DOCKERCC_CLAUDE_BIN", "claude"),
            mcp_timeout_s=float(env.get("DOCKERCC_MCP_TIMEOUT_S", "300")),
            permission_timeout_s=int(env.get("DOCKERCC_PERMISSION_MS") or 300_000) / 1000,
            workdir=env.get("DOCKERCC_WORKDIR") or None,
            agent=agent_ids(env),
            egress_socket=env.get("DOCKERCC_EGRESS_SOCKET") or None,
            egress_port=int(env.get("DOCKERCC_EGRESS_PORT") or 3128),
            orphan_ms=int(env.get("DOCKERCC_ORPHAN_MS") or 300_000),
        )


@dataclass
class Prestart:
    """A CLI to start in a warm container before any session claims it (``DOCKERCC_PRESTART``).

    ``args`` are the agent's default session arguments; ``tools`` the host MCP tools known to
    the pool (what the runner answers the CLI's start-up ``tools/list`` with, since no host
    bridge exists before the claim) and ``tools_digest`` their digest, compared with the
    assignment's: equal args reuse the running CLI, different tools get a ``list_changed``.
    """

    args: list[str]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tools_digest: str = ""
    server: str = "host"
    prime: bool = True  # warm the CLI's first-turn code paths (get_context_usage) pre-claim
    warmup: bool = True  # and one throwaway turn against a loopback API (see warmup.py)
    wait: bool = True  # register as warm only once the CLI answered (False: cold containers)
    timeout_s: float = 20.0  # the most pre-starting may take (the pool waits startupMs)

    @classmethod
    def decode(cls, raw: str) -> Prestart | None:
        if not raw:
            return None
        try:
            obj = json.loads(raw)
            return cls(args=[str(a) for a in obj["args"]],
                       tools=[t for t in obj.get("tools") or [] if isinstance(t, dict)],
                       tools_digest=str(obj.get("tools_digest") or ""),
                       server=str(obj.get("server") or "host"),
                       prime=bool(obj.get("prime", True)),
                       warmup=bool(obj.get("warmup", True)), wait=bool(obj.get("wait", True)),
                       timeout_s=float(obj.get("timeout_s", 20.0)))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("DOCKERCC_PRESTART ignored: %s", exc)
            return None


@dataclass
class Assignment:
    """What the host tells a runner when it hands it a session."""

    session: str
    agent: str = "main"
    args: list[str] = field(default_factory=list)
    history_max: int = 1000
    restore_from: str | None = None  # dockercc session whose CLI transcript to restore
    tools_digest: str = ""  # digest of the session's host tools (see Prestart)
    lease_token: str = ""  # sent with every MCP request: the host answers only this lease
    transcript_sha256: str = ""  # the host-verified digest of the transcript to restore
    hooks: dict[str, Any] | None = None  # the initialize request's hook matchers (callback ids)
    #: the run-time part of the session (``dockercc.protocol.cli.run_time_settings``: model,
    #: permission mode, allowed / disallowed tools, env): applied to a pre-started CLI with
    #: control requests. Its env may hold secrets: never logged (repr=False)
    runtime: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def decode(cls, raw: bytes | str) -> Assignment:
        obj = json.loads(raw)
        restore = obj.get("restore_from")
        return cls(session=validate_id(obj["session"]),
                   agent=validate_id(obj.get("agent") or "main", "agent name"),
                   args=[str(a) for a in obj.get("args") or []],
                   history_max=int(obj.get("history_max", 1000)),
                   restore_from=validate_id(restore) if restore else None,
                   tools_digest=str(obj.get("tools_digest") or ""),
                   lease_token=str(obj.get("lease_token") or ""),
                   transcript_sha256=str(obj.get("transcript_sha256") or ""),
                   hooks=obj["hooks"] if isinstance(obj.get("hooks"), dict) else None,
                   runtime=obj["runtime"] if isinstance(obj.get("runtime"), dict) else {})

    def wanted_runtime(self) -> dict[str, Any]:
        """The run-time part to apply (older hosts send none: taken from the args)."""
        run = split_cli_args(self.args)[1]
        env = self.runtime.get("env")
        if isinstance(env, dict) and env:
            run["env"] = {str(k): str(v) for k, v in env.items()}
        return run

    def cli_env(self) -> dict[str, str] | None:
        """The environment of a CLI started for this session (the container's plus the
        session's run-time env), or None for the container's."""
        env = self.runtime.get("env")
        if not isinstance(env, dict) or not env:
            return None
        return {**os.environ, **{str(k): str(v) for k, v in env.items()}}
