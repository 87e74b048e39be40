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

Normalization: `toolken.Trainer` divides each micro-batch's Σ wᵢℓᵢ by Σ wᵢ over the optimizer
step's whole batch (every micro-batch of gradient accumulation and every process), so a step's
gradient is that of the weighted mean over its global batch, as one process computes it on the
whole batch. The stock Trainer passes `compute_loss_func` the count of trained targets instead,
so there each micro-batch's weighted mean is scaled by its share of the targets (exact when the
weights are uniform). The prior term is counted once per optimizer step.

Multi-process training (``accelerate launch`` / ``torchrun``): `toolken.Trainer` computes the loss
inside the model's forward, so it works under DDP and under FSDP (FSDP1 with
``use_orig_params=True``, or FSDP2) with the LM head, the embeddings and the tool rows in the root
FSDP unit or, under FSDP2, in units that accelerate leaves unsharded after their forward (it
carves out the input embedding, whose prior term `toolken.Trainer` computes while it runs, and the
final norm + LM head, kept unsharded). ``Trainer.save_adapter`` writes the tool rows (gathered
under FSDP) from process 0. The loss of `compute_loss_func` runs after the forward: use it in one
process or under DDP (untested there); under FSDP1 the head is resharded by then, and a
`ToolkenError` says so.

Works with ``toolken.extend(..., trainable="tool_rows")`` (only the tool rows have gradients; the
LM head is row-sparse, see `toolken.loss.hidden_states_loss`), ``trainable="full"``, and PEFT
(LoRA, ``trainable_token_indices``; `toolken.weighted_loss` unwraps the `PeftModel`).
Evaluation reports the loss only: no logits are built, so ``compute_metrics`` is not supported.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch
import transformers
from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

from .adapter import save
from .data import Collator
from .errors import ToolkenError
from .loss import hidden_states_loss, prior_regularization, shifted_targets
from .modeling import unwrap_peft
from .rows import prior
from .weights import IGNORE_INDEX

LOSS_WEIGHTS = "loss_weights"


