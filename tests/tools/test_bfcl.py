"""`toolken.tools.bfcl`: BFCL v4 records (Python, Java, JavaScript types), every type name, dedupe
and conflicts, files, and every error path (message names the file, record, tool and field)."""
from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from toolken import ToolSet, ToolSpecError
from toolken.tools import BFCL_TYPES


def is_valid(schema: dict, instance: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


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


def test_generated_schemas_compile_with_the_grammar_engine(byte_grammar):
    """Every schema built here from BFCL records compiles (byte-level vocabulary)."""
    grammar, vocab = byte_grammar
    for tool in ToolSet.from_bfcl([PY_RECORD, JAVA_RECORD, JS_RECORD]):
        grammar.compile_json_schema(tool.parameters, vocab)
