"""oneOf of required keys (``oneOf: [{"required": ["a"]}, {"required": ["b", "c"]}]``): the
branches overlap (an object with both key sets matches both), yet with
``property_order="any"`` the grammar compiles them exactly: an object is accepted when exactly
one branch's keys are all present, which the matcher's seen-key set decides at ``}``.

Against `jsonschema`: generated schemas (key groups over a few properties, with or without
``additionalProperties``, ``required``, ``maxProperties``, branch ``type``/``properties`` the
object already gives) and generated objects (any subset of the keys, values valid or not, in
any order) are accepted exactly when valid, in both JSON encodings; random mask-following walks
never reach a dead end and end in valid objects; each mask equals ``accept_token``. In schema
order the shape stays refused, as are the shapes that are not only about keys.
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

TOKENS: List[Any] = [bytes([i]) for i in range(256)] + [b'{"', b'":', b'", "', b'"}', b', "', b'": 1', b"true", None]
EOS = len(TOKENS) - 1
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [EOS])
KEYS = ["a", "b", "c", "d"]
SETTINGS = settings(max_examples=100, suppress_health_check=list(HealthCheck), deadline=None)


@st.composite
def key_group_schemas(draw: Any) -> Dict[str, Any]:
    groups = draw(st.lists(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True), min_size=2, max_size=4))
    typed = draw(st.booleans())
    branches = []
    for g in groups:
        b: Dict[str, Any] = {"required": g}
        if typed:
            b["type"] = "object"
        if draw(st.booleans()):
            b["properties"] = {g[0]: {"type": "integer"}}  # what the object already says
        if draw(st.booleans()):
            b["description"] = "an annotation"
        branches.append(b)
    schema: Dict[str, Any] = {"type": "object", "properties": {k: {"type": "integer"} for k in KEYS}, "oneOf": branches}
    if draw(st.booleans()):
        schema["additionalProperties"] = draw(st.sampled_from([False, True, {"type": "string"}]))
    if draw(st.booleans()):
        schema["required"] = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
    if draw(st.booleans()):
        schema["maxProperties"] = draw(st.integers(1, 4))
    if draw(st.booleans()):
        schema["minProperties"] = draw(st.integers(0, 2))
    return schema


OBJECTS = st.dictionaries(st.sampled_from(KEYS + ["e"]), st.one_of(st.integers(-3, 3), st.just("s")), max_size=5)


def compiled(schema: Any) -> Any:
    """The grammar, or None for the refusals of minProperties (that only other known keys could
    meet, or with additional properties) and for schemas no value satisfies (e.g. two equal key
    groups)."""
    try:
        return grammar.compile_json_schema(schema, VOCAB, property_order="any")
    except GrammarError as e:
        assert "minProperties" in str(e) or "admits no JSON value" in str(e), e
        if "admits no JSON value" in str(e):
            for value in [{}, {"a": 1}, {"b": 1}, {"a": 1, "b": 2}, {"c": 1, "d": 2}, {"a": 1, "c": 2, "d": 3}]:
                assert not valid(value, schema), (schema, value)
        return None


def valid(value: Any, schema: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def accepts(cg: Any, value: Any, ascii_only: bool) -> bool:
    m = grammar.Matcher(cg)
    return m.accept_string(json.dumps(value, ensure_ascii=ascii_only)) and m.can_terminate()


@SETTINGS
@given(schema=key_group_schemas(), value=OBJECTS, ascii_only=st.booleans())
def test_accepted_exactly_when_valid(schema: Dict[str, Any], value: Dict[str, Any], ascii_only: bool) -> None:
    cg = compiled(schema)
    if cg is None:
        return
    assert accepts(cg, value, ascii_only) == valid(value, schema), (schema, value)


@settings(max_examples=40, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=key_group_schemas(), seed=st.integers(0, 2**32 - 1))
def test_random_mask_walks_validate(schema: Dict[str, Any], seed: int) -> None:
    cg = compiled(schema)
    if cg is None:
        return
    for text in random_walk_texts(cg, TOKENS, EOS, random.Random(seed), walks=2):
        assert valid(json.loads(text.decode("utf-8")), schema), (schema, text)


@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=key_group_schemas(), seed=st.integers(0, 2**32 - 1))
def test_mask_agrees_with_accept_token(schema: Dict[str, Any], seed: int) -> None:
    from test_grammar_properties import check_mask_agrees_with_accept_token

    cg = compiled(schema)
    if cg is not None:
        check_mask_agrees_with_accept_token(cg, random.Random(seed), 12, schema)


def test_calculate_area_shape() -> None:
    """MaskBench's Glaive `dimensions`: radius, or length and width, or base and height."""
    schema = {"type": "object", "properties": {"shape": {"type": "string"}, "dimensions": {
        "type": "object", "properties": {"radius": {"type": "number"}, "length": {"type": "number"},
                                         "width": {"type": "number"}, "base": {"type": "number"}, "height": {"type": "number"}},
        "oneOf": [{"required": ["radius"]}, {"required": ["length", "width"]}, {"required": ["base", "height"]}]}},
        "required": ["shape", "dimensions"]}
    cg = grammar.compile_json_schema(schema, VOCAB, property_order="any")
    for dims in [{"radius": 2}, {"width": 1, "length": 2}, {"base": 1, "height": 2, "length": 3}, {},
                 {"radius": 1, "length": 2, "width": 3}, {"length": 2}, {"radius": "x"}, 3]:
        value = {"shape": "s", "dimensions": dims}
        assert accepts(cg, value, True) == valid(value, schema), dims
    with pytest.raises(GrammarError, match="oneOf branches 0 and 1 may overlap"):
        grammar.compile_json_schema(schema, VOCAB)  # schema order: no seen-key set to decide it


