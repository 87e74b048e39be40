"""MaskBench (method: benchmarks/README.md): toolken's grammar engine vs xgrammar and llguidance.

For each schema of ``../shared/data/maskbench-dev.jsonl.gz`` (a fixed-seed sample by default,
``--full`` for all): compile it (TTFM = compile + first mask), then for each test instance walk
its canonical tokens (``json.dumps(data)``, Llama-3 tokenizer) filling a mask before every token
(TBM), checking the token is allowed and accepting it; at the end the stop token must be allowed
for a valid instance, and an invalid instance must be rejected somewhere (a disallowed token or
no stop at the end). Single thread, each engine in its own worker process so that a crash or a
timeout of one schema is counted and the run goes on.

A schema *passes* when it compiles, every valid instance is accepted and every invalid one is
rejected. Counted per engine: passing, compile errors, validation errors (valid instance
rejected), invalidation errors (invalid instance accepted), crashes, timeouts; TBM and TTFM
percentiles; memory of each compiled grammar after its instances were walked (toolken: grammar
plus the token masks it computed, shared leaf masks included; xgrammar: ``memory_size_bytes``;
llguidance exposes none); ratios to the peers measured in the same run. Then, for toolken, the
thread scaling of ``fill_next_token_bitmasks`` on a batch of matchers at realistic positions.

    python benchmarks/bench_grammar.py                 # 150-schema sample, all engines
    python benchmarks/bench_grammar.py --full --out bench_results/grammar_full.json
    python benchmarks/bench_grammar.py --full --compile-only --out errors.json   # toolken compile errors only

Mask times of two toolken builds on the same schemas (those both compile, the positions both
walk): run the bench with ``--mask-times`` under each build (an older build: ``PYTHONPATH=<its
checkout>`` and ``--data`` given, since it looks for the data beside itself; builds without
``property_order`` keep the schema order), then ``--compare-mask-times OLD.json`` on the newer one:

    PYTHONPATH=/tmp/old python benchmarks/bench_grammar.py --full --engines toolken --batch 0 --mask-times \
        --data ../shared/data/maskbench-dev.jsonl.gz --out old.json
    python benchmarks/bench_grammar.py --full --engines toolken --batch 0 --mask-times --compare-mask-times old.json

toolken compiles with ``property_order="any"`` (``--property-order schema`` for the fixed order):
MaskBench's valid instances list properties in any order. llguidance and xgrammar have no such
option; they keep the schema's order (optional properties may be skipped).
"""
from __future__ import annotations

import argparse
import gzip
import inspect
import json
import multiprocessing as mp
import os
import random
import re
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from toolken.local_models import shared_data

ENGINES = ("toolken", "xgrammar", "llguidance")


def load_records(path: str, n: Optional[int], seed: int) -> List[Dict[str, Any]]:
    """MaskBench records that have tests; a fixed-seed sample of ``n`` (all when n is None)."""
    with gzip.open(path, "rt") as f:
        recs = [json.loads(line) for line in f]
    recs = [r for r in recs if r.get("tests")]
    if n is not None and n < len(recs):
        recs = random.Random(seed).sample(recs, n)
    return recs


# ------------------------------------------------------------------------------------ engines
class Engine:
    """compile(schema) -> handle or raise; matcher(handle) -> object with fill/accept/stop_ok."""

    name = ""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.vocab_size = len(tokenizer)
        self.eos = tokenizer.eos_token_id

    def memory_bytes(self, cg: Any) -> Optional[int]:
        """Bytes held by a compiled grammar (after its instances were walked), None if unknown."""
        return None


