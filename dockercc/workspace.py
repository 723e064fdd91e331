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
from pathlib import Path

__all__ = ["git_risks"]

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
