"""Vocabulary-parallel mode of `fused_linear_weighted_cross_entropy`: the LM head is split by rows
across the processes of a `torch.distributed` group, each holding a contiguous slice
[start, end) of the vocabulary (uneven slices are fine).

Every process passes the same `hidden` [N, d], `labels` (global ids) and `loss_weights`, and its
own rows `weight[start:end]` (and bias slice). Per chunk of tokens each process computes the
logits of its slice only, and per token its slice's log-sum-exp lse_k, the label's logit where
its slice holds the label (0 elsewhere) and, for label smoothing, its slice's logit sum. Two
all-reduces combine them:

    m       = max_k lse_k                                   (all-reduce MAX)
    lse     = m + log sum_k exp(lse_k - m)                  (all-reduce SUM, packed with:)
    z_y     = sum_k z_y,k ,   sum_j z_j = sum_k (sum over slice k)

after which every process has the whole-vocabulary loss of each token (the same on every
process; z-loss uses the combined lse) and writes the gradient of its own logits from the
combined lse: softmax_j = exp(z_j - lse). Its rows' gradient (weight, bias, trainable rows) stays
local; the hidden states' gradient is the sum over slices of grad_logits_k @ W_k, all-reduced
once per pass (`VocabParallelOptions.reduce_hidden_grad`). The per-token lse is kept from the
forward pass, so a backward pass that recomputes logits (`reduction="none"`, retain_graph) needs
no communication besides that all-reduce.

This is the method of Megatron-LM's vocabulary-parallel cross-entropy (Shoeybi et al., 2019,
"Megatron-LM: Training Multi-Billion Parameter Language Models Using Model Parallelism",
`megatron.core.tensor_parallel.cross_entropy`: all-reduce of the max logit, the target logit and
the sum of exponentials over a vocabulary-split logits tensor) and of Cut Cross-Entropy's
`VocabParallelOptions` (Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language
Models", `cut_cross_entropy.vocab_parallel`: per-shard log-sum-exp combined across ranks, the
embedding gradient all-reduced), here fused with toolken's chunked, token-weighted loss, label
smoothing, z-loss and row-sparse trainable rows (pass the trainable rows whose ids fall in this
process's slice; a process without any passes none).

Every process must call the op with the same options and the same tokens, and all of them must
call backward (when the hidden states need a gradient). Bad inputs on any process make every
process raise (one small all-gather checks the slices first), instead of leaving the others
waiting in a collective.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from .weighted_ce_torch import ChunkStats


@dataclass(frozen=True)
class VocabParallelOptions:
    """This process's slice of the LM head for vocabulary-parallel mode.

    Attributes:
        start, end: the vocabulary ids [start, end) whose rows this process holds (`weight` is
            [end - start, d]). The slices of the group's processes must tile [0, V).
        group: the `torch.distributed` process group (None: the default group).
        reduce_hidden_grad: all-reduce the hidden states' gradient inside the op (True). Pass
            False when the caller's own parallel layer already all-reduces it in backward (e.g.
            Megatron's copy-to-tensor-parallel-region before the head); each process then gets its
            slice's share.

    Example (2 processes, V = 128256, the tool rows in the last slice):
        >>> opts = VocabParallelOptions(0, 64128) if rank == 0 else VocabParallelOptions(64128, 128256)
        >>> loss = fused_linear_weighted_cross_entropy(h, w_slice, labels, weights, vocab_parallel=opts)
    """

    start: int
    end: int
    group: Any = None
    reduce_hidden_grad: bool = True


@dataclass
class VocabShard:
    """The checked slice the chunk loop works on (made by `open_vocab_shard`)."""

    start: int
    end: int
    vocab_total: int  # V, the whole vocabulary
    max_rows: int  # the largest slice of the group (chunk sizes must agree across processes)
    group: Any
    reduce_hidden_grad: bool

    def combine(self, stats: ChunkStats) -> ChunkStats:
        """Whole-vocabulary stats of a chunk from every process's slice stats."""
        lse_max = stats.lse.clone()
        dist.all_reduce(lse_max, op=dist.ReduceOp.MAX, group=self.group)
        parts = [torch.exp(stats.lse - lse_max), stats.z_label]
        if stats.z_sum is not None:
            parts.append(stats.z_sum)
        summed = torch.stack(parts)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=self.group)
        z_sum = summed[2] if stats.z_sum is not None else None
        return ChunkStats(lse_max + summed[0].log(), summed[1], z_sum)

    def all_reduce_hidden_grad_(self, grad_hidden: Tensor) -> None:
        if self.reduce_hidden_grad:
            dist.all_reduce(grad_hidden, op=dist.ReduceOp.SUM, group=self.group)


