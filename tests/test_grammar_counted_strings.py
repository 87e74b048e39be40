"""Counted strings: length bounds above the unrolled limit (64 characters) are counted in the
matcher state instead of stamped out as automaton states, and stay exact.

A JSON text is accepted exactly when `jsonschema` says the value is valid, in both JSON
encodings (``ensure_ascii`` true and false: escapes and surrogate pairs, and raw UTF-8). Past the
old limit (1,000 characters) the strings are long; the counters' logic
(completion-length sets, patterns that finish only on some lengths, masks near the bounds) is
also pinned with the limit lowered to a few characters (``max_unrolled_length``, a native option
for tests), where hypothesis can reach every bound. Masks of counted strings near their bounds
are computed with the counts: they must equal ``accept_token`` token by token, and random walks
that follow them must never reach a dead end.
"""
from __future__ import annotations

import json
import random
from typing import Any, Dict, List, Optional

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolken import GrammarError, _grammar, grammar

TOKENS = [bytes([i]) for i in range(256)] + [None]
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [len(TOKENS) - 1])
# multi-byte tokens across the quote, escapes and UTF-8 (a token may complete several characters)
PIECES = [bytes([i]) for i in range(256)] + [b'"', b'a"', b'ab', b'abc', b'aaaa', b'aaaaaaa', b'\\u00e9', b'\\"',
                                             b'\xc3\xa9', b'\xc3\xa9a', b'a\xc3', b'"}', b'", "', b'x"', b'\\ud83d',
                                             b'\\ude00"', b'"a', b'0', b'b0', b'bb'] + [None]
MULTI = grammar.Vocabulary.from_bytes(PIECES, [len(PIECES) - 1])
SETTINGS = settings(max_examples=120, suppress_health_check=list(HealthCheck), deadline=None)


def compiled(schema: Any, vocab: grammar.Vocabulary = VOCAB, unrolled: Optional[int] = None,
             property_order: str = "schema") -> grammar.CompiledGrammar:
    """compile_json_schema, or with the unrolled-length limit lowered (native option)."""
    if unrolled is None:
        return grammar.compile_json_schema(schema, vocab, property_order=property_order)
    text = json.dumps(schema)
    try:
        native = _grammar.compile_json_schema(text, vocab._native, True, 20, False, False, False, property_order == "any",
                                              max_unrolled_length=unrolled)
    except _grammar.CompileError as e:
        raise GrammarError(str(e)) from None
    return grammar.CompiledGrammar(native, vocab, text)


def accepts(cg: grammar.CompiledGrammar, value: Any, ascii_only: bool) -> bool:
    m = grammar.Matcher(cg)
    return m.accept_string(json.dumps(value, ensure_ascii=ascii_only)) and m.can_terminate()


def valid(value: Any, schema: Any) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).is_valid(value)


def allowed(m: grammar.Matcher) -> set:
    vocab = m.vocab
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    m.fill_next_token_bitmask(bm, 0)
    return set(np.nonzero(np.unpackbits(bm[0].view(np.uint8), bitorder="little")[: vocab.size])[0].tolist())


def mask_equals_accept_token(m: grammar.Matcher, context: Any) -> set:
    """The allowed token ids, after checking each token of MULTI against accept_token on a copy."""
    ids = allowed(m)
    for t in range(MULTI.size):
        assert m.copy().accept_token(t) == (t in ids), (context, t, PIECES[t] if t < len(PIECES) else None)
    return ids


# ---------------------------------------------------------------------------------------------
# small bounds, counted (max_unrolled_length lowered): every bound within hypothesis' reach
# ---------------------------------------------------------------------------------------------
SMALL = [
    {"type": "string", "maxLength": 3},
    {"type": "string", "minLength": 2, "maxLength": 5},
    {"type": "string", "minLength": 4},
    {"type": "string", "minLength": 3, "maxLength": 3},
    {"type": "string", "maxLength": 0},
    {"type": "string", "pattern": "^[a-c]+$", "maxLength": 4},
    {"type": "string", "pattern": "b", "minLength": 2, "maxLength": 6},
    {"type": "string", "pattern": "^(ab)+$", "minLength": 3},   # only even lengths finish
    {"type": "string", "pattern": "^(ab)+$", "maxLength": 5},
    {"type": "string", "pattern": "^(abc|de)+$", "minLength": 4, "maxLength": 7},  # lengths 2, 3, 4, 5, 6, ...
    {"type": "string", "pattern": "^(ab|c)*$", "maxLength": 5},  # a pump (c) and a 2-cycle (ab)
    {"type": "string", "pattern": "^a{0,3}$", "minLength": 2},   # finitely many completions
    {"type": ["string", "null"], "pattern": "^(a|bcd)$", "minLength": 2, "maxLength": 2},  # lengths 1, 3: none fits
    {"type": "string", "pattern": "^x.{2,}y$", "maxLength": 6},
    {"type": "string", "format": "date", "minLength": 3, "maxLength": 12},
    {"type": "string", "pattern": "^[a-c]+@([a-c]{1,2}\\.)+[a-c]{2,3}$", "maxLength": 9},  # an email-like pattern
    {"type": ["string", "null", "integer"], "maxLength": 2},
    {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "string", "pattern": "^a+$"}]},
    {"anyOf": [{"enum": ["abcdef", 3]}, {"type": "string", "minLength": 2, "maxLength": 3}]},
]
CHARS = st.sampled_from(list("abcxy@.-19\"\\ \n") + ["é", "日", "😀", "\x00"])
TEXTS = st.lists(CHARS, max_size=9).map("".join)


