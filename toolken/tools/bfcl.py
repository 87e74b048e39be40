"""Berkeley Function-Calling Leaderboard data (Patil et al., Gorilla / BFCL): records
`{"id", "question", "function": [...]}` or bare function dicts `{name, description,
parameters}`, whose parameter types are Python, Java or JavaScript type names (`dict`, `float`,
`tuple`, `ArrayList`, `HashMap`, `Bigint`, ...), mapped to JSON Schema by `BFCL_TYPES`.

The parameter lists are closed, so the top-level schema says `"additionalProperties": false`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Union

from ..errors import ToolSpecError
from .io import PathLike, load_json_records
from .schema import check_depth
from .spec import EMPTY_PARAMETERS, OnConflict, Tool, brief, merge_unique, require_iterable, validate_tool_name

_INTEGER = {"type": "integer"}
_NUMBER = {"type": "number"}
_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}
_ARRAY = {"type": "array"}
_OBJECT = {"type": "object"}

BFCL_TYPES: dict[str, dict] = {
    # JSON Schema names and BFCL's Python-flavoured names
    "string": _STRING, "str": _STRING,
    "integer": _INTEGER, "int": _INTEGER,
    "number": _NUMBER, "float": _NUMBER,
    "boolean": _BOOLEAN, "bool": _BOOLEAN,
    "array": _ARRAY, "list": _ARRAY, "tuple": _ARRAY,
    "object": _OBJECT, "dict": _OBJECT,
    "null": {"type": "null"},
    "any": {}, "Any": {}, "": {},
    # Java
    "String": _STRING, "char": _STRING, "Character": _STRING,
    "byte": _INTEGER, "Byte": _INTEGER, "short": _INTEGER, "Short": _INTEGER,
    "Integer": _INTEGER, "long": _INTEGER, "Long": _INTEGER, "BigInteger": _INTEGER,
    "double": _NUMBER, "Double": _NUMBER, "Float": _NUMBER, "BigDecimal": _NUMBER,
    "Boolean": _BOOLEAN,
    "Array": _ARRAY, "ArrayList": _ARRAY, "LinkedList": _ARRAY, "List": _ARRAY,
    "Queue": _ARRAY, "Stack": _ARRAY, "Deque": _ARRAY,
    "Set": _ARRAY, "HashSet": _ARRAY,
    "HashMap": _OBJECT, "Hashtable": _OBJECT, "Map": _OBJECT, "TreeMap": _OBJECT,
    "LinkedHashMap": _OBJECT, "Object": {},  # java.lang.Object: any value
    # JavaScript (besides the shared String/Boolean/array/dict/any)
    "Bigint": _INTEGER, "BigInt": _INTEGER, "Number": _NUMBER,
}

# JSON Schema keywords copied through from BFCL parameter specs (others, e.g. BFCL's
# `optional`, are dropped). Subschema keywords are converted recursively instead.
_PASSTHROUGH_KEYWORDS = frozenset({
    "description", "title", "enum", "const", "default", "examples", "format", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minProperties",
    "maxProperties", "required",
})


def tools_from_bfcl(records: Union[PathLike, Mapping[str, Any], Iterable[Mapping[str, Any]]],
                    on_conflict: OnConflict = "error") -> list[Tool]:
    """The tools of BFCL data (a path, one record or function dict, or a list of either), one
    per name (see `ToolSet.from_bfcl`).

    Raises:
        ToolSpecError: unknown type, malformed record, conflicting names; the message names
            the file (when given a path), record id, tool and field.
    """
    source = ""
    if isinstance(records, (str, os.PathLike)):
        source = f"{os.fspath(records)}: "
        records = load_json_records(records)
    elif isinstance(records, Mapping):
        records = [records]
    else:
        require_iterable(records, "ToolSet.from_bfcl", "a path, a record or a list of records")
    entries: list[tuple[Tool, str]] = []
    try:
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise ToolSpecError(f"record #{i}: expected a dict, got {type(record).__name__}")
            rid = f"record {record['id']!r}" if "id" in record else f"record #{i}"
            for fn in _functions(record, rid):
                entries.append((tool_from_bfcl(fn, rid), rid))
        return merge_unique(entries, on_conflict)
    except ToolSpecError as e:
        raise ToolSpecError(f"{source}{e}") from None


def _functions(record: Mapping[str, Any], rid: str) -> list:
    if "function" in record:
        fns = record["function"]
        fns = [fns] if isinstance(fns, Mapping) else fns
        if not isinstance(fns, list):
            raise ToolSpecError(f"{rid}: field 'function' must be a list of function dicts")
        return fns
    if "name" in record:
        return [record]
    raise ToolSpecError(
        f"{rid}: has no 'function' field (multi-turn BFCL records name their tools in "
        f"'involved_classes'; load the files in multi_turn_func_doc/ instead)"
    )


def tool_from_bfcl(fn: Any, rid: str) -> Tool:
    """One BFCL function dict as a `Tool`; `rid` ("record 'x'") prefixes error messages."""
    if not isinstance(fn, Mapping) or "name" not in fn:
        raise ToolSpecError(f"{rid}: each function must be a dict with a 'name', got {brief(fn)}")
    name = validate_tool_name(fn["name"])
    params = fn.get("parameters")
    if params is None:
        parameters: dict = dict(EMPTY_PARAMETERS, properties={})
    else:
        if not isinstance(params, Mapping):
            raise ToolSpecError(f"{rid}: tool {name!r}: field 'parameters' must be a dict")
        check_depth(params, f"{rid}: tool {name!r}")  # before the recursive conversion
        parameters = _schema(params, f"{rid}: tool {name!r}: field 'parameters")
        if parameters.get("type", "object") != "object":
            raise ToolSpecError(f"{rid}: tool {name!r}: field 'parameters.type' must be 'dict' or 'object', "
                                f"got {params.get('type')!r}")
        parameters.setdefault("type", "object")
        parameters.setdefault("properties", {})
        parameters.setdefault("additionalProperties", False)
    description = fn.get("description") or ""
    try:
        return Tool(name=name, description=description, parameters=parameters)
    except ToolSpecError as e:
        raise ToolSpecError(f"{rid}: {e}") from None


def _schema(node: Any, where: str) -> dict:
    """One BFCL parameter spec -> JSON Schema. `where` is the error prefix ending in the field
    path (without the closing quote)."""
    if not isinstance(node, Mapping):
        raise ToolSpecError(f"{where}' must be a dict, got {type(node).__name__}")
    btype = node.get("type", "")
    if isinstance(btype, list):  # already JSON-Schema style: a list of type names
        mapped = [_type(t, f"{where}.type") for t in btype]
        names = [m["type"] for m in mapped if "type" in m]
        schema: dict = {} if len(names) < len(mapped) else {"type": names}
    else:
        schema = dict(_type(btype, f"{where}.type"))
    for key, value in node.items():
        if key in _PASSTHROUGH_KEYWORDS:
            schema[key] = value
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise ToolSpecError(f"{where}.properties' must be a dict")
            schema["properties"] = {k: _schema(v, f"{where}.properties.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            schema[key] = _schema(value, f"{where}.{key}")
        elif key == "additionalProperties" and isinstance(value, bool):
            schema[key] = value
        elif key == "items" and isinstance(value, list):
            schema["prefixItems"] = [_schema(v, f"{where}.items.{i}") for i, v in enumerate(value)]
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            schema[key] = [_schema(v, f"{where}.{key}.{i}") for i, v in enumerate(value)]
    return schema


def _type(btype: Any, where: str) -> dict:
    if not isinstance(btype, str) or btype not in BFCL_TYPES:
        raise ToolSpecError(f"{where}' has unknown BFCL type {brief(btype)}; known types: {', '.join(sorted(BFCL_TYPES))}")
    return BFCL_TYPES[btype]
