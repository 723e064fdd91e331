"""Git in a read-write workspace: what an agent could plant there to run on the host.

A session's ``workspace`` is a host folder mounted read-write at ``/workspace``. If it is a
git repository, the agent can write ``.git/hooks/*`` or ``.git/config`` entries
(``core.fsmonitor``, ``core.hooksPath``, ``core.sshCommand``, ``diff.external``, filter
drivers, ...) that **run on the host** the next time the user runs ``git status`` or
``git commit`` there. Nothing inside the container can prevent that; the host can notice it.
:func:`git_risks` lists such entries; a session with a workspace compares them at start and
at close and logs (and keeps in ``session.workspace_warnings``) whatever appeared.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["git_risks", "WorkspaceMount", "parse_workspace", "parse_add_dirs",
           "WORKSPACE", "ADD_DIRS_ROOT"]

WORKSPACE = "/workspace"
ADD_DIRS_ROOT = "/mnt/dirs"
"""``add_dirs`` are mounted at ``/mnt/dirs/<name>`` and given to the CLI with ``--add-dir``."""

VOLUME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# binds that would hand the agent the host (or the engine): refused as they are and anything
# under them; `/` and the user's home are refused only as they are
_DANGEROUS_TREES = ("/proc", "/sys", "/dev", "/boot", "/etc", "/var/lib/docker",
                    "/var/run", "/run", "/usr", "/bin", "/sbin", "/lib", "/lib64",
                    "/var/lib/containerd")
_DANGEROUS_EXACT = ("/", "/home", "/root", "/var", "/tmp", "/opt", "/srv", "/mnt", "/media")


@dataclass(frozen=True)
class WorkspaceMount:
    """One mount of a session: a host folder (``kind="bind"``) or a named Docker volume
    (``kind="volume"``) at ``target``."""

    kind: str
    source: str
    target: str
    read_only: bool = False

    def as_tuple(self) -> tuple[str, str, str, bool]:
        return (self.kind, self.source, self.target, self.read_only)


def _split_mode(value: str, default_ro: bool, what: str) -> tuple[str, bool]:
    for suffix, ro in ((":ro", True), (":rw", False)):
        if value.endswith(suffix):
            return value[: -len(suffix)], ro
    return value, default_ro


def _host_dir(raw: str, what: str) -> str:
    if not raw:
        raise ConfigError(f"{what}: empty path", [(what, raw, "an absolute host folder")])
    if raw.startswith("~"):
        raw = os.path.expanduser(raw)
    if not os.path.isabs(raw):
        raise ConfigError(f"{what} {raw!r} is relative: give an absolute host folder",
                          [(what, raw, "an absolute path")])
    if ".." in Path(raw).parts:
        raise ConfigError(f"{what} {raw!r} holds '..': give the folder itself",
                          [(what, raw, "a path without '..'")])
    real = os.path.realpath(raw)
    for path in {raw.rstrip("/") or "/", real}:
        if path in _DANGEROUS_EXACT or any(path == t or path.startswith(t + "/")
                                           for t in _DANGEROUS_TREES):
            raise ConfigError(f"{what} {raw!r} would give the agent a system folder of the "
                              f"host ({path}): mount a project folder instead",
                              [(what, raw, "a project folder")])
        if "docker.sock" in path or os.path.basename(path).endswith(".sock"):
            raise ConfigError(f"{what} {raw!r} is a socket: never mounted",
                              [(what, raw, "a folder")])
    if not os.path.exists(real):
        raise ConfigError(f"{what} {raw!r} does not exist", [(what, raw, "an existing folder")])
    if not os.path.isdir(real):
        raise ConfigError(f"{what} {raw!r} is not a folder", [(what, raw, "a folder")])
    for sock in ("/var/run/docker.sock", "/run/docker.sock"):
        if os.path.exists(sock) and os.path.realpath(sock).startswith(real.rstrip("/") + "/"):
            raise ConfigError(f"{what} {raw!r} holds the Docker socket",
                              [(what, raw, "a folder without the Docker socket")])
    return real


def parse_workspace(value: str | os.PathLike[str] | None) -> WorkspaceMount | None:
    """``workspace=`` as a mount at ``/workspace``: an absolute host folder (read-write, or
    read-only with ``:ro``), ``volume:NAME`` (a named Docker volume, created on demand), or
    None (a scratch workspace: ``docker.scratchVolumes``). Raises :class:`ConfigError` before any container starts."""
    if value is None:
        return None
    raw = os.fspath(value)
    if raw.startswith("volume:"):
        name, ro = _split_mode(raw[len("volume:"):], False, "workspace")
        if not VOLUME_RE.match(name):
            raise ConfigError(f"workspace volume name {name!r} is not valid",
                              [("workspace", raw, "volume:[A-Za-z0-9][A-Za-z0-9_.-]*")])
        return WorkspaceMount("volume", name, WORKSPACE, ro)
    path, ro = _split_mode(raw, False, "workspace")
    return WorkspaceMount("bind", _host_dir(path, "workspace"), WORKSPACE, ro)


def parse_add_dirs(values: list[str] | tuple[str, ...] | None) -> list[WorkspaceMount]:
    """``add_dirs=`` as read-only (``:rw`` to write) mounts at ``/mnt/dirs/<name>``; the
    name is the folder's (``-2``, ``-3`` ... when two share one)."""
    out: list[WorkspaceMount] = []
    seen: set[str] = set()
    for value in values or ():
        path, ro = _split_mode(os.fspath(value), True, "add_dirs")
        real = _host_dir(path, "add_dirs")
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(real.rstrip("/"))) or "dir"
        name, n = base, 1
        while name in seen:
            n += 1
            name = f"{base}-{n}"
        seen.add(name)
        out.append(WorkspaceMount("bind", real, f"{ADD_DIRS_ROOT}/{name}", ro))
    return out

RISKY_KEYS = (
    "core.fsmonitor", "core.hookspath", "core.sshcommand", "core.pager", "core.editor",
    "core.askpass", "core.gitproxy", "diff.external", "sequence.editor", "gpg.program",
    "credential.helper", "uploadpack.packobjectshook",
)
RISKY_SECTIONS = ("filter", "diff", "merge", "alias", "include", "includeif")


def _git_dir(path: Path) -> Path | None:
    dot = path / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text[7:].strip())
            return target if target.is_absolute() else (path / target)
    return None


def git_risks(workspace: str | os.PathLike[str]) -> list[str]:
    """Entries of the workspace's git repository that would run code on the host: hooks
    (anything in ``.git/hooks`` but the ``*.sample`` files git ships) and config keys that
    name programs. Empty when the folder is not a git repository."""
    git = _git_dir(Path(workspace))
    if git is None:
        return []
    found: list[str] = []
    hooks = git / "hooks"
    if hooks.is_dir():
        for entry in sorted(hooks.iterdir()):
            if not entry.name.endswith(".sample"):
                found.append(f"hook {entry.name}")
    config = git / "config"
    if config.is_file():
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string(config.read_text(errors="replace"))
        except configparser.Error:
            return [*found, "config unreadable (not what git writes)"]
        for section in parser.sections():
            head = section.split(" ", 1)[0].lower().strip('"')
            for key, _ in parser.items(section):
                name = f"{head}.{key.lower()}"
                if name in RISKY_KEYS or (head in RISKY_SECTIONS and head not in ("diff",))\
                        or (head == "diff" and key.lower() in ("command", "textconv")):
                    found.append(f"config {section}.{key}")
    return found
