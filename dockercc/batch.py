"""Scripted experiments at scale: ``pool.map`` runs many prompts, a fresh conversation each.

One module on purpose (~790 lines): ``pool.map``'s items, scheduler, retries, progress and
resumable results are one run's job (``MapRun``).

::

    async with AsyncPool() as pool:
        async for r in pool.map(prompts, concurrency=4):   # completion order
            print(r.index, r.text)
        results = await pool.map(prompts, name="exp1").gather()   # input order

    with Pool() as pool:
        results = pool.map(prompts, name="exp1", budget_usd=2.0)   # sync: gathered
        df = results.to_pandas()

An item is a string, a dict of template fields (``template="Classify: {review}"``), or a
``(prompt, options)`` pair whose options (a :class:`~dockercc.ClaudeAgentOptions` or a dict of
its fields) are laid over the run's. Everything is checked before anything starts
(:class:`~dockercc.errors.InvalidPrompt`, :class:`~dockercc.types.OptionsError`,
:class:`~dockercc.errors.ConfigError`).

Isolation (``reuse``): by default each worker keeps one session (container) open and runs
each item in a new conversation in it (the CLI's ``/clear``): the model sees no other item,
but a worker's items share its workspace and CLI process; ``reuse=False`` opens a new session
(container) per item. See docs/experiments.md.

Reliability: a transient failure (:class:`~dockercc.errors.ContainerLost`, a startup
timeout, a turn timeout, the API's 429 / 5xx) is tried again with exponential backoff, up to
``retries`` more times; any other failure of an item is recorded in its result (``error``),
and failures of the deployment itself (Redis, Docker, the image) end the run with their
error. With ``name=``, every finished item is kept in Redis (``{prefix}run:<name>:items``,
index -> result and a hash of the item, expiring ``retention_s`` after the run's last write,
7 days by default), and calling map again with the same name and items runs only what is
missing: an item whose prompt or options changed is run again, never skipped. ``budget_usd``
bounds the run's total cost (items kept from earlier calls count): when it is crossed no new
item starts, the rest come back ``status="skipped"`` and :attr:`MapResults.stopped` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (
    AgentError,
    BudgetExceeded,
    ConfigError,
    ContainerLost,
    DockerCCError,
    InvalidPrompt,
    StartupTimeout,
)
from .protocol.keys import validate_id

if TYPE_CHECKING:  # pragma: no cover
    from .client import AsyncPool
    from .events import Result
    from .session import SessionOptions

__all__ = ["ItemResult", "MapResults", "MapRun", "MapProgress", "DEFAULT_RETENTION_S",
           "is_transient"]

log = logging.getLogger("dockercc.batch")

DEFAULT_RETENTION_S = 7 * 86400
"""How long a named run's finished items stay in Redis after its last write."""
DEFAULT_TIMEOUT_S = 600.0
"""Per-attempt limit on one item's turn."""
BACKOFF_CAP_S = 30.0
ProgressLike = bool | str | Callable[["MapProgress"], Any] | None


# -- results ---------------------------------------------------------------------------------


