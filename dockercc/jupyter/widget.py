"""The stream widget (ipywidgets): status badge + Interrupt button, the turn's parts (markdown
text, collapsible tool cards, collapsed thinking), and a footer with the turn's figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from . import render
from .state import Part, TextPart, ThinkingPart, ToolCard, TurnState

__all__ = ["StreamWidget"]


class StreamWidget(widgets.VBox):
    """A live view of one turn. :meth:`sync` makes it show a :class:`TurnState`;
    ``interrupt_button`` calls ``on_interrupt`` (set by whoever runs the turn)."""

    def __init__(self, on_interrupt: Callable[[], None] | None = None) -> None:
        self.on_interrupt = on_interrupt
        self.badge = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", width="auto",
                                                        min_width="0"))
        self.interrupt_button = widgets.Button(
            description="Interrupt", icon="stop", button_style="warning",
            tooltip="Stop the agent's turn (the session stays usable)",
            layout=widgets.Layout(width="auto", flex="0 0 auto"))
        self.interrupt_button.add_class("dockercc-interrupt")
        self.interrupt_button.on_click(self._clicked)
        self.header = widgets.HBox([self.badge, self.interrupt_button],
                                   layout=widgets.Layout(align_items="center", width="100%"))
        self.body = widgets.VBox()
        # the CLI's pending permission requests (Approve / Deny), apart from the parts that
        # sync() manages
        self.approvals = widgets.VBox()
        self.footer = widgets.HTML(layout=widgets.Layout(width="auto"))
        super().__init__([self.header, self.approvals, self.body, self.footer],
                         layout=widgets.Layout(border_left="3px solid #78909c",
                                               padding="2px 10px", margin="2px 0"))
        self.add_class("dockercc-stream")
        self._parts: list[widgets.Widget] = []
        self._plain = "dockercc stream"
        self.interrupted_by_button = False

    # -- the button ------------------------------------------------------------------------

    def _clicked(self, _button: Any = None) -> None:
        if self.interrupt_button.disabled:
            return
        self.interrupt_button.disabled = True
        self.interrupt_button.description = "Interrupting…"
        self.interrupted_by_button = True
        if self.on_interrupt is not None:
            self.on_interrupt()

    # -- approvals -------------------------------------------------------------------------

    def ask_approval(self, tool_name: str, tool_input: dict[str, Any],
                     decide: Callable[[bool], None]) -> None:
        """Show a permission request with Approve / Deny; ``decide(approved)`` is called
        once, on the click (from the kernel's thread)."""
        import json

        shown = json.dumps(tool_input, indent=1, ensure_ascii=False, default=str)
        if len(shown) > 2000:
            shown = shown[:2000] + "…"
        label = widgets.HTML(
            f"<b>{render.esc(tool_name)}</b> asks for approval"
            f"<pre class='dockercc-approval-input'>{render.esc(shown)}</pre>",
            layout=widgets.Layout(flex="1 1 auto", width="auto"))
        approve = widgets.Button(description="Approve", icon="check", button_style="success",
                                 layout=widgets.Layout(width="auto"))
        deny = widgets.Button(description="Deny", icon="times", button_style="danger",
                              layout=widgets.Layout(width="auto"))
        approve.add_class("dockercc-approve")
        deny.add_class("dockercc-deny")
        box = widgets.HBox([label, approve, deny],
                           layout=widgets.Layout(align_items="center", width="100%"))
        box.add_class("dockercc-approval")

        def clicked(approved: bool) -> None:
            if approve.disabled:
                return
            approve.disabled = deny.disabled = True
            label.value += f"<i>{'approved' if approved else 'denied'}</i>"
            box.remove_class("dockercc-approval")
            box.add_class("dockercc-approval-done")
            decide(approved)

        approve.on_click(lambda _b: clicked(True))
        deny.on_click(lambda _b: clicked(False))
        self.approvals.children = (*self.approvals.children, box)

    # -- state -> widgets ------------------------------------------------------------------

    def sync(self, state: TurnState) -> None:
        """Show ``state`` (only changed values go to the frontend)."""
        self.badge.value = render.badge_html(state)
        color = render.STATUS_COLORS.get(state.status, "#78909c")
        self.layout.border_left = f"3px solid {color}"
        added = False
        for i, part in enumerate(state.parts):
            if i < len(self._parts):
                self._update(self._parts[i], part)
            else:
                self._parts.append(self._make(part))
                added = True
        if added:
            self.body.children = tuple(self._parts)
        footer = render.footer_html(state.figures())
        if state.waiting and not state.final:
            footer = (f'<div class="dockercc-waiting" style="color:#ef6c00">waiting: '
                      f'{render.esc(state.waiting)}</div>' + footer)
        if state.error:
            footer = (f'<div class="dockercc-error" style="color:#c62828">'
                      f'{render.esc(state.error)}</div>' + footer)
        self.footer.value = footer
        if state.final:
            self.interrupt_button.disabled = True
            self.interrupt_button.layout.display = "none"
        self._plain = render.turn_text(state)

    def _make(self, part: Part) -> widgets.Widget:
        if isinstance(part, TextPart):
            w = widgets.HTML(render.markdown_html(part.text))
            w.add_class("dockercc-text")
            return w
        if isinstance(part, ThinkingPart):
            box = widgets.Accordion([widgets.HTML(self._thinking_html(part))],
                                    titles=("thinking",), selected_index=None)
            box.add_class("dockercc-thinking")
            return box
        card = widgets.Accordion([widgets.HTML(render.card_body_html(part))],
                                 titles=(render.card_title(part),), selected_index=None)
        card.add_class("dockercc-tool")
        return card

    @staticmethod
    def _thinking_html(part: ThinkingPart) -> str:
        return f'<div style="white-space:pre-wrap">{render.esc(part.text)}</div>'

    def _update(self, w: widgets.Widget, part: Part) -> None:
        if isinstance(part, TextPart) and isinstance(w, widgets.HTML):
            w.value = render.markdown_html(part.text)
        elif isinstance(part, ThinkingPart) and isinstance(w, widgets.Accordion):
            w.children[0].value = self._thinking_html(part)
        elif isinstance(part, ToolCard) and isinstance(w, widgets.Accordion):
            title = render.card_title(part)
            if tuple(w.titles) != (title,):
                w.titles = (title,)
            w.children[0].value = render.card_body_html(part)

    # -- reading (tests, notebooks) --------------------------------------------------------

    @property
    def parts(self) -> list[widgets.Widget]:
        """The body's part widgets, in order."""
        return list(self._parts)

    @property
    def html_text(self) -> str:
        """The HTML of the text parts, joined."""
        return "".join(w.value for w in self._parts if isinstance(w, widgets.HTML))

    @property
    def card_titles(self) -> list[str]:
        return [w.titles[0] for w in self._parts
                if isinstance(w, widgets.Accordion) and "dockercc-tool" in w._dom_classes]

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            data["text/plain"] = self._plain
        return data
