"""The progress bar of ``pool.map`` in a notebook: an ipywidgets bar with the live counts
(done / failed / running / queued), the cost so far and an ETA; where the frontend does not
render widgets (nbconvert, nbmake, a plain HTML view) an HTML line updated in place."""

from __future__ import annotations

from typing import Any

from ..batch import MapProgress, Reporter
from . import render
from .view import detect_mode

__all__ = ["NotebookProgress", "progress_html"]


def progress_html(p: MapProgress) -> str:
    finished = p.done + p.failed + p.skipped
    pct = 100.0 * finished / p.total if p.total else 100.0
    color = "#c62828" if p.stopped else "#2e7d32" if p.finished else "#1565c0"
    bar = (f'<div style="background:#eceff1;width:320px;height:10px;border-radius:3px">'
           f'<div style="background:{color};width:{pct:.1f}%;height:10px;border-radius:3px">'
           f"</div></div>")
    return (f'<div class="dockercc-map-progress">{bar}'
            f'<div style="font-family:monospace;font-size:90%">{render.esc(p.line())}</div></div>')


class NotebookProgress(Reporter):
    """A bar for one map run in the cell that runs it."""

    interval = 0.3

    def __init__(self, total: int, name: str | None = None) -> None:
        from IPython.display import HTML, display

        self.mode = detect_mode()
        self.total = total
        initial = MapProgress(total=total, queued=total, name=name)
        if self.mode == "widget":
            import ipywidgets as widgets

            self.bar = widgets.IntProgress(value=0, min=0, max=max(total, 1),
                                           description=(name or "map")[:20],
                                           bar_style="info")
            self.label = widgets.HTML(render.esc(initial.line()))
            self.box = widgets.VBox([self.bar, self.label])
            self.box.add_class("dockercc-map-progress")
            display(self.box)
            self.handle: Any = None
        else:
            self.handle = display(HTML(progress_html(initial)), display_id=True)

    def update(self, p: MapProgress) -> None:
        if self.mode == "widget":
            self.bar.value = p.done + p.failed + p.skipped
            self.bar.bar_style = ("danger" if p.stopped else "success" if p.finished
                                  else "warning" if p.failed else "info")
            self.label.value = render.esc(p.line())
        elif self.handle is not None:
            from IPython.display import HTML

            self.handle.update(HTML(progress_html(p)))