def trained_weight(labels: torch.Tensor, loss_weights: Optional[torch.Tensor] = None,
                   attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Σ wᵢ over a batch's trained next-token targets (their number when `loss_weights` is None):
    the denominator of its weighted mean (float32 scalar)."""
    target, weights = shifted_targets(labels, loss_weights, attention_mask)
    trained = target != IGNORE_INDEX
    if weights is None:
        return trained.sum().to(torch.float32)
    return weights.masked_fill(~trained, 0.0).sum()


def _share(local: torch.Tensor, total: Any) -> Any:
    """This micro-batch's fraction `local / total` of the accumulated batch (1 when unknown)."""
    if total is None:
        return 1.0
    return local / torch.as_tensor(total, device=local.device, dtype=local.dtype).clamp(min=1e-12)


class _ForwardLoss:
    """Computes the loss inside the model's forward, where FSDP has the weights it needs unsharded:
    a forward hook on the transformers model computes the fused loss from the final hidden states
    (and the output term of the prior) and returns it as the output's ``loss``; with a prior, a
    forward hook on the input embedding computes the input term while that module runs (FSDP2 as
    accelerate applies it makes the input embedding its own unit, resharded after its forward)."""

    def __init__(self, labels: torch.Tensor, loss_weights: Optional[torch.Tensor],
                 attention_mask: Optional[torch.Tensor], prior_lambda: float, prior_squared: bool,
                 loss_kwargs: Mapping[str, Any]) -> None:
        self.labels, self.loss_weights, self.attention_mask = labels, loss_weights, attention_mask
        self.prior_lambda, self.prior_squared, self.loss_kwargs = prior_lambda, prior_squared, loss_kwargs
        self.loss: Optional[torch.Tensor] = None
        self.input_prior: Optional[torch.Tensor] = None
        self.model: Any = None

    def attach(self, model: Any) -> list[Any]:
        """Hook into `model` (the transformers model); returns the handles to remove."""
        self.model = model
        handles = [model.register_forward_hook(self.on_output, with_kwargs=True, prepend=True)]
        if self.prior_lambda:
            handles.append(model.get_input_embeddings().register_forward_hook(self.on_embeddings, prepend=True))
        return handles

    def on_embeddings(self, module: Any, args: tuple, output: Any) -> None:
        if self.input_prior is None:
            self.input_prior = prior_regularization(self.model, self.prior_lambda, self.prior_squared, ("input",))

    def on_output(self, module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        hidden_states = getattr(output, "hidden_states", None)
        if not hidden_states:
            raise ToolkenError(f"{type(module).__name__} returned no hidden_states under output_hidden_states=True")
        loss = hidden_states_loss(module, hidden_states[-1], self.labels, self.loss_weights, self.attention_mask,
                                  **self.loss_kwargs)
        if self.prior_lambda:
            if self.input_prior is None:
                raise ToolkenError("toolken.Trainer: the input embedding did not run in the forward, so the prior "
                                   "term could not be computed")
            loss = loss + self.input_prior
            if prior(module)["output"] is not None:  # untied: the output rows have their own prior
                loss = loss + prior_regularization(module, self.prior_lambda, self.prior_squared, ("output",))
        self.loss = loss
        output["loss"] = loss  # an output tensor, so wrappers (DDP, FSDP) see the loss they backpropagate
        return output


class Trainer(transformers.Trainer):
    """`transformers.Trainer` whose loss is `toolken.weighted_loss`'s on the batch's ``loss_weights``
    (final hidden states + the fused kernel; the LM head runs on one position only, so the
    [tokens x vocab] logits are never materialized).

    The loss is computed inside the model's forward (forward hooks), which goes through the
    model as the Trainer wrapped it (DDP, FSDP, PEFT), so that under FSDP the weights it reads are
    unsharded: FSDP1 with ``TRANSFORMER_BASED_WRAP`` keeps the LM head, the embeddings and the tool
    rows in the root unit, unsharded for the whole forward (``use_orig_params=True`` is needed
    for ``trainable="tool_rows"`` and PEFT: frozen and trainable parameters share that unit);
    accelerate's FSDP2 puts the final norm + LM head in a unit it does not reshard after forward
    and the input embedding in its own unit, whose prior term is computed while it runs. A head
    in an FSDP unit of its own that is resharded after its forward is not supported (the loss
    raises a `ToolkenError` naming the sharded weight).

    Normalization: each micro-batch's loss is Σ wᵢℓᵢ over its targets divided by Σ wᵢ over the
    whole optimizer step's batch — all micro-batches of gradient accumulation and, with
    ``average_tokens_across_devices`` (the default), all processes — so a step's gradient is that
    of the weighted mean over its global batch, exactly as one process would compute it on the
    whole batch at once. The prior term is counted once per step.

    Extra arguments:
        prior_lambda: weight λ of `toolken.prior_regularization` (0 = off; Re-Initialization Token
            Learning uses 1e-2).
        prior_squared: square the Frobenius norm of the prior term.
        loss_kwargs: passed to the fused kernel (``label_smoothing``, ``z_loss``, ``chunk_size``, ...).

    Without a ``data_collator``, batches are padded by `toolken.data.Collator` with the
    ``processing_class`` tokenizer's pad token. `save_adapter` writes the tool rows after training
    (gathering them first under FSDP).
    """

    def __init__(self, *args: Any, prior_lambda: float = 0.0, prior_squared: bool = False,
                 loss_kwargs: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> None:
        if prior_lambda < 0:
            raise ToolkenError(f"prior_lambda must be >= 0, got {prior_lambda}")
        loss_kwargs = dict(loss_kwargs or {})
        for key in ("reduction", "vocab_parallel"):
            if key in loss_kwargs:
                raise ToolkenError(f"toolken.Trainer does not take {key!r} in loss_kwargs (it needs reduction='mean' "
                                   "and the whole LM head on every process)")
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

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The step's micro-batches and Σ wᵢ over their trained targets (summed over the
        processes with ``average_tokens_across_devices``), passed on as ``num_items_in_batch``."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batch_samples or any("labels" not in b for b in batch_samples):
            return batch_samples, None
        total = sum(trained_weight(b["labels"], b.get(LOSS_WEIGHTS), b.get("attention_mask")).cpu()
                    for b in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total.reshape(1)).sum()
        return batch_samples, total

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if "labels" not in inputs:
            raise ToolkenError("toolken.Trainer needs 'labels' in every batch (see toolken.data)")
        labels, mask, weights = inputs["labels"], inputs.get("attention_mask"), inputs.get(LOSS_WEIGHTS)
        hook = _ForwardLoss(labels, weights, mask, self.prior_lambda, self.prior_squared, self.loss_kwargs)
        target = unwrap_peft(self.accelerator.unwrap_model(model))
        handles = hook.attach(target)
        try:
            # through the (possibly DDP/FSDP/PEFT-wrapped) model's forward, so wrappers see the
            # call; the LM head runs on the last position only
            outputs = model(input_ids=inputs["input_ids"], attention_mask=mask, output_hidden_states=True,
                            logits_to_keep=1, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        if hook.loss is None:
            raise ToolkenError(f"toolken.Trainer: the forward of {type(target).__name__} did not run inside "
                               f"{type(model).__name__}'s forward, so the loss was not computed")
        loss = outputs["loss"] if isinstance(outputs, Mapping) and outputs.get("loss") is not None else hook.loss
        if model.training:
            # Σ wℓ over this micro-batch / Σ w over the step's global batch (see the class docstring)
            self.loss_is_scaled_for_ga = num_items_in_batch is not None
            loss = loss * _share(trained_weight(labels, weights, mask).to(loss.device), num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP/FSDP average the gradients
        return (loss, {"loss": loss}) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: Optional[list[str]] = None) -> Any:
        return super().prediction_step(model, inputs, True, ignore_keys)

    def save_adapter(self, output_dir: Optional[str] = None) -> Optional[Path]:
        """Write the trained model's tool-row adapter (`toolken.save`: tool rows + registry) to
        `output_dir` (default ``args.output_dir``) from process 0. Every process must call it:
        under FSDP the parameters are gathered first (all processes take part), then released.
        Returns the directory on process 0, None on the others."""
        if self.processing_class is None:
            raise ToolkenError("Trainer.save_adapter needs the tokenizer: pass processing_class= to toolken.Trainer")
        out = Path(output_dir if output_dir is not None else self.args.output_dir)
        path = None
        with self._full_parameters():
            if self.is_world_process_zero():
                path = save(self.accelerator.unwrap_model(self.model_wrapped), self.processing_class, out)
        self.accelerator.wait_for_everyone()
        return path

    @contextmanager
    def _full_parameters(self) -> Iterator[None]:
        """The model's whole parameters, unsharded while inside (FSDP1: on process 0 only)."""
        model = self.model_wrapped
        if isinstance(model, FullyShardedDataParallel):
            with FullyShardedDataParallel.summon_full_params(model, writeback=False, rank0_only=True):
                yield
            return
        sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]  # FSDP2
        for m in sharded:
            m.unshard()
        try:
            yield
        finally:
            for m in sharded:
                m.reshard()


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
        # the stock Trainer counts the trained targets (num_items_in_batch), unweighted
        return loss * _share(trained_weight(labels, None, mask).to(loss.device), num_items_in_batch)


def compute_loss_func(model: Any, prior_lambda: float = 0.0, prior_squared: bool = False,
                      **fused_kwargs: Any) -> FusedLossFunc:
    """A ``compute_loss_func`` for a stock `transformers.Trainer` (module docstring): fused
    weighted loss from the last hidden state, the batch's ``loss_weights`` and an optional prior
    term. Registers a forward pre-hook on `model` (``.remove()`` takes it off)."""
    return FusedLossFunc(model, prior_lambda, prior_squared, **fused_kwargs)


__all__ = ["Trainer", "compute_loss_func", "FusedLossFunc", "trained_weight"]
