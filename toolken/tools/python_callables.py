"""Python callables as tools: the name is `__name__`, the description the docstring text before
its first section, and `parameters` a JSON Schema built from the signature and type hints, with
each parameter's description taken from the docstring (Google, NumPy or reST style, read by
`parse_docstring`).

Parameter lists are closed (`"additionalProperties": false`) unless the function takes
`**kwargs`; dataclasses and TypedDicts become closed object schemas; Python defaults that are
JSON and valid for the schema become `default`.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from collections import abc
from collections.abc import Callable
from typing import Any, Literal, Optional, Union

from ..errors import ToolSpecError
from .schema import DEFAULT_DRAFT, OFFLINE_REGISTRY
from .spec import Tool, brief, validate_tool_name

# ------------------------------------------------------------------------------------------
# signatures and annotations
# ------------------------------------------------------------------------------------------
_NONE_TYPE = type(None)
_UNION_TYPES: tuple = tuple(t for t in (Union, getattr(types, "UnionType", None)) if t is not None)
_TRANSPARENT = tuple(t for t in (getattr(typing, "Required", None), getattr(typing, "NotRequired", None),
                                 getattr(typing, "ReadOnly", None)) if t is not None)
_SEQUENCES = {list, abc.Sequence, abc.MutableSequence, abc.Iterable, typing.List, typing.Sequence,
              typing.MutableSequence, typing.Iterable}
_SETS = {set, frozenset, abc.Set, abc.MutableSet, typing.Set, typing.FrozenSet, typing.AbstractSet}
_MAPPINGS = {dict, abc.Mapping, abc.MutableMapping, typing.Dict, typing.Mapping, typing.MutableMapping}
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
_JSON_SCALAR_TYPES = (str, int, float, bool, _NONE_TYPE)


def tool_from_function(fn: Callable[..., Any]) -> Tool:
    """A Python callable as a `Tool` (see `ToolSet.from_functions` for the supported annotations)."""
    if not callable(fn):
        raise ToolSpecError(f"from_functions expects callables, got {type(fn).__name__}: {brief(fn)}")
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str):
        raise ToolSpecError(f"callable {brief(fn)} has no __name__; wrap it in a def or build a Tool directly")
    validate_tool_name(name)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise ToolSpecError(f"function {name!r}: cannot read its signature: {e}") from None
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as e:  # unresolvable forward reference, bad annotation expression
        raise ToolSpecError(f"function {name!r}: cannot resolve its type hints: {e}") from None
    description, param_docs = parse_docstring(inspect.getdoc(fn) or "")
    properties: dict[str, dict] = {}
    required: list[str] = []
    additional: Any = False
    for pname, param in signature.parameters.items():
        where = f"function {name!r}: parameter {pname!r}"
        annotation = hints.get(pname, param.annotation)
        if param.kind is param.VAR_POSITIONAL:
            raise ToolSpecError(f"{where}: *args cannot be passed as named JSON arguments; use a list parameter")
        schema = _annotation_schema(annotation, where, ())
        if param.kind is param.VAR_KEYWORD:
            additional = schema if schema else True
            continue
        if pname in param_docs and "description" not in schema:
            schema = {**schema, "description": param_docs[pname]}
        if param.default is param.empty:
            required.append(pname)
        else:
            schema = _with_default(schema, param.default)
        properties[pname] = schema
    parameters: dict = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    parameters["additionalProperties"] = additional
    try:
        return Tool(name=name, description=description, parameters=parameters)
    except ToolSpecError as e:
        raise ToolSpecError(f"function {name!r}: {e}") from None


_NOT_JSON = object()


def _json_value(value: Any) -> Any:
    """A Python default as JSON (enums by value, tuples/sets as lists), or `_NOT_JSON`."""
    if isinstance(value, enum.Enum):
        value = value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, (tuple, set, frozenset)):
        value = list(value)
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return _NOT_JSON


def _with_default(schema: dict, default: Any) -> dict:
    """Record a Python default as the schema's `default` when it is JSON and valid for the
    schema (a `None` default on a non-Optional annotation is left out rather than contradict it)."""
    value = _json_value(default)
    if value is _NOT_JSON or not DEFAULT_DRAFT(schema, registry=OFFLINE_REGISTRY).is_valid(value):
        return schema
    return {**schema, "default": value}


def _enum_schema(values: list, where: str, what: str) -> dict:
    for v in values:
        if not isinstance(v, _JSON_SCALAR_TYPES) or (isinstance(v, float) and v != v):
            raise ToolSpecError(f"{where}: {what} value {v!r} is not a JSON scalar (str, int, float, bool, None)")
    kinds = {_json_type_name(v) for v in values}
    schema: dict = {"enum": list(values)}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), **schema}
    return schema


def _json_type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    return "string" if isinstance(v, str) else "integer" if isinstance(v, int) else "number"


def _annotation_schema(tp: Any, where: str, stack: tuple) -> dict:
    """A type annotation -> JSON Schema. `stack` holds the classes being expanded (cycle check)."""
    if tp is inspect.Parameter.empty or tp is Any or tp is object:
        return {}
    if tp is None or tp is _NONE_TYPE:
        return {"type": "null"}
    if isinstance(tp, (str, typing.ForwardRef)):
        raise ToolSpecError(f"{where}: annotation {tp!r} could not be resolved to a type")
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        schema = _annotation_schema(args[0], where, stack)
        notes = [a for a in tp.__metadata__ if isinstance(a, str)]
        return {**schema, "description": notes[0]} if notes else schema
    if origin in _TRANSPARENT:
        return _annotation_schema(args[0], where, stack)
    if origin is Literal:
        return _enum_schema([a.value if isinstance(a, enum.Enum) else a for a in args], where, "Literal")
    if origin in _UNION_TYPES:
        members: list[dict] = []
        for a in args:
            s = _annotation_schema(a, where, stack)
            if s not in members:
                members.append(s)
        if {} in members:
            return {}
        return members[0] if len(members) == 1 else {"anyOf": members}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_schema([m.value for m in tp], where, f"enum {tp.__name__}")
    if hasattr(tp, "__supertype__"):  # typing.NewType
        return _annotation_schema(tp.__supertype__, where, stack)
    base = origin if origin is not None else tp
    if base in _SEQUENCES or base in _SETS:  # sets too: uniqueItems is not expressible as a grammar
        return {"type": "array", **({"items": _annotation_schema(args[0], where, stack)} if args else {})}
    if base in (tuple, typing.Tuple):
        if not args:
            return {"type": "array"}
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _annotation_schema(args[0], where, stack)}
        if args == ((),):
            return {"type": "array", "maxItems": 0}
        items = [_annotation_schema(a, where, stack) for a in args]
        return {"type": "array", "prefixItems": items, "items": False, "minItems": len(items), "maxItems": len(items)}
    if base in _MAPPINGS:
        if not args:
            return {"type": "object"}
        if args[0] is not str:
            raise ToolSpecError(f"{where}: dict keys must be str (JSON object keys), got {args[0]!r}")
        return {"type": "object", "additionalProperties": _annotation_schema(args[1], where, stack)}
    if isinstance(tp, type) and (_is_typeddict(tp) or dataclasses.is_dataclass(tp)):
        if tp in stack:
            raise ToolSpecError(f"{where}: recursive type {tp.__name__} cannot be expressed without $ref")
        return _class_schema(tp, where, stack + (tp,))
    raise ToolSpecError(
        f"{where}: unsupported type annotation {tp!r}; use str, int, float, bool, None, Any, list/set/tuple/"
        f"dict[str, ...] of those, Optional/Union, Literal, an Enum, a dataclass or a TypedDict"
    )


def _is_typeddict(tp: type) -> bool:
    return issubclass(tp, dict) and hasattr(tp, "__required_keys__") and hasattr(tp, "__total__")


def _class_schema(tp: type, where: str, stack: tuple) -> dict:
    """A dataclass or TypedDict -> a closed object schema."""
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except Exception as e:
        raise ToolSpecError(f"{where}: cannot resolve the type hints of {tp.__name__}: {e}") from None
    _, field_docs = parse_docstring(inspect.getdoc(tp) or "")
    properties: dict[str, dict] = {}
    required: list[str] = []
    if dataclasses.is_dataclass(tp):
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            schema = _annotation_schema(hints.get(f.name, Any), f"{where} (field {tp.__name__}.{f.name})", stack)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            elif f.default is not dataclasses.MISSING:
                schema = _with_default(schema, f.default)
            properties[f.name] = schema
    else:
        for key, hint in hints.items():
            properties[key] = _annotation_schema(hint, f"{where} (key {tp.__name__}[{key!r}])", stack)
            # an explicit Required/NotRequired wins: with string annotations (PEP 563) Python
            # 3.11 leaves them out of __required_keys__
            marker = typing.get_origin(hint)
            if marker is getattr(typing, "Required", None) or (
                    marker is not getattr(typing, "NotRequired", None) and key in tp.__required_keys__):  # type: ignore[attr-defined]
                required.append(key)
    for key, doc in field_docs.items():
        if key in properties and "description" not in properties[key]:
            properties[key] = {**properties[key], "description": doc}
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


# ------------------------------------------------------------------------------------------
# docstrings
# ------------------------------------------------------------------------------------------
_PARAM_SECTIONS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments",
                   "other parameters", "kwargs", "attributes"}
_OTHER_SECTIONS = {"returns", "return", "raises", "raise", "yields", "yield", "examples", "example",
                   "notes", "note", "see also", "todo", "warnings", "warning", "references", "methods"}
_GOOGLE_HEADER = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?::.*)?$")
_REST_FIELD = re.compile(r"^:(\w+)(?:\s+([^:]*?))?\s*:\s*(.*)$")
_REST_PARAM_KINDS = {"param", "parameter", "arg", "argument", "key", "keyword"}


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a docstring into (description, {parameter: description}).

    Understands Google (`Args:` with `name (type): text`), NumPy (`Parameters` underlined by
    dashes, `name : type` then indented text) and reST (`:param [type] name: text`) styles.
    The description is the text before the first section or field; continuation lines are
    joined with single spaces.
    """
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    description: list[str] = []
    params: dict[str, str] = {}
    section = "description"  # or "params", "other", "rest"
    numpy_style = False
    header_indent = 0
    entry_indent: Optional[int] = None  # indent of the current section's entry lines
    current: Optional[str] = None  # parameter whose description is being read
    i = 0
    while i < len(lines):
        line, stripped = lines[i], lines[i].strip()
        indent = len(line) - len(line.lstrip())
        underline = lines[i + 1].strip() if i + 1 < len(lines) else ""
        google = _GOOGLE_HEADER.match(stripped)
        rest = _REST_FIELD.match(stripped)
        if stripped and len(underline) >= 3 and set(underline) == {"-"}:  # NumPy header
            section = "params" if stripped.lower() in _PARAM_SECTIONS else "other"
            numpy_style, header_indent, entry_indent, current = True, indent, None, None
            i += 2
            continue
        if google and google.group(1).lower() in _PARAM_SECTIONS | _OTHER_SECTIONS:
            section = "params" if google.group(1).lower() in _PARAM_SECTIONS else "other"
            numpy_style, header_indent, entry_indent, current = False, indent, None, None
        elif rest:
            section, current = "rest", None
            kind, spec, text = rest.groups()
            if kind in _REST_PARAM_KINDS and spec:
                current, entry_indent = spec.split()[-1], indent
                params[current] = text.strip()
        elif section == "description":
            description.append(line)
        elif not stripped:
            current = None if section == "rest" else current
        elif section == "rest":
            if current and indent > (entry_indent or 0):
                params[current] += " " + stripped
        elif section == "params":
            if not numpy_style and indent <= header_indent:
                section, current = "other", None  # dedented text ends a Google section
            elif entry_indent is None or indent <= entry_indent:
                entry_indent = indent
                entry = (_NUMPY_ENTRY if numpy_style else _GOOGLE_ENTRY).match(stripped)
                current = entry.group(1) if entry else None
                if current:
                    params[current] = entry.group(2).strip() if not numpy_style else ""
            elif current:
                params[current] = f"{params[current]} {stripped}".strip()
        i += 1
    return "\n".join(description).strip(), {k: v.strip() for k, v in params.items() if v.strip()}
