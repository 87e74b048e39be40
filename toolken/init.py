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

from .errors import ExtendError
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
    from tqdm.auto import tqdm

    base = _base_model(model)
    device = next(model.parameters()).device
    d = model.get_input_embeddings().weight.shape[1]
    out = torch.zeros(len(ids), d, dtype=torch.float32)
    batches = length_sorted_batches(ids, batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc="toolken: hidden-state init", disable=not show_progress, unit="batch"):
                input_ids, mask = right_pad([ids[i] or [0] for i in batch])
                hidden = base(input_ids=input_ids.to(device)).last_hidden_state
                m = mask.to(device).unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1)
                out[batch] = pooled.float().cpu()
    finally:
        model.train(was_training)
    out = F.normalize(out, dim=-1) * target_norm
    return out.to(device)


def length_sorted_batches(ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices of `ids` in batches of similar length (less padding per forward pass)."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def right_pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of right-padded sequences, padding id 0."""
    width = max(len(s) for s in seqs)
    input_ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        input_ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    return input_ids, mask


def _base_model(model: Any) -> Any:
    """The decoder stack that returns final normed hidden states (no LM head, no logits)."""
    base = getattr(model, "base_model_prefix", None)
    if base and hasattr(model, base):
        return getattr(model, base)
    try:
        return model.get_decoder()
    except Exception as e:  # pragma: no cover - exotic architectures
        raise ExtendError(f"init='hidden' needs the model's decoder stack; {type(model).__name__} exposes none: {e}") from None
