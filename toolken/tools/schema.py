"""JSON Schema for tool parameters, offline: which draft a schema is read under, its meta-schema
check, its references, its depth, and instance validators that never fetch anything.

Nothing here opens a connection. A schema can name a URI in three places, and none is fetched:

- `$schema`: the drafts that ship with `jsonschema` (3, 4, 6, 7, 2019-09 and 2020-12; `http`
  or `https`, with or without the trailing `#`) select that draft, whose meta-schema is read
  locally. Any other value (an unknown or remote meta-schema) is not an error and is not
  fetched: the schema is checked under Draft 2020-12, the draft the grammar engine and the
  argument validator read it with anyway, and `$schema` stays an annotation. Refusing instead
  would reject specs whose generator wrote a variant URI, without making anything safer.
- `$ref` (and `$dynamicRef`, `$recursiveRef`): only references inside the tool's own schema
  (`#/$defs/...`, `#anchor`) are allowed, and each must resolve there. Any other reference would
  need a download (or an embedded `$id` resource, which the grammar engine does not support
  either), so it is refused with a `ToolSpecError` naming the field and its JSON pointer.
- `$id`: only a base URI for resolving the references above, never a location to load.

Validators are built over `OFFLINE_REGISTRY`, a `referencing.Registry` whose retrieve function
refuses, so even a reference that slipped past these checks (a schema changed after loading)
cannot reach the network.

Depth: a `parameters` document may nest at most `MAX_SCHEMA_DEPTH` (64) JSON objects and
arrays. Python's JSON encoder and `jsonschema` recurse once or more per level, so a document
thousands of levels deep would raise `RecursionError` deep inside them; real tool schemas stay
far below (OpenAI's structured outputs allow 10 levels of object nesting, each taking two
levels here: `properties` and the property's schema), and the grammar engine refuses JSON
deeper than 256.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, NoReturn, Optional
from urllib.parse import urljoin

import jsonschema
import referencing
import referencing.jsonschema
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from ..errors import ToolSpecError

try:  # optional accelerator: meta-schema checks ~500x faster (4,076 Seal-Tools schemas: 0.03 s vs 15 s)
    import jsonschema_rs as _jsonschema_rs
except ImportError:  # pragma: no cover - depends on the environment
    _jsonschema_rs = None

MAX_SCHEMA_DEPTH = 64

DEFAULT_DRAFT: type[Validator] = jsonschema.Draft202012Validator

_DRAFTS: tuple[type[Validator], ...] = (
    jsonschema.Draft3Validator, jsonschema.Draft4Validator, jsonschema.Draft6Validator,
    jsonschema.Draft7Validator, jsonschema.Draft201909Validator, jsonschema.Draft202012Validator,
)
# jsonschema-rs knows these drafts and reads their meta-schemas locally; it is handed only a
# schema whose `$schema` is one of their exact URIs (otherwise it would try to download it)
_FAST_DRAFTS = frozenset(_DRAFTS[1:])

# keywords whose value is a subschema, or a list of subschemas (`items` in old drafts,
# `type`/`disallow`/`extends` in draft 3): the union over all drafts, so no reference a
# validator could follow is missed
_SUBSCHEMA_KEYWORDS = frozenset({
    "additionalItems", "additionalProperties", "allOf", "anyOf", "contains", "contentSchema",
    "disallow", "else", "extends", "if", "items", "not", "oneOf", "prefixItems", "propertyNames",
    "then", "type", "unevaluatedItems", "unevaluatedProperties",
})
# keywords whose value maps names to subschemas
_SUBSCHEMA_MAP_KEYWORDS = frozenset({
    "$defs", "definitions", "dependencies", "dependentSchemas", "patternProperties", "properties",
})
REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def _normalized(uri: str) -> str:
    uri = uri.rstrip("#")
    return "http://" + uri[len("https://"):] if uri.startswith("https://") else uri


_DRAFT_OF_URI: dict[str, type[Validator]] = {_normalized(v.META_SCHEMA["$schema"]): v for v in _DRAFTS}


def draft_of(schema: Mapping[str, Any]) -> type[Validator]:
    """The `jsonschema` validator class a schema is read with: the draft its `$schema` names
    when `jsonschema` ships that draft, else Draft 2020-12 (nothing is fetched)."""
    uri = schema.get("$schema")
    return _DRAFT_OF_URI.get(_normalized(uri), DEFAULT_DRAFT) if isinstance(uri, str) else DEFAULT_DRAFT


def refuse_retrieval(uri: str) -> NoReturn:
    """The retrieve function of `OFFLINE_REGISTRY`: toolken never downloads a schema."""
    raise ToolSpecError(f"{uri!r} is not part of the tool's schema, and toolken never downloads schemas")


OFFLINE_REGISTRY: referencing.Registry = referencing.Registry(retrieve=refuse_retrieval)  # type: ignore[call-arg]


# ------------------------------------------------------------------------------------------
# paths
# ------------------------------------------------------------------------------------------
def field_name(path: tuple) -> str:
    """A path inside `parameters` in the dotted form of error messages: `parameters.properties.x`."""
    return ".".join(["parameters", *(str(p) for p in path)])


def json_pointer(path: tuple) -> str:
    """A path inside `parameters` as an RFC 6901 JSON pointer: `/properties/x/$ref`."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _short(field: str, limit: int = 160) -> str:
    """`field` cut to about `limit` characters at a `.` or `/` boundary, ending in `...`."""
    if len(field) <= limit:
        return field
    cut = max(field.rfind(".", 0, limit), field.rfind("/", 0, limit))
    return field[:cut if cut > 0 else limit] + "..."


