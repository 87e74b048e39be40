"""The tool-retrieval experiment behind `toolken eval retrieval` and `toolken demo`.

Question: after `toolken.extend`, does the model's next token after a user query name the right
tool, and how does that depend on how the tool rows were initialized? Pieces, one place each:

- loaders: tools (OpenAI JSON or Seal-Tools ``tool.jsonl[.gz]``) and queries in two formats,
  Seal-Tools ``{"query", "calling": [{"api", ...}]}`` and OpenAI chat
  ``{"messages": [..., {"role": "assistant", "tool_calls": [...]}]}``;
- metrics (`recall_at_k`, `ndcg_at_k`) and the BM25 baseline (`bm25s`);
- `HiddenStateCache` + `encode_prompts`: the final (normed) hidden state at the last prompt
  position of the frozen base model, cached on disk by model fingerprint and prompt token ids;
- `train_tool_rows`: trains only the OUTPUT tool rows on those cached states with
  `toolken.kernels.fused_linear_weighted_cross_entropy` — the training of ToolkenGPT (Hao et al.
  2023, "ToolkenGPT: Augmenting Frozen Language Models with Massive Tools via Tool Embeddings")
  and of Re-Initialization Token Learning (Li et al. 2025, arXiv:2506.14248): frozen LM, one
  forward pass per example, only the tool embeddings learn;
- `run_retrieval_experiment`, `write_result`, `plot_history`.

Metrics (per query, then averaged over queries; gold = the distinct tools the query calls):
Recall@k = |gold ∩ top-k| / |gold| (so a query with 3 gold tools scores at most 1/3 at k=1);
NDCG@k with binary relevance, DCG = Σ_{i<k, top[i] ∈ gold} 1/log2(i+2), normalized by the DCG of
an ideal ranking that puts min(|gold|, k) gold tools first. Gold tools that are not in the tool
set stay in the denominator (they count as misses) and are reported in the result.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch

from .errors import DataError, ToolkenError
from .tools import ToolSet
from .loss import logit_scale

PathLike = Union[str, "os.PathLike[str]"]
INIT_STRATEGIES = ("random", "mean", "name", "description", "hidden")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """One retrieval query: its text and the distinct tools it calls, in call order."""

    id: str
    text: str
    gold: tuple[str, ...]


def _read_records(path: PathLike) -> list[Any]:
    """A JSON document (list, or one object) or JSON Lines, optionally gzipped."""
    from .errors import ToolSpecError
    from .tools import load_json_records

    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    try:
        return load_json_records(path)
    except ToolSpecError as e:  # the reader is shared with the tool loaders
        raise DataError(str(e)) from None


def _query_from_record(rec: Any, where: str) -> Query:
    if not isinstance(rec, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    rid = str(rec.get("id", where))
    if "calling" in rec:  # Seal-Tools
        calls = rec["calling"]
        if not isinstance(calls, list) or not all(isinstance(c, Mapping) and isinstance(c.get("api"), str) for c in calls):
            raise DataError(f"{where}: 'calling' must be a list of {{'api': name, ...}} objects")
        text, names = rec.get("query"), [c["api"] for c in calls]
    elif "messages" in rec:  # OpenAI chat: the user turn before the first assistant tool call
        msgs = rec["messages"]
        if not isinstance(msgs, list):
            raise DataError(f"{where}: 'messages' must be a list of chat messages")
        text, names = None, []
        for m in msgs:
            if not isinstance(m, Mapping):
                raise DataError(f"{where}: each message must be an object with 'role' and 'content'")
            if m.get("role") == "user":
                text = m.get("content")
            elif m.get("role") == "assistant" and m.get("tool_calls"):
                names = [(c.get("function") or c).get("name") for c in m["tool_calls"]]
                break
        if not all(isinstance(n, str) for n in names):
            raise DataError(f"{where}: every tool call needs a function name")
    else:
        raise DataError(f"{where}: unknown query format; expected Seal-Tools {{'query', 'calling': "
                        f"[{{'api'}}]}} or OpenAI {{'messages': [...]}} with an assistant 'tool_calls' turn")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: no user query text (Seal-Tools 'query' or a user message before the tool call)")
    if not names:
        raise DataError(f"{where}: the query calls no tool, so it has no gold tool to retrieve")
    return Query(rid, text, tuple(dict.fromkeys(names)))


def load_queries(path: PathLike) -> list[Query]:
    """Queries from a JSON list or JSON Lines file (``.gz`` ok), Seal-Tools or OpenAI chat format."""
    return [_query_from_record(r, f"{path} record #{i}") for i, r in enumerate(_read_records(path))]


def load_tools(path: PathLike) -> ToolSet:
    """Tools from an OpenAI-format JSON file (a list of specs) or a Seal-Tools ``tool.jsonl[.gz]``
    (recognized by its ``api_name`` field)."""
    records = _read_records(path)
    if isinstance(records, list) and records and isinstance(records[0], Mapping) and "api_name" in records[0]:
        return ToolSet.from_seal_tools(records)
    if len(records) == 1 and isinstance(records[0], Mapping) and "tools" in records[0]:
        records = records[0]["tools"]
    return ToolSet.from_openai(records)


def unknown_gold(queries: Sequence[Query], tools: ToolSet) -> list[dict]:
    """Queries naming tools that are not in `tools`, as ``{"id", "unknown": [...]}`` (reported in
    the result; those gold tools count as misses, never silently dropped)."""
    return [{"id": q.id, "unknown": [n for n in q.gold if n not in tools]}
            for q in queries if any(n not in tools for n in q.gold)]


# ---------------------------------------------------------------------------------------------
# metrics and BM25
# ---------------------------------------------------------------------------------------------
def recall_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    """Share of the gold tools found in the top k."""
    g = set(gold)
    if not g:
        raise DataError("recall_at_k: a query needs at least one gold tool")
    return len(g.intersection(ranked[:k])) / len(g)


def ndcg_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    """NDCG@k with binary relevance (see the module docstring)."""
    g = set(gold)
    if not g:
        raise DataError("ndcg_at_k: a query needs at least one gold tool")
    dcg = sum(1.0 / math.log2(i + 2) for i, t in enumerate(ranked[:k]) if t in g)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(g), k)))
    return dcg / ideal


def retrieval_metrics(rankings: Sequence[Sequence[str]], queries: Sequence[Query]) -> dict[str, float]:
    """Recall@1, Recall@5 and NDCG@5 averaged over queries."""
    if len(rankings) != len(queries):
        raise ValueError(f"{len(rankings)} rankings for {len(queries)} queries")
    if not queries:
        raise DataError("no queries to evaluate")
    n = len(queries)
    return {
        "recall@1": sum(recall_at_k(r, q.gold, 1) for r, q in zip(rankings, queries)) / n,
        "recall@5": sum(recall_at_k(r, q.gold, 5) for r, q in zip(rankings, queries)) / n,
        "ndcg@5": sum(ndcg_at_k(r, q.gold, 5) for r, q in zip(rankings, queries)) / n,
    }


def tool_document(tool: Any) -> str:
    """What BM25 indexes for a tool: the name split into words (camelCase, snake_case) plus the
    description — the same information memorization training gives the tool token."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", tool.name).replace("_", " ")
    return f"{words} {tool.description}"


