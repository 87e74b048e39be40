"""oneOf exclusivity: a oneOf compiles (by default) only when its branches are provably disjoint.

References: `jsonschema` decides oneOf validity; hypothesis-jsonschema draws instances of the
branches' union (the anyOf twin of a schema). When toolken accepts a oneOf schema, every such
instance must be valid under the oneOf (the disjointness proof is sound), and every value a
random mask-following walk produces must validate too.
"""
from __future__ import annotations

import json
import random
from typing import Any, Dict, List

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_grammar_properties import random_walk_texts
from toolken import GrammarError, grammar

hypothesis_jsonschema = pytest.importorskip("hypothesis_jsonschema")

TOKENS: List[Any] = [bytes([i]) for i in range(256)] + [b'{"', b'":', b'", "', b'"}', b"true", b"null", None]
EOS = len(TOKENS) - 1
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [EOS])

DISJOINT = [
    {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
    {"oneOf": [{"type": "integer", "maximum": 0}, {"type": "integer", "minimum": 1}]},
    {"oneOf": [{"type": "number", "exclusiveMaximum": 2}, {"type": "number", "minimum": 2}]},
    {"oneOf": [{"type": "string", "pattern": "^a+$"}, {"type": "string", "pattern": "^b+$"}]},
    {"oneOf": [{"type": "string", "maxLength": 2}, {"type": "string", "minLength": 3}]},
    {"oneOf": [{"enum": ["a", 1]}, {"enum": ["b", 2, None]}]},
    {"type": "object", "properties": {"x": {"type": "integer"}},
     "oneOf": [{"properties": {"kind": {"const": "circle"}, "r": {"type": "number"}}, "required": ["kind", "r"]},
               {"properties": {"kind": {"const": "square"}, "side": {"type": "number"}}, "required": ["kind"]}]},
    {"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
               {"type": "object", "properties": {"b": {"type": "integer"}}, "additionalProperties": False}]},
    {"oneOf": [{"type": "array", "items": {"type": "integer"}, "minItems": 1},
               {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
    {"oneOf": [{"type": "array", "maxItems": 1}, {"type": "array", "minItems": 2}]},
    {"oneOf": [{"anyOf": [{"type": "string"}, {"type": "boolean"}]}, {"oneOf": [{"type": "integer"}, {"type": "null"}]}]},
    {"$defs": {"a": {"type": "object", "properties": {"t": {"enum": ["a"]}}, "required": ["t"]}},
     "oneOf": [{"$ref": "#/$defs/a"}, {"type": "object", "properties": {"t": {"enum": ["b", "c"]}}, "required": ["t"]}]},
]

OVERLAPPING = [
    ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}, "#/oneOf", (0, 1)),
    ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, "#/oneOf", (0, 1)),
    ({"oneOf": [{"type": "integer", "maximum": 5}, {"type": "integer", "minimum": 5}]}, "#/oneOf", (0, 1)),
    # required-only branches: {"length":1,"width":2,"radius":3} matches both (MaskBench calculate_area)
    ({"type": "object", "properties": {"p": {"type": "object", "properties": {"radius": {"type": "number"}},
                                                                "oneOf": [{"required": ["length"]}, {"required": ["radius"]}]}}},
     "#/properties/p/oneOf", (0, 1)),
    # const on an optional property: {} matches both
    ({"type": "object", "oneOf": [{"properties": {"t": {"const": "a"}}}, {"properties": {"t": {"const": "b"}}}]},
     "#/oneOf", (0, 1)),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": ["integer", "null"]}]}, "#/oneOf", (1, 2)),
]


