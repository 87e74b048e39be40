"""Fused linear + token-weighted cross-entropy that never materializes the [N, V] logits.

The public op is `fused_linear_weighted_cross_entropy`. Tokens are processed in chunks: for each
chunk the logits are computed (one matmul), the per-chunk kernel turns them into the loss and the
logits' gradient in place (Triton on CUDA, `weighted_ce_torch` elsewhere), and two more matmuls
accumulate `grad_hidden` and `grad_weight`. With `reduction="mean"`/`"sum"` this all happens in
the forward pass (Liger-Kernel's fused linear cross-entropy), so backward only scales the stored
gradients by the upstream scalar. With `reduction="none"` the upstream gradient differs per token
and `grad_weight` cannot be rescaled afterwards, so forward computes only the losses (and keeps
each token's log-sum-exp) and backward makes one chunked pass with each token's upstream gradient
folded into its row scale.

Row-sparse head (`trainable_rows=(token_ids, rows)`): the logits use `rows[i]` in place of
`weight[token_ids[i]]`, and the head's gradient is produced for `rows` [n, d] only. The base
weight is read in place (never copied) and, when frozen, gets no gradient; nothing of size
[V, d] is allocated. In each chunk the columns `token_ids` of the logits are overwritten with
`hidden @ rows.T`; in backward those columns of the logits' gradient are taken out (they make
`grad_rows`) and zeroed, so the base-weight matmul sees no contribution from the replaced rows.
The substitution lives in the chunk loop's matmuls, which both backends share.

Vocabulary-parallel mode (`vocab_parallel=VocabParallelOptions(start, end, group)`): this process
holds rows [start, end) of the head; see `vocab_parallel.py`.

Precision: each matmul runs in the input dtype (accumulating in float32 inside the matmul);
softmax, loss and logit gradients are float32 (float64 for float64 inputs); gradients are
accumulated across chunks in the parameters' dtype.

References: Liger-Kernel (Hsu et al., 2024, "Liger Kernel: Efficient Triton Kernels for LLM
Training"), Cut Cross-Entropy (Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language
Models"); the weighted mean follows TL-Training's token-weighted loss.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .dispatch import use_triton
from .weighted_ce_torch import (
    chunk_grad_torch,
    chunk_stats_torch,
    compute_dtype,
    cross_entropy_chunk_torch,
    token_losses,
)

REDUCTIONS = ("mean", "sum", "none")

# CPU: the [chunk, V] logits buffer holds about this many elements (128 MiB in float32; 256
# tokens at V = 128256). 1024-token chunks were no faster there (2 cores), only 4x the memory.
CPU_CHUNK_ELEMENTS = 1 << 25
MIN_CHUNK = 16


class TrainableRows(NamedTuple):
    """Head rows that stand in for the base rows at `token_ids` and are the only head rows with a
    gradient (e.g. the tool rows of a `trainable="tool_rows"` model). A plain `(token_ids, rows)`
    tuple works too."""

    token_ids: Tensor  # [n] int64/int32, distinct vocabulary ids, in any order
    rows: Tensor  # [n, d], same dtype and device as the base weight


class ChunkKernel(NamedTuple):
    """One backend's per-chunk functions (see `weighted_ce_torch.py` for their contracts)."""

    fused: Callable[..., Tuple[Tensor, Optional[Tensor], Tensor]]  # both passes, whole vocabulary
    stats: Callable[..., tuple]  # pass 1 on a vocabulary shard
    grad: Callable[..., Tensor]  # pass 2 from the whole-vocabulary lse


TORCH_KERNEL = ChunkKernel(cross_entropy_chunk_torch, chunk_stats_torch, chunk_grad_torch)


def _shape(t: Optional[Tensor]) -> str:
    return "None" if t is None else str(tuple(t.shape))


