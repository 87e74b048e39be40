"""`toolken.extend`: give every tool one atomic vocabulary token and initialize its rows.

Tokens are added as non-special tokens (ToolGen's atomic tool tokens), each checked to encode to
exactly one id; rows are addressed by token id, never as "the last N rows", so models whose
embedding already has spare rows work. Tied and untied input/output embeddings are handled.

``trainable="tool_rows"`` (ToolkenGPT's "train only the toolken rows") freezes every parameter
and keeps the tool rows in two small trainable parameters (`ToolRows`) that forward hooks
splice into the embedding output and the LM head's logits. Only those rows can change under
any optimizer (weight decay included), and the model stays a plain transformers model:
`state_dict()` / `save_pretrained` write the current rows into the ordinary embedding weights.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterable, Iterator, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import init as init_lib
from .errors import ExtendError, ToolkenError
from .registry import ToolRegistry, find_registry, set_registry, vocab_fingerprint
from .tools import Tool, ToolSet, as_toolset

TRAINABLE = ("tool_rows", "full", None)


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


# ---------------------------------------------------------------------------------------------
# public helpers
# ---------------------------------------------------------------------------------------------


def tool_rows(model: nn.Module) -> Optional[ToolRows]:
    """The trainable `ToolRows` of a `trainable="tool_rows"` model, else None."""
    rows = getattr(model, "toolken_rows", None)
    return rows if isinstance(rows, ToolRows) else None


def prior(model: nn.Module) -> dict[str, Optional[torch.Tensor]]:
    """The tool rows as initialized (the prior of the regularizer `λ·‖W − W_prior‖`):
    ``{"token_ids": [n], "input": [n, d], "output": [n, d] or None when tied}``."""
    p = getattr(model, "_toolken_prior", None)
    if p is None:
        raise ToolkenError("this model has no toolken prior: call toolken.extend(model, tokenizer, tools) first")
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
        raise ToolkenError("this model has no tool registry: call toolken.extend(model, tokenizer, tools) first")
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


def _is_tied(model: nn.Module) -> bool:
    head = model.get_output_embeddings()
    return head is None or head.weight is model.get_input_embeddings().weight


def _state_dict_hook(model: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> dict:
    """Make `state_dict()` a plain checkpoint: current tool rows merged into the embedding
    weights, the `toolken_rows.*` entries dropped."""
    rows = tool_rows(model)
    for key in [k for k in state_dict if k.startswith(prefix + "toolken_rows.")]:
        del state_dict[key]
    if rows is None:
        return state_dict
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
    return state_dict


def _install_tool_rows(model: nn.Module, token_ids: torch.Tensor) -> ToolRows:
    """(Re)build the ToolRows module for `token_ids` from the current weights, freeze the rest."""
    _remove_hooks(model)
    inp = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = _is_tied(model)
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
    model.toolken_rows = rows  # registers the submodule: its parameters are the trainable ones
    rows.input.requires_grad_(True)
    if rows.output is not None:
        rows.output.requires_grad_(True)
    handles = [inp.register_forward_hook(_bind(_embedding_hook, rows))]
    if head is not None:
        handles.append(head.register_forward_hook(_bind(_lm_head_hook, rows)))
    handles.append(model._register_state_dict_hook(_state_dict_hook))
    model._toolken_hooks = handles
    return rows


class _bind:
    """A picklable/deep-copyable partial for hooks (closures are neither)."""

    def __init__(self, fn: Any, rows: ToolRows):
        self.fn, self.rows = fn, rows

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> Any:
        return self.fn(self.rows, module, args, output)


def _remove_hooks(model: nn.Module) -> None:
    for h in getattr(model, "_toolken_hooks", []):
        h.remove()
    model._toolken_hooks = []
    if tool_rows(model) is not None:
        sync_rows(model)
        del model.toolken_rows


# ---------------------------------------------------------------------------------------------
# extend
# ---------------------------------------------------------------------------------------------


def extend(
    model: Any,
    tokenizer: Any,
    tools: Union[ToolSet, Iterable[Union[Tool, dict]]],
    init: str = "description",
    token_format: Optional[str] = None,
    trainable: Optional[str] = "tool_rows",
    update: bool = False,
    batch_size: int = 32,
    show_progress: Optional[bool] = None,
    seed: Optional[int] = None,
) -> tuple[Any, Any]:
    """Add one atomic token per tool to `tokenizer` and `model`, and initialize its rows.

    Args:
        model: a Hugging Face causal LM (`PreTrainedModel` with input/output embeddings).
        tokenizer: its tokenizer (fast or slow).
        tools: a `ToolSet`, `Tool`s or OpenAI-style dicts.
        init: ``random``, ``mean``, ``name``, ``description`` or ``hidden`` (see `toolken.init`).
        token_format: how a tool name becomes its token; default ``"<<{name}>>"``. Fixed at the
            first extension of a model.
        trainable: ``"tool_rows"`` (only tool rows get gradients; everything else frozen),
            ``"full"`` (everything trainable), or None (leave `requires_grad` as it is; use this
            before wrapping with PEFT LoRA and pass
            ``trainable_token_indices=toolken.registry(model).tool_token_ids`` to `LoraConfig`).
        update: allow a changed spec for an already registered tool name (its spec is replaced
            and its rows re-initialized); otherwise that is an error.
        batch_size, show_progress: for ``init="hidden"``, which runs the model over every tool.
        seed: seeds ``init="random"``.

    Returns:
        ``(model, tokenizer)``, the same objects, extended in place.

    Raises:
        ExtendError / ToolSpecError: nothing is changed when anything fails.

    Example:
        >>> model, tokenizer = toolken.extend(model, tokenizer, tools, init="description")
        >>> toolken.registry(model).id_of("get_weather")
    """
    init_lib.check_strategy(init)
    if trainable not in TRAINABLE:
        raise ExtendError(f"unknown trainable={trainable!r}; choose 'tool_rows', 'full' or None")
    toolset = as_toolset(tools)
    old_reg = find_registry(model)
    fmt = token_format or (old_reg.token_format if old_reg else "<<{name}>>")
    _check_format(fmt)
    if old_reg is not None and fmt != old_reg.token_format:
        raise ExtendError(f"token_format {fmt!r} differs from this model's {old_reg.token_format!r}; "
                          "a model has one token format")
    if model.get_input_embeddings() is None:
        raise ExtendError(f"{type(model).__name__} has no input embeddings to extend")

    reg = old_reg.copy() if old_reg else ToolRegistry(
        token_format=fmt, base_vocab_size=len(tokenizer), base_fingerprint=vocab_fingerprint(tokenizer))
    if old_reg is not None:
        _check_tokenizer_matches(tokenizer, old_reg)
    new_tools, changed = [], []
    for tool in toolset:
        if tool.name in reg.tools:
            if reg.tools[tool.name] == tool:
                continue
            if not update:
                raise ExtendError(f"tool {tool.name!r} is already registered with a different spec; "
                                  "pass update=True to replace it")
            changed.append(tool)
        else:
            new_tools.append(tool)
    if not new_tools and not changed:
        if trainable == "tool_rows" and tool_rows(model) is None and len(reg):
            _install_tool_rows(model, torch.tensor(reg.tool_token_ids))
        return model, tokenizer

    tokens = {t.name: fmt.format(name=t.name) for t in new_tools}
    # 1. dry run on a copy of the tokenizer: every token must be new and encode to one id
    trial = copy.deepcopy(tokenizer)
    token_ids = _add_tokens(trial, tokens)
    # 2. the rows, computed from the unchanged model
    inp_w = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = _is_tied(model)
    init_tools = new_tools + changed
    init_ids = [token_ids[t.name] if t.name in token_ids else reg.token_ids[t.name] for t in init_tools]
    in_rows, out_rows = _init_rows(model, trial, init_tools, init, reg.base_vocab_size, tied, batch_size,
                                   show_progress if show_progress is not None else len(init_tools) > 64, seed)

    # 3. commit: tokenizer, embeddings, rows, registry, trainability (rolled back on failure)
    snapshot = _snapshot(model)
    try:
        needed = max(init_ids) + 1
        old_rows = inp_w.shape[0]
        if needed > old_rows:
            with _no_random_init(model):  # every new row is written below; HF would fill them randomly first
                model.resize_token_embeddings(needed, mean_resizing=False)
        ids_t = torch.tensor(init_ids, dtype=torch.long)
        _zero_unassigned_rows(model, old_rows, needed, ids_t)
        _remove_hooks(model)
        with torch.no_grad():
            w = model.get_input_embeddings().weight
            w.index_copy_(0, ids_t.to(w.device), in_rows.to(w.device, w.dtype))
            head = model.get_output_embeddings()
            if head is not None and not tied:
                head.weight.index_copy_(0, ids_t.to(head.weight.device), out_rows.to(head.weight.device, head.weight.dtype))
                if getattr(head, "bias", None) is not None:
                    head.bias[ids_t.to(head.bias.device)] = 0.0
        for t in init_tools:
            if t.name in token_ids:
                reg.tokens[t.name] = tokens[t.name]
                reg.token_ids[t.name] = token_ids[t.name]
            reg.init[t.name] = init
        reg.tools = ToolSet([*(changed_map(changed).get(t.name, t) for t in reg.tools), *new_tools])
        set_registry(model, reg)
        _update_prior(model, reg, ids_t, in_rows, None if tied else out_rows)
        del in_rows, out_rows  # the prior holds them now
        if trainable == "tool_rows":
            _install_tool_rows(model, torch.tensor(reg.tool_token_ids))
        elif trainable == "full":
            for p in model.parameters():
                p.requires_grad_(True)
        # last: the dry run proved this succeeds and yields the same ids
        if _add_tokens(tokenizer, tokens, verify=False) != token_ids:
            raise ExtendError("the tokenizer assigned different ids than in the dry run; is it shared across threads?")
    except BaseException:
        _restore(model, snapshot)
        raise
    return model, tokenizer


@contextlib.contextmanager
def _no_random_init(model: nn.Module) -> Iterator[None]:
    """Skip random init of the resized matrices: torch-level (module constructors, through
    transformers' `no_init_weights`) and the model's own `_init_weights`, which resizing calls."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    model._init_weights = lambda module: None  # instance attribute shadows the method
    try:
        with no_init_weights():
            yield
    finally:
        del model._init_weights


def _zero_unassigned_rows(model: nn.Module, old_rows: int, needed: int, ids: torch.Tensor) -> None:
    """New rows that no tool got (only when the embedding was smaller than the tokenizer) must
    not keep uninitialized memory."""
    if needed <= old_rows:
        return
    free = torch.ones(needed - old_rows, dtype=torch.bool)
    inside = ids[(ids >= old_rows) & (ids < needed)] - old_rows
    free[inside] = False
    if not free.any():
        return
    rows = torch.nonzero(free).squeeze(1) + old_rows
    with torch.no_grad():
        for module in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}.values():
            module.weight[rows.to(module.weight.device)] = 0.0
            if getattr(module, "bias", None) is not None:
                module.bias[rows.to(module.bias.device)] = 0.0


