"""property_order="any": an object's properties in any order, each known key at most once,
`required`, `additionalProperties`, `patternProperties`, `minProperties` and `maxProperties`
exact (a seen-key set per open object in the matcher state).

References: `jsonschema` decides validity. Instances (hypothesis-jsonschema's, with their keys
shuffled, and random objects over the same key pool) must be accepted exactly when valid, on
the byte-level test vocabulary and on real tokenizers (Llama-3 BPE, Mistral SentencePiece);
random mask-following walks must produce valid JSON; the mask must agree with accept_token.
"""
from __future__ import annotations

import json
import random
from typing import Any, Dict

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_grammar_properties import EOS, TOKENS, VOCAB, check_mask_agrees_with_accept_token, random_walk_texts
from toolken import GrammarError, grammar

hypothesis_jsonschema = pytest.importorskip("hypothesis_jsonschema")

KEYS = ["a", "b", "c", "x_y", "é"]
VALUES = st.sampled_from([{"type": "integer"}, {"type": "string", "maxLength": 2}, {"type": "boolean"},
                          {"enum": [1, "z"]}, {"type": "null"}])


@st.composite
def object_schemas(draw: Any) -> Dict[str, Any]:
    """Objects mixing known, required, additional and pattern properties with count bounds."""
    props = draw(st.dictionaries(st.sampled_from(KEYS[:4]), VALUES, max_size=4))
    schema: Dict[str, Any] = {"type": "object", "properties": props}
    req = [k for k in props if draw(st.booleans())]
    if draw(st.booleans()) and props:
        req.append(draw(st.sampled_from(sorted(props))))
    if req:
        schema["required"] = sorted(set(req))
    addl = draw(st.sampled_from([None, False, True, {"type": "integer"}]))
    if addl is not None:
        schema["additionalProperties"] = addl
    if draw(st.integers(0, 3)) == 0:
        schema["patternProperties"] = {"^p[0-9]$": {"type": "integer"}}
    lo = draw(st.integers(0, 4))
    if draw(st.booleans()):
        schema["minProperties"] = lo
    if draw(st.booleans()):
        schema["maxProperties"] = lo + draw(st.integers(-1, 3)) if lo else draw(st.integers(0, 3))
    return schema


RANDOM_OBJECTS = st.dictionaries(st.sampled_from(KEYS + ["p1", "p7", "q"]),
                                 st.sampled_from([1, -3, "z", "zz", "zzz", True, None, 2.5]), max_size=6)


def valid(instance: Any, schema: Dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


def compiles(schema: Dict[str, Any], **kw: Any) -> Any:
    try:
        return grammar.compile_json_schema(schema, VOCAB, property_order="any", **kw)
    except GrammarError as e:
        # refused: unsatisfiable schemas, and minProperties where an additional key could repeat
        # (it would count twice: looser than the schema, so a compile error instead)
        assert "admits no JSON value" in str(e) or (repeatable_minimum(schema, **kw) and "repeated additional key" in str(e)), (schema, e)
        return None


def repeatable_minimum(schema: Dict[str, Any], strict: bool = False, **_: Any) -> bool:
    """minProperties beyond the required keys while additional keys may repeat: refused (a repeat would count twice)."""
    more = schema.get("additionalProperties", not (strict and "properties" in schema)) is not False
    beyond = schema.get("minProperties", 0) > len(set(schema.get("required", [])))
    return beyond and (bool(schema.get("patternProperties")) or more)


def accepts(cg: Any, text: str) -> bool:
    m = grammar.Matcher(cg)
    return m.accept_string(text) and m.can_terminate()


@settings(max_examples=150, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=object_schemas(), instance=RANDOM_OBJECTS, seed=st.integers(0, 2**32 - 1))
def test_accepted_exactly_when_valid(schema: Dict[str, Any], instance: Dict[str, Any], seed: int) -> None:
    cg = compiles(schema)
    ok = valid(instance, schema)
    if cg is None:
        assert not ok or repeatable_minimum(schema), (schema, instance)
        return
    items = list(instance.items())
    random.Random(seed).shuffle(items)
    text = json.dumps(dict(items))
    assert accepts(cg, text) == ok, (schema, text, ok)
    assert accepts(cg, json.dumps(dict(items), separators=(",", ":"))) == ok


@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=object_schemas(), data=st.data())
def test_generated_instances_in_any_order_are_accepted(schema: Dict[str, Any], data: st.DataObject) -> None:
    cg = compiles(schema)
    if cg is None:
        return
    for ws in ("compact", "canonical"):
        assert grammar.compile_json_schema(schema, VOCAB, property_order="any", whitespace=ws) is not None
    for _ in range(3):
        instance = data.draw(hypothesis_jsonschema.from_schema(schema))
        items = list(instance.items())
        data.draw(st.randoms()).shuffle(items)
        text = json.dumps(dict(items))
        assert accepts(cg, text), (schema, text)
        canon = grammar.compile_json_schema(schema, VOCAB, property_order="any", whitespace="canonical")
        assert accepts(canon, text), (schema, text)


