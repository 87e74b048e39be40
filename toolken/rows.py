"""Trainable tool rows as one self-contained unit (like a PEFT tuner): install, hooks,
state-dict handling, the init prior, and writing the rows back.

``trainable="tool_rows"`` (ToolkenGPT's "train only the toolken rows", Hao et al. 2023) freezes
every parameter and keeps the tool rows in two small trainable parameters (`ToolRows`) that
forward hooks splice into the embedding output and the LM head's logits. Only those rows can
change under any optimizer (weight decay included), and the model stays a plain transformers
model: `state_dict()` / `save_pretrained` write the current rows into the ordinary embedding
weights (a public state-dict post-hook). The prior is the rows as initialized, the anchor of the
regularizer ``λ·‖W − W_prior‖`` (Re-Initialization Token Learning, Li et al. 2025).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import NotExtendedError, ToolkenError
from .modeling import is_tied
from .registry import NOT_EXTENDED, ToolRegistry, find_registry

PRIOR_ATTR = "_toolken_prior"  # model attribute that holds `prior(model)`
HOOKS_ATTR = "_toolken_hooks"  # model attribute that holds the hook handles


class ToolRows(nn.Module):
    """The trainable tool rows of a `trainable="tool_rows"` model.

    Stores only the n tool rows (input, and output when untied) because tools are few next to
    the vocabulary; `lookup` maps a token id to its row (-1 for other tokens).
    """

    def __init__(self, token_ids: torch.Tensor, input_rows: torch.Tensor, output_rows: Optional[torch.Tensor], vocab_rows: int):
        super().__init__()
        self.register_buffer("token_ids", token_ids.clone(), persistent=False)
        lookup = torch.full((vocab_rows,), -1, dtype=torch.long, device=token_ids.device)
        lookup[token_ids] = torch.arange(len(token_ids), device=token_ids.device)
        self.register_buffer("lookup", lookup, persistent=False)
        self.input = nn.Parameter(input_rows)
        self.output = nn.Parameter(output_rows) if output_rows is not None else None

    @property
    def output_rows(self) -> torch.Tensor:
        """Rows the LM head uses: the input rows when embeddings are tied."""
        return self.output if self.output is not None else self.input


def _embedding_hook(rows: ToolRows, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    ids = args[0] if args else None
    if ids is None:
        return output
    idx = rows.lookup[ids.clamp(0, rows.lookup.shape[0] - 1)]
    repl = F.embedding(idx.clamp(min=0), rows.input).to(output.dtype)
    return torch.where((idx >= 0).unsqueeze(-1), repl, output)


def _lm_head_hook(rows: ToolRows, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    hidden = args[0]
    bias = getattr(module, "bias", None)
    tool_logits = F.linear(hidden, rows.output_rows.to(hidden.dtype), None if bias is None else bias[rows.token_ids])
    return output.index_copy(-1, rows.token_ids, tool_logits.to(output.dtype))


def tool_rows(model: nn.Module) -> Optional[ToolRows]:
    """The trainable `ToolRows` of a `trainable="tool_rows"` model, else None."""
    rows = getattr(model, "toolken_rows", None)
    return rows if isinstance(rows, ToolRows) else None


def prior(model: nn.Module) -> dict[str, Optional[torch.Tensor]]:
    """The tool rows as initialized (the prior of the regularizer `λ·‖W − W_prior‖`):
    ``{"token_ids": [n], "input": [n, d], "output": [n, d] or None when tied}``."""
    p = getattr(model, PRIOR_ATTR, None)
    if p is None:
        raise NotExtendedError(NOT_EXTENDED)
    return p


def output_weight(model: nn.Module) -> torch.Tensor:
    """The LM head weight [V, d] with the current tool rows in place, differentiable w.r.t. them:
    the weight to hand to the fused loss."""
    head = model.get_output_embeddings()
    if head is None:
        raise ToolkenError(f"{type(model).__name__} has no output embeddings (LM head)")
    rows = tool_rows(model)
    if rows is None:
        return head.weight
    return head.weight.index_copy(0, rows.token_ids, rows.output_rows.to(head.weight.dtype))


def current_rows(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tool rows now (input, and output when untied), in registry order."""
    reg = find_registry(model)
    if reg is None:
        raise NotExtendedError(NOT_EXTENDED)
    rows = tool_rows(model)
    ids = torch.tensor(reg.tool_token_ids, dtype=torch.long)
    if rows is not None:
        order = rows.lookup[ids.to(rows.lookup.device)]
        out = {"input": rows.input[order]}
        if rows.output is not None:
            out["output"] = rows.output[order]
        return out
    inp = model.get_input_embeddings().weight
    out = {"input": inp[ids.to(inp.device)]}
    head = model.get_output_embeddings()
    if head is not None and head.weight is not inp:
        out["output"] = head.weight[ids.to(head.weight.device)]
    return out


