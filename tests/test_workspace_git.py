"""Git entries an agent plants in a read-write workspace (they run on the host) are found."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from dockercc.client import AsyncPool
from dockercc.workspace import git_risks


def _repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def test_planted_hooks_and_config_are_listed(tmp_path: Path) -> None:
    assert git_risks(tmp_path) == []  # not a repository
    repo = _repo(tmp_path / "repo")
    assert git_risks(repo) == []  # git's own sample hooks are no risk
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\ntouch /tmp/pwned\n")
    os.chmod(hook, 0o755)
    for key, value in (("core.fsmonitor", "touch /tmp/pwned"), ("core.hooksPath", "/tmp/h"),
                       ("filter.x.clean", "sh -c evil"), ("diff.y.textconv", "evil")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)
    found = git_risks(repo)
    assert "hook post-checkout" in found
    assert any("fsmonitor" in f for f in found) and any("hookspath" in f for f in found)
    assert any("filter" in f for f in found) and any("textconv" in f for f in found)


async def test_a_session_reports_what_appeared_in_its_workspace(
        tmp_path: Path, caplog: Any, redis_server: Any, prefix: str) -> None:
    repo = _repo(tmp_path / "ws")
    old = repo / ".git" / "hooks" / "pre-commit"
    old.write_text("#!/bin/sh\n")  # the user's own hook, there before the session
    pool = AsyncPool({"redis": {"url": redis_server.url, "keyPrefix": prefix}})
    s = pool.session(workspace=str(repo))
    (repo / ".git" / "hooks" / "post-merge").write_text("#!/bin/sh\nevil\n")
    subprocess.run(["git", "-C", str(repo), "config", "core.fsmonitor", "evil"], check=True)
    with caplog.at_level(logging.WARNING, logger="dockercc"):
        s._check_workspace()
    assert s.workspace_warnings == ["hook post-merge", "config core.fsmonitor"]
    assert "post-merge" in caplog.text and "pre-commit" not in caplog.text
    await pool.transport.close()
