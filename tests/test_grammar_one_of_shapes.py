"""oneOf shapes the prover decides by reading branches more closely (MaskBench's refused oneOfs).

- Values that match two branches whole are excluded before the proof (oneOf rejects them
  anyway): a JSON type two branches accept entirely (every non-object matches two branches that
  only constrain objects), and the empty object, string and array where two branches accept
  them (``{}`` for two ``additionalProperties: false`` branches with different keys).
- Alternatives inside a branch are compared with their sibling keywords; ``patternProperties``
  give a property's schema; a concrete value (const/enum) is checked against the other branch
  by a small validator (patterns, lengths, bounds, items, properties, ...).

Against `jsonschema`: hand-written shapes taken from MaskBench schemas and generated oneOfs
(object, string, array and untyped branches) either are refused or accept a value exactly when
it is valid, in both JSON encodings; random mask-following walks end in valid values.
"""
from __future__ import annotations

import json
import random
from typing import Any, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_grammar_keywords import accepts, valid
from test_grammar_properties import random_walk_texts
from toolken import GrammarError, grammar

hypothesis_jsonschema = pytest.importorskip("hypothesis_jsonschema")

TOKENS: List[Any] = [bytes([i]) for i in range(256)] + [b'{"', b'":', b'", "', b'"}', b"true", b"null", b"[]", None]
EOS = len(TOKENS) - 1
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [EOS])
OTHERS = [None, True, 0, 1.5, "", "x", "customer", [], [1], {}, {"k": "a"}, {"z": 1}]


def check_exact(schema: Any, values: List[Any], order: str = "any") -> grammar.CompiledGrammar:
    cg = grammar.compile_json_schema(schema, VOCAB, property_order=order)
    for value in values:
        for ascii_only in (True, False):
            assert accepts(cg, value, ascii_only) == valid(value, schema), (schema, value, ascii_only)
    return cg


