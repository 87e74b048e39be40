"""Apply a token bitmask to logits in place: disallowed tokens get -inf.

Bitmask layout (shared with the grammar engine and the serving engines): int32 words, bit
`j % 32` of word `j // 32` set means token j is allowed. The public op dispatches to a Triton
kernel for CUDA tensors (`bitmask_triton.py`) and otherwise to `bitmask_torch.py` (a C++ loop
for CPU tensors, vectorized operators elsewhere); all are tested against a plain loop.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .bitmask_torch import SUPPORTED_DTYPES, apply_token_bitmask_torch_
from .dispatch import use_triton

Indices = Union[Sequence[int], Tensor]


def _check_writable(logits: Tensor) -> None:
    """Raise ValueError unless `logits` can be masked in place."""
    if logits.requires_grad and logits.is_leaf:
        raise ValueError(
            "logits is a leaf tensor that requires grad: masking it in place would change it behind autograd's back; "
            "pass logits.detach() (or compute the logits under torch.no_grad())"
        )
    if any(st == 0 and n > 1 for st, n in zip(logits.stride(), logits.shape)):
        raise ValueError(
            f"logits has overlapping memory (stride {tuple(logits.stride())} of an expanded tensor): "
            "one in-place write would change several positions; pass logits.clone()"
        )


def _check_and_normalize(logits: Tensor, bitmask: Tensor, indices: Optional[Indices]) -> Optional[Tensor]:
    """Raise ValueError for bad inputs; return `indices` as a 1-D int64 tensor (or None)."""
    shapes = f"logits {tuple(logits.shape)}, bitmask {tuple(bitmask.shape)}"
    if logits.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"logits must be float32, bfloat16 or float16, got {logits.dtype}")
    if bitmask.dtype != torch.int32:
        raise ValueError(f"bitmask must be int32, got {bitmask.dtype} ({shapes})")
    if logits.dim() != 2 or bitmask.dim() != 2:
        raise ValueError(f"logits must be [B, V] and bitmask [B', ceil(V'/32)]; got {shapes}")
    if bitmask.device != logits.device:
        raise ValueError(f"bitmask is on {bitmask.device} but logits are on {logits.device}")
    batch, mask_rows = logits.shape[0], bitmask.shape[0]
    if indices is None:
        if mask_rows != batch:
            raise ValueError(f"bitmask needs one row per logits row when indices is None; got {shapes}")
        return None
    if isinstance(indices, Tensor):
        if indices.dim() != 1 or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError(f"indices must be a 1-D integer tensor or a list of ints, got {indices.dtype} {tuple(indices.shape)}")
        index = indices.to(device=logits.device, dtype=torch.int64)
    else:
        values = list(indices)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in values):
            raise ValueError(f"indices must be ints, got {values!r}")
        index = torch.tensor(values, dtype=torch.int64, device=logits.device)
    limit = min(batch, mask_rows)
    if index.numel() and bool(((index < 0) | (index >= limit)).any()):
        raise ValueError(f"indices must be in [0, {limit}) (rows of both logits and bitmask); got {index.tolist()} for {shapes}")
    return index


def apply_token_bitmask_(
    logits: Tensor, bitmask: Tensor, indices: Optional[Indices] = None, backend: str = "auto"
) -> Tensor:
    """Set every logit whose token the bitmask disallows to -inf, in place.

    Args:
        logits: [B, V] float32/bfloat16/float16 (a 1-D [V] is taken as one row).
        bitmask: int32 [B', W] (1-D with 1-D logits); bit j % 32 of word j // 32 set = token j
            allowed. Tokens j >= 32 * W (beyond the mask's vocabulary) are disallowed.
        indices: None to mask every row (then B' == B), or the rows to mask (ints or a 1-D
            integer tensor): row i of the logits is masked by row i of the bitmask, rows not
            listed are left alone. This is xgrammar's `apply_token_bitmask_inplace` convention,
            so a batch-shaped mask buffer can be reused while only some rows are constrained.
        backend: "auto" (Triton for CUDA tensors when Triton is installed, else PyTorch), "torch"
            or "triton" (under TRITON_INTERPRET=1 the kernel runs on CPU tensors).

    Returns:
        `logits` (modified in place).

    Raises:
        ValueError: wrong dtypes, shapes, devices or indices, unknown backend; logits that cannot
            be written in place (a leaf that requires grad, an expanded tensor whose rows share
            memory).
    """
    _check_writable(logits)
    rows = logits.unsqueeze(0) if logits.dim() == 1 else logits
    masks = bitmask.unsqueeze(0) if bitmask.dim() == 1 and logits.dim() == 1 else bitmask
    index = _check_and_normalize(rows, masks, indices)
    if index is not None and index.numel() == 0:
        return logits
    work = rows if rows.stride(1) == 1 else rows.contiguous()
    if use_triton(backend, logits.device):
        from .bitmask_triton import apply_token_bitmask_triton_

        apply_token_bitmask_triton_(work, masks, index)
    else:
        apply_token_bitmask_torch_(work, masks, index)
    if work is not rows:
        rows.copy_(work)
    return logits
