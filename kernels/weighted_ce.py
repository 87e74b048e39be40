"""Fused linear + token-weighted cross-entropy that never materializes the [N, V] logits.

The public op is `fused_linear_weighted_cross_entropy`. Tokens are processed in chunks: for each
chunk the logits are computed (one matmul), the per-chunk kernel turns them into the loss and the
logits' gradient in place (Triton on CUDA, `weighted_ce_torch` elsewhere), and two more matmuls
accumulate `grad_hidden` and `grad_weight`. With `reduction="mean"`/`"sum"` this all happens in
the forward pass (Liger-Kernel's fused linear cross-entropy), so backward only scales the stored
gradients by the upstream scalar. With `reduction="none"` the upstream gradient differs per token
and `grad_weight` cannot be rescaled afterwards, so forward computes only the losses and backward
makes one chunked pass with each token's upstream gradient folded into its row scale.

Precision: each matmul runs in the input dtype (accumulating in float32 inside the matmul);
softmax, loss and logit gradients are float32 (float64 for float64 inputs); gradients are
accumulated across chunks in the parameters' dtype.

References: Liger-Kernel (Hsu et al., 2024, "Liger Kernel: Efficient Triton Kernels for LLM
Training"), Cut Cross-Entropy (Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language
Models"); the weighted mean follows TL-Training's token-weighted loss.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from .weighted_ce_torch import compute_dtype, cross_entropy_chunk_torch

REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "torch", "triton")

# CPU: the [chunk, V] logits buffer holds about this many elements (128 MiB in float32; 256
# tokens at V = 128256). 1024-token chunks were no faster there (2 cores), only 4x the memory.
CPU_CHUNK_ELEMENTS = 1 << 25
MIN_CHUNK = 16

ChunkFn = Callable[..., Tuple[Tensor, Optional[Tensor]]]


def triton_available() -> bool:
    """Whether Triton can be imported (it is optional)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


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
) -> None:
    """Raise ValueError naming the argument and the shapes for anything the op cannot handle."""
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

    vocab = weight.shape[0]
    out_of_range = ((labels < 0) | (labels >= vocab)) & (labels != ignore_index)
    if bool(out_of_range.any()):
        bad = labels[out_of_range]
        raise ValueError(
            f"labels must be in [0, {vocab}) or ignore_index={ignore_index}; found {bad.numel()} "
            f"out of range (e.g. {int(bad[0])}); {shapes}"
        )
    if loss_weights is not None:
        bad_weights = ~torch.isfinite(loss_weights) | (loss_weights < 0)
        if bool(bad_weights.any()):
            raise ValueError(
                f"loss_weights must be finite and >= 0; found {int(bad_weights.sum())} bad values "
                f"(e.g. {float(loss_weights[bad_weights][0])}); {shapes}"
            )


