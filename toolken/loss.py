"""Training losses of toolken: the token-weighted LM loss through the fused kernel, and the prior
regularizer that keeps tool rows near their initialization.

`weighted_loss` runs only the decoder (to the final, normalized hidden states) and hands them with
the LM head weight to `toolken.kernels.fused_linear_weighted_cross_entropy`, which processes the
tokens in chunks, so training never builds the [tokens x vocab] logits of the batch.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from .errors import ToolkenError
from .kernels import VocabParallelOptions, fused_linear_weighted_cross_entropy
from .modeling import decoder_stack, unwrap_peft
from .rows import prior, prior_distance, tool_rows
from .weights import IGNORE_INDEX

ROLES = ("input", "output")  # the embeddings that hold tool rows


def final_hidden_states(model: Any, input_ids: torch.Tensor,
                        attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[B, T, d] hidden states that the LM head reads (after the final norm), without the head.

    Uses the decoder (`get_decoder()`) when the model exposes one; otherwise runs the full model
    with ``output_hidden_states=True, logits_to_keep=1`` (logits for one position only)."""
    decoder = decoder_stack(model)
    if decoder is not None:
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                logits_to_keep=1, use_cache=False)
    return out.hidden_states[-1]


def logit_scale(model: Any) -> float:
    """Scale applied to hidden states so that `hidden @ W.T` equals the model's logits."""
    config = unwrap_peft(model).config.get_text_config()
    if getattr(config, "final_logit_softcapping", None):
        raise ToolkenError(f"{type(unwrap_peft(model)).__name__} soft-caps its logits "
                           "(config.final_logit_softcapping), which the fused linear cross-entropy does "
                           "not model; train it with the model's own loss instead")
    scale = 1.0
    if getattr(config, "logit_scale", None) is not None:  # Cohere multiplies the logits
        scale *= float(config.logit_scale)
    if getattr(config, "logits_scaling", None) not in (None, 1, 1.0):  # Granite divides them
        scale /= float(config.logits_scaling)
    return scale


