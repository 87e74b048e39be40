"""OpenAI function specs: `{"type": "function", "function": {name, description, parameters}}`
or the bare `{name, description, parameters}`, in memory or in a JSON file.

This is `Tool`'s own shape (`Tool.to_openai` writes it), so `parameters` is taken as given
and only checked (see `spec.check_parameters`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Union

from ..errors import ToolSpecError
from .io import PathLike, load_json_document
from .spec import Tool, brief, validate_tool_name


def tool_from_openai(spec: Mapping[str, Any]) -> Tool:
    """One OpenAI spec (either shape) as a `Tool`.

    Raises:
        ToolSpecError: not a dict, a non-function `type`, no `name`, or a bad name or schema.
    """
    if not isinstance(spec, Mapping):
        raise ToolSpecError(f"a tool spec must be a dict, got {type(spec).__name__}: {brief(spec)}")
    if "function" in spec and isinstance(spec.get("function"), Mapping):
        if spec.get("type", "function") != "function":
            raise ToolSpecError(f"tool spec has field 'type'={spec['type']!r}; only 'function' tools are supported")
        spec = spec["function"]
    if "name" not in spec:
        raise ToolSpecError(f"tool spec is missing field 'name': {brief(spec, 120)}")
    name = validate_tool_name(spec["name"])
    return Tool(name=name, description=spec.get("description") or "", parameters=spec.get("parameters"))


def read_openai_json(path: PathLike) -> Union[list, Mapping[str, Any]]:
    """The specs held by a JSON file: a list of specs, one spec, or `{"tools": [...]}` (unwrapped).

    Raises:
        ToolSpecError: the file cannot be read or parsed, or holds something else; the message
            names the file.
    """
    data = load_json_document(path)
    if isinstance(data, Mapping) and "tools" in data and "name" not in data and "function" not in data:
        data = data["tools"]
    if not isinstance(data, (list, Mapping)):
        raise ToolSpecError(f"{os.fspath(path)}: expected a list of tool specs, got {type(data).__name__}")
    return data