def bm25_rankings(tools: ToolSet, texts: Sequence[str], k: int = 5) -> list[list[str]]:
    """Top-k tool names per text by BM25 (`bm25s`, Lucene scoring, English stop words)."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([tool_document(t) for t in tools], stopwords="en", show_progress=False),
                    show_progress=False)
    docs, _ = retriever.retrieve(bm25s.tokenize(list(texts), stopwords="en", show_progress=False),
                                 k=min(k, len(tools)), show_progress=False)
    names = tools.names
    return [[names[int(i)] for i in row] for row in docs]


# ---------------------------------------------------------------------------------------------
# cached hidden states of the frozen model
# ---------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$TOOLKEN_CACHE`` or ``~/.cache/toolken``; hidden states go to its ``hidden/`` folder."""
    return Path(os.environ.get("TOOLKEN_CACHE") or Path.home() / ".cache" / "toolken")


def model_fingerprint(model: Any) -> str:
    """A key for "this model's weights": its config plus a strided sample of every parameter
    (cheap, and any real change of weights changes it). Tool rows of an extended model are
    left out; hidden states of prompts without tool tokens do not depend on them."""
    h = hashlib.sha256()
    cfg = model.config.to_dict()
    for key in ("toolken", "_name_or_path", "transformers_version"):
        cfg.pop(key, None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("toolken_rows."):
                continue
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 256)].float().cpu()
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:20]