@pytest.mark.parametrize("schema, values", [
    # non-objects match every untyped branch: invalid with two of them
    ({"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, [{"a": 1}, {"a": 1, "b": 2}, "x", 3, None, {}]),
    # typed branches: a non-object matches none
    ({"oneOf": [{"type": "object", "required": ["a"]}, {"type": "object", "required": ["b"]}]}, [{"b": []}, "x"]),
    # a key additionalProperties forbids: its group never completes
    ({"type": "object", "properties": {"a": {}}, "additionalProperties": False,
      "oneOf": [{"required": ["a"]}, {"required": ["z"]}]}, [{"a": 1}, {}, {"z": 1}]),
    # required keys complete a group by themselves
    ({"type": "object", "required": ["a"], "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, [{"a": 1}, {"a": 1, "b": 1}, {"b": 1}]),
    # maxProperties leaves room for one group only
    ({"type": "object", "maxProperties": 1, "oneOf": [{"required": ["a", "b"]}, {"required": ["c"]}]},
     [{"c": 1}, {"a": 1, "b": 2}, {"a": 1}]),
])
def test_edges(schema: Dict[str, Any], values: List[Any]) -> None:
    cg = grammar.compile_json_schema(schema, VOCAB, property_order="any")
    for value in values:
        for ascii_only in (True, False):
            assert accepts(cg, value, ascii_only) == valid(value, schema), value


@pytest.mark.parametrize("schema", [
    # a branch constrains a value the object does not: which branch matches depends on values
    {"type": "object", "oneOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": ["b"]}]},
    # exactly one untyped branch: a non-object matches exactly it (left to the disjointness prover)
    {"oneOf": [{"type": "object", "required": ["a"]}, {"required": ["b"]}]},
])
def test_shapes_that_are_not_only_about_keys_stay_refused(schema: Dict[str, Any]) -> None:
    with pytest.raises(GrammarError, match="may overlap"):
        grammar.compile_json_schema(schema, VOCAB, property_order="any")
