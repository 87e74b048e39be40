"""The Seal-Tools corpus (Wu et al., 2024): `tool.jsonl.gz` records `{"api_name",
"api_description", "parameters": {name: {"type", "description", ...}}, "required": [...]}`.

Names are kept exactly as given (the corpus has names with spaces and dots). Types map by
`SEAL_TYPES`. The parameter list is closed, so the schema says `"additionalProperties": false`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Union

from ..errors import DataError, ToolSpecError
from .io import PathLike, load_json_records
from .spec import OnConflict, Tool, brief, merge_unique, require_iterable, validate_tool_name

SEAL_TYPES: dict[str, dict] = {
    # the four type strings used by the released Seal-Tools corpus
    "str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"}, "bool": {"type": "boolean"},
    # aliases accepted for Seal-Tools-style data written by hand
    "string": {"type": "string"}, "integer": {"type": "integer"}, "number": {"type": "number"},
    "boolean": {"type": "boolean"}, "list": {"type": "array"}, "array": {"type": "array"},
    "dict": {"type": "object"}, "object": {"type": "object"},
}


def tools_from_seal_tools(path_or_records: Union[PathLike, Iterable[Mapping[str, Any]]],
                          on_conflict: OnConflict = "error") -> list[Tool]:
    """The tools of a Seal-Tools file (`.jsonl`, `.jsonl.gz`) or list of records, one per name
    (see `ToolSet.from_seal_tools`).

    Raises:
        ToolSpecError: a malformed entry or conflicting names; the message starts with the file
            path when given one.
    """
    source = ""
    if isinstance(path_or_records, (str, os.PathLike)):
        source = f"{os.fspath(path_or_records)}: "
        path_or_records = load_json_records(path_or_records)
    require_iterable(path_or_records, "ToolSet.from_seal_tools", "a path or a list of Seal-Tools records")
    try:
        entries = [(tool_from_seal(record, i), f"entry #{i}") for i, record in enumerate(path_or_records)]
        return merge_unique(entries, on_conflict)
    except ToolSpecError as e:
        raise ToolSpecError(f"{source}{e}") from None


def tool_from_seal(record: Any, index: int) -> Tool:
    """Seal-Tools entry number `index` as a `Tool`: per parameter, `description` and `default`
    are kept, `choices` becomes `enum`, `unit` is appended to the description; example fields,
    `field` and `responses` are dropped."""
    if not isinstance(record, Mapping):
        raise ToolSpecError(f"Seal-Tools entry #{index}: expected a dict, got {type(record).__name__}")
    if "api_name" not in record:
        raise ToolSpecError(f"Seal-Tools entry #{index}: missing field 'api_name'")
    name = validate_tool_name(record["api_name"])
    params = record.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise ToolSpecError(f"tool {name!r}: field 'parameters' must be a dict of parameters, got {type(params).__name__}")
    properties = {pname: _parameter_schema(pspec, f"tool {name!r}: field 'parameters.{pname}")
                  for pname, pspec in params.items()}
    required = record.get("required") or []
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ToolSpecError(f"tool {name!r}: field 'required' must be a list of parameter names")
    unknown = [r for r in required if r not in properties]
    if unknown:
        raise ToolSpecError(f"tool {name!r}: field 'required' names {unknown}, which are not in 'parameters'")
    description = record.get("api_description") or ""
    parameters = {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}
    return Tool(name=name, description=description, parameters=parameters)


def _parameter_schema(pspec: Any, where: str) -> dict:
    """One Seal-Tools parameter as JSON Schema; `where` is the error prefix ending in the field
    path (without the closing quote)."""
    if not isinstance(pspec, Mapping):
        raise ToolSpecError(f"{where}' must be a dict with 'type' and 'description'")
    ptype = pspec.get("type")
    if not isinstance(ptype, str) or ptype not in SEAL_TYPES:
        raise ToolSpecError(f"{where}.type' has unknown Seal-Tools type {brief(ptype)}; known: {sorted(SEAL_TYPES)}")
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
    return schema


def seal_tools_calls(record: Mapping[str, Any], where: str) -> list[str]:
    """The tool names a Seal-Tools query record calls (``"calling": [{"api": name, ...}]``), in
    call order; a malformed list is a `DataError` starting with `where`."""
    calls = record["calling"]
    if not isinstance(calls, list) or not all(isinstance(c, Mapping) and isinstance(c.get("api"), str) for c in calls):
        raise DataError(f"{where}: 'calling' must be a list of {{'api': name, ...}} objects")
    return [c["api"] for c in calls]
