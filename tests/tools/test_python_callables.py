"""`toolken.tools.python_callables`: callables with Google, NumPy and reST docstrings become exact
schemas; every error names the function and the parameter; hypothesis generates signatures whose
schemas must accept real calls, reject wrong types and compile with the grammar engine.

Generated schemas are checked the way they are used: real argument objects must validate under
`jsonschema`, wrong ones must not.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import typing
from typing import Annotated, Any, Literal, NewType, Optional, TypedDict

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolken import ToolSet, ToolSpecError
from toolken.tools import parse_docstring

SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def is_valid(schema: dict, instance: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


# ------------------------------------------------------------------------------------------
# from_functions
# ------------------------------------------------------------------------------------------
class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Location:
    """A place on Earth.

    Attributes:
        lat: Latitude in degrees.
        lon: Longitude in degrees.
    """

    lat: float
    lon: float
    label: str = "home"
    tags: list[str] = dataclasses.field(default_factory=list)


class Filters(TypedDict, total=False):
    min_price: float
    brands: list[str]


class Passenger(TypedDict):
    name: str
    age: typing.NotRequired[int]


UserId = NewType("UserId", int)


def get_weather(city: str, unit: Unit = Unit.CELSIUS, days: int = 1, hourly: bool = False,
                at: Optional[Location] = None) -> dict:
    """Get the weather forecast for a city.

    Uses the public forecast service.

    Args:
        city (str): Name of the city,
            e.g. "Paris".
        unit: Temperature unit.
        days: Number of days to forecast.
        hourly: Whether to include hourly data.
        at: Exact location, overriding the city.

    Returns:
        dict: The forecast.
    """
    return {}


def search_products(query: str, filters: Filters, limit: int = 10, sort: Literal["price", "rating", None] = None,
                    weights: dict[str, float] | None = None, ids: list[UserId] = ()) -> list:
    """Search the catalogue.

    Parameters
    ----------
    query : str
        Free-text query.
    filters : Filters
        Narrow the results.
    limit : int, optional
        Maximum number of results
        to return.

    Returns
    -------
    list
        The products.
    """
    return []


def book(passengers: list[Passenger], seat: tuple[str, int], extras: set[str], priority: Priority,
         note: Annotated[str, "Free text for the crew"] = "", **options: bool) -> str:
    """Book a flight.

    :param passengers: Who flies.
    :param tuple seat: Row letter and
        row number.
    :param extras: Add-ons.
    :returns: A booking code.
    """
    return ""


def test_from_functions_google_docstring_exact_schema():
    tool = ToolSet.from_functions([get_weather])[0]
    assert tool.name == "get_weather"
    assert tool.description == "Get the weather forecast for a city.\n\nUses the public forecast service."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": 'Name of the city, e.g. "Paris".'},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit.",
                     "default": "celsius"},
            "days": {"type": "integer", "description": "Number of days to forecast.", "default": 1},
            "hourly": {"type": "boolean", "description": "Whether to include hourly data.", "default": False},
            "at": {
                "anyOf": [
                    {"type": "object",
                     "properties": {
                         "lat": {"type": "number", "description": "Latitude in degrees."},
                         "lon": {"type": "number", "description": "Longitude in degrees."},
                         "label": {"type": "string", "default": "home"},
                         "tags": {"type": "array", "items": {"type": "string"}}},
                     "required": ["lat", "lon"], "additionalProperties": False},
                    {"type": "null"},
                ],
                "description": "Exact location, overriding the city.",
                "default": None,
            },
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    schema = tool.parameters
    assert is_valid(schema, {"city": "Paris"})
    assert is_valid(schema, {"city": "Paris", "unit": "fahrenheit", "days": 3, "at": {"lat": 48.8, "lon": 2.3}})
    assert not is_valid(schema, {"unit": "celsius"})
    assert not is_valid(schema, {"city": "Paris", "unit": "kelvin"})
    assert not is_valid(schema, {"city": "Paris", "at": {"lat": 1.0}})
    assert not is_valid(schema, {"city": "Paris", "country": "FR"})


def test_from_functions_numpy_docstring_typeddict_literal_union():
    tool = ToolSet.from_functions(search_products)[0]
    props = tool.parameters["properties"]
    assert tool.description == "Search the catalogue."
    assert props["query"] == {"type": "string", "description": "Free-text query."}
    assert props["filters"] == {
        "type": "object", "description": "Narrow the results.", "additionalProperties": False,
        "properties": {"min_price": {"type": "number"}, "brands": {"type": "array", "items": {"type": "string"}}}}
    assert props["limit"] == {"type": "integer", "description": "Maximum number of results to return.", "default": 10}
    assert props["sort"] == {"enum": ["price", "rating", None], "default": None}
    assert props["weights"] == {"anyOf": [{"type": "object", "additionalProperties": {"type": "number"}},
                                          {"type": "null"}], "default": None}
    assert props["ids"] == {"type": "array", "items": {"type": "integer"}, "default": []}
    assert tool.parameters["required"] == ["query", "filters"]
    schema = tool.parameters
    assert is_valid(schema, {"query": "tv", "filters": {}, "sort": None, "weights": {"a": 0.5}, "ids": [1, 2]})
    assert not is_valid(schema, {"query": "tv", "filters": {"colour": "red"}})
    assert not is_valid(schema, {"query": "tv", "filters": {}, "sort": "name"})
    assert not is_valid(schema, {"query": "tv", "filters": {}, "weights": {"a": "x"}})


def test_from_functions_rest_docstring_tuple_set_enum_annotated_kwargs():
    tool = ToolSet.from_functions([book])[0]
    props = tool.parameters["properties"]
    assert tool.description == "Book a flight."
    assert props["passengers"] == {
        "type": "array", "description": "Who flies.",
        "items": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                  "required": ["name"], "additionalProperties": False}}
    assert props["seat"] == {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
                             "items": False, "minItems": 2, "maxItems": 2, "description": "Row letter and row number."}
    assert props["extras"] == {"type": "array", "items": {"type": "string"}, "description": "Add-ons."}
    assert props["priority"] == {"type": "integer", "enum": [1, 2]}
    assert props["note"] == {"type": "string", "description": "Free text for the crew", "default": ""}
    assert tool.parameters["additionalProperties"] == {"type": "boolean"}
    schema = tool.parameters
    call = {"passengers": [{"name": "Ada"}], "seat": ["C", 12], "extras": ["meal"], "priority": 2, "express": True}
    assert is_valid(schema, call)
    assert not is_valid(schema, {**call, "seat": ["C", 12, 1]})
    assert not is_valid(schema, {**call, "extras": "meal"})
    assert not is_valid(schema, {**call, "express": "yes"})
    assert not is_valid(schema, {**call, "priority": 3})


def test_from_functions_methods_string_annotations_and_unannotated():
    class Service:
        def lookup(self, key: "str", fallback=None) -> str:
            """Look up a key."""
            return key

    tool = ToolSet.from_functions([Service().lookup])[0]
    assert tool.name == "lookup"
    assert tool.parameters == {"type": "object", "properties": {"key": {"type": "string"}, "fallback": {"default": None}},
                               "required": ["key"], "additionalProperties": False}

    def no_doc(x: Any, y: object = 1.5): ...

    tool = ToolSet.from_functions([no_doc])[0]
    assert tool.description == ""
    assert tool.parameters["properties"] == {"x": {}, "y": {"default": 1.5}}


def test_from_functions_drops_defaults_that_contradict_the_schema():
    def f(a: int = None, b: list[int] = (1, 2), c: str = object()):  # type: ignore[assignment]
        ...

    props = ToolSet.from_functions([f])[0].parameters["properties"]
    assert props == {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "integer"}, "default": [1, 2]},
                     "c": {"type": "string"}}


@dataclasses.dataclass
class Node:
    value: int
    children: list["Node"]


class Shape(enum.Enum):
    SQUARE = object()


def _unsupported(x: complex): ...
def _bytes(data: bytes): ...
def _plain_class(loc: inspect.Signature): ...
def _varargs(*names: str): ...
def _int_keys(table: dict[int, str]): ...
def _recursive(tree: Node): ...
def _bad_literal(x: Literal[b"raw"]): ...
def _bad_enum(shape: Shape): ...
def _unresolved(x: "NoSuchType"): ...  # noqa: F821
def _nested_unsupported(x: Optional[list[complex]]): ...


@pytest.mark.parametrize("fn, message", [
    (_unsupported, r"function '_unsupported': parameter 'x': unsupported type annotation <class 'complex'>"),
    (_bytes, r"function '_bytes': parameter 'data': unsupported type annotation <class 'bytes'>"),
    (_plain_class, r"function '_plain_class': parameter 'loc': unsupported type annotation"),
    (_varargs, r"function '_varargs': parameter 'names': \*args cannot be passed as named JSON arguments"),
    (_int_keys, r"function '_int_keys': parameter 'table': dict keys must be str"),
    (_recursive, r"function '_recursive': parameter 'tree' \(field Node\.children\): recursive type Node"),
    (_bad_literal, r"function '_bad_literal': parameter 'x': Literal value b'raw' is not a JSON scalar"),
    (_bad_enum, r"function '_bad_enum': parameter 'shape': enum Shape value <object object .*> is not a JSON scalar"),
    (_unresolved, r"function '_unresolved': cannot resolve its type hints: name 'NoSuchType' is not defined"),
    (_nested_unsupported, r"function '_nested_unsupported': parameter 'x': unsupported type annotation <class 'complex'>"),
    (functools.partial(get_weather, "Paris"), r"has no __name__"),
    (42, r"from_functions expects callables, got int"),
])
def test_from_functions_errors_name_function_and_parameter(fn, message):
    with pytest.raises(ToolSpecError, match=message):
        ToolSet.from_functions([fn])


def test_from_functions_duplicate_names():
    with pytest.raises(ToolSpecError, match=r"tool 'get_weather' is defined twice"):
        ToolSet.from_functions([get_weather, get_weather])


def test_parse_docstring_styles():
    assert parse_docstring("") == ("", {})
    assert parse_docstring("Just a summary.") == ("Just a summary.", {})
    google = """Summary.

    Args:
        a (int): First
            second line.
        *rest: Extra values.
        b: Kept.

    Raises:
        ValueError: not a parameter.
    """
    assert parse_docstring(google) == ("Summary.", {"a": "First second line.", "rest": "Extra values.", "b": "Kept."})
    numpy = """Summary.

    Other Parameters
    ----------------
    c : {'x', 'y'}, optional
        Choice.
    d
        No type.

    Raises
    ------
    ValueError
        not a parameter.
    """
    assert parse_docstring(numpy) == ("Summary.", {"c": "Choice.", "d": "No type."})
    rest = """Summary.

    Details.

    :param a: First.
    :type a: int
    :keyword str b: Second
        continued.
    :raises ValueError: never.
    """
    assert parse_docstring(rest) == ("Summary.\n\nDetails.", {"a": "First.", "b": "Second continued."})


# -- generated signatures -------------------------------------------------------------------
# Each case is (annotation, strategy of valid Python values, a JSON value of the wrong type).
SCALAR_CASES = [
    (str, st.text(max_size=6), 1),
    (int, st.integers(), "1"),
    (float, st.floats(allow_nan=False, allow_infinity=False), "1.5"),
    (bool, st.booleans(), 0),
    (Any, st.integers() | st.text(max_size=3), None),
]


def _literal_case(values: list) -> tuple:
    return (Literal[tuple(values)], st.sampled_from(values), "not-a-choice")


LITERALS = st.lists(st.one_of(st.text(min_size=1, max_size=4), st.integers(-5, 5)), min_size=1, max_size=4,
                    unique_by=lambda v: (type(v), v)).map(_literal_case)


def _extend(children):
    def list_of(case):
        ann, values, _ = case
        return (list[ann], st.lists(values, max_size=3), {"not": "a list"})

    def dict_of(case):
        ann, values, _ = case
        return (dict[str, ann], st.dictionaries(st.text(max_size=3), values, max_size=3), ["not", "a", "dict"])

    def optional(case):
        ann, values, bad = case
        return (Optional[ann], st.none() | values, bad)

    def tuple_of(case):
        ann, values, _ = case
        return (tuple[ann, ...], st.lists(values, max_size=3).map(tuple), "not a tuple")

    return st.one_of(children.map(list_of), children.map(dict_of), children.map(optional), children.map(tuple_of))


ANNOTATION_CASES = st.recursive(st.sampled_from(SCALAR_CASES) | LITERALS, _extend, max_leaves=4)


@st.composite
def generated_functions(draw):
    cases = draw(st.lists(ANNOTATION_CASES, min_size=1, max_size=5))
    params, values, bad = [], {}, {}
    for i, (ann, value_strategy, wrong) in enumerate(cases):
        name = f"p{i}"
        default = draw(value_strategy) if draw(st.booleans()) else inspect.Parameter.empty
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann))
        values[name] = draw(value_strategy)
        bad[name] = wrong

    def generated(**kwargs):
        return kwargs

    generated.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    generated.__annotations__ = {p.name: p.annotation for p in params}
    omit = draw(st.sets(st.sampled_from([p.name for p in params if p.default is not p.empty] or ["-"])))
    return generated, params, {k: v for k, v in values.items() if k not in omit}, bad


def _jsonable(value):
    return json.loads(json.dumps(value))


@SETTINGS
@given(generated_functions(), st.data())
def test_generated_signatures_schema_accepts_real_calls_and_rejects_wrong_types(case, data):
    fn, params, call, bad = case
    tool = ToolSet.from_functions([fn])[0]
    schema = tool.parameters
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema.get("required", []) == [p.name for p in params if p.default is p.empty]
    for p in params:
        if p.default is not p.empty:
            assert schema["properties"][p.name]["default"] == _jsonable(p.default)
    assert is_valid(schema, _jsonable(call))
    target = data.draw(st.sampled_from([p for p in params if bad[p.name] is not None] or [None]))
    if target is not None:
        assert not is_valid(schema, _jsonable({**call, target.name: bad[target.name]}))
    assert not is_valid(schema, _jsonable({**call, "unexpected_argument": 1}))


def test_generated_schemas_compile_with_the_grammar_engine(byte_grammar):
    """What the loader emits is what constrained decoding consumes: every schema built here from
    callables compiles (byte-level vocabulary)."""
    grammar, vocab = byte_grammar
    for tool in ToolSet.from_functions([get_weather, search_products, book]):
        grammar.compile_json_schema(tool.parameters, vocab)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(generated_functions())
def test_generated_signature_schemas_compile_with_the_grammar_engine(byte_grammar, case):
    grammar, vocab = byte_grammar
    grammar.compile_json_schema(ToolSet.from_functions([case[0]])[0].parameters, vocab)
