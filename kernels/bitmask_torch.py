"""PyTorch path of `apply_token_bitmask_` (the CPU path on the decode hot path, and the oracle of
the Triton kernel).

No branch per token: the logits are viewed as integers of their own width (int32 for float32,
int16 for bf16/fp16) and the bitmask words as integers of that same width (two int16 halves per
int32 word on a little-endian host, so bit order is kept). Shifting each word left so that token
j's bit lands in the sign bit, then arithmetic-shifting right by width - 1, gives `keep` = all
ones (allowed) or 0 (disallowed) per token. Then, with `NEG_INF` the bit pattern of -inf,

    x = ((x ^ NEG_INF) & keep) ^ NEG_INF

leaves allowed logits unchanged and turns disallowed ones into exactly -inf: five vectorized
passes, no Python loop over rows or tokens.
"""
from __future__ import annotations

import sys
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

# Integer dtype of the same width as each supported logits dtype.
_INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
SUPPORTED_DTYPES = tuple(_INT_VIEW)

_shift_cache: Dict[Tuple[torch.dtype, torch.device], Tensor] = {}


def _shifts(int_dtype: torch.dtype, device: torch.device) -> Tensor:
    """[width] left shifts that move bit j of a word into the sign bit: width - 1 - j."""
    key = (int_dtype, device)
    shifts = _shift_cache.get(key)
    if shifts is None:
        width = torch.iinfo(int_dtype).bits
        shifts = torch.arange(width - 1, -1, -1, dtype=int_dtype, device=device)
        _shift_cache[key] = shifts
    return shifts


def _mask_units_(x: Tensor, units: Tensor, neg_inf: int, n_tokens: int) -> None:
    """Mask the first `n_tokens` (<= width * units.shape[1]) integer-viewed logits of each row of
    `x` [R, >= n_tokens] by the bits of `units` [R, n_units] (same integer dtype)."""
    width = torch.iinfo(units.dtype).bits
    full, tail = divmod(n_tokens, width)
    shifts = _shifts(units.dtype, units.device)
    rows = x.shape[0]
    if full:
        keep = torch.bitwise_left_shift(units[:, :full, None], shifts)
        keep.bitwise_right_shift_(width - 1)
        view = x[:, : full * width].view(rows, full, width)
        view.bitwise_xor_(neg_inf).bitwise_and_(keep).bitwise_xor_(neg_inf)
    if tail:
        keep = torch.bitwise_left_shift(units[:, full : full + 1], shifts[:tail])
        keep.bitwise_right_shift_(width - 1)
        view = x[:, full * width : n_tokens]
        view.bitwise_xor_(neg_inf).bitwise_and_(keep).bitwise_xor_(neg_inf)


def _mask_rows_(logits: Tensor, bitmask: Tensor) -> None:
    """logits [R, V] (last dim contiguous) masked in place by bitmask [R, W] (row r by row r)."""
    int_dtype = _INT_VIEW[logits.dtype]
    vocab = logits.shape[1]
    covered = min(vocab, 32 * bitmask.shape[1])
    x = logits.view(int_dtype)
    # Words as units of the logits' width; the int16 halves of an int32 word come low half first
    # on a little-endian host, which keeps token order.
    units = bitmask.contiguous().view(int_dtype) if int_dtype != torch.int32 else bitmask
    neg_inf = int(torch.tensor(float("-inf"), dtype=logits.dtype).view(int_dtype))
    if covered:
        _mask_units_(x, units, neg_inf, covered)
    if covered < vocab:  # tokens beyond the mask's vocabulary are disallowed
        logits[:, covered:] = float("-inf")


def apply_token_bitmask_torch_(logits: Tensor, bitmask: Tensor, indices: Optional[Tensor]) -> None:
    """In place on `logits` [B, V] (contiguous along V): row i masked by `bitmask` row i, for
    every row (indices None) or for the rows in `indices` (1-D int64 on the logits' device).
    Inputs are checked by `bitmask.apply_token_bitmask_`."""
    if sys.byteorder != "little" and logits.dtype != torch.float32:
        raise NotImplementedError("the bf16/fp16 bitmask path of PyTorch assumes a little-endian host")
    if indices is None:
        _mask_rows_(logits, bitmask)
        return
    rows = logits.index_select(0, indices)
    _mask_rows_(rows, bitmask.index_select(0, indices))
    logits.index_copy_(0, indices, rows)
