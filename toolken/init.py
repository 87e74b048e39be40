"""Initialization strategies for new tool rows.

Every strategy returns fp32 rows [n_tools, d] for the matrix it is given (input embedding or
untied output embedding):

- ``random``: N(0, σ²) with σ the standard deviation of the existing rows' entries.
- ``mean``: the mean of the existing rows (the base vocabulary's rows).
- ``name``: ToolGen (Wang et al. 2024): mean of the rows of the name's sub-tokens.
- ``description``: mean of the rows of the name's sub-tokens followed by the description's.
- ``hidden``: Re-Initialization Token Learning (Li et al. 2025): run name + description through
  the frozen model, mean-pool the final (normed) hidden states over the text, L2-normalize and
  rescale to the average norm of the existing output rows. Used for output rows; input rows
  then use ``description``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from tqdm.auto import tqdm

from .errors import ExtendError
from .modeling import length_sorted_batches, pad, require_decoder_stack
from .tools import Tool

STRATEGIES = ("random", "mean", "name", "description", "hidden")


def check_strategy(init: str) -> str:
    if init not in STRATEGIES:
        raise ExtendError(f"unknown init strategy {init!r}; choose one of {', '.join(STRATEGIES)}")
    return init


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts without special tokens. Fast tokenizers go straight to their Rust
    backend: transformers' per-text Python conversion costs more than the tokenization itself."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and getattr(tokenizer, "is_fast", False):
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def text_token_ids(tokenizer: Any, tools: Sequence[Tool], with_description: bool) -> list[list[int]]:
    """Sub-token ids of each tool's name (and description): the text the rows are built from.

    Name and description are tokenized separately and concatenated, without special tokens.
    """
    names = encode_texts(tokenizer, [t.name for t in tools])
    if not with_description:
        return names
    descs = encode_texts(tokenizer, [t.description for t in tools])
    return [a + b for a, b in zip(names, descs)]


def mean_of_rows(weight: torch.Tensor, ids: list[list[int]], fallback: torch.Tensor) -> torch.Tensor:
    """Mean of `weight` rows over each id list, in one EmbeddingBag call (no per-tool loop).
    An empty id list gets `fallback` (the mean row)."""
    flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=weight.device)
    lengths = torch.tensor([len(r) for r in ids], dtype=torch.long, device=weight.device)
    offsets = torch.zeros_like(lengths)
    if len(lengths) > 1:
        offsets[1:] = torch.cumsum(lengths, 0)[:-1]
    with torch.no_grad():
        rows = F.embedding_bag(flat, weight, offsets, mode="sum").float()
        rows.div_(lengths.clamp(min=1).unsqueeze(1).float())
        empty = lengths == 0
        if empty.any():
            rows[empty] = fallback.float()
    return rows


def base_rows(weight: torch.Tensor, base_vocab_size: int) -> torch.Tensor:
    """The rows of real (pre-tool) tokens, excluding tool rows and spare padding rows."""
    return weight[: min(base_vocab_size, weight.shape[0])]


def random_rows(weight: torch.Tensor, base_vocab_size: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    std = base_rows(weight, base_vocab_size).float().std()
    return torch.randn(n, weight.shape[1], generator=generator).to(weight.device) * std


def mean_row(weight: torch.Tensor, base_vocab_size: int) -> torch.Tensor:
    return base_rows(weight, base_vocab_size).float().mean(0)


def hidden_rows(
    model: Any,
    ids: list[list[int]],
    target_norm: float,
    batch_size: int = 32,
    show_progress: bool = True,
) -> torch.Tensor:
    """Re-Init rows: mean-pooled final hidden states of each text, L2-normalized, rescaled.

    Texts are run through the frozen base model in length-sorted, right-padded batches. No
    attention mask is passed: under causal attention a real position never attends to the
    padding after it, and the plain causal path is faster than a padded-mask one.
    """
    base = require_decoder_stack(model, "init='hidden'")
    device = next(model.parameters()).device
    d = model.get_input_embeddings().weight.shape[1]
    out = torch.zeros(len(ids), d, dtype=torch.float32)
    batches = length_sorted_batches(ids, batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc="toolken: hidden-state init", disable=not show_progress, unit="batch"):
                input_ids, mask = pad([ids[i] or [0] for i in batch])
                hidden = base(input_ids=input_ids.to(device)).last_hidden_state
                m = mask.to(device).unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1)
                out[batch] = pooled.float().cpu()
    finally:
        model.train(was_training)
    out = F.normalize(out, dim=-1) * target_norm
    return out.to(device)
