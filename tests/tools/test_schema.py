"""`toolken.tools.schema` and the argument validators of `toolken.tools.spec`: which draft a
schema is read under, the reference walk, depth, pointers, and argument errors."""
from __future__ import annotations

import jsonschema
import pytest

from toolken import Tool, ToolSpecError
from toolken.tools import MAX_SCHEMA_DEPTH, argument_error, argument_validator, offline_validator
from toolken.tools.schema import Reference, draft_of, iter_references, json_pointer, nesting_path


@pytest.mark.parametrize("uri, draft", [
    (None, jsonschema.Draft202012Validator),
    ("https://json-schema.org/draft/2020-12/schema", jsonschema.Draft202012Validator),
    ("http://json-schema.org/draft/2020-12/schema#", jsonschema.Draft202012Validator),
    ("https://json-schema.org/draft/2019-09/schema", jsonschema.Draft201909Validator),
    ("http://json-schema.org/draft-07/schema#", jsonschema.Draft7Validator),
    ("https://json-schema.org/draft-07/schema", jsonschema.Draft7Validator),
    ("http://json-schema.org/draft-06/schema#", jsonschema.Draft6Validator),
    ("http://json-schema.org/draft-04/schema", jsonschema.Draft4Validator),
    ("http://json-schema.org/draft-03/schema#", jsonschema.Draft3Validator),
    ("http://json-schema.org/schema#", jsonschema.Draft202012Validator),
    ("https://example.invalid/meta", jsonschema.Draft202012Validator),
    (5, jsonschema.Draft202012Validator),
])
def test_draft_of(uri, draft):
    assert draft_of({} if uri is None else {"$schema": uri}) is draft


def test_iter_references_in_document_order_with_base_uris():
    schema = {"$id": "https://example.invalid/root.json", "$ref": "#/$defs/a",
              "properties": {"$ref": {"$ref": "#/$defs/a"}, "x": {"$id": "sub/x.json", "items": [{"$ref": "#"}]}},
              "$defs": {"a": {"type": "string", "default": {"$ref": "not-a-reference"}},
                        "b": {"$dynamicRef": "#meta"}},
              "enum": [{"$ref": "data"}], "const": {"$ref": "data"}}
    assert list(iter_references(schema)) == [
        Reference(("$ref",), "$ref", "#/$defs/a", "https://example.invalid/root.json"),
        Reference(("properties", "$ref", "$ref"), "$ref", "#/$defs/a", "https://example.invalid/root.json"),
        Reference(("properties", "x", "items", 0, "$ref"), "$ref", "#", "https://example.invalid/sub/x.json"),
        Reference(("$defs", "b", "$dynamicRef"), "$dynamicRef", "#meta", "https://example.invalid/root.json"),
    ]


def test_draft_4_ids_and_anchors():
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "id": "http://example.invalid/s",
              "definitions": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/definitions/n"}}}
    tool = Tool("f", "d", schema)
    assert argument_error(tool, {"n": 1}) is None and argument_error(tool, {"n": "1"}) == "at n: '1' is not of type 'integer'"


def test_json_pointer_escapes():
    assert json_pointer(()) == "" and json_pointer(("properties", "a/b~c", 0)) == "/properties/a~1b~0c/0"


def test_nesting_path_counts_containers_and_survives_cycles():
    assert nesting_path({"a": [1, {"b": 2}]}, 3) is None
    assert nesting_path({"a": [1, {"b": []}]}, 3) == ("a", 1, "b")
    cyclic: dict = {"type": "object"}
    cyclic["properties"] = {"me": cyclic}
    assert len(nesting_path(cyclic)) == MAX_SCHEMA_DEPTH
    with pytest.raises(ToolSpecError, match=r"tool 'f': field 'parameters\.properties\.me\.properties\..*nests deeper"):
        Tool("f", "d", cyclic)


def test_argument_validator_is_cached_per_tool_and_reports_the_best_error():
    tool = Tool("add", "d", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                             "required": ["a", "b"], "additionalProperties": False})
    assert argument_validator(tool) is argument_validator(Tool("add", "d", dict(tool.parameters)))
    assert argument_error(tool, {"a": 1, "b": 2}) is None
    assert argument_error(tool, {"a": 1}) == "at (root): 'b' is a required property"
    assert argument_error(tool, {"a": 1, "b": "2"}) == "at b: '2' is not of type 'integer'"
    assert argument_error(tool, {"a": 1, "b": 2, "c": 3}).startswith("at (root): Additional properties are not allowed")
    assert argument_error(tool, [1, 2]) == "at (root): [1, 2] is not of type 'object'"


def test_offline_validator_checks_like_a_tool():
    with pytest.raises(ToolSpecError, match=r"tool 'g': field 'parameters\.properties\.x\.type' is not valid JSON Schema"):
        offline_validator({"properties": {"x": {"type": "strng"}}}, "tool 'g'")
    with pytest.raises(ToolSpecError, match=r"tool 'g': field 'parameters' is not plain JSON"):
        offline_validator({"properties": {"x": {"enum": {1}}}}, "tool 'g'")
    assert offline_validator({"type": "array", "prefixItems": [{"type": "string"}]}, "tool 'g'").is_valid(["a", 1])
