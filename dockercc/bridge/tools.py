"""Host tools: plain Python functions offered to the agent over MCP.

One module on purpose (~780 lines): a host tool's whole life, from ``@tool`` (schema from type
hints, docstring parsing) to a validated call and its converted output, and the registry.

``@tool`` turns a function (sync or async) into a :class:`Tool`: a JSON Schema for its
arguments generated from the type hints with pydantic, a description from the docstring, and
an async :meth:`Tool.call` that validates arguments, runs the function (sync functions in a
worker thread, so the event loop stays free), enforces a timeout and converts the return value
to MCP content. ``Tool.call`` never raises for a tool failure: bad arguments, exceptions and
timeouts come back as a :class:`ToolOutput` with ``is_error=True``.

A decorated function stays callable exactly like the original, so notebook code can keep
using it directly::

    @tool
    def add(a: int, b: int = 1) -> int:
        '''Add two numbers.'''
        return a + b

    add(2, 3)                       # 5, the plain function
    await add.call({"a": 2})        # ToolOutput(content=[{"type": "text", "text": "3"}])

This module has no dependency on the MCP SDK; :mod:`dockercc.bridge.server` does the wiring.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import inspect
import json
import logging
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, overload

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from ..errors import ToolError

__all__ = [
    "DEFAULT_TIMEOUT",
    "TOOL_NAME_PATTERN",
    "Tool",
    "ToolOutput",
    "ToolRegistry",
    "tool",
]

log = logging.getLogger("dockercc.bridge")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT: float = 60.0
"""Seconds a tool may run before its call is answered with a timeout error."""

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Allowed tool names. The model sees ``mcp__<server>__<name>``, which the Messages API also
limits to 64 characters, so keep names short."""

_MAX_INPUT_REPR = 80
_MAX_FRAMES = 8


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The result of one tool call: MCP content blocks (JSON dicts) and an error flag.

    ``content`` holds blocks as they go on the wire, e.g. ``{"type": "text", "text": "hi"}``
    or ``{"type": "image", "data": "<base64>", "mimeType": "image/png"}``. A tool may return a
    ``ToolOutput`` itself to control the content exactly.
    """

    content: list[dict[str, Any]] = field(default_factory=list)
    is_error: bool = False

    @classmethod
    def text_result(cls, text: str, *, is_error: bool = False) -> ToolOutput:
        """A result with one text block."""
        return cls(content=[{"type": "text", "text": text}], is_error=is_error)

    @classmethod
    def error(cls, message: str) -> ToolOutput:
        """An error result (``isError: true``) with ``message`` as its text."""
        return cls.text_result(message, is_error=True)

    @classmethod
    def image(cls, data: bytes, mime_type: str) -> ToolOutput:
        """A result with one image block."""
        return cls(content=[_image_block(data, mime_type)])

    @classmethod
    def from_value(cls, value: Any) -> ToolOutput:
        """Convert a tool's return value to MCP content.

        ``str`` -> text; ``dict``/``list``/``tuple``/pydantic model/dataclass/number/bool ->
        JSON text; ``None`` -> ``"null"``; PNG/JPEG/GIF/WebP ``bytes`` -> an image block; other
        bytes -> text (UTF-8, else base64); a ``ToolOutput`` passes through; anything else ->
        ``str(value)``.
        """
        if isinstance(value, ToolOutput):
            return value
        if isinstance(value, str):
            return cls.text_result(value)
        if value is None:
            return cls.text_result("null")
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            mime = sniff_image_type(raw)
            if mime is not None:
                return cls.image(raw, mime)
            try:
                return cls.text_result(raw.decode("utf-8"))
            except UnicodeDecodeError:
                encoded = base64.b64encode(raw).decode("ascii")
                return cls.text_result(f"binary data ({len(raw)} bytes, base64): {encoded}")
        if isinstance(value, BaseModel):
            return cls.text_result(json.dumps(value.model_dump(mode="json"), ensure_ascii=False))
        if _is_json_like(value):
            data = to_jsonable_python(value, fallback=str)
            return cls.text_result(json.dumps(data, ensure_ascii=False))
        return cls.text_result(str(value))

    @property
    def text(self) -> str:
        """The text blocks joined by newlines (images and other blocks are skipped)."""
        return "\n".join(
            str(block.get("text", "")) for block in self.content if block.get("type") == "text"
        )

    def to_dict(self) -> dict[str, Any]:
        """The MCP ``CallToolResult`` as JSON: ``{"content": [...], "isError": bool}``."""
        return {"content": [dict(block) for block in self.content], "isError": self.is_error}


_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of PNG, JPEG, GIF or WebP ``data`` (by magic bytes), else ``None``."""
    for signature, mime in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _image_block(data: bytes, mime_type: str) -> dict[str, Any]:
    return {"type": "image", "data": base64.b64encode(data).decode("ascii"), "mimeType": mime_type}


