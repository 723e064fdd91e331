"""Building a configuration: :func:`load_config`, the one entry point, and its layers
(defaults < files < environment < overrides; see :mod:`dockercc.config` for the rules).

``_Builder`` merges the layers into one raw dict, remembering for every key where it came
from and how the user spelled it, then validates it once; every problem of every layer ends
up in ONE :class:`~dockercc.errors.ConfigError` (:mod:`.problems`). The environment layer's
parser is :mod:`.environment`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import BaseModel, ValidationError

from .environment import _WELL_KNOWN_ENV, CONFIG_PATH_ENV, read_environment
from .fields import DEFAULT_REDIS_URL
from .models import LOADER, AgentConfig, DockerCCConfig
from .problems import (
    _DEFAULTS,
    _ENVIRONMENT,
    _OVERRIDES,
    _join,
    _Origin,
    _Problem,
    _Source,
    config_error,
    describe,
)
from .redaction import _redact_value
from .schema import _LEAF, _ROOT, _match_field, _Node, _node_for

SEED_SECTION = "dockerClaudeCode"

#: What :func:`load_config` builds a configuration from (what callers pass as ``config=``).
ConfigSource: TypeAlias = DockerCCConfig | str | os.PathLike[str] | Mapping[str, Any] | None

MAX_CONFIG_VALUES = 100_000
_TOO_BIG = (
    f"at most {MAX_CONFIG_VALUES} values with YAML aliases expanded, and no value that "
    "contains itself"
)


def _too_big(data: Any, budget: int = MAX_CONFIG_VALUES) -> bool:
    """Whether ``data`` holds more than ``budget`` values once shared parts are counted each
    time they appear (a YAML "billion laughs") or contains itself; stops at the budget."""
    stack, seen = [data], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return False


def _as_data(value: Any) -> Any:
    """Model instances as plain dicts (only fields that were set), containers copied."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


