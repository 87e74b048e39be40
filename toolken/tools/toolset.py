"""`ToolSet`: an ordered collection of tools with unique names, and its loaders.

`ToolSet` sits above the format modules (`openai`, `python_callables`, `bfcl`, `seal_tools`):
each of them turns its format into `Tool`s and knows nothing of `ToolSet`, and the classmethods
here (`from_openai`, `from_json`, `from_functions`, `from_bfcl`, `from_seal_tools`) only
delegate to them. So imports go one way, spec -> formats -> toolset, with no cycle.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union, overload

from ..errors import ToolSpecError
from .bfcl import tools_from_bfcl
from .io import PathLike
from .openai import read_openai_json, tool_from_openai
from .python_callables import tool_from_function
from .seal_tools import tools_from_seal_tools
from .spec import OnConflict, Tool, ToolLike, require_iterable


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
        for t in require_iterable(tools, "ToolSet", "Tools or OpenAI tool specs"):
            tool = t if isinstance(t, Tool) else tool_from_openai(t)
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
        specs = require_iterable(specs, "ToolSet.from_openai", "a tool spec (dict) or a list of them")
        return cls(tool_from_openai(s) for s in specs)

    @classmethod
    def from_json(cls, path: PathLike) -> "ToolSet":
        """From a JSON file holding a list of OpenAI tool specs (or one spec, or `{"tools": [...]}`).

        Raises:
            ToolSpecError: the file cannot be read or parsed, or a spec in it is bad; the message
                starts with the file path.
        """
        data = read_openai_json(path)
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
        `Sequence[T]`, `set[T]` (an array: uniqueness is not enforced), `tuple[T, ...]`,
        `tuple[A, B]`, `dict[str, T]`, `Optional[T]`, `Union[...]` / `A | B`, `Literal[...]`
        (enum), `Enum` subclasses (enum of their values), dataclasses, `TypedDict`, `NewType`,
        and `Annotated[T, "description"]`.

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
        functions = require_iterable(functions, "ToolSet.from_functions", "a callable or a list of them")
        return cls(tool_from_function(f) for f in functions)  # type: ignore[union-attr]

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
        return cls(tools_from_bfcl(records, on_conflict))

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
        return cls(tools_from_seal_tools(path_or_records, on_conflict))


def as_toolset(tools: Union[ToolSet, Iterable[ToolLike]]) -> ToolSet:
    """Accept a ToolSet, Tools, or OpenAI dicts."""
    return tools if isinstance(tools, ToolSet) else ToolSet(tools)
