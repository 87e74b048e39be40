"""The tool-retrieval experiment behind `toolken eval retrieval` and `toolken demo`.

Question: after `toolken.extend`, does the model's next token after a user query name the right
tool, and how does that depend on how the tool rows were initialized? Every init strategy gets
the same budget; BM25 on the same split is the baseline (benchmarks/README.md, tool-token quality).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from ..errors import ToolkenError
from ..extension import extend
from ..init import STRATEGIES, check_strategy
from ..loss import logit_scale
from ..registry import find_registry
from ..tools import PathLike, ToolSet
from .cache import HiddenStateCache, default_cache_dir, encode_memorization, encode_prompts, model_fingerprint, user_prompt
from .metrics import bm25_rankings, retrieval_metrics
from .queries import Query, unknown_gold
from .report import format_metrics, metrics_of, verdict
from .row_training import DEFAULT_LR, RowTrainingData, build_training_data, rank_tools, tool_row_handles, train_tool_rows


@dataclass
class ExperimentConfig:
    """Budget and knobs shared by every init strategy (the same for all, so they compare)."""

    inits: Sequence[str] = STRATEGIES
    steps: int = 300
    lr: float = DEFAULT_LR
    batch_size: int = 1024
    eval_every: int = 25
    prior_lambda: float = 0.0
    seed: int = 0
    forward_batch_size: int = 32
    memorization: Sequence[str] = ("document", "request")  # toolken.data.MEMORIZATION_PROMPTS; () = none
    cache_dir: Optional[PathLike] = None
    show_progress: bool = True


def run_retrieval_experiment(model: Any, tokenizer: Any, tools: ToolSet, train: Sequence[Query],
                             test: Sequence[Query], config: ExperimentConfig = ExperimentConfig(),
                             log: Callable[[str], None] = print,
                             on_init_done: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """For each init strategy, extend a copy of the frozen `model` with `tools`,
    train the output tool rows on memorization + retrieval(`train`) at the same budget, and
    score tool-token retrieval on `test` (every `eval_every` steps) next to BM25.

    The base model is never changed. Returns the JSON-able result (see `write_result`);
    `on_init_done` gets the partial result after each init strategy (to save long runs as they go)."""
    for init in config.inits:
        check_strategy(init)
    if find_registry(model) is not None:
        raise ToolkenError("pass the base model (not yet extended): every init strategy extends its own copy")
    t_start = time.perf_counter()
    cache_dir = default_cache_dir() if config.cache_dir is None else config.cache_dir
    cache = HiddenStateCache(cache_dir or None, model_fingerprint(model))
    log(f"hidden-state cache: {cache.folder or 'in memory'} ({len(cache)} prompts cached)")

    t0 = time.perf_counter()
    fb, sp = config.forward_batch_size, config.show_progress
    test_hidden = encode_prompts(model, [user_prompt(tokenizer, q.text) for q in test], cache,
                                 batch_size=fb, desc="test queries", show_progress=sp) * logit_scale(model)
    train_hidden = encode_prompts(model, [user_prompt(tokenizer, q.text) for q in train], cache,
                                  batch_size=fb, desc="training queries", show_progress=sp)
    mem_hidden = encode_memorization(model, tokenizer, tools, config.memorization, cache, batch_size=fb,
                                     show_progress=sp)
    forward_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    bm25 = retrieval_metrics(bm25_rankings(tools, [q.text for q in test], k=5), test)
    bm25_s = time.perf_counter() - t0
    log("BM25: " + format_metrics(bm25))

    result: dict[str, Any] = {
        "experiment": "tool retrieval (benchmarks/README.md)",
        "model": getattr(model.config, "_name_or_path", "") or type(model).__name__,
        "model_fingerprint": model_fingerprint(model),
        "n_tools": len(tools), "n_train_queries": len(train), "n_test_queries": len(test),
        "unknown_gold": {"train": unknown_gold(train, tools), "test": unknown_gold(test, tools)},
        "config": {k: (str(v) if k == "cache_dir" else (list(v) if isinstance(v, tuple) else v))
                   for k, v in vars(config).items() if k != "show_progress"},
        "torch_threads": torch.get_num_threads(),
        "timing_s": {"forward_passes": forward_s, "bm25": bm25_s},
        "bm25": bm25,
        "inits": {},
    }
    data: Optional[RowTrainingData] = None
    for init in config.inits:
        t0 = time.perf_counter()
        m = copy.deepcopy(model)
        tok = copy.deepcopy(tokenizer)
        extend(m, tok, tools, init=init, seed=config.seed, show_progress=sp)
        extend_s = time.perf_counter() - t0
        rows, bias, _ = tool_row_handles(m)
        if data is None:  # the frozen non-tool logits are the same for every init
            data = build_training_data(m, tools, mem_hidden, train_hidden, train)
        prior_rows = rows.detach().clone()

        def evaluate() -> dict[str, float]:
            return retrieval_metrics(rank_tools(rows, test_hidden, tools.names, 5, bias), test)

        t0 = time.perf_counter()
        history = train_tool_rows(rows, data, steps=config.steps, lr=config.lr, batch_size=config.batch_size,
                                  prior=prior_rows, prior_lambda=config.prior_lambda, bias=bias, seed=config.seed,
                                  evaluate=evaluate, eval_every=config.eval_every, show_progress=sp,
                                  desc=f"train ({init} init)")
        train_s = time.perf_counter() - t0
        result["inits"][init] = {"initial": metrics_of(history[0]), "final": metrics_of(history[-1]),
                                 "history": history, "extend_s": extend_s, "train_s": train_s,
                                 "n_examples": len(data)}
        log(f"{init:>11} init: before " + format_metrics(history[0]) + " | after " + format_metrics(history[-1]))
        del m, tok
        if on_init_done is not None:
            result["verdict"] = verdict(result)
            on_init_done(result)
    result["timing_s"]["total"] = time.perf_counter() - t_start
    result["verdict"] = verdict(result)
    return result
