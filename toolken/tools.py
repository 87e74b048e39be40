"""Tools and tool sets: the specs that become tool tokens.

A `Tool` is a name, a description and a JSON Schema object for its arguments (the OpenAI
function-calling shape). A `ToolSet` is an ordered collection with unique names; loaders turn
other formats into it:

- `ToolSet.from_openai` / `ToolSet.from_json`: OpenAI function specs (in memory / a JSON file);
- `ToolSet.from_functions`: Python callables (type hints + Google/NumPy/reST docstrings);
- `ToolSet.from_bfcl`: Berkeley Function-Calling Leaderboard records (Python, Java, JavaScript
  type names mapped to JSON Schema);
- `ToolSet.from_seal_tools`: the Seal-Tools corpus (`tool.jsonl.gz`).

Every schema is checked against its JSON Schema meta-schema and must describe a JSON object, so
a bad spec fails here with a `ToolSpecError` naming the tool and the field, not later inside the
grammar engine or the model. Loaders of formats whose parameter lists are closed (callables,
BFCL, Seal-Tools) emit `"additionalProperties": false` at the top level, so constrained decoding
cannot invent argument names.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import gzip
import inspect
import json
import os
import re
import types
import typing
import unicodedata
from collections import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union, overload

import jsonschema

from .errors import ToolSpecError

try:  # optional accelerator: meta-schema checks ~500x faster (4,076 Seal-Tools schemas: 0.03 s vs 15 s)
    import jsonschema_rs as _jsonschema_rs
except ImportError:  # pragma: no cover - depends on the environment
    _jsonschema_rs = None

EMPTY_PARAMETERS: dict = {"type": "object", "properties": {}}

PathLike = Union[str, "os.PathLike[str]"]
OnConflict = Literal["error", "first"]


# ------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------
def _is_visible(c: str) -> bool:
    return c.isprintable() and not c.isspace()


def validate_tool_name(name: Any) -> str:
    """Return `name` unchanged if it can name a tool, else raise `ToolSpecError`.

    A name is any string with at least one visible character and no control characters
    (Unicode categories Cc), lone surrogates (Cs, not encodable as UTF-8) or line/paragraph
    separators (Zl, Zp): such characters cannot be part of a single vocabulary token. Spaces,
    punctuation and non-ASCII letters are allowed and preserved exactly. Whether the name then
    tokenizes to one id under a given token format is checked by `toolken.extend`.
    """
    if not isinstance(name, str):
        raise ToolSpecError(f"tool name must be a string, got {type(name).__name__}: {name!r:.80}")
    if not name:
        raise ToolSpecError("tool name must not be empty")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if bad:
        raise ToolSpecError(
            f"tool {name!r:.120}: name contains control or line-break characters "
            f"({', '.join(sorted({repr(c) for c in bad}))}), which cannot form a token; remove them"
        )
    if not any(_is_visible(c) for c in name):
        raise ToolSpecError(f"tool name must contain a visible character, got {name!r:.80}")
    return name


# ------------------------------------------------------------------------------------------
# Tool
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tool:
    """One tool: `name`, `description` and `parameters` (a JSON Schema for a JSON object).

    `parameters=None` or `{}` means "no arguments" (`{"type": "object", "properties": {}}`).
    The schema is deep-copied and must be plain JSON.

    Raises:
        ToolSpecError: bad name, non-string description, or a `parameters` schema that is not
            valid under its meta-schema or does not describe an object (the message names the
            tool and the field, e.g. `parameters.properties.city.type`).
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))

    def __post_init__(self) -> None:
        validate_tool_name(self.name)
        if not isinstance(self.description, str):
            raise ToolSpecError(
                f"tool {self.name!r}: field 'description' must be a string, "
                f"got {type(self.description).__name__}"
            )
        object.__setattr__(self, "parameters", _check_parameters(self.name, self.parameters))

    def to_openai(self) -> dict:
        """The OpenAI `{"type": "function", "function": {...}}` form (a deep copy)."""
        return {"type": "function", "function": self.to_dict()}

    def to_dict(self) -> dict:
        """The bare `{"name", "description", "parameters"}` form (a deep copy)."""
        return {"name": self.name, "description": self.description, "parameters": _json_copy(self.parameters)}

    def __hash__(self) -> int:
        return hash((self.name, self.description, json.dumps(self.parameters, sort_keys=True)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tool):
            return NotImplemented
        return self.to_dict() == other.to_dict()


def _json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _check_parameters(name: str, params: Any) -> dict:
    """Validate a tool's `parameters` schema; return a deep copy."""
    if params is None or (isinstance(params, Mapping) and len(params) == 0):
        return dict(EMPTY_PARAMETERS, properties={})
    if not isinstance(params, Mapping):
        raise ToolSpecError(
            f"tool {name!r}: field 'parameters' must be a JSON Schema object (dict), got {type(params).__name__}"
        )
    try:
        text = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ToolSpecError(f"tool {name!r}: field 'parameters' is not plain JSON: {e}") from None
    params = json.loads(text)
    error = _meta_schema_error(text)
    if error is not None:
        where, message = error
        raise ToolSpecError(f"tool {name!r}: field {where!r} is not valid JSON Schema: {message}")
    if "type" in params:
        if params["type"] != "object":
            raise ToolSpecError(
                f"tool {name!r}: field 'parameters.type' must be 'object' (arguments are a JSON object), "
                f"got {params['type']!r}"
            )
    elif "properties" not in params:
        raise ToolSpecError(
            f"tool {name!r}: field 'parameters' must be an object schema: give \"type\": \"object\" "
            f"and \"properties\" (got keys {sorted(params)})"
        )
    properties = params.get("properties", {})
    if params.get("additionalProperties") is False:
        missing = [r for r in params.get("required", []) if r not in properties]
        if missing:
            raise ToolSpecError(
                f"tool {name!r}: field 'parameters.required' names {missing} which are not in "
                f"'parameters.properties' while additionalProperties is false, so no call could be valid"
            )
    return params


@functools.lru_cache(maxsize=1 << 16)
def _meta_schema_error(schema_json: str) -> Optional[tuple[str, str]]:
    """(field path, message) of the first meta-schema violation of a schema given as JSON text,
    or None. Cached by text: reloading the same tools (registry, round trips) costs nothing."""
    schema = json.loads(schema_json)
    if _fast_meta_valid(schema):
        return None
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        return ".".join(["parameters", *(str(p) for p in e.absolute_path)]), e.message
    return None


def _fast_meta_valid(schema: dict) -> bool:
    """True if `jsonschema_rs` is installed and accepts `schema` under its meta-schema. False
    means "not proven": `jsonschema` then decides and words the error."""
    if _jsonschema_rs is None:
        return False
    try:
        return bool(_jsonschema_rs.meta.is_valid(schema))
    except Exception:  # unknown $schema, or a value the accelerator cannot take
        return False


ToolLike = Union[Tool, Mapping[str, Any]]


# ------------------------------------------------------------------------------------------
# ToolSet
# ------------------------------------------------------------------------------------------
class ToolSet(Sequence[Tool]):
    """An ordered set of tools with unique names. Index by position or by name.

    Example:
        >>> tools = ToolSet.from_openai([{"name": "get_time", "parameters": {"type": "object",
        ...     "properties": {"tz": {"type": "string"}}}}])
        >>> tools["get_time"].parameters["properties"]["tz"]
        {'type': 'string'}
    """

    def __init__(self, tools: Iterable[ToolLike] = ()) -> None:
        self._tools: list[Tool] = []
        self._by_name: dict[str, Tool] = {}
        for t in tools:
            tool = t if isinstance(t, Tool) else _tool_from_openai(t)
            if tool.name in self._by_name:
                raise ToolSpecError(f"tool {tool.name!r} is defined twice; tool names must be unique")
            self._tools.append(tool)
            self._by_name[tool.name] = tool

    # -- Sequence protocol -------------------------------------------------------------------
    @overload
    def __getitem__(self, key: int) -> Tool: ...
    @overload
    def __getitem__(self, key: str) -> Tool: ...
    @overload
    def __getitem__(self, key: slice) -> "ToolSet": ...
    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise KeyError(f"no tool named {key!r} in this ToolSet") from None
        if isinstance(key, slice):
            return ToolSet(self._tools[key])
        return self._tools[key]

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._by_name
        return isinstance(item, Tool) and self._by_name.get(item.name) == item

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ToolSet):
            return NotImplemented
        return self._tools == other._tools

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names = ", ".join(t.name for t in self._tools[:5])
        more = f", ... ({len(self)} tools)" if len(self) > 5 else ""
        return f"ToolSet([{names}{more}])"

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tools]

    # -- OpenAI ------------------------------------------------------------------------------
    @classmethod
    def from_openai(cls, specs: Union[Mapping[str, Any], Iterable[Mapping[str, Any]]]) -> "ToolSet":
        """From OpenAI tool specs: `{"type": "function", "function": {...}}` or bare
        `{"name", "description", "parameters"}` (one spec or a list)."""
        if isinstance(specs, Mapping):
            specs = [specs]
        return cls(_tool_from_openai(s) for s in specs)

    @classmethod
    def from_json(cls, path: PathLike) -> "ToolSet":
        """From a JSON file holding a list of OpenAI tool specs (or one spec, or `{"tools": [...]}`).

        Raises:
            ToolSpecError: the file cannot be read or parsed, or a spec in it is bad; the message
                starts with the file path.
        """
        data = _load_json_document(path)
        if isinstance(data, Mapping) and "tools" in data and "name" not in data and "function" not in data:
            data = data["tools"]
        if not isinstance(data, (list, Mapping)):
            raise ToolSpecError(f"{os.fspath(path)}: expected a list of tool specs, got {type(data).__name__}")
        try:
            return cls.from_openai(data)
        except ToolSpecError as e:
            raise ToolSpecError(f"{os.fspath(path)}: {e}") from None

    def to_openai(self) -> list[dict]:
        """The tools as OpenAI specs; `ToolSet.from_openai(ts.to_openai()) == ts`."""
        return [t.to_openai() for t in self._tools]

    # -- Python callables --------------------------------------------------------------------
    @classmethod
    def from_functions(cls, functions: Union[Callable[..., Any], Iterable[Callable[..., Any]]]) -> "ToolSet":
        """From Python callables: the name is `__name__`, the description the docstring text
        before its first section, and `parameters` is built from the type hints, with each
        parameter's description taken from the docstring (Google `Args:`, NumPy `Parameters`
        or reST `:param x:`). Parameters with a default are optional; `**kwargs: T` allows
        extra arguments of type T; `*args` is rejected (tool arguments are passed by name).

        Supported annotations: `str`, `int`, `float`, `bool`, `None`, `Any`, `list[T]`,
        `Sequence[T]`, `set[T]` (an array: uniqueness is not enforced), `tuple[T, ...]`, `tuple[A, B]`, `dict[str, T]`, `Optional[T]`,
        `Union[...]` / `A | B`, `Literal[...]` (enum), `Enum` subclasses (enum of their values),
        dataclasses, `TypedDict`, `NewType`, and `Annotated[T, "description"]`.

        Example:
            >>> def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
            ...     '''Current weather.
            ...
            ...     Args:
            ...         city: City name.
            ...     '''
            >>> ToolSet.from_functions([get_weather])[0].parameters["required"]
            ['city']

        Raises:
            ToolSpecError: an unsupported annotation, `*args`, or a bad name; the message names
                the function and the parameter.
        """
        if callable(functions) and not isinstance(functions, (list, tuple, ToolSet)):
            functions = [functions]
        return cls(_tool_from_function(f) for f in functions)  # type: ignore[union-attr]

    # -- BFCL --------------------------------------------------------------------------------
    @classmethod
    def from_bfcl(cls, records: Union[PathLike, Mapping[str, Any], Iterable[Mapping[str, Any]]],
                  *, on_conflict: OnConflict = "error") -> "ToolSet":
        """From Berkeley Function-Calling Leaderboard data (Patil et al., Gorilla / BFCL).

        `records` is a path to a BFCL `.json` file (JSON Lines despite the name, or one JSON
        document), one record `{"id", "question", "function": [...]}`, one function dict
        `{name, description, parameters}`, or a list of either. BFCL type names become JSON
        Schema recursively (`properties`, `items`, `additionalProperties`): `dict`->object,
        `float`/`double`->number, `tuple`/`ArrayList`/`Array`->array, `long`/`int`/`byte`/
        `short`->integer, `String`/`char`->string, `HashMap`->object, `Boolean`->boolean,
        `any`/`""`/no type -> unconstrained (see `BFCL_TYPES`). Java and JavaScript types are
        mapped to their JSON counterparts (BFCL's own Java/JS evaluation instead asks for every
        argument as a string; do that conversion yourself if you need it). Non-JSON-Schema keys
        (`optional`) are dropped.

        Identical functions repeated across records are kept once (first position). A name
        used with different specs raises, unless `on_conflict="first"` keeps the first spec.
        Many BFCL files reuse names with different specs across independent test cases, so
        load those per record (`ToolSet.from_bfcl(record)`) or pass `on_conflict="first"`.

        Raises:
            ToolSpecError: unknown type, malformed record, conflicting names; the message names
                the file, record id, tool and field.
        """
        source = ""
        if isinstance(records, (str, os.PathLike)):
            source = f"{os.fspath(records)}: "
            records = load_json_records(records)
        elif isinstance(records, Mapping):
            records = [records]
        entries: list[tuple[Tool, str]] = []
        try:
            for i, record in enumerate(records):
                if not isinstance(record, Mapping):
                    raise ToolSpecError(f"record #{i}: expected a dict, got {type(record).__name__}")
                rid = f"record {record['id']!r}" if "id" in record else f"record #{i}"
                for fn in _bfcl_functions(record, rid):
                    entries.append((_tool_from_bfcl(fn, rid), rid))
            return cls(_merge_unique(entries, on_conflict))
        except ToolSpecError as e:
            raise ToolSpecError(f"{source}{e}") from None

    # -- Seal-Tools --------------------------------------------------------------------------
    @classmethod
    def from_seal_tools(cls, path_or_records: Union[PathLike, Iterable[Mapping[str, Any]]],
                        *, on_conflict: OnConflict = "error") -> "ToolSet":
        """From the Seal-Tools corpus (Wu et al., 2024): `tool.jsonl.gz`, a plain `.jsonl`, or a
        list of dicts `{"api_name", "api_description", "parameters": {name: {"type",
        "description", ...}}, "required": [...], ...}`.

        Names are kept exactly as given (the corpus has names with spaces and dots). Types map
        by `SEAL_TYPES` (the released corpus uses only `str`, `int`, `float`, `bool`). Per
        parameter, `description` and `default` are kept, `choices` becomes `enum`, `unit` is
        appended to the description, and example fields (`example`, `examples`,
        `example_values`) are dropped because they are free text, not values. `field` and
        `responses` are not part of a tool's argument schema and are dropped.

        Duplicate policy (the released corpus has none): an identical repeated entry is kept
        once; a name with a different spec raises unless `on_conflict="first"`.
        """
        source = ""
        if isinstance(path_or_records, (str, os.PathLike)):
            source = f"{os.fspath(path_or_records)}: "
            path_or_records = load_json_records(path_or_records)
        try:
            entries = []
            for i, record in enumerate(path_or_records):
                entries.append((_tool_from_seal(record, i), f"entry #{i}"))
            return cls(_merge_unique(entries, on_conflict))
        except ToolSpecError as e:
            raise ToolSpecError(f"{source}{e}") from None


