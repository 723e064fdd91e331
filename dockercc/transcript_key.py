"""The host's key for sealing saved transcripts (see :mod:`dockercc.protocol.transcript`).

It never goes to Redis or into a container."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ConfigError


def key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dockercc" / "transcript.key"


def load_key() -> bytes:
    """The host's sealing key: ``$DOCKERCC_TRANSCRIPT_KEY``, else a file made on first use
    (0600, so every process of this user shares it and can resume the others' sessions)."""
    env = os.environ.get("DOCKERCC_TRANSCRIPT_KEY")
    if env:
        return env.encode()
    path = key_path()
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        pass
    else:
        if len(key) < 16:
            raise ConfigError(f"the transcript key in {path} is too short: remove the file "
                              "(a new one is made) or set DOCKERCC_TRANSCRIPT_KEY")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made by another process meanwhile
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()
