"""Hostile tool specs: every one fails with a `ToolSpecError` whose message names the loader,
tool, field or JSON pointer (never a `TypeError`, `RecursionError` or a flood of text), or
loads exactly as documented. Remote `$schema` / `$ref` with a live server: test_network.py."""
from __future__ import annotations

import json
import re
import sys

import pytest

from toolken import Tool, ToolSet
from toolken.errors import DataError, ToolSpecError
from toolken.tools import (
    MAX_SCHEMA_DEPTH,
    MAX_TOOL_NAME_LENGTH,
    argument_error,
    argument_validator,
    load_json_records,
    offline_validator,
    validate_tool_name,
)
from toolken.tools.schema import nesting_path
from toolken.tools.spec import BIDI_CONTROLS, INVISIBLE_CHARACTERS

DEEP = 5000


def nested_properties(levels: int) -> dict:
    """An object schema `levels` properties deep: 2 JSON containers per level, plus the root."""
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def nested_list(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


# ------------------------------------------------------------------------------------------
# not a spec at all
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("load, message", [
    (lambda: ToolSet.from_openai(None), r"ToolSet\.from_openai expects a tool spec \(dict\) or a list of them, got NoneType"),
    (lambda: ToolSet.from_openai(42), r"ToolSet\.from_openai expects .*, got int: 42"),
    (lambda: ToolSet.from_openai("get_weather"), r"ToolSet\.from_openai expects .*, got str: 'get_weather'"),
    (lambda: ToolSet(None), r"ToolSet expects Tools or OpenAI tool specs, got NoneType"),
    (lambda: ToolSet.from_functions(None), r"ToolSet\.from_functions expects a callable or a list of them, got NoneType"),
    (lambda: ToolSet.from_bfcl(None), r"ToolSet\.from_bfcl expects a path, a record or a list of records, got NoneType"),
    (lambda: ToolSet.from_bfcl(3.5), r"ToolSet\.from_bfcl expects .*, got float"),
    (lambda: ToolSet.from_seal_tools(None), r"ToolSet\.from_seal_tools expects a path or a list of Seal-Tools records, "
                                            r"got NoneType"),
    (lambda: ToolSet.from_openai([None]), r"a tool spec must be a dict, got NoneType"),
    (lambda: ToolSet.from_openai([{"name": None}]), r"tool name must be a string, got NoneType"),
    (lambda: ToolSet.from_seal_tools([None]), r"Seal-Tools entry #0: expected a dict, got NoneType"),
    (lambda: ToolSet.from_bfcl([None]), r"record #0: expected a dict, got NoneType"),
    (lambda: ToolSet.from_seal_tools([{"api_name": "f", "parameters": {"x": {"type": ["str"]}}}]),
     r"tool 'f': field 'parameters\.x\.type' has unknown Seal-Tools type \['str'\]"),
    (lambda: ToolSet.from_seal_tools([{"api_name": "f", "parameters": {"x": {"type": {"a": 1}}}}]),
     r"tool 'f': field 'parameters\.x\.type' has unknown Seal-Tools type \{'a': 1\}"),
])
def test_non_specs_raise_toolspecerror_naming_loader_and_field(load, message):
    with pytest.raises(ToolSpecError, match=message):
        load()


# ------------------------------------------------------------------------------------------
# depth
# ------------------------------------------------------------------------------------------
DEPTH_FIELD = r"field 'parameters(\.properties\.a)+\.\.\.' nests deeper than 64 JSON objects and arrays"


@pytest.mark.parametrize("load, message", [
    (lambda: Tool("f", "d", nested_properties(DEEP)), rf"tool 'f': {DEPTH_FIELD}"),
    (lambda: ToolSet.from_openai({"name": "f", "parameters": nested_properties(DEEP)}), rf"tool 'f': {DEPTH_FIELD}"),
    (lambda: ToolSet.from_openai({"type": "function", "function": {"name": "f", "parameters": nested_properties(DEEP)}}),
     rf"tool 'f': {DEPTH_FIELD}"),
    (lambda: ToolSet.from_bfcl({"id": "r", "function": [{"name": "f", "parameters": nested_properties(DEEP)}]}),
     rf"record 'r': tool 'f': {DEPTH_FIELD}"),
    (lambda: Tool("f", "d", {"type": "object", "properties": {"a": {"enum": nested_list(DEEP)}}}),
     r"tool 'f': field 'parameters\.properties\.a\.enum(\.0)+' nests deeper than 64"),
    (lambda: Tool("f", "d", {"type": "object", "properties": {}, "default": {"x": nested_list(DEEP)}}),
     r"tool 'f': field 'parameters\.default\.x(\.0)+' nests deeper than 64"),
    (lambda: ToolSet.from_seal_tools([{"api_name": "f", "parameters": {"x": {"type": "list", "default": nested_list(DEEP)}}}]),
     r"tool 'f': field 'parameters\.properties\.x\.default(\.0)+' nests deeper than 64"),
    (lambda: offline_validator(nested_properties(DEEP), "tool 'g'"), rf"tool 'g': {DEPTH_FIELD}"),
])
def test_parameters_nested_thousands_deep(load, message):
    with pytest.raises(ToolSpecError, match=message) as info:
        load()
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("spec, message", [
    ([nested_list(DEEP)], r"a tool spec must be a dict, got list: \[\[\[\[\.\.\.\]\]\]\]"),
    ([{"description": nested_list(DEEP)}], r"tool spec is missing field 'name': \{'description': \[\[\[\.\.\.\]\]\]\}"),
    ([{"name": nested_list(DEEP)}], r"tool name must be a string, got list"),
    ([{"name": "f", "description": nested_list(DEEP)}], r"tool 'f': field 'description' must be a string, got list"),
    ([{"name": "f", "parameters": nested_list(DEEP)}], r"tool 'f': field 'parameters' must be a JSON Schema object"),
])
def test_deep_values_elsewhere_in_a_spec_do_not_overflow_messages(spec, message):
    with pytest.raises(ToolSpecError, match=message) as info:
        ToolSet.from_openai(spec)
    assert len(str(info.value)) < 400


def test_bfcl_and_functions_with_deep_values():
    with pytest.raises(ToolSpecError, match=r"record #0: each function must be a dict with a 'name', got \[\[\[\["):
        ToolSet.from_bfcl({"function": [nested_list(DEEP)]})
    with pytest.raises(ToolSpecError, match=r"record #0: tool 'f': field 'parameters\.properties\.x\.type(\.0)+' nests deeper"):
        ToolSet.from_bfcl({"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": nested_list(DEEP)}}}})
    with pytest.raises(ToolSpecError, match=r"from_functions expects callables, got list: \[\[\[\["):
        ToolSet.from_functions([nested_list(DEEP)])