def _check_inputs(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    loss_weights: Optional[Tensor],
    bias: Optional[Tensor],
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    chunk_size: Optional[int],
    check_labels: bool = True,
) -> None:
    """Raise ValueError naming the argument and the shapes for anything the op cannot handle.
    `check_labels=False` skips the label range (vocabulary-parallel mode checks it once the whole
    vocabulary size is known)."""
    shapes = (
        f"hidden {_shape(hidden)}, weight {_shape(weight)}, labels {_shape(labels)}, "
        f"loss_weights {_shape(loss_weights)}, bias {_shape(bias)}"
    )
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if not (z_loss >= 0.0 and math.isfinite(z_loss)):
        raise ValueError(f"z_loss must be a finite number >= 0, got {z_loss}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be 2-D [N, d] (flatten batch and sequence first); got {shapes}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight must be [V, d] with the d of hidden; got {shapes}")
    if labels.dim() != 1 or labels.shape[0] != hidden.shape[0]:
        raise ValueError(f"labels must be [N] with the N of hidden; got {shapes}")
    if loss_weights is not None and (loss_weights.dim() != 1 or loss_weights.shape[0] != hidden.shape[0]):
        raise ValueError(f"loss_weights must be [N] with the N of hidden; got {shapes}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(f"bias must be [V] with the V of weight; got {shapes}")
    if weight.shape[0] == 0:
        raise ValueError(f"weight must have at least one row (V >= 1); got {shapes}")

    if not hidden.dtype.is_floating_point:
        raise ValueError(f"hidden must be a floating-point tensor, got dtype {hidden.dtype}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} must match hidden dtype {hidden.dtype}")
    if bias is not None and bias.dtype != hidden.dtype:
        raise ValueError(f"bias dtype {bias.dtype} must match hidden dtype {hidden.dtype}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be int64 or int32, got dtype {labels.dtype} ({shapes})")
    if loss_weights is not None and not loss_weights.dtype.is_floating_point:
        raise ValueError(f"loss_weights must be floating point, got dtype {loss_weights.dtype}")

    named = {"weight": weight, "labels": labels, "loss_weights": loss_weights, "bias": bias}
    for name, tensor in named.items():
        if tensor is not None and tensor.device != hidden.device:
            raise ValueError(f"{name} is on {tensor.device} but hidden is on {hidden.device}")

    if check_labels:
        _check_label_range(labels, weight.shape[0], ignore_index, shapes)
    if loss_weights is not None:
        bad_weights = ~torch.isfinite(loss_weights) | (loss_weights < 0)
        if bool(bad_weights.any()):
            raise ValueError(
                f"loss_weights must be finite and >= 0; found {int(bad_weights.sum())} bad values "
                f"(e.g. {float(loss_weights[bad_weights][0])}); {shapes}"
            )


def _check_label_range(labels: Tensor, vocab: int, ignore_index: int, shapes: str = "") -> None:
    """Raise ValueError unless every label is in [0, vocab) or `ignore_index`."""
    out_of_range = ((labels < 0) | (labels >= vocab)) & (labels != ignore_index)
    if bool(out_of_range.any()):
        bad = labels[out_of_range]
        raise ValueError(
            f"labels must be in [0, {vocab}) or ignore_index={ignore_index}; found {bad.numel()} "
            f"out of range (e.g. {int(bad[0])}){'; ' + shapes if shapes else ''}"
        )


def _check_trainable_rows(trainable_rows: Sequence[Tensor], weight: Tensor, vocab_start: int) -> Tuple[Tensor, Tensor]:
    """Validate `(token_ids, rows)`; return `(ids as int64 columns of weight, rows)`."""
    if not isinstance(trainable_rows, (tuple, list)) or len(trainable_rows) != 2:
        raise ValueError(f"trainable_rows must be a (token_ids, rows) pair, got {type(trainable_rows).__name__}")
    token_ids, rows = trainable_rows
    if not isinstance(token_ids, Tensor) or not isinstance(rows, Tensor):
        raise ValueError("trainable_rows must hold two tensors: token_ids [n] and rows [n, d]")
    shapes = f"token_ids {_shape(token_ids)}, rows {_shape(rows)}, weight {_shape(weight)}"
    if token_ids.dim() != 1 or token_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"trainable_rows token_ids must be a 1-D int64/int32 tensor, got {token_ids.dtype}; {shapes}")
    if rows.dim() != 2 or rows.shape[0] != token_ids.shape[0] or rows.shape[1] != weight.shape[1]:
        raise ValueError(f"trainable_rows rows must be [n, d] with n = len(token_ids) and the d of weight; got {shapes}")
    if rows.dtype != weight.dtype:
        raise ValueError(f"trainable_rows rows dtype {rows.dtype} must match weight dtype {weight.dtype} (cast them first)")
    for name, tensor in (("token_ids", token_ids), ("rows", rows)):
        if tensor.device != weight.device:
            raise ValueError(f"trainable_rows {name} is on {tensor.device} but weight is on {weight.device}")
    vocab_end = vocab_start + weight.shape[0]
    outside = (token_ids < vocab_start) | (token_ids >= vocab_end)
    if bool(outside.any()):
        bad = token_ids[outside]
        raise ValueError(
            f"trainable_rows token_ids must be in [{vocab_start}, {vocab_end}) (the rows of weight this process "
            f"holds); found {bad.numel()} outside (e.g. {int(bad[0])}); {shapes}"
        )
    unique, counts = torch.unique(token_ids, return_counts=True)
    if unique.numel() != token_ids.numel():
        repeated = unique[counts > 1]
        raise ValueError(
            f"trainable_rows token_ids must be distinct; {repeated.numel()} id(s) repeat "
            f"(e.g. {repeated[:5].tolist()}): each vocabulary row can be replaced once"
        )
    return (token_ids.long() - vocab_start), rows