# ------------------------------------------------------------------------------------------
# depth
# ------------------------------------------------------------------------------------------
def nesting_path(value: Any, limit: int = MAX_SCHEMA_DEPTH) -> Optional[tuple]:
    """The path of the first dict or list in `value` nested deeper than `limit` containers
    (`value` itself is level 1), or None. Iterative: safe on any depth, and on cycles."""
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.items()
        elif isinstance(node, (list, tuple)):
            children = enumerate(node)
        else:
            continue
        if len(path) >= limit:
            return path
        stack.extend((child, path + (key,)) for key, child in children)
    return None


def check_depth(value: Any, where: str, limit: int = MAX_SCHEMA_DEPTH) -> None:
    """Raise `ToolSpecError` if `value` nests deeper than `limit` objects and arrays; `where`
    names the owner ("tool 'f'") and the message names the field."""
    path = nesting_path(value, limit)
    if path is not None:
        raise ToolSpecError(
            f"{where}: field {_short(field_name(path))!r} nests deeper than {limit} JSON objects and arrays "
            f"(MAX_SCHEMA_DEPTH); flatten the schema, e.g. move repeated parts under \"$defs\" and refer to them"
        )


# ------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------
class Reference(NamedTuple):
    """One reference in a schema: where it is, its keyword and value, and the base URI it is
    resolved against (from the enclosing `$id`s; "" when there is none)."""

    path: tuple
    keyword: str
    ref: str
    base_uri: str


def iter_references(schema: Mapping[str, Any], draft: Optional[type[Validator]] = None) -> Iterator[Reference]:
    """Every `$ref`, `$dynamicRef` and `$recursiveRef` in `schema`, in subschema positions only
    (a `"$ref"` inside `enum`, `const`, `default` or `examples` is data, and a property called
    `$ref` is a name). Iterative, in document order."""
    specification = referencing.jsonschema.specification_with(
        (draft or draft_of(schema)).META_SCHEMA["$schema"], default=referencing.jsonschema.DRAFT202012)
    stack: list[tuple[Any, tuple, str]] = [(schema, (), "")]
    while stack:
        node, path, base = stack.pop()
        if not isinstance(node, Mapping):
            continue
        own_id = specification.id_of(node)
        if isinstance(own_id, str):
            base = urljoin(base, own_id)
        for keyword in REFERENCE_KEYWORDS:
            if isinstance(node.get(keyword), str):
                yield Reference(path + (keyword,), keyword, node[keyword], base)
        children: list[tuple[Any, tuple, str]] = []
        for key, value in node.items():
            if key in _SUBSCHEMA_KEYWORDS:
                items = enumerate(value) if isinstance(value, list) else [(None, value)]
                children.extend((v, path + (key,) if i is None else path + (key, i), base) for i, v in items)
            elif key in _SUBSCHEMA_MAP_KEYWORDS and isinstance(value, Mapping):
                children.extend((v, path + (key, name), base) for name, v in value.items())
        stack.extend(reversed(children))


