"""Property tests against references: hypothesis-jsonschema instances must be accepted, random
mask-following walks must produce JSON that `jsonschema` validates, and the mask must agree with
`accept_token` on every token at every step."""
from __future__ import annotations

import json
import random
from typing import Any, Dict, List

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolken import grammar

hypothesis_jsonschema = pytest.importorskip("hypothesis_jsonschema")

# A small byte-level vocabulary: every byte plus multi-byte tokens that cross JSON structure.
MULTI = [b'{"', b'":', b'": "', b'", "', b'"}', b'"]', b'},', b'],', b' "', b'true', b'false', b'null', b'12', b'-0',
         b'.5', b'e+', b'ab', b'abc', b'\\u00', b'\\"', "é".encode(), "日本".encode(), b"\xe6", b"\x97\xa5", b"  ", b"\n  "]
TOKENS: List[Any] = [bytes([i]) for i in range(256)] + MULTI + [None]
EOS = len(TOKENS) - 1
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [EOS])

NAMES = st.sampled_from(["a", "b", "name", "x_y", "é", "k2"])


def leaf_schemas() -> st.SearchStrategy[Dict[str, Any]]:
    return st.one_of(
        st.just({"type": "string"}),
        st.builds(lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
                  st.integers(0, 3), st.integers(0, 4)),
        st.just({"type": "string", "pattern": "^[a-c]{1,3}-[0-9]+"}),
        st.just({"type": "string", "format": "date"}),
        st.just({"type": "integer"}),
        st.builds(lambda lo, w: {"type": "integer", "minimum": lo, "maximum": lo + w}, st.integers(-300, 300), st.integers(0, 500)),
        st.just({"type": "integer", "exclusiveMinimum": 0}),
        st.just({"type": "number"}),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.just({"type": ["string", "null"]}),
        st.builds(lambda vals: {"enum": vals}, st.lists(st.one_of(st.text(max_size=4), st.integers(-5, 5), st.booleans(), st.none()),
                                                        min_size=1, max_size=4, unique_by=lambda v: json.dumps(v))),
        st.builds(lambda v: {"const": v}, st.one_of(st.text(max_size=3), st.integers(0, 9))),
    )


def extend(children: st.SearchStrategy[Dict[str, Any]]) -> st.SearchStrategy[Dict[str, Any]]:
    obj = st.builds(
        lambda props, req_mask, addl: {
            "type": "object",
            "properties": props,
            "required": [k for k, r in zip(props, req_mask) if r],
            **({} if addl is None else {"additionalProperties": addl}),
        },
        st.dictionaries(NAMES, children, max_size=4),
        st.lists(st.booleans(), min_size=4, max_size=4),
        st.sampled_from([None, False, {"type": "integer"}]),
    )
    arr = st.builds(lambda items, lo, extra: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + extra},
                    children, st.integers(0, 2), st.integers(0, 3))
    any_of = st.builds(lambda opts: {"anyOf": opts}, st.lists(children, min_size=1, max_size=3))
    return st.one_of(obj, arr, any_of)


SCHEMAS = st.recursive(leaf_schemas(), extend, max_leaves=6)


def reorder(data: Any, schema: Dict[str, Any]) -> Any:
    """Keys in schema order (the grammar emits known properties first, in order)."""
    if "anyOf" in schema:
        for sub in schema["anyOf"]:
            try:
                jsonschema.validate(data, sub)
                return reorder(data, sub)
            except jsonschema.ValidationError:
                continue
        return data
    if isinstance(data, dict):
        props = schema.get("properties", {})
        keys = [k for k in props if k in data] + [k for k in data if k not in props]
        return {k: reorder(data[k], props.get(k, {})) for k in keys}
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [reorder(x, schema["items"]) for x in data]
    return data