def changed_map(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


def _check_format(fmt: str) -> None:
    if not isinstance(fmt, str) or fmt.count("{name}") != 1:
        raise ExtendError(f"token_format must contain '{{name}}' exactly once, got {fmt!r}")
    try:
        fmt.format(name="x")
    except (KeyError, IndexError, ValueError) as e:
        raise ExtendError(f"token_format {fmt!r} is not a valid format string: {e}") from None


def _check_tokenizer_matches(tokenizer: Any, reg: ToolRegistry) -> None:
    """An extended model must come with the tokenizer that holds its tool tokens."""
    if not len(reg):
        return
    names = reg.names
    got = tokenizer.convert_tokens_to_ids([reg.tokens[n] for n in names])
    for n, tid in zip(names, got):
        if tid != reg.token_ids[n]:
            raise ExtendError(f"tool {n!r}: the model's registry maps token {reg.tokens[n]!r} to id "
                              f"{reg.token_ids[n]} but the tokenizer gives {tid}; pass the tokenizer that "
                              "was extended (or saved) with this model")


def _add_tokens(tokenizer: Any, tokens: dict[str, str], verify: bool = True) -> dict[str, int]:
    """Add `tokens` (tool name -> token string) as non-special tokens; return name -> id.

    Raises ExtendError if a token already exists in the vocabulary or (with `verify`, done on
    the dry-run copy) does not encode to exactly one id, alone and inside text."""
    from transformers import AddedToken

    if not tokens:
        return {}
    vocab = tokenizer.get_vocab()
    for name, tok in tokens.items():
        if tok in vocab:
            raise ExtendError(f"tool {name!r}: token {tok!r} already exists in the tokenizer's vocabulary "
                              f"(id {vocab[tok]}); rename the tool or change token_format")
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False, single_word=False)
                          for t in tokens.values()])
    ids = tokenizer.convert_tokens_to_ids(list(tokens.values()))
    out = dict(zip(tokens, ids))
    if not verify:
        return out
    alone = init_lib.encode_texts(tokenizer, list(tokens.values()))
    in_text = init_lib.encode_texts(tokenizer, [f"a {t}{{\"x\": 1}}" for t in tokens.values()])
    for (name, tok), a, b in zip(tokens.items(), alone, in_text):
        tid = out[name]
        if tid is None or a != [tid] or b.count(tid) != 1:
            raise ExtendError(f"tool {name!r}: token {tok!r} does not encode to exactly one id "
                              f"(got {a}); the tokenizer cannot make this name atomic, rename the tool")
    return out