def shifted_targets(labels: torch.Tensor, loss_weights: Optional[torch.Tensor] = None,
                    attention_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Next-token targets: position t predicts ``labels[t + 1]``. Returns flattened
    ``(labels [B*(T-1)], weights [B*(T-1)] or None)``, -100 where the target is padding."""
    target = labels[:, 1:]
    if attention_mask is not None:
        target = target.masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
    weights = None if loss_weights is None else loss_weights[:, 1:].to(torch.float32)
    return target.reshape(-1), None if weights is None else weights.reshape(-1)


def _check_batch(input_ids: torch.Tensor, labels: torch.Tensor, loss_weights: Optional[torch.Tensor],
                 attention_mask: Optional[torch.Tensor]) -> None:
    if input_ids.dim() != 2:
        raise ToolkenError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    for name, t in (("labels", labels), ("loss_weights", loss_weights), ("attention_mask", attention_mask)):
        if t is not None and t.shape != input_ids.shape:
            raise ToolkenError(f"{name} has shape {tuple(t.shape)} but input_ids has {tuple(input_ids.shape)}; "
                               "they must match (labels unshifted, as in transformers)")


def weighted_loss(model: Any, input_ids: torch.Tensor, labels: torch.Tensor,
                  loss_weights: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                  **fused_kwargs: Any) -> torch.Tensor:
    """Token-weighted next-token cross-entropy of a causal LM, without materializing logits.

    Args:
        model: a (toolken-extended) transformers causal LM, optionally PEFT-wrapped.
        input_ids, labels, loss_weights, attention_mask: [B, T] each; `labels` are unshifted
            (``labels[t]`` is the token at t, -100 where not trained); ``loss_weights[t]`` weighs
            the prediction of ``labels[t]`` (None = 1 everywhere).
        **fused_kwargs: passed to `toolken.kernels.fused_linear_weighted_cross_entropy`
            (``reduction`` — default ``"mean"`` = Σ wᵢℓᵢ / Σ wᵢ —, ``label_smoothing``, ``z_loss``,
            ``chunk_size``, ``backend``), and ``vocab_parallel``:

            ``vocab_parallel=toolken.kernels.VocabParallelOptions(start, end, group)`` splits the
            LM head by vocabulary rows across the processes of a `torch.distributed` group: this
            process computes the logits of ids [start, end) only (its rows of the head: a view of
            them when the model holds the whole head, the head as is when it holds just those
            rows), and two all-reduces per chunk combine the slices, so every process gets the
            loss over the whole vocabulary. It is for processes that see the *same tokens* (a
            tensor-parallel group, or hidden states all-gathered across data-parallel ranks):
            every process of the group passes the same batch. The hidden states' gradient is
            all-reduced inside the op; each process's tool rows get the gradient of the ids in
            its slice only (sum the row gradients across the group when the rows are replicated).
            Not needed for DDP or FSDP data parallelism, where each process has its own batch and
            the whole head (see `toolken.Trainer`).

    With ``trainable="tool_rows"`` the head is row-sparse (`hidden_states_loss`): only the tool
    rows get a gradient and no [V, d] tensor is made.

    Returns:
        The loss (a scalar, or per-target losses [B*(T-1)] with ``reduction="none"``).
    """
    _check_batch(input_ids, labels, loss_weights, attention_mask)
    hidden = final_hidden_states(model, input_ids, attention_mask)
    return hidden_states_loss(model, hidden, labels, loss_weights, attention_mask, **fused_kwargs)


def hidden_states_loss(model: Any, hidden: torch.Tensor, labels: torch.Tensor,
                       loss_weights: Optional[torch.Tensor] = None,
                       attention_mask: Optional[torch.Tensor] = None, *,
                       vocab_parallel: Optional[VocabParallelOptions] = None, **fused_kwargs: Any) -> torch.Tensor:
    """The loss of `weighted_loss` from final hidden states [B, T, d] already computed: shifts the
    targets and calls the fused kernel with the LM head.

    With ``trainable="tool_rows"`` (the model has `ToolRows`) the head is row-sparse: the kernel
    reads the frozen head weight in place and takes the tool rows as ``trainable_rows``, so no
    [V, d] copy or gradient is ever made, and the head weight gets no ``.grad``; the hidden
    states are cast to the head's dtype (never the [V, d] weight). Otherwise (``"full"``, PEFT)
    the head weight itself is passed (a PEFT wrapper's merged weight with its trainable tokens).
    ``vocab_parallel`` is described in `weighted_loss`."""
    scale = logit_scale(model)
    if scale != 1.0:
        hidden = hidden * scale
    target, weights = shifted_targets(labels, loss_weights, attention_mask)
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    target = target.to(hidden.device)
    weights = None if weights is None else weights.to(hidden.device)
    base = unwrap_peft(model)
    head = base.get_output_embeddings()
    if head is None:
        raise ToolkenError(f"{type(base).__name__} has no output embeddings (LM head)")
    weight, bias = head.weight, getattr(head, "bias", None)
    _check_head(base, weight, hidden.shape[-1], vocab_parallel)
    rows = tool_rows(base)
    if rows is None:
        trainable = None
        weight = weight.to(hidden.dtype)
        bias = None if bias is None else bias.to(hidden.dtype)
    else:
        hidden = hidden.to(weight.dtype)
        trainable = (rows.token_ids, rows.output_rows.to(weight.dtype))
    if vocab_parallel is not None:
        weight, bias, trainable = _vocab_slice(weight, bias, trainable, vocab_parallel)
    return fused_linear_weighted_cross_entropy(hidden, weight, target, weights, bias=bias, trainable_rows=trainable,
                                               vocab_parallel=vocab_parallel, **fused_kwargs)


def _check_head(model: Any, weight: torch.Tensor, hidden_size: int,
                vocab_parallel: Optional[VocabParallelOptions]) -> None:
    """Refuse an LM head weight that is not the whole [V, d] matrix (or, with `vocab_parallel`,
    this process's rows of it): e.g. an FSDP shard read outside the unit's forward."""
    rows = tool_rows(model)
    n = weight.shape[0] if weight.dim() == 2 and weight.shape[1] == hidden_size else -1
    if vocab_parallel is None:
        whole = n > 0 and (rows is None or n == rows.lookup.shape[0])
    else:  # this process's rows, or the whole head to take them from
        whole = n == vocab_parallel.end - vocab_parallel.start or n >= vocab_parallel.end
    sharded = getattr(weight, "device_mesh", None) is not None  # an FSDP2 DTensor (its shape is the global one)
    if sharded or not whole:
        what = "a sharded DTensor" if sharded else f"of shape {tuple(weight.shape)}"
        raise ToolkenError(
            f"the LM head weight of {type(model).__name__} is {what}, not the whole [vocab, {hidden_size}] matrix "
            "the fused loss needs: under FSDP the head is sharded outside its unit's forward. Train with "
            "toolken.Trainer, which computes the loss inside the forward, with the head in the root FSDP unit "
            "(FSDP1: TRANSFORMER_BASED_WRAP and use_orig_params=True) or under accelerate's FSDP2 (it keeps the "
            "final norm + head unit unsharded after forward); or pass vocab_parallel= with this process's rows")


def _vocab_slice(weight: torch.Tensor, bias: Optional[torch.Tensor],
                 trainable: Optional[tuple[torch.Tensor, torch.Tensor]],
                 options: VocabParallelOptions) -> tuple[torch.Tensor, Optional[torch.Tensor], Any]:
    """This process's rows [start, end) of the head (a view when the head is whole, the head
    itself when it already holds just those rows) and the trainable rows whose ids fall there."""
    start, end = options.start, options.end
    if weight.shape[0] != end - start:
        weight = weight[start:end]
        bias = None if bias is None else bias[start:end]
    if trainable is not None:
        ids, rows = trainable
        inside = (ids >= start) & (ids < end)
        trainable = (ids[inside], rows[inside]) if bool(inside.any()) else None
    return weight, bias, trainable


def prior_regularization(model: Any, lam: float = 1e-2, squared: bool = False,
                         roles: Sequence[str] = ROLES) -> torch.Tensor:
    """``λ·‖W_tool − W_prior‖_F`` over the tool rows, input and (when untied) output embedding.

    The prior is the rows as `toolken.extend` initialized them (`toolken.prior`); the current
    rows are the trainable `ToolRows` when ``trainable="tool_rows"``, else the embedding rows of
    the tool token ids. Re-Initialization Token Learning (Li et al. 2025, "Re-Initialization Token
    Learning for Tool-Augmented Large Language Models", arXiv:2506.14248) regularizes the learned
    tool embeddings towards their prior with the unsquared Frobenius norm and λ = 1e-2; with
    ``squared=True`` the norm is squared (an L2 / weight-decay-towards-prior penalty). The input
    and output terms are summed.

    `roles` picks the terms (``("input",)``, ``("output",)``, or both, the default); only the
    module of a picked role is read, so each term can be computed while that module's weights are
    at hand (`toolken.Trainer` does so under FSDP, where the input embedding may be its own unit).
    Raises `ToolkenError` when no picked role has tool rows (e.g. only ``"output"`` when tied).
    """
    if lam < 0:
        raise ToolkenError(f"prior_regularization: lam must be >= 0, got {lam}")
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ToolkenError(f"prior_regularization: roles must be among {ROLES}, got {sorted(unknown)}")
    base = unwrap_peft(model)
    p = prior(base)
    total: Optional[torch.Tensor] = None
    for role in ROLES:
        if role not in roles or p.get(role) is None:
            continue
        current = _role_rows(base, role, p["token_ids"])
        if current is None:
            continue
        norm = prior_distance(current, p[role], squared)
        total = norm if total is None else total + norm
    if total is None:
        raise ToolkenError(f"prior_regularization: the model has no {'/'.join(roles)} tool rows to regularize")
    return lam * total


def _role_rows(model: Any, role: str, token_ids: torch.Tensor) -> Optional[torch.Tensor]:
    """The current tool rows of one role in `token_ids` order, reading only that role's module:
    the `ToolRows`, else the input embedding or LM head weight (None when there is none)."""
    rows = tool_rows(model)
    if rows is not None:
        table = rows.input if role == "input" else rows.output
        return None if table is None else table[rows.lookup[token_ids.to(rows.lookup.device)]]
    module = model.get_input_embeddings() if role == "input" else model.get_output_embeddings()
    if module is None:
        return None
    weight = module.weight
    return weight[token_ids.to(weight.device)]


__all__ = ["weighted_loss", "hidden_states_loss", "prior_regularization", "final_hidden_states", "shifted_targets"]