def as_toolset(tools: Union[ToolSet, Iterable[ToolLike]]) -> ToolSet:
    """Accept a ToolSet, Tools, or OpenAI dicts."""
    return tools if isinstance(tools, ToolSet) else ToolSet(tools)


def _merge_unique(entries: Iterable[tuple[Tool, str]], on_conflict: OnConflict) -> list[Tool]:
    """Keep the first of identical tools; a name with different specs raises (or keeps the
    first with `on_conflict="first"`)."""
    if on_conflict not in ("error", "first"):
        raise ToolSpecError(f"on_conflict must be 'error' or 'first', got {on_conflict!r}")
    kept: dict[str, tuple[Tool, str]] = {}
    for tool, origin in entries:
        if tool.name not in kept:
            kept[tool.name] = (tool, origin)
            continue
        first, first_origin = kept[tool.name]
        if first != tool and on_conflict == "error":
            raise ToolSpecError(
                f"tool {tool.name!r} is defined twice with different specs ({first_origin} and {origin}); "
                f"tool names must be unique: load the records separately or pass on_conflict='first'"
            )
    return [tool for tool, _ in kept.values()]


def _tool_from_openai(spec: Mapping[str, Any]) -> Tool:
    if not isinstance(spec, Mapping):
        raise ToolSpecError(f"a tool spec must be a dict, got {type(spec).__name__}: {spec!r:.80}")
    if "function" in spec and isinstance(spec.get("function"), Mapping):
        if spec.get("type", "function") != "function":
            raise ToolSpecError(f"tool spec has field 'type'={spec['type']!r}; only 'function' tools are supported")
        spec = spec["function"]
    if "name" not in spec:
        raise ToolSpecError(f"tool spec is missing field 'name': {json.dumps(spec, default=str)[:120]}")
    name = validate_tool_name(spec["name"])
    return Tool(name=name, description=spec.get("description") or "", parameters=spec.get("parameters"))


