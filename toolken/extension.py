"""`toolken.extend`: give every tool one atomic vocabulary token and initialize its rows.

Tokens are added as non-special tokens (ToolGen's atomic tool tokens), each checked to encode to
exactly one id; rows are addressed by token id, never as "the last N rows", so models whose
embedding already has spare rows work. Tied and untied input/output embeddings are handled.
``trainable="tool_rows"`` hands the rows to `toolken.rows` (ToolkenGPT-style training of the
tool rows only). Everything is checked on copies first; a failure rolls the model back.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from transformers import AddedToken

from . import init as init_lib
from . import rows as rows_lib
from .errors import ExtendError
from .format import DEFAULT_TOKEN_FORMAT, check_token_format
from .modeling import is_tied
from .registry import ToolRegistry, find_registry, set_registry, vocab_fingerprint
from .tools import Tool, ToolSet, as_toolset

TRAINABLE = ("tool_rows", "full", None)


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
        tools: a `ToolSet`, `Tool`s or OpenAI-style dicts; at least one unless the model is
            already extended (then none adds nothing, only (re)installs trainable rows).
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
        ExtendError / ToolSpecError: nothing is changed when anything fails. Among others:
            no tools for a model never extended, and a tokenizer that does not belong to the
            model (see `check_tokenizer_fits`: its own token ids reach past the embedding).

    Example:
        >>> model, tokenizer = toolken.extend(model, tokenizer, tools, init="description")
        >>> toolken.registry(model).id_of("get_weather")
    """
    init_lib.check_strategy(init)
    _check_trainable(trainable)
    toolset = as_toolset(tools)
    old_reg = find_registry(model)
    if not len(toolset) and old_reg is None:
        raise ExtendError("no tools to add: `tools` is empty; pass the tools to give tokens to "
                          "(a ToolSet, Tools or OpenAI tool specs)")
    fmt = token_format or (old_reg.token_format if old_reg else DEFAULT_TOKEN_FORMAT)
    check_token_format(fmt)
    if old_reg is not None and fmt != old_reg.token_format:
        raise ExtendError(f"token_format {fmt!r} differs from this model's {old_reg.token_format!r}; "
                          "a model has one token format")
    check_tokenizer_fits(model, tokenizer)

    reg = old_reg.copy() if old_reg else ToolRegistry(
        token_format=fmt, base_vocab_size=len(tokenizer), base_fingerprint=vocab_fingerprint(tokenizer))
    if old_reg is not None:
        _check_tokenizer_matches(tokenizer, old_reg)
    new_tools, changed = _split_tools(reg, toolset, update)
    if not new_tools and not changed:
        # nothing new (an extended model, the same or no tools): only (re)install trainable rows
        if trainable == "tool_rows" and rows_lib.tool_rows(model) is None and len(reg):
            rows_lib.install(model, torch.tensor(reg.tool_token_ids))
        return model, tokenizer

    tokens = {t.name: fmt.format(name=t.name) for t in new_tools}
    # 1. dry run on a copy of the tokenizer: every token must be new and encode to one id
    trial = copy.deepcopy(tokenizer)
    token_ids = _add_tokens(trial, tokens)
    # 2. the rows, computed from the unchanged model
    init_tools = new_tools + changed
    in_rows, out_rows = _init_rows(model, trial, init_tools, init, reg.base_vocab_size, is_tied(model), batch_size,
                                   show_progress if show_progress is not None else len(init_tools) > 64, seed)
    # 3. commit (rolled back on failure)
    _commit(model, tokenizer, reg, new_tools, changed, tokens, token_ids, in_rows, out_rows,
            {t.name: init for t in init_tools}, trainable)
    return model, tokenizer