def _select_chunk_fn(backend: str, device: torch.device) -> ChunkFn:
    """The per-chunk kernel: Triton for CUDA tensors (or forced), the PyTorch path otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    use_triton = backend == "triton" or (backend == "auto" and device.type == "cuda" and triton_available())
    if not use_triton:
        return cross_entropy_chunk_torch
    if not triton_available():
        raise ValueError('backend="triton" needs the triton package (pip install "toolken[triton]")')
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f'backend="triton" needs CUDA tensors (got {device}); set TRITON_INTERPRET=1 before '
            "importing toolken to run the kernel on the CPU for testing"
        )
    from .weighted_ce_triton import cross_entropy_chunk_triton

    return cross_entropy_chunk_triton


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


def chunked_linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    labels: Tensor,
    row_scale: Tensor,
    *,
    chunk_fn: ChunkFn,
    chunk_size: int,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    grad_hidden: bool,
    grad_weight: bool,
    grad_bias: bool,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """One pass over the tokens in chunks: per-token losses, and the gradients of
    sum_i row_scale[i] * loss_i w.r.t. hidden, weight and bias (those asked for).

    Returns `(loss [N], grad_hidden or None, grad_weight or None, grad_bias or None)`.
    """
    n_tokens = hidden.shape[0]
    vocab = weight.shape[0]
    compute_grad = grad_hidden or grad_weight or grad_bias
    losses = torch.empty(n_tokens, dtype=compute_dtype(hidden.dtype), device=hidden.device)
    d_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if grad_hidden else None
    d_weight = torch.zeros_like(weight, memory_format=torch.contiguous_format) if grad_weight else None
    d_bias = torch.zeros_like(bias) if grad_bias and bias is not None else None
    if n_tokens == 0:
        return losses, d_hidden, d_weight, d_bias

    # One logits buffer reused by every chunk; the chunk kernel overwrites it with the gradient.
    buffer = torch.empty(min(chunk_size, n_tokens), vocab, dtype=hidden.dtype, device=hidden.device)
    weight_t = weight.t()
    for start in range(0, n_tokens, chunk_size):
        end = min(start + chunk_size, n_tokens)
        hidden_chunk = hidden[start:end]
        logits = buffer[: end - start]
        if bias is None:
            torch.mm(hidden_chunk, weight_t, out=logits)
        else:
            torch.addmm(bias, hidden_chunk, weight_t, out=logits)
        chunk_loss, grad_logits = chunk_fn(
            logits,
            labels[start:end],
            row_scale[start:end],
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            compute_grad=compute_grad,
        )
        losses[start:end] = chunk_loss
        if grad_logits is None:
            continue
        if d_hidden is not None:
            torch.mm(grad_logits, weight, out=d_hidden[start:end])
        if d_weight is not None:
            d_weight.addmm_(grad_logits.t(), hidden_chunk)
        if d_bias is not None:
            d_bias.add_(grad_logits.sum(0))
    return losses, d_hidden, d_weight, d_bias


class _FusedLinearWeightedCrossEntropy(torch.autograd.Function):
    """Autograd wrapper: gradients are computed in forward for "mean"/"sum" (backward scales
    them), and in one chunked pass in backward for "none"."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        labels: Tensor,
        loss_weights: Optional[Tensor],
        needs_grad: Tuple[bool, bool, bool],
        options: dict,
    ) -> Tensor:
        n_tokens = hidden.shape[0]
        work_dtype = compute_dtype(hidden.dtype)
        reduction = options["reduction"]
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
        chunk_size = options["chunk_size"] or default_chunk_size(
            active_hidden.shape[0], weight.shape[0], hidden.shape[1], hidden.device
        )
        pass_options = dict(
            chunk_fn=options["chunk_fn"],
            chunk_size=chunk_size,
            ignore_index=options["ignore_index"],
            label_smoothing=options["label_smoothing"],
            z_loss=options["z_loss"],
        )
        ctx.pass_options = pass_options
        ctx.needs_grad = needs_grad
        ctx.hidden_meta = (hidden.shape, hidden.dtype, hidden.device)

        if reduction == "none":
            token_losses, _, _, _ = chunked_linear_cross_entropy(
                active_hidden, weight, bias, active_labels, active_weights,
                grad_hidden=False, grad_weight=False, grad_bias=False, **pass_options,
            )
            out = active_weights * token_losses
            if index is not None:
                out = torch.zeros(n_tokens, dtype=work_dtype, device=hidden.device).index_copy_(0, index, out)
            ctx.per_token_upstream = True
            ctx.stored_grads = None
            ctx.save_for_backward(active_hidden, weight, bias, active_labels, active_weights, index)
            return out.to(_result_dtype(hidden.dtype))

        total_weight = active_weights.sum()
        if reduction == "mean":
            # An empty or all-zero-weight batch has no active token: loss 0, zero gradients.
            denominator = total_weight if active_weights.numel() > 0 else total_weight.new_ones(())
        else:
            denominator = total_weight.new_ones(())
        row_scale = active_weights / denominator
        token_losses, d_hidden, d_weight, d_bias = chunked_linear_cross_entropy(
            active_hidden, weight, bias, active_labels, row_scale,
            grad_hidden=needs_grad[0], grad_weight=needs_grad[1], grad_bias=needs_grad[2], **pass_options,
        )
        loss = (row_scale * token_losses).sum()
        ctx.per_token_upstream = False
        ctx.stored_grads = [_scatter_rows(d_hidden, index, ctx.hidden_meta), d_weight, d_bias]
        ctx.save_for_backward(active_hidden, weight, bias, active_labels, row_scale, index)
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
            d_hidden, d_weight, d_bias = [None if g is None else g.mul_(scale) for g in grads]
        else:
            # "none", or a repeated backward (retain_graph): one chunked pass with the upstream
            # gradient folded into each token's row scale.
            d_hidden, d_weight, d_bias = _recompute_gradients(ctx, grad_output)
        return d_hidden, d_weight, d_bias, None, None, None, None