def _init_rows(model, tokenizer, tools, init, base_vocab_size, tied, batch_size, show_progress, seed):
    inp = model.get_input_embeddings().weight.detach()
    head = model.get_output_embeddings()
    out_w = None if tied else head.weight.detach()
    n = len(tools)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None

    def rows_for(weight: torch.Tensor, strategy: str, ids: Optional[list[list[int]]]) -> torch.Tensor:
        if strategy == "random":
            return init_lib.random_rows(weight, base_vocab_size, n, gen)
        fallback = init_lib.mean_row(weight, base_vocab_size)
        if strategy == "mean":
            return fallback.unsqueeze(0).expand(n, -1).clone()
        return init_lib.mean_of_rows(weight, ids, fallback)

    in_strategy = "description" if init == "hidden" else init
    ids = None
    if in_strategy in ("name", "description"):
        ids = init_lib.text_token_ids(tokenizer, tools, with_description=in_strategy == "description")
    in_rows = rows_for(inp, in_strategy, ids)
    out_rows = None
    if init == "hidden":
        ref = inp if out_w is None else out_w
        target = init_lib.base_rows(ref, base_vocab_size).float().norm(dim=-1).mean().item()
        hid = init_lib.hidden_rows(model, ids, target, batch_size=batch_size, show_progress=show_progress)
        if tied:
            in_rows = hid  # one matrix: the output role decides (Re-Init initializes the head rows)
        else:
            out_rows = hid
    elif out_w is not None:
        out_rows = rows_for(out_w, init, ids)
    return in_rows, out_rows