class _Builder:
    """Merges the layers into one raw dict, remembering where every key came from."""

    def __init__(self) -> None:
        self.merged: dict[str, Any] = {}
        self.origins: dict[tuple[Any, ...], _Origin] = {}
        self.problems: list[_Problem] = []
        self.sources: list[str] = ["defaults"]

    # -- merging

    def merge(
        self,
        target: dict[str, Any],
        data: Mapping[Any, Any],
        node: _Node,
        path: tuple[Any, ...],
        display: str,
        source: _Source,
    ) -> None:
        seen: dict[str, str] = {}
        for raw_key, value in data.items():
            key = str(raw_key)
            shown = _join(display, key)
            ckey, child = key, _LEAF
            if node.kind == "model" and node.model is not None:
                match = _match_field(node.model, key)
                if match is not None:
                    ckey, child = match[0], _node_for(match[1])
            elif node.kind == "agents":
                child = _Node("model", node.model)
            if ckey in seen and seen[ckey] != key:
                self.problems.append(
                    _Problem(
                        shown,
                        _redact_value((*path, ckey), value),
                        f"each option once (also given as {seen[ckey]!r})",
                        source.label,
                    )
                )
            seen[ckey] = key
            self.put(target, ckey, value, child, (*path, ckey), shown, source)

    def put(
        self,
        target: dict[str, Any],
        key: str,
        value: Any,
        node: _Node,
        path: tuple[Any, ...],
        display: str,
        source: _Source,
    ) -> None:
        value = _as_data(value)
        if isinstance(value, dict) and node.kind != "leaf":
            existing = target.get(key)
            if not isinstance(existing, dict):
                self._drop_origins(path)
                existing = target[key] = {}
            self.origins[path] = _Origin(display, source)
            self.merge(existing, value, node, path, display, source)
        else:
            self._drop_origins(path)
            target[key] = value
            self.origins[path] = _Origin(display, source)

    def put_path(
        self, path: tuple[str, ...], value: Any, node: _Node, display: str, source: _Source
    ) -> None:
        target = self.merged
        for i, key in enumerate(path[:-1]):
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
                self.origins.setdefault(path[: i + 1], _Origin(display, source))
            target = child
        self.put(target, path[-1], value, node, path, display, source)

    def _drop_origins(self, path: tuple[Any, ...]) -> None:
        n = len(path)
        for loc in [loc for loc in self.origins if len(loc) > n and loc[:n] == path]:
            del self.origins[loc]

    # -- layers

    def defaults(self, env: Mapping[str, str]) -> None:
        self.put_path(("agents", "main"), {}, _Node("model", AgentConfig), "agents.main", _DEFAULTS)
        self.put_path(("redis", "url"), DEFAULT_REDIS_URL, _LEAF, "redis.url", _DEFAULTS)
        for name, path in _WELL_KNOWN_ENV:
            if env.get(name):
                self.put_path(path, env[name], _LEAF, name, _ENVIRONMENT)
            elif path[0] == "credentials":
                self.put_path(path, None, _LEAF, ".".join(path), _DEFAULTS)

    def file(self, path: Path, kind: Literal["seed", "standalone", "auto"]) -> None:
        label = str(path)
        source = _Source(label)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.problems.append(_Problem(label, None, "an existing YAML file", label))
            return
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            self.problems.append(_Problem(label, None, f"a readable YAML file ({reason})", label))
            return
        self.sources.append(label)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            what = (
                ": ".join(
                    str(p)
                    for p in (getattr(exc, "context", None), getattr(exc, "problem", None))
                    if p
                )
                or "syntax error"
            )
            where = label
            if mark is not None:
                where = f"{label}:{mark.line + 1}"
                what = f"{what} at line {mark.line + 1}, column {mark.column + 1}"
            self.problems.append(
                _Problem(where, None, "valid YAML", label, f"invalid YAML: {what}")
            )
            return
        if data is None:
            return
        if not isinstance(data, Mapping):
            self.problems.append(
                _Problem(label, type(data).__name__, "a YAML mapping at the top level", label)
            )
            return
        if _too_big(data):
            self.problems.append(_Problem(label, None, _TOO_BIG, label, "a hostile document"))
            return
        if kind == "auto":
            kind = "seed" if _is_seed_shape(data) else "standalone"
        if kind == "standalone":
            self.merge(self.merged, data, _ROOT, (), "", source)
            return
        defaults = _seed_defaults(data)
        if defaults is None:
            return
        if "model" in defaults:
            self.merge(
                self.merged, {"model": defaults["model"]}, _ROOT, (), "agents.defaults", source
            )
        for key in (SEED_SECTION, "docker_claude_code"):
            if key not in defaults or defaults[key] is None:
                continue
            block = defaults[key]
            if isinstance(block, Mapping):
                self.merge(self.merged, block, _ROOT, (), f"agents.defaults.{key}", source)
            else:
                self.problems.append(
                    _Problem(
                        f"agents.defaults.{key}",
                        _redact_value((), block),
                        "a mapping of dockercc options",
                        label,
                    )
                )


    def overrides(self, *layers: Mapping[str, Any]) -> None:
        """Keyword overrides (one or more mappings, later ones win), one layer."""
        used = False
        for overrides in layers:
            if overrides and _too_big(overrides):
                self.problems.append(_Problem("(overrides)", None, _TOO_BIG, _OVERRIDES.label,
                                              "a value too big or containing itself"))
                return
            if overrides:
                self.merge(self.merged, overrides, _ROOT, (), "", _OVERRIDES)
                used = True
        if used:
            self.sources.append("keyword overrides")

    def given(self, config: DockerCCConfig) -> None:
        """A whole :class:`DockerCCConfig` as the base layer (instead of defaults, files and
        environment): every field of it, set or defaulted."""
        self.sources[:] = list(config.sources) or ["defaults"]
        source = _Source("the given DockerCCConfig")
        self.merge(self.merged, config.model_dump(by_alias=True), _ROOT, (), "", source)

    # -- validation

    def build(self) -> DockerCCConfig:
        config: DockerCCConfig | None = None
        try:
            config = DockerCCConfig.model_validate(self.merged)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self.problems.append(describe(error, self.merged, self.origins))
        if self.problems or config is None:
            raise config_error(self.problems)
        config._sources = tuple(self.sources)
        return config


