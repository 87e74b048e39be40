"""The tool-retrieval experiment behind `toolken eval retrieval` and `toolken demo`.

Question: after `toolken.extend`, does the model's next token after a user query name the right
tool, and how does that depend on how the tool rows were initialized? Every init strategy gets
the same budget; BM25 on the same split is the baseline (benchmarks/README.md, tool-token quality),
and reciprocal-rank fusion of BM25 with the tool tokens (Cormack et al. 2009) a hybrid row.

``train_layers = 0`` trains the output tool rows on cached final hidden states (`row_training`);
``train_layers = K > 0`` trains the top K layers too (fully, or LoRA of rank ``lora_rank``) with
the final norm, on cached states entering layer L - K (`toolken.top_layers`). The ``tool2vec``
init is the ``description`` init plus Tool2Vec usage vectors (arXiv:2409.02141) from the
training queries; the ``centroid`` init (the default) sets each output row to the centroid of
its memorization prompts' final hidden states (`toolken.top_layers.centroid_rows`).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from ..data import synthetic_requests
from ..sentences import sentence_requests, split_sentences
from ..errors import ToolkenError
from ..extension import extend
from ..generation import best_sentence_scores
from ..init import STRATEGIES
from ..loss import logit_scale
from ..registry import find_registry
from ..tools import PathLike, ToolSet
from ..activations import ActivationCache, LayerStates, decoder_layers, encode_layer_states, final_hidden, template_prefix_len
from ..top_layers import (DISTILL, EPOCHS, MEMORIZATION, SYNTHETIC_ROUNDS, SYNTHETIC_SPLIT, SYNTHETIC_STYLE, TRAIN_LAYERS,
                          centroid_rows, fit_row_scale, tool2vec_rows, train_tool_tokens)
from .cache import HiddenStateCache, default_cache_dir, encode_retrieval_prompts, model_fingerprint, user_prompt
from .metrics import bm25_rankings, bm25_teacher, hit_rate_by_size, retrieval_metrics
from .queries import Query, unknown_gold
from .report import format_by_size, format_metrics, metrics_of, verdict
from .row_training import DEFAULT_LR, RowTrainingData, build_training_data, rank_tools, tool_row_handles, train_tool_rows


@dataclass
class ExperimentConfig:
    """Budget and knobs shared by every init strategy (the same for all, so they compare)."""

    inits: Sequence[str] = ("centroid",)
    steps: Optional[int] = None    # optimizer steps (None: 300 for the rows alone, `epochs` with layers)
    lr: float = DEFAULT_LR
    batch_size: int = 1024
    eval_every: int = 300   # scoring 700 test queries (2,400 sentences) through the top layers costs about 30 s on 2 cores
    prior_lambda: float = 0.0
    seed: int = 0
    forward_batch_size: int = 32
    memorization: Sequence[str] = MEMORIZATION  # toolken.data.MEMORIZATION_PHRASINGS; () = none
    cache_dir: Optional[PathLike] = None
    show_progress: bool = True
    train_layers: int = TRAIN_LAYERS  # K top decoder layers trained with the rows (0: the rows alone)
    lora_rank: int = 0             # with train_layers: 0 = the K layers fully, r = LoRA of rank r
    layer_lr: Optional[float] = None  # with train_layers: lr of the layers (None: toolken.top_layers' default)
    layer_batch_size: int = 32     # with train_layers: examples per step (`batch_size` is the rows-only one)
    epochs: float = EPOCHS         # with train_layers, when `steps` is None
    synthetic: int = SYNTHETIC_ROUNDS  # with train_layers: rounds of synthetic multi-intent requests
    synthetic_style: str = SYNTHETIC_STYLE  # their parts: "query" or "description" (toolken.data.request_phrase)
    synthetic_split: bool = SYNTHETIC_SPLIT  # each part its own example, or whole multi-intent requests
    distill: float = DISTILL       # with train_layers: weight of BM25's soft ranking (`bm25_teacher`); 0: none
    loss: str = "tools"            # with train_layers: `toolken.top_layers.tool_loss`'s "tools" or "vocab"
    rank: Optional[str] = None     # "sentences": each test sentence apart, a tool's best; "query": whole (None: sentences with layers)
    sentences: bool = False        # with train_layers: also train on the training queries' labelled sentences (README: no gain)


#: init strategies of the experiment: `toolken.extend`'s, ``tool2vec`` (description + usage vectors)
#: and ``centroid`` (`toolken.top_layers.centroid_rows` of the memorization prompts); the last two
#: extend with ``description`` (the input rows) and then set the output rows
INITS = (*STRATEGIES, "tool2vec", "centroid")
ROW_INITS = ("tool2vec", "centroid")
ROW_STEPS = 300  # steps of the rows-only path (batches of 1,024 cached hidden states)
RRF_K = 60      # the constant of reciprocal-rank fusion (Cormack et al. 2009)
RRF_DEPTH = 50  # how many tools of each ranking are fused
RANKS = ("sentences", "query")  # how a test query is scored: each sentence apart, best per tool; or whole


def rrf(rankings: Sequence[Sequence[Sequence[str]]], k: int = RRF_K, top: int = 5) -> list[list[str]]:
    """Reciprocal-rank fusion per query: tool t scores the sum over rankings of 1 / (k + rank)."""
    fused = []
    for per_query in zip(*rankings):
        score: dict[str, float] = {}
        for ranked in per_query:
            for r, name in enumerate(ranked, start=1):
                score[name] = score.get(name, 0.0) + 1.0 / (k + r)
        fused.append(sorted(score, key=lambda n: -score[n])[:top])
    return fused


def check_config(config: ExperimentConfig) -> None:
    """`ToolkenError` naming the field, for options no run can use."""
    for init in config.inits:
        if init not in INITS:
            raise ToolkenError(f"inits: unknown init strategy {init!r}; choose from {', '.join(INITS)}")
    if "centroid" in config.inits and not config.memorization:
        raise ToolkenError("inits: 'centroid' builds the rows from the memorization prompts; it needs memorization phrasings")
    if not isinstance(config.train_layers, int) or config.train_layers < 0:
        raise ToolkenError(f"train_layers must be a non-negative integer, got {config.train_layers!r}")
    if not isinstance(config.lora_rank, int) or config.lora_rank < 0 or (config.lora_rank and not config.train_layers):
        raise ToolkenError(f"lora_rank must be 0, or a positive integer with train_layers > 0; got {config.lora_rank!r}")
    if config.rank is not None and config.rank not in RANKS:
        raise ToolkenError(f"rank must be one of {', '.join(RANKS)}, got {config.rank!r}")
    if config.rank == "sentences" and not config.train_layers:
        raise ToolkenError("rank='sentences' needs train_layers > 0; the rows-only path (train_layers=0) ranks whole queries")


def rank_of(config: ExperimentConfig) -> str:
    """``config.rank``, or its default: each sentence apart with trained layers, else the whole query."""
    return config.rank or ("sentences" if config.train_layers else "query")


def run_retrieval_experiment(model: Any, tokenizer: Any, tools: ToolSet, train: Sequence[Query],
                             test: Sequence[Query], config: Optional[ExperimentConfig] = None,
                             log: Callable[[str], None] = print,
                             on_init_done: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """For each init strategy, extend a copy of the frozen `model` with `tools`,
    train the output tool rows (and, with ``config.train_layers``, the top layers) on
    memorization + retrieval(`train`) at the same budget, and score tool-token retrieval on
    `test` (every `eval_every` steps) next to BM25 and RRF(BM25, tool tokens).

    The base model is never changed. Returns the JSON-able result (see `write_result`);
    `on_init_done` gets the partial result after each init strategy (to save long runs as they go)."""
    config = config or ExperimentConfig()
    check_config(config)
    config = dataclasses.replace(config, rank=rank_of(config))
    if find_registry(model) is not None:
        raise ToolkenError("pass the base model (not yet extended): every init strategy extends its own copy")
    t_start = time.perf_counter()
    cache_dir = default_cache_dir() if config.cache_dir is None else config.cache_dir
    result: dict[str, Any] = {
        "experiment": "tool retrieval (benchmarks/README.md)",
        "model": getattr(model.config, "_name_or_path", "") or type(model).__name__,
        "model_fingerprint": model_fingerprint(model),
        "n_tools": len(tools), "n_train_queries": len(train), "n_test_queries": len(test),
        "unknown_gold": {"train": unknown_gold(train, tools), "test": unknown_gold(test, tools)},
        "config": {k: (str(v) if k == "cache_dir" else (list(v) if isinstance(v, tuple) else v))
                   for k, v in vars(config).items() if k != "show_progress"},
        "torch_threads": torch.get_num_threads(),
        "timing_s": {},
        "inits": {},
    }
    runs = train_top_layers if config.train_layers else train_rows
    for init, entry in runs(model, tokenizer, tools, train, test, config, cache_dir or None, result, log):
        result["inits"][init] = entry
        if on_init_done is not None:
            result["verdict"] = verdict(result)
            on_init_done(result)
    result["timing_s"]["total"] = time.perf_counter() - t_start
    result["verdict"] = verdict(result)
    return result


def baseline(tools: ToolSet, test: Sequence[Query], result: dict[str, Any], log: Callable[[str], None]) -> list:
    """BM25 on `test` into `result` (metrics, time); returns its rankings for the RRF hybrid."""
    t0 = time.perf_counter()
    result["bm25"] = retrieval_metrics(bm25_rankings(tools, [q.text for q in test], k=5), test)
    result["timing_s"]["bm25"] = time.perf_counter() - t0
    ranked = bm25_rankings(tools, [q.text for q in test], k=RRF_DEPTH)
    result["bm25_by_size"] = hit_rate_by_size(ranked, test)
    log("BM25: " + format_metrics(result["bm25"]) + " | " + format_by_size(result["bm25_by_size"]))
    per_sentence = bm25_rankings(tools, [q.text for q in test], k=5, per_sentence=True)
    result["bm25_sentences"] = retrieval_metrics(per_sentence, test)
    log("BM25 per sentence: " + format_metrics(result["bm25_sentences"]) + " | "
        + format_by_size(hit_rate_by_size(per_sentence, test)))
    return ranked


def finish(init: str, history: list[dict[str, float]], ranked: list, bm25: list, test: Sequence[Query],
           log: Callable[[str], None], **extra: Any) -> dict[str, Any]:
    """One init's result entry: metrics before/after, the history, RRF(BM25, tool tokens)."""
    entry = {"initial": metrics_of(history[0]), "final": metrics_of(history[-1]), "history": history,
             "rrf_bm25": retrieval_metrics(rrf([bm25, ranked]), test), "final_by_size": hit_rate_by_size(ranked, test),
             **extra}
    log(f"{init:>11} init: before " + format_metrics(history[0]) + " | after " + format_metrics(history[-1])
        + " | " + format_by_size(entry["final_by_size"]) + " | RRF with BM25 " + format_metrics(entry["rrf_bm25"]))
    return entry


