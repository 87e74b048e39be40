"""The tool-token retrieval ablation of the README (issue 14): one `toolken eval retrieval` run per
variant, sharing one activation cache, then one table and one plot.

Each variant is the default recipe with one lever changed (or all off), on Seal-Tools: 4,076 tools,
the 700 `dev` queries to train, the 700 `test_in_domain` queries to test (`--holdout 200` runs
choose hyperparameters instead: they train on 500 dev queries and test on the other 200). The
default recipe's hyperparameters were chosen on that held-out split, never on the test set.
Reported per variant: Recall@1, Recall@5, NDCG@5 after training, the RRF(BM25, tool tokens) hybrid
(not counted as tool tokens), and wall time (forward passes included when the cache was cold).

    python benchmarks/bench_retrieval_ablation.py --out bench_results/retrieval_ablation
    python benchmarks/bench_retrieval_ablation.py --variants default,upper_bound
    python benchmarks/bench_retrieval_ablation.py --from bench_results/retrieval_ablation   # table + plot only
    python benchmarks/bench_retrieval_ablation.py --variants default --keep benchmarks/results/retrieval_ablation.json

``--keep FILE`` carries the rows of an earlier results file that this run does not redo (a run
of every variant takes hours on 2 cores), each with the wall time it was measured with (rows
before the per-sentence default scored the test set every 100 steps; runs now use the command's
default, every 300).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: the data of every recipe before per-sentence retrieval: two memorization phrasings, whole
#: multi-intent synthetic requests
WHOLE = ["--memorization", "document,request", "--synthetic-whole"]
#: the recipe before the centroid init, 5 epochs and per-sentence scoring, as the rows measured with it were made
PREVIOUS = ["--init", "description", "--epochs", "3", "--rank", "query", *WHOLE]

#: name -> (what it is, extra arguments of `toolken eval retrieval`)
VARIANTS = {
    "rows_only": ("tool rows only (K=0), fused full-vocabulary loss, 300 steps", ["--train-layers", "0", "--init", "description"]),
    "k1_vocab": ("top layer (K=1), full-vocabulary loss, no synthetic, no teacher",
                 ["--train-layers", "1", "--loss", "vocab", "--synthetic", "0", "--distill", "0", *PREVIOUS]),
    "k1_tools": ("K=1, tools-only loss, no synthetic, no teacher",
                 ["--train-layers", "1", "--synthetic", "0", "--distill", "0", *PREVIOUS]),
    "k1_tools_synthetic": ("K=1, tools-only loss + synthetic requests (description parts)",
                           ["--train-layers", "1", "--distill", "0", "--synthetic-style", "description", *PREVIOUS]),
    "k1_tools_distill": ("K=1, tools-only loss + BM25 teacher", ["--train-layers", "1", "--synthetic", "0", *PREVIOUS]),
    "k1_all": ("K=1, tools-only loss + synthetic (description parts) + BM25 teacher",
               ["--train-layers", "1", "--synthetic-style", "description", *PREVIOUS]),
    "default_description": ("K=2, tools-only loss + synthetic (description parts) + BM25 teacher",
                            ["--synthetic-style", "description", *PREVIOUS]),
    "previous_default": ("K=2, tools-only loss + synthetic (query parts) + BM25 teacher, description init, 3 epochs",
                         PREVIOUS),
    "whole_query": ("K=2, tools-only loss + synthetic (query parts) + BM25 teacher, centroid init, 5 epochs, "
                    "whole queries scored (the previous default)", ["--rank", "query", *WHOLE]),
    "per_sentence": ("the same, each test sentence scored apart and a tool ranked by its best sentence",
                     WHOLE),
    "sentences_trained": ("per_sentence, also trained on the dev queries' sentences labelled by their calls' arguments",
                          ["--sentences", *WHOLE]),
    "default": ("per_sentence, each synthetic request's parts as separate examples, the document phrasing alone "
                "(the default)", []),
    "default_tool2vec": ("whole_query with Tool2Vec rows instead of centroid rows", ["--init", "tool2vec", "--rank", "query", *WHOLE]),
    "upper_bound": ("the default, trained on the test queries too (an upper bound, not a result)", ["--include-test"]),
    "k1_upper_bound": ("k1_all, trained on the test queries too (an upper bound, not a result)",
                       ["--train-layers", "1", "--synthetic-style", "description", "--include-test", *PREVIOUS]),
}


def run_variant(name: str, out: Path, cache: str, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "toolken", "eval", "retrieval", "--out", str(out / name),
           *(["--cache-dir", cache] if cache is not None else []), *VARIANTS[name][1], *extra]
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    (out / name / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.0f}\n")


def collect(out: Path, names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        path = out / name / "retrieval.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        (init, entry), = res["inits"].items()
        wall = out / name / "wall_s.txt"
        rows.append({"variant": name, "what": VARIANTS.get(name, ("", []))[0], "init": init, "bm25": res["bm25"],
                     "final": entry["final"], "rrf": entry.get("rrf_bm25"), "history": entry["history"],
                     "total_s": res["timing_s"].get("total"), "wall_s": float(wall.read_text()) if wall.is_file() else None})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        h = r["history"]
        ax.plot([x["step"] for x in h], [x["recall@1"] for x in h], marker=".", label=r["variant"])
    if rows:
        ax.axhline(rows[0]["bm25"]["recall@1"], color="black", linestyle="--", label="BM25")
    ax.set_xlabel("training step")
    ax.set_ylabel("Recall@1 on test_in_domain")
    ax.set_title("Seal-Tools tool-token retrieval, SmolLM2-135M")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    ap.add_argument("--out", default=os.path.join("bench_results", "retrieval_ablation"))
    ap.add_argument("--cache-dir", default=None, help="activation cache shared by the runs (default toolken's)")
    ap.add_argument("--from", dest="existing", metavar="DIR", help="only tabulate and plot the runs in DIR")
    ap.add_argument("--keep", metavar="FILE", help="also report the rows of this earlier results JSON not run here")
    args, extra = ap.parse_known_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    out = Path(args.existing or args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.existing:
        for name in names:
            run_variant(name, out, args.cache_dir, extra)
    rows = collect(out, names)
    if args.keep:
        done = {r["variant"] for r in rows}
        kept = [r for r in json.loads(Path(args.keep).read_text())["results"] if r["variant"] not in done]
        rows = sorted(rows + kept, key=lambda r: list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else len(VARIANTS))
    if not rows:
        raise SystemExit(f"no results in {out}")
    b = rows[0]["bm25"]
    print("| method | Recall@1 | Recall@5 | NDCG@5 | wall |")
    print("|---|---|---|---|---|")
    print(f"| BM25 (`bm25s`) | {b['recall@1']:.3f} | {b['recall@5']:.3f} | {b['ndcg@5']:.3f} | < 1 s |")
    for r in rows:
        m, wall = r["final"], r["wall_s"] or r["total_s"]
        print(f"| {r['variant']}: {r['what']} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['ndcg@5']:.3f} | "
              f"{wall / 60:.1f} min |")
    for r in rows:
        if r["rrf"]:
            m = r["rrf"]
            print(f"| RRF(BM25, {r['variant']}) — hybrid, not tool tokens | {m['recall@1']:.3f} | {m['recall@5']:.3f} | "
                  f"{m['ndcg@5']:.3f} | |")
    plot(rows, out / "retrieval_ablation.png")
    (out / "retrieval_ablation.json").write_text(json.dumps({"benchmark": "retrieval_ablation", "results": rows}, indent=1))
    print(f"wrote {out / 'retrieval_ablation.json'} and {out / 'retrieval_ablation.png'}")


if __name__ == "__main__":
    main()
