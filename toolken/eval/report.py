"""Reporting the retrieval experiment: the verdict, a table, a plot and the JSON result."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from matplotlib.figure import Figure

from ..tools import PathLike


def metrics_of(entry: Mapping[str, float]) -> dict[str, float]:
    return {k: entry[k] for k in ("recall@1", "recall@5", "ndcg@5")}


def format_metrics(m: Mapping[str, float]) -> str:
    return " ".join(f"{k}={m[k]:.3f}" for k in ("recall@1", "recall@5", "ndcg@5"))


def format_by_size(m: Mapping[str, float]) -> str:
    """`toolken.eval.hit_rate_by_size` in one line: ``top-1 in gold: 1 tool 0.733 (60), 2+ tools 0.614 (140)``."""
    parts = [f"{label} {m[f'hit@1 {label}']:.3f} ({int(m[f'n {label}'])})" for label in ("1 tool", "2+ tools")
             if f"hit@1 {label}" in m]
    return "top-1 in gold: " + ", ".join(parts)


def verdict(result: Mapping[str, Any]) -> list[str]:
    """The acceptance questions answered from the numbers (no judgment added)."""
    out = []
    finals = {k: v["final"] for k, v in result["inits"].items()}
    if not finals:
        return out
    best = max(finals, key=lambda k: finals[k]["recall@1"])
    b = result["bm25"]["recall@1"]
    r = finals[best]["recall@1"]
    out.append(f"tool tokens ({best} init) {'beat' if r > b else 'do NOT beat'} BM25 at Recall@1: {r:.3f} vs {b:.3f}")
    if "bm25_sentences" in result:
        s = result["bm25_sentences"]["recall@1"]
        out.append(f"tool tokens ({best} init) {'beat' if r > s else 'do NOT beat'} BM25 per sentence at Recall@1: "
                   f"{r:.3f} vs {s:.3f}")
    if "random" in finals:
        for init in ("description", "hidden"):
            if init in finals:
                a, z = finals[init]["recall@1"], finals["random"]["recall@1"]
                out.append(f"{init} init {'beats' if a > z else 'does NOT beat'} random init at the same budget "
                           f"(Recall@1 {a:.3f} vs {z:.3f})")
    return out


def format_table(result: Mapping[str, Any]) -> str:
    """Markdown table: BM25 and every init strategy, before and after training, and the RRF
    hybrid of BM25 with the trained tool tokens."""
    lines = ["| method | Recall@1 | Recall@5 | NDCG@5 |", "|---|---|---|---|"]
    b = result["bm25"]
    lines.append(f"| BM25 (bm25s) | {b['recall@1']:.3f} | {b['recall@5']:.3f} | {b['ndcg@5']:.3f} |")
    if "bm25_sentences" in result:
        b = result["bm25_sentences"]
        lines.append(f"| BM25, best sentence | {b['recall@1']:.3f} | {b['recall@5']:.3f} | {b['ndcg@5']:.3f} |")
    cfg = result["config"]
    steps, layers, rank = cfg["steps"], cfg.get("train_layers", 0), cfg.get("lora_rank", 0)
    what = f", top {layers} layers{f' (LoRA r={rank})' if rank else ''}" if layers else ""
    what += ", best sentence" if layers and cfg.get("rank") == "sentences" else ""
    for init, r in result["inits"].items():
        last = int(r["history"][-1]["step"]) if r.get("history") else steps
        rows = [(f"tool tokens{what}, {init} init, step 0", r["initial"]),
                (f"tool tokens{what}, {init} init, step {last}", r["final"])]
        if "rrf_bm25" in r:
            rows.append((f"RRF(BM25, tool tokens{what}, {init} init)", r["rrf_bm25"]))
        lines += [f"| {name} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | {m['ndcg@5']:.3f} |" for name, m in rows]
    return "\n".join(lines)


def plot_history(result: Mapping[str, Any], path: PathLike) -> Path:
    """PNG: Recall@1, Recall@5 and NDCG@5 vs training step, one line per init, BM25 dashed."""
    metrics = ("recall@1", "recall@5", "ndcg@5")
    fig = Figure(figsize=(15, 4.2))  # no pyplot: no GUI backend, no global state
    axes = fig.subplots(1, 3)
    for ax, metric in zip(axes, metrics):
        for init, r in result["inits"].items():
            steps = [h["step"] for h in r["history"]]
            ax.plot(steps, [h[metric] for h in r["history"]], marker=".", label=f"{init} init")
        ax.axhline(result["bm25"][metric], color="black", linestyle="--", label="BM25")
        ax.set_xlabel("training step")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"tool-token retrieval: {result['n_tools']} tools, {result['n_train_queries']} training / "
                 f"{result['n_test_queries']} test queries", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def write_result(result: Mapping[str, Any], out_dir: PathLike, name: str = "retrieval") -> tuple[Path, Path]:
    """`<out_dir>/<name>.json` and `<out_dir>/<name>.png`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / f"{name}.json"
    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, js)
    return js, plot_history(result, out / f"{name}.png")
