"""Token byte derivation for the four tokenizer families, and Vocabulary invariants."""
from __future__ import annotations

import json

import numpy as np
import pytest

from toolken import GrammarError, grammar

TEXTS = [
    '{"city": "Paris", "n": 12, "ok": true, "x": null}',
    ' héllo wörld 日本語 🙂\n\t"quoted" \\ back',
    "[1.5e-07, -3, {}]   trailing   spaces",
]

TOKENIZERS = ["llama3_tokenizer", "tekken_tokenizer", "mistral_tokenizer", "smollm2_tokenizer"]


@pytest.fixture(scope="module", params=TOKENIZERS)
def tok_and_vocab(request):
    tok = request.getfixturevalue(request.param)
    return request.param, tok, grammar.Vocabulary.from_tokenizer(tok)


def test_token_bytes_reassemble_text(tok_and_vocab):
    name, tok, vocab = tok_and_vocab
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        raw = b"".join(vocab.token_bytes(i) for i in ids)
        if name == "mistral_tokenizer" and raw.startswith(b" ") and not text.startswith(" "):
            raw = raw[1:]  # SentencePiece's prefix space (dummy prefix), stripped by its decoder
        assert raw == text.encode("utf-8"), (name, text)


def test_special_tokens_have_no_bytes(tok_and_vocab):
    name, tok, vocab = tok_and_vocab
    assert vocab.size == len(tok)
    for i in tok.all_special_ids:
        assert vocab.token_bytes(i) == b""
    if name == "tekken_tokenizer":
        # the first 1,000 Tekken ids are control tokens
        assert all(vocab.token_bytes(i) == b"" for i in range(1000))
        assert vocab.stop_ids == [2]  # </s>: Tekken's converted tokenizer has no eos_token set
    else:
        assert vocab.stop_ids == [tok.eos_token_id]


def test_byte_fallback_and_metaspace(mistral_tokenizer):
    vocab = grammar.Vocabulary.from_tokenizer(mistral_tokenizer)
    byte_id = mistral_tokenizer.convert_tokens_to_ids("<0x41>")
    assert vocab.token_bytes(byte_id) == b"A"
    space_id = mistral_tokenizer.convert_tokens_to_ids("\u2581the")
    assert vocab.token_bytes(space_id) == b" the"


def test_special_tokens_never_allowed_and_padding(llama3_tokenizer):
    vocab = grammar.Vocabulary.from_tokenizer(llama3_tokenizer, size=len(llama3_tokenizer) + 64)
    cg = grammar.compile_json_schema({"type": "string"}, vocab)
    m = grammar.Matcher(cg)
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    assert bm.shape == (1, (vocab.size + 31) // 32)
    assert m.accept_string('"abc')
    m.fill_next_token_bitmask(bm, 0)
    bits = np.unpackbits(bm[0].view(np.uint8), bitorder="little")[: vocab.size]
    assert not bits[128000:].any()  # specials (128000..128255) and padding rows
    assert bits[llama3_tokenizer.convert_tokens_to_ids("abc")]
    # a special token is rejected even though its text would fit a string
    assert not m.accept_token(128000)
    assert not m.accept_token(vocab.size - 1)


def test_from_bytes_validation():
    with pytest.raises(GrammarError, match="stop id 5"):
        grammar.Vocabulary.from_bytes([b"a", b"b"], stop_ids=[5])
    with pytest.raises(GrammarError, match="smaller"):
        grammar.Vocabulary.from_bytes([b"a", b"b"], stop_ids=[], size=1)
    v = grammar.Vocabulary.from_bytes([b"a", None, b""], stop_ids=[1], size=40)
    assert v.size == 40 and v.stop_ids == [1] and v.token_bytes(1) == b"" and v.token_bytes(2) == b""


def test_compile_errors_name_keyword_and_pointer():
    v = grammar.Vocabulary.from_bytes([bytes([i]) for i in range(256)], [])
    with pytest.raises(GrammarError, match=r"'not'.*#/properties/a/not"):
        grammar.compile_json_schema({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, v)
    with pytest.raises(GrammarError, match="uniqueItems"):
        grammar.compile_json_schema({"type": "array", "uniqueItems": True}, v)
    with pytest.raises(GrammarError, match=r"uri-template.*#/format"):
        grammar.compile_json_schema({"type": "string", "format": "uri-template"}, v)
    with pytest.raises(GrammarError, match="lookahead"):
        grammar.compile_json_schema({"type": "string", "pattern": "(?=x)a"}, v)
    with pytest.raises(GrammarError, match="admits no JSON value"):
        grammar.compile_json_schema({"type": "integer", "minimum": 5, "maximum": 2}, v)
    with pytest.raises(GrammarError):
        grammar.compile_json_schema("{not json", v)
    with pytest.raises(GrammarError):
        grammar.compile_json_schema({"type": "string"}, v, whitespace="pretty")


def test_compile_cache_returns_same_object():
    v = grammar.Vocabulary.from_bytes([bytes([i]) for i in range(256)], [])
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    a = grammar.compile_json_schema(schema, v)
    assert grammar.compile_json_schema(json.dumps(schema), v) is a
    assert grammar.compile_json_schema(schema, v, strict=True) is not a
