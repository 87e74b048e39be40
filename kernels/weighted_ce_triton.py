"""Triton kernel for one chunk of the fused linear + weighted cross-entropy.

The matmuls around it stay in cuBLAS (`weighted_ce.py` runs the chunk loop); this kernel does the
part that would otherwise cost several passes over the [C, V] chunk of logits: for each row, one
pass with an online softmax (running max and rescaled sum, Milakov & Gimelshein 2018) gives the
log-sum-exp and the loss, and a second pass writes `row_scale * dloss/dlogits` over the logits in
place. Computing the logit gradient in the forward pass, so that backward needs no second trip
over the vocabulary, is Liger-Kernel's fused linear cross-entropy idea; never materializing the
whole [N, V] logits is also the point of Cut Cross-Entropy (Wijmans et al., 2024). The math is
the one in `weighted_ce_torch.py`, which is this kernel's test oracle.

Importing this module requires Triton; `weighted_ce.py` imports it only when it is used.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

# Largest vocabulary block one program loads at a time: big enough to keep loads wide, small
# enough to stay in registers (tune on a GPU; autotune does not run in the interpreter).
MAX_BLOCK_V = 4096


@triton.jit
def _cross_entropy_chunk_kernel(
    logits_ptr,
    logits_row_stride,
    labels_ptr,
    row_scale_ptr,
    loss_ptr,
    n_cols,
    ignore_index,
    label_smoothing,
    z_loss,
    HAS_SMOOTHING: tl.constexpr,
    HAS_Z_LOSS: tl.constexpr,
    COMPUTE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * logits_row_stride
    label = tl.load(labels_ptr + row)
    cols = tl.arange(0, BLOCK_V)

    if label == ignore_index:
        tl.store(loss_ptr + row, 0.0)
        if COMPUTE_GRAD:
            zeros = tl.zeros([BLOCK_V], dtype=tl.float32)
            for start in range(0, n_cols, BLOCK_V):
                offs = start + cols
                tl.store(row_ptr + offs, zeros.to(logits_ptr.dtype.element_ty), mask=offs < n_cols)
        return

    # Pass 1: online max / sum of exp, in float32 whatever the logits' dtype (loading bf16 and
    # casting at once is also what keeps the CPU interpreter's bf16 arithmetic out of the way).
    running_max = float("-inf")
    running_sum = 0.0
    logit_sum = 0.0
    for start in range(0, n_cols, BLOCK_V):
        offs = start + cols
        in_row = offs < n_cols
        z = tl.load(row_ptr + offs, mask=in_row, other=float("-inf")).to(tl.float32)
        block_max = tl.max(z, axis=0)
        new_max = tl.maximum(running_max, block_max)
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
        running_max = new_max
        if HAS_SMOOTHING:
            logit_sum += tl.sum(tl.where(in_row, z, 0.0), axis=0)
    lse = running_max + tl.log(running_sum)
    z_label = tl.load(row_ptr + label).to(tl.float32)

    loss = lse - (1.0 - label_smoothing) * z_label
    if HAS_SMOOTHING:
        loss -= label_smoothing / n_cols * logit_sum
    if HAS_Z_LOSS:
        loss += z_loss * lse * lse
    tl.store(loss_ptr + row, loss)

    if COMPUTE_GRAD:
        # Pass 2: row_scale * (softmax * (1 + 2 lam lse) - (1 - eps) [j == y] - eps / V), in place.
        scale = tl.load(row_scale_ptr + row).to(tl.float32)
        softmax_coeff = scale
        if HAS_Z_LOSS:
            softmax_coeff = scale * (1.0 + 2.0 * z_loss * lse)
        uniform_term = scale * label_smoothing / n_cols
        label_term = scale * (1.0 - label_smoothing)
        for start in range(0, n_cols, BLOCK_V):
            offs = start + cols
            in_row = offs < n_cols
            z = tl.load(row_ptr + offs, mask=in_row, other=0.0).to(tl.float32)
            grad = softmax_coeff * tl.exp(z - lse) - uniform_term
            grad = tl.where(offs == label, grad - label_term, grad)
            tl.store(row_ptr + offs, grad.to(logits_ptr.dtype.element_ty), mask=in_row)


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
) -> Tuple[Tensor, Optional[Tensor]]:
    """Triton twin of `weighted_ce_torch.cross_entropy_chunk_torch` (same arguments and results;
    the loss is float32). `block_v` overrides the vocabulary block (tests use small blocks so that
    V spans several blocks)."""
    if logits.stride(1) != 1:
        raise ValueError(f"logits must be contiguous along the vocabulary, got strides {tuple(logits.stride())}")
    rows, vocab = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows == 0:
        return loss, (logits if compute_grad else None)
    if block_v is None:
        block_v = min(MAX_BLOCK_V, triton.next_power_of_2(vocab))
    _cross_entropy_chunk_kernel[(rows,)](
        logits,
        logits.stride(0),
        labels.contiguous(),
        row_scale.to(torch.float32).contiguous(),
        loss,
        vocab,
        ignore_index,
        float(label_smoothing),
        float(z_loss),
        HAS_SMOOTHING=label_smoothing > 0.0,
        HAS_Z_LOSS=z_loss > 0.0,
        COMPUTE_GRAD=compute_grad,
        BLOCK_V=block_v,
        num_warps=8 if block_v >= 2048 else 4,
    )
    return loss, (logits if compute_grad else None)