# ------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------
def _read_text(path: PathLike) -> str:
    p = os.fspath(path)
    try:
        if p.endswith(".gz"):
            with gzip.open(p, "rt", encoding="utf-8") as f:
                return f.read()
        with open(p, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ToolSpecError(f"cannot read tool file {p}: {e}") from None


def _load_json_document(path: PathLike) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolSpecError(f"{os.fspath(path)}: not valid JSON: {e}") from None


def load_json_records(path: PathLike) -> list:
    """A JSON Lines file (optionally gzipped), or one JSON document holding a list or a record."""
    text = _read_text(path)
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        return list(whole) if isinstance(whole, list) else [whole]
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ToolSpecError(f"{os.fspath(path)}: line {lineno} is not valid JSON: {e}") from None
    return records


# ------------------------------------------------------------------------------------------
# Seal-Tools
# ------------------------------------------------------------------------------------------
_INTEGER = {"type": "integer"}
_NUMBER = {"type": "number"}
_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}
_ARRAY = {"type": "array"}
_OBJECT = {"type": "object"}

SEAL_TYPES: dict[str, dict] = {
    # the four type strings used by the released Seal-Tools corpus
    "str": _STRING, "int": _INTEGER, "float": _NUMBER, "bool": _BOOLEAN,
    # aliases accepted for Seal-Tools-style data written by hand
    "string": _STRING, "integer": _INTEGER, "number": _NUMBER, "boolean": _BOOLEAN,
    "list": _ARRAY, "array": _ARRAY, "dict": _OBJECT, "object": _OBJECT,
}