def _run_with_stack_used(frames: int, fn):
    """Call `fn` with about `frames` frames already on the stack (a caller deep in a framework)."""
    return fn() if frames <= 0 else _run_with_stack_used(frames - 1, fn)


@pytest.mark.parametrize("shape", ["properties", "items", "anyOf"])
def test_schemas_at_the_depth_limit_load_and_validate_under_a_deep_stack(shape):
    """Exactly MAX_SCHEMA_DEPTH levels of containers load, check, validate and hash, even with
    300 frames already used (jsonschema recurses several frames per level); one more is refused."""
    def build(depth: int) -> tuple[dict, object]:
        schema: dict = {"type": "integer"}
        instance: object = 1
        while True:
            wrapped = {"properties": ({"type": "object", "properties": {"a": schema}}, {"a": instance}),
                       "items": ({"type": "array", "items": schema}, [instance]),
                       "anyOf": ({"anyOf": [{"type": "null"}, schema]}, instance)}[shape]
            if nesting_path(wrapped[0], depth) is not None:
                return schema, instance
            schema, instance = wrapped

    schema, instance = build(MAX_SCHEMA_DEPTH if shape == "properties" else MAX_SCHEMA_DEPTH - 2)
    parameters = schema if shape == "properties" else {"type": "object", "properties": {"a": schema}}
    call = instance if shape == "properties" else {"a": instance}
    assert nesting_path(parameters) is None
    assert sys.getrecursionlimit() >= 1000

    def load_and_validate():
        tool = ToolSet.from_openai({"name": "deep", "parameters": parameters})["deep"]
        assert argument_error(tool, call) is None and hash(tool) == hash(Tool("deep", "", parameters))
        return tool

    _run_with_stack_used(300, load_and_validate)
    deeper = {"type": "object", "properties": {"b": parameters}}
    if nesting_path(deeper) is not None:
        with pytest.raises(ToolSpecError, match="nests deeper than 64"):
            Tool("deep", "", deeper)


