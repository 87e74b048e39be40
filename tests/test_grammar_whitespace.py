"""whitespace="canonical" (issue 19): exactly json.dumps' separators, ", " and ": ", nothing else.

Property test: for hypothesis-generated valid instances of a few schemas, the text of
``json.dumps(x, ensure_ascii=False)`` is accepted token by token (one byte per token, the mask
allowing every token taken) and may stop; the same text with any other whitespace (a separator
space removed, or whitespace added at any structural place) is rejected. Then, on SmolLM2's real
vocabulary: with canonical separators and a fixed-order object the mask at a separator/key
position allows only the tokens that start the forced run.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from toolken import GrammarError, grammar

TOKENS = [bytes([i]) for i in range(256)] + [None]
EOS = 256
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [EOS])

SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            "n": {"type": "integer"},
            "ok": {"type": "boolean"},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
    "array_of_objects": {
        "type": "array",
        "maxItems": 4,
        "items": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": ["string", "null"]}},
            "additionalProperties": False,
        },
    },
    "map": {"type": "object", "additionalProperties": {"type": "integer"}},
    "enum_of_structures": {"enum": [{"a": [1, 2], "b": {}}, [3, {"c": None}], []]},
    "nested": {
        "type": "object",
        "properties": {"inner": {"type": "object", "properties": {"v": {"type": "array", "items": {"type": "integer"}}},
                                 "additionalProperties": False}},
        "additionalProperties": False,
    },
}


def in_schema_order(x: Any, schema: Any) -> Any:
    """`x` with object keys in the schema's property order (the engine's documented order)."""
    if isinstance(x, dict) and isinstance(schema, dict):
        props = schema.get("properties", {})
        keys = [k for k in props if k in x] + [k for k in x if k not in props]
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return {k: in_schema_order(x[k], props.get(k, extra)) for k in keys}
    if isinstance(x, list) and isinstance(schema, dict):
        return [in_schema_order(v, schema.get("items", {})) for v in x]
    return x


def accepts(cg: grammar.CompiledGrammar, data: bytes) -> bool:
    """Byte by byte, each byte allowed by the mask before it is accepted; then the stop token."""
    m = grammar.Matcher(cg)
    bm = grammar.allocate_token_bitmask(1, VOCAB.size)
    for b in data:
        m.fill_next_token_bitmask(bm, 0)
        allowed = bool((int(bm[0, b >> 5]) >> (b & 31)) & 1)
        if m.accept_token(b) != allowed:
            raise AssertionError(f"mask and accept_token disagree on byte {b!r}")
        if not allowed:
            return False
    m.fill_next_token_bitmask(bm, 0)
    return bool((int(bm[0, EOS >> 5]) >> (EOS & 31)) & 1) and m.accept_token(EOS)


def structural_positions(text: str) -> Iterator[Tuple[int, str]]:
    """(index, char) of every character outside string literals."""
    in_str = esc = False
    for i, c in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            continue
        if c == '"':
            in_str = True
        yield i, c


def whitespace_variants(text: str) -> List[str]:
    """The text with different whitespace: a separator space dropped or doubled, whitespace added
    before/after brackets, before separators, at the ends."""
    out = []
    pos = list(structural_positions(text))
    for i, c in pos:
        if c == " ":
            out.append(text[:i] + text[i + 1:])  # ",x" / ":x"
            out.append(text[:i] + " " + text[i:])  # double space
            out.append(text[:i] + "\n" + text[i + 1:])  # another whitespace character
        if c in "{[":
            out.append(text[: i + 1] + " " + text[i + 1:])
        if c in "}],:":
            out.append(text[:i] + " " + text[i:])
    out.append(" " + text)
    out.append(text + " ")
    out.append(text + "\n")
    return [v for v in out if v != text]


COMPILED = {name: grammar.compile_json_schema(s, VOCAB, whitespace="canonical") for name, s in SCHEMAS.items()}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_canonical_accepts_json_dumps_and_nothing_else(name, data):
    schema = SCHEMAS[name]
    x = in_schema_order(data.draw(from_schema(schema)), schema)
    text = json.dumps(x, ensure_ascii=False)
    assert accepts(COMPILED[name], text.encode()), text
    variants = whitespace_variants(text)
    if variants:
        variant = data.draw(st.sampled_from(variants))
        assert not accepts(COMPILED[name], variant.encode()), repr(variant)


def test_every_whitespace_variant_of_a_fixed_text_is_rejected():
    cg = COMPILED["object"]
    text = json.dumps({"name": "a b, c: d", "tags": ["x", "y"], "n": -3, "ok": True}, ensure_ascii=False)
    assert accepts(cg, text.encode())
    variants = whitespace_variants(text)
    assert len(variants) > 20
    for v in variants:
        assert not accepts(cg, v.encode()), repr(v)
    # spaces inside strings are content, not whitespace
    assert accepts(cg, json.dumps({"name": " { , : } "}).encode())


def test_modes_side_by_side():
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}
    texts = {"canonical": '{"a": [1, 2]}', "compact": '{"a":[1,2]}', "pretty": '{\n  "a": [\n    1,\n    2\n  ]\n}'}
    expect = {"canonical": {"canonical"}, "compact": {"compact"}, "flexible": {"canonical", "compact", "pretty"}}
    for mode, ok in expect.items():
        cg = grammar.compile_json_schema(schema, VOCAB, whitespace=mode)
        assert {k for k, t in texts.items() if accepts(cg, t.encode())} == ok, mode
    with pytest.raises(GrammarError, match="whitespace must be one of"):
        grammar.compile_json_schema(schema, VOCAB, whitespace="pretty")


def test_canonical_forces_the_run_between_fixed_order_values_on_smollm2():
    """SmolLM2 (GPT-2 byte-level BPE): after a value of a fixed-order object, the mask allows
    only tokens that start the forced run ', "next": ' (flexible allows whitespace variants too)."""
    from toolken.errors import ToolkenError

    try:
        from toolken.local_models import smollm2_tokenizer

        tok = smollm2_tokenizer()
    except (ToolkenError, ImportError) as e:
        pytest.skip(f"SmolLM2 tokenizer unavailable: {e}")
    vocab = grammar.Vocabulary.from_tokenizer(tok)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer"}},
        "required": ["city", "unit", "days"],
        "additionalProperties": False,
    }

    def allowed_after(mode: str, prefix: str) -> Tuple[List[bytes], str]:
        cg = grammar.compile_json_schema(schema, vocab, whitespace=mode)
        m = grammar.Matcher(cg)
        for t in tok.encode(prefix, add_special_tokens=False):
            assert m.accept_token(t), (mode, prefix)
        bm = grammar.allocate_token_bitmask(1, vocab.size)
        m.fill_next_token_bitmask(bm, 0)
        ids = [i for i in range(vocab.size) if (int(bm[0, i >> 5]) >> (i & 31)) & 1]
        return [vocab.token_bytes(i) for i in ids], m.find_jump_forward_string()

    for prefix, forced in (('{"city": "Paris"', ', "unit": "'), ('{"city": "Paris", "unit": "celsius"', ', "days": ')):
        toks, jump = allowed_after("canonical", prefix)
        assert jump == forced
        assert toks and all(forced.encode().startswith(t) for t in toks), toks  # only the forced run's prefixes
        assert len(toks) <= len(forced)  # at most one token per prefix length: a short forced run
        flex, _ = allowed_after("flexible", prefix)
        assert len(flex) > len(toks) and any(not forced.encode().startswith(t) for t in flex)
    # at the start the run is '{"city": "'
    toks, jump = allowed_after("canonical", "")
    assert jump == '{"city": "' and all(jump.encode().startswith(t) for t in toks)
