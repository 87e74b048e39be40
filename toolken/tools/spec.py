"""The tool model: `Tool` (a name, a description and a JSON Schema for its arguments), name
validation, the checks every `parameters` schema passes whatever format it came from, and the
offline validator of a call's arguments.

Every schema is checked against its JSON Schema meta-schema and must describe a JSON object, so
a bad spec fails here with a `ToolSpecError` naming the tool and the field, not later inside the
grammar engine or the model. Nothing is downloaded: see `toolken.tools.schema` for how `$schema`,
`$ref` and nesting depth are handled.

Names: any string of at most `MAX_TOOL_NAME_LENGTH` (1,024) characters with a visible character,
and none of: control characters, lone surrogates, line/paragraph separators, bidirectional
controls (`BIDI_CONTROLS`: they display text in another order than it is stored, the "Trojan
Source" trick) or invisible characters (`INVISIBLE_CHARACTERS`: they make two different names
look the same). OpenAI allows only `^[a-zA-Z0-9_-]{1,64}$` for function names; toolken keeps a
wider alphabet because real corpora name tools with dots, spaces and non-ASCII letters (BFCL's
`math.sum`, Seal-Tools' `requestFirst Aid Assistance`), and a length cap far above any real name
that still keeps a hostile name from flooding vocabularies and error messages. Zero-width joiners
(U+200C, U+200D) and variation selectors are allowed: emoji sequences and several scripts need
them.
"""
from __future__ import annotations

import functools
import json
import reprlib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import jsonschema
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from ..errors import ToolSpecError
from .schema import check_depth, offline_validator, schema_problem

EMPTY_PARAMETERS: dict = {"type": "object", "properties": {}}

OnConflict = Literal["error", "first"]


# ------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------
MAX_TOOL_NAME_LENGTH = 1024

# Unicode's Bidi_Control characters: ALM, LRM, RLM, LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# format characters that render as nothing: soft hyphen, Mongolian vowel separator, zero-width
# space, word joiner, invisible times/separator/plus/function application, zero-width no-break space
INVISIBLE_CHARACTERS = frozenset("\u00ad\u180e\u200b\u2060\u2061\u2062\u2063\u2064\ufeff")

_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 80
_BRIEF.maxlevel = 3


def brief(value: Any, limit: int = 80) -> str:
    """A short `repr` of any value for an error message: bounded in length and depth, so a
    hostile value (a 10,000-character string, a list nested 5,000 deep) cannot flood the
    message or overflow the stack."""
    return _BRIEF.repr(value)[:limit]