def test_arguments_nested_thousands_deep_under_a_recursive_schema():
    tool = Tool("tree", "d", {"type": "object", "properties": {"node": {"$ref": "#/$defs/node"}},
                              "$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}}})
    assert argument_error(tool, {"node": [[[]]]}) is None
    assert argument_error(tool, {"node": [[1]]}) == "at node/0/0: 1 is not of type 'array'"
    assert argument_error(tool, {"node": nested_list(DEEP)}) == "at (root): the arguments nest too deeply to validate"


@pytest.mark.parametrize("error", [ToolSpecError, DataError])
def test_data_files_nested_thousands_deep(tmp_path, error):
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"a": 1}\n' + "[" * DEEP + "]" * DEEP + "\n")
    with pytest.raises(error, match=r"deep\.jsonl: line 2: JSON nested too deeply to parse"):
        load_json_records(lines, error=error)
    document = tmp_path / "deep.json"
    document.write_text("[" * DEEP + "]" * DEEP)
    with pytest.raises(error, match=r"deep\.json: JSON nested too deeply to parse"):
        load_json_records(document, error=error)
    with pytest.raises(ToolSpecError, match=r"deep\.json: JSON nested too deeply to parse"):
        ToolSet.from_json(document)


# ------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("char", sorted(BIDI_CONTROLS))
def test_bidi_controls_in_names(char):
    name = f"get_weather{char}txt.exe"
    message = rf"tool {re.escape(repr(name))}: name contains bidirectional control characters \({re.escape(repr(char))}\)"
    for load in (lambda: validate_tool_name(name), lambda: Tool(name), lambda: ToolSet.from_openai({"name": name}),
                 lambda: ToolSet.from_seal_tools([{"api_name": name}]), lambda: ToolSet.from_bfcl({"name": name})):
        with pytest.raises(ToolSpecError, match=message) as info:
            load()
        assert char not in str(info.value)  # shown escaped, never as a live control


@pytest.mark.parametrize("char", sorted(INVISIBLE_CHARACTERS))
def test_invisible_characters_in_names(char):
    with pytest.raises(ToolSpecError, match=rf"name contains invisible characters \({re.escape(repr(char))}\)"):
        ToolSet.from_openai({"name": f"get{char}weather"})


def test_only_invisible_or_bidi_characters_is_not_a_name():
    for name in ("\u202e", "\u200b\u202e", "\ufeff"):
        with pytest.raises(ToolSpecError, match="must contain a visible character"):
            Tool(name)


@pytest.mark.parametrize("name", ["👩\u200d💻", "ناسازگار\u200cی", "☀\ufe0f", "a\u00a0b", "x" * MAX_TOOL_NAME_LENGTH])
def test_joiners_variation_selectors_and_the_longest_name_are_kept(name):
    assert ToolSet.from_openai({"name": name}).names == [name]


@pytest.mark.parametrize("length", [MAX_TOOL_NAME_LENGTH + 1, 10_000, 1_000_000])
def test_names_over_the_length_limit(length):
    name = "x" * length
    message = rf"tool 'x{{40}}'\.\.\. \({length} characters\): name is longer than 1024 characters \(MAX_TOOL_NAME_LENGTH\)"
    for load in (lambda: Tool(name), lambda: ToolSet.from_openai([{"name": name}]),
                 lambda: ToolSet.from_seal_tools([{"api_name": name}])):
        with pytest.raises(ToolSpecError, match=message) as info:
            load()
        assert len(str(info.value)) < 300


def test_function_names_are_checked_too():
    def f(x: int) -> int:
        return x

    f.__name__ = "f\u202e"
    with pytest.raises(ToolSpecError, match=r"tool 'f\\u202e': name contains bidirectional control characters"):
        ToolSet.from_functions([f])
    f.__name__ = "f" * 2000
    with pytest.raises(ToolSpecError, match=r"\(2000 characters\): name is longer than 1024"):
        ToolSet.from_functions([f])


# ------------------------------------------------------------------------------------------
# references (no server: see test_network.py for live ones)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameters, field, pointer, what", [
    ({"type": "object", "properties": {"x": {"$ref": "https://example.invalid/s.json"}}},
     "parameters.properties.x.$ref", "/properties/x/$ref", "outside the tool's schema"),
    ({"type": "object", "properties": {"x": {"$ref": "s.json#/a"}}},
     "parameters.properties.x.$ref", "/properties/x/$ref", "outside the tool's schema"),
    ({"type": "object", "properties": {"x": {"$ref": "urn:example:s"}}},
     "parameters.properties.x.$ref", "/properties/x/$ref", "outside the tool's schema"),
    ({"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}},
     "parameters.properties.x.$ref", "/properties/x/$ref", "which is not in the tool's schema"),
    ({"type": "object", "properties": {"x": {"$ref": "#nowhere"}}},
     "parameters.properties.x.$ref", "/properties/x/$ref", "which is not in the tool's schema"),
    ({"type": "object", "properties": {"a/b~c": {"prefixItems": [{"$ref": "file:///etc/passwd"}]}}},
     "parameters.properties.a/b~c.prefixItems.0.$ref", "/properties/a~1b~0c/prefixItems/0/$ref", "outside the tool's schema"),
])
def test_references_outside_the_schema_name_field_and_pointer(parameters, field, pointer, what):
    message = rf"tool 'f': field {re.escape(repr(field))} \(JSON pointer {re.escape(pointer)}\) refers to .*{what}"
    with pytest.raises(ToolSpecError, match=message):
        ToolSet.from_openai({"name": "f", "parameters": parameters})
    with pytest.raises(ToolSpecError, match=message):
        offline_validator(parameters, "tool 'f'")


