"""Loss-weight policies: which target tokens matter more when training tool tokens.

A policy maps `labels` ([N] for one sequence, or [B, T] for a batch; unshifted, -100 where a
position is not trained) to float32 `loss_weights` of the same shape, with 0 at ignored positions.
The weights go to `toolken.weighted_loss` / the fused kernel, whose `reduction="mean"` is
Σ wᵢ·ℓᵢ / Σ wᵢ — TL-Training's normalization.

Policies:

- `uniform()` — every trained position weighs 1 (plain SFT).
- `tool_tokens(scale)` — positions whose label is a tool token weigh `scale`.
- `tl_training(max_weight=9)` — TL-Training's "prioritizing key tokens" (Ye et al. 2024,
  "TL-Training: A Task-Feature-Based Framework for Training Large Language Models in Tool Use",
  arXiv:2412.15495): key tokens weigh ``min(N_other / N_key, max_weight)`` when a sequence has
  fewer key tokens than other trained tokens, everything else 1. See `key_token_mask` for the
  exact definition of a key token.

Any callable ``(labels, **context) -> weights`` is a policy too; `apply_policy` passes it only the
context keywords it declares (`tool_token_ids`, `tokenizer`, `ignore_index`).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, Sequence, Union

import torch

from .errors import ToolkenError

IGNORE_INDEX = -100

#: Characters that carry JSON structure. A quote counts only when it opens or closes a string,
#: the others only outside strings (see `json_structural_chars`).
JSON_STRUCTURAL = frozenset('{}[]:,')


class WeightPolicy(Protocol):
    """A loss-weight policy: `labels` -> float weights of the same shape, 0 where ignored."""

    def __call__(
        self,
        labels: torch.Tensor,
        *,
        tool_token_ids: Sequence[int] = (),
        tokenizer: Any = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> torch.Tensor: ...


def _trained(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    return labels != ignore_index


def _is_tool(labels: torch.Tensor, tool_token_ids: Sequence[int]) -> torch.Tensor:
    ids = torch.as_tensor(list(tool_token_ids), dtype=labels.dtype, device=labels.device)
    return torch.isin(labels, ids)


def uniform() -> WeightPolicy:
    """Weight 1 on every trained position, 0 on ignored ones."""

    def policy(labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX, **_: Any) -> torch.Tensor:
        return _trained(labels, ignore_index).to(torch.float32)

    policy.__name__ = "uniform"
    return policy


def tool_tokens(scale: float = 5.0) -> WeightPolicy:
    """Weight `scale` on positions whose label is a tool token, 1 on other trained positions."""
    if not (scale >= 0 and scale != float("inf")):
        raise ToolkenError(f"tool_tokens(scale={scale!r}): scale must be a finite number >= 0")

    def policy(labels: torch.Tensor, *, tool_token_ids: Sequence[int] = (),
               ignore_index: int = IGNORE_INDEX, **_: Any) -> torch.Tensor:
        w = _trained(labels, ignore_index).to(torch.float32)
        return torch.where(_is_tool(labels, tool_token_ids), w * scale, w)

    policy.__name__ = f"tool_tokens({scale})"
    return policy


def json_structural_chars(text: str) -> list[bool]:
    """For each character of a JSON text, whether it is structural: ``{ } [ ] : ,`` outside a
    string, or a quote that opens or closes a string (escaped quotes are content)."""
    out = []
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped, structural = False, False
            elif c == "\\":
                escaped, structural = True, False
            elif c == '"':
                in_string, structural = False, True
            else:
                structural = False
        elif c == '"':
            in_string, structural = True, True
        else:
            structural = c in JSON_STRUCTURAL
        out.append(structural)
    return out


def _runs(trained_row: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of trained positions (one run per assistant turn)."""
    runs, start = [], None
    for i, t in enumerate(trained_row + [False]):
        if t and start is None:
            start = i
        elif not t and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _key_mask_row(labels: list[int], tool_ids: set[int], tokenizer: Any, ignore_index: int,
                  delimiters: bool) -> list[bool]:
    key = [False] * len(labels)
    for start, end in _runs([lab != ignore_index for lab in labels]):
        key[start] = True  # first response token of the turn
        calls = [i for i in range(start, end) if labels[i] in tool_ids]
        for i in calls:
            key[i] = True  # the gold tool's (atomic) token: where it diverges from every other tool
        if not delimiters:
            continue
        # arguments: from after each tool token to the next tool token or the end of the turn
        for i, nxt in zip(calls, calls[1:] + [end]):
            pieces = [tokenizer.decode([labels[j]]) for j in range(i + 1, nxt)]
            structural = json_structural_chars("".join(pieces))
            pos = 0
            for j, piece in zip(range(i + 1, nxt), pieces):
                if any(structural[pos:pos + len(piece)]):
                    key[j] = True
                pos += len(piece)
    return key