class HiddenStateCache:
    """Last-position hidden states on disk, one folder per model fingerprint, keyed by the prompt's
    token ids. Writes are new shard files renamed into place, so concurrent or interrupted runs
    never leave a half-written entry. `directory=None` keeps everything in memory."""

    def __init__(self, directory: Optional[PathLike], model_key: str) -> None:
        self.folder = None if directory is None else Path(directory) / "hidden" / model_key
        self._rows: dict[str, torch.Tensor] = {}
        if self.folder is not None and self.folder.is_dir():
            for shard in sorted(self.folder.glob("*.pt")):
                try:
                    data = torch.load(shard, weights_only=True)
                    self._rows.update(zip(data["keys"], data["hidden"]))
                except Exception:  # a corrupt shard is only a cache miss
                    continue

    @staticmethod
    def key(token_ids: Sequence[int]) -> str:
        return hashlib.sha1(json.dumps(list(token_ids)).encode()).hexdigest()

    def get(self, key: str) -> Optional[torch.Tensor]:
        return self._rows.get(key)

    def put(self, keys: Sequence[str], hidden: torch.Tensor) -> None:
        hidden = hidden.detach().float().cpu().contiguous()
        self._rows.update(zip(keys, hidden))
        if self.folder is None or not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{uuid.uuid4().hex}.tmp"
        torch.save({"keys": list(keys), "hidden": hidden}, tmp)
        os.replace(tmp, self.folder / f"{uuid.uuid4().hex}.pt")

    def __len__(self) -> int:
        return len(self._rows)


def _decoder(model: Any) -> Any:
    dec = model.get_decoder() if hasattr(model, "get_decoder") else None
    if dec is None or dec is model:
        raise ToolkenError(f"{type(model).__name__} exposes no decoder stack (get_decoder()); "
                           "cannot compute final hidden states without the LM head")
    return dec


def encode_prompts(model: Any, prompts: Sequence[Sequence[int]], cache: HiddenStateCache, *,
                   batch_size: int = 32, desc: str = "forward", show_progress: bool = True) -> torch.Tensor:
    """Final (normed) hidden state at the last position of each prompt, [n, d] float32.

    Cached prompts are not recomputed. The rest run through the frozen decoder in length-sorted,
    right-padded batches: the last real position never attends to the padding after it, so no
    attention mask is needed. The prefix every uncached prompt shares (the chat template's system
    turn and user header) runs once; each batch continues from a copy of its KV cache. (Measured
    with SmolLM2-135M on one thread: batches of 32 memorization prompts, 26 of whose 48 tokens
    are the shared prefix, ran 2x faster than without the prefix cache.)
    """
    from tqdm.auto import tqdm

    from .init import right_pad

    keys = [cache.key(p) for p in prompts]
    missing = sorted({k: i for i, k in enumerate(keys) if cache.get(k) is None}.values(), key=lambda i: len(prompts[i]))
    if missing:
        if any(len(prompts[i]) == 0 for i in missing):
            raise DataError("an empty prompt cannot be encoded")
        dec = _decoder(model)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                prefix = _SharedPrefix(dec, [prompts[i] for i in missing], device)
                batches = [missing[i:i + batch_size] for i in range(0, len(missing), batch_size)]
                for batch in tqdm(batches, desc=f"toolken: {desc}", disable=not show_progress, unit="batch"):
                    seqs = [list(prompts[i][prefix.length:]) for i in batch]
                    ids, _ = right_pad(seqs)
                    out = prefix.forward(ids.to(device))
                    last = torch.tensor([len(s) - 1 for s in seqs], device=out.device)
                    cache.put([keys[i] for i in batch], out[torch.arange(len(seqs), device=out.device), last])
        finally:
            model.train(was_training)
    if not keys:
        return torch.zeros(0, model.config.get_text_config().hidden_size)
    return torch.stack([cache.get(k) for k in keys])


