"""Tools and tool sets: the specs that become tool tokens.

A `Tool` is a name, a description and a JSON Schema object for its arguments (the OpenAI
function-calling shape). A `ToolSet` is an ordered collection with unique names; loaders turn
other formats (OpenAI, Python callables, BFCL, Seal-Tools) into it. Every schema is checked
against its JSON Schema meta-schema, so a bad spec fails here, naming the tool and the field,
not later inside the grammar engine or the model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union, overload

import jsonschema

from .errors import ToolSpecError

EMPTY_PARAMETERS: dict = {"type": "object", "properties": {}}


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ToolSpecError(f"tool name must be a string, got {type(name).__name__}: {name!r}")
    if not name.strip():
        raise ToolSpecError(f"tool name must not be empty or blank, got {name!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ToolSpecError(f"tool {name!r}: name contains control characters, which cannot form a token")
    return name


@dataclass(frozen=True)
class Tool:
    """One tool: `name`, `description` and `parameters` (a JSON Schema, normally an object)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.description, str):
            raise ToolSpecError(
                f"tool {self.name!r}: field 'description' must be a string, "
                f"got {type(self.description).__name__}"
            )
        params = self.parameters
        if params is None:
            params = dict(EMPTY_PARAMETERS)
        if not isinstance(params, Mapping):
            raise ToolSpecError(
                f"tool {self.name!r}: field 'parameters' must be a JSON Schema object (dict), "
                f"got {type(params).__name__}"
            )
        try:
            params = json.loads(json.dumps(params))  # deep copy; proves it is plain JSON
        except (TypeError, ValueError) as e:
            raise ToolSpecError(f"tool {self.name!r}: field 'parameters' is not JSON-serializable: {e}") from None
        validator = jsonschema.validators.validator_for(params, default=jsonschema.Draft202012Validator)
        try:
            validator.check_schema(params)
        except jsonschema.SchemaError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "(root)"
            raise ToolSpecError(
                f"tool {self.name!r}: field 'parameters' is not a valid JSON Schema at {where}: {e.message}"
            ) from None
        object.__setattr__(self, "parameters", params)

    def to_openai(self) -> dict:
        """The OpenAI `{"type": "function", "function": {...}}` form."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
        }

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": json.loads(json.dumps(self.parameters))}

    def __hash__(self) -> int:
        return hash((self.name, self.description, json.dumps(self.parameters, sort_keys=True)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tool):
            return NotImplemented
        return self.to_dict() == other.to_dict()


ToolLike = Union[Tool, Mapping[str, Any]]


class ToolSet(Sequence[Tool]):
    """An ordered set of tools with unique names. Index by position or by name."""

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

    def __repr__(self) -> str:
        names = ", ".join(t.name for t in self._tools[:5])
        more = f", ... ({len(self)} tools)" if len(self) > 5 else ""
        return f"ToolSet([{names}{more}])"

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tools]

    # -- conversions -------------------------------------------------------------------------
    @classmethod
    def from_openai(cls, specs: Iterable[Mapping[str, Any]]) -> "ToolSet":
        """From OpenAI tool specs: `{"type": "function", "function": {...}}` or bare
        `{"name", "description", "parameters"}`."""
        if isinstance(specs, Mapping):
            specs = [specs]
        return cls(_tool_from_openai(s) for s in specs)

    def to_openai(self) -> list[dict]:
        return [t.to_openai() for t in self._tools]


def as_toolset(tools: Union[ToolSet, Iterable[ToolLike]]) -> ToolSet:
    """Accept a ToolSet, Tools, or OpenAI dicts."""
    return tools if isinstance(tools, ToolSet) else ToolSet(tools)


def _tool_from_openai(spec: Mapping[str, Any]) -> Tool:
    if not isinstance(spec, Mapping):
        raise ToolSpecError(f"a tool spec must be a dict, got {type(spec).__name__}: {spec!r:.80}")
    if "function" in spec and isinstance(spec.get("function"), Mapping):
        if spec.get("type", "function") != "function":
            raise ToolSpecError(f"tool spec has field 'type'={spec['type']!r}; only 'function' tools are supported")
        spec = spec["function"]
    if "name" not in spec:
        raise ToolSpecError(f"tool spec is missing field 'name': {json.dumps(spec, default=str)[:120]}")
    name = _check_name(spec["name"])
    return Tool(name=name, description=spec.get("description") or "", parameters=spec.get("parameters"))