def _is_json_like(value: Any) -> bool:
    if isinstance(value, dict | list | tuple | set | frozenset | int | float | bool):
        return True
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


# --------------------------------------------------------------------------------------------
# docstrings

_ARGS_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters|Params)\s*:\s*$", re.IGNORECASE)
_ARG_LINE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into a description and Google-style ``Args:`` descriptions.

    The description is the cleaned docstring without its ``Args:`` section (those texts move
    into the parameters' JSON Schema ``description``).
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    kept: list[str] = []
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        header = _ARGS_HEADER.match(lines[i])
        if header is None:
            kept.append(lines[i])
            i += 1
            continue
        base_indent = len(header.group(1))
        i += 1
        current: str | None = None
        item_indent: int | None = None
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                i += 1
                continue
            indent = len(line) - len(line.lstrip())
            if indent <= base_indent:
                break  # the next section starts
            if item_indent is None:
                item_indent = indent
            match = _ARG_LINE.match(line.strip()) if indent <= item_indent else None
            if match is not None:
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {line.strip()}".strip()
            i += 1
    description = "\n".join(kept).strip()
    description = re.sub(r"\n{3,}", "\n\n", description)
    return description, params


# --------------------------------------------------------------------------------------------
# schema


def _strip_titles(node: Any) -> Any:
    """Drop pydantic's generated ``title`` keys from a JSON Schema (property names are kept)."""
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(
            value, dict
        ):
            out[key] = {name: _strip_titles(sub) for name, sub in value.items()}
        elif key in ("default", "const", "enum", "examples", "required"):
            out[key] = value
        else:
            out[key] = _strip_titles(value)
    return out


def _callable_target(fn: Callable[..., Any]) -> Any:
    target: Any = inspect.unwrap(fn)
    while isinstance(target, functools.partial):
        target = target.func
    if not inspect.isfunction(target) and not inspect.ismethod(target):
        call = getattr(target, "__call__", None)  # noqa: B004 - callable objects
        if call is not None and (inspect.isfunction(call) or inspect.ismethod(call)):
            target = call
    return target


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    return inspect.iscoroutinefunction(_callable_target(fn))


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolved type hints; string annotations naming function-local types (``from __future__
    import annotations`` inside a function or test) are looked up in the calling frames."""
    target = _callable_target(fn)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except NameError:
        pass
    except Exception:  # noqa: BLE001 - fall back to the raw annotations
        return {}
    localns: dict[str, Any] = {}
    frame = inspect.currentframe()
    try:
        frame = frame.f_back if frame is not None else None
        for _ in range(_MAX_FRAMES):
            if frame is None:
                break
            for key, value in frame.f_locals.items():
                localns.setdefault(key, value)
            try:
                return typing.get_type_hints(target, localns=localns, include_extras=True)
            except Exception:  # noqa: BLE001
                frame = frame.f_back
    finally:
        del frame
    return {}


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    field: str
    kind: inspect._ParameterKind


def _build_arguments_model(
    fn: Callable[..., Any], tool_name: str, param_docs: Mapping[str, str]
) -> tuple[type[BaseModel], list[_Param], bool]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"tool {tool_name!r}: cannot read the signature of {fn!r}: {exc}") from exc
    hints = _type_hints(fn)
    fields: dict[str, Any] = {}
    params: list[_Param] = []
    var_keyword = False
    for index, (name, parameter) in enumerate(signature.parameters.items()):
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            raise ToolError(
                f"tool {tool_name!r}: *{name} is not supported; tool arguments are named")
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
            continue
        annotation: Any = hints.get(name, parameter.annotation)
        if annotation is inspect.Parameter.empty:
            annotation = Any
        if isinstance(annotation, str):
            raise ToolError(
                f"tool {tool_name!r}: cannot resolve the annotation {annotation!r} of parameter "
                f"{name!r}; define the type at module level or drop `from __future__ import "
                f"annotations`")
        default: Any = ... if parameter.default is inspect.Parameter.empty else parameter.default
        field_name = f"p{index}"  # aliases avoid clashes with BaseModel attributes
        extra: dict[str, Any] = {"alias": name}
        if name in param_docs and param_docs[name]:
            extra["description"] = param_docs[name]
        if isinstance(default, FieldInfo) and "description" in extra and default.description:
            del extra["description"]  # `x: int = Field(3, description=...)` wins over the docstring
        fields[field_name] = (typing.Annotated[annotation, Field(**extra)], default)
        params.append(_Param(name=name, field=field_name, kind=parameter.kind))
    config = ConfigDict(extra="allow" if var_keyword else "ignore", populate_by_name=False)
    try:
        model: type[BaseModel] = create_model(  # type: ignore[call-overload]
            f"{tool_name}_arguments", __config__=config, **fields)
    except Exception as exc:
        raise ToolError(f"tool {tool_name!r}: unsupported parameter types: {exc}") from exc
    return model, params, var_keyword


def _format_validation_error(tool_name: str, exc: ValidationError) -> str:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err.get("loc", ())) or "(arguments)"
        text = f"{loc}: {err.get('msg', 'invalid')}"
        if err.get("type") != "missing" and "input" in err:
            shown = repr(err["input"])
            if len(shown) > _MAX_INPUT_REPR:
                shown = shown[: _MAX_INPUT_REPR - 3] + "..."
            text += f" (got {shown})"
        problems.append(text)
    return f"invalid arguments for tool {tool_name!r}: " + "; ".join(problems)


def _format_exception(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# --------------------------------------------------------------------------------------------
# tools


def validate_tool_name(name: str) -> str:
    """Return ``name`` if it matches :data:`TOOL_NAME_PATTERN`, else raise :class:`ToolError`."""
    if not isinstance(name, str) or TOOL_NAME_PATTERN.fullmatch(name) is None:
        raise ToolError(
            f"invalid tool name {name!r}: use 1-64 letters, digits, '_' or '-'")
    return name


class Tool(Generic[P, R]):
    """A host function offered to the agent as an MCP tool.

    Calling the ``Tool`` calls the original function unchanged; :meth:`call` is the MCP path
    (validated JSON arguments in, :class:`ToolOutput` out).

    Attributes:
        fn: the original function.
        name: the tool name (the model sees ``mcp__<server>__<name>``).
        description: what the model reads to decide when to use the tool.
        input_schema: JSON Schema (``type: object``) of the arguments.
        timeout: seconds before a call is answered with a timeout error (``None``: no limit).
    """

    fn: Callable[P, R]
    __name__: str  # copied from the function, like __doc__ and __wrapped__
    __wrapped__: Callable[P, R]
    name: str
    description: str
    input_schema: dict[str, Any]
    timeout: float | None

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        if not callable(fn):
            raise ToolError(f"a tool needs a callable, got {fn!r}")
        if name is None:
            name = getattr(fn, "__name__", None)
            if not isinstance(name, str) or name == "<lambda>":
                raise ToolError(f"cannot derive a tool name from {fn!r}; pass name=...")
        validate_tool_name(name)
        # first, so attributes copied from fn.__dict__ cannot clobber the tool's own
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        if timeout is not None and timeout <= 0:
            raise ToolError(f"tool {name!r}: timeout must be positive or None, got {timeout!r}")
        doc_description, param_docs = parse_docstring(inspect.getdoc(_callable_target(fn)))
        self.fn = fn
        self.name = name
        self.description = inspect.cleandoc(description) if description is not None else (
            doc_description)
        self.timeout = timeout
        self._is_async = _is_async(fn)
        self._model, self._params, self._var_keyword = _build_arguments_model(
            fn, name, param_docs)
        try:
            schema = self._model.model_json_schema(by_alias=True)
        except Exception as exc:
            raise ToolError(f"tool {name!r}: cannot build a JSON Schema: {exc}") from exc
        schema = _strip_titles(schema)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self.input_schema = schema
        self._single_model_param: _Param | None = None
        if len(self._params) == 1:
            annotation = self._model.model_fields[self._params[0].field].annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                self._single_model_param = self._params[0]

    @classmethod
    def from_function(
        cls,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Tool[P, R]:
        """Build a tool from ``fn`` (a :class:`Tool` is unwrapped to its function first)."""
        if isinstance(fn, Tool):
            fn = fn.fn
        return cls(fn, name=name, description=description, timeout=timeout)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, timeout={self.timeout!r})"

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (else it runs in a worker thread)."""
        return self._is_async

    def to_mcp(self) -> dict[str, Any]:
        """The MCP ``Tool`` definition as JSON (name, description, inputSchema)."""
        out: dict[str, Any] = {"name": self.name, "inputSchema": self.input_schema}
        if self.description:
            out["description"] = self.description
        return out

    def validate_arguments(self, arguments: Mapping[str, Any] | None) -> tuple[
            list[Any], dict[str, Any]]:
        """Validate JSON ``arguments``; return ``(args, kwargs)`` for the function.

        Raises :class:`ToolError` with a message listing each wrong field.
        """
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise ToolError(
                f"invalid arguments for tool {self.name!r}: expected an object, "
                f"got {type(arguments).__name__}")
        data = dict(arguments)
        single = self._single_model_param
        if single is not None and single.name not in data and data:
            # a lone model parameter may also be given as the whole input
            data = {single.name: data}
        try:
            validated = self._model.model_validate(data)
        except ValidationError as exc:
            raise ToolError(_format_validation_error(self.name, exc)) from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self._params:
            value = getattr(validated, param.field)
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[param.name] = value
        if self._var_keyword and validated.model_extra:
            for key, value in validated.model_extra.items():
                kwargs.setdefault(key, value)
        return args, kwargs

    async def call(self, arguments: Mapping[str, Any] | None = None) -> ToolOutput:
        """Run the tool on JSON ``arguments``; never raises for a tool failure.

        Bad arguments, an exception from the function (``"<Type>: <message>"``) and a timeout
        (``"tool X timed out after N s"``) all give a :class:`ToolOutput` with ``is_error``.
        Cancellation of the caller still propagates.
        """
        try:
            args, kwargs = self.validate_arguments(arguments)
        except ToolError as exc:
            return ToolOutput.error(str(exc))
        result: Any = None
        try:
            with anyio.move_on_after(self.timeout) as scope:
                result = await self._invoke(args, kwargs)
        except Exception as exc:  # noqa: BLE001 - every tool failure becomes an error result
            log.info("tool %s raised %s", self.name, _format_exception(exc), exc_info=True)
            return ToolOutput.error(_format_exception(exc))
        if scope.cancelled_caught:
            return ToolOutput.error(f"tool {self.name} timed out after {self.timeout:g} s")
        try:
            return ToolOutput.from_value(result)
        except Exception as exc:  # noqa: BLE001
            return ToolOutput.error(
                f"tool {self.name} returned a value that cannot be sent: {_format_exception(exc)}")

    async def _invoke(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        fn: Callable[..., Any] = self.fn
        if self._is_async:
            result = await fn(*args, **kwargs)
        else:
            result = await anyio.to_thread.run_sync(
                functools.partial(fn, *args, **kwargs), abandon_on_cancel=True)
        if inspect.isawaitable(result):
            result = await typing.cast(Awaitable[Any], result)
        return result


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


@overload
def tool(
    name: str,
    description: str,
    input_schema: Mapping[str, Any] | type,
    /,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Callable[[Callable[..., Any]], SchemaTool]: ...


def tool(
    fn: Callable[P, R] | str | None = None,
    sdk_description: str | None = None,
    sdk_schema: Mapping[str, Any] | type | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Any:
    """Make a function a host tool: ``@tool`` or ``@tool(name=..., description=..., timeout=...)``.

    Works on plain and ``async`` functions. The decorated object is a :class:`Tool` that is
    still callable like the original function.

    claude-agent-sdk's form ``@tool("name", "description", schema)`` works too (so a script
    moves over by changing its import): the function takes one ``args`` dict and may return
    the SDK's ``{"content": [...], "is_error": bool}``; see :class:`SchemaTool`.
    """
    if isinstance(fn, str):
        if sdk_description is None or sdk_schema is None:
            raise ToolError(f"tool {fn!r}: the positional form is @tool(name, description, "
                            f"input_schema)")
        sdk_name, sdk_desc, schema = fn, sdk_description, sdk_schema

        def decorate_sdk(func: Callable[..., Any]) -> SchemaTool:
            return SchemaTool(func, name=sdk_name, description=sdk_desc,
                              input_schema=schema, timeout=timeout)

        return decorate_sdk
    if sdk_description is not None or sdk_schema is not None:
        raise ToolError("@tool(fn, ...) takes its options as keywords")
    if fn is not None:
        return Tool.from_function(fn, name=name, description=description, timeout=timeout)

    def decorate(func: Callable[P, R]) -> Tool[P, R]:
        return Tool.from_function(func, name=name, description=description, timeout=timeout)

    return decorate


_PY_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number",
                                   bool: "boolean", dict: "object", list: "array"}


def sdk_input_schema(schema: Mapping[str, Any] | type) -> dict[str, Any]:
    """claude-agent-sdk's ``input_schema``: a JSON Schema as is, ``{"a": float}`` (every
    parameter required) or a TypedDict / pydantic model class."""
    if isinstance(schema, type):
        if issubclass(schema, BaseModel):
            return _strip_titles(schema.model_json_schema())
        hints = typing.get_type_hints(schema)
        schema = dict(hints)
    if "type" in schema and ("properties" in schema or schema.get("type") == "object"):
        out = dict(schema)
        out.setdefault("properties", {})
        return out
    props: dict[str, Any] = {}
    for key, value in schema.items():
        if isinstance(value, Mapping):
            props[key] = dict(value)
        elif value in _PY_JSON_TYPES:
            props[key] = {"type": _PY_JSON_TYPES[value]}
        else:
            raise ToolError(f"input_schema: cannot map {key!r}: {value!r} to a JSON type")
    return {"type": "object", "properties": props, "required": list(props)}


class SchemaTool(Tool[..., Any]):
    """A tool in claude-agent-sdk's form: ``fn(args: dict)``, an explicit JSON Schema, and an
    SDK-style return value ``{"content": [...], "is_error": ...}`` that keeps its meaning."""

    def __init__(self, fn: Callable[..., Any], *, name: str, description: str,
                 input_schema: Mapping[str, Any] | type,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        if not callable(fn):
            raise ToolError(f"a tool needs a callable, got {fn!r}")
        validate_tool_name(name)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        if timeout is not None and timeout <= 0:
            raise ToolError(f"tool {name!r}: timeout must be positive or None, got {timeout!r}")
        self.fn = fn
        self.name = name
        self.description = description
        self.timeout = timeout
        self._is_async = _is_async(fn)
        self.input_schema = sdk_input_schema(input_schema)
        self._single_model_param = None

    def __repr__(self) -> str:
        return f"SchemaTool(name={self.name!r}, timeout={self.timeout!r})"

    def validate_arguments(self, arguments: Mapping[str, Any] | None) -> tuple[
            list[Any], dict[str, Any]]:
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise ToolError(f"invalid arguments for tool {self.name!r}: expected an object, "
                            f"got {type(arguments).__name__}")
        missing = [k for k in self.input_schema.get("required", []) if k not in arguments]
        if missing:
            raise ToolError(f"invalid arguments for tool {self.name!r}: missing "
                            f"{', '.join(map(repr, missing))}")
        return [dict(arguments)], {}

    async def _invoke(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        result = await super()._invoke(args, kwargs)
        if isinstance(result, Mapping) and isinstance(result.get("content"), list):
            content = [dict(b) for b in result["content"] if isinstance(b, Mapping)]
            return ToolOutput(content=content, is_error=bool(result.get("is_error")))
        return result


AnyTool = Tool[..., Any]


class ToolRegistry:
    """Tools by name, in insertion order. Duplicate names raise :class:`ToolError`.

    Plain callables are wrapped with :meth:`Tool.from_function`. Adding the very same
    :class:`Tool` object twice is a no-op.
    """

    def __init__(self, tools: Iterable[AnyTool | Callable[..., Any]] | ToolRegistry = ()) -> None:
        self._tools: dict[str, AnyTool] = {}
        self.extend(tools)

    def add(self, item: AnyTool | Callable[..., Any]) -> AnyTool:
        """Add a tool (or a function, wrapped with default options); return the :class:`Tool`."""
        new: AnyTool = item if isinstance(item, Tool) else Tool.from_function(item)
        existing = self._tools.get(new.name)
        if existing is not None:
            if existing is new:
                return new
            raise ToolError(f"duplicate tool name {new.name!r}")
        self._tools[new.name] = new
        return new

    def extend(self, tools: Iterable[AnyTool | Callable[..., Any]] | ToolRegistry) -> None:
        """Add several tools; on a duplicate nothing is added."""
        items = list(tools)
        staged = ToolRegistry.__new__(ToolRegistry)
        staged._tools = dict(self._tools)
        for item in items:
            staged.add(item)
        self._tools = staged._tools

    def merge(self, *others: Iterable[AnyTool | Callable[..., Any]] | ToolRegistry) -> ToolRegistry:
        """A new registry with this one's tools followed by the others'."""
        merged = ToolRegistry(self)
        for other in others:
            merged.extend(other)
        return merged

    def __or__(self, other: Iterable[AnyTool | Callable[..., Any]] | ToolRegistry) -> ToolRegistry:
        return self.merge(other)

    def remove(self, name: str) -> AnyTool:
        """Remove and return the tool called ``name`` (``KeyError`` if absent)."""
        return self._tools.pop(name)

    def get(self, name: str) -> AnyTool | None:
        """The tool called ``name``, or ``None``."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Tool names in insertion order."""
        return list(self._tools)

    def tools(self) -> list[AnyTool]:
        """Tools in insertion order."""
        return list(self._tools.values())

    def __getitem__(self, name: str) -> AnyTool:
        return self._tools[name]

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Tool):
            return self._tools.get(item.name) is item
        return item in self._tools

    def __iter__(self) -> Iterator[AnyTool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __bool__(self) -> bool:
        return bool(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names()!r})"


def session_registry(shared: Iterable[AnyTool], own: Iterable[AnyTool | Callable[..., Any]],
                     allow: Iterable[str] | None) -> ToolRegistry:
    """A session's host tools: the ``shared`` ones (the built-ins, then the pool's or the
    chain's; the first of a name wins), then the session's ``own`` (a :class:`Tool` whose
    name is taken is passed over; a plain function is wrapped, a clash raises), limited to
    the agent's ``tools`` allow-list when it has one. The one assembly for every session
    (:class:`~dockercc.session.AsyncSession` and the providers' sessions)."""
    registry = ToolRegistry()
    for item in shared:
        if item.name not in registry:
            registry.add(item)
    for mine in own:
        if isinstance(mine, Tool) and mine.name in registry:
            continue
        registry.add(mine)
    if allow is not None:
        allowed = set(allow)
        registry = ToolRegistry([t for t in registry if t.name in allowed])
    return registry
