"""Non-integer numeric bounds (inclusive and exclusive) and multipleOf, exact on the decimal
value of the JSON text.

References: `jsonschema` with every number read as a `decimal.Decimal` (schema and instance),
so that validity is the exact decimal one the engine implements. Number texts (integers,
decimals, trailing zeros, negative zero) must be accepted exactly when valid, on the byte-level
test vocabulary and on the Llama-3 tokenizer; random mask-following walks must produce valid
numbers; the mask must agree with accept_token.
"""
from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any, Dict

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_grammar_properties import EOS, TOKENS, VOCAB, check_mask_agrees_with_accept_token, random_walk_texts
from toolken import GrammarError, grammar

BOUNDS = st.sampled_from(["0.5", "-1.25", "2.75", "0.1", "-0.05", "3", "0", "12.125", "-7"])
MULTIPLES = st.sampled_from(["0.5", "0.25", "2", "3", "1.5", "0.1", "0.05", "7"])


@st.composite
def number_schemas(draw: Any) -> Dict[str, Any]:
    schema: Dict[str, Any] = {"type": draw(st.sampled_from(["number", "integer"]))}
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if draw(st.integers(0, 2)) == 0:
            schema[key] = draw(BOUNDS)
    if draw(st.booleans()):
        schema["multipleOf"] = draw(MULTIPLES)
    return schema  # values are JSON number texts: _numbers_unquoted writes them as literals


def _numbers_unquoted(schema: Dict[str, Any]) -> str:
    parts = [f'"type": "{schema["type"]}"'] + [f'"{k}": {v}' for k, v in schema.items() if k != "type"]
    return "{" + ", ".join(parts) + "}"


NUMBER_TEXTS = st.one_of(
    st.integers(-30, 30).map(str),
    st.decimals(min_value=-30, max_value=30, places=3, allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["0.50", "-0", "-0.0", "2.750", "0.10", "1.0", "3.00", "-1.250", "0.05", "0.1000"]),
)


def valid(text: str, schema_json: str) -> bool:
    schema = json.loads(schema_json, parse_float=Decimal)
    return jsonschema.Draft202012Validator(schema).is_valid(json.loads(text, parse_float=Decimal))


def compile_or_none(schema_json: str, vocab: Any = VOCAB) -> Any:
    try:
        return grammar.compile_json_schema(schema_json, vocab)
    except GrammarError as e:
        assert "admits no JSON value" in str(e), (schema_json, e)
        return None


def accepts(cg: Any, text: str) -> bool:
    m = grammar.Matcher(cg)
    return m.accept_string(text) and m.can_terminate()


@settings(max_examples=300, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=number_schemas(), texts=st.lists(NUMBER_TEXTS, min_size=1, max_size=8))
def test_number_texts_accepted_exactly_when_valid(schema: Dict[str, Any], texts: Any) -> None:
    sj = _numbers_unquoted(schema)
    cg = compile_or_none(sj)
    for text in texts:
        if cg is None:
            assert not valid(text, sj), (sj, text)
            continue
        if text in ("-0", "-0.0") and valid(text, sj):
            continue  # "-0" is outside the engine's language (documented subset)
        if schema["type"] == "integer" and "." in text:
            continue  # 1.0 is an integer for jsonschema; the engine's integers have no fraction
        assert accepts(cg, text) == valid(text, sj), (sj, text)


@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=number_schemas(), seed=st.integers(0, 2**32 - 1))
def test_random_mask_walks_are_valid_numbers(schema: Dict[str, Any], seed: int) -> None:
    sj = _numbers_unquoted(schema)
    cg = compile_or_none(sj)
    if cg is None:
        return
    obj = compile_or_none('{"type": "object", "properties": {"v": ' + sj + '}, "required": ["v"], "additionalProperties": false}')
    for text in random_walk_texts(cg, TOKENS, EOS, random.Random(seed), walks=3, close_after=12):
        assert valid(text.decode(), sj), (sj, text)
    if obj is not None:
        for text in random_walk_texts(obj, TOKENS, EOS, random.Random(seed), walks=2, close_after=12):
            assert valid(json.loads(text.decode(), parse_float=str, parse_int=str)["v"], sj), (sj, text)


@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=number_schemas(), seed=st.integers(0, 2**32 - 1))
def test_mask_agrees_with_accept_token(schema: Dict[str, Any], seed: int) -> None:
    cg = compile_or_none(_numbers_unquoted(schema))
    if cg is not None:
        check_mask_agrees_with_accept_token(cg, random.Random(seed), 10, schema)


def test_examples() -> None:
    cg = grammar.compile_json_schema('{"type": "number", "exclusiveMinimum": 0.5, "maximum": 2.25}', VOCAB)
    assert [accepts(cg, t) for t in ["0.5", "0.50001", "1", "2.25", "2.250", "2.2501", "3", "-1"]] == \
        [False, True, True, True, True, False, False, False]
    cg = grammar.compile_json_schema('{"type": "number", "multipleOf": 0.01, "minimum": -1}', VOCAB)
    assert [accepts(cg, t) for t in ["0.01", "0.015", "-0.99", "-1.01", "3.1400", "12"]] == \
        [True, False, True, False, True, True]
    cg = grammar.compile_json_schema('{"type": "integer", "multipleOf": 3, "maximum": 10}', VOCAB)
    assert [accepts(cg, t) for t in ["9", "10", "-3", "0", "12"]] == [True, False, True, True, False]
    with pytest.raises(GrammarError, match="multipleOf"):
        grammar.compile_json_schema('{"type": "number", "multipleOf": 0}', VOCAB)


def test_llama3_tokens_agree(llama3_tokenizer: Any) -> None:
    vocab = grammar.Vocabulary.from_tokenizer(llama3_tokenizer)
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    schema = '{"type": "object", "properties": {"p": {"type": "number", "minimum": 0.05, "exclusiveMaximum": 99.5, "multipleOf": 0.05}}}'
    cg = grammar.compile_json_schema(schema, vocab)
    for value in ["0.05", "0.1", "0.04", "99.45", "99.5", "12.3456", "7", "0.050"]:
        text = '{"p": ' + value + "}"
        m = grammar.Matcher(cg)
        ok = True
        for t in llama3_tokenizer.encode(text, add_special_tokens=False):
            m.fill_next_token_bitmask(bm, 0)
            assert bool((bm[0, t // 32] >> (t % 32)) & 1) == m.copy().accept_token(t)
            if not m.accept_token(t):
                ok = False
                break
        assert (ok and m.can_terminate()) == valid(text, schema), text