SHAPES = [
    # discriminated union without `type`: non-objects match both branches (Snowplow, Github)
    ({"items": {"oneOf": [
        {"additionalProperties": False, "properties": {"key": {"type": "string"}, "type": {"enum": ["InvalidValue"]}},
         "required": ["type", "key"]},
        {"additionalProperties": False, "properties": {"message": {"type": "string"}, "type": {"enum": ["Unhandled"]}},
         "required": ["type", "message"]}]}, "type": "array"},
     [[{"type": "InvalidValue", "key": "k"}], [{"type": "Unhandled", "message": "m"}], ["x"], [3], [None],
      [{"type": "InvalidValue", "message": "m"}], [{}], [{"type": "Unhandled", "key": "k", "message": "m"}]]),
    ({"oneOf": [{"properties": {"t": {"const": "a"}}, "required": ["t"]},
                {"properties": {"t": {"const": "b"}}, "required": ["t"]}]},
     [{"t": "a"}, {"t": "b"}, {"t": "c"}, {"t": "a", "u": 1}, {}, "x", 3, None, [], True]),
    # additionalProperties false, different keys: only {} matches both
    ({"properties": {"choice": {"oneOf": [
        {"type": "object", "additionalProperties": False, "properties": {"foo": {"type": "string"}}},
        {"type": "object", "additionalProperties": False, "properties": {"bar": {"type": "string"}}}]}}},
     [{"choice": {}}, {"choice": {"foo": "x"}}, {"choice": {"bar": "y"}}, {"choice": {"foo": "x", "bar": "y"}},
      {"choice": {"baz": 1}}, {"choice": {"foo": 1}}, {}]),
    # an optional discriminator with distinct consts
    ({"type": "object", "oneOf": [
        {"properties": {"d": {"const": "first"}, "first": {"type": "boolean"}}, "additionalProperties": False},
        {"properties": {"d": {"const": "second"}, "second": {"type": "boolean"}}, "additionalProperties": False}]},
     [{}, {"d": "first"}, {"d": "second", "second": True}, {"first": True}, {"d": "first", "second": True},
      {"d": "third"}, {"first": True, "second": False}]),
    # a branch that accepts everything and one that accepts strings: no string is valid
    ({"oneOf": [{"instanceof": "RegExp"}, {"preprocess": "regexp", "type": "string"}]}, OTHERS),
    # "" matches both: excluded
    ({"type": "string", "oneOf": [{"enum": [""]}, {"x-format": "email"}]}, ["", "a", "a@b", 3]),
    ({"type": "string", "oneOf": [{"type": "string", "pattern": "^[A-Fa-f\\d]{4}$"}, {"type": "string", "enum": [""]}]},
     ["", "abcd", "ABC1", "abc", "abcde", "g123"]),
    # [] matches both: excluded, the first branch is then empty
    ({"oneOf": [{"type": "array", "maxItems": 0}, {"type": "array", "items": {"type": "integer"}}]},
     [[], [1], [1, 2], ["x"], {}, 0]),
    # [] matches both (the second branch constrains objects only); a const container is checked
    # against the array keywords beside it
    ({"oneOf": [{"const": []}, {"properties": {}, "additionalProperties": False}]}, [[], {}, [1], {"a": 1}]),
    ({"anyOf": [{"const": [], "minItems": 1}, {"enum": [{"a": 1}, {"b": 1}], "required": ["b"]}]}, [[], {"a": 1}, {"b": 1}]),
    # a nested oneOf compared with its siblings (the `status` both branches require)
    ({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}, "oneOf": [
        {"required": ["status"], "properties": {"status": {"enum": ["changed"]}},
         "oneOf": [{"required": ["mode"]}, {"required": ["link"]}]},
        {"required": ["status", "error"], "properties": {"status": {"enum": ["error"]}, "error": {"type": "string"}}}]},
     [{"name": "n", "status": "changed", "mode": 1}, {"name": "n", "status": "changed", "link": 1},
      {"name": "n", "status": "changed", "mode": 1, "link": 2}, {"name": "n", "status": "error", "error": "e"},
      {"name": "n", "status": "error", "error": "e", "mode": 1}, {"name": "n", "status": "changed"}]),
    # anyOf inside a typed branch: its parts have the branch's type
    ({"oneOf": [{"type": ["string", "null"], "minLength": 2},
                {"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}]},
     ["ab", "a", None, {"a": "x"}, {"b": 1}, {}, {"a": 1}, 3]),
    # a const array checked against the other branch's items
    ({"type": "object", "oneOf": [
        {"required": ["changes", "mode"], "properties": {"changes": {"type": "array", "items": {"enum": ["size", "mode"]}},
                                                         "mode": {"type": "string"}}},
        {"required": ["changes"], "properties": {"changes": {"enum": [["deleted"]]}}}]},
     [{"changes": ["deleted"]}, {"changes": ["deleted"], "mode": "x"}, {"changes": ["size"], "mode": "x"},
      {"changes": ["size"]}, {"changes": [], "mode": "m"}]),
    # patternProperties give a property's schema
    ({"oneOf": [
        {"type": "object", "properties": {"mbox": {"type": "string"}}, "patternProperties": {"^(sha|account)$": {"type": "null"}},
         "required": ["mbox"]},
        {"type": "object", "properties": {"sha": {"type": "string"}}, "patternProperties": {"^(mbox|account)$": {"type": "null"}},
         "required": ["sha"]}]},
     [{"mbox": "m"}, {"sha": "s"}, {"mbox": "m", "sha": None}, {"mbox": None, "sha": "s"}, {"mbox": "m", "sha": "s"}, {}]),
    # $ref branches
    ({"$defs": {"a": {"type": "object", "properties": {"k": {"const": "a"}, "x": {"type": "integer"}}, "additionalProperties": False},
                "b": {"type": "object", "properties": {"k": {"const": "b"}, "y": {"type": "integer"}}, "additionalProperties": False}},
      "oneOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}]},
     [{}, {"k": "a"}, {"k": "b", "y": 1}, {"x": 1}, {"x": 1, "y": 2}, {"k": "a", "y": 1}]),
]


@pytest.mark.parametrize("schema, values", SHAPES, ids=range(len(SHAPES)))
def test_shapes_compile_exactly(schema: Dict[str, Any], values: List[Any]) -> None:
    cg = check_exact(schema, values + OTHERS)
    for text in random_walk_texts(cg, TOKENS, EOS, random.Random(len(json.dumps(schema))), walks=8, max_steps=200, close_after=30):
        assert valid(json.loads(text.decode("utf-8")), schema), (schema, text)


def test_schema_order() -> None:
    """Type exclusion needs nothing of the object; excluding {} needs minProperties, which
    schema order supports only through required keys (refused as before)."""
    schema, values = SHAPES[1]
    check_exact(schema, values + OTHERS, order="schema")
    with pytest.raises(GrammarError, match="may overlap"):
        grammar.compile_json_schema(SHAPES[2][0], VOCAB, property_order="schema")


@pytest.mark.parametrize("schema", [
    # {"z": 1} matches both (open objects): only {} would be excluded, which is not enough
    {"type": "object", "oneOf": [{"properties": {"t": {"const": "a"}}}, {"properties": {"t": {"const": "b"}}}]},
    # "customermaker" matches both patterns
    {"type": "string", "oneOf": [{"pattern": "customer"}, {"pattern": "maker"}]},
    # which branch matches depends on the value of a key both allow
    {"type": "object", "oneOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]},
                                 {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
    # a branch accepting all numbers and one accepting integers: integers are not a whole class
    {"oneOf": [{"type": "number"}, {"type": "integer", "minimum": 0}]},
])
def test_overlaps_stay_refused(schema: Dict[str, Any]) -> None:
    with pytest.raises(GrammarError, match="may overlap"):
        grammar.compile_json_schema(schema, VOCAB, property_order="schema")
    with pytest.raises(GrammarError, match="may overlap"):
        grammar.compile_json_schema(schema, VOCAB, property_order="any")


OBJECT_BRANCHES = st.builds(
    lambda props, addl, req, typed: {
        **({"type": "object"} if typed else {}),
        "properties": props,
        **({"additionalProperties": addl} if addl is not None else {}),
        **({"required": sorted(props)[:1]} if req and props else {})},
    st.dictionaries(st.sampled_from(["k", "x", "y"]),
                    st.sampled_from([{"const": "a"}, {"const": "b"}, {"type": "integer"}, {"type": "string"}, {}]),
                    max_size=2),
    st.sampled_from([None, False, False, {"type": "integer"}]), st.booleans(), st.booleans())
LEAF_BRANCHES = st.sampled_from([
    {}, {"type": "string"}, {"type": "string", "minLength": 1}, {"enum": [""]}, {"enum": ["", "a"]}, {"const": []},
    {"type": "array", "maxItems": 0}, {"type": "array", "items": {"type": "integer"}}, {"type": "integer"},
    {"type": "number"}, {"type": ["null", "boolean"]}, {"x-note": 1}, {"minLength": 2}, {"type": "array", "minItems": 1},
])
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["", "a", "b", "ab"])),
    lambda inner: st.one_of(st.lists(inner, max_size=2),
                            st.dictionaries(st.sampled_from(["k", "x", "y", "z"]), inner, max_size=3)),
    max_leaves=4)


@settings(max_examples=100, suppress_health_check=list(HealthCheck), deadline=None)
@given(branches=st.lists(st.one_of(OBJECT_BRANCHES, LEAF_BRANCHES), min_size=2, max_size=3),
       values=st.lists(VALUES, min_size=4, max_size=8), order=st.sampled_from(["any", "schema"]), data=st.data())
def test_generated_one_of_is_exact_or_refused(branches: List[Dict[str, Any]], values: List[Any], order: str,
                                              data: st.DataObject) -> None:
    schema = {"oneOf": branches}
    try:
        cg = grammar.compile_json_schema(schema, VOCAB, property_order=order)
    except GrammarError as e:
        assert "may overlap" in str(e) or "admits no JSON value" in str(e), e
        return
    union = [data.draw(hypothesis_jsonschema.from_schema({"anyOf": branches})) for _ in range(3)]
    for value in values + union + OTHERS:
        for ascii_only in (True, False):
            if order == "any":
                assert accepts(cg, value, ascii_only) == valid(value, schema), (schema, value, ascii_only)
            else:  # schema order rejects valid objects whose keys come in another order
                assert not accepts(cg, value, ascii_only) or valid(value, schema), (schema, value, ascii_only)


@pytest.mark.parametrize("schema, value", [
    # Python's \w matches "é", toolken's (ASCII) does not: "é" matches both under jsonschema
    ({"oneOf": [{"type": "string", "pattern": "^\\w+$"}, {"type": "string", "pattern": "^[é]+$"}]}, "é"),
    ({"oneOf": [{"type": "string", "pattern": "^\\d$"}, {"const": "٣"}]}, "٣"),
    # Python's $ matches before a trailing newline
    ({"oneOf": [{"type": "string", "pattern": "^a$"}, {"type": "string", "pattern": "^a\\n$"}]}, "a\n"),
])
def test_regex_subset_does_not_prove_disjointness(schema: Dict[str, Any], value: Any) -> None:
    """toolken's regexes accept a subset of Python's `re` (regex.h); a disjointness shown on the
    subset would let the grammar accept a value that matches two branches."""
    assert not valid(value, schema)
    with pytest.raises(GrammarError, match="may overlap"):
        grammar.compile_json_schema(schema, VOCAB)


@pytest.mark.parametrize("schema", [
    {"oneOf": [{"type": "string", "pattern": "^\\d+$", "maxLength": 2}, {"type": "string", "pattern": "^\\d+$", "minLength": 3}]},
    {"oneOf": [{"type": "string", "pattern": "^\\d+$"}, {"type": "string", "pattern": "^[a-z]+$"}]},
    {"oneOf": [{"type": "string", "pattern": "^[0-9]+"}, {"type": "string", "pattern": "^[a-zé]+"}]},
])
def test_regex_disjointness_that_holds_for_python_too(schema: Dict[str, Any]) -> None:
    # (not "١" or "a\\n": Python reads \\d and $ more widely than toolken, a documented subset, regex.h)
    check_exact(schema, ["1", "12", "123", "ab", "é", "1é", "a1", "", "\n"])
