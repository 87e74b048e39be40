"""Training tool tokens with `transformers.Trainer` without building full logits.

Two ways, same loss (`toolken.weighted_loss`: decoder hidden states + the fused linear
token-weighted cross-entropy, plus an optional `toolken.prior_regularization` term):

1. `toolken.Trainer` — a `transformers.Trainer` subclass. Use it like the stock one; batches
   carry ``loss_weights`` (see `toolken.data`), which it keeps even with
   ``remove_unused_columns=True``::

       trainer = toolken.Trainer(model=model, args=TrainingArguments(...), train_dataset=records,
                                 processing_class=tokenizer, prior_lambda=1e-2)
       trainer.train()

2. `toolken.compute_loss_func(model)` — for a stock `transformers.Trainer` (or a subclass you
   already have)::

       trainer = transformers.Trainer(
           model=model, args=TrainingArguments(..., remove_unused_columns=False),
           train_dataset=records, data_collator=toolken.data.Collator.for_tokenizer(tokenizer),
           compute_loss_func=toolken.compute_loss_func(model))

   The stock Trainer calls ``model(**batch)`` and then the loss function with the outputs, so
   this installs a forward pre-hook on `model` that takes ``loss_weights`` out of the batch and
   asks the model for ``output_hidden_states=True`` with ``logits_to_keep=1`` (logits of the last
   position only); the loss function then reads the last hidden state. Call ``.remove()`` on the
   returned object to take the hook off. One forward at a time (no `DataParallel` replicas).

Normalization under gradient accumulation: each micro-batch's loss is its weighted mean
Σ wᵢℓᵢ / Σ wᵢ scaled by its share of the accumulated batch's trained tokens (the count the
Trainer passes as ``num_items_in_batch``), so with one micro-batch per step it is exactly the
weighted mean and the prior term is counted once per optimizer step.

Works with ``toolken.extend(..., trainable="tool_rows")`` (only the tool rows have gradients),
``trainable="full"``, and PEFT LoRA (`toolken.weighted_loss` unwraps the `PeftModel`).
Evaluation reports the loss only: no logits are built, so ``compute_metrics`` is not supported.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import transformers

from .data import Collator
from .errors import ToolkenError
from .loss import hidden_states_loss, prior_regularization, shifted_targets

LOSS_WEIGHTS = "loss_weights"


def _share(labels: torch.Tensor, attention_mask: Optional[torch.Tensor], num_items_in_batch: Any) -> Any:
    """This micro-batch's fraction of the accumulated batch's trained targets (1 when unknown)."""
    if num_items_in_batch is None:
        return 1.0
    target, _ = shifted_targets(labels, None, attention_mask)
    local = (target != -100).sum()
    total = torch.as_tensor(num_items_in_batch, device=local.device).clamp(min=1)
    return local / total


class Trainer(transformers.Trainer):
    """`transformers.Trainer` whose loss is `toolken.weighted_loss`'s on the batch's ``loss_weights``
    (final hidden states + the fused kernel; the LM head runs on one position only, so the
    [tokens x vocab] logits are never materialized). The forward goes through the model as the
    Trainer wrapped it (DDP, PEFT), so gradient synchronization works; FSDP-sharded LM heads are
    not supported (the fused kernel needs the whole head weight).

    Extra arguments:
        prior_lambda: weight λ of `toolken.prior_regularization` (0 = off; Re-Initialization Token
            Learning uses 1e-2).
        prior_squared: square the Frobenius norm of the prior term.
        loss_kwargs: passed to the fused kernel (``label_smoothing``, ``z_loss``, ``chunk_size``, ...).

    Without a ``data_collator``, batches are padded by `toolken.data.Collator` with the
    ``processing_class`` tokenizer's pad token.
    """

    def __init__(self, *args: Any, prior_lambda: float = 0.0, prior_squared: bool = False,
                 loss_kwargs: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> None:
        if prior_lambda < 0:
            raise ToolkenError(f"prior_lambda must be >= 0, got {prior_lambda}")
        loss_kwargs = dict(loss_kwargs or {})
        if "reduction" in loss_kwargs:
            raise ToolkenError("toolken.Trainer needs reduction='mean'; do not set it in loss_kwargs")
        if kwargs.get("compute_loss_func") is not None:
            raise ToolkenError("toolken.Trainer computes its own loss; do not pass compute_loss_func")
        if kwargs.get("data_collator") is None:
            tokenizer = kwargs.get("processing_class")
            kwargs["data_collator"] = Collator.for_tokenizer(tokenizer) if tokenizer is not None else Collator()
        super().__init__(*args, **kwargs)
        self.prior_lambda = float(prior_lambda)
        self.prior_squared = prior_squared
        self.loss_kwargs = loss_kwargs

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if LOSS_WEIGHTS not in self._signature_columns:
            self._signature_columns.append(LOSS_WEIGHTS)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if "labels" not in inputs:
            raise ToolkenError("toolken.Trainer needs 'labels' in every batch (see toolken.data)")
        labels, mask = inputs["labels"], inputs.get("attention_mask")
        # through the (possibly DDP/PEFT-wrapped) model's forward, so wrappers see the call;
        # the LM head runs on the last position only
        outputs = model(input_ids=inputs["input_ids"], attention_mask=mask, output_hidden_states=True,
                        logits_to_keep=1, use_cache=False)
        unwrapped = self.accelerator.unwrap_model(model)
        loss = hidden_states_loss(unwrapped, outputs.hidden_states[-1], labels, inputs.get(LOSS_WEIGHTS), mask,
                                  **self.loss_kwargs)
        if self.prior_lambda:
            loss = loss + prior_regularization(unwrapped, self.prior_lambda, self.prior_squared)
        if model.training:
            # scaled for gradient accumulation here when the Trainer counted the targets
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            loss = loss * _share(labels, mask, num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        return (loss, {"loss": loss}) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: Optional[list[str]] = None) -> Any:
        return super().prediction_step(model, inputs, True, ignore_keys)


class FusedLossFunc:
    """What `compute_loss_func` returns: ``(outputs, labels, num_items_in_batch=None) -> loss``
    for the stock `transformers.Trainer`, plus the forward pre-hook that feeds it."""

    def __init__(self, model: Any, prior_lambda: float = 0.0, prior_squared: bool = False,
                 **fused_kwargs: Any) -> None:
        if "reduction" in fused_kwargs:
            raise ToolkenError("compute_loss_func needs reduction='mean'; do not pass reduction")
        self.model = model
        self.prior_lambda = float(prior_lambda)
        self.prior_squared = prior_squared
        self.fused_kwargs = fused_kwargs
        self._weights: Optional[torch.Tensor] = None
        self._mask: Optional[torch.Tensor] = None
        self._handle = model.register_forward_pre_hook(self._pre_forward, with_kwargs=True)

    def _pre_forward(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs = dict(kwargs)
        self._weights = kwargs.pop(LOSS_WEIGHTS, None)
        self._mask = kwargs.get("attention_mask")
        kwargs["output_hidden_states"] = True
        kwargs["logits_to_keep"] = 1
        return args, kwargs

    def remove(self) -> None:
        """Take the forward pre-hook off the model."""
        self._handle.remove()

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        hidden_states = getattr(outputs, "hidden_states", None)
        if not hidden_states:
            raise ToolkenError("compute_loss_func: the model returned no hidden_states; was the forward "
                               "pre-hook removed, or is this not the model passed to compute_loss_func?")
        weights, mask = self._weights, self._mask
        self._weights = self._mask = None
        loss = hidden_states_loss(self.model, hidden_states[-1], labels, weights, mask, **self.fused_kwargs)
        if self.prior_lambda:
            loss = loss + prior_regularization(self.model, self.prior_lambda, self.prior_squared)
        return loss * _share(labels, mask, num_items_in_batch)


def compute_loss_func(model: Any, prior_lambda: float = 0.0, prior_squared: bool = False,
                      **fused_kwargs: Any) -> FusedLossFunc:
    """A ``compute_loss_func`` for a stock `transformers.Trainer` (module docstring): fused
    weighted loss from the last hidden state, the batch's ``loss_weights`` and an optional prior
    term. Registers a forward pre-hook on `model` (``.remove()`` takes it off)."""
    return FusedLossFunc(model, prior_lambda, prior_squared, **fused_kwargs)


__all__ = ["Trainer", "compute_loss_func", "FusedLossFunc"]