@pytest.mark.parametrize("schema", SMALL, ids=[json.dumps(s)[:70] for s in SMALL])
@SETTINGS
@given(text=TEXTS, ascii_only=st.booleans(), unrolled=st.sampled_from([0, 1, 2]))
def test_counted_strings_match_jsonschema(schema: Dict[str, Any], text: str, ascii_only: bool, unrolled: int) -> None:
    cg = compiled(schema, unrolled=unrolled)
    ok, expected = accepts(cg, text, ascii_only), valid(text, schema)
    if ok != expected:  # the engine's `$` does not match before a trailing newline (Python's re does)
        assert expected and not ok and text.endswith("\n") and "$" in json.dumps(schema), (schema, text)


@pytest.mark.parametrize("schema", SMALL, ids=[json.dumps(s)[:70] for s in SMALL])
@settings(max_examples=20, suppress_health_check=list(HealthCheck), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), unrolled=st.sampled_from([0, 2]))
def test_counted_masks_agree_with_accept_token(schema: Dict[str, Any], seed: int, unrolled: int) -> None:
    """Masks at every count (computed with the counts near the bounds) on multi-byte tokens:
    each token is allowed exactly when accept_token takes it; rollback restores the mask; a
    walk never reaches a dead end."""
    cg = compiled(schema, vocab=MULTI, unrolled=unrolled)
    rng = random.Random(seed)
    m = grammar.Matcher(cg)
    for _ in range(14):
        if m.is_terminated():
            break
        ids = mask_equals_accept_token(m, schema)
        assert ids, "dead end"
        t = rng.choice(sorted(ids))
        assert m.accept_token(t)
        m.rollback(1)
        assert allowed(m) == ids
        assert m.accept_token(t)


def walk(cg: grammar.CompiledGrammar, vocab: grammar.Vocabulary, tokens: List[Any], rng: random.Random,
         steps: int = 60) -> Optional[bytes]:
    """A random mask-following walk (the stop token taken half the time it is allowed); its text
    when it stopped, else None."""
    m = grammar.Matcher(cg)
    eos = len(tokens) - 1
    text = b""
    for _ in range(steps):
        ids = allowed(m)
        assert ids, text  # never a dead end
        if eos in ids and (ids == {eos} or rng.random() < 0.5):
            assert m.accept_token(eos)
            return text
        t = rng.choice(sorted(ids - {eos}))
        assert m.accept_token(t)
        text += tokens[t]
    return None


