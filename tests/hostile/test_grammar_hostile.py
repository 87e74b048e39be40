"""Hostile inputs to the grammar engine (issue 18): each is refused with a GrammarError whose
message names the field, JSON pointer or token at fault, or (threads) handled without a crash.

The kernel cases (`apply_token_bitmask_` on logits it cannot write in place) raise the kernels'
ValueError, the documented error of `toolken.kernels`.
"""
from __future__ import annotations

import json
import random
import threading
import time

import numpy as np
import pytest

from toolken import GrammarError, grammar

TOKENS = [bytes([i]) for i in range(256)] + [b'{"', b'":', b'", "', b"true", None]
EOS = len(TOKENS) - 1
VOCAB = grammar.Vocabulary.from_bytes(TOKENS, [EOS])


def compile_(schema, **kw):
    return grammar.compile_json_schema(schema, VOCAB, **kw)


def nested(depth: int, key: str = "items") -> dict:
    s: dict = {"type": "integer"}
    for _ in range(depth):
        s = {"type": "array", key: s}
    return s


# ------------------------------------------------------------------ raw errors -> GrammarError
def test_schema_nested_1000_deep_as_dicts():
    with pytest.raises(GrammarError, match=r"nested too deeply: more than 256 levels .*\(at #/items/items/items"):
        compile_(nested(1200))


@pytest.mark.parametrize("as_text", [False, True])
def test_schema_nested_500_deep_names_the_pointer_not_invalid_json(as_text):
    schema = nested(500)
    with pytest.raises(GrammarError) as e:
        compile_(json.dumps(schema) if as_text else schema)
    msg = str(e.value)
    assert "not valid JSON" not in msg
    assert "nested too deeply" in msg and "256" in msg and "(at #/items/items/items" in msg


def test_lone_surrogate_in_a_schema_key_names_the_pointer():
    schema = {"type": "object", "properties": {"a\ud800b": {"type": "string"}}}
    with pytest.raises(GrammarError, match=r"lone surrogate \\uD800.*\(at #/properties/a\\ud800b\)"):
        compile_(schema)


def test_lone_surrogate_in_a_schema_value_names_the_pointer():
    with pytest.raises(GrammarError, match=r"lone surrogate \\uD800.*\(at #/enum/1\)"):
        compile_({"enum": ["ok", "x\ud800"]})


def test_lone_surrogate_escape_in_schema_text_names_the_pointer():
    with pytest.raises(GrammarError, match=r"lone surrogate \\uDC00.*\(at #/properties/k/const\)"):
        compile_('{"properties": {"k": {"const": "\\udc00"}}}')


def test_max_whitespace_too_large_names_the_argument():
    with pytest.raises(GrammarError, match=r"max_whitespace must be in \[0, 1000\], not 1000000000000"):
        compile_({}, max_whitespace=10**12)
    with pytest.raises(GrammarError, match="max_whitespace must be an integer, not float"):
        compile_({}, max_whitespace=2.5)


def test_accept_token_beyond_64_bits_names_the_token():
    m = grammar.Matcher(compile_({"type": "integer"}))
    with pytest.raises(GrammarError, match="token id 18446744073709551616 is not a 64-bit integer"):
        m.accept_token(2**64)
    assert m.accept_token(-(2**40)) is False  # a 64-bit id that is no token: rejected, not an error
    assert m.num_accepted == 0


def test_rollback_far_past_the_start_names_the_count():
    m = grammar.Matcher(compile_({"type": "integer"}))
    assert m.accept_token(ord("7"))
    with pytest.raises(GrammarError, match=f"cannot roll back {2**70} tokens: only 1 accepted"):
        m.rollback(2**70)
    with pytest.raises(GrammarError, match="num_tokens must be >= 0, not -1"):
        m.rollback(-1)
    assert m.num_accepted == 1


def test_matcher_of_none():
    with pytest.raises(GrammarError, match="Matcher needs a CompiledGrammar .*not NoneType"):
        grammar.Matcher(None)


def test_huge_enum_state_limit_names_the_enum_pointer():
    schema = {"type": "object", "properties": {"colour": {"enum": [f"v{i}" for i in range(100_000)]}}}
    with pytest.raises(GrammarError, match=r"automaton states.*\(at #/properties/colour/enum\)"):
        compile_(schema)


# ------------------------------------------------------------- too lenient -> refused clearly
@pytest.mark.parametrize("key", ["maxLength", "minLength"])
def test_fractional_length_is_refused(key):
    with pytest.raises(GrammarError, match=rf"{key} must be a non-negative integer, not 1.5 \(at #/properties/s/{key}\)"):
        compile_({"type": "object", "properties": {"s": {"type": "string", key: 1.5}}})
    compile_({"type": "string", key: 2.0})  # an integral number is an integer


@pytest.mark.parametrize("key", ["maxItems", "minItems"])
def test_fractional_item_count_is_refused(key):
    with pytest.raises(GrammarError, match=rf"{key} must be a non-negative integer, not 0.5 \(at #/{key}\)"):
        compile_({"type": "array", key: 0.5})


@pytest.mark.parametrize("pattern", ["a**", "a+*", "a{2}*", "(ab)??*"])
def test_multiple_repeat_pattern_is_refused(pattern):
    with pytest.raises(GrammarError, match=r"multiple repeat .*\(at #/properties/p/pattern\)"):
        compile_({"type": "object", "properties": {"p": {"type": "string", "pattern": pattern}}})
    compile_({"type": "string", "pattern": "a*?b+?"})  # lazy quantifiers stay accepted


