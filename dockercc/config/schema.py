"""Walking the model tree by key path: which model or field a config path names, in either key
spelling, and the closest valid name for a wrong one. The loader, the environment parser, the
error wording and the reference all navigate the models through these."""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .fields import _alias
from .models import DockerCCConfig


def _strip(annotation: Any) -> tuple[Any, bool]:
    """``(type, nullable)`` without ``Annotated`` and ``| None``."""
    nullable = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(get_args(annotation))
            if len(args) != 1:
                return annotation, nullable
            annotation = args[0]
        else:
            return annotation, nullable


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


@dataclass(frozen=True)
class _Node:
    """What the keys of a mapping at some place in the config mean."""

    kind: Literal["model", "agents", "dict", "leaf"]
    model: type[BaseModel] | None = None


_LEAF = _Node("leaf")
_ROOT = _Node("model", DockerCCConfig)


def _node_for(field: FieldInfo) -> _Node:
    tp, _ = _strip(field.annotation)
    if _is_model(tp):
        return _Node("model", tp)
    if get_origin(tp) is dict:
        value_tp, _ = _strip(get_args(tp)[1])
        if _is_model(value_tp):
            return _Node("agents", value_tp)
        return _Node("dict")
    return _LEAF


def _match_field(
    model: type[BaseModel], key: str, *, ignore_case: bool = False
) -> tuple[str, FieldInfo] | None:
    """``(camelCase key, field)`` for ``key`` given as the field's name or alias."""
    for name, field in model.model_fields.items():
        alias = _alias(name, field)
        if key in (name, alias):
            return alias, field
    if ignore_case:
        low = key.lower()
        for name, field in model.model_fields.items():
            alias = _alias(name, field)
            if low in (name.lower(), alias.lower()):
                return alias, field
    return None


def _suggest(model: type[BaseModel], key: str) -> str | None:
    """The field name closest to ``key`` (python name)."""

    def norm(s: str) -> str:
        return s.replace("_", "").replace("-", "").lower()

    names = {norm(name): name for name in model.model_fields}
    close = difflib.get_close_matches(norm(key), list(names), n=1, cutoff=0.6)
    return names[close[0]] if close else None


def _spell(model: type[BaseModel], name: str, like: str) -> str:
    """Field ``name`` spelled in the style of the user's key ``like``."""
    field = model.model_fields[name]
    if like.isupper():
        return name.upper()
    return name if "_" in like else _alias(name, field)


def _field_at(loc: tuple[Any, ...]) -> tuple[FieldInfo | None, type[BaseModel] | None, bool]:
    """``(field, model holding the last key, last key is an agent name)`` for a config path."""
    model: type[BaseModel] | None = DockerCCConfig
    field: FieldInfo | None = None
    i = 0
    while i < len(loc):
        if model is None:
            return field, None, False
        match = _match_field(model, str(loc[i]))
        if match is None:
            return None, model, False
        field = match[1]
        node = _node_for(field)
        if node.kind == "model":
            model = node.model
        elif node.kind == "agents":
            if i + 1 == len(loc) - 1:
                return field, None, True
            model = node.model
            i += 1
        else:
            model = None
        i += 1
    return field, None, False


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose keys the mapping at config path ``loc`` holds (None: not a model)."""
    model: type[BaseModel] | None = DockerCCConfig
    i = 0
    while i < len(loc):
        if model is None:
            return None
        match = _match_field(model, str(loc[i]))
        if match is None:
            return None
        node = _node_for(match[1])
        if node.kind == "model":
            model = node.model
        elif node.kind == "agents" and i + 1 < len(loc):
            model = node.model
            i += 1
        else:
            return None
        i += 1
    return model

