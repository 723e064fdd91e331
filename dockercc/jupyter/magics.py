"""``%dockercc`` / ``%%dockercc``: talk to an agent from a notebook cell.

One module on purpose (~780 lines): the magics share one argument parser and one per-kernel
state (``STATE``); display lives in :mod:`.view` / :mod:`.render`, turns in :mod:`.turn`.

::

    %load_ext dockercc
    %%dockercc --session research --model opus
    What is in /workspace?

    %dockercc What is 2 + 2?          # one line; a trailing "?" is part of the prompt
    r = %dockercc Summarise that      # the Result is returned (and in `_`)
    %dockercc status | sessions | pool | use NAME | interrupt [NAME] | history [NAME]
    %dockercc config | close [NAME|--all] | help
    %dockercc files [PATH] | download PATH [LOCAL] | upload LOCAL [PATH]

The reply streams into a view (see :mod:`dockercc.jupyter.view`). In a kernel, a cell whose
top-level statement is a ``dockercc`` magic runs as an *async* cell (an input transformer
adds the ``await``), so the kernel keeps handling widget messages while the reply streams:
that is what makes the widget's Interrupt button work mid-stream (ipykernel >= 7.4
dispatches widget messages while an async cell waits). The kernel's stop button interrupts
the agent, ends the turn cleanly (the session stays usable) and stops the cell.
"""

from __future__ import annotations

import argparse
import ast
import contextvars
import json
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from pydantic import PrivateAttr

from ..errors import DockerCCError, InvalidSessionId
from ..events import Result
from ..protocol.keys import validate_id
from . import render, snapshot
from .approvals import ASKING_MODES, NotebookApprover
from .display import POOL_COLUMNS, bundle, pool_title, session_row
from .state import TurnState, figures
from .turn import TurnDriver
from .view import MODES, check_mode, make_view

if TYPE_CHECKING:  # pragma: no cover
    from ..client import ConfigLike
    from ..sync import Pool, Session

__all__ = [
    "DockerCCMagics",
    "MagicUsageError",
    "NotebookResult",
    "MagicOutput",
    "STATE",
    "arun",
    "protect_question_marks",
    "make_async",
    "split_leading_options",
    "USAGE",
]

USAGE = """\
%%dockercc [options]          the cell is the prompt; the reply streams below
%dockercc [options] PROMPT    a one-line prompt (a trailing "?" is part of it)

options:
  -s, --session NAME   send to this session (default: the current one, "main")
  --agent NAME         agent for a new session (agents in the config)
  --model MODEL        model for a new session
  --system TEXT        system prompt for a new session
  --permission-mode M  permission mode for a new session
  --new                start a fresh session under that name (closes the old one)
  --timeout SECONDS    give up on the turn after this long (the agent is interrupted)
  --quiet              no live view; show only the final answer
  --no-display         show nothing; just return the Result
  --display MODE       auto, widget, html, text, quiet or none

commands:
  %dockercc status             the current session and the pool
  %dockercc sessions           this notebook's sessions
  %dockercc pool               the pool's containers (state, agent, heartbeat age)
  %dockercc use NAME           make NAME the current session
  %dockercc interrupt [NAME]   stop the session's turn
  %dockercc history [NAME]     the session's turns
  %dockercc config             the configuration in use (secrets masked)
  %dockercc close [NAME|--all] close a session (it stays resumable) or all of them
  %dockercc files [PATH]       the current session's workspace, with sizes
  %dockercc download PATH [LOCAL]  a workspace file or folder to the notebook's folder
  %dockercc upload LOCAL [PATH]    a local file or folder into the workspace
  %dockercc help               this text

The Result of a prompt is returned: `r = %dockercc ...`, or `_` after a cell."""