def _seed_defaults(data: Mapping[Any, Any]) -> Mapping[Any, Any] | None:
    agents = data.get("agents")
    if isinstance(agents, Mapping):
        defaults = agents.get("defaults")
        if isinstance(defaults, Mapping):
            return defaults
    return None


def _is_seed_shape(data: Mapping[Any, Any]) -> bool:
    defaults = _seed_defaults(data)
    return defaults is not None and any(
        k in defaults for k in (SEED_SECTION, "docker_claude_code", "model")
    )


def discover_config_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The files :func:`load_config` reads without an explicit path, lowest precedence first:
    ``$HOME/.clawdbot/config.yaml`` (if it exists), then ``$DOCKERCC_CONFIG`` (whether it
    exists or not) or else ``./dockercc.yaml`` / ``./dockercc.yml`` (if one exists)."""
    return [path for path, _ in _discover(os.environ if env is None else env)]


def _discover(env: Mapping[str, str]) -> list[tuple[Path, Literal["seed", "standalone", "auto"]]]:
    found: list[tuple[Path, Literal["seed", "standalone", "auto"]]] = []
    home = env.get("HOME")
    if home:
        seed = Path(home) / ".clawdbot" / "config.yaml"
        if seed.is_file():
            found.append((seed, "seed"))
    explicit = env.get(CONFIG_PATH_ENV)
    if explicit:
        found.append((Path(explicit).expanduser(), "auto"))
    else:
        for name in ("dockercc.yaml", "dockercc.yml"):
            candidate = Path.cwd() / name
            if candidate.is_file():
                found.append((candidate, "standalone"))
                break
    return found


def load_config(
    path: ConfigSource = None,
    *,
    env: Mapping[str, str] | None = None,
    environment: bool = True,
    **overrides: Any,
) -> DockerCCConfig:
    """Build the configuration: defaults < files < environment < ``overrides`` (see the module
    docs of :mod:`dockercc.config`). The one entry point: every other way (``resolve_config``,
    ``DockerCCConfig.load`` / ``.resolve`` / ``.from_yaml``, the CLI, ``AsyncPool(config=)``)
    calls it.

    ``path`` is what a caller passed as ``config=``:

    * ``None``: the discovered files (:func:`discover_config_files`);
    * a path (``str`` / ``PathLike``): that file instead of discovery (its shape detected by
      content);
    * a mapping: discovered files, then the mapping as keyword overrides (``overrides`` win);
    * a :class:`DockerCCConfig`: itself when no ``overrides`` are given, else a new config of
      its values with the ``overrides`` merged in (no files, no environment).

    ``env`` (default ``os.environ``) is the environment used for discovery (``HOME``,
    ``DOCKERCC_CONFIG``) and for layer 3; ``environment=False`` leaves out the ``DOCKERCC_*``
    variables (``REDIS_URL`` and the credential variables still give the defaults). Raises
    one :class:`~dockercc.errors.ConfigError` listing every problem."""
    builder = _Builder()
    if isinstance(path, DockerCCConfig):
        if not overrides:
            return path
        builder.given(path)
        builder.overrides(overrides)
        return builder.build()
    given: Mapping[str, Any] = {}
    file: str | os.PathLike[str] | None = None
    if isinstance(path, Mapping):
        given = path
    elif isinstance(path, (str, os.PathLike)):
        file = path
    elif path is not None:
        raise TypeError(
            f"config must be None, a DockerCCConfig, a path or a mapping, not {type(path).__name__}"
        )
    env = os.environ if env is None else env
    builder.defaults(env)
    if file is not None:
        builder.file(Path(os.fspath(file)).expanduser(), "auto")
    else:
        for found, kind in _discover(env):
            builder.file(found, kind)
    if environment:
        read_environment(builder, env)
    builder.overrides(given, overrides)
    return builder.build()


def resolve_config(config: ConfigSource = None) -> DockerCCConfig:
    """Same as :func:`load_config` ``(config)``: what a caller passed as ``config=`` (``None``,
    a :class:`DockerCCConfig`, a path or a mapping) as a :class:`DockerCCConfig`."""
    return load_config(config)


resolve = resolve_config


LOADER.append(load_config)
