"""Training the OUTPUT tool rows on cached hidden states of the frozen model.

The training of ToolkenGPT (Hao et al. 2023, "ToolkenGPT: Augmenting Frozen Language Models with
Massive Tools via Tool Embeddings") and of Re-Initialization Token Learning (Li et al. 2025,
arXiv:2506.14248): frozen LM, one forward pass per example, only the tool embeddings learn, here
with `toolken.kernels.fused_linear_weighted_cross_entropy` over the full vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import DataError, ToolkenError
from ..kernels import fused_linear_weighted_cross_entropy
from ..loss import logit_scale
from ..registry import find_registry, registry
from ..rows import prior_distance, tool_rows
from ..tools import ToolSet
from .queries import Query


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
            loss = loss + prior_lambda * prior_distance(rows, prior)
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


def tool_row_handles(model: Any) -> tuple[torch.nn.Parameter, Optional[torch.Tensor], torch.Tensor]:
    """(trainable output tool rows in registry order, their LM-head bias, all tool token ids).

    With tied embeddings (SmolLM2) the output rows ARE the input rows: training them also moves
    the embedding the model reads when a tool token is in its input (e.g. before the arguments).
    """
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
    reg = find_registry(model)
    ids = torch.tensor(reg.tool_token_ids, dtype=torch.long) if reg is not None else torch.zeros(0, dtype=torch.long)
    lse = base_logsumexp(hidden, head.weight, ids, getattr(head, "bias", None))
    return RowTrainingData(hidden, lse, torch.tensor(targets, dtype=torch.long), torch.tensor(weights, dtype=torch.float32))
