"""Only the storage layer talks to Redis: no module outside ``dockercc/storage`` (and the
runner inside the container, ``dockercc/agent``, whose reasons are in
``dockercc/storage/__init__.py``) imports ``redis`` or sends a Redis command. See
docs/architecture.md.

Read from the source with :mod:`ast`, like tests/test_layers.py: an import anywhere (module
level, inside a function, under ``if TYPE_CHECKING:``) counts, and so does a call of a method
that is a Redis command (redis-py's own list of them, from ``redis.asyncio.Redis``) or of the
raw client behind the storage layer's connection.
"""

from __future__ import annotations

import ast
from pathlib import Path

import redis.asyncio
from redis.asyncio.client import Pipeline

PACKAGE = Path(__file__).resolve().parent.parent / "dockercc"
ALLOWED = ("storage", "agent")
"""Top-level parts of the package that may talk to Redis."""

# redis-py method names that are also ordinary names elsewhere (``dict.get``, ``path.unlink``,
# ``response.json``, ``self.acl.restore``): flagged only on something that looks like a Redis
# client (see _CLIENTISH)
_COMMON = frozenset({
    "get", "set", "delete", "keys", "exists", "close", "aclose", "ping", "type", "time", "info",
    "echo", "lock", "sort", "move", "dump", "append", "copy", "rename", "client", "load", "json",
    "unlink", "digest", "restore", "select", "save", "wait", "sync", "reset", "execute",
    "initialize", "object", "hello", "auth", "role", "monitor", "readonly", "quit", "command",
    "config_get", "config_set", "watch", "unwatch", "connection_pool", "from_url", "from_pool",
    "get_encoder", "get_connection_kwargs", "response_callbacks", "set_response_callback",
    "single_connection_client", "memory_stats", "lcs", "failover", "shutdown", "transaction",
    "publish", "scan", "expire", "persist", "touch", "stralgo", "module_list",
    "auto_close_connection_pool", "connection", "ft", "ts", "bf", "cf", "cms", "tdigest", "topk",
    "search", "vset", "tag", "discard",
})
# of those, the ones that are Redis commands on something called like a client (``r.delete``)
_CLIENT_COMMANDS = frozenset({"delete", "set", "exists", "keys", "unlink", "rename", "persist",
                              "touch", "sort", "append", "copy", "dump", "restore", "watch",
                              "expire", "scan", "type", "publish"})
# always a Redis thing, whatever the receiver is called
_ALWAYS = frozenset({"register_script", "eval", "evalsha", "pipeline", "pubsub",
                     "execute_command", "new_client"})
REDIS_COMMANDS = frozenset(
    n for cls in (redis.asyncio.Redis, Pipeline) for n in dir(cls)
    if not n.startswith("_") and not n.isupper()) - _COMMON | _ALWAYS
_CLIENTISH = ("client", "r", "redis", "pipe", "pipeline", "conn", "aioredis")


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _name(node.func)
    return ""


def violations(source: str) -> list[tuple[int, str]]:
    """Where ``source`` imports redis or reaches Redis past the storage layer."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, f"import {a.name}") for a in node.names
                    if a.name.split(".")[0] == "redis"]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module \
                and node.module.split(".")[0] == "redis":
            out.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Attribute):
            receiver = _name(node.value)
            if node.attr == "client" and receiver.endswith("transport"):
                out.append((node.lineno, f"{ast.unparse(node)} (the raw client)"))
            elif node.attr in REDIS_COMMANDS or (
                    node.attr in _CLIENT_COMMANDS and receiver in _CLIENTISH):
                if receiver not in ("self", "cls", "super") or node.attr in _ALWAYS:
                    out.append((node.lineno, ast.unparse(node)))
    return out


def _modules() -> dict[str, Path]:
    return {str(p.relative_to(PACKAGE)): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_checker_finds_raw_redis_of_every_kind() -> None:
    """The checker sees imports at any level, commands on clients and pipelines, scripts,
    and the transport's raw client (else the check below could pass on nothing)."""
    src = (
        "import redis.asyncio as aioredis\n"
        "def f(pool, r, pipe):\n"
        "    from redis.exceptions import RedisError\n"
        "    pool.transport.client.hgetall('k')\n"
        "    r.hset('k', 'f', 'v')\n"
        "    pipe.zadd('z', {})\n"
        "    s = r.register_script('return 1')\n"
        "    x = pool.transport.new_client()\n"
        "    r.delete('k')\n"
    )
    found = {line for line, _ in violations(src)}
    assert found == {1, 3, 4, 5, 6, 7, 8, 9}, violations(src)
    # ordinary code is not Redis
    assert violations("d = {}\nd.get('a')\npath.unlink()\nself.acl.restore(x)\n") == []
    # and the runner, which keeps its own Redis code, is seen as talking to Redis
    runner = (PACKAGE / "agent" / "runner.py").read_text()
    assert len(violations(runner)) > 10


def test_nothing_outside_the_storage_layer_talks_to_redis() -> None:
    bad = [f"dockercc/{rel}:{line}: {what}"
           for rel, path in _modules().items() if rel.split("/")[0] not in ALLOWED
           for line, what in violations(path.read_text())]
    assert not bad, ("Redis reached outside dockercc/storage (add a method to a store "
                     "there):\n" + "\n".join(bad))


def test_every_key_is_built_by_the_key_builders() -> None:
    """No module outside ``protocol/keys.py`` spells a key of the protocol by hand (an
    f-string with the prefix and a key's fixed part)."""
    fixed = ("pool:", "sessions", "claude_sessions", "budget:", "cron:", "channel:", ":state",
             ":input", ":output", ":history", ":transcript", ":mcp:")
    bad = []
    for rel, path in _modules().items():
        if rel in ("protocol/keys.py",) or rel.startswith("agent/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values
                               if isinstance(v, ast.Constant) and isinstance(v.value, str))
                names = {_name(v.value) for v in node.values if isinstance(v, ast.FormattedValue)}
                if any(n.endswith("prefix") for n in names) and any(
                        text.startswith(f) or f in text for f in fixed):
                    bad.append(f"dockercc/{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "keys built by hand:\n" + "\n".join(bad)
