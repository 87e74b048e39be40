"""PyTorch path of the fused linear + token-weighted cross-entropy.

Two things live here:

- The per-chunk math, in two passes over a chunk of logits: `chunk_stats_torch` (each row's
  log-sum-exp, label logit and logit sum) and `chunk_grad_torch` (the scaled gradient of the
  logits, written over them, from the whole-vocabulary log-sum-exp); `token_losses` turns the
  stats into losses and `cross_entropy_chunk_torch` runs all three on one process. The passes are
  separate so that vocabulary-parallel mode (`vocab_parallel.py`) can combine the stats of every
  shard between them. This is the CPU path and the oracle that the Triton kernel
  (`weighted_ce_triton.py`) is tested against; the chunk loop around it is shared and lives in
  `weighted_ce.py`.
- `reference_linear_weighted_cross_entropy`: the naive path that materializes every logit
  (`F.linear` -> `F.cross_entropy(reduction="none")` x weights). Tests and benchmarks compare the
  fused op against it.

Per-token loss, for logits z of one token with label y, vocabulary size V, label smoothing eps and
z-loss coefficient lam (PaLM's auxiliary loss lam * lse^2, also in Liger-Kernel):

    lse  = log sum_j exp(z_j)
    l    = lse - (1 - eps) * z_y - (eps / V) * sum_j z_j + lam * lse^2
    dl/dz_j = softmax(z)_j * (1 + 2 * lam * lse) - (1 - eps) * [j == y] - eps / V

which equals `F.cross_entropy(z, y, label_smoothing=eps)` plus the z-loss term.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the softmax and the loss are computed in: float64 for float64 inputs (gradcheck),
    float32 otherwise (bf16/fp16 logits are upcast)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class ChunkStats(NamedTuple):
    """Per-row statistics of a chunk of logits (all [C], in the compute dtype). On one process they
    cover the whole vocabulary; in vocabulary-parallel mode each process computes them over its
    own shard and `vocab_parallel.py` combines them across processes."""

    lse: Tensor  # log sum_j exp(z_j)
    z_label: Tensor  # the label's logit; 0 where this shard does not hold the label
    z_sum: Optional[Tensor]  # sum_j z_j (label smoothing only, else None)


def chunk_stats_torch(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    vocab_start: int = 0,
) -> Tuple[ChunkStats, Tuple[Tensor, Tensor]]:
    """Pass 1 over `logits` [C, V_shard] whose column j is vocabulary id `vocab_start + j`.

    Returns the stats and a state for `chunk_grad_torch`: `(z, row_max)` where `z` holds
    exp(logits - row_max) in the compute dtype (it *is* `logits` for float32/float64 inputs, whose
    values are destroyed). Ignored rows get finite but meaningless stats.
    """
    work_dtype = compute_dtype(logits.dtype)
    # Upcast half-precision logits once; float32/float64 logits are worked on in place.
    z = logits if logits.dtype == work_dtype else logits.to(work_dtype)
    holds, local = _label_columns(labels, logits.shape[1], ignore_index, vocab_start)
    z_label = z.gather(1, local.unsqueeze(1)).squeeze(1).masked_fill(~holds, 0.0)
    z_sum = z.sum(1) if label_smoothing > 0.0 else None
    row_max = z.amax(1)
    z.sub_(row_max.unsqueeze(1)).exp_()  # z now holds exp(z - max): no extra [C, V] buffer
    lse = row_max + z.sum(1).log()
    return ChunkStats(lse, z_label, z_sum), (z, row_max)


def token_losses(
    stats: ChunkStats,
    labels: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    vocab_total: int,
) -> Tensor:
    """Each row's loss from its whole-vocabulary stats (0 at ignored rows)."""
    loss = stats.lse - (1.0 - label_smoothing) * stats.z_label
    if stats.z_sum is not None:
        loss = loss - (label_smoothing / vocab_total) * stats.z_sum
    if z_loss > 0.0:
        loss = loss + z_loss * stats.lse.square()
    return loss.masked_fill(labels == ignore_index, 0.0)


