"""MaskBench correctness with the Llama-3 tokenizer (the walk of benchmarks/README.md, grammar engine).

Default run: a fixed-seed sample; ``-m slow``: every schema with tests. No invalid instance may
be accepted to termination, ever; valid instances of compiled schemas must be accepted token by
token and allowed to stop, except for the known, documented limitation (properties are emitted
in schema order), which the test identifies by re-checking the instance with its keys reordered.
"""
from __future__ import annotations

import gzip
import json
import os
import random
from typing import Any, Dict, List, Optional, Tuple

import pytest

from toolken import GrammarError, grammar

SAMPLE = 40


def _records(data_dir: str) -> List[Dict[str, Any]]:
    with gzip.open(os.path.join(data_dir, "maskbench-dev.jsonl.gz"), "rt") as f:
        return [r for r in (json.loads(line) for line in f) if r.get("tests")]


def _walk(vocab: grammar.Vocabulary, cg: grammar.CompiledGrammar, ids: List[int], eos: int) -> Tuple[bool, Optional[int]]:
    """Mask-check and accept each token, then require the stop token; (accepted, failing index)."""
    m = grammar.Matcher(cg)
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    for i, t in enumerate(ids):
        m.fill_next_token_bitmask(bm, 0)
        allowed = bool((int(bm[0, t >> 5]) >> (t & 31)) & 1)
        accepted = m.accept_token(t)
        assert allowed == accepted, f"mask and accept_token disagree on token {t} at {i}"
        if not accepted:
            return False, i
    m.fill_next_token_bitmask(bm, 0)
    can_stop = bool((int(bm[0, eos >> 5]) >> (eos & 31)) & 1)
    assert can_stop == m.can_terminate()
    if can_stop:
        assert m.accept_token(eos) and m.is_terminated()
    return can_stop, len(ids)


def _reorder(data: Any, schema: Any, root: Any, depth: int = 0) -> Any:
    """`data` with object keys in schema order (known properties first), following $ref/anyOf."""
    if depth > 50 or not isinstance(schema, dict):
        return data
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for part in ref[2:].split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _reorder(data, target, root, depth + 1)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []) if isinstance(schema.get(key), list) else []:
            data = _reorder(data, sub, root, depth + 1)
    if isinstance(data, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        order = list(props) + [k for k in schema.get("required", []) if isinstance(k, str) and k not in props]
        keys = [k for k in order if k in data] + [k for k in data if k not in order]
        return {k: _reorder(data[k], props.get(k, {}), root, depth + 1) for k in keys}
    if isinstance(data, list):
        items = schema.get("items")
        return [_reorder(x, items if isinstance(items, dict) else {}, root, depth + 1) for x in data]
    return data


def _check(records: List[Dict[str, Any]], tok: Any, property_order: str = "schema") -> Dict[str, Any]:
    vocab = grammar.Vocabulary.from_tokenizer(tok)
    eos = tok.eos_token_id
    stats: Dict[str, Any] = {"compiled": 0, "compile_errors": 0, "valid": 0, "valid_rejected": [], "order_only": 0,
                             "invalid_accepted": []}
    for rec in records:
        try:
            cg = grammar.compile_json_schema(rec["schema"], vocab, property_order=property_order)
        except GrammarError:
            stats["compile_errors"] += 1
            continue
        stats["compiled"] += 1
        for test in rec["tests"]:
            text = json.dumps(test["data"])
            ok, where = _walk(vocab, cg, tok.encode(text, add_special_tokens=False), eos)
            if not test["valid"]:
                if ok:
                    stats["invalid_accepted"].append((rec["name"], text[:200]))
                continue
            stats["valid"] += 1
            if ok:
                continue
            reordered = json.dumps(_reorder(test["data"], rec["schema"], rec["schema"]))
            if reordered != text and _walk(vocab, cg, tok.encode(reordered, add_special_tokens=False), eos)[0]:
                stats["order_only"] += 1  # documented: properties come in schema order
            else:
                stats["valid_rejected"].append((rec["name"], text[:200], where))
    return stats


@pytest.mark.parametrize("property_order", ["schema", "any"])
def test_maskbench_sample(data_dir, llama3_tokenizer, property_order):
    records = random.Random(1234).sample(_records(data_dir), SAMPLE)
    stats = _check(records, llama3_tokenizer, property_order)
    assert stats["invalid_accepted"] == []
    assert stats["compiled"] >= int(0.8 * SAMPLE), stats
    # valid instances are rejected only for property order (reported separately), at most 2 otherwise
    assert len(stats["valid_rejected"]) <= 2, stats["valid_rejected"]
    if property_order == "any":
        assert stats["order_only"] == 0, stats  # any order needs no reordering


@pytest.mark.slow
def test_maskbench_full(data_dir, llama3_tokenizer):
    stats = _check(_records(data_dir), llama3_tokenizer)
    print({k: (len(v) if isinstance(v, list) else v) for k, v in stats.items()})
    assert stats["invalid_accepted"] == []
    assert len(stats["valid_rejected"]) <= 0.02 * stats["valid"], stats["valid_rejected"][:20]
