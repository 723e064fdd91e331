"""The package's layers hold: dockercc's import graph has no cycle, and the core never
imports its faces (``dockercc.jupyter``, ``dockercc.cli``). See docs/architecture.md.

The graph is read from the source with :mod:`ast` rather than with grimp / import-linter:
those see every import alike, while the rules here tell a module-level import from one made
inside a function and from one under ``if TYPE_CHECKING:``, and the check is a few lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dockercc"
FACES = ("dockercc.jupyter", "dockercc.cli")
# the package itself is the front door, not the core: IPython's `%load_ext dockercc` needs
# its load_ipython_extension, which hands over to dockercc.jupyter on call
NOT_CORE = ("dockercc",)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    module_level: bool  # run when the source is imported (not inside a function)
    type_checking: bool  # under `if TYPE_CHECKING:` (never run)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _owner(name: str) -> str | None:
    """The dockercc module ``name`` is, or is an attribute of."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(nodes: list[ast.stmt], *, top: bool, tc: bool) -> Iterator[tuple[ast.stmt, bool, bool]]:
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, top, tc
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(node.body, top=False, tc=tc)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, top=top, tc=True)
            yield from _walk(node.orelse, top=top, tc=tc)
        else:  # class bodies, if / try / with / for blocks run with their scope
            for field in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, field, None)
                if isinstance(block, list):
                    yield from _walk(block, top=top, tc=tc)


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    tree = ast.parse(path.read_text(), str(path))
    for node, top, tc in _walk(tree.body, top=True, tc=False):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        for target in targets:
            owner = _owner(target) if target.split(".")[0] == "dockercc" else None
            if owner is not None and owner != name:
                out.append(Import(name, owner, node.lineno, top, tc))
    return out


IMPORTS = [i for name in MODULES for i in imports_of(name)]


def graph(*, lazy: bool) -> dict[str, set[str]]:
    """Who imports whom at run time: module level only, or also inside functions. Importing
    ``a.b.c`` runs ``a`` and ``a.b`` too (unless the importer is inside them)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for i in IMPORTS:
        if i.type_checking or not (i.module_level or lazy):
            continue
        parts = i.target.split(".")
        for n in range(1, len(parts) + 1):
            target = ".".join(parts[:n])
            if target != i.source and not i.source.startswith(target + "."):
                edges[i.source].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_imports_of_every_kind() -> None:
    """The reader finds module-level, lazy and TYPE_CHECKING imports, relative and absolute
    (else the checks below could pass on an empty graph)."""
    sync = {(i.target, i.module_level, i.type_checking) for i in imports_of("dockercc.sync")}
    assert ("dockercc.client", True, False) in sync
    files = {(i.target, i.module_level, i.type_checking) for i in imports_of("dockercc.files")}
    assert ("dockercc.session", True, True) in files  # under TYPE_CHECKING
    assert ("dockercc.pool.backend", False, False) in files  # inside a function
    assert len(MODULES) > 50 and len(IMPORTS) > 300
    # a cycle is found when there is one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-lazy-imports"])
def test_the_import_graph_has_no_cycle(lazy: bool) -> None:
    """No cycle among the modules, counting imports made inside functions too: a lazy import
    that closes a cycle hides a tangle; move what both sides need down a layer instead."""
    assert cycles(graph(lazy=lazy)) == []


def test_the_core_never_imports_its_faces() -> None:
    """No module outside dockercc.jupyter / dockercc.cli imports them, not even lazily or for
    type checking: the faces call the public API, the core knows nothing of them."""
    def in_face(name: str) -> bool:
        return any(name == f or name.startswith(f + ".") for f in FACES)

    upward = [f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS
              if in_face(i.target) and not in_face(i.source) and i.source not in NOT_CORE]
    assert upward == []
    # the face is imported by the front door only, and on call
    door = [i for i in IMPORTS if i.source == "dockercc" and in_face(i.target)]
    assert door and not any(i.module_level for i in door)


def test_the_builtins_get_a_narrow_context_not_the_pool() -> None:
    """The built-in tools see their pool only through ``BuiltinHost`` (built once by
    ``PoolBuiltins``), and ``AsyncPool.__init__`` builds no cron or channel machinery."""
    import inspect

    from dockercc.builtins import BuiltinHost, PoolBuiltins, ToolContext
    from dockercc.client import AsyncPool

    assert set(ToolContext.__dataclass_fields__) == {"host", "session"}
    init = inspect.getsource(AsyncPool.__init__)
    assert "CronScheduler(" not in init and "ChannelRegistry(" not in init
    assert "PoolBuiltins.for_pool(self)" in init
    pool = AsyncPool({"redis": {"url": "redis://127.0.0.1:1/0"}})
    assert isinstance(pool.builtins, PoolBuiltins) and isinstance(pool.builtins.host, BuiltinHost)
    host = pool.builtins.host
    assert not any(value is pool for value in vars(host).values())
    assert pool.cron is pool.builtins.cron is host.cron
    assert pool.channels is pool.builtins.channels is host.channels
    assert host.tenant == pool.tenant and host.owner == pool.containers.owner
