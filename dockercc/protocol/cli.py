"""The Claude Code CLI's command line for one session. Pure: no I/O.

The runner always adds ``--input-format stream-json --output-format stream-json --verbose``;
this module builds the session-specific rest from the session's options.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

MCP_SERVER_NAME = "host"


def mcp_config(server_name: str | None = MCP_SERVER_NAME,
               external: Mapping[str, Any] | None = None) -> str:
    """``--mcp-config`` value for the host bridge served over the control protocol (and any
    external servers: stdio ones run inside the container, HTTP ones go through egress)."""
    servers: dict[str, Any] = dict(external or {})
    if server_name:
        servers[server_name] = {"type": "sdk", "name": server_name}
    return json.dumps({"mcpServers": servers}, separators=(",", ":"))


def build_cli_args(*, model: str | None = None, system_prompt: str | None = None,
                   append_system_prompt: str | None = None,
                   permission_mode: str | None = None,
                   allowed_tools: Sequence[str] | None = None,
                   disallowed_tools: Sequence[str] | None = None,
                   max_turns: int | None = None, resume: str | None = None,
                   mcp_server: str | None = None, include_partial_messages: bool = True,
                   extra_args: Sequence[str] = (), fallback_model: str | None = None,
                   max_budget_usd: float | None = None,
                   json_schema: Mapping[str, Any] | None = None, fork_session: bool = False,
                   setting_sources: Sequence[str] | None = None,
                   thinking: Mapping[str, Any] | None = None, effort: str | None = None,
                   agents: Mapping[str, Any] | None = None,
                   mcp_servers: Mapping[str, Any] | None = None,
                   base_tools: Sequence[str] | None = None,
                   permission_prompt_tool: str | None = None) -> list[str]:
    """The session's CLI arguments (after the runner's stream-json ones).

    With ``mcp_server`` the host bridge is configured and its tools are permitted
    (``mcp__<server>__*``): the CLI refuses MCP tools that are not.
    """
    args: list[str] = []
    if include_partial_messages:
        args.append("--include-partial-messages")
    if model:
        args += ["--model", model]
    if system_prompt is not None:
        args += ["--system-prompt", system_prompt]
    if append_system_prompt:
        args += ["--append-system-prompt", append_system_prompt]
    if permission_mode and permission_mode != "default":
        args += ["--permission-mode", permission_mode]
    if permission_prompt_tool:
        args += ["--permission-prompt-tool", permission_prompt_tool]
    if fallback_model:
        args += ["--fallback-model", fallback_model]
    if base_tools is not None:
        args += ["--tools", ",".join(base_tools)]
    allowed = list(allowed_tools or [])
    if mcp_server or mcp_servers:
        args += ["--mcp-config", mcp_config(mcp_server, mcp_servers)]
    if mcp_server:
        allowed.append(f"mcp__{mcp_server}__*")
    if allowed:
        args += ["--allowedTools", ",".join(allowed)]
    if disallowed_tools:
        args += ["--disallowedTools", ",".join(disallowed_tools)]
    if max_turns:
        args += ["--max-turns", str(max_turns)]
    if max_budget_usd is not None:
        args += ["--max-budget-usd", f"{max_budget_usd:g}"]
    if resume:
        args += ["--resume", resume]
        if fork_session:
            args.append("--fork-session")
    if agents:
        args += ["--agents", json.dumps(dict(agents), separators=(",", ":"))]
    if setting_sources is not None:
        args += ["--setting-sources", ",".join(setting_sources)]
    if thinking:
        if thinking.get("type") == "enabled":
            args += ["--max-thinking-tokens", str(thinking["budget_tokens"])]
        else:
            args += ["--thinking", str(thinking["type"])]
    if effort:
        args += ["--effort", effort]
    if json_schema is not None:
        args += ["--json-schema", json.dumps(dict(json_schema), separators=(",", ":"))]
    args += list(extra_args)
    return args


# -- start time vs run time (docs/cli-runtime.md) -------------------------------------------

#: flags whose effect the CLI can take at run time over the control protocol, and the key of
#: the run-time part each goes to. Everything else is start-time (the system prompt, --tools,
#: --mcp-config, --resume, --permission-prompt-tool, --agents, ...).
RUNTIME_FLAGS = {"--model": "model", "--permission-mode": "permission_mode",
                 "--allowedTools": "allowed_tools", "--disallowedTools": "disallowed_tools"}
_LIST_KEYS = ("allowed_tools", "disallowed_tools")

#: session ``env`` entries that stay in the container's environment (and its spec key): the
#: ones the pool itself reads when it builds the container (API base URL and credentials, the
#: provider switches, proxies), which must not bypass the egress set-up
_SPEC_ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_USE_", "CLAUDE_CODE_OAUTH", "AWS_",
                      "GOOGLE_", "VERTEX_", "CLOUD_ML_")
_SPEC_ENV_NAMES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
                             "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "PATH", "HOME"})


def split_cli_args(args: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """``(start_time_args, run_time)`` of a session's CLI arguments. Pure.

    ``run_time`` holds what the control protocol can change in a running CLI: ``model``,
    ``permission_mode`` (strings), ``allowed_tools``, ``disallowed_tools`` (lists). A flag
    given twice keeps its last value, like the CLI."""
    start: list[str] = []
    run: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        key = RUNTIME_FLAGS.get(arg)
        if key is not None and i + 1 < len(args):
            value = args[i + 1]
            run[key] = [v for v in value.split(",") if v] if key in _LIST_KEYS else value
            i += 2
            continue
        start.append(arg)
        i += 1
    return start, run


def start_time_args(args: Sequence[str]) -> list[str]:
    """The part of a session's CLI arguments that only a new CLI process can take: two
    sessions whose start-time args are equal can share a pre-started CLI. Pure (a warm set can
    be keyed by a fingerprint of it)."""
    return split_cli_args(args)[0]


def run_time_settings(args: Sequence[str],
                      env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The run-time part of a session (see :func:`split_cli_args`) plus its run-time
    ``env`` (see :func:`split_session_env`): what the runner applies to a pre-started CLI."""
    run = split_cli_args(args)[1]
    if env:
        run["env"] = dict(env)
    return run


