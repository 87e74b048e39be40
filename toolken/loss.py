"""Training losses of toolken: the token-weighted LM loss through the fused kernel, and the prior
regularizer that keeps tool rows near their initialization.

`weighted_loss` runs only the decoder (to the final, normalized hidden states) and hands them with
the LM head weight to `toolken.kernels.fused_linear_weighted_cross_entropy`, which processes the
tokens in chunks, so training never builds the [tokens x vocab] logits of the batch.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .errors import ToolkenError
from .kernels import fused_linear_weighted_cross_entropy
from .modeling import decoder_stack, unwrap_peft
from .rows import current_rows, output_weight, prior, prior_distance
from .weights import IGNORE_INDEX


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
            ``chunk_size``, ``backend``).

    Returns:
        The loss (a scalar, or per-target losses [B*(T-1)] with ``reduction="none"``).
    """
    _check_batch(input_ids, labels, loss_weights, attention_mask)
    hidden = final_hidden_states(model, input_ids, attention_mask)
    return hidden_states_loss(model, hidden, labels, loss_weights, attention_mask, **fused_kwargs)


def hidden_states_loss(model: Any, hidden: torch.Tensor, labels: torch.Tensor,
                       loss_weights: Optional[torch.Tensor] = None,
                       attention_mask: Optional[torch.Tensor] = None, **fused_kwargs: Any) -> torch.Tensor:
    """The loss of `weighted_loss` from final hidden states [B, T, d] already computed: shifts the
    targets and calls the fused kernel with the LM head weight (`toolken.output_weight`)."""
    scale = logit_scale(model)
    if scale != 1.0:
        hidden = hidden * scale
    target, weights = shifted_targets(labels, loss_weights, attention_mask)
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    base = unwrap_peft(model)
    weight = output_weight(base)
    bias = getattr(base.get_output_embeddings(), "bias", None)
    return fused_linear_weighted_cross_entropy(hidden, weight.to(hidden.dtype), target.to(hidden.device),
                                               None if weights is None else weights.to(hidden.device), bias=bias,
                                               **fused_kwargs)


def prior_regularization(model: Any, lam: float = 1e-2, squared: bool = False) -> torch.Tensor:
    """``λ·‖W_tool − W_prior‖_F`` over the tool rows, input and (when untied) output embedding.

    The prior is the rows as `toolken.extend` initialized them (`toolken.prior`); the current
    rows are the trainable `ToolRows` when ``trainable="tool_rows"``, else the embedding rows of
    the tool token ids. Re-Initialization Token Learning (Li et al. 2025, "Re-Initialization Token
    Learning for Tool-Augmented Large Language Models", arXiv:2506.14248) regularizes the learned
    tool embeddings towards their prior with the unsquared Frobenius norm and λ = 1e-2; with
    ``squared=True`` the norm is squared (an L2 / weight-decay-towards-prior penalty). The input
    and output terms are summed.
    """
    if lam < 0:
        raise ToolkenError(f"prior_regularization: lam must be >= 0, got {lam}")
    base = unwrap_peft(model)
    p = prior(base)
    rows = current_rows(base)
    total: Optional[torch.Tensor] = None
    for role in ("input", "output"):
        if p.get(role) is None or role not in rows:
            continue
        norm = prior_distance(rows[role], p[role], squared)
        total = norm if total is None else total + norm
    if total is None:
        raise ToolkenError("prior_regularization: the model has no tool rows to regularize")
    return lam * total


__all__ = ["weighted_loss", "hidden_states_loss", "prior_regularization", "final_hidden_states", "shifted_targets"]
