"""No input crashes the engine: garbage schemas, deep nesting, bad token ids, rollback past the
start, use after termination; masks are the same from several threads as serially."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolken import GrammarError, grammar

TOKENS = [bytes([i]) for i in range(256)] + [b'{"', b'":', b'", "', b'"}', b"true", b"  ", None]
EOS = len(TOKENS) - 1
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [EOS], size=len(TOKENS) + 5)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "properties", "items", "anyOf", "$ref", "enum", "required", "pattern", "minimum",
                         "additionalProperties", "allOf", "oneOf", "const", "format", "maxLength", "$defs", "x"]), c, max_size=5),
    max_leaves=20,
)


def compile_or_error(schema):
    try:
        return grammar.compile_json_schema(schema, VOCAB)
    except GrammarError:
        return None


@settings(max_examples=300, suppress_health_check=list(HealthCheck), deadline=None)
@given(raw=st.binary(max_size=200))
def test_random_bytes_as_schema(raw: bytes) -> None:
    compile_or_error(raw.decode("utf-8", "replace"))


@settings(max_examples=300, suppress_health_check=list(HealthCheck), deadline=None)
@given(schema=JSON_VALUES, tokens=st.lists(st.integers(-5, len(TOKENS) + 10), max_size=30))
def test_random_schema_trees_and_token_streams(schema, tokens) -> None:
    cg = compile_or_error(schema)
    if cg is None:
        return
    m = grammar.Matcher(cg)
    bm = grammar.allocate_token_bitmask(2, VOCAB.size)
    for t in tokens:
        m.fill_next_token_bitmask(bm, 1)
        allowed = 0 <= t < VOCAB.size and bool((int(bm[1, t >> 5]) >> (t & 31)) & 1)
        assert m.accept_token(t) == allowed
    m.fill_next_token_bitmask(bm, 1)
    bits = np.unpackbits(bm[1].view(np.uint8), bitorder="little")
    assert not bits[len(TOKENS):].any()  # padding rows never allowed


@pytest.mark.parametrize("kind", ["array", "object", "anyOf", "allOf"])
def test_deep_nesting_is_a_clear_error_or_works(kind: str) -> None:
    depth = 400
    s: object = {"type": "integer"}
    for _ in range(depth):
        if kind == "array":
            s = {"type": "array", "items": s}
        elif kind == "object":
            s = {"type": "object", "properties": {"a": s}, "required": ["a"]}
        elif kind == "anyOf":
            s = {"anyOf": [s, {"type": "null"}]}
        else:
            s = {"allOf": [s]}
    with pytest.raises(GrammarError, match="deep"):
        grammar.compile_json_schema(s, VOCAB)
    # deep JSON text (not schema) is fine: any-value grammar nests without limit
    cg = grammar.compile_json_schema({}, VOCAB)
    m = grammar.Matcher(cg)
    assert m.accept_string("[" * 3000 + "]" * 3000) and m.can_terminate()


def test_huge_schema_is_bounded() -> None:
    # the classic exponential DFA: the 17th character from the end is an 'a'
    with pytest.raises(GrammarError, match="too large"):
        grammar.compile_json_schema({"type": "string", "pattern": "^[ab]*a[ab]{16}$"}, VOCAB)


def test_left_recursion_and_ref_cycles_are_errors() -> None:
    with pytest.raises(GrammarError):
        grammar.compile_json_schema({"$ref": "#"}, VOCAB)
    with pytest.raises(GrammarError):
        grammar.compile_json_schema({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}, "$ref": "#/$defs/a"}, VOCAB)
    with pytest.raises(GrammarError):
        grammar.compile_json_schema({"$ref": "http://example.com/schema"}, VOCAB)


def test_bad_ids_rollback_and_termination() -> None:
    cg = grammar.compile_json_schema({"type": "integer"}, VOCAB)
    m = grammar.Matcher(cg)
    for bad in (-1, -(2**40), len(TOKENS), VOCAB.size - 1, VOCAB.size, 2**40):
        assert m.accept_token(bad) is False
    assert not m.accept_token(EOS)  # nothing matched yet
    with pytest.raises(GrammarError, match="roll back 1"):
        m.rollback(1)
    assert m.accept_token(ord("4")) and m.accept_token(ord("2"))
    assert m.can_terminate() and not m.is_terminated()
    assert m.find_jump_forward_string() == ""
    assert m.accept_token(EOS) and m.is_terminated() and not m.can_terminate()
    bm = grammar.allocate_token_bitmask(1, VOCAB.size)
    m.fill_next_token_bitmask(bm, 0)
    assert not bm.any()  # nothing after termination
    assert not m.accept_token(ord("1")) and not m.accept_string("1")
    with pytest.raises(GrammarError):
        m.rollback(4)
    m.rollback(1)
    assert not m.is_terminated() and m.accept_token(ord("1"))
    m.reset()
    assert m.num_accepted == 0 and not m.can_terminate()
    with pytest.raises(GrammarError, match="words per row"):
        m.fill_next_token_bitmask(np.zeros((1, 2), dtype=np.int32), 0)  # too narrow
    with pytest.raises(GrammarError, match="int32"):
        m.fill_next_token_bitmask(np.zeros((1, 16), dtype=np.int64), 0)
    with pytest.raises(GrammarError, match="row 3"):
        m.fill_next_token_bitmask(bm, 3)


def test_copy_is_independent() -> None:
    cg = grammar.compile_json_schema({"type": "array", "items": {"type": "integer"}}, VOCAB)
    a = grammar.Matcher(cg)
    assert a.accept_string("[1")
    b = a.copy()
    assert b.accept_string(",2]") and b.can_terminate()
    assert not a.can_terminate() and a.accept_string("]") and a.can_terminate()


def test_whitespace_bound() -> None:
    cg = grammar.compile_json_schema({"type": "array", "items": {"type": "integer"}}, VOCAB, max_whitespace=3)
    assert grammar.Matcher(cg).accept_string("[   1,   2   ]")
    assert not grammar.Matcher(cg).accept_string("[    1]")
    m = grammar.Matcher(cg)
    assert m.accept_string("[ ")
    bm = grammar.allocate_token_bitmask(1, VOCAB.size)
    m.fill_next_token_bitmask(bm, 0)
    two_spaces = TOKENS.index(b"  ")
    assert (bm[0, two_spaces >> 5] >> (two_spaces & 31)) & 1  # 1 + 2 <= 3
    assert m.accept_string(" ")
    m.fill_next_token_bitmask(bm, 0)
    assert not (bm[0, two_spaces >> 5] >> (two_spaces & 31)) & 1  # 2 + 2 > 3
    compact = grammar.compile_json_schema({"type": "array", "items": {"type": "integer"}}, VOCAB, whitespace="compact")
    assert grammar.Matcher(compact).accept_string("[1,2]") and not grammar.Matcher(compact).accept_string("[1, 2]")


def test_threads_give_serial_masks(llama3_tokenizer) -> None:
    vocab = grammar.Vocabulary.from_tokenizer(llama3_tokenizer)
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer"},
                                               "tags": {"type": "array", "items": {"enum": ["a", "bb", "c c"]}}},
              "required": ["name"]}
    prefixes = ['{"name": "', '{"name": "ab', '{"name": "x", "n": 1', '{"name": "x", "tags": ["', '{', '{"name": "x"}']
    # serial reference on a separate compiled grammar (no shared cache state with the threads)
    ref_cg = grammar.compile_json_schema(json.dumps(schema), vocab)
    ref = grammar.allocate_token_bitmask(len(prefixes), vocab.size)
    for i, p in enumerate(prefixes):
        m = grammar.Matcher(ref_cg)
        assert m.accept_string(p)
        m.fill_next_token_bitmask(ref, i)
    cg = grammar.compile_json_schema(json.dumps(schema, indent=1), vocab)  # new text: a fresh grammar whose caches fill concurrently
    assert cg is not ref_cg
    matchers = []
    for p in prefixes * 4:
        m = grammar.Matcher(cg)
        assert m.accept_string(p)
        matchers.append(m)
    out = grammar.allocate_token_bitmask(len(matchers), vocab.size)
    grammar.fill_next_token_bitmasks(matchers, out, num_threads=4)
    for i in range(len(matchers)):
        assert np.array_equal(out[i], ref[i % len(prefixes)]), prefixes[i % len(prefixes)]
    for threads in (2, 3, 2):  # the worker pool is reused across calls and thread counts
        again = grammar.allocate_token_bitmask(len(matchers), vocab.size)
        grammar.fill_next_token_bitmasks(matchers, again, num_threads=threads)
        assert np.array_equal(again, out)
    # plain Python threads on per-thread matchers
    results = {}

    def work(k: int) -> None:
        bm = grammar.allocate_token_bitmask(1, vocab.size)
        matchers[k].fill_next_token_bitmask(bm, 0)
        results[k] = bm[0].copy()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(matchers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, row in results.items():
        assert np.array_equal(row, ref[k % len(prefixes)])
    with pytest.raises(GrammarError, match="more than once"):
        grammar.fill_next_token_bitmasks([matchers[0], matchers[0]], out)


def test_memory_counts_computed_masks() -> None:
    cg = grammar.compile_json_schema({"type": "object", "properties": {"s": {"type": "string", "maxLength": 40}}}, VOCAB)
    before = cg.memory_bytes
    m = grammar.Matcher(cg)
    bm = grammar.allocate_token_bitmask(1, VOCAB.size)
    for text in ['{"s": "', "abc", "def"]:
        assert m.accept_string(text)
        m.fill_next_token_bitmask(bm, 0)
    assert cg.memory_bytes > before > 0


def test_bounded_string_masks_agree_with_accept_token() -> None:
    """maxLength strings take their masks from other positions' (derived masks); check every token."""
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 20}, "k": {"type": "string", "pattern": "^[a-c]+$"}}}
    cg = grammar.compile_json_schema(schema, VOCAB, whitespace="compact")
    m = grammar.Matcher(cg)
    bm = grammar.allocate_token_bitmask(1, VOCAB.size)
    for piece in ['{"s":"', *"abcdefghijklmnopqrs", 't","', "k", '":"', "a", "b"]:
        m.fill_next_token_bitmask(bm, 0)
        bits = np.unpackbits(bm[0].view(np.uint8), bitorder="little")[: VOCAB.size]
        for t in range(VOCAB.size):
            assert m.copy().accept_token(t) == bool(bits[t]), (piece, t)
        assert m.accept_string(piece)