def reference_problem(schema: Mapping[str, Any], draft: Optional[type[Validator]] = None) -> Optional[tuple[tuple, str]]:
    """`(path, message)` for the first reference in `schema` that is not a resolvable
    reference inside the schema itself, or None. Nothing is fetched."""
    draft = draft or draft_of(schema)
    specification = referencing.jsonschema.specification_with(
        draft.META_SCHEMA["$schema"], default=referencing.jsonschema.DRAFT202012)
    root = specification.create_resource(schema)
    registry = OFFLINE_REGISTRY.with_resource(uri=root.id() or "", resource=root)
    for reference in iter_references(schema, draft):
        pointer = f"(JSON pointer {_short(json_pointer(reference.path))})"
        if not reference.ref.startswith("#"):
            return reference.path, (
                f"{pointer} refers to {reference.ref!r:.200}, outside the tool's schema; toolken never downloads "
                f"schemas: copy the referenced schema under \"$defs\" and refer to it as '#/$defs/<name>'")
        try:
            registry.resolver(base_uri=reference.base_uri).lookup(reference.ref)
        except Unresolvable:
            return reference.path, f"{pointer} refers to {reference.ref!r:.200}, which is not in the tool's schema"
    return None


# ------------------------------------------------------------------------------------------
# the checks of a parameters schema
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1 << 16)
def schema_problem(schema_json: str) -> Optional[tuple[str, str]]:
    """`(field, message)` for the first problem of a schema given as JSON text: a meta-schema
    violation, then a reference that is not inside the schema or does not resolve; or None.
    The schema must already be within `MAX_SCHEMA_DEPTH`. Cached by text: reloading the same
    tools (registry, round trips) costs nothing."""
    schema = json.loads(schema_json)
    if not isinstance(schema, Mapping):
        return "parameters", f"must be a JSON object, got {type(schema).__name__}"
    draft = draft_of(schema)
    if not _fast_meta_valid(schema, draft):
        meta = draft(draft.META_SCHEMA, registry=OFFLINE_REGISTRY, format_checker=draft.FORMAT_CHECKER)
        error = next(iter(meta.iter_errors(schema)), None)  # the first, as jsonschema's check_schema reports
        if error is not None:
            return field_name(tuple(error.absolute_path)), f"is not valid JSON Schema: {error.message}"
    has_references = any(f'"{keyword}"' in schema_json for keyword in REFERENCE_KEYWORDS)
    problem = reference_problem(schema, draft) if has_references else None
    if problem is not None:
        path, message = problem
        return _short(field_name(path)), message
    return None


def _fast_meta_valid(schema: dict, draft: type[Validator]) -> bool:
    """True if `jsonschema_rs` is installed and accepts `schema` under `draft`'s meta-schema.
    False means "not proven": `jsonschema` then decides and words the error. `$schema` is set
    to the draft's own URI, so jsonschema-rs never sees a URI it would download."""
    if _jsonschema_rs is None or draft not in _FAST_DRAFTS or not isinstance(schema.get("$schema", ""), str):
        return False
    try:
        return bool(_jsonschema_rs.meta.is_valid({**schema, "$schema": draft.META_SCHEMA["$schema"]}))
    except Exception:  # a value the accelerator cannot take
        return False


def offline_validator(schema: Mapping[str, Any], where: str) -> Validator:
    """A `jsonschema` validator for instances of `schema` that never fetches: its draft is
    `draft_of(schema)`, its references resolve only inside `schema` (`OFFLINE_REGISTRY`), and
    no format is asserted (as `jsonschema`'s default). `where` ("tool 'f'") starts messages.

    Raises:
        ToolSpecError: `schema` is too deep, not plain JSON, not valid under its meta-schema,
            or has a reference outside itself or one that does not resolve (the message names
            the field and the reference's JSON pointer).
    """
    check_depth(schema, where)
    try:
        text = json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ToolSpecError(f"{where}: field 'parameters' is not plain JSON: {e}") from None
    problem = schema_problem(text)
    if problem is not None:
        field, message = problem
        raise ToolSpecError(f"{where}: field {field!r} {message}")
    schema = json.loads(text)
    return draft_of(schema)(schema, registry=OFFLINE_REGISTRY)