class ToolkenEngine(Engine):
    name = "toolken"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        from toolken import grammar

        self.g = grammar
        self.vocab = grammar.Vocabulary.from_tokenizer(tokenizer)
        self.bm = grammar.allocate_token_bitmask(1, self.vocab.size)

    def compile(self, schema: Any) -> Any:
        kwargs = {}
        if "property_order" in inspect.signature(self.g.compile_json_schema).parameters:  # builds before issue 16: none
            kwargs["property_order"] = os.environ.get("TOOLKEN_BENCH_PROPERTY_ORDER", "any")
        return self.g.compile_json_schema(schema, self.vocab, whitespace="flexible", **kwargs)

    def matcher(self, cg: Any) -> Any:
        return self.g.Matcher(cg)

    def fill(self, m: Any) -> np.ndarray:
        m.fill_next_token_bitmask(self.bm, 0)
        return self.bm[0]

    def accept(self, m: Any, t: int) -> bool:
        return m.accept_token(t)

    def memory_bytes(self, cg: Any) -> Optional[int]:
        return cg.memory_bytes


class XGrammarEngine(Engine):
    name = "xgrammar"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        import torch
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size)
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.bm_t = xgr.allocate_token_bitmask(1, self.vocab_size)
        self.bm = self.bm_t.numpy()
        self.torch = torch

    def compile(self, schema: Any) -> Any:
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=True, strict_mode=False)

    def matcher(self, cg: Any) -> Any:
        return self.xgr.GrammarMatcher(cg)

    def memory_bytes(self, cg: Any) -> Optional[int]:
        return int(cg.memory_size_bytes)

    def fill(self, m: Any) -> np.ndarray:
        m.fill_next_token_bitmask(self.bm_t, 0)
        return self.bm[0]

    def accept(self, m: Any, t: int) -> bool:
        return m.accept_token(t)


class LLGuidanceEngine(Engine):
    name = "llguidance"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        import llguidance
        import llguidance.hf
        import llguidance.numpy

        self.ll = llguidance
        self.lltok = llguidance.hf.from_tokenizer(tokenizer)
        self.bm = llguidance.numpy.allocate_token_bitmask(1, self.lltok.vocab_size)
        self.fill_fn = llguidance.numpy.fill_next_token_bitmask

    def compile(self, schema: Any) -> Any:
        grm = self.ll.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": True})
        m = self.ll.LLMatcher(self.lltok, grm, log_level=0)
        if m.is_error():
            raise ValueError(m.get_error())
        return grm

    def matcher(self, grm: Any) -> Any:
        m = self.ll.LLMatcher(self.lltok, grm, log_level=0)
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def fill(self, m: Any) -> np.ndarray:
        self.fill_fn(m, self.bm, 0)
        return self.bm[0]

    def accept(self, m: Any, t: int) -> bool:
        return m.consume_token(t) and not m.is_error()


def make_engine(name: str, tokenizer: Any) -> Engine:
    return {"toolken": ToolkenEngine, "xgrammar": XGrammarEngine, "llguidance": LLGuidanceEngine}[name](tokenizer)


def allowed(mask: np.ndarray, t: int) -> bool:
    return bool((int(mask[t >> 5]) >> (t & 31)) & 1)


