"""What toolken needs to know about a Hugging Face model's structure, in one place: its decoder
stack (the final normed hidden states without the LM head), the model under a PEFT wrapper,
tied embeddings, and padding prompts into batches."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from .errors import ToolkenError


def unwrap_peft(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    if not (callable(get_base) and hasattr(model, "peft_config")):
        return model
    config = model.peft_config.get(getattr(model, "active_adapter", "default"))
    if getattr(config, "is_prompt_learning", False):
        raise ToolkenError(f"PEFT {config.peft_type} adds virtual prompt tokens in PeftModel.forward, which "
                           "toolken's hidden-state loss bypasses; use an adapter that edits weights (LoRA, ...)")
    return get_base()


def decoder_stack(model: Any) -> Optional[Any]:
    """The module that returns the final normed hidden states (`get_decoder()`, else the
    `base_model_prefix` submodule), or None when the model exposes neither apart from itself."""
    model = unwrap_peft(model)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        prefix = getattr(model, "base_model_prefix", None)
        decoder = getattr(model, prefix, None) if prefix else None
    return None if decoder is model else decoder


def require_decoder_stack(model: Any, why: str) -> Any:
    """`decoder_stack`, or a `ToolkenError` saying what needed it."""
    decoder = decoder_stack(model)
    if decoder is None:
        raise ToolkenError(f"{why} needs the model's decoder stack (final hidden states without the LM head); "
                           f"{type(model).__name__} exposes none (get_decoder())")
    return decoder


def is_tied(model: nn.Module) -> bool:
    """True when the LM head shares the input embedding matrix (or there is no head)."""
    head = model.get_output_embeddings()
    return head is None or head.weight is model.get_input_embeddings().weight


def pad(seqs: Sequence[Sequence[int]], pad_id: int = 0, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [n, longest] of token id lists padded on `side` with `pad_id`."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        span = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        input_ids[r, span] = torch.tensor(list(s), dtype=torch.long)
        mask[r, span] = 1
    return input_ids, mask


def length_sorted_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of `ids` in batches of similar length (less padding per forward pass)."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