def test_ref_shaped_data_and_property_names_are_not_references():
    parameters = {"type": "object", "properties": {
        "$ref": {"type": "string", "default": "https://example.invalid/s.json"},
        "link": {"const": {"$ref": "https://example.invalid/s.json"}},
        "opts": {"enum": [{"$ref": "urn:x"}], "examples": [{"$ref": "urn:y"}]}}}
    tool = ToolSet.from_openai({"name": "f", "parameters": parameters})["f"]
    assert argument_error(tool, {"$ref": "x", "link": {"$ref": "https://example.invalid/s.json"}}) is None
    assert argument_error(tool, {"link": {}}) is not None


def test_local_references_and_anchors_work():
    parameters = {"type": "object", "$defs": {"city": {"$anchor": "city", "type": "string", "minLength": 1}},
                  "properties": {"from": {"$ref": "#/$defs/city"}, "to": {"$ref": "#city"}}}
    validator = argument_validator(Tool("trip", "d", parameters))
    assert validator.is_valid({"from": "Paris", "to": "Rome"})
    assert not validator.is_valid({"from": "", "to": "Rome"}) and not validator.is_valid({"to": 3})


def test_meta_schema_errors_still_name_the_field_with_an_unknown_meta_schema():
    parameters = {"$schema": "https://example.invalid/my-meta", "type": "object",
                  "properties": {"n": {"type": "integer", "minimum": "zero"}}}
    with pytest.raises(ToolSpecError, match=r"tool 'f': field 'parameters\.properties\.n\.minimum' is not valid JSON Schema"):
        Tool("f", "d", parameters)
    with pytest.raises(ToolSpecError, match=r"tool 'f': field 'parameters\.\$schema' is not valid JSON Schema"):
        Tool("f", "d", {"$schema": 5, "type": "object"})
    ok = {**parameters, "properties": {"n": {"type": "integer"}}}
    assert json.dumps(Tool("f", "d", ok).parameters) == json.dumps(ok)