def split_session_env(env: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """``(container_env, run_time_env)`` of a session's ``env``: API, provider, proxy and
    path settings stay with the container (its spec key); the rest is applied to the CLI at
    run time (``apply_flag_settings`` ``env``, which its tools inherit)."""
    spec: dict[str, str] = {}
    run: dict[str, str] = {}
    for name, value in (env or {}).items():
        if name.upper().startswith(_SPEC_ENV_PREFIXES) or name.upper() in _SPEC_ENV_NAMES:
            spec[name] = value
        else:
            run[name] = value
    return spec, run


def runtime_requests(running: Mapping[str, Any], wanted: Mapping[str, Any],
                     ) -> list[tuple[str, dict[str, Any]]] | None:
    """The control requests that turn a CLI started with run-time part ``running`` into one
    as if started with ``wanted``, in order; None when that cannot be done at run time (then
    a new CLI is needed). Pure.

    - ``model``: ``set_model`` (``"default"`` for none);
    - ``permission_mode``: ``set_permission_mode``, except into ``bypassPermissions`` from a
      CLI not launched in it (the CLI refuses: ``bypass_not_launched``);
    - ``allowed_tools`` / ``disallowed_tools`` / ``env``: one ``apply_flag_settings`` with
      ``permissions.allow`` / ``permissions.deny`` / ``env``. Rules can only be added: a
      running CLI's command-line rules cannot be taken away, so ``wanted`` must keep them.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    have_mode = running.get("permission_mode") or "default"
    want_mode = wanted.get("permission_mode") or "default"
    if want_mode != have_mode:
        if want_mode == "bypassPermissions":
            return None
        out.append(("set_permission_mode", {"mode": want_mode}))
    if (running.get("model") or None) != (wanted.get("model") or None):
        out.append(("set_model", {"model": wanted.get("model") or "default"}))
    settings: dict[str, Any] = {}
    permissions: dict[str, list[str]] = {}
    for key, rule_kind in (("allowed_tools", "allow"), ("disallowed_tools", "deny")):
        have, want = list(running.get(key) or []), list(wanted.get(key) or [])
        if not set(have) <= set(want):
            return None
        extra = [r for r in want if r not in set(have)]
        if extra:
            permissions[rule_kind] = extra
    if permissions:
        settings["permissions"] = permissions
    extra_env = {k: str(v) for k, v in (wanted.get("env") or {}).items()
                 if (running.get("env") or {}).get(k) != v}
    if set(running.get("env") or {}) - set(wanted.get("env") or {}):
        return None  # (an environment variable cannot be taken back out)
    if extra_env:
        settings["env"] = extra_env
    if settings:
        out.append(("apply_flag_settings", {"settings": settings}))
    return out