@pytest.mark.parametrize("schema", SMALL, ids=[json.dumps(s)[:70] for s in SMALL])
@settings(max_examples=30, suppress_health_check=list(HealthCheck), deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_walks_end_valid(schema: Dict[str, Any], seed: int) -> None:
    cg = compiled(schema, vocab=MULTI, unrolled=1)
    rng = random.Random(seed)
    for _ in range(3):
        text = walk(cg, MULTI, PIECES, rng)
        if text is not None:
            assert valid(json.loads(text.decode("utf-8")), schema), text


# ---------------------------------------------------------------------------------------------
# the real limit: long strings
# ---------------------------------------------------------------------------------------------
LONG = [
    {"type": "string", "maxLength": 1024},
    {"type": "string", "minLength": 1001},
    {"type": "string", "minLength": 1, "maxLength": 4096},
    {"type": "string", "minLength": 1010, "maxLength": 1020},
    {"type": "string", "maxLength": 1500, "pattern": "^[a-zA-Z0-9 ()._/-]*$"},
    {"type": "string", "minLength": 1003, "pattern": "^([a-z][0-9])+$"},
    {"type": "string", "maxLength": 1003, "pattern": "^([a-z][0-9])+$"},
    {"type": ["string", "null"], "maxLength": 1002},
    {"type": "string", "maxLength": 1006, "pattern": "^[a-z0-9.]+@([a-z0-9]{1,3}\\.)+[a-z]{2,4}$"},
]
FILL = st.sampled_from(["a", "é", "😀", "\n", "a1", "z9"])


@st.composite
def long_texts(draw: Any) -> str:
    """Texts of about 1,000 characters: a run of one filler (or two-character unit), then a few
    random characters, so lengths land on both sides of every bound above."""
    unit = draw(FILL)
    n = draw(st.integers(480, 1030)) if len(unit) == 2 else draw(st.integers(990, 1030))
    tail = draw(st.one_of(st.lists(st.sampled_from(list("ab1@.\"\\") + ["é", "😀"]), max_size=3).map("".join),
                          st.sampled_from(["@b.cd", "@ab.c.de", "@a.b"])))
    return unit * n + tail


@pytest.mark.parametrize("schema", LONG, ids=[json.dumps(s)[:70] for s in LONG])
@settings(max_examples=40, suppress_health_check=list(HealthCheck), deadline=None)
@given(text=long_texts(), ascii_only=st.booleans())
def test_long_strings_match_jsonschema(schema: Dict[str, Any], text: str, ascii_only: bool) -> None:
    cg = compiled(schema)
    assert accepts(cg, text, ascii_only) == valid(text, schema), (schema, len(text))


@pytest.mark.parametrize("n", [0, 1, 999, 1000, 1023, 1024, 1025, 4096])
def test_max_length_above_the_old_cap_is_exact_at_the_bound(n: int) -> None:
    schema = {"type": "string", "maxLength": 1024}
    cg = compiled(schema)
    for value in ["é" * n, "😀" * n, "a" * n]:
        for ascii_only in (True, False):
            assert accepts(cg, value, ascii_only) == (n <= 1024), (n, value[:1], ascii_only)


def test_counted_strings_cost_the_states_of_their_pattern_not_their_length() -> None:
    small = compiled({"type": "string", "maxLength": 2000})
    huge = compiled({"type": "string", "maxLength": 10**6, "minLength": 5000})
    unbounded = compiled({"type": "string"})
    assert small._native.num_nodes == huge._native.num_nodes < 3 * unbounded._native.num_nodes
    assert "[counted 5000..1000000 characters]" in huge.dump()


def test_inside_objects_in_any_order() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 1002}, "b": {"type": "integer"}},
              "required": ["a"], "additionalProperties": False}
    cg = compiled(schema, property_order="any")
    for value in [{"a": "x" * 1002, "b": 1}, {"b": 2, "a": "é" * 1002}, {"a": "x" * 1003}, {"b": 3}]:
        for ascii_only in (True, False):
            assert accepts(cg, value, ascii_only) == valid(value, schema), (len(value.get("a", "")), ascii_only)


def test_property_names_cannot_be_counted_and_say_so() -> None:
    with pytest.raises(GrammarError, match="maxLength above 1000 in propertyNames is not supported .at #/propertyNames/maxLength"):
        compiled({"type": "object", "propertyNames": {"maxLength": 5000}})


def test_property_names_whose_bounds_do_not_constrain_compile() -> None:
    schema = {"type": "object", "propertyNames": {"maxLength": 5000, "pattern": "^[a-z]{1,8}$"}}
    cg = compiled(schema)
    assert accepts(cg, {"abc": 1}, True) and not accepts(cg, {"ABC": 1}, True)


@pytest.mark.parametrize("branches, exclusive", [
    ([{"type": "string", "minLength": 1500}, {"type": "string", "maxLength": 1200}], True),
    ([{"type": "string", "minLength": 1001}, {"type": "string", "maxLength": 2000}], False),
    ([{"type": "string", "maxLength": 5000, "pattern": "^a"}, {"type": "string", "pattern": "^b"}], True),
    ([{"type": "string", "minLength": 1003, "pattern": "^([a-z][0-9])+$"},
      {"type": "string", "maxLength": 1004, "pattern": "^[a-z0-9]+$"}], False),  # 1004 characters: both
    ([{"type": "string", "minLength": 1003, "pattern": "^([a-z][0-9])+$"},
      {"type": "string", "maxLength": 1003, "pattern": "^[a-z0-9]+$"}], True),  # even lengths vs at most 1003
])
def test_one_of_with_long_bounds(branches: List[Dict[str, Any]], exclusive: bool) -> None:
    """The oneOf prover sees the true length bounds (not capped ones): overlaps beyond 1,000
    characters are found, disjoint ranges are proved."""
    schema = {"oneOf": branches}
    if exclusive:
        cg = compiled(schema)
        for value in ["a" * 1600, "a" * 1100, "b" * 1300, "a1" * 502]:
            assert accepts(cg, value, True) == valid(value, schema), len(value)
    else:
        with pytest.raises(GrammarError, match="may overlap"):
            compiled(schema)


