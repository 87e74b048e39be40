"""Tools and tool sets: every loader on realistic inputs, the full Seal-Tools corpus, round trips,
every error path (message checked), and hypothesis over tool names and generated signatures.

Generated schemas are checked the way they are used: real argument objects must validate under
`jsonschema`, wrong ones must not.
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
import typing
from typing import Annotated, Any, Literal, NewType, Optional, TypedDict, Union

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import toolken.tools as tools_mod
from toolken import Tool, ToolSet, ToolSpecError
from toolken.tools import BFCL_TYPES, SEAL_TYPES, as_toolset, parse_docstring, validate_tool_name

SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def is_valid(schema: dict, instance: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


def roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.fixture(params=["jsonschema-rs", "jsonschema"])
def meta_checker(request, monkeypatch):
    """Run a test with the optional jsonschema-rs fast path and with plain jsonschema."""
    if request.param == "jsonschema-rs":
        if tools_mod._jsonschema_rs is None:
            pytest.skip("jsonschema-rs not installed")
    else:
        monkeypatch.setattr(tools_mod, "_jsonschema_rs", None)
    tools_mod._meta_schema_error.cache_clear()
    yield request.param
    tools_mod._meta_schema_error.cache_clear()


# ------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "get_weather", "requestFirst Aid Assistance", "getPM2.5Level", "createIn-AppMessage", "math.sum",
    " padded ", "天气查询", "émoji🙂", "Ünïcødé_ñame", "x-y/z:1", "a" * 500, "<lambda>", "$", "\u00a0x",
])
def test_valid_names_are_preserved_exactly(name):
    assert validate_tool_name(name) == name
    tool = Tool(name, "d")
    assert tool.name == name
    ts = ToolSet([tool])
    assert ts.names == [name] and ts[name] is tool
    assert ToolSet.from_openai(roundtrip(ts.to_openai())).names == [name]


@pytest.mark.parametrize("name, message", [
    ("", "must not be empty"),
    ("   ", "must contain a visible character"),
    ("\u200b\u3000", "must contain a visible character"),
    ("a\nb", "control or line-break characters"),
    ("nul\x00", "control or line-break characters"),
    ("tab\there", "control or line-break characters"),
    ("del\x7f", "control or line-break characters"),
    ("c1\x85", "control or line-break characters"),
    ("x\u2028y", "control or line-break characters"),
    ("x\u2029y", "control or line-break characters"),
    ("lone\ud800surrogate", "control or line-break characters"),
    (None, "must be a string, got NoneType"),
    (3, "must be a string, got int"),
    (b"bytes", "must be a string, got bytes"),
])
def test_invalid_names_rejected(name, message):
    with pytest.raises(ToolSpecError, match=message):
        validate_tool_name(name)
    with pytest.raises(ToolSpecError, match=message):
        Tool(name)
    with pytest.raises(ToolSpecError, match=message):
        ToolSet.from_openai([{"name": name}])


VISIBLE = st.characters(categories=("L", "M", "N", "P", "S"))
SPACES = st.sampled_from([" ", "\u00a0", "\u3000", "\u2009"])


@SETTINGS
@given(st.lists(st.one_of(VISIBLE, SPACES), min_size=1, max_size=80).filter(
    lambda cs: any(not c.isspace() and c.isprintable() for c in cs)))
def test_names_of_visible_characters_and_spaces_are_accepted(chars):
    name = "".join(chars)
    tool = Tool(name, "desc")
    assert tool.name == name
    assert ToolSet.from_openai(roundtrip(ToolSet([tool]).to_openai()))[0].name == name


@SETTINGS
@given(st.text(max_size=20), st.characters(categories=("Cc",)), st.text(max_size=20))
def test_names_with_a_control_character_are_rejected(prefix, control, suffix):
    with pytest.raises(ToolSpecError):
        Tool(prefix + control + suffix)


@SETTINGS
@given(st.one_of(st.text(), st.text(st.characters(categories=("Cs", "Co", "Cn", "Mn"))),
                 st.text(st.characters(categories=("Zs", "Cc", "Cf", "Zl", "Zp")))))
def test_any_name_is_accepted_verbatim_or_rejected_with_toolspecerror(name):
    try:
        tool = Tool(name)
    except ToolSpecError:
        return  # the only exception type allowed
    assert tool.name == name
    assert json.loads(json.dumps(tool.to_openai()))["function"]["name"] == name


# ------------------------------------------------------------------------------------------
# Tool validation
# ------------------------------------------------------------------------------------------
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
SEARCH = {
    "name": "search_flights",
    "description": "Find flights.",
    "parameters": {
        "type": "object",
        "properties": {
            "route": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
                      "required": ["from", "to"]},
            "passengers": {"type": "array", "items": {"type": "object", "properties": {
                "age": {"type": "integer"}, "name": {"type": "string"}}}},
            "flexible": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
        },
        "required": ["route"],
    },
}
NO_ARGS = {"type": "function", "function": {"name": "get_time"}}


def test_tool_defaults_and_empty_parameters():
    assert Tool("t").parameters == {"type": "object", "properties": {}}
    assert Tool("t", parameters=None).parameters == {"type": "object", "properties": {}}
    assert Tool("t", parameters={}).parameters == {"type": "object", "properties": {}}
    assert Tool("t", parameters={"properties": {"a": {}}}).parameters == {"properties": {"a": {}}}


def test_tool_copies_and_compares_by_value():
    params = roundtrip(WEATHER["function"]["parameters"])
    tool = Tool("get_weather", "d", params)
    params["properties"]["city"]["type"] = "integer"
    assert tool.parameters["properties"]["city"]["type"] == "string"
    out = tool.to_openai()
    out["function"]["parameters"]["properties"].clear()
    assert tool.parameters["properties"]
    same = Tool("get_weather", "d", WEATHER["function"]["parameters"])
    assert tool == same and hash(tool) == hash(same) and len({tool, same}) == 1
    assert tool != Tool("get_weather", "other", WEATHER["function"]["parameters"])


@pytest.mark.parametrize("parameters, message", [
    ({"type": "string"}, r"tool 'f': field 'parameters\.type' must be 'object' .*got 'string'"),
    ({"type": ["object", "null"]}, r"tool 'f': field 'parameters\.type' must be 'object'"),
    ({"items": {"type": "string"}}, r"tool 'f': field 'parameters' must be an object schema"),
    ({"type": "object", "properties": {"city": {"type": "strng"}}},
     r"tool 'f': field 'parameters\.properties\.city\.type' is not valid JSON Schema"),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}},
     r"tool 'f': field 'parameters\.properties\.n\.minimum' is not valid JSON Schema"),
    ({"type": "object", "required": "city"}, r"tool 'f': field 'parameters\.required' is not valid JSON Schema"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"],
      "additionalProperties": False}, r"tool 'f': field 'parameters\.required' names \['b'\] which are not in"),
    ({"type": "object", "properties": {"a": {"enum": {1, 2}}}}, r"tool 'f': field 'parameters' is not plain JSON"),
    ({"type": "object", "properties": {"a": {"maximum": float("nan")}}}, r"tool 'f': field 'parameters' is not plain JSON"),
    (["type", "object"], r"tool 'f': field 'parameters' must be a JSON Schema object \(dict\), got list"),
])
def test_bad_parameters_name_tool_and_field(parameters, message, meta_checker):
    with pytest.raises(ToolSpecError, match=message):
        Tool("f", "d", parameters)


def test_bad_description_names_field():
    with pytest.raises(ToolSpecError, match=r"tool 'f': field 'description' must be a string, got int"):
        Tool("f", 3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# ToolSet and OpenAI
# ------------------------------------------------------------------------------------------
def test_from_openai_both_shapes_and_round_trip():
    ts = ToolSet.from_openai([WEATHER, SEARCH, NO_ARGS])
    assert ts.names == ["get_weather", "search_flights", "get_time"]
    assert ts["search_flights"].parameters == SEARCH["parameters"]
    assert ts["get_time"].parameters == {"type": "object", "properties": {}}
    assert ts.to_openai()[0] == WEATHER
    assert ToolSet.from_openai(ts.to_openai()) == ts
    assert ToolSet.from_openai(roundtrip(ts.to_openai())) == ts
    assert ToolSet.from_openai(SEARCH).names == ["search_flights"]  # one spec
    assert ts[1:].names == ["search_flights", "get_time"] and ts[0].name == "get_weather"
    assert "get_time" in ts and ts["get_time"] in ts and "nope" not in ts
    assert as_toolset(ts) is ts and as_toolset([WEATHER]).names == ["get_weather"]
    with pytest.raises(KeyError, match="no tool named 'nope'"):
        ts["nope"]


@pytest.mark.parametrize("specs, message", [
    ([WEATHER, WEATHER], r"tool 'get_weather' is defined twice; tool names must be unique"),
    ([{"type": "retrieval", "function": {"name": "x"}}], r"field 'type'='retrieval'; only 'function' tools"),
    ([{"description": "no name"}], r"tool spec is missing field 'name'"),
    (["get_weather"], r"a tool spec must be a dict, got str"),
    ([{"name": "f", "parameters": {"type": "array"}}], r"tool 'f': field 'parameters\.type' must be 'object'"),
])
def test_from_openai_errors(specs, message):
    with pytest.raises(ToolSpecError, match=message):
        ToolSet.from_openai(specs)


def test_from_json(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([WEATHER, SEARCH]))
    assert ToolSet.from_json(path).names == ["get_weather", "search_flights"]
    assert ToolSet.from_json(str(path)) == ToolSet.from_openai([WEATHER, SEARCH])
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"tools": [WEATHER]}))
    assert ToolSet.from_json(wrapped).names == ["get_weather"]
    single = tmp_path / "single.json"
    single.write_text(json.dumps(SEARCH))
    assert ToolSet.from_json(single).names == ["search_flights"]


def test_from_json_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ToolSpecError, match=r"cannot read tool file .*missing\.json"):
        ToolSet.from_json(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ToolSpecError, match=r"broken\.json: not valid JSON"):
        ToolSet.from_json(broken)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([WEATHER, {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": 1}}}}]))
    with pytest.raises(ToolSpecError, match=r"bad\.json: tool 'f': field 'parameters\.properties\.x\.type'"):
        ToolSet.from_json(bad)
    scalar = tmp_path / "scalar.json"
    scalar.write_text("42")
    with pytest.raises(ToolSpecError, match=r"scalar\.json: expected a list of tool specs, got int"):
        ToolSet.from_json(scalar)


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


# ------------------------------------------------------------------------------------------
# BFCL
# ------------------------------------------------------------------------------------------
# Written in the shape of the real BFCL v4 records (simple_python / simple_java / simple_javascript).
PY_RECORD = {
    "id": "simple_python_7",
    "question": [[{"role": "user", "content": "Book a table for 4 at 7pm near 40.7,-74.0"}]],
    "function": [{
        "name": "restaurant.book_table",
        "description": "Book a table at a restaurant.",
        "parameters": {
            "type": "dict",
            "properties": {
                "location": {"type": "tuple", "items": {"type": "float"}, "description": "(lat, lon)."},
                "party_size": {"type": "integer", "description": "Number of guests."},
                "time": {"type": "string", "enum": ["18:00", "19:00", "20:00"], "description": "Time slot."},
                "preferences": {"type": "dict", "description": "Seating preferences.", "properties": {
                    "outdoor": {"type": "boolean", "default": False},
                    "allergies": {"type": "array", "items": {"type": "string"}}}},
                "budget": {"type": "float", "description": "Max spend.", "default": 100.0, "optional": True},
                "metadata": {"type": "any", "description": "Anything else."},
            },
            "required": ["location", "party_size", "time"],
            "optional": ["preferences"],
        },
    }],
}
JAVA_RECORD = {
    "id": "simple_java_3",
    "question": [[{"role": "user", "content": "Update the status of products 12 and 15"}]],
    "function": [{
        "name": "PmsProductServiceImpl.updateStatus",
        "description": "Update product status.",
        "parameters": {
            "type": "dict",
            "properties": {
                "ids": {"type": "ArrayList", "description": "Product IDs.", "items": {"type": "long"}},
                "status": {"type": "int", "description": "New status."},
                "reason": {"type": "String", "description": "Why."},
                "attributes": {"type": "HashMap", "description": "Extra attributes."},
                "grade": {"type": "char", "description": "A letter grade."},
                "flags": {"type": "byte", "description": "Bit flags."},
                "batch": {"type": "short", "description": "Batch number."},
                "ratio": {"type": "double", "description": "Discount ratio."},
                "notify": {"type": "boolean", "description": "Send e-mail."},
                "names": {"type": "Array", "items": {"type": "String"}, "description": "Display names."},
                "context": {"type": "any", "description": "Caller context."},
            },
            "required": ["ids", "status"],
        },
    }],
}
JS_RECORD = {
    "id": "simple_javascript_4",
    "question": [[{"role": "user", "content": "Create an auth token"}]],
    "function": [{
        "name": "createAuthToken",
        "description": "Create an authentication token.",
        "parameters": {
            "type": "dict",
            "properties": {
                "username": {"type": "String", "description": "User name."},
                "scopes": {"type": "array", "items": {"type": "String"}, "description": "Scopes."},
                "options": {"type": "dict", "description": "Token options.", "properties": {
                    "expiresIn": {"type": "integer", "description": "Seconds."},
                    "issuer": {"type": "", "description": "Issuer."}}},
                "refresh": {"type": "Boolean", "description": "Refreshable."},
                "nonce": {"type": "Bigint", "description": "Nonce."},
                "payload": {"type": "any", "description": "Payload."},
                "weight": {"type": "float", "description": "Weight."},
            },
            "required": ["username"],
        },
    }],
}


def test_from_bfcl_python_record():
    tool = ToolSet.from_bfcl(PY_RECORD)["restaurant.book_table"]
    assert tool.description == "Book a table at a restaurant."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "location": {"type": "array", "items": {"type": "number"}, "description": "(lat, lon)."},
            "party_size": {"type": "integer", "description": "Number of guests."},
            "time": {"type": "string", "enum": ["18:00", "19:00", "20:00"], "description": "Time slot."},
            "preferences": {"type": "object", "description": "Seating preferences.", "properties": {
                "outdoor": {"type": "boolean", "default": False},
                "allergies": {"type": "array", "items": {"type": "string"}}}},
            "budget": {"type": "number", "description": "Max spend.", "default": 100.0},
            "metadata": {"description": "Anything else."},
        },
        "required": ["location", "party_size", "time"],
        "additionalProperties": False,
    }
    schema = tool.parameters
    assert is_valid(schema, {"location": [40.7, -74.0], "party_size": 4, "time": "19:00",
                             "preferences": {"outdoor": True, "allergies": ["nuts"]}, "metadata": [1, {"a": None}]})
    assert not is_valid(schema, {"location": [40.7, -74.0], "party_size": 4.5, "time": "19:00"})
    assert not is_valid(schema, {"location": [40.7, -74.0], "party_size": 4, "time": "21:00"})


def test_from_bfcl_java_types():
    props = ToolSet.from_bfcl(JAVA_RECORD)[0].parameters["properties"]
    types = {k: (v.get("type"), v.get("items")) for k, v in props.items()}
    assert types == {
        "ids": ("array", {"type": "integer"}), "status": ("integer", None), "reason": ("string", None),
        "attributes": ("object", None), "grade": ("string", None), "flags": ("integer", None),
        "batch": ("integer", None), "ratio": ("number", None), "notify": ("boolean", None),
        "names": ("array", {"type": "string"}), "context": (None, None),
    }
    schema = ToolSet.from_bfcl(JAVA_RECORD)[0].parameters
    assert is_valid(schema, {"ids": [12, 15], "status": 1, "attributes": {"k": "v"}, "ratio": 0.5, "context": "x"})
    assert not is_valid(schema, {"ids": ["12"], "status": 1})
    assert not is_valid(schema, {"ids": [12], "status": "1"})


def test_from_bfcl_javascript_types():
    props = ToolSet.from_bfcl([JS_RECORD])[0].parameters["properties"]
    assert props["username"] == {"type": "string", "description": "User name."}
    assert props["scopes"] == {"type": "array", "items": {"type": "string"}, "description": "Scopes."}
    assert props["options"]["properties"] == {"expiresIn": {"type": "integer", "description": "Seconds."},
                                              "issuer": {"description": "Issuer."}}
    assert props["refresh"]["type"] == "boolean" and props["nonce"]["type"] == "integer"
    assert props["payload"] == {"description": "Payload."} and props["weight"]["type"] == "number"


@pytest.mark.parametrize("bfcl_type", sorted(BFCL_TYPES))
def test_every_bfcl_type_maps_to_a_valid_schema(bfcl_type):
    record = {"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": bfcl_type, "items": {"type": "long"}}}}}
    schema = ToolSet.from_bfcl(record)[0].parameters["properties"]["x"]
    assert {k: v for k, v in schema.items() if k != "items"} == BFCL_TYPES[bfcl_type]


def test_from_bfcl_dedupes_identical_functions_and_keeps_order():
    second = {"id": "multiple_2", "question": [], "function": [
        {"name": "math.gcd", "description": "GCD.", "parameters": {"type": "dict", "properties": {
            "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}},
        PY_RECORD["function"][0],
    ]}
    ts = ToolSet.from_bfcl([PY_RECORD, JAVA_RECORD, second, PY_RECORD])
    assert ts.names == ["restaurant.book_table", "PmsProductServiceImpl.updateStatus", "math.gcd"]


def test_from_bfcl_conflicting_names():
    changed = json.loads(json.dumps(PY_RECORD))
    changed["id"] = "simple_python_8"
    changed["function"][0]["description"] = "Something else."
    with pytest.raises(ToolSpecError, match=r"tool 'restaurant\.book_table' is defined twice with different specs "
                                            r"\(record 'simple_python_7' and record 'simple_python_8'\)"):
        ToolSet.from_bfcl([PY_RECORD, changed])
    kept = ToolSet.from_bfcl([PY_RECORD, changed], on_conflict="first")
    assert kept[0].description == "Book a table at a restaurant."
    with pytest.raises(ToolSpecError, match="on_conflict must be 'error' or 'first'"):
        ToolSet.from_bfcl([PY_RECORD], on_conflict="last")  # type: ignore[arg-type]


def test_from_bfcl_files(tmp_path):
    jsonl = tmp_path / "BFCL_v4_simple.json"
    jsonl.write_text(json.dumps(PY_RECORD) + "\n\n" + json.dumps(JAVA_RECORD) + "\n")
    assert ToolSet.from_bfcl(jsonl).names == ["restaurant.book_table", "PmsProductServiceImpl.updateStatus"]
    func_doc = tmp_path / "func_doc.json"  # multi_turn_func_doc/*.json: one function per line
    func_doc.write_text("\n".join(json.dumps(f) for f in JS_RECORD["function"] + JAVA_RECORD["function"]))
    assert ToolSet.from_bfcl(str(func_doc)).names == ["createAuthToken", "PmsProductServiceImpl.updateStatus"]
    array = tmp_path / "array.json"
    array.write_text(json.dumps([PY_RECORD, JS_RECORD], indent=2))
    assert len(ToolSet.from_bfcl(array)) == 2


def _with_type(record: dict, prop: str, node: dict) -> dict:
    out = json.loads(json.dumps(record))
    out["function"][0]["parameters"]["properties"][prop] = node
    return out


@pytest.mark.parametrize("records, message", [
    (_with_type(JAVA_RECORD, "reason", {"type": "Widget"}),
     r"record 'simple_java_3': tool 'PmsProductServiceImpl\.updateStatus': field 'parameters\.properties\.reason\.type' "
     r"has unknown BFCL type 'Widget'"),
    (_with_type(JAVA_RECORD, "ids", {"type": "ArrayList", "items": {"type": "Long[]"}}),
     r"field 'parameters\.properties\.ids\.items\.type' has unknown BFCL type 'Long\[\]'"),
    (_with_type(JS_RECORD, "options", {"type": "dict", "properties": {"a": {"type": 3}}}),
     r"field 'parameters\.properties\.options\.properties\.a\.type' has unknown BFCL type 3"),
    (_with_type(PY_RECORD, "time", {"type": "string", "enum": "18:00"}),
     r"record 'simple_python_7': tool 'restaurant\.book_table': field 'parameters\.properties\.time\.enum' "
     r"is not valid JSON Schema"),
    (_with_type(PY_RECORD, "time", "string"), r"field 'parameters\.properties\.time' must be a dict, got str"),
    ({"id": "multi_turn_base_0", "question": [], "involved_classes": ["GorillaFileSystem"]},
     r"record 'multi_turn_base_0': has no 'function' field"),
    ({"id": "x", "function": "f"}, r"record 'x': field 'function' must be a list"),
    ({"id": "x", "function": [{"description": "no name"}]}, r"record 'x': each function must be a dict with a 'name'"),
    ({"id": "x", "function": [{"name": "f", "parameters": {"type": "array"}}]},
     r"record 'x': tool 'f': field 'parameters\.type' must be 'dict' or 'object', got 'array'"),
    ({"id": "x", "function": [{"name": "", "parameters": {"type": "dict"}}]}, r"tool name must not be empty"),
    (["not a record"], r"record #0: expected a dict, got str"),
])
def test_from_bfcl_errors(records, message):
    with pytest.raises(ToolSpecError, match=message):
        ToolSet.from_bfcl(records)


def test_from_bfcl_file_errors_name_the_file(tmp_path):
    path = tmp_path / "BFCL_v4_bad.json"
    path.write_text(json.dumps(PY_RECORD) + "\n{oops\n")
    with pytest.raises(ToolSpecError, match=r"BFCL_v4_bad\.json: line 2 is not valid JSON"):
        ToolSet.from_bfcl(path)
    path.write_text(json.dumps(_with_type(JAVA_RECORD, "reason", {"type": "Widget"})))
    with pytest.raises(ToolSpecError, match=r"BFCL_v4_bad\.json: record 'simple_java_3': tool .* 'Widget'"):
        ToolSet.from_bfcl(path)
    with pytest.raises(ToolSpecError, match=r"cannot read tool file .*nope\.json"):
        ToolSet.from_bfcl(tmp_path / "nope.json")


# ------------------------------------------------------------------------------------------
# Seal-Tools
# ------------------------------------------------------------------------------------------
SEAL_RECORDS = [
    {"api_name": "validatePassword", "api_description": "Check a password against rules.", "field": "Security",
     "parameters": {
         "password": {"type": "str", "description": "The password to be validated"},
         "min_length": {"type": "int", "description": "The minimum length", "default": 8},
         "require_special_char": {"type": "bool", "description": "Need a special character", "default": False}},
     "required": ["password"], "responses": {"valid": {"type": "bool", "description": "ok"}}},
    {"api_name": "calculateConvectiveHeatTransferCoefficient", "api_description": "Heat transfer coefficient.",
     "field": "Engineering", "parameters": {
         "fluid_velocity": {"type": "float", "description": "The velocity of the fluid (e.g., 2.5)", "unit": "m/s"},
         "movement_type": {"type": "str", "description": "walk or run", "choices": ["walk", "run"],
                           "examples": ["walk"], "example": "run", "example_values": "walk, run"}},
     "required": ["fluid_velocity"], "responses": {}},
    {"api_name": "requestFirst Aid Assistance", "api_description": "Ask for first aid.", "field": "Health",
     "parameters": {}, "required": [], "responses": {}},
]


def test_from_seal_tools_records():
    ts = ToolSet.from_seal_tools(SEAL_RECORDS)
    assert ts.names == ["validatePassword", "calculateConvectiveHeatTransferCoefficient", "requestFirst Aid Assistance"]
    assert ts[0].description == "Check a password against rules."
    assert ts[0].parameters == {
        "type": "object",
        "properties": {
            "password": {"type": "string", "description": "The password to be validated"},
            "min_length": {"type": "integer", "description": "The minimum length", "default": 8},
            "require_special_char": {"type": "boolean", "description": "Need a special character", "default": False}},
        "required": ["password"],
        "additionalProperties": False,
    }
    assert ts[1].parameters["properties"] == {
        "fluid_velocity": {"type": "number", "description": "The velocity of the fluid (e.g., 2.5) (unit: m/s)"},
        "movement_type": {"type": "string", "description": "walk or run", "enum": ["walk", "run"]},
    }
    assert ts[2].parameters == {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    assert is_valid(ts[1].parameters, {"fluid_velocity": 2, "movement_type": "run"})
    assert not is_valid(ts[1].parameters, {"fluid_velocity": 2, "movement_type": "swim"})


def test_from_seal_tools_paths(tmp_path):
    plain = tmp_path / "tool.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in SEAL_RECORDS))
    packed = tmp_path / "tool.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(plain.read_text())
    expected = ToolSet.from_seal_tools(SEAL_RECORDS)
    assert ToolSet.from_seal_tools(plain) == expected
    assert ToolSet.from_seal_tools(str(packed)) == expected


def test_from_seal_tools_duplicates():
    assert ToolSet.from_seal_tools(SEAL_RECORDS + [SEAL_RECORDS[0]]) == ToolSet.from_seal_tools(SEAL_RECORDS)
    changed = {**SEAL_RECORDS[0], "api_description": "Different."}
    with pytest.raises(ToolSpecError, match=r"tool 'validatePassword' is defined twice with different specs "
                                            r"\(entry #0 and entry #3\)"):
        ToolSet.from_seal_tools(SEAL_RECORDS + [changed])
    assert ToolSet.from_seal_tools(SEAL_RECORDS + [changed], on_conflict="first")[0] == ToolSet.from_seal_tools(SEAL_RECORDS)[0]


@pytest.mark.parametrize("record, message", [
    ({"api_name": "f", "parameters": {"x": {"type": "tuple", "description": "d"}}, "required": []},
     r"tool 'f': field 'parameters\.x\.type' has unknown Seal-Tools type 'tuple'"),
    ({"api_name": "f", "parameters": {"x": {"description": "no type"}}, "required": []},
     r"tool 'f': field 'parameters\.x\.type' has unknown Seal-Tools type None"),
    ({"api_name": "f", "parameters": {"x": "str"}, "required": []}, r"tool 'f': field 'parameters\.x' must be a dict"),
    ({"api_name": "f", "parameters": {"x": {"type": "str", "description": 5}}, "required": []},
     r"tool 'f': field 'parameters\.x\.description' must be a string"),
    ({"api_name": "f", "parameters": {"x": {"type": "str"}}, "required": ["y"]},
     r"tool 'f': field 'required' names \['y'\], which are not in 'parameters'"),
    ({"api_name": "f", "parameters": {}, "required": "x"}, r"tool 'f': field 'required' must be a list"),
    ({"api_name": "f", "parameters": ["x"], "required": []}, r"tool 'f': field 'parameters' must be a dict"),
    ({"api_name": "f", "api_description": 7, "parameters": {}}, r"tool 'f': field 'description' must be a string"),
    ({"api_description": "nameless"}, r"Seal-Tools entry #0: missing field 'api_name'"),
    ({"api_name": "bad\nname"}, r"name contains control or line-break characters"),
    ("not a dict", r"Seal-Tools entry #0: expected a dict, got str"),
])
def test_from_seal_tools_errors(record, message):
    with pytest.raises(ToolSpecError, match=message):
        ToolSet.from_seal_tools([record])


def test_from_seal_tools_file_errors_name_the_file(tmp_path):
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps({"api_name": "f", "parameters": {"x": {"type": "set"}}}) + "\n")
    with pytest.raises(ToolSpecError, match=r"tools\.jsonl: tool 'f': field 'parameters\.x\.type'"):
        ToolSet.from_seal_tools(path)
    corrupt = tmp_path / "tool.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ToolSpecError, match=r"cannot read tool file .*tool\.jsonl\.gz"):
        ToolSet.from_seal_tools(corrupt)


@pytest.fixture(scope="module")
def seal_corpus(data_dir):
    path = os.path.join(data_dir, "seal-tools", "tool.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f if line.strip()]
    return path, raw, ToolSet.from_seal_tools(path)


def test_seal_tools_full_corpus(seal_corpus):
    _, raw, ts = seal_corpus
    assert len(raw) == 4076 and len(ts) == 4076
    assert ts.names == [r["api_name"] for r in raw]
    seen_types = {p["type"] for r in raw for p in r["parameters"].values()}
    assert seen_types == {"str", "int", "float", "bool"}
    for record, tool in zip(raw, ts):
        assert tool.description == record["api_description"]
        assert tool.parameters["required"] == record["required"]
        for pname, spec in record["parameters"].items():
            assert tool.parameters["properties"][pname]["type"] == SEAL_TYPES[spec["type"]]["type"]
    example = next(r for r in raw if "example" in r)
    assert is_valid(ts[example["api_name"]].parameters, example["example"])
    assert ToolSet.from_openai(roundtrip(ts.to_openai())) == ts


def _resolve_data_quirks(schema: dict, arguments: dict) -> dict:
    """Undo two conventions of the Seal-Tools call data: numbers written as strings ("63"), and
    "API_call_<n>" placeholders that stand for the output of an earlier call in the same query."""
    out = dict(arguments)
    for key, value in arguments.items():
        kind = schema["properties"].get(key, {}).get("type")
        if not isinstance(value, str) or kind not in ("integer", "number"):
            continue
        if re.fullmatch(r"API_call_\d+", value):
            out[key] = 0
        elif re.fullmatch(r"-?\d+", value) or (kind == "number" and re.fullmatch(r"-?\d+\.\d*", value)):
            out[key] = float(value) if kind == "number" else int(value)
    return out


def test_seal_tools_dev_calls_validate(seal_corpus, data_dir):
    """Real calls from Seal-Tools dev validate against the generated schemas. Failures come only
    from the data's conventions (numbers as strings, API_call_<n> placeholders) and from two
    APIs whose recorded calls contradict their own specs (a list for a float position, the
    text 'per month' for a float frequency)."""
    _, _, ts = seal_corpus
    with gzip.open(os.path.join(data_dir, "seal-tools", "dev.jsonl.gz"), "rt", encoding="utf-8") as f:
        calls = [c for line in f if line.strip() for c in json.loads(line)["calling"]]
    assert len(calls) > 1000
    strict, contradicting = 0, set()
    for call in calls:
        schema = ts[call["api"]].parameters
        if is_valid(schema, call["parameters"]):
            strict += 1
        elif not is_valid(schema, _resolve_data_quirks(schema, call["parameters"])):
            contradicting.add(call["api"])
    assert strict / len(calls) > 0.95
    assert contradicting == {"calculateCollision", "estimateCustomerLifetimeValue"}


@functools.lru_cache(maxsize=None)
def _grammar_and_byte_vocabulary():
    grammar = pytest.importorskip("toolken.grammar")
    return grammar, grammar.Vocabulary.from_bytes([bytes([i]) for i in range(256)] + [b""], stop_ids=[256])


def test_generated_schemas_compile_with_the_grammar_engine():
    """What the loaders emit is what constrained decoding consumes: every schema built here from
    callables, BFCL and Seal-Tools records compiles (byte-level vocabulary)."""
    grammar, vocab = _grammar_and_byte_vocabulary()
    tools = [*ToolSet.from_functions([get_weather, search_products, book]),
             *ToolSet.from_bfcl([PY_RECORD, JAVA_RECORD, JS_RECORD]), *ToolSet.from_seal_tools(SEAL_RECORDS)]
    for tool in tools:
        grammar.compile_json_schema(tool.parameters, vocab)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(generated_functions())
def test_generated_signature_schemas_compile_with_the_grammar_engine(case):
    grammar, vocab = _grammar_and_byte_vocabulary()
    grammar.compile_json_schema(ToolSet.from_functions([case[0]])[0].parameters, vocab)
