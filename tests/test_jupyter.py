"""dockercc.jupyter: the %dockercc magics, the stream views, the display hooks.

The magics run in a real IPython ``InteractiveShell`` (and, for the kernel's stop button and
the widget's Interrupt button, in a real ipykernel driven over ZMQ by jupyter_client) against
the real stack: Docker containers running the real Claude Code CLI, a real Redis, the
scripted Messages API. The browser test is tests/test_notebooks_browser.py.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import dockercc.jupyter as dj
from dockercc.events import Result, TextDelta, ToolResult, ToolUse
from dockercc.jupyter import render
from dockercc.jupyter.magics import STATE, make_async, split_leading_options
from dockercc.jupyter.state import TurnState
from dockercc.jupyter.view import HtmlView, WidgetView, detect_mode
from dockercc.testing import text, tool_use

SLOW_WORDS = " ".join(f"w{i}" for i in range(40))
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def bare_shell() -> Iterator[InteractiveShell]:
    """An InteractiveShell with the extension loaded (no stack configured)."""
    ip = InteractiveShell.instance()
    result = ip.run_cell("%load_ext dockercc")
    assert result.success, result.error_in_exec
    yield ip
    ip.run_cell("%unload_ext dockercc")


@pytest.fixture
def shell(bare_shell: InteractiveShell, make_config: Callable[..., dict[str, Any]],
          ) -> Iterator[InteractiveShell]:
    """... configured for the real stack (test Redis + prefix, scripted API, host network)."""
    dj.configure(make_config(), display="auto")
    yield bare_shell
    dj.shutdown()


def run(ip: InteractiveShell, cell: str) -> tuple[Any, Any]:
    with capture_output() as cap:
        result = ip.run_cell(cell, store_history=True)  # as a notebook does
    return result, cap


def displays(cap: Any) -> list[Any]:
    return [o for o in cap.outputs if "text/plain" in o.data or "text/html" in o.data]


# -------------------------------------------------------------------- no stack needed


def test_import_dockercc_does_not_import_ipython() -> None:
    code = textwrap.dedent("""
        import sys, dockercc
        from dockercc import Result
        r = Result(text="**hi**", cost_usd=0.5)
        # the core knows nothing of notebooks; dockercc.jupyter renders without IPython
        assert not hasattr(r, "_repr_html_") and not hasattr(dockercc.Pool, "_repr_html_")
        assert "dockercc.jupyter" not in sys.modules
        from dockercc.jupyter.display import bundle
        html = bundle(r)["text/html"]
        assert "<strong>hi</strong>" in html and "$0.5000" in html, html
        bad = [m for m in sys.modules if m.split(".")[0] in ("IPython", "ipywidgets")]
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_rich_display_comes_with_dockercc_jupyter_in_a_running_shell() -> None:
    code = textwrap.dedent("""
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        import dockercc
        r = dockercc.Result(text="**hi**")
        data, _ = ip.display_formatter.format(r)
        assert set(data) == {"text/plain"}, data   # without dockercc.jupyter: the repr
        import dockercc.jupyter                      # (as `from dockercc.jupyter import ...`)
        data, _ = ip.display_formatter.format(r)
        assert "<strong>hi</strong>" in data["text/html"] and "**hi**" in data["text/markdown"]
        assert ip.run_cell("%load_ext dockercc").success
        assert "text/html" in ip.display_formatter.format(r)[0]
        assert ip.run_cell("%unload_ext dockercc").success  # takes them away again
        assert set(ip.display_formatter.format(r)[0]) == {"text/plain"}
        assert ip.run_cell("%load_ext dockercc").success
        assert "text/html" in ip.display_formatter.format(r)[0]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr + out.stdout


def test_pool_and_session_displays_show_what_they_hold_without_io(
        bare_shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from dockercc import Pool
    from dockercc.pool.manager import Lease

    # nothing listens there; displays must not try
    pool = Pool({"redis": {"url": "redis://127.0.0.1:9", "keyPrefix": "disp:"}})
    try:
        session, idle = pool.session(), pool.session("main")
        session.aio.lease = Lease(container="c1", name="clawdbot-cc-disp1", warm=True,
                                  spec="x", claim_ms=1.0)

        def no_network(*args: Any) -> None:
            raise AssertionError("a display opened a connection")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        monkeypatch.setattr(socket.socket, "connect_ex", no_network)
        fmt = bare_shell.display_formatter.format
        data, _ = fmt(pool)
        assert "redis://127.0.0.1:9" in data["text/html"] and "prefix disp:" in data["text/html"]
        assert data["text/html"].count("<tr>") == 2  # header + the one held container
        assert "clawdbot-cc-disp1" in data["text/html"] and session.id in data["text/markdown"]
        assert idle.id not in data["text/html"]  # no container yet: nothing held
        assert fmt(pool.aio)[0]["text/html"] == data["text/html"]
        data, _ = fmt(session)
        assert session.id in data["text/html"] and "clawdbot-cc-disp1" in data["text/html"]
        assert "idle" in data["text/markdown"]
        assert fmt(session.aio)[0]["text/html"] == data["text/html"]
        assert "new" in fmt(idle)[0]["text/markdown"]
        assert data["text/plain"] == repr(session)
        monkeypatch.undo()
    finally:
        session.aio.lease = None
        pool.close()


@pytest.mark.parametrize(("line", "tokens", "prompt"), [
    ("What's up?", [], "What's up?"),
    ("-s research --model opus What is 2+2?", ["-s", "research", "--model", "opus"],
     "What is 2+2?"),
    ("--system 'be brief' --new hi there", ["--system", "be brief", "--new"], "hi there"),
    ("--timeout=5 -- --not-an-option", ["--timeout=5"], "--not-an-option"),
    ("-5 degrees is cold", [], "-5 degrees is cold"),
    ("--quiet   spaced   prompt ", ["--quiet"], "spaced   prompt"),
])
def test_split_leading_options(line: str, tokens: list[str], prompt: str) -> None:
    assert split_leading_options(line) == (tokens, prompt)


def test_question_mark_prompts_are_not_help_requests(bare_shell: InteractiveShell) -> None:
    for cell, arg in [("%dockercc What is Redis?", "What is Redis?"),
                      ("%dockercc What is 2+2?", "What is 2+2?"),
                      ("r = %dockercc is it raining??", "is it raining??")]:
        code = bare_shell.transform_cell(cell)
        assert "pinfo" not in code, code
        assert f"run_line_magic('dockercc', {arg!r})" in code, code
        assert "await" in code, "a top-level dockercc magic runs as an async cell"
    # a %%dockercc cell keeps its text verbatim
    code = bare_shell.transform_cell("%%dockercc -s x\nWhat is it?\n")
    assert "'What is it?\\n'" in code and "pinfo" not in code


def test_make_async_rewrites_only_top_level_magic_calls(bare_shell: InteractiveShell) -> None:
    lines = ["x = get_ipython().run_line_magic('dockercc', 'hi é')\n",
             "def f():\n", "    return get_ipython().run_line_magic('dockercc', 'inner')\n",
             "get_ipython().run_line_magic('time', 'pass')\n"]
    out = "".join(make_async(lines))
    assert out.startswith("x = (await __import__('dockercc.jupyter.magics'")
    assert "lambda: get_ipython().run_line_magic('dockercc', 'hi é'))" in out
    assert "    return get_ipython().run_line_magic('dockercc', 'inner')" in out
    assert "get_ipython().run_line_magic('time', 'pass')" in out
    compile(out, "<cell>", "exec", flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT


@pytest.mark.parametrize(("cell", "message"), [
    ("%%dockercc --bogus\nhello", "unrecognized arguments: --bogus"),
    ("%dockercc --timeout -3 hello", "--timeout"),
    ("%dockercc --timeout soon hello", "not a number of seconds"),
    ("%dockercc --display sideways hello", "invalid choice"),
    ("%dockercc --model", "expected one argument"),
    ("%%dockercc\n   \n", "the cell is empty"),
    ("%dockercc --quiet", "no prompt"),
    ("%dockercc use bad/name", "invalid session name"),
    ("%%dockercc --system 'unclosed\nhi", "cannot read the options"),
])
def test_bad_options_give_a_short_usage_message(bare_shell: InteractiveShell, cell: str,
                                                message: str) -> None:
    result, cap = run(bare_shell, cell)
    assert type(result.error_in_exec) is UsageError, result.error_in_exec
    assert message in str(result.error_in_exec)
    assert "UsageError:" in cap.stderr and message in cap.stderr
    assert "Traceback" not in cap.stderr + cap.stdout
    assert STATE._pool is None, "a usage error must not touch the stack"


def test_load_and_unload_the_extension() -> None:
    from dockercc.jupyter.magics import protect_question_marks

    ip = InteractiveShell.instance()
    for _ in range(2):  # loading twice adds nothing twice
        assert ip.run_cell("%load_ext dockercc").success
        ip.extension_manager.reload_extension("dockercc")
    assert ip.input_transformers_cleanup.count(protect_question_marks) == 1
    assert ip.input_transformers_post.count(make_async) == 1
    assert "dockercc" in ip.magics_manager.magics["line"]
    assert "dockercc" in ip.magics_manager.magics["cell"]
    assert ip.run_cell("%unload_ext dockercc").success
    assert "dockercc" not in ip.magics_manager.magics["line"]
    assert "dockercc" not in ip.magics_manager.magics["cell"]
    assert protect_question_marks not in ip.input_transformers_cleanup
    assert make_async not in ip.input_transformers_post
    result, _ = run(ip, "%dockercc status")
    assert result.error_in_exec is not None and "not found" in str(result.error_in_exec)


def test_notebooks_are_stripped_and_only_credential_cells_are_skipped() -> None:
    import nbformat

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 7, notebooks
    for path in notebooks:
        nb = nbformat.read(path, 4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: outputs must be stripped"
            if "skip-execution" in cell.metadata.get("tags", []):
                assert cell.source.startswith("# needs credentials"), \
                    f"{path.name}: only cells that need credentials may be skipped"
        assert "OfflineStack()" in "".join(c.source for c in nb.cells), path.name


def test_help_prints_usage(bare_shell: InteractiveShell) -> None:
    for cell in ("%dockercc", "%dockercc help", "%dockercc --help", "%%dockercc -h\nignored"):
        result, cap = run(bare_shell, cell)
        assert result.success and "%%dockercc [options]" in cap.stdout, cell


def test_display_mode_detection(bare_shell: InteractiveShell,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKERCC_JUPYTER_DISPLAY", raising=False)
    assert detect_mode(bare_shell) == "html"  # an embedded shell: no kernel, no terminal
    monkeypatch.setenv("DOCKERCC_JUPYTER_DISPLAY", "widget")
    assert detect_mode(bare_shell) == "widget"
    monkeypatch.setenv("DOCKERCC_JUPYTER_DISPLAY", "blinking")
    with pytest.raises(dj.magics.DockerCCError, match="unknown display mode"):
        detect_mode(bare_shell)


def test_event_displays(bare_shell: InteractiveShell) -> None:
    from dockercc.events import ErrorEvent, SystemInit

    def fmt(obj: Any, mime: str, **kwargs: Any) -> str:
        data: dict[str, str] = bare_shell.display_formatter.format(obj, **kwargs)[0]
        return data[mime]

    use = ToolUse(id="t1", name="Bash", input={"command": "ls <dir>"}, seq=3)
    html = fmt(use, "text/html")
    assert 'data-tool="Bash"' in html and "&lt;dir&gt;" in html
    assert "`Bash`" in fmt(use, "text/markdown")
    res = ToolResult(tool_use_id="t1", content=[{"type": "text", "text": "boom"}],
                     is_error=True, tool_name="Bash")
    assert "error" in fmt(res, "text/markdown") and "boom" in fmt(res, "text/html")
    assert "*emphasis*" in fmt(TextDelta(text="*emphasis*"), "text/markdown")
    err = ErrorEvent(error="container_lost", message="the container was lost")
    assert "the container was lost" in fmt(err, "text/html")
    init = SystemInit(model="claude-x", tools=["Bash"])
    assert "claude-x" in fmt(init, "text/html")
    data, _ = bare_shell.display_formatter.format(use, exclude=["text/markdown"])
    assert set(data) == {"text/html", "text/plain"}


def test_turn_state_renders_text_cards_and_figures() -> None:
    state = TurnState(session="s1", agent="main", container="clawdbot-cc-s1")
    view = HtmlView(state)
    view.interval = 3600  # no live renders: only the exact final one
    view.render = lambda final: None  # type: ignore[method-assign]
    for ev in [TextDelta(text="Let me **check**. "),
               ToolUse(id="t1", name="lookup", input={"key": "α"}),
               ToolResult(tool_use_id="t1", content="value <b>", tool_name="lookup"),
               TextDelta(text="Found <script>x</script>.")]:
        view.feed(ev)
    view.finish(result=Result(text="Found.", cost_usd=0.0123, duration_ms=2500, num_turns=2,
                              usage={"input_tokens": 1200, "output_tokens": 34}))
    assert state.status == "done" and state.text == "Let me **check**. Found <script>x</script>."
    [card] = state.cards
    assert (card.name, card.input, card.result, card.status) == ("lookup", {"key": "α"},
                                                                 "value <b>", "ok")
    html = render.turn_html(state)
    assert "<strong>check</strong>" in html and "<script>" not in html  # model HTML escaped
    assert "&lt;script&gt;" in html and "value &lt;b&gt;" in html
    assert 'data-tool="lookup"' in html and "clawdbot-cc-s1" in html
    assert "$0.0123" in html and "1,200 in / 34 out" in html and "2.5 s" in html
    md = render.turn_markdown(state)
    assert "⚙ lookup" in md and "$0.0123" in md
    assert state.figures() == {"outcome": "success", "cost": "$0.0123",
                               "tokens": "1,200 in / 34 out", "duration": "2.5 s",
                               "turns": "2 turns"}


# --------------------------------------------------------------------- real stack


@pytest.mark.docker
def test_cell_magic_streams_display_updates_and_returns_the_result(
        shell: InteractiveShell, api: Any, make_config: Callable[..., dict[str, Any]]) -> None:
    from dockercc import tool

    calls: list[str] = []

    @tool
    def lookup(key: str) -> str:
        """Look a key up in the notebook's table."""
        calls.append(key)
        return f"value-of-{key}"

    dj.configure(make_config(), tools=[lookup])
    words = " ".join(f"word{i}" for i in range(120))
    api.on("look it up", text("Let me check. ") + tool_use("mcp__host__lookup", {"key": "alpha"}),
           text(words, delay=0.01))
    t0 = time.monotonic()
    result, cap = run(shell, "%%dockercc\nplease look it up")
    elapsed = time.monotonic() - t0
    assert result.success, result.error_in_exec
    assert calls == ["alpha"]
    outs = displays(cap)
    first, updates = outs[0], outs[1:]
    did = first.transient["display_id"]
    assert not first.update and did
    assert updates and all(o.update and o.transient["display_id"] == did for o in updates)
    # throttled: ~10 updates a second, far fewer than the 120+ deltas
    assert len(updates) <= elapsed * 10 + 4, (len(updates), elapsed)
    final = updates[-1].data
    assert set(final) == {"text/html", "text/markdown", "text/plain"}
    assert words in final["text/plain"] and "Let me check." in final["text/plain"]
    assert 'data-tool="mcp__host__lookup"' in final["text/html"]
    assert "value-of-alpha" in final["text/html"]
    assert 'data-status="done"' in final["text/html"] and "dockercc-cost" in final["text/html"]
    # an earlier update showed part of the text: it streamed
    assert any("word0" in o.data["text/plain"] and words not in o.data["text/plain"]
               for o in updates)
    # the Result is returned: `_` holds it
    res = shell.user_ns["_"]
    assert isinstance(res, Result) and res.ok and res.text == words
    assert [c.name for c in res.tool_calls] == ["mcp__host__lookup"]
    assert "shown above" in cap.stdout  # Out[n] is not the whole answer again


@pytest.mark.docker
def test_line_magic_commands_and_display_hooks(shell: InteractiveShell, api: Any,
                                               redis_server: Any) -> None:
    # a prompt ending in "?" is a prompt; assignment gets the Result
    result, _ = run(shell, "r = %dockercc What is Redis?")
    assert result.success, result.error_in_exec
    assert api.message_requests[-1].last_user_text == "What is Redis?"
    r = shell.user_ns["r"]
    assert isinstance(r, Result) and r.text == "echo: What is Redis?"

    # a second named session; options of an existing session need --new
    result, _ = run(shell, "%dockercc -s other --no-display second?")
    assert result.success and shell.user_ns["_"].text == "echo: second?"
    result, cap = run(shell, "%dockercc -s other --model claude-x hi")
    assert type(result.error_in_exec) is UsageError and "--new" in cap.stderr
    main_id = STATE.sessions["main"].id

    result, cap = run(shell, "%dockercc sessions")
    rows = shell.user_ns["_"].data
    assert [(x["name"], x["status"]) for x in rows] == [("main", "idle"), ("other", "idle")]
    assert rows[0]["current"] and rows[0]["session"] == main_id
    assert rows[0]["container"].startswith("clawdbot-cc-")

    run(shell, "%dockercc use other")
    assert STATE.current == "other"
    result, _ = run(shell, "%dockercc status")
    status = shell.user_ns["_"].data
    assert status["current"] == "other" and status["pool"]["busy"] == 2

    result, _ = run(shell, "%dockercc history other")
    [entry] = shell.user_ns["_"].data
    assert entry["prompt"] == "second?" and entry["text"] == "echo: second?"

    result, _ = run(shell, "%dockercc config")
    config = shell.user_ns["_"].data
    assert config["credentials"]["apiKey"] == "***"
    assert "sk-ant-scripted-test" not in json.dumps(config) + repr(shell.user_ns["_"])

    # %dockercc pool: the shared registry's containers with state, agent, heartbeat
    result, _ = run(shell, "%dockercc pool")
    table = shell.user_ns["_"]
    bundle = table._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/markdown"}
    for s in STATE.sessions.values():
        assert s.aio.lease is not None and s.aio.lease.name in bundle["text/html"]
    assert "heartbeat" in bundle["text/html"] and "busy" in bundle["text/html"]
    # header + a row per container: the 2 busy ones, and (two sessions with the same
    # options) perhaps a demand warm set's container on its way (docs/pool.md)
    states = [row["state"] for row in table.data]
    assert sorted(states)[:2] == ["busy", "busy"] and set(states) <= {"busy", "warm", "creating"}
    assert bundle["text/html"].count("<tr>") == 1 + len(states)
    # displays: the pool shows the containers this process holds, a session its row
    fmt = shell.display_formatter.format
    pool_html = fmt(dj.pool())[0]["text/html"]
    assert pool_html.count("<tr>") >= 3 and pool_html.count("busy") >= 2
    session = STATE.sessions["main"]
    assert main_id in fmt(session)[0]["text/html"] and "idle" in fmt(session)[0]["text/markdown"]
    assert main_id in fmt(session.aio)[0]["text/html"]
    # (r shows itself: _ipython_display_ skips the cell that streamed it)
    data = dj.display.bundle(r)
    assert "echo: What is Redis?" in data["text/markdown"] and "success" in data["text/html"]
    # a Result shown again later displays in full
    result, cap = run(shell, "r")
    assert "echo: What is Redis?" in cap.outputs[-1].data["text/html"]

    # --new: a fresh session under the same name; the old one is closed
    old_other = STATE.sessions["other"]
    result, _ = run(shell, "%dockercc -s other --new --model claude-x --no-display fresh")
    assert result.success, result.error_in_exec
    other = STATE.sessions["other"]
    assert other is not old_other and other.id != old_other.id and old_other.closed
    assert other.aio.options.model == "claude-x"
    assert api.message_requests[-1].body["model"] == "claude-x"

    result, cap = run(shell, "%dockercc close other")
    assert result.success and "other" not in STATE.sessions and other.closed
    assert f"resume={other.id!r}" in cap.stdout
    prefix = shell_config_prefix()
    assert redis_server.cli("hget", f"{prefix}{other.id}:state", "status").strip() == "closed"


def shell_config_prefix() -> str:
    return str(STATE.pool.config.redis.key_prefix)


def widget_turn(session: Any, prompt: str) -> tuple[Result, Any]:
    """One turn into a stream widget (what %%dockercc shows in JupyterLab)."""
    from dockercc.jupyter.turn import TurnDriver

    aio = session.aio
    view = WidgetView(TurnState(session=aio.id, agent=aio.agent, prompt=prompt))
    driver = TurnDriver(aio, view, on_portal=True, timeout=60)
    return driver.run(prompt), view


@pytest.mark.docker
def test_widget_holds_text_cards_footer_and_interrupt_button_stops_a_slow_stream(
        make_config: Callable[..., dict[str, Any]], api: Any) -> None:
    from dockercc import Pool, tool

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value-of-{key}"

    api.on("first turn", text("Checking. ") + tool_use("mcp__host__lookup", {"key": "k1"}),
           text("All **done**."))
    api.on("slow turn", text(SLOW_WORDS, delay=0.25))
    with Pool(make_config(), tools=[lookup]) as pool:
        s = pool.session()
        # a full turn: the widget's state holds the text, the tool card and the figures
        res, view = widget_turn(s, "first turn")
        w = view.widget
        assert res.ok and res.text == "All **done**."
        assert view.state.text == "Checking. \n\nAll **done**."
        assert "Checking." in w.html_text and "<strong>done</strong>" in w.html_text
        assert w.card_titles == ["⚙ mcp__host__lookup ✓"]
        card = next(p for p in w.parts if "dockercc-tool" in p._dom_classes)
        assert card.selected_index is None  # collapsed
        assert "value-of-k1" in card.children[0].value
        assert "&quot;k1&quot;" in card.children[0].value  # its input
        assert [type(p).__name__ for p in w.parts] == ["HTML", "Accordion", "HTML"]
        for figure in render.footer_text(render.figures(res)).split(" · "):
            assert figure in w.footer.value
        assert "dockercc-cost" in w.footer.value and "dockercc-tokens" in w.footer.value
        assert "dockercc-duration" in w.footer.value
        assert w.interrupt_button.layout.display == "none"  # gone once the turn ended
        assert view.renders >= 2

        # the Interrupt button during a slow stream stops it
        holder: dict[str, Any] = {}

        def click_when_streaming() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                v = holder.get("view")
                if v is not None and "w2" in v.widget.html_text:
                    holder["clicked"] = v.state.text
                    v.widget.interrupt_button.click()  # what the frontend's click runs
                    return
                time.sleep(0.02)

        from dockercc.jupyter.turn import TurnDriver

        aio = s.aio
        view = WidgetView(TurnState(session=aio.id, agent=aio.agent))
        holder["view"] = view
        clicker = threading.Thread(target=click_when_streaming)
        clicker.start()
        t0 = time.monotonic()
        res = TurnDriver(aio, view, on_portal=True, timeout=60).run("slow turn")
        clicker.join()
        assert "clicked" in holder, "the stream never showed w2"
        assert res.interrupted and time.monotonic() - t0 < 0.25 * 40
        w = view.widget
        assert "w2" in w.html_text and "w39" not in w.html_text
        assert 'data-status="interrupted"' in w.badge.value
        assert w.interrupt_button.disabled
        # and the session goes on
        api.on("after", text("still here"))
        assert dj.stream(s, "after", display="none").text == "still here"
        s.close(forget=True)


# ------------------------------------------------------------------ a real ipykernel


class Kernel:
    """A real ipykernel driven over ZMQ (as JupyterLab or nbclient drive it)."""

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", startup_timeout=60)

    def execute(self, code: str, *, cell_id: str | None = None, timeout: float = 120,
                on_iopub: Callable[[dict[str, Any]], None] | None = None,
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run a cell; (the execute_reply content, its iopub messages)."""
        kc = self.kc
        metadata = {"cellId": cell_id} if cell_id else {}
        msg = kc.session.msg("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}, metadata=metadata)
        kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                continue
            if on_iopub is not None:
                on_iopub(m)
            if m["parent_header"].get("msg_id") != msg_id:
                continue
            out.append(m)
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                break
        else:
            raise AssertionError(f"the cell did not finish within {timeout}s: {code[:80]!r}")
        while True:
            reply = kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"], out

    def send_comm(self, comm_id: str, data: dict[str, Any]) -> None:
        self.kc.shell_channel.send(self.kc.session.msg("comm_msg", {"comm_id": comm_id,
                                                                     "data": data}))

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def plain_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"]["data"].get("text/plain", "") for m in messages
            if m["msg_type"] in ("display_data", "update_display_data", "execute_result")]


@pytest.mark.docker
def test_in_a_real_kernel_the_stop_button_and_the_interrupt_button_stop_the_agent(
        make_config: Callable[..., dict[str, Any]], api: Any) -> None:
    api.on("count slowly", text(SLOW_WORDS, delay=0.25))
    api.on("second turn", text("second answer"))
    kernel = Kernel()
    try:
        reply, _ = kernel.execute(
            "import json\nimport dockercc.jupyter as dj\n%load_ext dockercc\n"
            f"dj.configure(json.loads({json.dumps(make_config())!r}))")
        assert reply["status"] == "ok", reply

        # the kernel's stop button (SIGINT) during a slow stream, headless runner: html view
        def interrupt_when_streaming(m: dict[str, Any]) -> None:
            if m["msg_type"] == "update_display_data" and "w2" in str(m["content"]["data"]) \
                    and not stopped:
                stopped.append(time.monotonic())
                kernel.km.interrupt_kernel()

        stopped: list[float] = []
        reply, out = kernel.execute("%%dockercc\ncount slowly",
                                    on_iopub=interrupt_when_streaming)
        assert stopped, "the stream never showed w2"
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
        assert time.monotonic() - stopped[0] < 15
        final = plain_texts(out)[-1]
        assert "interrupted" in final and "w2" in final and "w39" not in final
        # the session stays usable
        reply, out = kernel.execute("%%dockercc\nsecond turn")
        assert reply["status"] == "ok", reply
        assert "second answer" in plain_texts(out)[-1]

        # a cell run from a notebook frontend (it sends the cell id): the widget; its
        # Interrupt button is handled while the reply streams (the cell runs async)
        button: dict[str, Any] = {}

        def click_when_streaming(m: dict[str, Any]) -> None:
            content = m["content"]
            if m["msg_type"] == "comm_open" and \
                    content["data"].get("state", {}).get("_model_name") == "ButtonModel":
                button["id"] = content["comm_id"]
            elif m["msg_type"] == "comm_msg" and "id" in button and "clicked" not in button:
                value = str(content["data"].get("state", {}).get("value", ""))
                if "w2" in value:
                    button["clicked"] = time.monotonic()
                    kernel.send_comm(button["id"], {"method": "custom",
                                                    "content": {"event": "click"}})

        reply, out = kernel.execute("%%dockercc\ncount slowly", cell_id="cell-1",
                                    on_iopub=click_when_streaming)
        assert reply["status"] == "ok", reply
        assert "clicked" in button, "no widget streamed w2"
        views = [m for m in out if m["msg_type"] == "display_data"]
        assert "application/vnd.jupyter.widget-view+json" in views[0]["content"]["data"]
        reply, out = kernel.execute("print(_.interrupted, 'w39' in _.text, 'w2' in _.text)")
        assert [m["content"]["text"] for m in out if m["msg_type"] == "stream"] == \
            ["True False True\n"]
        reply, _ = kernel.execute("dj.shutdown()")
        assert reply["status"] == "ok", reply
    finally:
        kernel.close()


@pytest.mark.docker
def test_terminal_ipython_streams_plain_text(make_config: Callable[..., dict[str, Any]],
                                             api: Any) -> None:
    api.on("terminal", text("Hello ") + tool_use("Bash", {"command": "echo hi-from-bash"}),
           text("plain **text** here"))
    config = make_config(agents={"main": {"permissionMode": "bypassPermissions"}})
    code = ("import json, dockercc.jupyter as dj\n"
            f"dj.configure(json.loads({json.dumps(config)!r}))\n"
            "r = %dockercc hello terminal?\n"
            "print('RESULT', repr(r.text))\n"
            "%unload_ext dockercc\n")
    out = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor",
                          "--ext=dockercc", "-c", code], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(
        "Hello \n[⚙ Bash {\"command\": \"echo hi-from-bash\"}]\n[→ hi-from-bash]\n"
        "plain **text** here\n-- done · success · "), out.stdout
    assert "RESULT 'plain **text** here'" in out.stdout
    assert "<" not in out.stdout.replace("<Result", ""), "no HTML in a terminal"
    assert api.message_requests[0].last_user_text == "hello terminal?"


@pytest.mark.docker
async def test_astream_with_an_async_session_times_out_cleanly(
        make_config: Callable[..., dict[str, Any]], api: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    from dockercc import AsyncPool

    api.on("slow", text(SLOW_WORDS, delay=0.25))
    api.on("next", text("next answer"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session()
        assert (await dj.astream(s, "next", display="none")).text == "next answer"
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await dj.astream(s, "slow please", display="text", timeout=2)
        assert time.monotonic() - t0 < 20
        out = capsys.readouterr().out
        assert out.startswith("w0 w1 ") and "w39" not in out
        assert "error: TimeoutError" in out and "-- interrupted" in out
        assert not s.turn_open  # the turn was drained: the session goes on
        result = await dj.astream(s, "next", display="text")
        assert result.text == "next answer" and result.ok
        assert "next answer\n-- done · success" in capsys.readouterr().out
        await s.close(forget=True)