def train_rows(model: Any, tokenizer: Any, tools: ToolSet, train: Sequence[Query], test: Sequence[Query],
               config: ExperimentConfig, cache_dir: Optional[PathLike], result: dict[str, Any],
               log: Callable[[str], None]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``train_layers = 0``: the output tool rows on cached final hidden states of the frozen
    model (`row_training`); yields (init, result entry) per init."""
    cache = HiddenStateCache(cache_dir, model_fingerprint(model))
    log(f"hidden-state cache: {cache.folder or 'in memory'} ({len(cache)} prompts cached)")
    t0 = time.perf_counter()
    sp = config.show_progress
    mem_hidden, train_hidden, test_hidden = encode_retrieval_prompts(
        model, tokenizer, tools, train, test, config.memorization, cache, batch_size=config.forward_batch_size,
        show_progress=sp)
    result["timing_s"]["forward_passes"] = time.perf_counter() - t0
    bm25 = baseline(tools, test, result, log)
    data: Optional[RowTrainingData] = None
    for init in config.inits:
        t0 = time.perf_counter()
        m = copy.deepcopy(model)
        tok = copy.deepcopy(tokenizer)
        extend(m, tok, tools, init="description" if init in ROW_INITS else init, seed=config.seed, show_progress=sp)
        rows, bias, _ = tool_row_handles(m)
        known = known_queries(train, tools)
        with torch.no_grad():
            if init == "tool2vec":
                rows.copy_(tool2vec_rows(train_hidden[[i for i, _ in known]], [t for _, t in known], rows))
            if init == "centroid":  # the memorization blocks, one per phrasing, name every tool in order
                tool_of = torch.arange(len(tools)).repeat(len(config.memorization))
                unit = centroid_rows(mem_hidden, tool_of, len(tools), rows)
                fit = (train_hidden[[i for i, _ in known]], torch.tensor([t[0] for _, t in known])) if known else \
                      (mem_hidden, tool_of)
                rows.copy_(unit * fit_row_scale(fit[0] * logit_scale(m), unit, fit[1]))
        extend_s = time.perf_counter() - t0
        if data is None:  # the frozen non-tool logits are the same for every init
            data = build_training_data(m, tools, mem_hidden, train_hidden, train)
        prior_rows = rows.detach().clone()

        def evaluate(rows: Any = rows, bias: Any = bias) -> dict[str, float]:
            return retrieval_metrics(rank_tools(rows, test_hidden, tools.names, 5, bias), test)

        t0 = time.perf_counter()
        history = train_tool_rows(rows, data, steps=config.steps or ROW_STEPS, lr=config.lr, batch_size=config.batch_size,
                                  prior=prior_rows, prior_lambda=config.prior_lambda, bias=bias, seed=config.seed,
                                  evaluate=evaluate, eval_every=config.eval_every, show_progress=sp,
                                  desc=f"train ({init} init)")
        train_s = time.perf_counter() - t0
        ranked = rank_tools(rows, test_hidden, tools.names, RRF_DEPTH, bias)
        del m, tok
        yield init, finish(init, history, ranked, bm25, test, log, extend_s=extend_s, train_s=train_s,
                           n_examples=len(data))


def known_queries(queries: Sequence[Query], tools: ToolSet) -> list[tuple[int, list[int]]]:
    """(query index, tool indices) of the queries calling at least one of `tools`, unknown tools
    left out (they are reported by `unknown_gold` and count as misses)."""
    index = {n: i for i, n in enumerate(tools.names)}
    out = [(qi, [index[n] for n in q.gold if n in index]) for qi, q in enumerate(queries)]
    return [(qi, ts) for qi, ts in out if ts]


def train_top_layers(model: Any, tokenizer: Any, tools: ToolSet, train: Sequence[Query], test: Sequence[Query],
                     config: ExperimentConfig, cache_dir: Optional[PathLike], result: dict[str, Any],
                     log: Callable[[str], None]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``train_layers = K > 0``: `train_extended` on each init's extended copy; yields (init,
    result entry) per init."""
    cache = ActivationCache(cache_dir)
    log(f"activation cache: {cache.directory or 'in memory'}")
    bm25 = baseline(tools, test, result, log)
    teacher = bm25_teacher(tools) if config.distill else None
    for init in config.inits:
        t0 = time.perf_counter()
        m = copy.deepcopy(model)
        tok = copy.deepcopy(tokenizer)
        extend(m, tok, tools, init="description" if init in ROW_INITS else init, seed=config.seed,
               show_progress=config.show_progress)
        extend_s = time.perf_counter() - t0
        history, scored, train_s = train_extended(m, tok, tools, train, test, config, cache, teacher,
                                                  row_init=init if init in ROW_INITS else None, timing=result["timing_s"])
        n_examples = (len(training_pairs(train, tools, config.sentences)) + len(tools) * len(config.memorization)
                      + len(synthetic_requests(list(tools), config.synthetic, config.seed, config.synthetic_style,
                                               config.synthetic_split)))
        entry = finish(init, history, rank_by_states(m, scored, tools, RRF_DEPTH), bm25, test, log,
                       extend_s=extend_s, train_s=train_s, n_examples=n_examples)
        del m, tok
        yield init, entry


def training_pairs(train: Sequence[Query], tools: ToolSet, sentences: bool) -> list[tuple[str, list[str]]]:
    """``(text, tool names)`` to train on: each training query with its known tools, then (with
    `sentences`) each labelled sentence of the queries that give their calls' arguments
    (`toolken.sentences.sentence_requests`; tools not in `tools` are not labels)."""
    pairs = [(train[qi].text, [tools.names[t] for t in ts]) for qi, ts in known_queries(train, tools)]
    if sentences:
        for q in train:
            pairs += [(text, [name]) for text, name in
                      sentence_requests(q.text, [(n, a) for n, a in q.calls if n in tools])]
    return pairs


@dataclass
class ScoredPrompts:
    """The test prompts' cached states entering layer L - K, and the test query each prompt is
    (``rank="query"``) or is a sentence of (``rank="sentences"``)."""

    states: LayerStates
    owner: list[int]


def eval_prompts(tokenizer: Any, test: Sequence[Query], rank: str) -> tuple[list[list[int]], list[int]]:
    """Prompt ids and their query's index: one per query, or one per sentence
    (`toolken.sentences.split_sentences`) — the prompts `toolken.retrieve` runs, ``per_sentence`` or not."""
    texts = [(i, s) for i, q in enumerate(test) for s in (split_sentences(q.text) if rank == "sentences" else [q.text])]
    return [user_prompt(tokenizer, s) for _, s in texts], [i for i, _ in texts]


def train_extended(model: Any, tokenizer: Any, tools: ToolSet, train: Sequence[Query], test: Sequence[Query],
                   config: ExperimentConfig, cache: ActivationCache, teacher: Any = None, row_init: Optional[str] = None,
                   timing: Optional[dict[str, float]] = None) -> tuple[list[dict[str, float]], Optional[ScoredPrompts], float]:
    """`toolken.train_tool_tokens` on a model already extended with `tools`, trained in place
    (`row_init`: its ``init``; None keeps the rows `toolken.extend` gave); the test queries are
    scored from their cached states entering layer L - K (the ranking of `toolken.retrieve`, per
    sentence with ``config.rank == "sentences"``) at step 0, every ``config.eval_every`` steps and
    at the end. Returns (history, the scored test prompts or None without test queries, training
    seconds)."""
    n_layers = len(decoder_layers(model).layers)
    if config.train_layers > n_layers:
        raise ToolkenError(f"train_layers must be at most the model's {n_layers} layers, got {config.train_layers}")
    pairs = training_pairs(train, tools, config.sentences)
    t0 = time.perf_counter()
    history: list[dict[str, float]] = []
    scored = None
    if test:  # without test queries the history holds the losses alone
        prompts, owner = eval_prompts(tokenizer, test, rank_of(config))
        scored = ScoredPrompts(encode_layer_states(model, prompts, n_layers - config.train_layers, cache,
                                                   prefix_len=template_prefix_len(tokenizer),
                                                   show_progress=config.show_progress), owner)
    if timing is not None:
        timing.setdefault("test_states", time.perf_counter() - t0)
    evaluate = (functools.partial(record_step, history, scored, tools, test) if scored is not None
                else lambda step, loss, m: history.append({"step": float(step), "loss": loss}))
    t0 = time.perf_counter()
    train_tool_tokens(model, tokenizer, pairs, train_layers=config.train_layers, lora_rank=config.lora_rank,
                      memorization=config.memorization, init=row_init,
                      synthetic=config.synthetic, synthetic_style=config.synthetic_style,
                      synthetic_split=config.synthetic_split, loss=config.loss,
                      teacher=teacher, distill=config.distill,
                      epochs=config.epochs, max_steps=config.steps, batch_size=config.layer_batch_size, lr=config.lr,
                      layer_lr=config.layer_lr, cache_dir=cache, seed=config.seed, evaluate=evaluate,
                      eval_every=config.eval_every, show_progress=config.show_progress)
    return history, scored, time.perf_counter() - t0


def rank_by_states(model: Any, scored: ScoredPrompts, tools: ToolSet, k: int) -> list[list[str]]:
    """Top-k tools per test query from its prompts' cached states through the model's top layers:
    the order of `toolken.retrieve`'s log-probabilities (a tool's best over a query's sentences,
    each renormalized over the tools, when a query has several prompts)."""
    rows, bias, _ = tool_row_handles(model)
    with torch.no_grad():
        hidden = final_hidden(model, scored.states) * logit_scale(model)
        logits = torch.nn.functional.linear(hidden.float(), rows.detach().float(), None if bias is None else bias.float())
        if len(set(scored.owner)) < hidden.shape[0]:  # some query has several prompts
            logits = best_sentence_scores(logits, scored.owner)
        top = logits.topk(min(k, rows.shape[0]), dim=-1).indices
    return [[tools.names[i] for i in row] for row in top.tolist()]


def record_step(history: list[dict[str, float]], scored: ScoredPrompts, tools: ToolSet, test: Sequence[Query],
                step: int, loss: float, model: Any) -> None:
    """`train_tool_tokens`' ``evaluate``: append the step's test metrics to `history`."""
    history.append({"step": float(step), "loss": loss, **retrieval_metrics(rank_by_states(model, scored, tools, 5), test)})