def test_invalid_utf8_schema_bytes_are_refused():
    with pytest.raises(GrammarError, match=r"not valid UTF-8 \(byte 0xFF at offset 10\)"):
        compile_(b'{"enum":["\xff"]}')


def test_accept_token_of_a_float_is_refused():
    m = grammar.Matcher(compile_({"type": "integer"}))
    with pytest.raises(GrammarError, match="token id must be an integer, not float 1.5"):
        m.accept_token(1.5)
    with pytest.raises(GrammarError, match="token id must be an integer, not str"):
        m.accept_token("1")
    assert m.num_accepted == 0
    assert m.accept_token(np.int64(ord("1")))  # numpy integers are integers


def test_vocabulary_size_is_bounded_by_the_token_count():
    t0 = time.perf_counter()
    with pytest.raises(GrammarError, match=r"size 2147483648 for 1 tokens \(at most 65538"):
        grammar.Vocabulary.from_bytes([b"a"], [], size=2**31)
    assert time.perf_counter() - t0 < 1.0  # refused before allocating anything
    assert grammar.Vocabulary.from_bytes([b"a"], [], size=65538).size == 65538


def test_apply_token_bitmask_refuses_expanded_logits():
    torch = pytest.importorskip("torch")
    from toolken.kernels import apply_token_bitmask_

    logits = torch.zeros(1, 64).expand(4, 64)
    mask = torch.zeros(4, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"logits has overlapping memory \(stride \(0, 1\)"):
        apply_token_bitmask_(logits, mask)
    assert (logits == 0).all()


def test_apply_token_bitmask_refuses_a_leaf_that_requires_grad():
    torch = pytest.importorskip("torch")
    from toolken.kernels import apply_token_bitmask_

    for shape, mshape in (((2, 64), (2, 2)), ((64,), (2,))):
        logits = torch.zeros(*shape, requires_grad=True)
        with pytest.raises(ValueError, match="logits is a leaf tensor that requires grad"):
            apply_token_bitmask_(logits, torch.zeros(*mshape, dtype=torch.int32))
        assert (logits == 0).all()
    apply_token_bitmask_(logits.detach(), torch.zeros(2, dtype=torch.int32))  # the fix the message names


def test_schema_over_the_size_limit_is_refused_fast():
    big = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 400} for i in range(110_000)}}
    too_large = r"schema too large: over 1048576 characters of JSON, the limit is 1048576 bytes"
    with pytest.raises(GrammarError, match=too_large):
        compile_(big)  # refused after encoding 1 MiB of it (the whole schema was 31 s and 763 MiB)
    with pytest.raises(GrammarError, match="schema too large"):
        compile_(json.dumps(big))


def test_limits_are_documented():
    assert grammar.MAX_SCHEMA_BYTES == 1 << 20 and grammar.MAX_SCHEMA_DEPTH == 256
    assert "MAX_SCHEMA_BYTES" in grammar.__doc__ and "MAX_SCHEMA_DEPTH" in grammar.__doc__


# ---------------------------------------------------------------------------- shared matcher
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer"},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name"],
}


def hammer(seconds: float, n_threads: int = 8) -> dict:
    """n_threads threads call every Matcher method on one matcher at random; returns counts."""
    cg = compile_(SCHEMA)
    m = grammar.Matcher(cg)
    text = json.dumps({"name": "abc", "n": 12, "tags": ["x", "y"]}).encode()
    stop = time.perf_counter() + seconds
    errors: list = []
    counts = {"calls": 0}

    def work(seed: int) -> None:
        rng = random.Random(seed)
        bm = grammar.allocate_token_bitmask(2, VOCAB.size)
        try:
            while time.perf_counter() < stop:
                op = rng.random()
                if op < 0.35:
                    m.fill_next_token_bitmask(bm, rng.randrange(2))
                elif op < 0.6:
                    k = m.num_accepted
                    m.accept_token(text[k] if k < len(text) and rng.random() < 0.8 else rng.randrange(-2, VOCAB.size + 2))
                elif op < 0.7:
                    try:
                        m.rollback(rng.randrange(3))
                    except GrammarError:
                        pass  # another thread rolled back first: a clean refusal
                elif op < 0.75:
                    m.reset()
                elif op < 0.85:
                    c = m.copy()
                    c.fill_next_token_bitmask(bm, 0)
                    c.accept_token(rng.randrange(256))
                elif op < 0.9:
                    m.find_jump_forward_string()
                elif op < 0.95:
                    grammar.fill_next_token_bitmasks([m, grammar.Matcher(cg)], bm)
                else:
                    m.is_terminated(), m.can_terminate(), m.accept_string(b'{"')
                counts["calls"] += 1
        except Exception as e:  # noqa: BLE001 - any exception is a failure of the test
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # consistent state afterwards: the matcher still walks a valid instance from the start
    m.reset()
    assert m.accept_string(text) and m.can_terminate() and m.accept_token(EOS) and m.is_terminated()
    return counts


def test_one_matcher_hammered_by_8_threads():
    counts = hammer(3.0)
    assert counts["calls"] > 1000


def test_batch_fill_refuses_a_matcher_twice():
    m = grammar.Matcher(compile_(SCHEMA))
    bm = grammar.allocate_token_bitmask(2, VOCAB.size)
    with pytest.raises(GrammarError, match="more than once"):
        grammar.fill_next_token_bitmasks([m, m], bm, num_threads=2)
    from toolken import _grammar

    with pytest.raises(_grammar.ArgumentError, match="more than once"):  # the engine checks too
        _grammar.fill_next_token_bitmasks([m._native, m._native], bm, 2)
