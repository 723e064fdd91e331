"""Stream views: how a turn is shown while it streams.

* ``widget``: :class:`~dockercc.jupyter.widget.StreamWidget` (needs a frontend with the
  Jupyter widget manager: JupyterLab, Notebook 7, VS Code);
* ``html``: one ``display(..., display_id=...)`` output updated in place with HTML /
  markdown / plain text (nbconvert, nbmake, papermill, frontends without widgets);
* ``text``: plain text printed as it streams (terminal IPython);
* ``quiet``: nothing while streaming, the final answer once;
* ``none``: nothing at all (``--no-display``).

``auto`` picks one (:func:`detect_mode`). Live updates are throttled to about ten a second;
the final render always shows the exact end state.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, cast, get_args

from ..errors import ConfigError
from ..events import TextDelta, ToolResult, ToolUse
from . import render
from .state import TurnState

__all__ = [
    "Mode",
    "MODES",
    "StreamView",
    "WidgetView",
    "HtmlView",
    "TextView",
    "QuietView",
    "NullView",
    "detect_mode",
    "make_view",
    "DISPLAY_ENV",
]

Mode = Literal["auto", "widget", "html", "text", "quiet", "none"]
MODES: tuple[str, ...] = get_args(Mode)
DISPLAY_ENV = "DOCKERCC_JUPYTER_DISPLAY"
UPDATE_INTERVAL_S = 0.1


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ConfigError(f"unknown display mode {mode!r}: use one of {', '.join(MODES)}",
                          [("display", mode, ", ".join(MODES))])
    return cast(Mode, mode)


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the jupyter extra is missing
        return None
    return get_ipython()


def _is_terminal(shell: Any) -> bool:
    try:
        from IPython.terminal.interactiveshell import TerminalInteractiveShell
    except ImportError:  # pragma: no cover
        return False
    return isinstance(shell, TerminalInteractiveShell)


def _frontend_renders_widgets(shell: Any) -> bool:
    """Whether the cell being run came from an interactive notebook frontend.

    JupyterLab, Notebook 7 and VS Code send the cell's id in the ``execute_request``
    metadata (``cellId``); headless runners (nbclient: nbconvert, nbmake, papermill) do
    not, and have no widget manager to render a widget."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return False
    parent: Any = None
    get_parent = getattr(kernel, "get_parent", None)
    if get_parent is not None:
        try:
            parent = get_parent("shell")
        except TypeError:  # older ipykernel: no channel argument
            parent = get_parent()
    if not isinstance(parent, dict):
        parent = getattr(shell, "parent_header", None)
    metadata = parent.get("metadata") if isinstance(parent, dict) else None
    if not isinstance(metadata, dict) or not metadata.get("cellId"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def detect_mode(shell: Any = None) -> Mode:
    """The display mode for ``auto``: ``$DOCKERCC_JUPYTER_DISPLAY`` if set; ``text`` outside
    IPython and in terminal IPython; ``widget`` for a cell run from a notebook frontend with
    ipywidgets installed; ``html`` otherwise (headless runners, embedded shells)."""
    env = os.environ.get(DISPLAY_ENV, "").strip()
    if env and env != "auto":
        return check_mode(env)
    shell = shell if shell is not None else _shell()
    if shell is None or _is_terminal(shell):
        return "text"
    if _frontend_renders_widgets(shell):
        return "widget"
    return "html"


class StreamView:
    """Base of the views: keeps the :class:`TurnState`, throttles renders."""

    interval = UPDATE_INTERVAL_S

    def __init__(self, state: TurnState) -> None:
        self.state = state
        self.on_interrupt: Callable[[], None] | None = None
        self.renders = 0
        self._rendered = -1
        self._last = 0.0

    # -- what a turn driver calls ----------------------------------------------------------

    def start(self) -> None:
        self._render(final=False)

    def feed(self, event: object) -> None:
        self.state.feed(event)
        self._after_feed(event)
        self.tick()

    def _after_feed(self, event: object) -> None:
        pass

    def due_in(self) -> float | None:
        """Seconds until a pending update is due (``None``: nothing pending)."""
        if self.state.version == self._rendered:
            return None
        return max(0.0, self._last + self.interval - time.monotonic())

    def tick(self) -> None:
        """Render if something changed and the throttle allows it."""
        due = self.due_in()
        if due is not None and due <= 0:
            self._render(final=False)

    def interrupting(self) -> None:
        self.state.set_status("interrupting")
        self._render(final=False)

    def finish(self, **outcome: Any) -> None:
        """End the turn (``result=``, ``error=``, ``interrupted=``) and render it exactly."""
        self.state.finish(**outcome)
        self._render(final=True)

    def _render(self, final: bool) -> None:
        self._rendered = self.state.version
        self._last = time.monotonic()
        self.renders += 1
        self.render(final)

    def render(self, final: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class WidgetView(StreamView):
    """The ipywidgets stream view."""

    def __init__(self, state: TurnState) -> None:
        super().__init__(state)
        from .widget import StreamWidget

        self.widget = StreamWidget(on_interrupt=self._interrupt)

    def _interrupt(self) -> None:
        if self.on_interrupt is not None and not self.state.final:
            self.state.set_status("interrupting")
            self.on_interrupt()
            self._render(final=False)

    def start(self) -> None:
        from IPython.display import display

        self.widget.sync(self.state)
        display(self.widget)
        self._rendered = self.state.version
        self._last = time.monotonic()

    def render(self, final: bool) -> None:
        self.widget.sync(self.state)


class HtmlView(StreamView):
    """One display output updated in place (``display_id``) with HTML / markdown / text."""

    def __init__(self, state: TurnState) -> None:
        super().__init__(state)
        self.handle: Any = None

    def render(self, final: bool) -> None:
        from IPython.display import display

        bundle = render.turn_bundle(self.state)
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


class TextView(StreamView):
    """Plain text, printed as it streams (terminal IPython, scripts)."""

    interval = 0.0

    def __init__(self, state: TurnState, stream: Any = None) -> None:
        super().__init__(state)
        self.out = stream
        self._line_open = True  # nothing printed yet: keep the text as it comes
        self._printed = ""

    def _write(self, text: str) -> None:
        if not text:
            return
        out = self.out or sys.stdout
        out.write(text)
        out.flush()
        self._line_open = not text.endswith("\n")

    def _newline(self) -> None:
        if self._line_open:
            self._write("\n")

    def start(self) -> None:
        pass

    def _after_feed(self, event: object) -> None:
        if isinstance(event, TextDelta):
            self._printed += event.text
            # a new message's text starts with a blank line; after a tool line it is noise
            self._write(event.text if self._line_open else event.text.lstrip("\n"))
        elif isinstance(event, ToolUse):
            card = next((c for c in reversed(self.state.cards) if c.id == event.id), None)
            self._newline()
            self._write(f"[⚙ {event.name} {card.summary if card else ''}]\n")
        elif isinstance(event, ToolResult):
            first = (event.text.strip().splitlines() or [""])[0]
            first = first if len(first) <= 100 else first[:97] + "..."
            self._write(f"[{'✗' if event.is_error else '→'} {first}]\n")

    def interrupting(self) -> None:
        self.state.set_status("interrupting")

    def render(self, final: bool) -> None:
        if not final:
            return
        text = self.state.text
        if text.startswith(self._printed) and len(text) > len(self._printed):
            self._write(text[len(self._printed):])  # not streamed (or drained after Ctrl-C)
            self._printed = text
        self._newline()
        if self.state.error:
            self._write(f"error: {self.state.error}\n")
        self._write(f"-- {render.status_line(self.state)}\n")


class QuietView(StreamView):
    """Nothing while streaming; the final answer once (markdown)."""

    def __init__(self, state: TurnState, *, terminal: bool = False) -> None:
        super().__init__(state)
        self.terminal = terminal

    def start(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def interrupting(self) -> None:
        self.state.set_status("interrupting")

    def render(self, final: bool) -> None:
        if not final:
            return
        text = self.state.text
        if self.state.error:
            text += f"\n\nerror: {self.state.error}"
        if self.terminal:
            print(text)
            return
        from IPython.display import display

        display({"text/markdown": text, "text/html": render.markdown_html(text),
                 "text/plain": text}, raw=True)


class NullView(StreamView):
    """Shows nothing (``--no-display``)."""

    def start(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def interrupting(self) -> None:
        self.state.set_status("interrupting")

    def render(self, final: bool) -> None:
        pass


def make_view(mode: str, state: TurnState) -> StreamView:
    """The view for ``mode`` (``auto`` resolved with :func:`detect_mode`)."""
    resolved = check_mode(mode)
    if resolved == "auto":
        resolved = detect_mode()
    if resolved == "widget":
        return WidgetView(state)
    if resolved == "html":
        return HtmlView(state)
    if resolved == "text":
        return TextView(state)
    if resolved == "quiet":
        return QuietView(state, terminal=detect_mode() == "text")
    return NullView(state)