def extend_with_rows(
    model: Any,
    tokenizer: Any,
    tools: Union[ToolSet, Iterable[Union[Tool, dict]]],
    token_ids: Sequence[int],
    input_rows: torch.Tensor,
    output_rows: Optional[torch.Tensor] = None,
    *,
    token_format: Optional[str] = None,
    init: Optional[Mapping[str, str]] = None,
    prior: Optional[Mapping[str, Optional[torch.Tensor]]] = None,
    trainable: Optional[str] = "tool_rows",
) -> tuple[Any, Any]:
    """Extend an unextended model with `tools` whose tokens must get exactly `token_ids`, and
    give them the given rows instead of initializing them (how `toolken.load` restores an
    adapter).

    Args:
        tools: the tools, in registry order; ``token_ids[i]`` is the id the token of ``tools[i]``
            must get on this tokenizer.
        input_rows: ``[n, d]`` input-embedding rows, in tool order (the rows of the one matrix
            when embeddings are tied).
        output_rows: ``[n, d]`` LM-head rows for an untied model; None when tied.
        init: tool name -> the init strategy recorded in the registry (default ``""``).
        prior: the init prior to keep (`toolken.prior`'s layout); default: the given rows.
        token_format, trainable: as for `extend`.

    Raises:
        ExtendError / ToolSpecError: before anything is changed, when the model is already
            extended, the tokenizer does not belong to the model, a row has the wrong shape, or
            the dry run on a copy of the tokenizer gives any token an id other than `token_ids`
            (it names the tool, the token and both ids). A failure while committing rolls the
            model back; the tokenizer is changed last.
    """
    _check_trainable(trainable)
    toolset = as_toolset(tools)
    if not len(toolset):
        raise ExtendError("no tools to add: `tools` is empty")
    if find_registry(model) is not None:
        raise ExtendError("the model is already extended (it has a tool registry); extend_with_rows needs the "
                          "unextended base model and tokenizer")
    fmt = token_format or DEFAULT_TOKEN_FORMAT
    check_token_format(fmt)
    check_tokenizer_fits(model, tokenizer)
    n, d = len(toolset), model.get_input_embeddings().weight.shape[1]
    tied = is_tied(model)
    if len(token_ids) != n:
        raise ExtendError(f"{len(token_ids)} token ids for {n} tools")
    for what, rows in (("input_rows", input_rows), *(() if tied else (("output_rows", output_rows),))):
        if not isinstance(rows, torch.Tensor) or tuple(rows.shape) != (n, d) or not rows.is_floating_point():
            got = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
            raise ExtendError(f"{what}: expected a float tensor of shape {(n, d)} (tools x hidden size), got {got}")
    reg = ToolRegistry(token_format=fmt, base_vocab_size=len(tokenizer), base_fingerprint=vocab_fingerprint(tokenizer))
    tokens = {t.name: fmt.format(name=t.name) for t in toolset}
    trial = copy.deepcopy(tokenizer)
    got_ids = _add_tokens(trial, tokens)
    for t, want in zip(toolset, token_ids):
        if got_ids[t.name] != int(want):
            raise ExtendError(f"tool {t.name!r}: token {tokens[t.name]!r} would get id {got_ids[t.name]} on this "
                              f"tokenizer, but its rows are for id {int(want)}")
    init = dict(init or {})
    _commit(model, tokenizer, reg, list(toolset), [], tokens, got_ids, input_rows.detach(),
            None if tied else output_rows.detach(), {t.name: init.get(t.name, "") for t in toolset}, trainable,
            prior=prior, exact=True)
    return model, tokenizer


def _split_tools(reg: ToolRegistry, toolset: ToolSet, update: bool) -> tuple[list[Tool], list[Tool]]:
    """(tools not registered yet, registered tools whose spec changed); the latter only with
    `update`, else an ExtendError naming the tool."""
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
    return new_tools, changed


def _check_trainable(trainable: Any) -> None:
    if trainable not in TRAINABLE:
        raise ExtendError(f"unknown trainable={trainable!r}; choose 'tool_rows', 'full' or None")