def _scatter_rows(active_rows: Optional[Tensor], index: Optional[Tensor], meta: tuple) -> Optional[Tensor]:
    """Put the gradient rows of the active tokens back at their positions among all N tokens."""
    if active_rows is None or index is None:
        return active_rows
    shape, dtype, device = meta
    return torch.zeros(shape, dtype=dtype, device=device).index_copy_(0, index, active_rows)


def _recompute_gradients(ctx, grad_output: Tensor) -> list:
    active_hidden, weight, bias, active_labels, row_scale, index = ctx.saved_tensors
    upstream = grad_output.to(row_scale.dtype)
    if ctx.per_token_upstream and index is not None:
        upstream = upstream.index_select(0, index)
    _, d_hidden, d_weight, d_bias = chunked_linear_cross_entropy(
        active_hidden, weight, bias, active_labels, row_scale * upstream,
        grad_hidden=ctx.needs_grad[0], grad_weight=ctx.needs_grad[1], grad_bias=ctx.needs_grad[2],
        **ctx.pass_options,
    )
    return [_scatter_rows(d_hidden, index, ctx.hidden_meta), d_weight, d_bias]


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
) -> Tensor:
    """Token-weighted cross-entropy of `hidden @ weight.T + bias` without the [N, V] logits.

    Args:
        hidden: [N, d] final hidden states (flatten batch and sequence; shift labels yourself).
        weight: [V, d] LM-head weight, same dtype and device as `hidden`.
        labels: [N] int64/int32 targets in [0, V), or `ignore_index`.
        loss_weights: [N] finite weights >= 0 (None: all 1). Not differentiated.
        bias: optional [V] LM-head bias.
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

    Returns:
        A scalar (float32 for half inputs) or, with reduction="none", an [N] tensor; differentiable
        w.r.t. `hidden`, `weight` and `bias` (a repeated backward, retain_graph, recomputes).

    Raises:
        ValueError: bad shapes, dtypes or devices, labels outside [0, V) other than
        `ignore_index`, negative or non-finite `loss_weights`, unknown options.

    Example:
        >>> loss = fused_linear_weighted_cross_entropy(h, lm_head.weight, labels, weights)
        >>> loss.backward()
    """
    _check_inputs(
        hidden, weight, labels, loss_weights, bias, ignore_index, reduction, label_smoothing, z_loss, chunk_size
    )
    chunk_fn = _select_chunk_fn(backend, hidden.device)
    grad_enabled = torch.is_grad_enabled()
    needs_grad = (
        grad_enabled and hidden.requires_grad,
        grad_enabled and weight.requires_grad,
        grad_enabled and bias is not None and bias.requires_grad,
    )
    options = dict(
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=float(label_smoothing),
        z_loss=float(z_loss),
        chunk_size=chunk_size,
        chunk_fn=chunk_fn,
    )
    return _FusedLinearWeightedCrossEntropy.apply(hidden, weight, bias, labels, loss_weights, needs_grad, options)