def sync_rows(model: nn.Module) -> None:
    """Write trainable tool rows into the ordinary embedding weights (no-op otherwise)."""
    rows = tool_rows(model)
    if rows is None:
        return
    with torch.no_grad():
        inp = model.get_input_embeddings().weight
        inp.index_copy_(0, rows.token_ids, rows.input.to(inp.dtype))
        head = model.get_output_embeddings()
        if head is not None and head.weight is not inp:
            head.weight.index_copy_(0, rows.token_ids, rows.output_rows.to(head.weight.dtype))


def _state_dict_hook(model: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """Make `state_dict()` a plain checkpoint: current tool rows merged into the embedding
    weights, the `toolken_rows.*` entries dropped (a public post-hook: edits in place)."""
    rows = tool_rows(model)
    for key in [k for k in state_dict if k.startswith(prefix + "toolken_rows.")]:
        del state_dict[key]
    if rows is None:
        return
    inp = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    for name, p in model.named_parameters(remove_duplicate=False):
        key = prefix + name
        if key not in state_dict:
            continue
        if p is inp:
            src = rows.input
        elif head is not None and p is head.weight:
            src = rows.output_rows
        else:
            continue
        state_dict[key] = state_dict[key].clone().index_copy_(0, rows.token_ids, src.detach().to(p.dtype))


def install(model: nn.Module, token_ids: torch.Tensor) -> ToolRows:
    """(Re)build the ToolRows module for `token_ids` from the current weights, freeze the rest."""
    uninstall(model)
    inp = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = is_tied(model)
    device = inp.weight.device
    token_ids = token_ids.to(device)
    rows = ToolRows(
        token_ids,
        inp.weight.detach()[token_ids].float(),
        None if tied else head.weight.detach()[token_ids].float(),
        vocab_rows=inp.weight.shape[0],
    ).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    rows.input.requires_grad_(True)
    if rows.output is not None:
        rows.output.requires_grad_(True)
    attach(model, rows)
    return rows


class _bind:
    """A picklable/deep-copyable partial for hooks (closures are neither)."""

    def __init__(self, fn: Any, rows: ToolRows):
        self.fn, self.rows = fn, rows

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        return self.fn(self.rows, module, args, output)


def uninstall(model: nn.Module) -> None:
    """Write the trainable rows back into the embeddings and remove `ToolRows` and its hooks."""
    for h in getattr(model, HOOKS_ATTR, []):
        h.remove()
    setattr(model, HOOKS_ATTR, [])
    if tool_rows(model) is not None:
        sync_rows(model)
        del model.toolken_rows


def attach(model: nn.Module, rows: ToolRows) -> None:
    """Register `rows` on the model (its parameters become the trainable ones) and hook them
    into the embedding output, the LM head's logits and `state_dict()`."""
    model.toolken_rows = rows
    handles = [model.get_input_embeddings().register_forward_hook(_bind(_embedding_hook, rows))]
    head = model.get_output_embeddings()
    if head is not None:
        handles.append(head.register_forward_hook(_bind(_lm_head_hook, rows)))
    handles.append(model.register_state_dict_post_hook(_state_dict_hook))
    setattr(model, HOOKS_ATTR, handles)


def update_prior(model: nn.Module, reg: ToolRegistry, ids: torch.Tensor, in_rows: torch.Tensor,
                  out_rows: Optional[torch.Tensor]) -> None:
    """Keep the init rows of every registered tool (registry order): earlier ones carried over,
    `ids` set to the rows just initialized."""
    pos = {t: i for i, t in enumerate(reg.tool_token_ids)}
    old = getattr(model, PRIOR_ATTR, None)
    n, d = len(pos), in_rows.shape[1]
    new_in = torch.zeros(n, d)
    has_out = out_rows is not None or (old is not None and old["output"] is not None)
    new_out = torch.zeros(n, d) if has_out else None
    if old is not None:
        keep = [(i, pos[t]) for i, t in enumerate(old["token_ids"].tolist()) if t in pos]
        src = torch.tensor([a for a, _ in keep], dtype=torch.long)
        dst = torch.tensor([b for _, b in keep], dtype=torch.long)
        new_in[dst] = old["input"][src]
        if new_out is not None and old["output"] is not None:
            new_out[dst] = old["output"][src]
    dst = torch.tensor([pos[t] for t in ids.tolist()], dtype=torch.long)
    new_in[dst] = in_rows.detach().float().cpu()
    if out_rows is not None:
        new_out[dst] = out_rows.detach().float().cpu()
    set_prior(model, {"token_ids": torch.tensor(reg.tool_token_ids, dtype=torch.long),
                      "input": new_in, "output": new_out})


def set_prior(model: nn.Module, value: Optional[dict[str, Optional[torch.Tensor]]]) -> None:
    """Replace the model's prior (`prior`'s layout; None removes it), e.g. from a saved adapter."""
    setattr(model, PRIOR_ATTR, value)


def prior_distance(rows: torch.Tensor, prior_rows: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """``‖rows − prior_rows‖_F`` (squared with `squared`), differentiable w.r.t. `rows`: the
    penalty of Re-Initialization Token Learning's prior regularizer."""
    diff = rows.float() - prior_rows.to(rows.device, torch.float32)
    return diff.pow(2).sum() if squared else torch.linalg.matrix_norm(diff, "fro")
