"""What is wrong with a configuration, in the user's own words.

Every problem found while loading (a missing file, bad YAML, an unknown key, a value out of
range) becomes a :class:`_Problem` with the key path as the user spelled it
(``agents.defaults.dockerClaudeCode.pool.minWarm``, ``DOCKERCC_POOL__MIN_WARM``), where it
came from, the redacted value and what is allowed; :func:`config_error` turns them all into
ONE :class:`~dockercc.errors.ConfigError`. The wording of "allowed" is derived from the
models' types and bounds (or a field's ``allowed`` note).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from ..errors import ConfigError
from .fields import _AGENT_NAME_ALLOWED, _ENV_NAME_ALLOWED, _REDIS_URL_ALLOWED, RedisUrl, _alias
from .models import DockerCCConfig
from .redaction import _redact_unknown, _redact_value
from .schema import _field_at, _is_model, _model_at, _node_for, _spell, _strip, _suggest


@dataclass(frozen=True)
class _Source:
    label: str  # file path, "environment", "keyword overrides", "defaults"


@dataclass(frozen=True)
class _Origin:
    display: str  # the user's own spelling of the key path
    source: _Source


@dataclass
class _Problem:
    path: str
    value: Any
    allowed: str
    source: str
    detail: str | None = None  # replaces "got <value>" in the message

    def line(self) -> str:
        what = self.detail or f"got {_show(self.value)}"
        return f"  - {self.path}: {what}; allowed: {self.allowed}  [{self.source}]"


_DEFAULTS = _Source("defaults")
_ENVIRONMENT = _Source("environment")
_OVERRIDES = _Source("keyword overrides")


def _join(display: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{display}[{key}]"
    return f"{display}.{key}" if display else str(key)


def config_error(problems: list[_Problem]) -> ConfigError:
    """ONE error listing every problem."""
    count = len(problems)
    lines = [p.line() for p in problems]
    return ConfigError(
        f"invalid dockercc configuration ({count} problem{'s' if count != 1 else ''}):\n"
        + "\n".join(lines),
        [(p.path, p.value, p.allowed) for p in problems],
    )


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_phrase(annotation: Any) -> str:
    tp, nullable = _strip(annotation)
    origin = get_origin(tp)
    if tp is bool:
        text = "true or false"
    elif tp is int:
        text = "an integer"
    elif tp is float:
        text = "a number"
    elif tp is str:
        text = "a string"
    elif tp is SecretStr:
        text = "a string (secret)"
    elif tp is RedisUrl:
        text = _REDIS_URL_ALLOWED
    elif isinstance(tp, type) and issubclass(tp, Path):
        text = "a file path"
    elif origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in get_args(tp))
    elif origin is list:
        inner = _type_phrase(get_args(tp)[0])
        plural = {"a string": "strings", "an integer": "integers", "a number": "numbers"}
        text = "a list of " + plural.get(inner, inner)
    elif origin is dict:
        value_tp, _ = _strip(get_args(tp)[1])
        if _is_model(value_tp):
            text = "a mapping of names to option mappings"
        else:
            text = "a mapping of names to strings"
    elif _is_model(tp):
        keys = ", ".join(_alias(n, f) for n, f in tp.model_fields.items())
        text = f"a mapping with keys {keys}"
    else:
        text = getattr(tp, "__name__", str(tp))
    return f"{text}, or null" if nullable else text


def _allowed_for(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    text = _type_phrase(field.annotation)
    bounds = []
    for meta in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                bounds.append(f"{sym} {bound}")
        if getattr(meta, "min_length", None) == 1:
            bounds.append("(non-empty)")
    if bounds:
        head, comma, tail = text.partition(", or null")
        text = f"{head} {' '.join(bounds)}{comma}{tail}"
    return text


def describe(error: Any, merged: dict[str, Any],
             origins: Mapping[tuple[Any, ...], _Origin]) -> _Problem:
    """A pydantic validation ``error`` on the ``merged`` layers as a :class:`_Problem`."""
    loc: list[Any] = []
    cur: Any = merged
    is_key = False
    for part in error["loc"]:
        if part == "[key]":
            is_key = True
        elif isinstance(cur, dict) and part in cur:
            loc.append(part)
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            loc.append(part)
            cur = cur[part]
        # else: a pydantic tag (union member, validator name): not part of the user's path
    ctx = error.get("ctx") or {}
    value = cur
    if error["type"] == "cross_field" and "field" in ctx:
        loc.append(ctx["field"])
        if isinstance(cur, dict):
            value = cur.get(ctx["field"])
    key = tuple(loc)
    display, source = where(origins, key)
    shown = _redact_value(key, value)
    if error["type"] == "extra_forbidden" and loc:
        parent = _model_at(key[:-1]) or DockerCCConfig
        bad = str(loc[-1])
        suggestion = _suggest(parent, bad)
        shown = _redact_unknown(key, value, parent, suggestion)
        keys = ", ".join(_alias(n, f) for n, f in parent.model_fields.items())
        hint = ""
        if suggestion is not None:
            hint = f"did you mean {_spell(parent, suggestion, bad)!r}? "
        return _Problem(
            display,
            shown,
            f"{hint}known keys here: {keys}",
            source,
            f"unknown key (value {_show(shown)})",
        )
    field, _, agent_name = _field_at(key)
    if is_key:
        name_path = key
        allowed = _AGENT_NAME_ALLOWED if agent_name else _ENV_NAME_ALLOWED
        return _Problem(display, _redact_value(name_path[:-1], name_path[-1]), allowed, source)
    if error["type"] == "cross_field":
        allowed = str(ctx.get("allowed") or error["msg"])
    elif field is not None:
        allowed = _allowed_for(field)
        if agent_name:
            allowed = "a mapping of agent options"
        elif _node_for(field).kind == "dict" and _field_at(key[:-1])[0] is field:
            allowed = "a string"  # the value of one entry of an ``env`` mapping
    else:
        allowed = str(error["msg"])
    return _Problem(display, shown, allowed, source)


def where(origins: Mapping[tuple[Any, ...], _Origin],
          loc: tuple[Any, ...]) -> tuple[str, str]:
    """``(the user's spelling of config path loc, its source)``."""
    for n in range(len(loc), 0, -1):
        origin = origins.get(loc[:n])
        if origin is not None:
            display = origin.display
            for part in loc[n:]:
                display = _join(display, part)
            return display, origin.source.label
    return ".".join(str(p) for p in loc) or "(config)", "defaults"