def test_masks_near_long_bounds_match_accept_token_on_a_real_vocabulary(smollm2_tokenizer: Any) -> None:
    """On a real vocabulary (deep tokens): the masks far from the bounds are the string's node
    masks, the ones near them are computed with the counts; both equal accept_token."""
    vocab = grammar.Vocabulary.from_tokenizer(smollm2_tokenizer)
    cg = compiled({"type": "string", "minLength": 1003, "maxLength": 1010}, vocab=vocab)
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    for k in [0, 2, 500, 1000, 1002, 1003, 1007, 1010]:
        m = grammar.Matcher(cg)
        assert m.accept_string('"' + "a" * k)
        m.fill_next_token_bitmask(bm, 0)
        bits = np.unpackbits(bm[0].view(np.uint8), bitorder="little")[: vocab.size]
        for t in range(vocab.size):
            assert m.copy().accept_token(t) == bool(bits[t]), (k, t, vocab.token_bytes(t))


@pytest.mark.parametrize("schema,counts", [
    # no pattern: below minLength only the tokens that read a '"' lose anything
    ({"type": "string", "minLength": 70, "maxLength": 5000}, [0, 3, 60, 69, 70, 71, 4990]),
    # only even lengths finish: minLength is checked inside the string too
    ({"type": "string", "pattern": "^(ab)+$", "minLength": 70, "maxLength": 100}, [0, 2, 68, 70, 98]),
])
def test_count_masks_inside_an_object_match_accept_token_on_a_real_vocabulary(
        smollm2_tokenizer: Any, schema: Dict[str, Any], counts: List[int]) -> None:
    """A count mask is the string's node mask minus the tokens a bound rejects, found by walking
    only the trie subtrees that can reach a bound; inside an object its closing suffixes ('",',
    '"}') are filtered too. Every token agrees with accept_token, at every count."""
    vocab = grammar.Vocabulary.from_tokenizer(smollm2_tokenizer)
    cg = compiled({"type": "object", "properties": {"s": schema, "t": {"type": "integer"}}}, vocab=vocab)
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    for k in counts:
        m = grammar.Matcher(cg)
        assert m.accept_string('{"s": "' + ("ab" * k)[:k])
        m.fill_next_token_bitmask(bm, 0)
        bits = np.unpackbits(bm[0].view(np.uint8), bitorder="little")[: vocab.size]
        for t in range(vocab.size):
            assert m.copy().accept_token(t) == bool(bits[t]), (k, t, vocab.token_bytes(t))


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "^(ab)+$", "minLength": 24, "maxLength": 41},    # a whole period in the window
    {"type": "string", "pattern": "^(abc)+$", "minLength": 24, "maxLength": 25},   # not: by residue
    {"type": "string", "pattern": "^(a|bb)+$", "minLength": 30},
    {"type": "string", "pattern": "^a{0,9}(b[ab]*)?$", "minLength": 20, "maxLength": 30},
])
@settings(max_examples=8, suppress_health_check=list(HealthCheck), deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_masks_far_below_min_length_are_shared_and_exact(schema: Dict[str, Any], seed: int) -> None:
    """Counts far below minLength share masks (one for all, or one per residue of the period):
    along walks long enough to cross the bounds, every mask equals accept_token."""
    cg = compiled(schema, vocab=MULTI, unrolled=0)
    rng = random.Random(seed)
    m = grammar.Matcher(cg)
    text = b""
    for _ in range(60):
        if m.is_terminated():
            break
        ids = mask_equals_accept_token(m, (schema, text))
        assert ids, text
        long_ones = [t for t in ids if t < len(PIECES) - 1 and len(PIECES[t]) > 1]
        t = rng.choice(long_ones) if long_ones and rng.random() < 0.7 else rng.choice(sorted(ids))
        assert m.accept_token(t)
        text += PIECES[t] if t < len(PIECES) - 1 else b""
    if m.is_terminated():
        assert valid(json.loads(text.decode()), schema), text


def test_bounds_above_64_are_counted_and_property_names_unroll_up_to_1000() -> None:
    assert "[counted 0..100 characters]" in compiled({"type": "string", "maxLength": 100}).dump()
    assert "[counted" not in compiled({"type": "string", "maxLength": 64}).dump()
    schema = {"type": "object", "propertyNames": {"maxLength": 100, "pattern": "^a*$"}}
    cg = compiled(schema)
    for key in ["a" * 100, "a" * 101, "ab", "a" * 64]:
        assert accepts(cg, {key: 1}, True) == valid({key: 1}, schema), len(key)