# Fields of the per-process record that `open_vocab_shard` gathers.
_START, _END, _TOKENS, _ACTIVE, _GRAD_HIDDEN, _FAILED = range(6)


def open_vocab_shard(
    options: VocabParallelOptions,
    *,
    weight: Tensor,
    hidden: Tensor,
    labels: Tensor,
    loss_weights: Optional[Tensor],
    ignore_index: int,
    grad_hidden: bool,
    local_error: Optional[BaseException],
) -> VocabShard:
    """Check the slices of every process with one all-gather and return this process's shard.

    Raises ValueError on every process if any process failed its local checks (`local_error`,
    re-raised as is on that process), if the slices do not tile [0, V), or if the processes do
    not agree on the tokens or on whether the hidden states need a gradient.
    """
    if not isinstance(options, VocabParallelOptions):
        raise ValueError(f"vocab_parallel must be a VocabParallelOptions, got {type(options).__name__}")
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("vocab_parallel needs torch.distributed initialized (torch.distributed.init_process_group)")
    start, end = options.start, options.end
    if local_error is None:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)) or not 0 <= start < end:
            local_error = ValueError(f"vocab_parallel needs ints 0 <= start < end, got start={start!r}, end={end!r}")
        elif end - start != weight.shape[0]:
            local_error = ValueError(
                f"vocab_parallel slice [{start}, {end}) has {end - start} rows but weight has {weight.shape[0]}"
            )
    n_active = -1
    if local_error is None:
        active = labels != ignore_index
        if loss_weights is not None:
            active = active & (loss_weights > 0)
        n_active = int(active.sum())

    record = torch.tensor(
        [start if local_error is None else -1, end if local_error is None else -1, hidden.shape[0], n_active,
         int(grad_hidden), int(local_error is not None)],
        dtype=torch.int64, device=hidden.device,
    )
    world = dist.get_world_size(options.group)
    gathered: List[Tensor] = [torch.empty_like(record) for _ in range(world)]
    dist.all_gather(gathered, record, group=options.group)
    table = torch.stack(gathered).cpu().tolist()  # [process][field]

    failed = [p for p, r in enumerate(table) if r[_FAILED]]
    if failed:
        if local_error is not None:
            raise local_error
        raise ValueError(f"vocab_parallel: process(es) {failed} of the group rejected their inputs (see their error)")
    slices = sorted((r[_START], r[_END], p) for p, r in enumerate(table))
    covered = 0
    for s, e, p in slices:
        if s != covered:
            what = "overlaps" if s < covered else "leaves a gap before"
            raise ValueError(
                f"vocab_parallel slices must tile [0, V) without gaps or overlaps; process {p}'s [{s}, {e}) {what} "
                f"id {covered} (all slices: {[(s2, e2) for s2, e2, _ in slices]})"
            )
        covered = e
    for field, what in ((_TOKENS, "number of tokens N"), (_ACTIVE, "number of trained tokens (labels/loss_weights)")):
        values = [r[field] for r in table]
        if len(set(values)) > 1:
            raise ValueError(f"vocab_parallel: every process must pass the same tokens; {what} per process: {values}")
    grads = [bool(r[_GRAD_HIDDEN]) for r in table]
    if options.reduce_hidden_grad and len(set(grads)) > 1:
        raise ValueError(f"vocab_parallel: hidden requires grad on some processes only: {grads}")
    return VocabShard(
        start=start, end=end, vocab_total=covered, max_rows=max(e - s for s, e, _ in slices), group=options.group,
        reduce_hidden_grad=options.reduce_hidden_grad,
    )
