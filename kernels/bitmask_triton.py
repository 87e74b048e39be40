"""Triton kernel of `apply_token_bitmask_`: one program per (masked row, vocabulary block).

It only writes: each disallowed position gets -inf through a masked store, allowed logits are
never read or rewritten. Importing this module requires Triton; `bitmask.py` imports it only
when it is used.
"""
from __future__ import annotations

from typing import Optional

import triton
import triton.language as tl
from torch import Tensor

# Vocabulary positions per program (tune on a GPU; autotune does not run in the interpreter).
BLOCK_V = 1024


@triton.jit
def _apply_token_bitmask_kernel(
    logits_ptr,
    logits_row_stride,
    bitmask_ptr,
    bitmask_row_stride,
    indices_ptr,
    vocab,
    covered,
    HAS_INDICES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    if HAS_INDICES:
        row = tl.load(indices_ptr + tl.program_id(0)).to(tl.int64)
    else:
        row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_mask = offs < covered
    # Positions beyond the mask's vocabulary read a zero word: disallowed like any cleared bit.
    words = tl.load(bitmask_ptr + row * bitmask_row_stride + offs // 32, mask=in_mask, other=0)
    disallowed = (offs < vocab) & (((words >> (offs % 32)) & 1) == 0)
    neg_inf = tl.full([BLOCK], float("-inf"), dtype=logits_ptr.dtype.element_ty)
    tl.store(logits_ptr + row * logits_row_stride + offs, neg_inf, mask=disallowed)


def apply_token_bitmask_triton_(
    logits: Tensor, bitmask: Tensor, indices: Optional[Tensor], block: int = BLOCK_V
) -> None:
    """Triton twin of `bitmask_torch.apply_token_bitmask_torch_` (same arguments). `logits` must
    be contiguous along the vocabulary (checked by the caller)."""
    n_rows = logits.shape[0] if indices is None else indices.shape[0]
    vocab = logits.shape[1]
    if n_rows == 0 or vocab == 0:
        return
    bitmask = bitmask if bitmask.stride(1) == 1 else bitmask.contiguous()
    covered = min(vocab, 32 * bitmask.shape[1])
    grid = (n_rows, triton.cdiv(vocab, block))
    _apply_token_bitmask_kernel[grid](
        logits,
        logits.stride(0),
        bitmask,
        bitmask.stride(0),
        indices if indices is not None else bitmask,  # unused without indices
        vocab,
        covered,
        HAS_INDICES=indices is not None,
        BLOCK=block,
    )