def require_iterable(value: Any, loader: str, expected: str) -> Iterable:
    """`value` if it can be iterated over (and is not a string or bytes), else a
    `ToolSpecError` saying what `loader` expects ("a list of tool specs") and what it got."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ToolSpecError(f"{loader} expects {expected}, got {type(value).__name__}: {brief(value)}")
    return value


def _is_visible(c: str) -> bool:
    return c.isprintable() and not c.isspace()


def _listed(chars: Iterable[str]) -> str:
    return ", ".join(sorted({repr(c) for c in chars}))


def validate_tool_name(name: Any) -> str:
    """Return `name` unchanged if it can name a tool, else raise `ToolSpecError`.

    A name is any string of 1 to `MAX_TOOL_NAME_LENGTH` characters with at least one visible
    character and no control characters (Unicode categories Cc), lone surrogates (Cs, not
    encodable as UTF-8) or line/paragraph separators (Zl, Zp): such characters cannot be part
    of a single vocabulary token. Bidirectional controls (`BIDI_CONTROLS`) and invisible
    characters (`INVISIBLE_CHARACTERS`) are refused too: they make a name display as another.
    Spaces, punctuation and non-ASCII letters are allowed and preserved exactly. Whether the
    name then tokenizes to one id under a given token format is checked by `toolken.extend`.
    """
    if not isinstance(name, str):
        raise ToolSpecError(f"tool name must be a string, got {type(name).__name__}: {brief(name)}")
    if not name:
        raise ToolSpecError("tool name must not be empty")
    if len(name) > MAX_TOOL_NAME_LENGTH:
        raise ToolSpecError(
            f"tool {name[:40]!r}... ({len(name)} characters): name is longer than {MAX_TOOL_NAME_LENGTH} "
            f"characters (MAX_TOOL_NAME_LENGTH); use a short name and put the details in the description"
        )
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if bad:
        raise ToolSpecError(
            f"tool {name!r:.120}: name contains control or line-break characters "
            f"({_listed(bad)}), which cannot form a token; remove them"
        )
    if not any(_is_visible(c) for c in name):
        raise ToolSpecError(f"tool name must contain a visible character, got {name!r:.80}")
    bidi = [c for c in name if c in BIDI_CONTROLS]
    if bidi:
        raise ToolSpecError(
            f"tool {name!r:.120}: name contains bidirectional control characters ({_listed(bidi)}), which "
            f"display text in another order than it is stored; remove them"
        )
    invisible = [c for c in name if c in INVISIBLE_CHARACTERS]
    if invisible:
        raise ToolSpecError(
            f"tool {name!r:.120}: name contains invisible characters ({_listed(invisible)}), which would "
            f"make different names look the same; remove them"
        )
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
        ToolSpecError: not a dict, nested deeper than `MAX_SCHEMA_DEPTH`, not plain JSON, not
            valid under its meta-schema, a `$ref` outside the schema or one that does not
            resolve, not an object schema, or `required` names missing from a closed
            `properties`. The message names the tool and the field.
    """
    if params is None or (isinstance(params, Mapping) and len(params) == 0):
        return dict(EMPTY_PARAMETERS, properties={})
    if not isinstance(params, Mapping):
        raise ToolSpecError(
            f"tool {name!r}: field 'parameters' must be a JSON Schema object (dict), got {type(params).__name__}"
        )
    check_depth(params, f"tool {name!r}")
    try:
        text = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ToolSpecError(f"tool {name!r}: field 'parameters' is not plain JSON: {e}") from None
    params = json.loads(text)
    problem = schema_problem(text)
    if problem is not None:
        where, message = problem
        raise ToolSpecError(f"tool {name!r}: field {where!r} {message}")
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


# ------------------------------------------------------------------------------------------
# arguments
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _validator_of(tool: Tool) -> Validator:
    return offline_validator(tool.parameters, f"tool {tool.name!r}")


def argument_validator(tool: Tool) -> Validator:
    """A `jsonschema` validator of `tool`'s arguments that never touches the network: the
    schema's draft (see `toolken.tools.schema.draft_of`), references resolved only inside the
    schema, through a registry whose retrieve function refuses. Cached per tool.

    Example:
        >>> tool = Tool("add", parameters={"type": "object", "properties": {"a": {"type": "integer"}}})
        >>> argument_validator(tool).is_valid({"a": 1})
        True

    Raises:
        ToolSpecError: the schema has a reference outside itself or one that does not resolve
            (possible only if `tool.parameters` was changed after the tool was made); the
            message names the tool, the field and the reference's JSON pointer.
    """
    return _validator_of(tool)


def argument_error(tool: Tool, arguments: Any) -> Optional[str]:
    """Why `arguments` (parsed JSON) are not valid for `tool`, as `"at <path>: <message>"`
    (the most relevant error, `jsonschema.exceptions.best_match`), or None if they are valid.
    Offline, as `argument_validator`.

    Raises:
        ToolSpecError: as `argument_validator`.
    """
    validator = argument_validator(tool)
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except RecursionError:  # a recursive schema and arguments nested thousands deep
        return "at (root): the arguments nest too deeply to validate"
    except Unresolvable as e:
        raise ToolSpecError(f"tool {tool.name!r}: field 'parameters' refers to {e.ref!r:.200}, "
                            f"which cannot be resolved inside the tool's schema") from None
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


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