def run_schema(engine: Engine, rec: Dict[str, Any], token_cache: Dict[str, List[int]]) -> Dict[str, Any]:
    """Compile + walk every test instance of one record (see the module docstring)."""
    out: Dict[str, Any] = {"name": rec.get("name"), "category": rec.get("category"), "tbm_us": [], "walk_masks": [],
                           "ttfm_us": None, "compile_error": None,
                           "validation_errors": 0, "invalidation_errors": 0, "first_failure": None, "memory_bytes": None}
    t0 = time.perf_counter()
    try:
        cg = engine.compile(rec["schema"])
        m0 = engine.matcher(cg)
        engine.fill(m0)
    except Exception as e:  # noqa: BLE001 - any compile failure counts as a compile error
        out["compile_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        return out
    out["ttfm_us"] = (time.perf_counter() - t0) * 1e6
    for test in rec["tests"]:
        text = json.dumps(test["data"])
        ids = token_cache.get(text)
        if ids is None:
            ids = engine.tok.encode(text, add_special_tokens=False)
            token_cache[text] = ids
        m = engine.matcher(cg)
        accepted = True
        where = None
        before = len(out["tbm_us"])
        for i, t in enumerate(ids):
            t1 = time.perf_counter()
            mask = engine.fill(m)
            out["tbm_us"].append((time.perf_counter() - t1) * 1e6)
            if not allowed(mask, t) or not engine.accept(m, t):
                accepted = False
                where = i
                break
        out["walk_masks"].append(len(out["tbm_us"]) - before)  # masks timed in this instance's walk
        if accepted:
            mask = engine.fill(m)
            accepted = allowed(mask, engine.eos)
            where = len(ids)
        if test["valid"] and not accepted:
            out["validation_errors"] += 1
            out["first_failure"] = out["first_failure"] or {"valid": True, "text": text[:300], "at_token": where,
                                                            "prefix": engine.tok.decode(ids[:where])[-60:] if where is not None else None}
        elif not test["valid"] and accepted:
            out["invalidation_errors"] += 1
            out["first_failure"] = out["first_failure"] or {"valid": False, "text": text[:300]}
    out["memory_bytes"] = engine.memory_bytes(cg)
    return out


def worker(engine_name: str, records: List[Dict[str, Any]], conn: Any) -> None:
    from toolken.local_models import llama3_tokenizer

    engine = make_engine(engine_name, llama3_tokenizer())
    cache: Dict[str, List[int]] = {}
    conn.send(("ready", None))
    while True:
        idx = conn.recv()
        if idx is None:
            return
        conn.send(("result", run_schema(engine, records[idx], cache)))


def run_engine(engine_name: str, records: List[Dict[str, Any]], timeout_s: float) -> List[Dict[str, Any]]:
    """Results per record; a worker crash or timeout is recorded and a new worker takes over."""
    ctx = mp.get_context("spawn")
    results: List[Dict[str, Any]] = []
    proc = conn = None
    i = 0
    while i < len(records):
        if proc is None:
            conn, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(engine_name, records, child), daemon=True)
            proc.start()
            if not conn.poll(300) or conn.recv()[0] != "ready":
                raise RuntimeError(f"{engine_name} worker failed to start")
        conn.send(i)
        status = None
        if conn.poll(timeout_s):
            try:
                kind, res = conn.recv()
                results.append(res)
            except EOFError:
                status = "crash"
        else:
            status = "timeout" if proc.is_alive() else "crash"
        if status is None and not proc.is_alive():
            status = "crash"
        if status is not None:
            results.append({"name": records[i].get("name"), "category": records[i].get("category"), status: True,
                            "tbm_us": [], "ttfm_us": None, "compile_error": None, "validation_errors": 0,
                            "invalidation_errors": 0})
            proc.kill()
            proc.join()
            proc = None
        i += 1
        if (i % 25 == 0 or i == len(records)) and sys.stderr.isatty():
            print(f"  {engine_name}: {i}/{len(records)}", file=sys.stderr)
    if proc is not None:
        conn.send(None)
        proc.join(10)
    return results


def passes(r: Dict[str, Any]) -> bool:
    return (not r.get("crash") and not r.get("timeout") and not r["compile_error"]
            and r["validation_errors"] == 0 and r["invalidation_errors"] == 0)