def check_tokenizer_fits(model: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer that does not belong to `model`.

    The rule: every token id of the tokenizer must have a row in the input embedding, except
    tokens *added* to the tokenizer (``tokenizer.added_tokens_decoder``) after the model was
    built, whose rows `extend` creates (zeroed) when it resizes. So a tokenizer whose own
    vocabulary reaches past the embedding matrix (say 128,256 tokens for a 49,152-row model)
    is refused. More rows than tokens is allowed: many checkpoints pad the embedding to a
    multiple of 64 or 128 (Qwen, Phi-3, Pythia), and `extend` uses those spare rows first.

    Raises:
        ExtendError: naming both sizes and the first token without a row.
    """
    emb = model.get_input_embeddings()
    if emb is None or getattr(emb, "weight", None) is None:
        raise ExtendError(f"{type(model).__name__} has no input embeddings to extend")
    rows, n = emb.weight.shape[0], len(tokenizer)
    if n <= rows:
        return
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    outside = sorted((i, t) for t, i in tokenizer.get_vocab().items() if i >= rows and i not in added)
    if outside:
        i, t = outside[0]
        raise ExtendError(f"the tokenizer has {n} tokens but the model's input embedding has {rows} rows, and "
                          f"{len(outside)} of the tokenizer's own tokens have no row (first: {t!r}, id {i}): this "
                          "tokenizer does not belong to this model; pass the model's own tokenizer")


def _commit(model: Any, tokenizer: Any, reg: ToolRegistry, new_tools: list, changed: list, tokens: dict[str, str],
            token_ids: dict[str, int], in_rows: torch.Tensor, out_rows: Optional[torch.Tensor], inits: dict[str, str],
            trainable: Optional[str], prior: Optional[Mapping[str, Any]] = None, exact: bool = False) -> None:
    """Apply a checked extension: resize, write the rows, registry, prior, trainability, and
    last the tokenizer. Any failure restores the model (the tokenizer is not touched yet).
    `exact`: the trainable rows get `in_rows`/`out_rows` as given (float32), not read back from
    the (maybe lower precision) embedding weights."""
    tied = is_tied(model)
    init_tools = new_tools + changed
    init_ids = [token_ids[t.name] if t.name in token_ids else reg.token_ids[t.name] for t in init_tools]
    old_rows = model.get_input_embeddings().weight.shape[0]
    # rows written in place (spare rows, replaced tools, trainable rows synced back) are saved too
    touched = sorted(i for i in {*init_ids, *reg.tool_token_ids} if i < old_rows)
    snapshot = _snapshot(model, touched)
    try:
        needed = max(init_ids) + 1
        if needed > old_rows:
            with _no_random_init(model):  # every new row is written below; HF would fill them randomly first
                model.resize_token_embeddings(needed, mean_resizing=False)
        ids_t = torch.tensor(init_ids, dtype=torch.long)
        _zero_unassigned_rows(model, old_rows, needed, ids_t)
        rows_lib.uninstall(model)
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
            reg.init[t.name] = inits[t.name]
        replaced = {t.name: t for t in changed}
        reg.tools = ToolSet([*(replaced.get(t.name, t) for t in reg.tools), *new_tools])
        set_registry(model, reg)
        rows_lib.update_prior(model, reg, ids_t, in_rows, None if tied else out_rows)
        if prior is not None:
            rows_lib.set_prior(model, dict(prior))
        if trainable == "tool_rows":
            rows = rows_lib.install(model, torch.tensor(reg.tool_token_ids))
            if exact:
                with torch.no_grad():
                    order = rows.lookup[ids_t.to(rows.lookup.device)]
                    rows.input[order] = in_rows.to(rows.input)
                    if rows.output is not None:
                        rows.output[order] = out_rows.to(rows.output)
        elif trainable == "full":
            for p in model.parameters():
                p.requires_grad_(True)
        # last: the dry run proved this succeeds and yields the same ids
        if _add_tokens(tokenizer, tokens, verify=False) != token_ids:
            raise ExtendError("the tokenizer assigned different ids than in the dry run; is it shared across threads?")
    except BaseException:
        _restore(model, snapshot)
        raise


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


def _snapshot(model: nn.Module, touched: list[int]) -> dict[str, Any]:
    """What `_restore` needs to undo a commit: the embedding modules and tensors (resizing
    replaces them) plus a copy of the `touched` rows of every matrix (written in place)."""
    inp = model.get_input_embeddings()
    head = model.get_output_embeddings()
    ids = torch.tensor(touched, dtype=torch.long)
    tensors = {t.data_ptr(): t for t in (inp.weight.data, None if head is None else head.weight.data,
                                  None if head is None or getattr(head, "bias", None) is None else head.bias.data)
               if t is not None}
    return {
        "rows_saved": [(t, ids.to(t.device), t[ids.to(t.device)].clone()) for t in tensors.values()],
        "inp": (inp, inp.weight.data, getattr(inp, "num_embeddings", None)),
        "head": None if head is None else (head, head.weight.data, getattr(head, "bias", None) is not None
                                           and head.bias.data, getattr(head, "out_features", None)),
        "vocab_size": model.config.get_text_config().vocab_size,
        "requires_grad": [(p, p.requires_grad) for p in model.parameters()],
        "rows": rows_lib.tool_rows(model),
        "prior": getattr(model, rows_lib.PRIOR_ATTR, None),
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
    current = rows_lib.tool_rows(model)
    if current is not None and current is not s["rows"]:
        for h in getattr(model, rows_lib.HOOKS_ATTR, []):
            h.remove()
        del model.toolken_rows
    if s["rows"] is not None and rows_lib.tool_rows(model) is None:
        rows_lib.attach(model, s["rows"])
    rows_lib.set_prior(model, s["prior"])
    with torch.no_grad():
        for t, ids, saved in s["rows_saved"]:
            t.index_copy_(0, ids, saved)