@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=object_schemas(), seed=st.integers(0, 2**32 - 1))
def test_random_mask_walks_validate(schema: Dict[str, Any], seed: int) -> None:
    cg = compiles(schema)
    if cg is None:
        return
    for text in random_walk_texts(cg, TOKENS, EOS, random.Random(seed), walks=3):
        assert valid(json.loads(text.decode("utf-8")), schema), (schema, text)


@settings(max_examples=30, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=object_schemas(), seed=st.integers(0, 2**32 - 1))
def test_mask_agrees_with_accept_token(schema: Dict[str, Any], seed: int) -> None:
    cg = compiles(schema)
    if cg is not None:
        check_mask_agrees_with_accept_token(cg, random.Random(seed), 16, schema)


def test_examples() -> None:
    schema = {"type": "object", "properties": {"author": {"type": "string"}, "name": {"type": "string"}},
              "required": ["author"], "additionalProperties": False}
    cg = grammar.compile_json_schema(schema, VOCAB, property_order="any")
    assert accepts(cg, '{"name": "n", "author": "a"}')  # the issue's case
    assert not accepts(cg, '{"name": "n"}')  # required missing: no '}'
    assert not grammar.Matcher(cg).accept_string('{"author": "a", "author": "b"')  # at most once
    # schema order stays the default and rejects it
    assert not accepts(grammar.compile_json_schema(schema, VOCAB), '{"name": "n", "author": "a"}')
    counted = {"type": "object", "properties": {"a": {}, "b": {}, "c": {}, "d": {}}, "minProperties": 2,
               "maxProperties": 3, "additionalProperties": False}
    cg = grammar.compile_json_schema(counted, VOCAB, property_order="any")
    assert accepts(cg, '{"b": 1, "d": 2}') and accepts(cg, '{"b": 1, "a": 2, "c": 3}')
    assert not accepts(cg, '{"b": 1}') and not accepts(cg, '{"b": 1, "a": 2, "c": 3, "d": 4}')
    m = grammar.Matcher(cg)
    assert m.accept_string('{"b": 1, "a": 2, "c": 3') and not m.copy().accept_string(",")  # no 4th member
    with pytest.raises(GrammarError, match="repeated additional key"):  # a repeated extra key would count twice
        grammar.compile_json_schema({**counted, "additionalProperties": True}, VOCAB, property_order="any")
    m = grammar.Matcher(grammar.compile_json_schema({**counted, "additionalProperties": True, "maxProperties": 2,
                                                     "minProperties": 0}, VOCAB, property_order="any"))
    assert m.accept_string('{"b": 1, "zz": 2') and not m.copy().accept_string(",")  # extra keys count too
    with pytest.raises(GrammarError, match="admits no JSON value"):
        grammar.compile_json_schema({"type": "object", "required": ["a", "b"], "maxProperties": 1}, VOCAB,
                                    property_order="any")
    with pytest.raises(GrammarError, match="property_order"):
        grammar.compile_json_schema({}, VOCAB, property_order="sorted")