def _update_prior(model: nn.Module, reg: ToolRegistry, ids: torch.Tensor, in_rows: torch.Tensor,
                  out_rows: Optional[torch.Tensor]) -> None:
    """Keep the init rows of every registered tool (registry order): earlier ones carried over,
    `ids` set to the rows just initialized."""
    pos = {t: i for i, t in enumerate(reg.tool_token_ids)}
    old = getattr(model, "_toolken_prior", None)
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
    model._toolken_prior = {"token_ids": torch.tensor(reg.tool_token_ids, dtype=torch.long),
                            "input": new_in, "output": new_out}


def _snapshot(model: nn.Module) -> dict[str, Any]:
    inp = model.get_input_embeddings()
    head = model.get_output_embeddings()
    return {
        "inp": (inp, inp.weight.data, getattr(inp, "num_embeddings", None)),
        "head": None if head is None else (head, head.weight.data, getattr(head, "bias", None) is not None
                                           and head.bias.data, getattr(head, "out_features", None)),
        "vocab_size": model.config.get_text_config().vocab_size,
        "requires_grad": [(p, p.requires_grad) for p in model.parameters()],
        "rows": tool_rows(model),
        "hooks": list(getattr(model, "_toolken_hooks", [])),
        "prior": getattr(model, "_toolken_prior", None),
        "registry": getattr(model.config, "toolken", None),
    }


def _restore(model: nn.Module, s: dict[str, Any]) -> None:
    inp, data, num = s["inp"]
    if model.get_input_embeddings() is not inp:
        model.set_input_embeddings(inp)
    inp.weight.data = data
    if num is not None:
        inp.num_embeddings = num
    if s["head"] is not None:
        head, hdata, bias, out_features = s["head"]
        if model.get_output_embeddings() is not head:
            model.set_output_embeddings(head)
        head.weight.data = hdata
        if bias is not False and bias is not None:
            head.bias.data = bias
        if out_features is not None:
            head.out_features = out_features
    model.config.get_text_config().vocab_size = s["vocab_size"]
    if s["registry"] is None:
        if hasattr(model.config, "toolken"):
            delattr(model.config, "toolken")
    else:
        model.config.toolken = s["registry"]
    for p, rg in s["requires_grad"]:
        p.requires_grad_(rg)
    if tool_rows(model) is not None and tool_rows(model) is not s["rows"]:
        for h in getattr(model, "_toolken_hooks", []):
            h.remove()
        del model.toolken_rows
    if s["rows"] is not None and tool_rows(model) is None:
        _reinstall(model, s["rows"])
    model._toolken_prior = s["prior"]


def _reinstall(model: nn.Module, rows: ToolRows) -> None:
    model.toolken_rows = rows
    handles = [model.get_input_embeddings().register_forward_hook(_bind(_embedding_hook, rows))]
    head = model.get_output_embeddings()
    if head is not None:
        handles.append(head.register_forward_hook(_bind(_lm_head_hook, rows)))
    handles.append(model._register_state_dict_hook(_state_dict_hook))
    model._toolken_hooks = handles