@dataclass
class ItemResult:
    """One item's outcome. ``status``: ``"ok"``, ``"failed"`` (``error`` / ``error_type``
    say why) or ``"skipped"`` (the budget stopped the run before it started). ``resumed``:
    kept from an earlier call of the same named run, not run again."""

    index: int
    prompt: str
    status: str = "ok"
    text: str = ""
    structured_output: Any = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_ms: int | None = None
    session_id: str | None = None
    claude_session_id: str | None = None
    error: str | None = None
    error_type: str | None = None
    attempts: int = 0
    resumed: bool = False
    fields: dict[str, Any] | None = None
    item_hash: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_record(self) -> dict[str, Any]:
        """A plain dict (JSON-able when the structured output is)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ItemResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


COLUMNS = ("index", "status", "prompt", "text", "structured_output", "cost_usd",
           "input_tokens", "output_tokens", "duration_ms", "attempts", "resumed",
           "session_id", "claude_session_id", "error_type", "error", "fields")


class MapResults(Sequence[ItemResult]):
    """The results of a map, in input order (a sequence of :class:`ItemResult`). In a
    notebook they display as a table (registered by :mod:`dockercc.jupyter`)."""

    def __init__(self, items: list[ItemResult], *, name: str | None = None,
                 stopped: str | None = None, elapsed_s: float = 0.0) -> None:
        self.items = sorted(items, key=lambda r: r.index)
        self.name = name
        #: why the run stopped early (the budget), or None when every item was tried
        self.stopped = stopped
        self.elapsed_s = elapsed_s

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: Any) -> Any:
        return self.items[i]

    def __repr__(self) -> str:
        c = self.counts()
        return (f"MapResults(name={self.name!r}, ok={c['ok']}, failed={c['failed']}, "
                f"skipped={c['skipped']}, cost_usd={self.cost_usd:.4f}"
                + (f", stopped={self.stopped!r}" if self.stopped else "") + ")")

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0, "skipped": 0, "resumed": 0}
        for r in self.items:
            out[r.status] = out.get(r.status, 0) + 1
            out["resumed"] += r.resumed
        return out

    @property
    def ok(self) -> list[ItemResult]:
        return [r for r in self.items if r.ok]

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.items if r.status == "failed"]

    @property
    def skipped(self) -> list[ItemResult]:
        return [r for r in self.items if r.status == "skipped"]

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd or 0.0 for r in self.items)

    def to_records(self, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """One dict per item, in input order (``columns`` picks and orders the keys)."""
        cols = list(columns) if columns is not None else list(COLUMNS)
        return [{c: rec.get(c) for c in cols}
                for rec in (r.to_record() for r in self.items)]

    def to_pandas(self, columns: Iterable[str] | None = None) -> Any:
        """A pandas DataFrame indexed by item (needs the ``pandas`` extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise MissingExtra("to_pandas() needs pandas: pip install 'dockercc[pandas]' "
                               "(or use to_records())") from None
        return pd.DataFrame.from_records(self.to_records(columns)).set_index("index")


class MissingExtra(DockerCCError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


# -- progress --------------------------------------------------------------------------------


@dataclass
class MapProgress:
    """A snapshot of a run for progress displays."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0
    skipped: int = 0
    resumed: int = 0
    retries: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    name: str | None = None
    stopped: str | None = None
    finished: bool = False
    _rate_done: int = field(default=0, repr=False)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate of this call's finished items (None until one is)."""
        ran = self._rate_done
        left = self.queued + self.running
        if self.finished or not left:
            return 0.0
        if not ran or self.elapsed_s <= 0:
            return None
        return left * self.elapsed_s / ran

    def line(self) -> str:
        eta = self.eta_s
        eta_s = "-" if eta is None else f"{eta:.0f}s"
        head = f"{self.name}: " if self.name else ""
        text = (f"{head}{self.done + self.failed + self.skipped}/{self.total} · done "
                f"{self.done} · failed {self.failed} · running {self.running} · queued "
                f"{self.queued} · ${self.cost_usd:.4f} · ETA {eta_s}")
        if self.resumed:
            text += f" · {self.resumed} kept from before"
        if self.stopped:
            text += f" · STOPPED: {self.stopped}"
        return text


class Reporter:
    """A progress display: ``update`` is called at most every ``interval`` s, ``close`` once."""

    interval = 0.25

    def update(self, p: MapProgress) -> None:  # pragma: no cover - interface
        pass

    def close(self, p: MapProgress) -> None:
        self.update(p)


class CallbackReporter(Reporter):
    def __init__(self, fn: Callable[[MapProgress], Any]) -> None:
        self.fn = fn

    def update(self, p: MapProgress) -> None:
        try:
            self.fn(p)
        except Exception:
            log.exception("map progress callback failed")


class RichReporter(Reporter):
    """A rich progress bar on stderr (terminals)."""

    def __init__(self, total: int, description: str = "map", console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = console or Console(stderr=True)
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            console=self.console, transient=False)
        self.task = self.bar.add_task(description, total=total, info="")
        self.bar.start()

    def update(self, p: MapProgress) -> None:
        eta = p.eta_s
        info = (f"done {p.done} · failed {p.failed} · running {p.running} · queued "
                f"{p.queued} · ${p.cost_usd:.4f} · ETA {'-' if eta is None else f'{eta:.0f}s'}")
        self.bar.update(self.task, completed=p.done + p.failed + p.skipped, info=info)

    def close(self, p: MapProgress) -> None:
        self.update(p)
        self.bar.stop()
        if p.stopped:
            self.console.print(f"[yellow]stopped:[/yellow] {p.stopped}", highlight=False,
                               markup=True)


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ != "TerminalInteractiveShell"


NOTEBOOK_REPORTER: Callable[[int, str | None], Reporter] | None = None
"""The notebook bar, set by :mod:`dockercc.jupyter` when it is imported (``%load_ext
dockercc``, ``OfflineStack``): the core never imports the notebook package."""


def make_reporter(progress: ProgressLike, total: int, name: str | None) -> Reporter | None:
    """``True``/``"auto"``: a bar in a notebook (ipywidgets, once :mod:`dockercc.jupyter`
    is imported), else in a terminal or a notebook without it (rich), else nothing;
    ``"notebook"`` / ``"rich"``; ``False`` / ``None`` / ``"none"``: silent; a callable gets
    each :class:`MapProgress`."""
    if progress is None or progress is False or progress == "none":
        return None
    if callable(progress) and not isinstance(progress, str | bool):
        return CallbackReporter(progress)
    mode = progress
    if progress is True or progress == "auto":
        notebook = _in_notebook()
        mode = ("notebook" if notebook and NOTEBOOK_REPORTER is not None
                else "rich" if notebook or sys.stderr.isatty() else "none")
    if mode == "notebook":
        if NOTEBOOK_REPORTER is None:
            raise ConfigError("progress='notebook' needs dockercc.jupyter: `import "
                              "dockercc.jupyter` or `%load_ext dockercc` first")
        return NOTEBOOK_REPORTER(total, name)
    if mode == "rich":
        return RichReporter(total, name or "map")
    if mode == "none":
        return None
    raise ConfigError(f"progress={progress!r}: use True/'auto', 'notebook', 'rich', False "
                      "or a callable taking a MapProgress")


# -- items -----------------------------------------------------------------------------------


@dataclass
class MapItem:
    index: int
    prompt: str
    options: SessionOptions
    fields: dict[str, Any] | None
    hash: str
    #: items with the same key can share a session (reuse=True)
    okey: str = ""


def is_transient(exc: BaseException) -> bool:
    """Worth another try: the container was lost or never started, the turn timed out, or
    the API answered 429 / 5xx (overloaded)."""
    if isinstance(exc, ContainerLost | StartupTimeout | TimeoutError):
        return True
    if isinstance(exc, AgentError) and not isinstance(exc, BudgetExceeded):
        status = getattr(exc.result, "api_error_status", None)
        try:
            code = int(status) if status is not None else 0
        except (TypeError, ValueError):
            code = 0
        return code == 429 or 500 <= code < 600
    return False


def _options_digest(o: SessionOptions) -> Any:
    data = o.model_dump(mode="json", exclude={"tools", "env", "mcp_servers", "can_use_tool",
                                              "hooks"}, fallback=repr)
    data["tools"] = sorted(getattr(t, "name", repr(t)) for t in o.tools)
    return data


def item_hash(prompt: str, options: SessionOptions) -> str:
    blob = json.dumps({"prompt": prompt, "options": _options_digest(options)},
                      sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def options_key(options: SessionOptions) -> str:
    """Equal for options a session can serve both of (what its container and CLI started
    with); the tools, hooks and callbacks count by identity."""
    blob = json.dumps(_options_digest(options), sort_keys=True, default=repr)
    ids = [id(options.can_use_tool), id(options.hooks), *map(id, options.tools),
           json.dumps(options.env, sort_keys=True, default=repr),
           json.dumps(options.mcp_servers, sort_keys=True, default=repr)]
    return hashlib.sha256((blob + repr(ids)).encode()).hexdigest()[:16]


def _describe(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def prepare_items(pool: AsyncPool, prompts: Any, *, options: Any, agent: str,
                  template: str | None) -> list[MapItem]:
    """Check every item and resolve its options; raise before anything starts."""
    from .session import session_options
    from .types import ClaudeAgentOptions, OptionsError

    if isinstance(prompts, str | bytes) or not isinstance(prompts, Iterable):
        raise InvalidPrompt(f"prompts must be a list of items, got {type(prompts).__name__}"
                            " (wrap a single prompt in a list)")
    if isinstance(options, str):
        agent, options = options, None
    validate_id(agent, "agent name")
    pool.config.agent(agent)  # ConfigError naming the configured agents
    if options is not None and not isinstance(options, ClaudeAgentOptions):
        raise OptionsError("options", "expected a dockercc.ClaudeAgentOptions or the name of a "
                           f"configured agent, got {type(options).__name__}", options)
    if template is not None and (not isinstance(template, str) or not template.strip()):
        raise InvalidPrompt("template must be a non-empty string with {field} placeholders")
    base = session_options(agent, options)
    okeys: dict[int, str] = {}
    items: list[MapItem] = []
    for i, raw in enumerate(prompts):
        item_opts: Any = None
        value = raw
        if isinstance(raw, tuple | list):
            if len(raw) != 2:
                raise InvalidPrompt(f"item {i}: a pair must be (prompt, options), got "
                                    f"{len(raw)} elements")
            value, item_opts = raw
        fields: dict[str, Any] | None = None
        if isinstance(value, Mapping):
            if template is None:
                raise InvalidPrompt(f"item {i} is a dict of template fields but no template= "
                                    "was given (e.g. template='Classify: {review}')")
            fields = dict(value)
            try:
                prompt = template.format_map(fields)
            except KeyError as exc:
                raise InvalidPrompt(f"item {i}: the template needs field {exc.args[0]!r}, "
                                    f"which the item lacks (it has {sorted(fields)})") from None
            except (ValueError, IndexError) as exc:
                raise InvalidPrompt(f"item {i}: the template cannot be filled: {exc}") from None
        elif isinstance(value, str):
            prompt = value
        else:
            raise InvalidPrompt(f"item {i} is a {type(value).__name__} ({_describe(value)}): "
                                "expected a string, a dict of template fields or a "
                                "(prompt, options) pair")
        if not prompt.strip():
            raise InvalidPrompt(f"item {i}: the prompt is empty")
        if len(prompt.encode()) > pool.max_prompt_bytes:
            raise InvalidPrompt(f"item {i}: the prompt is larger than max_prompt_bytes "
                                f"({pool.max_prompt_bytes})")
        if item_opts is None:
            opts = base
        else:
            try:
                if isinstance(item_opts, Mapping):
                    merged = dataclasses.replace(options or ClaudeAgentOptions(), **item_opts)
                elif isinstance(item_opts, ClaudeAgentOptions):
                    merged = item_opts
                else:
                    raise OptionsError("options", "expected a ClaudeAgentOptions or a dict of "
                                       f"its fields, got {type(item_opts).__name__}", item_opts)
                opts = session_options(agent, merged)
            except TypeError as exc:  # an unknown field name in the dict
                raise OptionsError(f"items[{i}].options", str(exc)) from None
            except OptionsError as exc:
                raise OptionsError(f"items[{i}].{exc.field}",
                                   str(exc).split(": ", 1)[-1]) from None
        okey = okeys.get(id(opts))
        if okey is None:
            okey = okeys[id(opts)] = options_key(opts)
        items.append(MapItem(i, prompt, opts, fields, item_hash(prompt, opts), okey))
    return items


# -- the run ---------------------------------------------------------------------------------

_END = object()


class MapRun:
    """One ``pool.map`` call: iterate it (``async for r in run``) for results in completion
    order, or ``await run.gather()`` (or just ``await run``) for :class:`MapResults` in
    input order. It starts when first iterated or gathered, once."""

    def __init__(self, pool: AsyncPool, items: list[MapItem], *, name: str | None,
                 concurrency: int, retries: int, budget_usd: float | None, timeout: float,
                 progress: ProgressLike, retention_s: int, keep_sessions: bool,
                 backoff_s: float, reuse: bool = True) -> None:
        self.pool = pool
        self.items = items
        self.name = name
        self.concurrency = concurrency
        self.retries = retries
        self.budget_usd = budget_usd
        self.timeout = timeout
        self.retention_s = retention_s
        self.keep_sessions = keep_sessions
        self.backoff_s = backoff_s
        self.reuse = reuse
        self._progress_arg = progress
        self.progress = MapProgress(total=len(items), queued=len(items), name=name)
        self.results: list[ItemResult] = []
        self._started = False
        self._t0 = 0.0
        self._reporter: Reporter | None = None
        self._last_report = 0.0
        self._engine_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"MapRun({self.progress.line()!r})"

    # -- consuming ---------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ItemResult]:
        return self._iterate()

    async def gather(self) -> MapResults:
        """Run to the end; the results in input order."""
        async for _ in self._iterate():
            pass
        return self.result()

    def __await__(self) -> Generator[Any, None, MapResults]:
        return self.gather().__await__()

    def result(self) -> MapResults:
        """What has finished so far, in input order."""
        return MapResults(list(self.results), name=self.name, stopped=self.progress.stopped,
                          elapsed_s=self.progress.elapsed_s)

    async def _iterate(self) -> AsyncIterator[ItemResult]:
        if self._started:
            raise RuntimeError("a MapRun runs once: call pool.map(...) again (with the same "
                               "name= it resumes)")
        self._started = True
        out: asyncio.Queue[Any] = asyncio.Queue()
        engine = self._engine_task = asyncio.create_task(self._engine(out))
        self.pool._map_runs.add(self)
        try:
            while True:
                got = await out.get()
                if got is _END:
                    break
                yield got
            await engine  # its exception, if any
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the run: items in flight are abandoned (their containers removed; with a
        name, calling map again runs them), nothing new starts. Breaking out of ``async for``
        does not stop a run by itself: call this (closing the pool does too)."""
        engine = self._engine_task
        if engine is not None and not engine.done():
            engine.cancel()
            with contextlib.suppress(BaseException):
                await engine
        if self._closing:
            await asyncio.wait(set(self._closing))
        self.pool._map_runs.discard(self)

    # -- running -----------------------------------------------------------------------------

    def _report(self, *, final: bool = False) -> None:
        p = self.progress
        p.elapsed_s = time.monotonic() - self._t0
        if self._reporter is None:
            return
        now = time.monotonic()
        if final:
            p.finished = True
            with contextlib.suppress(Exception):
                self._reporter.close(p)
            return
        if now - self._last_report >= self._reporter.interval:
            self._last_report = now
            with contextlib.suppress(Exception):
                self._reporter.update(p)

    def _emit(self, out: asyncio.Queue[Any], r: ItemResult) -> None:
        self.results.append(r)
        p = self.progress
        if r.status == "ok":
            p.done += 1
        elif r.status == "failed":
            p.failed += 1
        else:
            p.skipped += 1
        p.cost_usd += r.cost_usd or 0.0
        out.put_nowait(r)
        self._report()

    async def _engine(self, out: asyncio.Queue[Any]) -> None:
        p = self.progress
        self._t0 = time.monotonic()
        try:
            await self.pool.start()
            saved = await self.pool.transport.run_items(self.name) if self.name else {}
            self._reporter = make_reporter(self._progress_arg, len(self.items), self.name)
            pending: deque[MapItem] = deque()
            changed = 0
            for item in self.items:
                rec = saved.get(item.index)
                if rec is not None and rec.get("item_hash") == item.hash:
                    r = ItemResult.from_record(rec)
                    r.resumed = True
                    p.queued -= 1
                    p.resumed += 1
                    self._emit(out, r)
                else:
                    changed += rec is not None
                    pending.append(item)
            if changed:
                log.warning("run %s: %d item(s) changed since they were kept: running them "
                            "again", self.name, changed)
            workers = [asyncio.create_task(self._worker(pending, out))
                       for _ in range(min(self.concurrency, len(pending)))]
            try:
                # (asyncio.wait: stopping the run cancels each worker once, below; a second
                # cancel would cut short the clean-up of a claim in flight, and its container
                # could write into a session already deleted)
                if workers:
                    done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                    for w in done:
                        w.result()
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        finally:
            self._report(final=True)
            out.put_nowait(_END)

    def _over_budget(self) -> bool:
        if self.budget_usd is None or self.progress.stopped:
            return self.progress.stopped is not None
        if self.progress.cost_usd >= self.budget_usd:
            self._stop(f"budget_usd {self.budget_usd:g} reached (${self.progress.cost_usd:.4f} "
                       "spent by this run): no new items started; raise budget_usd and call "
                       "again with the same name to finish")
        return self.progress.stopped is not None

    def _stop(self, why: str) -> None:
        if self.progress.stopped is None:
            self.progress.stopped = why
            log.warning("run %s stopped: %s", self.name or "(unnamed)", why)

    @staticmethod
    def _take(pending: deque[MapItem], okey: str | None) -> MapItem:
        """The next item, preferring one the worker's open session can serve (its options)."""
        if okey is not None and pending[0].okey != okey:
            for i, item in enumerate(pending):
                if item.okey == okey:
                    del pending[i]
                    return item
        return pending.popleft()

    async def _worker(self, pending: deque[MapItem], out: asyncio.Queue[Any]) -> None:
        p = self.progress
        slot = _Slot()
        try:
            while pending:
                if self._over_budget():
                    while pending:
                        item = pending.popleft()
                        p.queued -= 1
                        self._emit(out, ItemResult(index=item.index, prompt=item.prompt,
                                                   status="skipped", fields=item.fields,
                                                   error=p.stopped,
                                                   error_type="BudgetExceeded",
                                                   item_hash=item.hash))
                    return
                item = self._take(pending, slot.okey if slot.session is not None else None)
                p.queued -= 1
                p.running += 1
                self._report()
                try:
                    r = await self._run_item(item, slot)
                finally:
                    p.running -= 1
                if r.status == "ok":
                    p._rate_done += 1
                    if self.name:
                        await self.pool.transport.save_run_item(
                            self.name, item.index, r.to_record(), retention_s=self.retention_s)
                self._emit(out, r)
        finally:
            await self._drop(slot)

    async def _run_item(self, item: MapItem, slot: _Slot | None = None) -> ItemResult:
        slot = slot if slot is not None else _Slot()
        attempt = 0
        while True:
            attempt += 1
            session_id: str | None = None
            try:
                result, session_id = await self._attempt(item, slot)
                return self._from_result(item, result, session_id, attempt)
            except BudgetExceeded as exc:  # the config's budget (pool or agent)
                if exc.scope != "session":
                    self._stop(str(exc))
                return self._failed(item, exc, session_id, attempt)
            except (AgentError, InvalidPrompt) as exc:
                if is_transient(exc) and attempt <= self.retries:
                    await self._backoff(item, attempt, exc)
                    continue
                return self._failed(item, exc, getattr(exc, "session_id", None), attempt)
            except (ContainerLost, StartupTimeout, TimeoutError) as exc:
                if attempt <= self.retries:
                    await self._backoff(item, attempt, exc)
                    continue
                return self._failed(item, exc, None, attempt)

    async def _backoff(self, item: MapItem, attempt: int, exc: BaseException) -> None:
        self.progress.retries += 1
        delay = min(BACKOFF_CAP_S, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random())
        log.info("item %d: %s (%s); trying again in %.1fs (attempt %d of %d)", item.index,
                 type(exc).__name__, exc, delay, attempt + 1, self.retries + 1)
        await asyncio.sleep(delay)

    async def _attempt(self, item: MapItem, slot: _Slot) -> tuple[Result, str]:
        """One try of an item. ``reuse``: in the worker's open session (its options), in a
        fresh conversation (the CLI's ``/clear``); else, or when that session cannot serve
        it, in a new session. A session whose turn did not end cleanly (lost, timed out,
        cancelled) is closed: the next try gets a new one."""
        if slot.session is not None and (not self.reuse or slot.okey != item.okey):
            await self._drop(slot)
        clean = False
        try:
            if slot.session is not None:
                s = slot.session
                before = s.claude_session_id
                # (unchecked: /clear answers no schema; it is no item's turn)
                cleared = await s.ask("/clear", timeout=self.timeout, check=False)
                if not cleared.ok or not cleared.session_id or cleared.session_id == before:
                    # the CLI did not start a new conversation: never run an item on top of
                    # another's; a new session instead
                    log.warning("session %s: /clear did not start a new conversation; "
                                "opening a new session", s.id)
                    await self._drop(slot)
            if slot.session is None:
                slot.session = self.pool._open(item.options.model_copy())
                slot.okey = item.okey
            s = slot.session
            try:
                result = await s.ask(item.prompt, timeout=self.timeout)
            except AgentError as exc:
                exc.session_id = s.id  # type: ignore[attr-defined]
                clean = exc.result is not None  # the turn ended: the CLI takes the next one
                raise
            clean = True
            return result, s.id
        finally:
            if not clean or not self.reuse:
                await self._drop(slot)

    async def _drop(self, slot: _Slot) -> None:
        """Close the slot's session (shielded: a cancelled run still removes its container;
        aclose waits)."""
        s, slot.session, slot.okey = slot.session, None, ""
        if s is None:
            return
        closing = asyncio.ensure_future(self._close(s))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        await asyncio.shield(closing)

    async def _close(self, s: Any) -> None:
        with contextlib.suppress(Exception):
            await s.close(forget=not self.keep_sessions)

    def _from_result(self, item: MapItem, result: Result, session_id: str,
                     attempts: int) -> ItemResult:
        usage = result.usage or {}
        return ItemResult(
            index=item.index, prompt=item.prompt, status="ok", text=result.text,
            structured_output=result.structured_output, cost_usd=result.cost_usd,
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            duration_ms=result.duration_ms, session_id=session_id,
            claude_session_id=result.session_id, attempts=attempts, fields=item.fields,
            item_hash=item.hash)

    def _failed(self, item: MapItem, exc: BaseException, session_id: str | None,
                attempts: int) -> ItemResult:
        result = getattr(exc, "result", None)
        cost = getattr(result, "cost_usd", None)
        return ItemResult(index=item.index, prompt=item.prompt, status="failed",
                          error=str(exc) or type(exc).__name__, error_type=type(exc).__name__,
                          cost_usd=cost if isinstance(cost, int | float) else None,
                          session_id=session_id, attempts=attempts, fields=item.fields,
                          item_hash=item.hash)


@dataclass
class _Slot:
    """A worker's open session (reuse): the options it serves."""

    session: Any = None
    okey: str = ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_run_args(pool: AsyncPool, agent: str, *, concurrency: int | None, retries: int,
                   budget_usd: float | None, timeout: float | None, retention_s: int,
                   name: str | None) -> int:
    """The run's arguments checked (ConfigError / InvalidSessionId); the concurrency."""
    cfg = pool.config.pool
    limit = min(cfg.max_total, cfg.max_per_agent)
    if concurrency is None:
        concurrency = limit
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency={concurrency!r}: use a whole number from 1 to "
                          f"{limit}", [("concurrency", concurrency, f"1..{limit}")])
    if concurrency > cfg.max_total:
        raise ConfigError(
            f"concurrency={concurrency} is above pool.maxTotal ({cfg.max_total}): the pool "
            f"never runs that many containers at once; lower concurrency or raise maxTotal",
            [("concurrency", concurrency, f"at most pool.maxTotal ({cfg.max_total})")])
    if concurrency > cfg.max_per_agent:
        raise ConfigError(
            f"concurrency={concurrency} is above pool.maxPerAgent ({cfg.max_per_agent}) for "
            f"agent {agent!r}: lower concurrency or raise maxPerAgent",
            [("concurrency", concurrency, f"at most pool.maxPerAgent ({cfg.max_per_agent})")])
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries={retries!r}: use a whole number >= 0",
                          [("retries", retries, ">= 0")])
    if budget_usd is not None:
        if (isinstance(budget_usd, bool) or not isinstance(budget_usd, int | float)
                or not math.isfinite(budget_usd) or budget_usd <= 0):
            raise ConfigError(
                f"budget_usd={budget_usd!r}: a budget must be a positive amount in USD (a "
                "budget of 0 would stop the run before its first item); pass None for none",
                [("budget_usd", budget_usd, "> 0, or None")])
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigError(f"timeout={timeout!r}: use a positive number of seconds",
                          [("timeout", timeout, "> 0")])
    if not isinstance(retention_s, int) or retention_s < 1:
        raise ConfigError(f"retention_s={retention_s!r}: use a positive number of seconds",
                          [("retention_s", retention_s, ">= 1")])
    if name is not None:
        validate_id(name, "run name")
    return concurrency


def start_map(pool: AsyncPool, prompts: Any, *, options: Any = None, agent: str = "main",
              template: str | None = None, concurrency: int | None = None, retries: int = 2,
              budget_usd: float | None = None, name: str | None = None,
              timeout: float | None = DEFAULT_TIMEOUT_S, progress: ProgressLike = True,
              retention_s: int = DEFAULT_RETENTION_S, keep_sessions: bool = False,
              backoff_s: float = 1.0, done: Mapping[int, str] | None = None,
              reuse: bool = True) -> MapRun:
    """Check everything, then return the (not yet started) :class:`MapRun`. ``done`` (index
    -> item hash, e.g. from an output file) names items finished elsewhere: those whose hash
    still matches are left out (``dockercc batch`` resumes this way)."""
    if isinstance(options, str):
        agent = options
    concurrency = check_run_args(pool, agent, concurrency=concurrency, retries=retries,
                                 budget_usd=budget_usd, timeout=timeout,
                                 retention_s=retention_s, name=name)
    items = prepare_items(pool, prompts, options=options, agent=agent, template=template)
    if done:
        items = [item for item in items if done.get(item.index) != item.hash]
    if not isinstance(reuse, bool):
        raise ConfigError(f"reuse={reuse!r}: use True (a session per worker, a new "
                          "conversation per item) or False (a new session per item)")
    if progress is not None and not isinstance(progress, bool | str) and not callable(progress):
        raise ConfigError(f"progress={progress!r}: use True/'auto', 'notebook', 'rich', False "
                          "or a callable taking a MapProgress")
    if isinstance(progress, str) and progress not in ("auto", "notebook", "rich", "none"):
        raise ConfigError(f"progress={progress!r}: use 'auto', 'notebook', 'rich' or 'none'")
    return MapRun(pool, items, name=name, concurrency=concurrency, retries=retries,
                  budget_usd=budget_usd, timeout=timeout or DEFAULT_TIMEOUT_S,
                  progress=progress, retention_s=retention_s, keep_sessions=keep_sessions,
                  backoff_s=backoff_s, reuse=reuse)