def test_closing_suffixes_are_not_reused_across_a_rollback() -> None:
    """A matcher remembers which closing suffixes ('"}', '",' ...) pass from a string value's
    continuation, keyed by that value's frame; after a rollback the same frame id can belong to
    another member whose object may not close yet: its mask must be computed anew."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
              "required": ["a"], "additionalProperties": False}
    cg = grammar.compile_json_schema(schema, VOCAB, property_order="any", whitespace="compact")
    close = TOKENS.index(b'"}')
    bm = grammar.allocate_token_bitmask(1, VOCAB.size)

    def close_allowed(m: grammar.Matcher) -> bool:
        m.fill_next_token_bitmask(bm, 0)
        bit = bool((int(bm[0][close >> 5]) >> (close & 31)) & 1)
        assert bit == m.copy().accept_token(close)
        return bit

    m = grammar.Matcher(cg)
    assert m.accept_string('{"a":"x') and close_allowed(m)  # "a" seen: the object may close
    assert m.accept_string("y") and close_allowed(m)  # the remembered outcome, same value
    m.rollback(m.num_accepted)
    assert m.accept_string('{"b":"x') and not close_allowed(m)  # "a" missing: it may not
    assert m.accept_string("y") and not close_allowed(m)


def test_separator_only_while_a_member_can_follow() -> None:
    """The object reads ', "' itself before its members fan out; the mask offers ',' only while
    some member could still be called, else it would lead into a dead end."""
    bm = grammar.allocate_token_bitmask(1, VOCAB.size)
    comma = TOKENS.index(b",")

    def comma_allowed(m: grammar.Matcher) -> bool:
        m.fill_next_token_bitmask(bm, 0)
        bit = bool((int(bm[0][comma >> 5]) >> (comma & 31)) & 1)
        assert bit == m.copy().accept_token(comma)
        return bit

    cases = [  # (schema, prefix, a member that may follow, or None)
        ({"properties": {"a": {}, "b": {}}, "additionalProperties": False}, '{"b": 1', '"a": 2}'),
        ({"properties": {"a": {}, "b": {}}, "additionalProperties": False}, '{"b": 1, "a": 2', None),
        ({"properties": {"a": {}, "b": False}, "additionalProperties": False}, '{"a": 1', None),  # b admits no value
        ({"properties": {"a": {}}, "maxProperties": 2}, '{"a": 1', '"q": 2}'),  # an additional key
        ({"properties": {"a": {}}, "maxProperties": 2}, '{"a": 1, "q": 2', None),
        ({"patternProperties": {"^x": {}}, "additionalProperties": False}, '{"x1": 1', '"x2": 2}'),
    ]
    for schema, prefix, member in cases:
        m = grammar.Matcher(grammar.compile_json_schema({"type": "object", **schema}, VOCAB, property_order="any"))
        assert m.accept_string(prefix), (schema, prefix)
        assert comma_allowed(m) == (member is not None), (schema, prefix)
        if member:
            assert m.accept_string(", " + member) and m.can_terminate(), (schema, prefix)


def test_required_property_that_admits_nothing_makes_the_object_unsatisfiable() -> None:
    schema = {"anyOf": [{"type": "object", "properties": {"a": {"type": "object", "required": ["z"],
                                                                 "properties": {"z": False}}},
                         "required": ["a"]}, {"type": "integer"}]}
    cg = grammar.compile_json_schema(schema, VOCAB, property_order="any")
    assert not grammar.Matcher(cg).accept_string("{")  # the object branch can never close
    assert accepts(cg, "12")


@pytest.mark.parametrize("tok_name", ["llama3_tokenizer", "mistral_tokenizer"])
def test_real_tokenizers_walk_shuffled_instances(request: Any, tok_name: str) -> None:
    tok = request.getfixturevalue(tok_name)
    vocab = grammar.Vocabulary.from_tokenizer(tok)
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    stop_ids = np.array(vocab.stop_ids)
    rng = random.Random(0)
    schemas = [
        {"type": "object", "properties": {"author": {"type": "string"}, "name": {"type": "string"},
                                          "year": {"type": "integer", "minimum": 0}},
         "required": ["author", "name"], "additionalProperties": False},
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
         "patternProperties": {"^x": {"type": "boolean"}}, "additionalProperties": False, "maxProperties": 2},
        {"type": "object", "properties": {"k": {"type": "object", "properties": {"p": {}, "q": {}}, "required": ["q"]}},
         "maxProperties": 2},
    ]
    instances = [
        [{"name": "n", "author": "a"}, {"year": 3, "name": "n", "author": "a"}, {"name": "n"}, {"name": "n", "author": "a", "z": 1}],
        [{"b": "s", "a": 1}, {"xy": True, "a": 2}, {"a": 1}, {"xy": 1, "a": 2}],
        [{"z": 1, "k": {"q": 1, "p": 2}}, {"k": {"p": 1}}, {"a": 1, "b": 2, "c": 3}, {}],
    ]
    for schema, insts in zip(schemas, instances):
        for ws in ("flexible", "canonical"):
            cg = grammar.compile_json_schema(schema, vocab, whitespace=ws, property_order="any")
            for inst in insts:
                text = json.dumps(inst)
                ids = tok.encode(text, add_special_tokens=False)
                if b"".join(vocab.token_bytes(t) for t in ids) != text.encode():  # SentencePiece's prefix space
                    ids = ids[1:] if vocab.token_bytes(ids[0]) == b" " else tok.encode("a" + text, add_special_tokens=False)[1:]
                assert b"".join(vocab.token_bytes(t) for t in ids) == text.encode()
                m = grammar.Matcher(cg)
                ok = True
                for t in ids:
                    m.fill_next_token_bitmask(bm, 0)
                    allowed = bool((bm[0, t // 32] >> (t % 32)) & 1)
                    assert allowed == m.copy().accept_token(t), (schema, text, t)
                    if not m.accept_token(t):
                        ok = False
                        break
                ok = ok and m.can_terminate()
                assert ok == valid(inst, schema), (tok_name, ws, schema, text)
            # random walks on the real vocabulary end in valid JSON
            for _ in range(3):
                m = grammar.Matcher(cg)
                out = []
                for step in range(60):
                    m.fill_next_token_bitmask(bm, 0)
                    ids = np.nonzero(np.unpackbits(bm[0].view(np.uint8), bitorder="little")[: vocab.size])[0]
                    text_ids = ids[~np.isin(ids, stop_ids)]
                    if len(text_ids) < len(ids) and (step > 30 or rng.random() < 0.3 or not len(text_ids)):
                        break
                    t = int(rng.choice(text_ids))
                    assert m.accept_token(t)
                    out.append(t)
                if m.can_terminate():
                    assert valid(json.loads(tok.decode(out)), schema), (schema, tok.decode(out))
