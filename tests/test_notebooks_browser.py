"""A real browser: JupyterLab on loopback, driven by headless Chromium (Debian's ``chromium``
via Playwright, no browser download), runs ``%%dockercc`` cells against the real stack.

Checked like a person would: the widget renders, the text streams in (several partial
texts seen), a tool card appears, and the widget's Interrupt button stops a slow stream.
A screenshot of the finished cell goes to docs/img/ (the README shows it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockercc.testing import free_port, text, tool_use

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "img" / "jupyter-stream-widget.png"
CHROMIUM = os.environ.get("DOCKERCC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SLOW_WORDS = " ".join(f"w{i}" for i in range(60))
STREAMED = ("Here is what I found. The host tool answered with the value, and this reply "
            "streams in word by word so you can watch it arrive in the widget.")


def notebook(config: dict[str, Any]) -> dict[str, Any]:
    def cell(source: str, cid: str) -> dict[str, Any]:
        return {"cell_type": "code", "execution_count": None, "id": cid, "metadata": {},
                "outputs": [], "source": source}

    setup = (
        "import json\nimport dockercc.jupyter as dj\nfrom dockercc import tool\n\n"
        "@tool\ndef lookup(key: str) -> str:\n"
        "    \"\"\"Look a key up in the notebook's table.\"\"\"\n"
        "    return f'value-of-{key}'\n\n"
        "%load_ext dockercc\n"
        f"dj.configure(json.loads({json.dumps(config)!r}), tools=[lookup])\n"
        "print('configured')")
    return {
        "cells": [cell(setup, "setup"),
                  cell("%%dockercc\nPlease look it up for me.", "tool"),
                  cell("%%dockercc\nCount slowly, please.", "slow"),
                  cell("%%dockercc --permission-mode default -s approving\n"
                       "Please write the file.", "approve"),
                  cell("dj.shutdown()\nprint('shut down')", "down")],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1, a random port and a token, in a scratch directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        conf = root / "jupyter_lab_config.py"
        conf.write_text("\n".join([
            "c.ServerApp.ip = '127.0.0.1'",
            f"c.ServerApp.port = {self.port}",
            "c.ServerApp.port_retries = 0",
            "c.ServerApp.open_browser = False",
            f"c.IdentityProvider.token = {self.token!r}",
            f"c.ServerApp.root_dir = {str(root / 'work')!r}",
            "c.LabApp.news_url = None",
            "c.LabApp.check_for_updates_class = "
            "'jupyterlab.handlers.announcements.NeverCheckForUpdate'",
            "c.LabApp.extension_manager = 'readonly'",
            "c.LabApp.expose_app_in_browser = True",
            f"c.ServerApp.allow_root = {os.getuid() == 0}",  # CI runs as root
        ]))
        # no "get notified about Jupyter news?" toast over the cells
        news = root / "settings" / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True)
        (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        env = {**os.environ,
               "JUPYTER_CONFIG_DIR": str(root / "config"),
               "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
               "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces")}
        self.log = open(root / "jupyterlab.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", f"--config={conf}"], env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_up(90)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}",
                                            timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("JupyterLab did not start:\n" + self.logs())

    def logs(self) -> str:
        return (self.root / "jupyterlab.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server stops its kernels
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def lab(tmp_path: Path, make_config: Callable[..., dict[str, Any]]) -> Iterator[JupyterLab]:
    if shutil.which("jupyter-lab") is None and not _has_module("jupyterlab"):
        pytest.fail("JupyterLab is missing: pip install -e '.[dev]' (bash scripts/stack.sh up)")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "browser.ipynb").write_text(json.dumps(notebook(make_config())))
    server = JupyterLab(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/stack.sh does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session
            && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


def run_cell(page: Any, index: int) -> Any:
    """Click into a cell's editor and press Shift+Enter, as a person would."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    return cell


def test_jupyterlab_runs_a_dockercc_cell_in_a_real_browser(lab: JupyterLab, browser: Any,
                                                         api: Any) -> None:
    api.on("look it up", text("Let me check. ") + tool_use("mcp__host__lookup", {"key": "beta"}),
           text(STREAMED, delay=0.08))
    api.on("Count slowly", text(SLOW_WORDS, delay=0.25))
    api.on("write the file", tool_use(
        "Bash", {"command": "printf approved-by-click > /tmp/a.txt; cat /tmp/a.txt"}),
        text("written"))
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(f"{lab.url}/lab/tree/browser.ipynb?token={lab.token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function(KERNEL_IDLE, timeout=90_000)

    setup = run_cell(page, 0)
    setup.locator(".jp-OutputArea-output", has_text="configured").wait_for(timeout=90_000)

    # a turn with a tool call: the widget renders, the text streams in, a card appears
    cell = run_cell(page, 1)
    widget = cell.locator(".dockercc-stream")
    widget.wait_for(timeout=120_000)
    texts: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = widget.locator(".dockercc-badge").first.get_attribute("data-status")
        current = " ".join(t.strip() for t in widget.locator(".dockercc-text").all_inner_texts())
        if current and (not texts or texts[-1] != current):
            texts.append(current)
        if status in ("done", "error", "interrupted"):
            break
        time.sleep(0.05)
    assert status == "done", (status, texts, lab.logs())
    assert STREAMED in texts[-1] and "Let me check." in texts[-1]
    partial = [t for t in texts if "Let me check." in t and STREAMED not in t]
    assert len(partial) >= 2, f"the text did not stream in: {texts}"
    card = widget.locator(".dockercc-tool")
    assert card.count() == 1 and "mcp__host__lookup" in card.inner_text()
    card.get_by_text("mcp__host__lookup").first.click()  # open the card
    card.get_by_text("value-of-beta").first.wait_for()
    footer = widget.locator(".dockercc-footer").inner_text()
    assert "$" in footer and " in / " in footer and " s" in footer, footer
    assert not widget.locator(".dockercc-interrupt").is_visible()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    cell.screenshot(path=str(SCREENSHOT))

    # a slow stream: the Interrupt button stops it
    cell = run_cell(page, 2)
    widget = cell.locator(".dockercc-stream")
    widget.locator(".dockercc-text", has_text="w2").wait_for(timeout=120_000)
    button = widget.locator("button.dockercc-interrupt")
    assert button.is_visible() and button.is_enabled()
    t0 = time.monotonic()
    button.click()
    widget.locator('.dockercc-badge[data-status="interrupted"]').wait_for(timeout=30_000)
    stopped_after = time.monotonic() - t0
    shown = widget.locator(".dockercc-text").inner_text()
    assert "w2" in shown and "w59" not in shown, shown
    assert stopped_after < 10, stopped_after
    assert "interrupted" in widget.locator(".dockercc-footer").inner_text()

    # a session in a mode that asks, without a callback: Approve / Deny in the widget
    cell = run_cell(page, 3)
    widget = cell.locator(".dockercc-stream")
    approval = widget.locator(".dockercc-approval")
    approval.wait_for(timeout=120_000)
    assert "Bash" in approval.inner_text() and "approved-by-click" in approval.inner_text()
    approval.locator("button.dockercc-approve").click()
    widget.locator('.dockercc-badge[data-status="done"]').wait_for(timeout=60_000)
    assert "approved" in widget.locator(".dockercc-approval-done").inner_text()
    assert any("approved-by-click" in json.dumps(r.tool_results) for r in api.message_requests)

    down = run_cell(page, 4)
    down.locator(".jp-OutputArea-output", has_text="shut down").wait_for(timeout=60_000)
    assert api.message_requests, "the CLI in the container never called the scripted API"
