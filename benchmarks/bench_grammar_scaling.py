"""Compile time of the grammar engine against schema size (issue 18): an object with N simple
properties, ``{"type": "object", "properties": {"p0": {"type": "string"}, ...}}``.

For each N: the best of ``--repeats`` compiles (a fresh vocabulary cache each time, so nothing
is reused), wall time and process CPU time, and the grammar's node count. Prints a table and
writes JSON. Properties come in schema order and optional ones may be skipped, which made the
old construction quadratic (250 -> 0.15 s, 2,000 -> 8.6 s); the key trie (csrc/key_trie.h) keeps
it linear in the number of states. Default: the byte vocabulary (256 tokens) so that only the
compile is measured; ``--real`` compiles for the Llama-3 tokenizer instead (same compile, plus
the vocabulary load once).

    python benchmarks/bench_grammar_scaling.py                      # N = 250 ... 10,000
    python benchmarks/bench_grammar_scaling.py --sizes 1000,10000 --out bench_results/scaling.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional


def schema_of(n: int, required: bool = False) -> Dict[str, Any]:
    s: Dict[str, Any] = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(n)}}
    if required:
        s["required"] = [f"p{i}" for i in range(n)]
    return s


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="250,500,1000,2000,5000,10000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real", action="store_true", help="compile for the Llama-3 tokenizer's vocabulary")
    ap.add_argument("--out", default=os.path.join("bench_results", "grammar_scaling.json"))
    args = ap.parse_args(argv)
    from toolken import grammar

    if args.real:
        from toolken.local_models import llama3_tokenizer

        tokens = grammar.token_bytes_from_tokenizer(llama3_tokenizer())
    else:
        tokens = [bytes([i]) for i in range(256)] + [None]
    rows = []
    print(f"{'N':>7} {'required':>9} {'wall s':>8} {'cpu s':>8} {'nodes':>8} {'µs/prop':>8}")
    for n in [int(x) for x in args.sizes.split(",") if x]:
        for required in (False, True):
            text = json.dumps(schema_of(n, required))
            wall, cpu, nodes = float("inf"), float("inf"), 0
            for _ in range(args.repeats):
                vocab = grammar.Vocabulary.from_bytes(tokens, [len(tokens) - 1])  # a fresh compile cache
                t0, c0 = time.perf_counter(), time.process_time()
                cg = grammar.compile_json_schema(text, vocab)
                wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
                nodes = int(cg._native.num_nodes)
            rows.append({"n": n, "required": required, "wall_s": wall, "cpu_s": cpu, "nodes": nodes})
            print(f"{n:>7} {str(required):>9} {wall:>8.3f} {cpu:>8.3f} {nodes:>8} {1e6 * wall / n:>8.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "grammar_scaling", "vocab": "llama3" if args.real else "bytes", "rows": rows}, f, indent=1)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
