"""Start the CLI before the runner's own imports (``python -m dockercc.agent``), and everything
about the CLI's identity: its uid, its environment, and how the runner touches its files.

When the pool gave the container its CLI arguments at create time (``DOCKERCC_PRESTART``: a
warm container's agent defaults, or a cold container's session), the CLI's start-up (about a
second of loading and settings) can begin at once, while Python imports asyncio, redis and
the protocol models (a few hundred ms). The runner adopts the running process
(:class:`dockercc.agent.process.PopenProcess`). Standard library only, on purpose.

The runner and the agent are different users (``DOCKERCC_AGENT_USER``, see
:func:`agent_ids`): the runner runs as root with only SETUID, SETGID and KILL (no
DAC_OVERRIDE: root cannot open what it does not own), and every CLI it starts runs as the
agent's uid/gid with no supplementary groups and the environment of :func:`agent_env`. The
agent therefore cannot read the runner's environment or memory, signal or ptrace it, or
reach what is mounted under the root-only ``/run/dockercc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import json
import os
import pwd
import shlex
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

BASE_ARGS = ["--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
AGENT_USER_ENV = "DOCKERCC_AGENT_USER"
"""``uid[:gid]`` (or names) the CLI and its tools run as, when the runner runs as root."""
AGENT_HOME = "/home/agent"

AgentIds = tuple[int, int]

_listener: socket.socket | None = None


def bind_forwarder(env: Mapping[str, str] | None = None) -> socket.socket | None:
    """The egress forwarder's listening socket (:mod:`.forwarder`), bound before the CLI
    starts so its first connection already finds it (the runner serves it once its loop
    runs). None without an egress proxy or if the port is taken."""
    global _listener
    env = os.environ if env is None else env
    if _listener is None and env.get("DOCKERCC_EGRESS_SOCKET"):
        from .forwarder import bind

        try:
            _listener = bind(int(env.get("DOCKERCC_EGRESS_PORT") or 3128))
        except (OSError, ValueError):
            _listener = None
    return _listener


def take_listener() -> socket.socket | None:
    global _listener
    sock, _listener = _listener, None
    return sock


def claude_home() -> Path:
    return Path(os.environ.get("HOME", AGENT_HOME)) / ".claude"


def agent_ids(env: Mapping[str, str] | None = None) -> AgentIds | None:
    """The ``(uid, gid)`` to run the CLI as, or None: run it as the runner itself (no
    ``DOCKERCC_AGENT_USER``, or the runner is not root and so could not switch anyway: the
    single-uid mode of ``docker.isolateRunner: false`` or a plain ``docker run``)."""
    env = os.environ if env is None else env
    spec = (env.get(AGENT_USER_ENV) or "").strip()
    if not spec or os.getuid() != 0:
        return None
    user, _, group = spec.partition(":")
    try:
        uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        else:
            gid = pwd.getpwuid(uid).pw_gid if not user.isdigit() else uid
    except KeyError as exc:
        raise ValueError(f"{AGENT_USER_ENV}={spec!r}: no such user or group") from exc
    if uid == 0:
        return None  # the agent is root by configuration: nothing to switch to
    return uid, gid


_libc: ctypes.CDLL | None = None


@contextlib.contextmanager
def agent_fs(ids: AgentIds | None) -> Iterator[None]:
    """File access in this block is checked as the agent (``setfsuid``/``setfsgid``).

    How the root runner (which has no DAC_OVERRIDE, on purpose) reads the CLI's transcripts,
    restores them, copies the credentials file into the agent's home and starts the CLI in
    ``/workspace``: with the agent's file-system identity, only on this thread, for the
    block. Files it creates are the agent's (no chown, no CAP_CHOWN); a symlink the agent
    planted cannot lead it anywhere the agent could not go itself; nothing is spawned (the
    warm first-token path stays as fast as before). The fs ids are per thread and not
    considered by signal or ptrace checks (the runner's real/effective uid stays 0), and a
    child forked inside the block inherits them (its ``chdir`` into ``/workspace`` happens
    before it switches uid). No ``await`` may happen inside the block.
    """
    if ids is None:
        yield
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    libc = _libc
    uid, gid = ids
    old_gid = libc.setfsgid(gid)
    old_uid = libc.setfsuid(uid)
    # setfsuid reports the previous id even when it fails: ask again (-1 changes nothing)
    if libc.setfsuid(-1) != uid or libc.setfsgid(-1) != gid:
        libc.setfsuid(old_uid)
        libc.setfsgid(old_gid)
        raise PermissionError("cannot take the agent's file-system identity (is CAP_SETUID/"
                              "CAP_SETGID granted to the runner?)")
    try:
        yield
    finally:
        libc.setfsuid(old_uid)
        libc.setfsgid(old_gid)


def agent_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CLI's environment: the container's minus the runner's own settings.

    Every ``DOCKERCC_*`` variable is the runner's business (the Redis URL with its password
    above all; the egress and ACL settings too) and never reaches the CLI, nor therefore the
    agent's Bash. Everything else stays: ``HOME``, ``PATH``, ``ANTHROPIC_*``,
    ``CLAUDE_CODE_*``, proxies, and what ``docker.env``, the agent's and the session's
    ``env`` set. Used by every path that starts a CLI (early, pre-start, per session,
    restart), so none of them can forget it.
    """
    env = os.environ if env is None else env
    # the runner falls back to REDIS_URL without DOCKERCC_REDIS_URL: then it is its secret
    runner_owns = {"REDIS_URL"} if "DOCKERCC_REDIS_URL" not in env else set()
    out = {k: v for k, v in env.items()
           if not k.startswith("DOCKERCC_") and k not in runner_owns}
    out.setdefault("HOME", AGENT_HOME)
    return out


def spawn_cli(argv: list[str], *, ids: AgentIds | None, env: Mapping[str, str] | None = None,
              cwd: str | None = None) -> subprocess.Popen[bytes]:
    """Start the CLI (``argv``) as the agent, with :func:`agent_env`, in a session of its own
    (so the runner can signal its whole process group), piped. Raises OSError."""
    user: dict[str, Any] = {}
    if ids is not None:
        user = {"user": ids[0], "group": ids[1], "extra_groups": []}
    with agent_fs(ids):
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=agent_env(env), start_new_session=True, **user)


