"""Fuzz corpus for the grammar engine, run under AddressSanitizer by run_asan.sh.

FUZZ_MODE=corpus (default) exercises: MaskBench schemas (compile + valid/invalid walks on a
byte-level vocabulary), random byte strings and random JSON trees as schemas, deep nesting,
random token streams with invalid ids, rollback past the start, use after termination, copies,
and batch filling from several threads; counted strings (long length bounds, and short ones
with the unrolled limit lowered), oneOf of required keys, and oneOf shapes the prover narrows
(branches constraining only objects; {}, "", [] in two branches; const containers). Deterministic (fixed seeds); prints a one-line summary.

FUZZ_MODE=threads: 8 threads call every Matcher method (fill, accept, rollback, reset, copy,
jump-forward, batch fill) on ONE shared matcher for HAMMER_SECONDS (default 10), then check the
matcher still walks a valid instance. FUZZ_MODE=all runs both.
"""
import gzip
import json
import os
import random
import sys

import numpy as np

import toolken
from toolken import GrammarError, grammar

assert "toolken-asan" in toolken.__file__, f"not the ASan build: {toolken.__file__}"
MODE = os.environ.get("FUZZ_MODE", "corpus")
ROOT = os.environ.get("TOOLKEN_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "..", "shared", "data", "maskbench-dev.jsonl.gz")
N_SCHEMAS = int(os.environ.get("N_SCHEMAS", "400"))

rng = random.Random(0)
tokens = [bytes([i]) for i in range(256)] + [b'{"', b'":', b'", "', b'"}', b"true", b"  ", b"\\u00", "é".encode(), None]
EOS = len(tokens) - 1
vocab = grammar.Vocabulary.from_bytes(tokens, [EOS], size=len(tokens) + 7)
bm = grammar.allocate_token_bitmask(8, vocab.size)
stats = {"compiled": 0, "errors": 0, "walks": 0}


def compile_(schema):
    try:
        cg = grammar.compile_json_schema(schema, vocab, max_whitespace=rng.choice([0, 2, 20]),
                                         property_order=rng.choice(["schema", "any"]))
        stats["compiled"] += 1
        return cg
    except GrammarError:
        stats["errors"] += 1
        return None


def random_walk(cg, n):
    m = grammar.Matcher(cg)
    for _ in range(n):
        op = rng.random()
        if op < 0.6:
            m.fill_next_token_bitmask(bm, rng.randrange(8))
            m.accept_token(rng.randrange(-3, vocab.size + 3))
        elif op < 0.7:
            try:
                m.rollback(rng.randrange(0, 4))
            except ValueError:
                pass
        elif op < 0.8:
            m = m.copy()
        elif op < 0.9:
            m.find_jump_forward_string()
        else:
            m.accept_string(bytes(rng.randrange(256) for _ in range(rng.randrange(6))))
    stats["walks"] += 1


def probe(schema, prefix):
    """Compile `schema`; if it compiles, a random walk, then a mask after `prefix`."""
    cg = compile_(schema)
    if cg is not None:
        random_walk(cg, 40)
        m = grammar.Matcher(cg)
        m.accept_string(prefix)
        m.fill_next_token_bitmask(bm, 0)


def corpus():
    """The deterministic corpus (see the module docstring)."""
    with gzip.open(DATA, "rt") as f:
        records = [json.loads(line) for line in f][:N_SCHEMAS]
    for rec in records:
        cg = compile_(rec["schema"])
        if cg is None:
            continue
        for test in rec.get("tests", []):
            m = grammar.Matcher(cg)
            for b in json.dumps(test["data"]).encode():
                m.fill_next_token_bitmask(bm, 0)
                if not m.accept_token(b):
                    break
            m.fill_next_token_bitmask(bm, 0)
            m.accept_token(EOS)
            m.accept_token(EOS)
        random_walk(cg, 40)

    for _ in range(300):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
        compile_(raw.decode("utf-8", "replace"))

    keys = ["type", "properties", "items", "anyOf", "$ref", "enum", "required", "pattern", "minimum", "additionalProperties",
            "allOf", "oneOf", "const", "format", "maxLength", "$defs", "prefixItems", "minItems", "patternProperties",
            "minProperties", "maxProperties", "multipleOf", "exclusiveMaximum", "maximum", "propertyNames"]


    def rand_json(d):
        r = rng.random()
        if d > 4 or r < 0.3:
            return rng.choice([None, True, False, 0, -1, 2.5, 0.05, 3, "", "string", "#", "#/$defs/a", "^a+$", "object", "array",
                               "integer", "number", "(^a|b$)c*", "x^", "$", "(^)*", "ipv6", "duration"])
        if r < 0.5:
            return [rand_json(d + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(keys): rand_json(d + 1) for _ in range(rng.randrange(5))}


    for _ in range(1500):
        cg = compile_(rand_json(0))
        if cg is not None:
            random_walk(cg, 15)

    # properties in any order with counts, decimal bounds, multipleOf, distributed allOf/anyOf
    for k in range(400):
        props = {n: rng.choice([{"type": "integer", "multipleOf": rng.choice([0.5, 3, 0.01])}, {"type": "string"},
                                {"type": "number", "exclusiveMinimum": -1.5, "maximum": 2.25}, {}])
                 for n in rng.sample(["a", "b", "c", "d", "é"], rng.randrange(5))}
        schema = {"type": "object", "properties": props, "required": rng.sample(sorted(props), rng.randrange(len(props) + 1)),
                  "minProperties": rng.randrange(4), "additionalProperties": rng.choice([True, False, {"type": "null"}])}
        if k % 2:
            schema["maxProperties"] = rng.randrange(5)
        if k % 3 == 0:
            schema["patternProperties"] = {"^x": {"type": "boolean"}}
        if k % 5 == 0:
            schema = {"allOf": [schema, {"anyOf": [{"required": ["a"]}, {"maxProperties": 2}]},
                                {"anyOf": [{"type": "object"}, {"type": "null"}]}]}
        probe(schema, '{"b": 1, "a": 2.5, "x1": true')

    # propertyNames, anchors inside patterns, ipv6/duration, allOf merging patterns and patternProperties
    patterns = ["^a", "(^a|b$)", "^$|(^x+$)", "(?:^|-)[0-9]$", "a^b", "$x", "[a-c]+", "\\d{2}"]
    for k in range(300):
        names = rng.choice([{"pattern": rng.choice(patterns)}, {"maxLength": rng.randrange(3)}, {"enum": ["a", "b", 1]},
                            {"format": rng.choice(["ipv6", "duration", "date"])}, {"type": "integer"}, False, True,
                            {"$ref": "#/$defs/n"}, {"anyOf": [{}]}])
        part = {"type": "object", "properties": {"a": {"type": "string", "pattern": rng.choice(patterns)}, "b": {}},
                "required": rng.sample(["a", "b"], rng.randrange(3)), "propertyNames": names,
                "patternProperties": {rng.choice(patterns): {"type": "integer"}},
                "additionalProperties": rng.choice([True, False, {"type": "string", "format": "ipv6"}]),
                "$defs": {"n": {"pattern": rng.choice(patterns)}}}
        other = {"patternProperties": {rng.choice(patterns): {"minimum": 2}}, "properties": {"a": {"pattern": "b"}},
                 "propertyNames": {"minLength": 1}, "x-note": k}
        schema = {"allOf": [part, other]} if k % 2 else part
        probe(schema, '{"a": "ab", "b": 1, "x": 3, "::1": "P1D"')

    # counted strings (length bounds above the unrolled limit, counted_strings.h): long bounds on
    # the public API, and small ones with the limit lowered (native option) so walks cross them
    from toolken import _grammar
    str_patterns = ["^[a-c]+$", "^(ab)+$", "^(abc|de)*$", "^a{0,5}b?$", "x", "^.{2,}$", "^[^\"]*\\d$", "(^a|b$)"]
    for k in range(300):
        s = {"type": rng.choice(["string", ["string", "null"]])}
        lim = rng.choice([0, 1, 3, 1000])
        big = 1000 if lim == 1000 else 0
        if rng.random() < 0.8:
            s["maxLength"] = big + rng.randrange(12)
        if rng.random() < 0.6:
            s["minLength"] = big + rng.randrange(8)
        if rng.random() < 0.6:
            s["pattern"] = rng.choice(str_patterns)
        if rng.random() < 0.2:
            s["format"] = rng.choice(["date", "email", "uuid", "ipv6"])
        schema = rng.choice([s, {"type": "object", "properties": {"s": s}}, {"type": "array", "items": s},
                             {"anyOf": [s, {"type": "string", "maxLength": 2}]}, {"oneOf": [s, {"type": "integer"}]}])
        text = json.dumps(schema)
        try:
            cg = grammar.CompiledGrammar(_grammar.compile_json_schema(text, vocab._native, True, 20, False, False, False,
                                                                      rng.random() < 0.5, max_unrolled_length=lim), vocab, text)
            stats["compiled"] += 1
        except (_grammar.CompileError, ValueError):
            stats["errors"] += 1
            continue
        random_walk(cg, 40)
        m = grammar.Matcher(cg)
        m.accept_string('"' + rng.choice(["a", "ab", "é", "\\u00e9", "1"]) * (big + rng.randrange(12)))
        m.fill_next_token_bitmask(bm, 0)
        m.accept_token(rng.randrange(vocab.size))
    # oneOf of required keys (any order: exactly one key group complete at '}')
    for k in range(200):
        groups = [rng.sample(["a", "b", "c", "d"], rng.randrange(1, 3)) for _ in range(rng.randrange(2, 5))]
        branches = [dict({"required": g}, **({"type": "object"} if k % 2 else {})) for g in groups]
        schema = {"type": rng.choice(["object", ["object", "null"]]), "properties": {"a": {"type": "integer"}, "b": {}},
                  "oneOf": branches, "additionalProperties": rng.choice([True, False, {"type": "string"}])}
        if k % 3 == 0:
            schema["required"] = rng.sample(["a", "b", "c"], rng.randrange(3))
        if k % 4 == 0:
            schema["maxProperties"] = rng.randrange(4)
        if k % 5 == 0:
            schema["minProperties"] = rng.randrange(3)
        probe(schema, '{"b": 1, "a": 2, "c": "x"')

    # oneOf shapes decided by narrowing and the value validator (one_of_prover.h): branches that
    # only constrain objects, additionalProperties false with other keys, "", [] and {} in two
    # branches, const containers, patternProperties, nested alternatives, $ref branches
    leaf_branches = [{}, {"type": "string"}, {"enum": ["", "a"]}, {"const": []}, {"const": {"k": "a"}},
                     {"type": "array", "maxItems": 0}, {"type": "array", "items": {"enum": ["x", 1]}},
                     {"type": "integer", "minimum": 0}, {"x-note": 1}, {"not": {"type": "null"}},
                     {"type": "string", "pattern": "^a*$"}, {"oneOf": [{"type": "null"}, {"type": "boolean"}]}]
    for k in range(250):
        branches = []
        for _ in range(rng.randrange(2, 4)):
            if rng.random() < 0.6:
                props = {n: rng.choice([{"const": "a"}, {"const": "b"}, {"type": "integer"}, {"enum": [[1], [2]]},
                                        {"$ref": "#/$defs/d"}, {}]) for n in rng.sample(["k", "x", "y"], rng.randrange(3))}
                b = {"properties": props}
                if rng.random() < 0.5:
                    b["additionalProperties"] = rng.choice([False, {"type": "string"}])
                if props and rng.random() < 0.5:
                    b["required"] = [rng.choice(sorted(props))]
                if rng.random() < 0.3:
                    b["patternProperties"] = {rng.choice(["^k$", "^(x|z)$", "q"]): rng.choice([{"type": "null"}, False])}
                if rng.random() < 0.5:
                    b["type"] = "object"
                if rng.random() < 0.2:
                    b["anyOf"] = [{"required": ["k"]}, {"minProperties": 2}]
            else:
                b = rng.choice(leaf_branches)
            branches.append(b)
        schema = {"$defs": {"d": {"enum": ["a", 1]}}, "oneOf": branches}
        if k % 3 == 0:
            schema["type"] = rng.choice(["object", ["string", "array"], ["object", "null", "integer"]])
        if k % 4 == 0:
            schema = {"type": "array", "items": schema, "$defs": schema.pop("$defs")}
        probe(schema, rng.choice(['{"k": "a", "x": [1]', '["", [], {}', '"a', "[1, ", '{"y": 2, "k": "b"']))

    deep = {"type": "integer"}
    for _ in range(600):
        deep = {"type": "array", "items": deep}
    compile_(deep)
    compile_("[" * 100000)
    anyv = compile_({})
    m = grammar.Matcher(anyv)
    m.accept_string("[" * 5000 + "]" * 5000)

    ms = []
    for rec in records[:50]:
        cg = compile_(rec["schema"])
        if cg is not None:
            m = grammar.Matcher(cg)
            m.accept_string(json.dumps(rec["tests"][0]["data"])[: rng.randrange(1, 20)] if rec.get("tests") else "")
            ms.append(m)
    out = grammar.allocate_token_bitmask(len(ms), vocab.size)
    grammar.fill_next_token_bitmasks(ms, out, num_threads=4)
    print("fuzz corpus done:", stats, file=sys.stderr)


def hammer(seconds):
    """8 threads on one matcher, every method mixed; then the matcher must still be consistent."""
    import threading
    import time

    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer"},
                                                "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name"]}
    cg = grammar.compile_json_schema(schema, vocab)
    m = grammar.Matcher(cg)
    text = json.dumps({"name": "abc", "n": 12, "tags": ["x", "y"]}).encode()
    stop = time.perf_counter() + seconds
    errors, calls = [], [0] * 8

    def work(k):
        r = random.Random(k)
        out = grammar.allocate_token_bitmask(2, vocab.size)
        try:
            while time.perf_counter() < stop:
                op = r.random()
                if op < 0.35:
                    m.fill_next_token_bitmask(out, r.randrange(2))
                elif op < 0.6:
                    i = m.num_accepted
                    m.accept_token(text[i] if i < len(text) and r.random() < 0.8 else r.randrange(-2, vocab.size + 2))
                elif op < 0.7:
                    try:
                        m.rollback(r.randrange(3))
                    except GrammarError:
                        pass
                elif op < 0.75:
                    m.reset()
                elif op < 0.85:
                    c = m.copy()
                    c.fill_next_token_bitmask(out, 0)
                    c.accept_token(r.randrange(256))
                elif op < 0.9:
                    m.find_jump_forward_string()
                elif op < 0.95:
                    grammar.fill_next_token_bitmasks([m, grammar.Matcher(cg)], out, num_threads=2)
                else:
                    m.is_terminated(), m.can_terminate(), m.accept_string(b'{"')
                calls[k] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    m.reset()
    assert m.accept_string(text) and m.can_terminate() and m.accept_token(EOS) and m.is_terminated()
    print(f"thread hammer done: {sum(calls)} calls from 8 threads on one matcher in {seconds:.0f} s, state consistent",
          file=sys.stderr)


if MODE in ("corpus", "all"):
    corpus()
if MODE in ("threads", "all"):
    hammer(float(os.environ.get("HAMMER_SECONDS", "10")))