def chunk_grad_torch(
    logits: Tensor,
    labels: Tensor,
    row_scale: Tensor,
    lse: Tensor,
    state: Optional[Tuple[Tensor, Tensor]],
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    vocab_start: int = 0,
    vocab_total: Optional[int] = None,
) -> Tensor:
    """Pass 2: `row_scale[i] * dl_i/dz_i` for the columns of `logits` [C, V_shard], given each
    row's whole-vocabulary log-sum-exp `lse` [C]. Written over `logits` and returned.

    `state` is what `chunk_stats_torch` returned for these logits, or None when `logits` still
    holds the raw logits (a backward pass that recomputed them). `vocab_total` is the whole
    vocabulary size (default: the number of columns). Ignored rows get gradient 0.
    """
    vocab_total = logits.shape[1] if vocab_total is None else vocab_total
    work_dtype = compute_dtype(logits.dtype)
    valid = labels != ignore_index
    scale = row_scale.to(work_dtype).masked_fill(~valid, 0.0)
    if state is None:
        # The same steps as pass 1 (not exp(z - lse) at once): a recomputed gradient then equals
        # the one made in forward bit for bit.
        z = logits if logits.dtype == work_dtype else logits.to(work_dtype)
        row_max = z.amax(1)
        z.sub_(row_max.unsqueeze(1)).exp_()
    else:
        z, row_max = state
    softmax_coeff = scale * torch.exp(row_max - lse)  # exp(z - max) -> softmax
    if z_loss > 0.0:
        softmax_coeff = softmax_coeff * (1.0 + 2.0 * z_loss * lse)
    z.mul_(softmax_coeff.unsqueeze(1))
    if label_smoothing > 0.0:
        z.sub_((scale * (label_smoothing / vocab_total)).unsqueeze(1))
    holds, local = _label_columns(labels, logits.shape[1], ignore_index, vocab_start)
    rows = torch.arange(z.shape[0], device=z.device)
    label_term = -(1.0 - label_smoothing) * scale.masked_fill(~holds, 0.0)
    z.index_put_((rows, local), label_term, accumulate=True)
    if z is not logits:
        logits.copy_(z)
    return logits


def _label_columns(labels: Tensor, n_cols: int, ignore_index: int, vocab_start: int) -> Tuple[Tensor, Tensor]:
    """`(holds [C] bool, column [C] int64)`: whether this shard holds each row's label, and its
    column there (0 where it does not, so that it can be gathered safely)."""
    local = labels.long() - vocab_start
    holds = (labels != ignore_index) & (local >= 0) & (local < n_cols)
    return holds, local.masked_fill(~holds, 0)


def cross_entropy_chunk_torch(
    logits: Tensor,
    labels: Tensor,
    row_scale: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    compute_grad: bool,
) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """Loss of each row of `logits` [C, V] and, with `compute_grad`, `row_scale[i] * dl_i/dz_i`:
    pass 1 (`chunk_stats_torch`) and pass 2 (`chunk_grad_torch`) on the whole vocabulary.

    The gradient is written over `logits` (its values are destroyed either way) and returned; it
    has `logits`' dtype. Rows whose label is `ignore_index` get loss 0 and gradient 0.
    Returns `(loss [C], gradient or None, lse [C])`, loss and lse in the compute dtype.
    """
    options = dict(ignore_index=ignore_index, label_smoothing=label_smoothing)
    stats, state = chunk_stats_torch(logits, labels, **options)
    loss = token_losses(stats, labels, z_loss=z_loss, vocab_total=logits.shape[1], **options)
    if not compute_grad:
        return loss, None, stats.lse
    grad = chunk_grad_torch(logits, labels, row_scale, stats.lse, state, z_loss=z_loss, **options)
    return loss, grad, stats.lse


def reference_linear_weighted_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    loss_weights: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> Tensor:
    """The naive path: all [N, V] logits at once, autograd for the gradients.

    Same contract as `toolken.kernels.fused_linear_weighted_cross_entropy` (mean = sum w*l / sum w
    over non-ignored tokens, 0 when that sum is 0; "none" gives w*l per token) but no input checks.
    """
    logits = F.linear(hidden, weight, bias)
    logits = logits.to(compute_dtype(logits.dtype))
    per_token = F.cross_entropy(
        logits, labels, ignore_index=ignore_index, reduction="none", label_smoothing=label_smoothing
    )
    valid = labels != ignore_index
    if z_loss > 0.0:
        per_token = per_token + z_loss * torch.logsumexp(logits, dim=1).square() * valid
    weights = torch.ones_like(per_token) if loss_weights is None else loss_weights.to(per_token.dtype)
    weights = weights * valid
    weighted = per_token * weights
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return weighted.sum()
    total_weight = weights.sum()
    return weighted.sum() / (total_weight if float(total_weight) > 0.0 else 1.0)
