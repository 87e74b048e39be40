"""Triton kernel for one chunk of the fused linear + weighted cross-entropy.

The matmuls around it stay in cuBLAS (`weighted_ce.py` runs the chunk loop); this kernel does the
part that would otherwise cost several passes over the [C, V] chunk of logits: for each row, one
pass with an online softmax (running max and rescaled sum, Milakov & Gimelshein 2018) gives the
log-sum-exp and the loss, and a second pass writes `row_scale * dloss/dlogits` over the logits in
place. Computing the logit gradient in the forward pass, so that backward needs no second trip
over the vocabulary, is Liger-Kernel's fused linear cross-entropy idea; never materializing the
whole [N, V] logits is also the point of Cut Cross-Entropy (Wijmans et al., 2024). The math is
the one in `weighted_ce_torch.py`, which is this kernel's test oracle.

One kernel, three modes (`PHASE`): both passes in one launch (one process, the usual case); pass
1 alone, writing the row stats (vocabulary-parallel mode, where the stats of every shard are
combined across processes before pass 2); pass 2 alone, from a given log-sum-exp
(vocabulary-parallel mode, and every backward pass that recomputes the logits).

Importing this module requires Triton; `weighted_ce.py` imports it only when it is used.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .weighted_ce_torch import ChunkStats

# Largest vocabulary block one program loads at a time: big enough to keep loads wide, small
# enough to stay in registers (tune on a GPU; autotune does not run in the interpreter).
MAX_BLOCK_V = 4096

PHASE_BOTH = 0  # pass 1 + loss (+ pass 2 with COMPUTE_GRAD): the whole vocabulary on one process
PHASE_STATS = 1  # pass 1 only: lse, label logit, logit sum of this shard
PHASE_GRAD = 2  # pass 2 only, from the whole-vocabulary lse


@triton.jit
def _row_stats(row_ptr, n_cols, column, holds_label, HAS_SMOOTHING: tl.constexpr, BLOCK_V: tl.constexpr):
    """Pass 1 over one row: online max / sum of exp, in float32 whatever the logits' dtype
    (loading bf16 and casting at once is also what keeps the CPU interpreter's bf16 arithmetic
    out of the way). Returns (lse, label logit or 0, logit sum or 0)."""
    cols = tl.arange(0, BLOCK_V)
    running_max = float("-inf")
    running_sum = 0.0
    logit_sum = 0.0
    for start in range(0, n_cols, BLOCK_V):
        offs = start + cols
        in_row = offs < n_cols
        z = tl.load(row_ptr + offs, mask=in_row, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(z, axis=0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
        running_max = new_max
        if HAS_SMOOTHING:
            logit_sum += tl.sum(tl.where(in_row, z, 0.0), axis=0)
    lse = running_max + tl.log(running_sum)
    # `column` is 0 where this shard does not hold the label: the load stays in bounds.
    z_label = tl.where(holds_label, tl.load(row_ptr + column).to(tl.float32), 0.0)
    return lse, z_label, logit_sum


@triton.jit
def _row_grad(row_ptr, n_cols, column, holds_label, lse, softmax_coeff, uniform_term, label_term,
              BLOCK_V: tl.constexpr):
    """Pass 2 over one row, in place: softmax_coeff * softmax - uniform_term - label_term [j == y]."""
    cols = tl.arange(0, BLOCK_V)
    for start in range(0, n_cols, BLOCK_V):
        offs = start + cols
        in_row = offs < n_cols
        z = tl.load(row_ptr + offs, mask=in_row, other=0.0).to(tl.float32)
        grad = softmax_coeff * tl.exp(z - lse) - uniform_term
        grad = tl.where((offs == column) & holds_label, grad - label_term, grad)
        tl.store(row_ptr + offs, grad.to(row_ptr.dtype.element_ty), mask=in_row)


@triton.jit
def _cross_entropy_chunk_kernel(
    logits_ptr,
    logits_row_stride,
    labels_ptr,
    row_scale_ptr,
    loss_ptr,
    lse_ptr,
    z_label_ptr,
    z_sum_ptr,
    n_cols,
    vocab_start,
    vocab_total,
    ignore_index,
    label_smoothing,
    z_loss,
    PHASE: tl.constexpr,
    HAS_SMOOTHING: tl.constexpr,
    HAS_Z_LOSS: tl.constexpr,
    COMPUTE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * logits_row_stride
    label = tl.load(labels_ptr + row).to(tl.int64)

    if label == ignore_index:
        if PHASE == 0:
            tl.store(loss_ptr + row, 0.0)
            tl.store(lse_ptr + row, 0.0)
        if PHASE == 1:
            tl.store(lse_ptr + row, 0.0)
            tl.store(z_label_ptr + row, 0.0)
            tl.store(z_sum_ptr + row, 0.0)
        if COMPUTE_GRAD:
            zeros = tl.zeros([BLOCK_V], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK_V):
                offs = start + tl.arange(0, BLOCK_V)
                tl.store(row_ptr + offs, zeros.to(logits_ptr.dtype.element_ty), mask=offs < n_cols)
        return

    column = label - vocab_start
    holds_label = (column >= 0) & (column < n_cols)
    column = tl.where(holds_label, column, 0)

    if PHASE == 2:
        lse = tl.load(lse_ptr + row)
    else:
        lse, z_label, logit_sum = _row_stats(row_ptr, n_cols, column, holds_label, HAS_SMOOTHING, BLOCK_V)
        tl.store(lse_ptr + row, lse)
        if PHASE == 1:
            tl.store(z_label_ptr + row, z_label)
            tl.store(z_sum_ptr + row, logit_sum)
        else:
            loss = lse - (1.0 - label_smoothing) * z_label
            if HAS_SMOOTHING:
                loss -= label_smoothing / vocab_total * logit_sum
            if HAS_Z_LOSS:
                loss += z_loss * lse * lse
            tl.store(loss_ptr + row, loss)

    if COMPUTE_GRAD:
        # row_scale * (softmax * (1 + 2 lam lse) - (1 - eps) [j == y] - eps / V), in place.
        scale = tl.load(row_scale_ptr + row).to(tl.float32)
        softmax_coeff = scale
        if HAS_Z_LOSS:
            softmax_coeff = scale * (1.0 + 2.0 * z_loss * lse)
        uniform_term = scale * label_smoothing / vocab_total
        label_term = scale * (1.0 - label_smoothing)
        _row_grad(row_ptr, n_cols, column, holds_label, lse, softmax_coeff, uniform_term, label_term, BLOCK_V)


def _launch(
    phase: int,
    logits: Tensor,
    labels: Tensor,
    row_scale: Optional[Tensor],
    lse: Tensor,
    loss: Tensor,
    z_label: Tensor,
    z_sum: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    compute_grad: bool,
    vocab_start: int,
    vocab_total: int,
    block_v: Optional[int],
) -> None:
    if logits.stride(1) != 1:
        raise ValueError(f"logits must be contiguous along the vocabulary, got strides {tuple(logits.stride())}")
    rows, vocab = logits.shape
    if rows == 0:
        return
    if block_v is None:
        block_v = min(MAX_BLOCK_V, triton.next_power_of_2(vocab))
    _cross_entropy_chunk_kernel[(rows,)](
        logits,
        logits.stride(0),
        labels.contiguous(),
        loss if row_scale is None else row_scale.to(torch.float32).contiguous(),
        loss,
        lse,
        z_label,
        z_sum,
        vocab,
        vocab_start,
        vocab_total,
        ignore_index,
        float(label_smoothing),
        float(z_loss),
        PHASE=phase,
        HAS_SMOOTHING=label_smoothing > 0.0,
        HAS_Z_LOSS=z_loss > 0.0,
        COMPUTE_GRAD=compute_grad,
        BLOCK_V=block_v,
        num_warps=8 if block_v >= 2048 else 4,
    )


def cross_entropy_chunk_triton(
    logits: Tensor,
    labels: Tensor,
    row_scale: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    compute_grad: bool,
    block_v: Optional[int] = None,
) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """Triton twin of `weighted_ce_torch.cross_entropy_chunk_torch` (same arguments and results;
    loss and lse are float32). `block_v` overrides the vocabulary block (tests use small blocks so
    that V spans several blocks)."""
    rows, vocab = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    lse = torch.empty(rows, dtype=torch.float32, device=logits.device)
    _launch(
        PHASE_BOTH, logits, labels, row_scale, lse, loss, loss, loss, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, compute_grad=compute_grad, vocab_start=0,
        vocab_total=vocab, block_v=block_v,
    )
    return loss, (logits if compute_grad else None), lse


def chunk_stats_triton(
    logits: Tensor,
    labels: Tensor,
    *,
    ignore_index: int,
    label_smoothing: float,
    vocab_start: int = 0,
    block_v: Optional[int] = None,
) -> Tuple[ChunkStats, None]:
    """Triton twin of `weighted_ce_torch.chunk_stats_torch`; leaves `logits` untouched (the
    state for pass 2 is None). Ignored rows get stats 0."""
    rows = logits.shape[0]
    lse, z_label, z_sum = torch.empty(3, rows, dtype=torch.float32, device=logits.device)
    _launch(
        PHASE_STATS, logits, labels, None, lse, lse, z_label, z_sum, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=0.0, compute_grad=False, vocab_start=vocab_start,
        vocab_total=logits.shape[1], block_v=block_v,
    )
    return ChunkStats(lse, z_label, z_sum if label_smoothing > 0.0 else None), None


def chunk_grad_triton(
    logits: Tensor,
    labels: Tensor,
    row_scale: Tensor,
    lse: Tensor,
    state: None = None,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    vocab_start: int = 0,
    vocab_total: Optional[int] = None,
    block_v: Optional[int] = None,
) -> Tensor:
    """Triton twin of `weighted_ce_torch.chunk_grad_torch` (`logits` must hold the raw logits)."""
    lse = lse.to(torch.float32).contiguous()
    _launch(
        PHASE_GRAD, logits, labels, row_scale, lse, lse, lse, lse, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, compute_grad=True, vocab_start=vocab_start,
        vocab_total=logits.shape[1] if vocab_total is None else vocab_total, block_v=block_v,
    )
    return logits
