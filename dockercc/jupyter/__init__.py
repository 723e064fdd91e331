"""dockercc in Jupyter: ``%dockercc`` magics, a streaming widget, rich display.

::

    %load_ext dockercc
    import dockercc.jupyter as dj
    dj.configure({"redis": {"url": "redis://localhost:6379"}})   # or configure(pool=pool)

    %%dockercc
    What is in /workspace?

From Python code: ``dj.stream(session, "prompt")`` (sync) or ``await dj.astream(...)`` show
a turn in the same view and return its Result. Needs the ``jupyter`` extra (IPython,
ipywidgets); ``import dockercc`` never imports this package, and no core module imports it.

Importing it in a running IPython (or ``%load_ext dockercc``) registers the rich displays
of results, events, sessions and pools (:mod:`dockercc.jupyter.display`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import display as _display

if TYPE_CHECKING:  # pragma: no cover
    from ..client import ConfigLike
    from ..events import Result
    from ..sync import Pool, Session
    from .offline import OfflineStack
    from .state import TurnState
    from .view import StreamView
    from .widget import StreamWidget

__all__ = [
    "load_ipython_extension",
    "unload_ipython_extension",
    "configure",
    "shutdown",
    "pool",
    "session",
    "stream",
    "astream",
    "OfflineStack",
    "StreamWidget",
    "StreamView",
    "TurnState",
]


def _register_map_progress() -> None:
    """Give ``pool.map`` its notebook bar (the core never imports this package)."""
    from .. import batch
    from .progress import NotebookProgress

    batch.NOTEBOOK_REPORTER = NotebookProgress


_register_map_progress()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dockercc``: the magics, the input transformers they rely on, and the
    rich displays."""
    from .magics import DockerCCMagics, make_async, protect_question_marks

    ipython.register_magics(DockerCCMagics)
    if protect_question_marks not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(protect_question_marks)
    if make_async not in ipython.input_transformers_post:
        ipython.input_transformers_post.append(make_async)
    _display.register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext dockercc``: close the magics' sessions (and the pool they created),
    remove the magics, transformers and displays."""
    from .magics import STATE, make_async, protect_question_marks

    try:
        STATE.shutdown()
    finally:
        STATE.current = "main"
        for kind in ("line", "cell"):
            ipython.magics_manager.magics[kind].pop("dockercc", None)
        for hooks, fn in ((ipython.input_transformers_cleanup, protect_question_marks),
                          (ipython.input_transformers_post, make_async)):
            while fn in hooks:
                hooks.remove(fn)
        _display.unregister(ipython)


def configure(config: ConfigLike = None, *, pool: Pool | None = None,
              session: Session | None = None, display: str | None = None,
              tools: Any = ()) -> None:
    """Set what ``%dockercc`` uses.

    ``config``: a config (dict of overrides, path, :class:`~dockercc.DockerCCConfig`); the
    magics create a pool from it on first use (with ``tools``) and close it on
    :func:`shutdown`. ``pool``: a :class:`~dockercc.Pool` of yours (never closed by the
    magics). ``session``: a :class:`~dockercc.Session` of yours to use as the current
    session (its pool is used unless you pass one; never closed by the magics).
    ``display``: the default view (``auto``, ``widget``, ``html``, ``text``, ``quiet``,
    ``none``). Changing the config or pool closes the magics' sessions."""
    from .magics import STATE

    STATE.configure(config, pool=pool, session=session, display=display, tools=tools)


def shutdown() -> None:
    """Close the magics' sessions, and the pool if the magics created it."""
    from .magics import STATE

    STATE.shutdown()


def pool() -> Pool:
    """The pool the magics use (created from the configured config on first use)."""
    from .magics import STATE

    return STATE.pool


def session(name: str | None = None) -> Session:
    """A session the magics started (default: the current one)."""
    from .magics import STATE

    return STATE.session(name)


def _driver(session: Any, prompt: Any, display: str, timeout: float | None) -> Any:
    from ..session import AsyncSession
    from ..sync import Session
    from .state import TurnState
    from .turn import TurnDriver
    from .view import make_view

    if isinstance(session, Session):
        aio, on_portal = session.aio, True
    elif isinstance(session, AsyncSession):
        aio, on_portal = session, False
    else:
        raise TypeError(f"session must be a dockercc Session or AsyncSession, "
                        f"not {type(session).__name__}")
    lease = aio.lease
    state = TurnState(session=aio.id, agent=aio.agent, prompt=str(prompt),
                      container=lease.name if lease is not None else None,
                      model=aio.options.model)
    return TurnDriver(aio, make_view(display, state), on_portal=on_portal, timeout=timeout)


def stream(session: Session, prompt: Any, *, display: str = "auto",
           timeout: float | None = None) -> Result:
    """Send ``prompt`` and show the reply as it streams; returns the turn's Result.

    Blocks the cell: the widget's Interrupt button is handled once the cell yields, so use
    ``await astream(...)`` (or the magics) to be able to press it mid-stream. Ctrl-C / the
    kernel's stop button interrupts the agent and ends the turn cleanly."""
    driver = _driver(session, prompt, display, timeout)
    result: Result = driver.run(prompt)
    return result


async def astream(session: Any, prompt: Any, *, display: str = "auto",
                  timeout: float | None = None) -> Result:
    """:func:`stream` for async code and notebook cells (``await dj.astream(s, "...")``);
    accepts a sync :class:`~dockercc.Session` or an :class:`~dockercc.AsyncSession`."""
    driver = _driver(session, prompt, display, timeout)
    result: Result = await driver.arun(prompt)
    return result


def __getattr__(name: str) -> Any:
    if name == "OfflineStack":
        from .offline import OfflineStack

        return OfflineStack
    if name == "StreamWidget":
        from .widget import StreamWidget

        return StreamWidget
    if name == "StreamView":
        from .view import StreamView

        return StreamView
    if name == "TurnState":
        from .state import TurnState

        return TurnState
    raise AttributeError(f"module 'dockercc.jupyter' has no attribute {name!r}")


_display.register_with_running_shell()
