"""PyTorch path of `apply_token_bitmask_`: CPU logits go to the kernels' own C++ loop
(`toolken.kernels._bitmask_cpu`, built from `kernels/csrc/`; the decode hot path); other
devices, and installs without that extension, run the vectorized operator path below, which is
also the Triton kernel's oracle.

Operator path, no branch per token: the logits are viewed as integers of their own width (int32
for float32, int16 for bf16/fp16) and the bitmask words as integers of that same width (two
int16 halves per int32 word on a little-endian host, so bit order is kept). Shifting each word
left so that token j's bit lands in the sign bit, then arithmetic-shifting right by width - 1,
gives `keep` = all ones (allowed) or 0 (disallowed) per token. Then, with `NEG_INF` the bit
pattern of -inf,

    x = ((x ^ NEG_INF) & keep) ^ NEG_INF

leaves allowed logits unchanged and turns disallowed ones into exactly -inf: five vectorized
passes, no Python loop over rows or tokens. Without the extension, CPU tensors run this on
zero-copy numpy views (single-threaded, no thread-pool synchronization per op).
"""
from __future__ import annotations

import functools
import sys
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

# Integer dtype of the same width as each supported logits dtype.
_INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
SUPPORTED_DTYPES = tuple(_INT_VIEW)
# Bit pattern of -inf in each dtype, as a signed integer of its width.
_NEG_INF_BITS = {dt: int(torch.tensor(float("-inf"), dtype=dt).view(iv)) for dt, iv in _INT_VIEW.items()}

# Logits per block: the int temporaries (at most 1 MiB) and the logits being rewritten stay in
# cache across the passes, and memory use does not grow with the batch.
BLOCK_ELEMENTS = 1 << 18

_shift_cache: Dict[Tuple[str, torch.dtype, torch.device], object] = {}


def _shifts(int_dtype: torch.dtype, device: torch.device, as_numpy: bool):
    """[width] left shifts that move bit j of a word into the sign bit: width - 1 - j."""
    key = ("numpy" if as_numpy else "torch", int_dtype, device)
    shifts = _shift_cache.get(key)
    if shifts is None:
        width = torch.iinfo(int_dtype).bits
        shifts = torch.arange(width - 1, -1, -1, dtype=int_dtype, device=device)
        shifts = shifts.numpy() if as_numpy else shifts
        _shift_cache[key] = shifts
    return shifts


def _mask_units_(x, units, shifts, neg_inf: int, n_tokens: int) -> None:
    """Mask the first `n_tokens` integer-viewed logits of each row of `x` [R, >= n_tokens] by the
    bits of `units` [R, >= n_tokens / width] (same integer dtype, `width` bits).

    Works on blocks of about `BLOCK_ELEMENTS` logits so that the `keep` temporary and the three
    passes over the logits stay in cache. Written with operators only, so the arrays may be numpy
    arrays or torch tensors.
    """
    width = shifts.shape[0]
    rows = x.shape[0]
    full, tail = divmod(n_tokens, width)
    step = max(1, BLOCK_ELEMENTS // (rows * width))  # units per block
    for start in range(0, full, step):
        stop = min(full, start + step)
        block = x[:, start * width : stop * width].reshape(rows, stop - start, width)  # a view
        _mask_block_(block, units[:, start:stop, None] << shifts, neg_inf, width)
    if tail:
        _mask_block_(x[:, full * width : n_tokens], units[:, full : full + 1] << shifts[:tail], neg_inf, width)


def _mask_block_(block, shifted_units, neg_inf: int, width: int) -> None:
    """block = ((block ^ NEG_INF) & keep) ^ NEG_INF with keep = shifted_units >> (width - 1)."""
    keep = shifted_units
    keep >>= width - 1
    block ^= neg_inf
    block &= keep
    block ^= neg_inf


@functools.cache
def _native_cpu_apply():
    """toolken.kernels._bitmask_cpu.apply_token_bitmask_cpu, or None where it is not built."""
    try:
        from ._bitmask_cpu import apply_token_bitmask_cpu
    except ImportError:
        return None
    return apply_token_bitmask_cpu


def apply_token_bitmask_torch_(logits: Tensor, bitmask: Tensor, indices: Optional[Tensor]) -> None:
    """In place on `logits` [B, V] (contiguous along V): row i masked by `bitmask` row i, for
    every row (indices None) or for the rows in `indices` (1-D int64 on the logits' device).
    CPU logits go to the kernels' C++ loop (`_bitmask_cpu`) when it is built; otherwise, and on
    other devices, the operator path below runs. Inputs are checked by
    `bitmask.apply_token_bitmask_`."""
    if sys.byteorder != "little" and logits.dtype != torch.float32:
        raise NotImplementedError("the bf16/fp16 bitmask path of PyTorch assumes a little-endian host")
    int_dtype = _INT_VIEW[logits.dtype]
    neg_inf = _NEG_INF_BITS[logits.dtype]
    x = logits.detach().view(int_dtype)
    on_cpu = logits.device.type == "cpu"
    native = _native_cpu_apply() if on_cpu else None
    if native is not None:
        # The C++ loop of toolken.kernels._bitmask_cpu: one pass over the mask words, GIL released.
        rows = np.arange(x.shape[0], dtype=np.int64) if indices is None else indices.numpy()
        native(x.numpy(), bitmask.contiguous().numpy(), rows, neg_inf & 0xFFFFFFFF)
        return
    vocab = logits.shape[1]
    covered = min(vocab, 32 * bitmask.shape[1])
    # Mask words as units of the logits' width: an int32 word is two int16 halves, low half
    # first on a little-endian host, which keeps token order.
    units = bitmask.contiguous().view(int_dtype)
    if on_cpu:
        # Zero-copy numpy views: numpy runs these few passes on one thread, while torch's
        # intra-op thread pool costs a synchronization per op (ruinous on a busy machine, and
        # the decode hot path is a single [1, V] row).
        x, units = x.numpy(), units.numpy()
        indices = None if indices is None else indices.numpy()
    shifts = _shifts(int_dtype, logits.device, on_cpu)
    if indices is None:
        _mask_units_(x, units, shifts, neg_inf, covered)
        if covered < vocab:  # tokens beyond the mask's vocabulary are disallowed
            x[:, covered:] = neg_inf
        return
    rows = x[indices]  # advanced indexing: a copy of the masked rows, written back below
    _mask_units_(rows, units[indices], shifts, neg_inf, covered)
    if covered < vocab:
        rows[:, covered:] = neg_inf
    x[indices] = rows