def key_token_mask(labels: torch.Tensor, *, tool_token_ids: Sequence[int], tokenizer: Any = None,
                   ignore_index: int = IGNORE_INDEX, delimiters: bool = True) -> torch.Tensor:
    """TL-Training's key tokens, as a bool mask shaped like `labels`.

    Each maximal run of trained (non-ignored) positions is one assistant turn, laid out in
    toolken's tool-call text format (optional text, then per call the tool token followed by
    ``json.dumps(arguments)``, then the end of turn). Key tokens are:

    1. the first response token of each turn;
    2. the token where the gold tool diverges from the other tools sharing its prefix — with
       atomic tool tokens that is the tool token itself (every tool differs at its first token);
    3. argument delimiter tokens: within the argument JSON that follows a tool token (up to the
       next tool token or the end of the turn), every token whose decoded text contains a JSON
       structural character — ``{ } [ ] : ,`` outside strings, or a quote that opens or closes a
       string (`json_structural_chars`). Commas or colons inside string values, and text outside
       tool calls, are not delimiters. Needs `tokenizer` (its per-token ``decode``).
    """
    if delimiters and tokenizer is None:
        raise ToolkenError("tl_training needs tokenizer= to find argument delimiter tokens "
                           "(or pass delimiters=False)")
    tool_ids = {int(i) for i in tool_token_ids}
    rows = labels.reshape(-1, labels.shape[-1]) if labels.dim() > 0 else labels.reshape(1, 1)
    mask = [_key_mask_row(r, tool_ids, tokenizer, ignore_index, delimiters) for r in rows.tolist()]
    return torch.tensor(mask, dtype=torch.bool, device=labels.device).reshape(labels.shape)


def tl_training(max_weight: float = 9.0, *, delimiters: bool = True) -> WeightPolicy:
    """TL-Training key-token weighting (Ye et al. 2024, arXiv:2412.15495).

    Per sequence (each row of a [B, T] batch; a 1-D `labels` is one sequence): with N_key key
    tokens (`key_token_mask`) and N_other other trained tokens, key tokens weigh
    ``min(N_other / N_key, max_weight)`` when ``0 < N_key < N_other``, else 1; other trained
    tokens weigh 1; ignored positions 0.
    """
    if not (max_weight >= 1 and max_weight != float("inf")):
        raise ToolkenError(f"tl_training(max_weight={max_weight!r}): max_weight must be finite and >= 1")

    def policy(labels: torch.Tensor, *, tool_token_ids: Sequence[int] = (), tokenizer: Any = None,
               ignore_index: int = IGNORE_INDEX, **_: Any) -> torch.Tensor:
        trained = _trained(labels, ignore_index)
        key = key_token_mask(labels, tool_token_ids=tool_token_ids, tokenizer=tokenizer,
                             ignore_index=ignore_index, delimiters=delimiters) & trained
        n_key = key.sum(-1, keepdim=True).to(torch.float32)
        n_other = trained.sum(-1, keepdim=True).to(torch.float32) - n_key
        boost = torch.where((n_key > 0) & (n_key < n_other),
                            torch.clamp(n_other / n_key.clamp(min=1), max=max_weight),
                            torch.ones_like(n_key))
        w = trained.to(torch.float32)
        return torch.where(key, w * boost, w)

    policy.__name__ = f"tl_training({max_weight})"
    return policy


_NAMED: dict[str, Callable[[], WeightPolicy]] = {
    "uniform": uniform,
    "tool_tokens": tool_tokens,
    "tl_training": tl_training,
}

PolicyLike = Union[str, Callable[..., Any], None]


def resolve_policy(policy: PolicyLike) -> Callable[..., Any]:
    """A policy from a name (``"uniform"``, ``"tool_tokens"``, ``"tl_training"``, with default
    arguments), a callable (returned as is) or None (uniform)."""
    if policy is None:
        return uniform()
    if isinstance(policy, str):
        if policy not in _NAMED:
            raise ToolkenError(f"unknown weight policy {policy!r}; choose one of {sorted(_NAMED)} "
                               f"or pass a callable (labels, **context) -> weights")
        return _NAMED[policy]()
    if callable(policy):
        return policy
    raise ToolkenError(f"weight policy must be a name, a callable or None, got {type(policy).__name__}")


def apply_policy(policy: PolicyLike, labels: Any, *, tool_token_ids: Sequence[int] = (),
                 tokenizer: Any = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Run a policy on `labels` (tensor or nested list) and check its output: float32, same shape, finite, >= 0, and 0
    at ignored positions (forced, so a custom policy cannot train on padding)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    fn = resolve_policy(policy)
    context = {"tool_token_ids": tool_token_ids, "tokenizer": tokenizer, "ignore_index": ignore_index}
    weights = fn(labels, **_accepted(fn, context))
    name = getattr(fn, "__name__", type(fn).__name__)
    weights = torch.as_tensor(weights)
    if weights.shape != labels.shape:
        raise ToolkenError(f"weight policy {name} returned shape {tuple(weights.shape)} for labels of "
                           f"shape {tuple(labels.shape)}; it must return one weight per label")
    weights = weights.to(torch.float32)
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ToolkenError(f"weight policy {name} returned negative or non-finite weights")
    return torch.where(_trained(labels, ignore_index), weights, torch.zeros_like(weights))


def _accepted(fn: Callable[..., Any], context: dict[str, Any]) -> dict[str, Any]:
    """The subset of `context` that `fn` declares (all of it when `fn` takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return context
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return context
    names = {p.name for p in params}
    return {k: v for k, v in context.items() if k in names}


__all__ = ["IGNORE_INDEX", "WeightPolicy", "uniform", "tool_tokens", "tl_training", "key_token_mask",
           "json_structural_chars", "resolve_policy", "apply_policy"]
