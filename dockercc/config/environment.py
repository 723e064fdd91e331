"""Layer 3 of loading: the environment (see the scheme in :mod:`dockercc.config`).

``REDIS_URL``, ``CLAUDE_CODE_OAUTH_TOKEN``, ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL``
first, then every ``DOCKERCC_<KEY>[__<KEY>...]`` variable, resolved against the models
case-insensitively and parsed by the option's type (JSON or comma-separated lists, JSON
objects for whole sections, empty = null for optional options).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..redaction import MASK
from .models import DockerCCConfig, ModelConfig
from .problems import _ENVIRONMENT, _Problem, _show
from .redaction import _redact_unknown, _redact_value
from .schema import _LEAF, _ROOT, _match_field, _Node, _node_for, _strip, _suggest

if TYPE_CHECKING:
    from .loading import _Builder

ENV_PREFIX = "DOCKERCC_"
CONFIG_PATH_ENV = "DOCKERCC_CONFIG"

#: Well-known variables of the environment layer, applied before ``DOCKERCC_*``.
_WELL_KNOWN_ENV: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("REDIS_URL", ("redis", "url")),
    ("CLAUDE_CODE_OAUTH_TOKEN", ("credentials", "oauthToken")),
    ("ANTHROPIC_API_KEY", ("credentials", "apiKey")),
    ("ANTHROPIC_BASE_URL", ("credentials", "baseUrl")),
)


def read_environment(builder: _Builder, env: Mapping[str, str]) -> None:
    used = False
    for name, path in _WELL_KNOWN_ENV:
        if env.get(name):
            builder.put_path(path, env[name], _LEAF, name, _ENVIRONMENT)
            used = True
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_PATH_ENV:
            continue
        used = _env_var(builder, name, env[name]) or used
    if used:
        builder.sources.append("environment")


def _env_var(builder: _Builder, name: str, raw: str) -> bool:
    segments = name[len(ENV_PREFIX) :].split("__")
    model: type[BaseModel] | None = DockerCCConfig
    path: list[str] = []
    node = _ROOT
    field: FieldInfo | None = None
    i = 0
    while i < len(segments):
        seg = segments[i]
        if not seg:
            _env_problem(builder, name, path, raw, "no empty segment between '__'")
            return True
        if model is None:
            _env_problem(builder, name, path, raw, f"nothing below {'__'.join(segments[:i])}")
            return True
        match = _match_field(model, seg, ignore_case=True)
        if match is None:
            if i == 0 and len(segments) == 1:
                return False  # not ours: DOCKERCC_* names are shared with other tools
            suggestion = _suggest(model, seg)
            if suggestion is not None:
                fixed = [*segments[:i], suggestion.upper(), *segments[i + 1 :]]
                hint = f"did you mean {ENV_PREFIX}{'__'.join(fixed)}? "
            else:
                hint = ""
            keys = ", ".join(n.upper() for n in model.model_fields)
            shown: Any = MASK  # a value meant for some key below: can't tell, so hide it
            if i == len(segments) - 1:
                shown = _redact_unknown((*path, seg), raw, model, suggestion)
            builder.problems.append(
                _Problem(
                    name,
                    shown,
                    f"{hint}known keys here: {keys}",
                    "environment",
                    f"unknown key (value {_show(shown)})",
                )
            )
            return True
        ckey, field = match
        path.append(ckey)
        node = _node_for(field)
        i += 1
        if node.kind == "model":
            model = node.model
        elif node.kind in ("agents", "dict") and i < len(segments):
            key = segments[i]
            if node.kind == "agents":
                existing = builder.merged.get(ckey)
                names = list(existing) if isinstance(existing, dict) else []
                if key not in names:
                    key = next((n for n in names if n.lower() == key.lower()), key)
                model, node = node.model, _Node("model", node.model)
            else:
                model, node = None, _LEAF
            path.append(key)
            field = None
            i += 1
        else:
            model = None
    value: Any = raw
    if node.kind != "leaf":
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            if node.model is ModelConfig:
                value = raw  # DOCKERCC_MODEL=provider/model sets model.primary
            else:
                _env_problem(builder, name, path, raw, "a JSON object")
                return True
    elif field is not None:
        tp, nullable = _strip(field.annotation)
        if nullable and raw.strip() == "":
            value = None
        elif get_origin(tp) is list:
            if raw.lstrip().startswith("["):
                try:
                    value = json.loads(raw)
                except ValueError:
                    _env_problem(builder, name, path, raw, "a JSON list or comma-separated values")
                    return True
            else:
                value = [v.strip() for v in raw.split(",") if v.strip()]
    builder.put_path(tuple(path), value, node, name, _ENVIRONMENT)
    return True


def _env_problem(builder: _Builder, name: str, path: list[str], raw: str, allowed: str) -> None:
    builder.problems.append(
        _Problem(name, _redact_value(tuple(path), raw), allowed, "environment")
    )