def _tool_from_seal(record: Any, index: int) -> Tool:
    if not isinstance(record, Mapping):
        raise ToolSpecError(f"Seal-Tools entry #{index}: expected a dict, got {type(record).__name__}")
    if "api_name" not in record:
        raise ToolSpecError(f"Seal-Tools entry #{index}: missing field 'api_name'")
    name = validate_tool_name(record["api_name"])
    params = record.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise ToolSpecError(f"tool {name!r}: field 'parameters' must be a dict of parameters, got {type(params).__name__}")
    properties = {}
    for pname, pspec in params.items():
        where = f"tool {name!r}: field 'parameters.{pname}"
        if not isinstance(pspec, Mapping):
            raise ToolSpecError(f"{where}' must be a dict with 'type' and 'description'")
        ptype = pspec.get("type")
        if ptype not in SEAL_TYPES:
            raise ToolSpecError(f"{where}.type' has unknown Seal-Tools type {ptype!r}; known: {sorted(SEAL_TYPES)}")
        schema = dict(SEAL_TYPES[ptype])
        description = pspec.get("description")
        if description is not None and not isinstance(description, str):
            raise ToolSpecError(f"{where}.description' must be a string")
        if pspec.get("unit"):
            description = f"{description or ''} (unit: {pspec['unit']})".strip()
        if description:
            schema["description"] = description
        if isinstance(pspec.get("choices"), list):
            schema["enum"] = list(pspec["choices"])
        if "default" in pspec:
            schema["default"] = pspec["default"]
        properties[pname] = schema
    required = record.get("required") or []
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ToolSpecError(f"tool {name!r}: field 'required' must be a list of parameter names")
    unknown = [r for r in required if r not in properties]
    if unknown:
        raise ToolSpecError(f"tool {name!r}: field 'required' names {unknown}, which are not in 'parameters'")
    description = record.get("api_description") or ""
    parameters = {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}
    return Tool(name=name, description=description, parameters=parameters)