def summarize(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    tbm = np.array([x for r in results for x in r["tbm_us"]] or [np.nan])
    mem = np.array([r["memory_bytes"] / 2**20 for r in results if r.get("memory_bytes") is not None])
    ttfm = np.array([r["ttfm_us"] for r in results if r.get("ttfm_us") is not None] or [np.nan])
    s = {
        "schemas": len(results),
        "passing": sum(1 for r in results if passes(r)),
        "compile_errors": sum(1 for r in results if r["compile_error"]),
        "crashes": sum(1 for r in results if r.get("crash")),
        "timeouts": sum(1 for r in results if r.get("timeout")),
        "schemas_with_validation_errors": sum(1 for r in results if r["validation_errors"]),
        "validation_errors": sum(r["validation_errors"] for r in results),
        "schemas_with_invalidation_errors": sum(1 for r in results if r["invalidation_errors"]),
        "invalidation_errors": sum(r["invalidation_errors"] for r in results),
        "masks": int(np.isfinite(tbm).sum()),
        "tbm_p50_us": float(np.nanpercentile(tbm, 50)), "tbm_p99_us": float(np.nanpercentile(tbm, 99)),
        "tbm_max_us": float(np.nanmax(tbm)),
        "ttfm_p50_us": float(np.nanpercentile(ttfm, 50)), "ttfm_p99_us": float(np.nanpercentile(ttfm, 99)),
        # None: the engine reports no memory (llguidance)
        "mem_p50_mib": float(np.percentile(mem, 50)) if mem.size else None,
        "mem_p99_mib": float(np.percentile(mem, 99)) if mem.size else None,
        "mem_max_mib": float(mem.max()) if mem.size else None,
        "schemas_over_64mib": int((mem > 64).sum()) if mem.size else None,
    }
    cats: Dict[str, List[int]] = {}
    for r in results:
        c = cats.setdefault(str(r.get("category")), [0, 0])
        c[0] += passes(r)
        c[1] += 1
    s["passing_by_category"] = {k: {"passing": v[0], "schemas": v[1]} for k, v in sorted(cats.items())}
    return s


def compile_errors(records: List[Dict[str, Any]], property_order: str) -> Dict[str, Optional[str]]:
    """toolken's compile error per schema name (None: compiles), in this process, on a byte
    vocabulary (compiling does not depend on the vocabulary); no masks, no timing."""
    from toolken import grammar

    vocab = grammar.Vocabulary.from_bytes([bytes([i]) for i in range(256)] + [None], [256])
    out: Dict[str, Optional[str]] = {}
    for i, rec in enumerate(records):
        try:
            grammar.compile_json_schema(rec["schema"], vocab, whitespace="flexible", property_order=property_order)
            out[f"{i}:{rec.get('name')}"] = None
        except Exception as e:  # noqa: BLE001 - every refusal is counted
            out[f"{i}:{rec.get('name')}"] = f"{type(e).__name__}: {str(e)[:300]}"
    return out


def error_class(message: str) -> str:
    """A compile error without its JSON pointers and numbers (to group errors by kind)."""
    m = re.sub(r"\(at [^)]*\)|'[^']*'|#[^ ,;)]*|\d+", "_", message)
    return m[:110]


def compare_mask_times(mine: List[Dict[str, Any]], other: List[Dict[str, Any]], label: str) -> Dict[str, Any]:
    """Mask-time percentiles of two toolken runs over the same masks: the schemas both compiled,
    and in each instance's walk the positions both reached (a walk stops at a rejected token)."""
    theirs = {r["name"]: r for r in other if r.get("ttfm_us") is not None and "walk_masks" in r}
    a: List[float] = []
    b: List[float] = []
    schemas = 0
    for r in mine:
        o = theirs.get(r["name"])
        if r.get("ttfm_us") is None or o is None:
            continue
        schemas += 1
        ia = ib = 0
        for na, nb in zip(r["walk_masks"], o["walk_masks"]):
            k = min(na, nb)
            a += r["tbm_us"][ia:ia + k]
            b += o["tbm_us"][ib:ib + k]
            ia, ib = ia + na, ib + nb
    if not a:
        raise SystemExit(f"{label}: no schema compiled by both runs has mask times (made with --mask-times?)")
    xa, xb = np.array(a), np.array(b)
    rows = {f"p{q}": (float(np.percentile(xa, q)), float(np.percentile(xb, q))) for q in (50, 90, 99, 99.9)}
    print(f"\ntoolken mask times against {label}: {schemas} schemas compiled by both, {len(xa)} masks")
    print("| percentile | this run (us) | other (us) | ratio |")
    print("|---|---|---|---|")
    for q, (x, y) in rows.items():
        print(f"| {q} | {x:.1f} | {y:.1f} | {x / y:.2f}x |")
    return {"other": label, "schemas": schemas, "masks": len(xa),
            "percentiles_us": {q: {"this": x, "other": y, "ratio": x / y} for q, (x, y) in rows.items()}}


def thread_scaling(records: List[Dict[str, Any]], batch: int, seed: int, repeats: int) -> Dict[str, Any]:
    """toolken's ``fill_next_token_bitmasks`` on a batch of matchers at realistic positions.

    Matchers come from the sample's schemas, each advanced along a valid instance to a random
    token position; one warm-up fill computes the masks that are computed lazily (a batch in a
    running server has them), then each thread count fills the whole batch ``repeats`` times.
    """
    from toolken import grammar
    from toolken.errors import GrammarError
    from toolken.local_models import llama3_tokenizer

    tok = llama3_tokenizer()
    vocab = grammar.Vocabulary.from_tokenizer(tok)
    rng = random.Random(seed)
    matchers: List[Any] = []
    for rec in records:
        tests = [t for t in rec["tests"] if t["valid"]]
        if not tests:
            continue
        try:
            cg = grammar.compile_json_schema(rec["schema"], vocab, property_order=os.environ.get("TOOLKEN_BENCH_PROPERTY_ORDER", "any"))
        except GrammarError:
            continue
        ids = tok.encode(json.dumps(rng.choice(tests)["data"]), add_special_tokens=False)
        m = grammar.Matcher(cg)
        stop = rng.randrange(len(ids) + 1)
        if all(m.accept_token(t) for t in ids[:stop]):
            matchers.append(m)
        if len(matchers) == batch:
            break
    bm = grammar.allocate_token_bitmask(len(matchers), vocab.size)
    grammar.fill_next_token_bitmasks(matchers, bm, num_threads=1)  # warm-up: lazily computed masks
    cores = os.cpu_count() or 1
    rows = []
    for threads in sorted({1, 2, cores}):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            grammar.fill_next_token_bitmasks(matchers, bm, num_threads=threads)
            times.append((time.perf_counter() - t0) * 1e3)
        rows.append({"threads": threads, "batch_ms_p50": float(np.median(times)), "batch_ms_min": float(np.min(times))})
    for r in rows:
        r["speedup_vs_1"] = rows[0]["batch_ms_p50"] / r["batch_ms_p50"]
    return {"batch": len(matchers), "cores": cores, "repeats": repeats, "rows": rows}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="maskbench-dev.jsonl.gz (default: from $TOOLKEN_DATA or ../shared/data)")
    ap.add_argument("--n", type=int, default=150, help="schemas in the fixed-seed sample")
    ap.add_argument("--full", action="store_true", help="all schemas with tests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per schema before it counts as a timeout")
    ap.add_argument("--out", default=os.path.join("bench_results", "grammar.json"))
    ap.add_argument("--failures", action="store_true", help="print toolken's failing schemas")
    ap.add_argument("--batch", type=int, default=64, help="matchers in the thread-scaling batch (0: skip)")
    ap.add_argument("--repeats", type=int, default=50, help="batch fills per thread count")
    ap.add_argument("--property-order", default="any", choices=("any", "schema"),
                    help="toolken's property_order (MaskBench instances list properties in any order)")
    ap.add_argument("--mask-times", action="store_true", help="keep toolken's time of every mask in --out")
    ap.add_argument("--compare-mask-times", metavar="OTHER_JSON",
                    help="compare toolken's mask times with another run's (--mask-times) on the schemas both compiled")
    ap.add_argument("--compile-only", action="store_true",
                    help="toolken only: count compile errors by kind and write each schema's error to --out (no timing)")
    args = ap.parse_args(argv)

    data = args.data or str(shared_data("maskbench-dev.jsonl.gz"))  # fails fast, before any worker starts
    records = load_records(data, None if args.full else args.n, args.seed)
    engines = [e for e in args.engines.split(",") if e]
    os.environ["TOOLKEN_BENCH_PROPERTY_ORDER"] = args.property_order  # read by the spawned workers
    if args.compile_only:
        errors = compile_errors(records, args.property_order)
        kinds: Dict[str, int] = {}
        for e in errors.values():
            if e:
                kinds[error_class(e)] = kinds.get(error_class(e), 0) + 1
        print(f"toolken compile errors: {sum(1 for e in errors.values() if e)} of {len(records)} schemas "
              f"(property_order={args.property_order})")
        for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"{n:5d}  {k}")
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(errors, f, indent=0)
            print(f"wrote {args.out}")
        return 0
    summary: Dict[str, Any] = {}
    per_schema: Dict[str, Any] = {}
    res_by_engine: Dict[str, List[Dict[str, Any]]] = {}
    for name in engines:
        try:
            __import__(name)
        except ImportError:
            print(f"{name}: not installed, skipped")
            continue
        t = time.time()
        res = run_engine(name, records, args.timeout)
        summary[name] = summarize(res)
        res_by_engine[name] = res
        summary[name]["wall_s"] = round(time.time() - t, 1)
        keep = args.mask_times and name == "toolken"
        per_schema[name] = [{k: v for k, v in r.items() if keep or k not in ("tbm_us", "walk_masks")} for r in res]

    cols = ["passing", "compile_errors", "timeouts", "crashes", "validation_errors", "invalidation_errors",
            "tbm_p50_us", "tbm_p99_us", "ttfm_p50_us", "ttfm_p99_us", "mem_p50_mib", "mem_p99_mib", "mem_max_mib"]
    print(f"MaskBench sample: {len(records)} schemas, Llama-3 tokenizer, 1 thread")
    print("| engine | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, s in summary.items():
        print(f"| {name} | " + " | ".join(f"{s[c]:.1f}" if isinstance(s[c], float) else "n/a" if s[c] is None else str(s[c])
                                          for c in cols) + " |")
    if summary:
        names = list(summary)
        print("\npassing by category (schemas)")
        print("| category | schemas | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 2) + "|")
        first = summary[names[0]]["passing_by_category"]
        for cat, v in first.items():
            print(f"| {cat} | {v['schemas']} | " + " | ".join(str(summary[n]["passing_by_category"].get(cat, {}).get("passing"))
                                                           for n in names) + " |")
    if "toolken" in summary:
        t = summary["toolken"]
        for peer in engines:
            if peer == "toolken" or peer not in summary:
                continue
            p = summary[peer]
            ratios = {c: (t[c] / p[c] if p[c] else float("nan")) for c in ("tbm_p50_us", "tbm_p99_us", "ttfm_p50_us", "ttfm_p99_us")}
            summary["toolken"][f"ratio_vs_{peer}"] = ratios
            print(f"toolken / {peer}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
                  + f"; passing {t['passing']} vs {p['passing']}")
    if args.compare_mask_times and "toolken" in per_schema:
        with open(args.compare_mask_times) as f:
            other = json.load(f)["per_schema"]["toolken"]
        summary["toolken"]["mask_times_vs_other"] = compare_mask_times(res_by_engine["toolken"], other,
                                                                       args.compare_mask_times)
    scaling = None
    if "toolken" in summary and args.batch > 0:
        scaling = thread_scaling(records, args.batch, args.seed, args.repeats)
        print(f"\ntoolken fill_next_token_bitmasks: batch of {scaling['batch']} matchers at random positions of valid "
              f"instances, masks warm, {scaling['repeats']} fills each; this machine has {scaling['cores']} cores")
        print("| threads | batch ms (median) | batch ms (min) | speedup vs 1 thread |")
        print("|---|---|---|---|")
        for r in scaling["rows"]:
            print(f"| {r['threads']} | {r['batch_ms_p50']:.3f} | {r['batch_ms_min']:.3f} | {r['speedup_vs_1']:.2f}x |")
    if args.failures and "toolken" in per_schema:
        for r in per_schema["toolken"]:
            if r.get("compile_error") or r.get("validation_errors") or r.get("invalidation_errors") or r.get("crash") or r.get("timeout"):
                print(json.dumps(r)[:600])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"schemas": len(records), "seed": args.seed, "full": args.full, "summary": summary,
                       "thread_scaling": scaling, "per_schema": per_schema}, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
