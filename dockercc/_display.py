"""Notebook display hooks shared by Result, events, sessions and pools.

The rendering lives in :mod:`dockercc.jupyter.hooks`, imported only when a frontend asks, so
``import dockercc`` never imports IPython.
"""

from __future__ import annotations

from typing import Any


class NotebookDisplay:
    """``_repr_mimebundle_`` / ``_repr_html_`` / ``_repr_markdown_`` for Jupyter."""

    __slots__ = ()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from .jupyter.hooks import mimebundle

        return mimebundle(self, include, exclude)

    def _repr_html_(self) -> str:
        return self._repr_mimebundle_()["text/html"]

    def _repr_markdown_(self) -> str:
        return self._repr_mimebundle_()["text/markdown"]