class _SharedPrefix:
    """The longest token prefix of `prompts` (leaving each at least one token of its own), run
    once through the decoder; `forward(suffix_ids)` continues every row from a copy of its KV
    cache. Prefixes under `min_length` tokens, or decoders that return no cache, fall back to
    plain forward passes (length 0)."""

    min_length = 8

    def __init__(self, decoder: Any, prompts: Sequence[Sequence[int]], device: Any) -> None:
        self.decoder, self.length, self.kv = decoder, 0, None
        first, shortest = prompts[0], min(len(p) for p in prompts)
        n = 0
        while n < shortest - 1 and all(p[n] == first[n] for p in prompts):
            n += 1
        if n < self.min_length:
            return
        # transformers >= 5 names the argument `cache`; earlier versions `past_key_values`
        self.kv_arg = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
        with torch.no_grad():
            out = decoder(input_ids=torch.tensor([list(first[:n])], device=device), use_cache=True)
        kv = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if kv is None or not hasattr(kv, "batch_repeat_interleave"):
            return
        self.length, self.kv = n, kv

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.kv is None:
            return self.decoder(input_ids=ids, use_cache=False).last_hidden_state
        kv = copy.deepcopy(self.kv)
        kv.batch_repeat_interleave(ids.shape[0])
        positions = torch.arange(self.length, self.length + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        return self.decoder(input_ids=ids, position_ids=positions, use_cache=True,
                            **{self.kv_arg: kv}).last_hidden_state


def user_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` as one user turn plus the assistant generation prompt — exactly the
    prompt `toolken.retrieve` and `toolken.generate_tool_calls` give the model."""
    from .decoding import render_prompt

    return render_prompt(tokenizer, [{"role": "user", "content": text}])


def memorization_text(tool: Any, phrasing: str = "document") -> str:
    """A user turn of ToolGen's memorization stage, as `toolken.data` writes it; `phrasing` names
    one of `toolken.data.MEMORIZATION_PROMPTS`."""
    from .data import MEMORIZATION_PROMPTS

    if phrasing not in MEMORIZATION_PROMPTS:
        raise ToolkenError(f"unknown memorization phrasing {phrasing!r}; choose from {', '.join(MEMORIZATION_PROMPTS)}")
    return MEMORIZATION_PROMPTS[phrasing].format(name=tool.name, description=tool.description)


def encode_memorization(model: Any, tokenizer: Any, tools: ToolSet, phrasings: Sequence[str],
                        cache: HiddenStateCache, *, batch_size: int = 32,
                        show_progress: bool = True) -> Optional[torch.Tensor]:
    """Hidden states of every tool's memorization prompt in each phrasing, one [n_tools, d] block
    per phrasing stacked in order (the layout `build_training_data` takes); None for none."""
    texts = [memorization_text(t, ph) for ph in phrasings for t in tools]  # checks the names first
    if not texts:
        return None
    return encode_prompts(model, [user_prompt(tokenizer, x) for x in texts], cache, batch_size=batch_size,
                          desc=f"memorization prompts ({', '.join(phrasings)})", show_progress=show_progress)


# ---------------------------------------------------------------------------------------------
# training the output tool rows on cached hidden states
# ---------------------------------------------------------------------------------------------

def base_logsumexp(hidden: torch.Tensor, weight: torch.Tensor, exclude_ids: torch.Tensor,
                   bias: Optional[torch.Tensor] = None, chunk: int = 512) -> torch.Tensor:
    """logsumexp over every output row except `exclude_ids` (the tool rows) of `hidden @ W.T + b`,
    [N], computed in chunks of `chunk` hidden states."""
    keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    keep[exclude_ids.to(weight.device)] = False
    w = weight.detach()[keep].float()
    b = None if bias is None else bias.detach()[keep].float()
    out = torch.empty(hidden.shape[0], dtype=torch.float32)
    with torch.no_grad():
        for s in range(0, hidden.shape[0], chunk):
            logits = torch.nn.functional.linear(hidden[s:s + chunk].float().to(w.device), w, b)
            out[s:s + chunk] = torch.logsumexp(logits, dim=-1).cpu()
    return out


@dataclass
class RowTrainingData:
    """Examples for `train_tool_rows`: for each, the cached hidden state, the logsumexp of the
    frozen non-tool logits, the index of the target tool (in tool-row order) and its loss weight."""

    hidden: torch.Tensor       # [N, d] float32, already multiplied by the model's logit scale
    base_lse: torch.Tensor     # [N]
    targets: torch.Tensor      # [N] long, 0..n_tools-1
    weights: torch.Tensor      # [N] float32

    def __len__(self) -> int:
        return self.targets.shape[0]


def full_vocab_loss(rows: torch.Tensor, data: RowTrainingData, bias: Optional[torch.Tensor] = None,
                    reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    """Token-weighted cross-entropy over the FULL vocabulary, differentiable w.r.t. the tool rows.

    The non-tool logits are frozen (frozen hidden states, frozen base rows), so their softmax
    mass is one number per example, `base_lse`. The fused op gets the vocabulary collapsed to
    [that mass, the tool rows]: hidden ``[h, base_lse]`` against rows ``[(0, 1), (w_t, 0)]`` gives
    logits ``[base_lse, h·w_t]``, whose cross-entropy equals the full-vocabulary one exactly
    (``logsumexp`` of a logsumexp), at the cost of n_tools + 1 rows per step instead of V.
    `bias` is the LM head bias of the tool rows (None when the head has none)."""
    from .kernels import fused_linear_weighted_cross_entropy

    n, d = rows.shape
    hidden = torch.cat([data.hidden, data.base_lse.unsqueeze(1)], dim=1)
    mass_row = torch.zeros(1, d + 1, dtype=rows.dtype, device=rows.device)
    mass_row[0, d] = 1.0
    weight = torch.cat([mass_row, torch.cat([rows, rows.new_zeros(n, 1)], dim=1)], dim=0)
    full_bias = None if bias is None else torch.cat([bias.new_zeros(1), bias])
    return fused_linear_weighted_cross_entropy(hidden.to(rows.dtype), weight, data.targets + 1, data.weights,
                                               bias=full_bias, reduction=reduction, backend=backend)


# Adam learning rate for the tool rows, chosen on a held-out 140 of Seal-Tools dev (560 training,
# all tools memorized, description init, 300 steps): Recall@1 0.191 / 0.198 / 0.145 at lr
# 1e-3 / 3e-3 / 1e-2.
DEFAULT_LR = 3e-3


def train_tool_rows(rows: torch.nn.Parameter, data: RowTrainingData, *, steps: int, lr: float = DEFAULT_LR,
                    batch_size: int = 1024, prior: Optional[torch.Tensor] = None, prior_lambda: float = 0.0,
                    bias: Optional[torch.Tensor] = None, seed: int = 0,
                    evaluate: Optional[Callable[[], dict[str, float]]] = None, eval_every: int = 0,
                    show_progress: bool = True, desc: str = "train tool rows") -> list[dict[str, float]]:
    """Adam on the output tool rows [n_tools, d] (in place) with `full_vocab_loss` on random
    mini-batches, plus Re-Init's prior regularizer ``λ·‖W − W_prior‖_F`` when `prior_lambda` > 0.

    Returns the history: ``{"step", "loss", **evaluate()}`` at step 0, every `eval_every` steps
    and at the end (loss = mean training loss since the last entry; NaN at step 0)."""
    from tqdm.auto import tqdm

    if len(data) == 0:
        raise DataError("no training examples for the tool rows")
    opt = torch.optim.Adam([rows], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []

    def record(step: int, losses: list[float]) -> None:
        entry = {"step": float(step), "loss": sum(losses) / len(losses) if losses else float("nan")}
        if evaluate is not None:
            entry.update(evaluate())
        history.append(entry)

    record(0, [])
    losses: list[float] = []
    bar = tqdm(range(1, steps + 1), desc=f"toolken: {desc}", disable=not show_progress, unit="step")
    for step in bar:
        idx = torch.randperm(len(data), generator=gen)[:batch_size]
        batch = RowTrainingData(data.hidden[idx], data.base_lse[idx], data.targets[idx], data.weights[idx])
        loss = full_vocab_loss(rows, batch, bias)
        if prior is not None and prior_lambda > 0:
            loss = loss + prior_lambda * torch.linalg.matrix_norm(rows - prior, "fro")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(step_loss=f"{losses[-1]:.3f}")
        if (eval_every and step % eval_every == 0) or step == steps:
            record(step, losses)
            losses = []
    return history


def rank_tools(rows: torch.Tensor, hidden: torch.Tensor, names: Sequence[str], k: int = 5,
               bias: Optional[torch.Tensor] = None) -> list[list[str]]:
    """Top-k tools per hidden state by tool-token logit — the order of `toolken.retrieve`'s
    log-probabilities, which share one softmax normalizer per query."""
    with torch.no_grad():
        scores = torch.nn.functional.linear(hidden.float(), rows.detach().float(), None if bias is None else bias.float())
        top = scores.topk(min(k, rows.shape[0]), dim=-1).indices
    return [[names[i] for i in row] for row in top.tolist()]


# ---------------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------------
@dataclass
class ExperimentConfig:
    """Budget and knobs shared by every init strategy (the same for all, so they compare)."""

    inits: Sequence[str] = INIT_STRATEGIES
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


def _tool_row_handles(model: Any) -> tuple[torch.nn.Parameter, Optional[torch.Tensor], torch.Tensor]:
    """(trainable output tool rows in registry order, their LM-head bias, all tool token ids).

    With tied embeddings (SmolLM2) the output rows ARE the input rows: training them also moves
    the embedding the model reads when a tool token is in its input (e.g. before the arguments).
    """
    from .extend import tool_rows
    from .registry import registry

    reg = registry(model)
    trainable = tool_rows(model)
    if trainable is None:
        raise ToolkenError("the model must be extended with trainable='tool_rows'")
    ids = torch.tensor(reg.tool_token_ids, dtype=torch.long)
    if not torch.equal(trainable.token_ids.cpu(), ids):
        raise ToolkenError("tool rows are not in registry order; re-extend the model")
    head = model.get_output_embeddings()
    bias = getattr(head, "bias", None)
    return trainable.output_rows, None if bias is None else bias.detach()[ids], ids


def build_training_data(model: Any, tools: ToolSet, mem_hidden: Optional[torch.Tensor], query_hidden: torch.Tensor,
                        queries: Sequence[Query]) -> RowTrainingData:
    """Memorization (one example per tool and phrasing, weight 1; `mem_hidden` stacks one
    [n_tools, d] block per phrasing) and retrieval (one example per (query, gold tool) pair,
    weight 1/|gold| so every query counts once) examples; gold tools outside `tools` are skipped
    here (they are reported by `unknown_gold`)."""
    index = {n: i for i, n in enumerate(tools.names)}
    hs, targets, weights = [], [], []
    if mem_hidden is not None and len(mem_hidden):
        if mem_hidden.shape[0] % len(tools):
            raise DataError(f"memorization hidden states ({mem_hidden.shape[0]}) are not whole blocks of "
                            f"one per tool ({len(tools)} tools)")
        hs.append(mem_hidden)
        targets += list(range(len(tools))) * (mem_hidden.shape[0] // len(tools))
        weights += [1.0] * mem_hidden.shape[0]
    rows = []
    for qi, q in enumerate(queries):
        known = [n for n in q.gold if n in index]
        for n in known:
            rows.append(qi)
            targets.append(index[n])
            weights.append(1.0 / len(known))
    if rows:
        hs.append(query_hidden[torch.tensor(rows)])
    if not hs:
        raise DataError("no training examples: no memorization and no training query with a known tool")
    hidden = torch.cat(hs) * logit_scale(model)
    head = model.get_output_embeddings()
    from .registry import registry

    ids = torch.tensor(registry(model).tool_token_ids, dtype=torch.long) if _is_extended(model) else torch.zeros(0, dtype=torch.long)
    lse = base_logsumexp(hidden, head.weight, ids, getattr(head, "bias", None))
    return RowTrainingData(hidden, lse, torch.tensor(targets, dtype=torch.long), torch.tensor(weights, dtype=torch.float32))


def _is_extended(model: Any) -> bool:
    from .registry import find_registry

    return find_registry(model) is not None


def run_retrieval_experiment(model: Any, tokenizer: Any, tools: ToolSet, train: Sequence[Query],
                             test: Sequence[Query], config: ExperimentConfig = ExperimentConfig(),
                             log: Callable[[str], None] = print,
                             on_init_done: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, Any]:
    """BENCHMARKS.md §6: for each init strategy, extend a copy of the frozen `model` with `tools`,
    train the output tool rows on memorization + retrieval(`train`) at the same budget, and
    score tool-token retrieval on `test` (every `eval_every` steps) next to BM25.

    The base model is never changed. Returns the JSON-able result (see `write_result`);
    `on_init_done` gets the partial result after each init strategy (to save long runs as they go)."""
    import toolken

    for init in config.inits:
        if init not in INIT_STRATEGIES:
            raise ToolkenError(f"unknown init strategy {init!r}; choose from {', '.join(INIT_STRATEGIES)}")
    if _is_extended(model):
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
    log(f"BM25: " + _fmt(bm25))

    result: dict[str, Any] = {
        "experiment": "tool retrieval (BENCHMARKS.md §6)",
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
        toolken.extend(m, tok, tools, init=init, seed=config.seed, show_progress=sp)
        extend_s = time.perf_counter() - t0
        rows, bias, _ = _tool_row_handles(m)
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
        result["inits"][init] = {"initial": _metrics_of(history[0]), "final": _metrics_of(history[-1]),
                                 "history": history, "extend_s": extend_s, "train_s": train_s,
                                 "n_examples": len(data)}
        log(f"{init:>11} init: before " + _fmt(history[0]) + " | after " + _fmt(history[-1]))
        del m, tok
        if on_init_done is not None:
            result["verdict"] = verdict(result)
            on_init_done(result)
    result["timing_s"]["total"] = time.perf_counter() - t_start
    result["verdict"] = verdict(result)
    return result


def _metrics_of(entry: Mapping[str, float]) -> dict[str, float]:
    return {k: entry[k] for k in ("recall@1", "recall@5", "ndcg@5")}


def _fmt(m: Mapping[str, float]) -> str:
    return " ".join(f"{k}={m[k]:.3f}" for k in ("recall@1", "recall@5", "ndcg@5"))


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
    if "random" in finals:
        for init in ("description", "hidden"):
            if init in finals:
                a, z = finals[init]["recall@1"], finals["random"]["recall@1"]
                out.append(f"{init} init {'beats' if a > z else 'does NOT beat'} random init at the same budget "
                           f"(Recall@1 {a:.3f} vs {z:.3f})")
    return out


def format_table(result: Mapping[str, Any]) -> str:
    """Markdown table: BM25 and every init strategy, before and after training."""
    lines = ["| method | Recall@1 | Recall@5 | NDCG@5 |", "|---|---|---|---|"]
    b = result["bm25"]
    lines.append(f"| BM25 (bm25s) | {b['recall@1']:.3f} | {b['recall@5']:.3f} | {b['ndcg@5']:.3f} |")
    steps = result["config"]["steps"]
    for init, r in result["inits"].items():
        i, f = r["initial"], r["final"]
        lines.append(f"| tool tokens, {init} init, step 0 | {i['recall@1']:.3f} | {i['recall@5']:.3f} | {i['ndcg@5']:.3f} |")
        lines.append(f"| tool tokens, {init} init, step {steps} | {f['recall@1']:.3f} | {f['recall@5']:.3f} | {f['ndcg@5']:.3f} |")
    return "\n".join(lines)


def plot_history(result: Mapping[str, Any], path: PathLike) -> Path:
    """PNG: Recall@1, Recall@5 and NDCG@5 vs training step, one line per init, BM25 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("recall@1", "recall@5", "ndcg@5")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
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
    plt.close(fig)
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


__all__ = ["Query", "load_queries", "load_tools", "unknown_gold", "recall_at_k", "ndcg_at_k",
           "retrieval_metrics", "tool_document", "bm25_rankings", "HiddenStateCache", "model_fingerprint",
           "encode_prompts", "user_prompt", "memorization_text", "encode_memorization", "base_logsumexp", "RowTrainingData",
           "full_vocab_loss", "train_tool_rows", "rank_tools", "ExperimentConfig", "build_training_data",
           "run_retrieval_experiment", "verdict", "format_table", "plot_history", "write_result",
           "default_cache_dir", "INIT_STRATEGIES"]
