"""PyTorch path of the fused linear + token-weighted cross-entropy.

Two things live here:

- `cross_entropy_chunk_torch`: the per-chunk math (loss of each row of a chunk of logits, and the
  scaled gradient of those logits written over them). It is the CPU path and the oracle that the
  Triton kernel (`weighted_ce_triton.py`) is tested against; the chunk loop around it is shared
  and lives in `weighted_ce.py`.
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

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the softmax and the loss are computed in: float64 for float64 inputs (gradcheck),
    float32 otherwise (bf16/fp16 logits are upcast)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def cross_entropy_chunk_torch(
    logits: Tensor,
    labels: Tensor,
    row_scale: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    compute_grad: bool,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Loss of each row of `logits` [C, V] and, with `compute_grad`, `row_scale[i] * dl_i/dz_i`.

    The gradient is written over `logits` (its values are destroyed either way) and returned; it
    has `logits`' dtype. Rows whose label is `ignore_index` get loss 0 and gradient 0.
    Returns `(loss [C] in the compute dtype, gradient or None)`.
    """
    vocab = logits.shape[1]
    work_dtype = compute_dtype(logits.dtype)
    # Upcast half-precision logits once; float32/float64 logits are worked on in place.
    z = logits if logits.dtype == work_dtype else logits.to(work_dtype)
    valid = labels != ignore_index
    safe_labels = labels.masked_fill(~valid, 0).unsqueeze(1)

    z_label = z.gather(1, safe_labels).squeeze(1)
    z_sum = z.sum(1) if label_smoothing > 0.0 else None
    row_max = z.amax(1, keepdim=True)
    z.sub_(row_max).exp_()  # z now holds exp(z - max): no extra [C, V] buffer
    sum_exp = z.sum(1)
    lse = row_max.squeeze(1) + sum_exp.log()

    loss = lse - (1.0 - label_smoothing) * z_label
    if z_sum is not None:
        loss = loss - (label_smoothing / vocab) * z_sum
    if z_loss > 0.0:
        loss = loss + z_loss * lse.square()
    loss = loss.masked_fill(~valid, 0.0)
    if not compute_grad:
        return loss, None

    scale = row_scale.to(work_dtype).masked_fill(~valid, 0.0)
    softmax_coeff = scale / sum_exp
    if z_loss > 0.0:
        softmax_coeff = softmax_coeff * (1.0 + 2.0 * z_loss * lse)
    z.mul_(softmax_coeff.unsqueeze(1))
    if label_smoothing > 0.0:
        z.sub_((scale * (label_smoothing / vocab)).unsqueeze(1))
    rows = torch.arange(z.shape[0], device=z.device)
    z.index_put_((rows, safe_labels.squeeze(1)), -(1.0 - label_smoothing) * scale, accumulate=True)
    if z is not logits:
        logits.copy_(z)
    return loss, logits


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