def any_of_twin(schema: Any) -> Any:
    """`schema` with every oneOf renamed anyOf (the language the grammar compiles)."""
    if isinstance(schema, dict):
        return {("anyOf" if k == "oneOf" else k): any_of_twin(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [any_of_twin(v) for v in schema]
    return schema


@pytest.mark.parametrize("schema", DISJOINT, ids=range(len(DISJOINT)))
def test_disjoint_one_of_compiles_and_walks_validate(schema: Dict[str, Any]) -> None:
    cg = grammar.compile_json_schema(schema, VOCAB)
    texts = random_walk_texts(cg, TOKENS, EOS, random.Random(len(json.dumps(schema))), walks=12, max_steps=200, close_after=30)
    assert texts, "no walk finished"
    for text in texts:
        jsonschema.validate(json.loads(text.decode("utf-8")), schema)


@settings(max_examples=15, suppress_health_check=list(HealthCheck), deadline=None)
@given(data=st.data())
def test_disjoint_union_instances_are_one_of_valid(data: st.DataObject) -> None:
    """Soundness of the proof on the hand-written disjoint schemas: no union instance matches two branches."""
    schema = data.draw(st.sampled_from(DISJOINT))
    instance = data.draw(hypothesis_jsonschema.from_schema(any_of_twin(schema)))
    jsonschema.validate(instance, schema)


BRANCHES = st.one_of(
    st.sampled_from([{"type": t} for t in ("string", "integer", "number", "boolean", "null", "object", "array")]),
    st.builds(lambda lo, w: {"type": "integer", "minimum": lo, "maximum": lo + w}, st.integers(-5, 5), st.integers(0, 5)),
    st.builds(lambda lo, w: {"type": "string", "minLength": lo, "maxLength": lo + w}, st.integers(0, 3), st.integers(0, 2)),
    st.builds(lambda vals: {"enum": vals}, st.lists(st.sampled_from(["a", "b", 1, 2, None, True]), min_size=1, max_size=3, unique=True)),
    st.builds(lambda c, req, typed: {**({"type": "object"} if typed else {}), "properties": {"k": {"const": c}},
                                     **({"required": ["k"]} if req else {})},
              st.sampled_from(["a", "b", "c"]), st.booleans(), st.booleans()),
    st.builds(lambda addl: {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"],
                            "additionalProperties": addl}, st.booleans()),
    st.sampled_from([{"type": "string", "pattern": "^a[0-9]*$"}, {"type": "string", "pattern": "^[0-9]+$"},
                     {"type": "array", "items": {"type": "integer"}, "minItems": 1}, {"type": "array", "maxItems": 0}]),
)


@settings(max_examples=80, suppress_health_check=list(HealthCheck), deadline=None)
@given(branches=st.lists(BRANCHES, min_size=2, max_size=3), data=st.data())
def test_generated_one_of_is_exclusive_or_rejected(branches: List[Dict[str, Any]], data: st.DataObject) -> None:
    """Either the compile is refused, or an instance of the union is accepted exactly when it
    matches one branch only (values matching two branches whole, such as "" for two string
    branches without a minLength, are excluded from the grammar). Properties in any order: in
    schema order a valid object with an additional key before a known one is rejected by design."""
    schema = {"oneOf": branches}
    try:
        cg = grammar.compile_json_schema(schema, VOCAB, property_order="any")
    except GrammarError as e:
        # e.g. two {"type": "string"}: every string matches both, so no value is valid
        assert ("overlap" in str(e) and "#/oneOf" in str(e)) or "admits no JSON value" in str(e)
        return
    for _ in range(3):
        instance = data.draw(hypothesis_jsonschema.from_schema({"anyOf": branches}))
        m = grammar.Matcher(cg)
        accepted = m.accept_string(json.dumps(instance)) and m.can_terminate()
        assert accepted == jsonschema.Draft202012Validator(schema).is_valid(instance), (schema, instance)


@pytest.mark.parametrize("schema,pointer,pair", OVERLAPPING, ids=range(len(OVERLAPPING)))
def test_overlapping_one_of_is_an_error_naming_the_pointer(schema: Dict[str, Any], pointer: str, pair: tuple) -> None:
    with pytest.raises(GrammarError) as e:
        grammar.compile_json_schema(schema, VOCAB)
    msg = str(e.value)
    assert f"(at {pointer})" in msg and "overlap" in msg and f"branches {pair[0]} and {pair[1]}" in msg
    assert 'one_of="any"' in msg


def test_opt_in_one_of_as_any_of() -> None:
    schema = {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}
    cg = grammar.compile_json_schema(schema, VOCAB, one_of="any")
    m = grammar.Matcher(cg)
    assert m.accept_string('"ab"') and m.can_terminate()  # matches both branches: accepted only by the opt-in
    # the option is part of the compile cache key
    with pytest.raises(GrammarError):
        grammar.compile_json_schema(schema, VOCAB)
    assert grammar.compile_json_schema(schema, VOCAB, one_of="any") is cg
    with pytest.raises(GrammarError, match="one_of"):
        grammar.compile_json_schema(schema, VOCAB, one_of="first")


def test_compile_errors_of_branches_come_before_the_overlap_check() -> None:
    with pytest.raises(GrammarError, match="'not'"):
        grammar.compile_json_schema({"oneOf": [{"type": "integer", "not": {"const": 3}}, {"type": "integer"}]}, VOCAB)
