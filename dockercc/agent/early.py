"""Start the CLI before the runner's own imports (``python -m dockercc.agent``).

When the pool gave the container its CLI arguments at create time (``DOCKERCC_PRESTART``: a
warm container's agent defaults, or a cold container's session), the CLI's start-up (about a
second of loading and settings) can begin at once, while Python imports asyncio, redis and
the protocol models (a few hundred ms). The runner adopts the running process
(:class:`dockercc.agent.runner.PopenProcess`). Standard library only, on purpose.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

BASE_ARGS = ["--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]

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
    return Path(os.environ.get("HOME", "/home/agent")) / ".claude"


def install_credentials(env: Mapping[str, str] | None = None) -> None:
    """Copy a mounted (read-only) Claude credentials file into the agent's home."""
    src = (env or os.environ).get("DOCKERCC_CREDENTIALS_FILE")
    if not src or not os.path.isfile(src):
        return
    dest = claude_home() / ".credentials.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
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
        install_credentials(env)
        return subprocess.Popen(
            [*shlex.split(env.get("DOCKERCC_CLAUDE_BIN", "claude")), *BASE_ARGS, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=env.get("DOCKERCC_WORKDIR") or None, start_new_session=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None