# ------------------------------------------------------------------------------------------
# BFCL
# ------------------------------------------------------------------------------------------
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


def _bfcl_functions(record: Mapping[str, Any], rid: str) -> list:
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


def _tool_from_bfcl(fn: Any, rid: str) -> Tool:
    if not isinstance(fn, Mapping) or "name" not in fn:
        raise ToolSpecError(f"{rid}: each function must be a dict with a 'name', got {str(fn)[:80]}")
    name = validate_tool_name(fn["name"])
    params = fn.get("parameters")
    if params is None:
        parameters: dict = dict(EMPTY_PARAMETERS, properties={})
    else:
        if not isinstance(params, Mapping):
            raise ToolSpecError(f"{rid}: tool {name!r}: field 'parameters' must be a dict")
        parameters = _bfcl_schema(params, f"{rid}: tool {name!r}: field 'parameters")
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


def _bfcl_schema(node: Any, where: str) -> dict:
    """One BFCL parameter spec -> JSON Schema. `where` is the error prefix ending in the field
    path (without the closing quote)."""
    if not isinstance(node, Mapping):
        raise ToolSpecError(f"{where}' must be a dict, got {type(node).__name__}")
    btype = node.get("type", "")
    if isinstance(btype, list):  # already JSON-Schema style: a list of type names
        mapped = [_bfcl_type(t, f"{where}.type") for t in btype]
        names = [m["type"] for m in mapped if "type" in m]
        schema: dict = {} if len(names) < len(mapped) else {"type": names}
    else:
        schema = dict(_bfcl_type(btype, f"{where}.type"))
    for key, value in node.items():
        if key in _PASSTHROUGH_KEYWORDS:
            schema[key] = value
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise ToolSpecError(f"{where}.properties' must be a dict")
            schema["properties"] = {k: _bfcl_schema(v, f"{where}.properties.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            schema[key] = _bfcl_schema(value, f"{where}.{key}")
        elif key == "additionalProperties" and isinstance(value, bool):
            schema[key] = value
        elif key == "items" and isinstance(value, list):
            schema["prefixItems"] = [_bfcl_schema(v, f"{where}.items.{i}") for i, v in enumerate(value)]
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            schema[key] = [_bfcl_schema(v, f"{where}.{key}.{i}") for i, v in enumerate(value)]
    return schema


def _bfcl_type(btype: Any, where: str) -> dict:
    if not isinstance(btype, str) or btype not in BFCL_TYPES:
        raise ToolSpecError(f"{where}' has unknown BFCL type {btype!r}; known types: {', '.join(sorted(BFCL_TYPES))}")
    return BFCL_TYPES[btype]


# ------------------------------------------------------------------------------------------
# Python callables
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


def _tool_from_function(fn: Callable[..., Any]) -> Tool:
    if not callable(fn):
        raise ToolSpecError(f"from_functions expects callables, got {type(fn).__name__}: {fn!r:.80}")
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str):
        raise ToolSpecError(f"callable {fn!r:.80} has no __name__; wrap it in a def or build a Tool directly")
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
    if value is _NOT_JSON or not jsonschema.Draft202012Validator(schema).is_valid(value):
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
