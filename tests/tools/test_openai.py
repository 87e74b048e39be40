"""`toolken.tools.openai` and `ToolSet`: both OpenAI shapes, round trips, indexing, JSON files, and
every error path (message checked)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from toolken import ToolSet, ToolSpecError
from toolken.tools import as_toolset


def roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


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