def _select_kernel(backend: str, device: torch.device) -> ChunkKernel:
    """The per-chunk kernel: Triton for CUDA tensors (or forced), the PyTorch path otherwise."""
    if not use_triton(backend, device):
        return TORCH_KERNEL
    from .weighted_ce_triton import chunk_grad_triton, chunk_stats_triton, cross_entropy_chunk_triton

    return ChunkKernel(cross_entropy_chunk_triton, chunk_stats_triton, chunk_grad_triton)


def default_chunk_size(n_tokens: int, vocab: int, hidden_size: int, device: torch.device) -> int:
    """Tokens per chunk. CPU: a fixed logits budget (`CPU_CHUNK_ELEMENTS`). GPU: as many logits as
    the hidden states hold (Liger-Kernel's rule), a power of two, so memory scales with N * d."""
    if device.type == "cuda":
        chunk = _next_power_of_2(max(1, math.ceil(n_tokens / math.ceil(vocab / hidden_size))))
    else:
        chunk = 1 << max(0, (CPU_CHUNK_ELEMENTS // vocab).bit_length() - 1)
    return max(MIN_CHUNK, min(chunk, max(n_tokens, 1)))


def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


class _Head:
    """The LM head as the chunk loop sees it: `weight` [V, d] (+ `bias` [V]) with, optionally,
    `rows` [n, d] standing in for the rows `row_ids` [n] (int64, columns of `weight`)."""

    def __init__(self, weight: Tensor, bias: Optional[Tensor], row_ids: Optional[Tensor], rows: Optional[Tensor]):
        self.weight, self.bias, self.row_ids, self.rows = weight, bias, row_ids, rows
        self.row_bias = None if bias is None or rows is None else bias.index_select(0, row_ids)

    def logits_(self, hidden_chunk: Tensor, out: Tensor) -> Tensor:
        if self.bias is None:
            torch.mm(hidden_chunk, self.weight.t(), out=out)
        else:
            torch.addmm(self.bias, hidden_chunk, self.weight.t(), out=out)
        if self.rows is not None:
            if self.row_bias is None:
                replaced = torch.mm(hidden_chunk, self.rows.t())
            else:
                replaced = torch.addmm(self.row_bias, hidden_chunk, self.rows.t())
            out.index_copy_(1, self.row_ids, replaced)
        return out

    def backprop_(
        self,
        grad_logits: Tensor,
        hidden_chunk: Tensor,
        d_hidden: Optional[Tensor],
        d_weight: Optional[Tensor],
        d_bias: Optional[Tensor],
        d_rows: Optional[Tensor],
    ) -> None:
        """Accumulate the gradients of one chunk (`d_hidden` is that chunk's slice, overwritten).
        `grad_logits` is scratch: its replaced columns are zeroed."""
        if d_bias is not None:
            d_bias.add_(grad_logits.sum(0))
        grad_rows = None
        if self.rows is not None:
            grad_rows = grad_logits.index_select(1, self.row_ids)  # [C, n]
            grad_logits.index_fill_(1, self.row_ids, 0)  # the base rows there are not used
        if d_hidden is not None:
            torch.mm(grad_logits, self.weight, out=d_hidden)
            if grad_rows is not None:
                d_hidden.addmm_(grad_rows, self.rows)
        if d_weight is not None:
            d_weight.addmm_(grad_logits.t(), hidden_chunk)
        if d_rows is not None:
            d_rows.addmm_(grad_rows.t(), hidden_chunk)


class ChunkedResult(NamedTuple):
    losses: Optional[Tensor]  # [N] per-token losses (None when given `lse`)
    lse: Tensor  # [N] whole-vocabulary log-sum-exp of each token
    grad_hidden: Optional[Tensor]
    grad_weight: Optional[Tensor]
    grad_bias: Optional[Tensor]
    grad_rows: Optional[Tensor]


def chunked_linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    labels: Tensor,
    row_scale: Tensor,
    *,
    kernel: ChunkKernel,
    chunk_size: int,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    grad_hidden: bool,
    grad_weight: bool,
    grad_bias: bool,
    rows: Optional[Tuple[Tensor, Tensor]] = None,
    grad_rows: bool = False,
    shard=None,
    lse: Optional[Tensor] = None,
) -> ChunkedResult:
    """One pass over the tokens in chunks: per-token losses and log-sum-exps, and the gradients of
    sum_i row_scale[i] * loss_i w.r.t. hidden, weight, bias and the replacing rows (those asked
    for).

    `rows` is `(row_ids, rows)` with `row_ids` int64 columns of `weight` (see `_Head`). `shard` is
    a `vocab_parallel.VocabShard` when `weight` is one shard of the vocabulary. With `lse` (the
    per-token log-sum-exp of an earlier pass) the loss pass is skipped and only gradients are made:
    that needs no communication across shards but the all-reduce of `grad_hidden`.
    """
    n_tokens = hidden.shape[0]
    head = _Head(weight, bias, *(rows if rows is not None else (None, None)))
    work_dtype = compute_dtype(hidden.dtype)
    compute_grad = grad_hidden or grad_weight or grad_bias or grad_rows
    losses = None if lse is not None else torch.empty(n_tokens, dtype=work_dtype, device=hidden.device)
    lse_out = torch.empty(n_tokens, dtype=work_dtype, device=hidden.device) if lse is None else lse
    d_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if grad_hidden else None
    d_weight = torch.zeros_like(weight, memory_format=torch.contiguous_format) if grad_weight else None
    d_bias = torch.zeros_like(bias) if grad_bias and bias is not None else None
    d_rows = torch.zeros_like(rows[1], memory_format=torch.contiguous_format) if grad_rows and rows is not None else None
    if n_tokens == 0:
        return ChunkedResult(losses, lse_out, d_hidden, d_weight, d_bias, d_rows)

    vocab_start = 0 if shard is None else shard.start
    vocab_total = weight.shape[0] if shard is None else shard.vocab_total
    options = dict(ignore_index=ignore_index, label_smoothing=label_smoothing)
    grad_options = dict(options, z_loss=z_loss, vocab_start=vocab_start, vocab_total=vocab_total)
    # One logits buffer reused by every chunk; the chunk kernel overwrites it with the gradient.
    buffer = torch.empty(min(chunk_size, n_tokens), weight.shape[0], dtype=hidden.dtype, device=hidden.device)
    for start in range(0, n_tokens, chunk_size):
        end = min(start + chunk_size, n_tokens)
        hidden_chunk, labels_chunk, scale_chunk = hidden[start:end], labels[start:end], row_scale[start:end]
        logits = head.logits_(hidden_chunk, buffer[: end - start])
        if lse is not None:  # gradients only, from the stored log-sum-exp
            grad_logits = kernel.grad(logits, labels_chunk, scale_chunk, lse[start:end], None, **grad_options)
        elif shard is None:  # the whole vocabulary here: both passes in one kernel
            chunk_loss, grad_logits, chunk_lse = kernel.fused(
                logits, labels_chunk, scale_chunk, z_loss=z_loss, compute_grad=compute_grad, **options
            )
            losses[start:end] = chunk_loss
            lse_out[start:end] = chunk_lse
        else:  # one shard: pass 1, combine the stats of every shard, pass 2
            stats, state = kernel.stats(logits, labels_chunk, vocab_start=vocab_start, **options)
            stats = shard.combine(stats)
            losses[start:end] = token_losses(stats, labels_chunk, z_loss=z_loss, vocab_total=vocab_total, **options)
            lse_out[start:end] = stats.lse
            grad_logits = (
                kernel.grad(logits, labels_chunk, scale_chunk, stats.lse, state, **grad_options)
                if compute_grad
                else None
            )
        if grad_logits is not None:
            hidden_slice = None if d_hidden is None else d_hidden[start:end]
            head.backprop_(grad_logits, hidden_chunk, hidden_slice, d_weight, d_bias, d_rows)
    if shard is not None and d_hidden is not None:
        shard.all_reduce_hidden_grad_(d_hidden)
    return ChunkedResult(losses, lse_out, d_hidden, d_weight, d_bias, d_rows)


class _FusedLinearWeightedCrossEntropy(torch.autograd.Function):
    """Autograd wrapper: gradients are computed in forward for "mean"/"sum" (backward scales
    them), and in one chunked pass in backward for "none"."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        rows: Optional[Tensor],
        labels: Tensor,
        loss_weights: Optional[Tensor],
        row_ids: Optional[Tensor],
        needs_grad: Tuple[bool, bool, bool, bool],
        options: dict,
    ) -> Tensor:
        n_tokens = hidden.shape[0]
        work_dtype = compute_dtype(hidden.dtype)
        reduction = options["reduction"]
        shard = options["shard"]
        weights = (
            torch.ones(n_tokens, dtype=work_dtype, device=hidden.device)
            if loss_weights is None
            else loss_weights.to(work_dtype)
        )
        # Ignored and zero-weight tokens contribute nothing: drop them before any matmul.
        active = (labels != options["ignore_index"]) & (weights > 0)
        all_active = bool(active.all())
        index = None if all_active else active.nonzero().squeeze(1)
        active_hidden = hidden if index is None else hidden.index_select(0, index)
        active_labels = labels if index is None else labels.index_select(0, index)
        active_weights = weights if index is None else weights.index_select(0, index)
        # Every shard must walk the same chunks: size them by the largest shard.
        chunk_size = options["chunk_size"] or default_chunk_size(
            active_hidden.shape[0], weight.shape[0] if shard is None else shard.max_rows, hidden.shape[1], hidden.device
        )
        pass_options = dict(
            kernel=options["kernel"],
            chunk_size=chunk_size,
            ignore_index=options["ignore_index"],
            label_smoothing=options["label_smoothing"],
            z_loss=options["z_loss"],
            shard=shard,
        )
        ctx.pass_options = pass_options
        ctx.row_ids = row_ids
        pass_options = dict(pass_options, rows=None if rows is None else (row_ids, rows))
        ctx.needs_grad = needs_grad
        ctx.hidden_meta = (hidden.shape, hidden.dtype, hidden.device)

        if reduction == "none":
            result = chunked_linear_cross_entropy(
                active_hidden, weight, bias, active_labels, active_weights,
                grad_hidden=False, grad_weight=False, grad_bias=False, **pass_options,
            )
            out = active_weights * result.losses
            if index is not None:
                out = torch.zeros(n_tokens, dtype=work_dtype, device=hidden.device).index_copy_(0, index, out)
            ctx.per_token_upstream = True
            ctx.stored_grads = None
            ctx.save_for_backward(active_hidden, weight, bias, rows, active_labels, active_weights, index, result.lse)
            return out.to(_result_dtype(hidden.dtype))

        total_weight = active_weights.sum()
        if reduction == "mean":
            # An empty or all-zero-weight batch has no active token: loss 0, zero gradients.
            denominator = total_weight if active_weights.numel() > 0 else total_weight.new_ones(())
        else:
            denominator = total_weight.new_ones(())
        row_scale = active_weights / denominator
        result = chunked_linear_cross_entropy(
            active_hidden, weight, bias, active_labels, row_scale,
            grad_hidden=needs_grad[0], grad_weight=needs_grad[1], grad_bias=needs_grad[2], grad_rows=needs_grad[3],
            **pass_options,
        )
        loss = (row_scale * result.losses).sum()
        ctx.per_token_upstream = False
        ctx.stored_grads = [
            _scatter_rows(result.grad_hidden, index, ctx.hidden_meta), result.grad_weight, result.grad_bias,
            result.grad_rows,
        ]
        ctx.save_for_backward(active_hidden, weight, bias, rows, active_labels, row_scale, index, result.lse)
        return loss.to(_result_dtype(hidden.dtype))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        grads = ctx.stored_grads
        if grads is not None:
            # First backward of "mean"/"sum": scale the gradients computed in forward in place and
            # drop our reference, so that autograd can take the tensors without copying them.
            ctx.stored_grads = None
            scale = grad_output.to(compute_dtype(grad_output.dtype))
            d_hidden, d_weight, d_bias, d_rows = [None if g is None else g.mul_(scale) for g in grads]
        else:
            # "none", or a repeated backward (retain_graph): one chunked pass with the upstream
            # gradient folded into each token's row scale.
            d_hidden, d_weight, d_bias, d_rows = _recompute_gradients(ctx, grad_output)
        return d_hidden, d_weight, d_bias, d_rows, None, None, None, None, None


def _scatter_rows(active_rows: Optional[Tensor], index: Optional[Tensor], meta: tuple) -> Optional[Tensor]:
    """Put the gradient rows of the active tokens back at their positions among all N tokens."""
    if active_rows is None or index is None:
        return active_rows
    shape, dtype, device = meta
    return torch.zeros(shape, dtype=dtype, device=device).index_copy_(0, index, active_rows)


def _recompute_gradients(ctx, grad_output: Tensor) -> list:
    active_hidden, weight, bias, rows, active_labels, row_scale, index, lse = ctx.saved_tensors
    upstream = grad_output.to(row_scale.dtype)
    if ctx.per_token_upstream and index is not None:
        upstream = upstream.index_select(0, index)
    result = chunked_linear_cross_entropy(
        active_hidden, weight, bias, active_labels, row_scale * upstream, lse=lse,
        rows=None if rows is None else (ctx.row_ids, rows),
        grad_hidden=ctx.needs_grad[0], grad_weight=ctx.needs_grad[1], grad_bias=ctx.needs_grad[2],
        grad_rows=ctx.needs_grad[3], **ctx.pass_options,
    )
    return [_scatter_rows(result.grad_hidden, index, ctx.hidden_meta), result.grad_weight, result.grad_bias,
            result.grad_rows]


def _result_dtype(dtype: torch.dtype) -> torch.dtype:
    """The loss is returned in float32 for half-precision inputs, in the input dtype otherwise."""
    return torch.promote_types(dtype, torch.float32)


def fused_linear_weighted_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    loss_weights: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
    *,
    trainable_rows: Optional[Tuple[Tensor, Tensor]] = None,
    vocab_parallel=None,
) -> Tensor:
    """Token-weighted cross-entropy of `hidden @ weight.T + bias` without the [N, V] logits.

    Args:
        hidden: [N, d] final hidden states (flatten batch and sequence; shift labels yourself).
        weight: [V, d] LM-head weight, same dtype and device as `hidden` (with `vocab_parallel`:
            this process's rows [start, end) of it).
        labels: [N] int64/int32 targets in [0, V), or `ignore_index`.
        loss_weights: [N] finite weights >= 0 (None: all 1). Not differentiated.
        bias: optional [V] LM-head bias (with `vocab_parallel`: this process's [end - start]).
        ignore_index: label value whose token contributes no loss and no gradient.
        reduction: "mean" = sum_i w_i l_i / sum_i w_i over non-ignored tokens (TL-Training's
            normalization; 0 with zero gradients when nothing is left), "sum" = sum_i w_i l_i,
            "none" = [N] per-token w_i l_i (0 at ignored tokens).
        label_smoothing: eps in [0, 1], as in `torch.nn.functional.cross_entropy`.
        z_loss: coefficient lam of the auxiliary lam * logsumexp(logits)^2 added to each token's
            loss (PaLM), 0 to disable.
        chunk_size: tokens per chunk (bounds memory to chunk_size x V logits); None picks one.
        backend: "auto" (Triton for CUDA tensors when Triton is installed, else PyTorch),
            "torch" or "triton" (under TRITON_INTERPRET=1 the Triton kernel runs on CPU tensors).
        trainable_rows: `(token_ids [n], rows [n, d])` (or a `TrainableRows`): the logit of
            vocabulary id `token_ids[i]` uses `rows[i]` instead of `weight[token_ids[i]]`. Ids are
            distinct, in any order, in [0, V) (with `vocab_parallel`: global ids in [start, end)).
            `rows` gets the head's gradient; `weight` is read in place, never copied, and gets a
            gradient only if it requires one (then a dense one, zero at `token_ids`): pass a frozen
            `weight` and no [V, d] tensor is ever allocated.
        vocab_parallel: a `VocabParallelOptions(start, end, group)` when the head is split by rows
            across the processes of a `torch.distributed` group (Megatron-LM's vocabulary-parallel
            cross-entropy); every process passes the same `hidden`, `labels` and `loss_weights`
            and gets the same loss; see `toolken.kernels.vocab_parallel`.

    Returns:
        A scalar (float32 for half inputs) or, with reduction="none", an [N] tensor; differentiable
        w.r.t. `hidden`, `weight`, `bias` and `rows` (a repeated backward, retain_graph,
        recomputes).

    Raises:
        ValueError: bad shapes, dtypes or devices, labels outside [0, V) other than
        `ignore_index`, negative or non-finite `loss_weights`, repeated or out-of-range
        `trainable_rows` ids, shards that do not tile the vocabulary, unknown options.

    Example:
        >>> loss = fused_linear_weighted_cross_entropy(h, lm_head.weight, labels, weights)
        >>> loss.backward()
        >>> # only the tool rows of a frozen head are trained:
        >>> loss = fused_linear_weighted_cross_entropy(h, lm_head.weight, labels, weights,
        ...                                            trainable_rows=(tool_ids, tool_rows))
    """
    grad_enabled = torch.is_grad_enabled()
    shard = None
    check_args = (hidden, weight, labels, loss_weights, bias, ignore_index, reduction, label_smoothing, z_loss,
                  chunk_size)
    if vocab_parallel is None:
        _check_inputs(*check_args)
        kernel = _select_kernel(backend, hidden.device)
        row_ids, rows = (None, None) if trainable_rows is None else _check_trainable_rows(trainable_rows, weight, 0)
    else:
        # A bad input on one process must not leave the others waiting in a collective: check
        # locally, then let `open_vocab_shard` raise on every process if any of them failed.
        from .vocab_parallel import open_vocab_shard

        error, row_ids, rows, kernel = None, None, None, None
        try:
            _check_inputs(*check_args, check_labels=False)
            kernel = _select_kernel(backend, hidden.device)
            if trainable_rows is not None:
                row_ids, rows = _check_trainable_rows(trainable_rows, weight, vocab_parallel.start)
        except Exception as exc:  # re-raised below, on this process, after the others learn of it
            error = exc
        shard = open_vocab_shard(
            vocab_parallel, weight=weight, hidden=hidden, labels=labels, loss_weights=loss_weights,
            ignore_index=ignore_index, grad_hidden=grad_enabled and hidden.requires_grad, local_error=error,
        )
        _check_label_range(labels, shard.vocab_total, ignore_index)
    needs_grad = (
        grad_enabled and hidden.requires_grad,
        grad_enabled and weight.requires_grad,
        grad_enabled and bias is not None and bias.requires_grad,
        grad_enabled and rows is not None and rows.requires_grad,
    )
    options = dict(
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=float(label_smoothing),
        z_loss=float(z_loss),
        chunk_size=chunk_size,
        kernel=kernel,
        shard=shard,
    )
    return _FusedLinearWeightedCrossEntropy.apply(
        hidden, weight, bias, rows, labels, loss_weights, row_ids, needs_grad, options
    )