SUBCOMMANDS: dict[str, tuple[int, int]] = {  # name -> (min, max) arguments
    "status": (0, 0),
    "sessions": (0, 0),
    "pool": (0, 0),
    "config": (0, 0),
    "help": (0, 0),
    "use": (1, 1),
    "interrupt": (0, 1),
    "history": (0, 1),
    "close": (0, 1),
    "files": (0, 1),
    "download": (1, 2),
    "upload": (1, 2),
}
VALUE_OPTIONS = {"-s", "--session", "--agent", "--model", "--timeout", "--system",
                 "--permission-mode", "--display"}


class MagicUsageError(DockerCCError, ValueError):
    """Bad ``%dockercc`` arguments. The magic re-raises it as IPython's own ``UsageError``,
    which IPython shows as a short message instead of a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # type: ignore[override]
        raise MagicUsageError(f"{message}\nusage: {self.format_usage().strip()[7:]}\n"
                              "(%dockercc help lists everything)")

    def exit(self, status: int = 0, message: str | None = None) -> Any:  # type: ignore[override]
        raise MagicUsageError(message or "bad arguments")


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {value!r}")
    return number


def _parser(prog: str = "%%dockercc") -> _Parser:
    p = _Parser(prog=prog, add_help=False, allow_abbrev=False)
    p.add_argument("-s", "--session", metavar="NAME")
    p.add_argument("--agent", metavar="NAME")
    p.add_argument("--model", metavar="MODEL")
    p.add_argument("--system", metavar="TEXT")
    p.add_argument("--permission-mode", metavar="MODE")
    p.add_argument("--new", action="store_true")
    p.add_argument("--timeout", type=_positive, metavar="SECONDS")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-display", action="store_true")
    p.add_argument("--display", choices=MODES, metavar="MODE")
    p.add_argument("-h", "--help", action="store_true")
    return p


def _read_token(line: str, i: int) -> tuple[str, int]:
    quote = line[i]
    if quote in "\"'":
        end = line.find(quote, i + 1)
        if end < 0:
            raise MagicUsageError(f"no closing {quote} in the options")
        return line[i + 1:end], end + 1
    j = i
    while j < len(line) and not line[j].isspace():
        j += 1
    return line[i:j], j


def split_leading_options(line: str) -> tuple[list[str], str]:
    """Split ``"-s x --model m What's up?"`` into the leading option tokens and the prompt
    (taken verbatim). Options stop at the first word that is not an option (or ``--``); a
    word starting with ``-`` and a digit (``-5 degrees``) is prompt text."""
    tokens: list[str] = []
    i, n = 0, len(line)
    wants_value = False
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            break
        if not wants_value:
            if line.startswith("--", i) and (i + 2 == n or line[i + 2].isspace()):
                i += 2
                break
            if not (line[i] == "-" and i + 1 < n and (line[i + 1].isalpha() or line[i + 1] == "-")):
                break
        token, i = _read_token(line, i)
        tokens.append(token)
        wants_value = (not wants_value) and token in VALUE_OPTIONS
    return tokens, line[i:].strip()


# ------------------------------------------------------------------------------- results


class NotebookResult(Result):
    """The :class:`~dockercc.events.Result` a magic returns after streaming it: in the same
    cell its display is skipped (the stream view already shows it); displayed later (``_``,
    ``display(r)``) it shows in full. Otherwise the same as the Result it copies."""

    _shown_in: int | None = PrivateAttr(default=None)

    @classmethod
    def shown(cls, result: Result, execution_count: int | None) -> NotebookResult:
        values = {name: getattr(result, name) for name in Result.model_fields}
        copy = cls.model_construct(_fields_set=set(result.model_fields_set), **values)
        copy._shown_in = execution_count
        return copy

    def _ipython_display_(self) -> None:
        from IPython import get_ipython
        from IPython.display import display

        shell = get_ipython()
        if self._shown_in is not None and shell is not None \
                and shell.execution_count == self._shown_in:
            self._shown_in = None  # the stream view above is this result
            if getattr(shell, "kernel", None) is None:  # a terminal prints "Out[n]: " anyway
                figs = render.footer_text(figures(self))
                print(f"<Result: {figs or self.subtype} (shown above; .text has it)>")
            return
        display({**bundle(self), "text/plain": repr(self)}, raw=True)


class MagicOutput:
    """What ``%dockercc status`` / ``sessions`` / ``history`` / ``config`` return: the data
    (``.data``) displayed as a table."""

    def __init__(self, data: Any, bundle: dict[str, str], plain: str) -> None:
        self.data = data
        self._bundle = bundle
        self._plain = plain

    def __repr__(self) -> str:
        return self._plain

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return dict(self._bundle)


# --------------------------------------------------------------------------------- state


class _State:
    """What the magics use: a config or pool, this notebook's named sessions, the current
    one, the default display mode. One per process (``STATE``)."""

    def __init__(self) -> None:
        self.config: ConfigLike = None
        self.tools: list[Any] = []
        self._pool: Pool | None = None
        self.own_pool = False
        self.sessions: dict[str, Session] = {}
        self.approvers: dict[str, NotebookApprover] = {}
        self.current = "main"
        self.display = "auto"
        self.adopted: set[str] = set()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            from ..sync import Pool

            self._pool = Pool(self.config, tools=self.tools)
            self.own_pool = True
        return self._pool

    def configure(self, config: ConfigLike = None, *, pool: Pool | None = None,
                  session: Session | None = None, display: str | None = None,
                  tools: Sequence[Any] = ()) -> None:
        from ..sync import Pool, Session

        mode = check_mode(display) if display is not None else None
        if pool is not None and not isinstance(pool, Pool):
            raise TypeError(f"pool must be a dockercc.Pool, not {type(pool).__name__} (an "
                            "AsyncPool lives on your loop; the magics need the sync facade)")
        if session is not None:
            if not isinstance(session, Session):
                raise TypeError(f"session must be a dockercc.Session, not "
                                f"{type(session).__name__}")
            if pool is None and config is None:
                pool = _pool_of(session)
        if mode is not None:
            self.display = mode
        if pool is not None and pool is self._pool and config is None and not tools:
            self._adopt(session)  # same pool: keep the other sessions
            return
        if config is None and pool is None and not tools:
            return
        self.close_all()
        if self.own_pool and self._pool is not None:
            self._pool.close()
        self._pool, self.own_pool = pool, False
        self.config = config
        self.tools = list(tools)
        self._adopt(session)

    def _adopt(self, session: Session | None) -> None:
        """Make ``session`` (the caller's: never closed by the magics) the current one."""
        if session is None:
            return
        old = self.sessions.get(self.current)
        if old is not None and old is not session and self.current not in self.adopted:
            old.close()
        self.sessions[self.current] = session
        self.adopted.add(self.current)

    def close_all(self) -> None:
        errors = []
        for name in list(self.sessions):
            session = self.sessions.pop(name)
            if name in self.adopted:  # the caller's own session: not ours to close
                self.adopted.discard(name)
                continue
            try:
                session.close()
            except Exception as exc:  # keep closing the others
                errors.append(f"{name}: {exc}")
        if errors:
            raise DockerCCError("could not close every session: " + "; ".join(errors))

    def shutdown(self) -> None:
        """Close the sessions and the pool the magics created."""
        try:
            self.close_all()
        finally:
            if self.own_pool and self._pool is not None:
                self._pool.close()
            self._pool, self.own_pool = None, False

    def session(self, name: str | None = None) -> Session:
        name = name or self.current
        try:
            return self.sessions[name]
        except KeyError:
            known = ", ".join(sorted(self.sessions)) or "none yet"
            raise MagicUsageError(f"no session named {name!r} (sessions: {known})") from None


STATE = _State()


# --------------------------------------------------------------------------- async cells

_ASYNC_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("dockercc_async_call",
                                                                   default=False)


class _Pending:
    """A prompt the magic will run once awaited (the async-cell path)."""

    def __init__(self, run: Callable[[], Awaitable[Result]],
                 wrap: Callable[[Result], Result]) -> None:
        self._run = run
        self._wrap = wrap

    async def run(self) -> Result:
        import asyncio

        try:
            return self._wrap(await self._run())
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise KeyboardInterrupt from None  # the kernel's stop button


async def arun(call: Callable[[], Any]) -> Any:
    """Run a ``dockercc`` magic call from an async cell (what :func:`make_async` inserts)."""
    token = _ASYNC_CALL.set(True)
    try:
        value = call()
    finally:
        _ASYNC_CALL.reset(token)
    if isinstance(value, _Pending):
        return await value.run()
    return value


def _is_dockercc_call(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("run_line_magic", "run_cell_magic") and node.args):
        return False
    owner = node.func.value
    first = node.args[0]
    return (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
            and owner.func.id == "get_ipython" and isinstance(first, ast.Constant)
            and first.value == "dockercc")


def _asyncio_autoawait(shell: Any) -> bool:
    try:
        from IPython.core.async_helpers import _asyncio_runner
    except ImportError:  # pragma: no cover
        return False
    return bool(getattr(shell, "autoawait", False)) and \
        getattr(shell, "loop_runner", None) is _asyncio_runner


_AWAIT = "(await __import__('dockercc.jupyter.magics', fromlist=['arun']).arun(lambda: {}))"


def make_async(lines: list[str]) -> list[str]:
    """IPython post-transformer: ``get_ipython().run_*_magic('dockercc', ...)`` as a
    top-level statement becomes an awaited call, so the cell runs as an async cell."""
    source = "".join(lines)
    if "'dockercc'" not in source:
        return lines
    from IPython import get_ipython

    if not _asyncio_autoawait(get_ipython()):
        return lines
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return lines
    calls = []
    for node in tree.body:
        value = node.value if isinstance(node, ast.Expr | ast.Assign | ast.AnnAssign) else None
        if value is not None and _is_dockercc_call(value):
            calls.append(value)
    if not calls:
        return lines
    raw = source.splitlines(keepends=True)
    starts = [0]
    for line in raw:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:
        line = raw[lineno - 1]
        return starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    for call in reversed(calls):
        assert call.end_lineno is not None and call.end_col_offset is not None
        a = offset(call.lineno, call.col_offset)
        b = offset(call.end_lineno, call.end_col_offset)
        source = source[:a] + _AWAIT.format(source[a:b]) + source[b:]
    return source.splitlines(keepends=True)


_LINE_MAGIC = re.compile(r"^(?P<indent>[ \t]*)(?P<assign>[A-Za-z_][\w.]*\s*=\s*)?"
                         r"%dockercc(?P<rest>(?:[ \t].*)?)$")


def protect_question_marks(lines: list[str]) -> list[str]:
    """IPython cleanup transformer: ``%dockercc What is Redis?`` is a prompt, not IPython's
    ``Redis?`` help request (which would run ``pinfo`` instead)."""
    if not lines or lines[0].lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        body = line.rstrip("\r\n")
        match = _LINE_MAGIC.match(body)
        if match and body.rstrip().endswith("?"):
            arg = match.group("rest").strip()
            out.append(f"{match['indent']}{match['assign'] or ''}"
                       f"get_ipython().run_line_magic('dockercc', {arg!r}){line[len(body):]}")
        else:
            out.append(line)
    return out


# -------------------------------------------------------------------------------- magics


@magics_class
class DockerCCMagics(Magics):
    """``%dockercc`` and ``%%dockercc`` (see the module docs and ``%dockercc help``)."""

    @line_cell_magic
    def dockercc(self, line: str, cell: str | None = None) -> Any:
        try:
            return self._run(line, cell)
        except MagicUsageError as exc:
            # IPython prints exactly UsageError (not subclasses) without a traceback
            raise UsageError(str(exc)) from None

    def _run(self, line: str, cell: str | None) -> Any:
        if cell is not None:
            opts = self._parse(self._split(line), "%%dockercc")
            if opts.help:
                print(USAGE)
                return None
            if not cell.strip():
                raise MagicUsageError("the cell is empty: write the prompt below %%dockercc")
            return self._prompt(opts, cell.strip("\n"))
        words = line.split()
        if not words or words[0] in ("-h", "--help"):
            print(USAGE)
            return None
        shape = SUBCOMMANDS.get(words[0])
        if shape is not None and shape[0] <= len(words) - 1 <= shape[1]:
            return self._command(words[0], words[1:])
        tokens, prompt = split_leading_options(line)
        opts = self._parse(tokens, "%dockercc")
        if opts.help:
            print(USAGE)
            return None
        if not prompt:
            raise MagicUsageError("no prompt after the options\n"
                                  "usage: %dockercc [options] PROMPT  (%dockercc help)")
        return self._prompt(opts, prompt)

    # -- parsing ---------------------------------------------------------------------------

    @staticmethod
    def _split(line: str) -> list[str]:
        try:
            return shlex.split(line)
        except ValueError as exc:
            raise MagicUsageError(f"cannot read the options ({exc})") from None

    @staticmethod
    def _parse(tokens: list[str], prog: str) -> argparse.Namespace:
        return _parser(prog).parse_args(tokens)

    # -- prompts ---------------------------------------------------------------------------

    def _session_for(self, opts: argparse.Namespace) -> Session:
        name = opts.session or STATE.current
        try:
            validate_id(name, "session name")
        except InvalidSessionId as exc:
            raise MagicUsageError(str(exc)) from None
        wanted = {"agent": opts.agent, "model": opts.model, "system_prompt": opts.system,
                  "permission_mode": opts.permission_mode}
        session = STATE.sessions.get(name)
        if session is not None and (opts.new or session.closed):
            STATE.sessions.pop(name)
            if not session.closed and name not in STATE.adopted:
                session.close()
            STATE.adopted.discard(name)
            session = None
        if session is not None:
            have = {"agent": session.agent, "model": session.aio.options.model,
                    "system_prompt": session.aio.options.system_prompt,
                    "permission_mode": session.aio.options.permission_mode}
            differ = [k for k, v in wanted.items() if v is not None and v != have[k]]
            if differ:
                flags = ", ".join("--" + k.replace("_prompt", "").replace("_", "-")
                                  for k in differ)
                raise MagicUsageError(
                    f"session {name!r} was started with other {flags}; add --new to start a "
                    f"fresh session with these options, or pick another one with -s NAME")
            return session
        more: dict[str, Any] = {}
        approver = None
        if opts.permission_mode in ASKING_MODES:
            # nobody else approves: Approve / Deny in the turn's stream widget
            more["can_use_tool"] = approver = NotebookApprover()
        session = STATE.pool.session(
            opts.agent or "main", model=opts.model, system_prompt=opts.system,
            permission_mode=opts.permission_mode, **more)
        if approver is not None:
            STATE.approvers[session.id] = approver
        STATE.sessions[name] = session
        return session

    def _prompt(self, opts: argparse.Namespace, prompt: str) -> Any:
        session = self._session_for(opts)
        mode = "none" if opts.no_display else "quiet" if opts.quiet else \
            opts.display or STATE.display
        lease = session.aio.lease
        state = TurnState(session=session.id, agent=session.agent, prompt=prompt,
                          container=lease.name if lease is not None else None,
                          model=session.aio.options.model)
        view = make_view(mode, state)
        approver = STATE.approvers.get(session.id)
        if approver is not None:
            approver.widget = getattr(view, "widget", None)
        driver = TurnDriver(session.aio, view, on_portal=True, timeout=opts.timeout)
        count = getattr(self.shell, "execution_count", None)

        def wrap(result: Result) -> Result:
            return result if opts.no_display else NotebookResult.shown(result, count)

        if _ASYNC_CALL.get():
            return _Pending(lambda: driver.arun(prompt), wrap)
        return wrap(driver.run(prompt))

    # -- commands --------------------------------------------------------------------------

    def _command(self, name: str, args: list[str]) -> Any:
        if name == "help":
            print(USAGE)
            return None
        if name == "use":
            target = args[0]
            try:
                validate_id(target, "session name")
            except InvalidSessionId as exc:
                raise MagicUsageError(str(exc)) from None
            STATE.current = target
            new = "" if target in STATE.sessions else " (it starts with the next prompt)"
            print(f"dockercc: the current session is now {target!r}{new}")
            return None
        if name == "interrupt":
            session = STATE.session(args[0] if args else None)
            session.interrupt()
            print(f"dockercc: interrupt sent to {session.id}")
            return None
        if name == "close":
            if args == ["--all"]:
                count = len(STATE.sessions)
                STATE.close_all()
                print(f"dockercc: closed {count} session(s)")
                return None
            target = args[0] if args else STATE.current
            session = STATE.session(target)
            session.close()
            STATE.sessions.pop(target, None)
            print(f"dockercc: closed {target!r} ({session.id}); resume it with "
                  f"pool.session(resume={session.id!r})")
            return None
        if name == "pool":
            return self._pool()
        if name == "files":
            return self._files(args[0] if args else "")
        if name in ("download", "upload"):
            return self._transfer(name, args)
        if name == "config":
            return self._config()
        if name == "sessions":
            return self._sessions()
        if name == "history":
            return self._history(args[0] if args else None)
        return self._status()

    def _rows(self) -> list[dict[str, Any]]:
        rows = []
        for name, session in STATE.sessions.items():
            try:
                state = snapshot.session_state(session.aio)
            except DockerCCError:
                state = {}
            row = {"name": name, "current": name == STATE.current}
            row.update(session_row(session.aio, state))
            rows.append(row)
        return rows

    def _pool(self) -> MagicOutput:
        """The containers of the shared registry (every process's), read now."""
        pool = STATE.pool
        title = pool_title(pool.aio)
        note = ""
        try:
            rows = snapshot.pool_containers(pool.aio)
        except DockerCCError as exc:
            rows, note = [], str(exc)
        columns = (*POOL_COLUMNS, "heartbeat", "age", "warm")
        html = render.table_html(rows, columns, title=title, empty="no containers")
        md = render.table_markdown(rows, columns, title=title, empty="no containers")
        if note:
            html += f'<div style="color:#c62828">{render.esc(note)}</div>'
            md += f"\n\n*{note}*"
        return MagicOutput(rows, {"text/html": html, "text/markdown": md},
                           f"{title}\n{json.dumps(rows, default=str, indent=1)}"
                           + (f"\n{note}" if note else ""))

    def _sessions(self) -> MagicOutput:
        rows = self._rows()
        title = f"dockercc sessions (current: {STATE.current})"
        return MagicOutput(rows, {
            "text/html": render.table_html(rows, title=title, empty="no sessions yet"),
            "text/markdown": render.table_markdown(rows, title=title, empty="no sessions yet"),
        }, json.dumps(rows, default=str, indent=1))

    def _status(self) -> MagicOutput:
        rows = [r for r in self._rows() if r["current"]]
        pool = STATE.pool
        summary: dict[str, Any]
        try:
            containers = snapshot.pool_containers(pool.aio)
            summary = {"containers": len(containers),
                       "busy": sum(1 for c in containers if c["state"] == "busy"),
                       "warm": sum(1 for c in containers if c["state"] == "warm")}
        except DockerCCError as exc:
            summary = {"error": str(exc)}
        try:
            budgets = snapshot.budgets(pool.aio)
        except DockerCCError:
            budgets = []
        summary.update({f"budget {b['scope']}": f"${b['spent_usd']:.4f} of "
                        f"${b['limit_usd']:.4f}" for b in budgets})
        line = (f"pool: redis {pool.aio.transport.url}, image {pool.config.image}, "
                + ", ".join(f"{k} {v}" for k, v in summary.items()))
        title = f"current session: {STATE.current}"
        empty = f"no session {STATE.current!r} yet: the next prompt starts it"
        data = {"current": STATE.current, "session": rows[0] if rows else None, "pool": summary}
        return MagicOutput(data, {
            "text/html": render.table_html(rows, title=title, empty=empty)
            + f"<div>{render.esc(line)}</div>",
            "text/markdown": render.table_markdown(rows, title=title, empty=empty)
            + f"\n\n{line}",
        }, f"{title}\n{json.dumps(rows[0] if rows else None, default=str)}\n{line}")

    def _history(self, name: str | None) -> MagicOutput:
        session = STATE.session(name)
        entries = session.history()
        rows = [{"turn": e.get("turn"), "prompt": _short(e.get("prompt")),
                 "answer": _short(e.get("text")),
                 "tools": ", ".join(str(t.get("name")) for t in e.get("tool_calls") or []),
                 "outcome": e.get("subtype"),
                 "cost": f"${e['cost_usd']:.4f}" if isinstance(e.get("cost_usd"), int | float)
                 else None} for e in entries]
        title = f"history of {name or STATE.current} ({session.id})"
        return MagicOutput(entries, {
            "text/html": render.table_html(rows, title=title, empty="no turns yet"),
            "text/markdown": render.table_markdown(rows, title=title, empty="no turns yet"),
        }, json.dumps(entries, ensure_ascii=False, default=str, indent=1))

    def _files(self, path: str) -> MagicOutput:
        session = STATE.session(None)
        entries = session.files.list(path)
        rows = [{"name": e.name + ("/" if e.type == "dir" else ""), "type": e.type,
                 "size": _size(e.size) if e.type == "file" else "",
                 "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.mtime))}
                for e in entries]
        title = f"/workspace/{path}".rstrip("/") + f" of {STATE.current} ({session.id})"
        data = [e.__dict__ for e in entries]
        return MagicOutput(data, {
            "text/html": render.table_html(rows, title=title, empty="empty"),
            "text/markdown": render.table_markdown(rows, title=title, empty="empty"),
        }, json.dumps(data, default=str, indent=1))

    def _transfer(self, name: str, args: list[str]) -> None:
        import os

        session = STATE.session(None)
        if name == "download":
            remote = args[0]
            local = args[1] if len(args) > 1 else os.path.basename(remote.rstrip("/")) or "workspace"
            n = session.files.download(remote, local)
            print(f"dockercc: downloaded {remote} to {local} ({_size(n)})")
        else:
            local = args[0]
            remote = args[1] if len(args) > 1 else os.path.basename(local.rstrip("/"))
            n = session.files.upload(local, remote)
            print(f"dockercc: uploaded {local} to /workspace/{remote} ({_size(n)})")

    def _config(self) -> MagicOutput:
        import yaml

        config = STATE.pool.config if STATE._pool is not None else _resolved(STATE.config)
        data = config.redacted_dump()
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return MagicOutput(data, {
            "text/html": f'<pre class="dockercc-config">{render.esc(text)}</pre>',
            "text/markdown": f"```yaml\n{text}```",
        }, text)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _pool_of(session: Session) -> Pool:
    """The sync Pool whose async core runs ``session``."""
    from ..sync import _open_pools

    for pool in list(_open_pools):
        if pool.aio is session.aio.pool:
            return pool
    raise TypeError("pass pool= too: the session's Pool is not open")


def _resolved(config: ConfigLike) -> Any:
    from ..config import load_config

    return load_config(config)


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