@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=SCHEMAS, data=st.data())
def test_generated_instances_are_accepted(schema: Dict[str, Any], data: st.DataObject) -> None:
    cg = grammar.compile_json_schema(schema, VOCAB)
    for _ in range(3):
        instance = data.draw(hypothesis_jsonschema.from_schema(schema))
        text = json.dumps(reorder(instance, schema))
        m = grammar.Matcher(cg)
        assert m.accept_string(text), (schema, text)
        assert m.can_terminate(), (schema, text)
        assert m.accept_token(EOS) and m.is_terminated()
        # also with compact separators
        compact = json.dumps(reorder(instance, schema), separators=(",", ":"))
        assert grammar.Matcher(cg).accept_string(compact)


def allowed_token_ids(m: grammar.Matcher) -> np.ndarray:
    """Ids whose bit is set in m's next-token mask."""
    vocab = m.vocab
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    m.fill_next_token_bitmask(bm, 0)
    bits = np.unpackbits(bm[0].view(np.uint8), bitorder="little")[: vocab.size]
    return np.nonzero(bits)[0]


def random_walk_texts(cg: grammar.CompiledGrammar, tokens: List[Any], eos: int, rng: random.Random, walks: int,
                      max_steps: int = 300, close_after: int = 40) -> List[bytes]:
    """Texts of random mask-following walks that finished with the stop token.

    Each step picks a random allowed token (the stop token with probability 1/2 when allowed;
    after `close_after` steps a closing token when one is allowed, so that walks end).
    """
    closers = {i for i, t in enumerate(tokens) if t in (b'"', b'}', b']', b'0', b'"}', b'"]')}
    out = []
    for _ in range(walks):
        m = grammar.Matcher(cg)
        text = b""
        for step in range(max_steps):
            ids = allowed_token_ids(m)
            assert len(ids) > 0, text  # never a dead end
            if eos in ids and rng.random() < 0.5:
                choice = eos
            elif step > close_after and closers & set(ids.tolist()):
                choice = rng.choice(sorted(closers & set(ids.tolist())))
            else:
                choice = int(rng.choice(ids))
            assert m.accept_token(choice)
            if choice == eos:
                break
            text += tokens[choice]
        if m.is_terminated():
            out.append(text)
    return out


@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32 - 1))
def test_random_mask_walks_validate(schema: Dict[str, Any], seed: int) -> None:
    cg = grammar.compile_json_schema(schema, VOCAB)
    for text in random_walk_texts(cg, TOKENS, EOS, random.Random(seed), walks=2):
        jsonschema.validate(json.loads(text.decode("utf-8")), schema, format_checker=jsonschema.FormatChecker())


def check_mask_agrees_with_accept_token(cg: grammar.CompiledGrammar, rng: random.Random, steps: int, label: Any) -> None:
    """Along a random mask-following walk: the mask is exactly the set of tokens accept_token
    takes, and rollback restores the same mask."""
    m = grammar.Matcher(cg)
    size = cg.vocab.size
    for _ in range(steps):
        ids = set(allowed_token_ids(m).tolist())
        for t in range(size):
            assert m.copy().accept_token(t) == (t in ids), (label, t)
        if not ids or m.is_terminated():
            break
        t = rng.choice(sorted(ids))
        assert m.accept_token(t)
        m.rollback(1)
        assert set(allowed_token_ids(m).tolist()) == ids
        assert m.accept_token(t)


@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=SCHEMAS, seed=st.integers(0, 2**32 - 1))
def test_mask_agrees_with_accept_token(schema: Dict[str, Any], seed: int) -> None:
    check_mask_agrees_with_accept_token(grammar.compile_json_schema(schema, VOCAB), random.Random(seed), 12, schema)


def test_recursive_ref_and_jump_forward() -> None:
    schema = {
        "$defs": {"node": {"type": "object", "properties": {
            "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                           "required": ["v", "kids"], "additionalProperties": False}},
        "$ref": "#/$defs/node",
    }
    cg = grammar.compile_json_schema(schema, VOCAB, whitespace="compact")
    m = grammar.Matcher(cg)
    assert m.find_jump_forward_string() == '{"v":'
    assert m.accept_string('{"v":1,"kids":[{"v":2,"kids":[{"v":3,"kids":[]}]}]}')
    assert m.can_terminate()
    assert not grammar.Matcher(cg).accept_string('{"v":1,"kids":[{"kids":[]}]}')
