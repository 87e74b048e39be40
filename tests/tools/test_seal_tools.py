"""`toolken.tools.seal_tools`: Seal-Tools records and files (plain and gzipped), duplicates, every
error path, the full released corpus, and its real dev calls validating against the schemas."""
from __future__ import annotations

import gzip
import json
import os
import re
from typing import Any

import jsonschema
import pytest

from toolken import ToolSet, ToolSpecError
from toolken.tools import SEAL_TYPES


def is_valid(schema: dict, instance: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


def roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


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


def test_generated_schemas_compile_with_the_grammar_engine(byte_grammar):
    """Every schema built here from Seal-Tools records compiles (byte-level vocabulary)."""
    grammar, vocab = byte_grammar
    for tool in ToolSet.from_seal_tools(SEAL_RECORDS):
        grammar.compile_json_schema(tool.parameters, vocab)
