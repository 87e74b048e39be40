"""The tool model: `Tool` (a name, a description and a JSON Schema for its arguments), name
validation, and the checks every `parameters` schema passes, whatever format it came from.

Every schema is checked against its JSON Schema meta-schema and must describe a JSON object, so
a bad spec fails here with a `ToolSpecError` naming the tool and the field, not later inside the
grammar engine or the model.
"""
from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import jsonschema

from ..errors import ToolSpecError

try:  # optional accelerator: meta-schema checks ~500x faster (4,076 Seal-Tools schemas: 0.03 s vs 15 s)
    import jsonschema_rs as _jsonschema_rs
except ImportError:  # pragma: no cover - depends on the environment
    _jsonschema_rs = None

EMPTY_PARAMETERS: dict = {"type": "object", "properties": {}}

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
        object.__setattr__(self, "parameters", check_parameters(self.name, self.parameters))

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


ToolLike = Union[Tool, Mapping[str, Any]]


def _json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_parameters(name: str, params: Any) -> dict:
    """Validate the `parameters` schema of tool `name`; return a deep copy (`None` or `{}`
    become `EMPTY_PARAMETERS`).

    Raises:
        ToolSpecError: not a dict, not plain JSON, not valid under its meta-schema, not an
            object schema, or `required` names missing from a closed `properties`.
    """
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


# ------------------------------------------------------------------------------------------
# unique names
# ------------------------------------------------------------------------------------------
def merge_unique(entries: Iterable[tuple[Tool, str]], on_conflict: OnConflict) -> list[Tool]:
    """Tools from `(tool, origin)` pairs with one tool per name: identical repeats are kept
    once (first position); a name with different specs raises, naming both origins (e.g.
    "record 'x'"), or keeps the first with `on_conflict="first"`."""
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