def install_credentials(env: Mapping[str, str] | None = None,
                        ids: AgentIds | None = None) -> None:
    """Copy a mounted (read-only) Claude credentials file into the agent's home.

    The mount lives under the root-only ``/run/dockercc``: the runner reads it as itself (a
    host file the agent's uid could read works too), and writes the copy as the agent."""
    src = (env or os.environ).get("DOCKERCC_CREDENTIALS_FILE")
    if not src:
        return
    try:
        data = Path(src).read_bytes()
    except PermissionError:
        with agent_fs(ids):
            data = Path(src).read_bytes()
    except FileNotFoundError:
        return
    with agent_fs(ids):
        dest = claude_home() / ".credentials.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        dest.chmod(0o600)


def spawn_from_env(env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes] | None:
    """The CLI started with ``DOCKERCC_PRESTART``'s arguments, or None (nothing to start, or it
    could not start: the runner then starts it the usual way)."""
    env = os.environ if env is None else env
    raw = env.get("DOCKERCC_PRESTART")
    if not raw:
        return None
    bind_forwarder(env)
    try:
        args = [str(a) for a in json.loads(raw)["args"]]
        ids = agent_ids(env)
        install_credentials(env, ids)
        return spawn_cli([*shlex.split(env.get("DOCKERCC_CLAUDE_BIN", "claude")), *BASE_ARGS,
                          *args], ids=ids, env=env, cwd=env.get("DOCKERCC_WORKDIR") or None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
