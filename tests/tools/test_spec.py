"""`toolken.tools.spec`: tool names (kept exactly, or rejected with `ToolSpecError`; hypothesis over
names) and `Tool` validation (every bad `parameters` schema names the tool and the field, under
both meta-schema checkers)."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolken import Tool, ToolSet, ToolSpecError
from toolken.tools import validate_tool_name

SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


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
