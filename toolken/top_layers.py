"""Training tool tokens through the top K decoder layers, on cached activations.

ToolGen (Wang et al. 2024, arXiv:2410.03439) fine-tunes the whole model to generate the right
tool token; ToolkenGPT (Hao et al. 2023) and Re-Initialization Token Learning (Li et al. 2025,
arXiv:2506.14248) train only the tool rows of a frozen model (each tool a linear read-out of one
frozen final hidden state). In between, and cheap: the frozen lower ``L - K`` layers run once per
prompt (`encode_layer_states`, kept in an `ActivationCache`); each step runs only the top K layers
(fully, or LoRA through PEFT, merged back at the end), the final norm and the head
(`top_hidden`), with `toolken.loss.hidden_states_loss` (fused full-vocabulary weighted
cross-entropy, row-sparse head) at the position that predicts the tool token. K = 0 trains the
tool rows alone. One call: `train_tool_tokens`. Tool2Vec rows (arXiv:2409.02141): `tool2vec_rows`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .activations import (ActivationCache, LayerStates, decoder_layers, encode_layer_states, final_hidden,
                          template_prefix_len, top_hidden)
from .data import MEMORIZATION_PROMPTS
from .errors import DataError, NotExtendedError, ToolkenError
from .generation import render_prompt
from .loss import hidden_states_loss
from .modeling import unwrap_peft
from .registry import NOT_EXTENDED, find_registry
from .rows import tool_rows
from .tools import PathLike
from .weights import IGNORE_INDEX

try:  # the `train` extra; needed only for lora_rank > 0
    import peft
except ImportError:  # pragma: no cover - peft is installed with toolken[train]
    peft = None

ROW_LR = 3e-3         # Adam lr of the tool rows: the held-out choice of `toolken eval retrieval` (README)
LAYER_LR = 1e-4       # full top layers and final norm: a prior, not tuned
LORA_LR = 1e-3        # LoRA weights: a prior, not tuned
INITS = (None, "tool2vec")


def tool2vec_rows(query_hidden: torch.Tensor, targets: Sequence[Sequence[int]], fallback: torch.Tensor,
                  scale: float = 1.0) -> torch.Tensor:
    """Tool2Vec (Moon et al. 2024, arXiv:2409.02141): a tool's vector is the mean of its usage
    queries. Here the mean final hidden state of the training queries calling it, centered (the
    common direction adds one logit to every tool), as a unit vector times ``scale`` x the mean
    `fallback` row norm, added to its fallback (description) row; uncalled tools keep fallback.
    Not yet shown to help (a Seal-Tools prototype saw no gain before training)."""
    n, d = fallback.shape
    qh = query_hidden.float()
    pairs = torch.tensor([(q, t) for q, ts in enumerate(targets) for t in ts], dtype=torch.long).reshape(-1, 2)
    acc = torch.zeros(n, d).index_add_(0, pairs[:, 1], (qh - qh.mean(0))[pairs[:, 0]])
    cnt = torch.bincount(pairs[:, 1], minlength=n).float()
    out = fallback.detach().float().cpu().clone()
    used = cnt > 0
    out[used] += F.normalize(acc[used] / cnt[used].unsqueeze(1), dim=-1) * out.norm(dim=-1).mean() * scale
    return out


# --- training ------------------------------------------------------------------------------------
@dataclass
class Examples:
    """Per (prompt, tool): the prompt's index, the tool's token id, weight 1 / the query's tools."""

    prompt: torch.Tensor    # [N] long
    token_id: torch.Tensor  # [N] long
    weight: torch.Tensor    # [N] float32

    def __len__(self) -> int:
        return self.prompt.shape[0]


def tool_loss(model: Any, states: LayerStates, examples: Examples, index: torch.Tensor) -> torch.Tensor:
    """`toolken.weighted_loss` of the selected examples from cached states: the fused, weighted
    full-vocabulary cross-entropy of the tool token at the last prompt position."""
    h = top_hidden(model, states, examples.prompt[index].tolist())
    ids, w = examples.token_id[index].to(h.device), examples.weight[index].to(h.device)
    labels, weights = torch.stack([torch.full_like(ids, IGNORE_INDEX), ids], 1), torch.stack([torch.zeros_like(w), w], 1)
    return hidden_states_loss(model, torch.stack([h, torch.zeros_like(h)], dim=1), labels, weights)


def _trainable(model: Any, start: int, lora_rank: int) -> tuple[Any, list[nn.Parameter], list[nn.Parameter]]:
    """(model to train, layer + norm parameters, tool rows); LoRA on the top layers' linears."""
    base = unwrap_peft(model)
    dec = decoder_layers(base)
    rows = list(tool_rows(base).parameters())
    if lora_rank:
        if peft is None:
            raise ToolkenError("lora_rank > 0 needs peft: pip install 'toolken[train]'")
        top = {id(m) for layer in dec.layers[start:] for m in layer.modules()}
        linear = [n for n, m in base.named_modules() if id(m) in top and isinstance(m, nn.Linear)]
        model = peft.get_peft_model(model, peft.LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                                                           target_modules=linear))
        layers = [p for n, p in model.named_parameters() if "lora_" in n]
    else:
        layers = [p for layer in dec.layers[start:] for p in layer.parameters()]
    if start < len(dec.layers):
        layers += list(dec.norm.parameters())
    trained = {id(p) for p in layers + rows}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    return model, layers, rows


def train_on_layer_states(model: Any, states: LayerStates, examples: Examples, *, lora_rank: int = 0,
                          epochs: float = 3.0, max_steps: Optional[int] = None, batch_size: int = 32,
                          lr: float = ROW_LR, layer_lr: Optional[float] = None, seed: int = 0,
                          evaluate: Optional[Callable[[int, float, Any], None]] = None, eval_every: int = 0,
                          show_progress: bool = True) -> Any:
    """Adam (constant rates) on the tool rows (`lr`) and, for ``states.layer < L``, the top layers
    (fully, or LoRA of rank `lora_rank`, merged at the end) and the final norm (`layer_lr`,
    default `LAYER_LR` / `LORA_LR`), `tool_loss` on shuffled batches: `epochs` passes, or
    `max_steps` steps when given. Nothing else changes; ``requires_grad`` is restored.
    ``evaluate(step, mean loss since the last call, model)`` runs at step 0 (loss NaN), every
    `eval_every` steps and at the end. Returns the model, trained in place."""
    top = len(decoder_layers(model).layers) - states.layer
    flags, was_training = [(p, p.requires_grad) for p in model.parameters()], model.training
    trained, layers, rows = _trainable(model, states.layer, lora_rank)
    layer_lr = layer_lr or (LORA_LR if lora_rank else LAYER_LR)
    opt = torch.optim.Adam([{"params": rows, "lr": lr}] + ([{"params": layers, "lr": layer_lr}] if layers else []))
    per_epoch = math.ceil(len(examples) / batch_size)
    steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * per_epoch))
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(examples), generator=gen) for _ in range(math.ceil(steps / per_epoch))])
    losses: list[float] = []

    def report(step: int) -> None:
        if evaluate is not None:
            evaluate(step, sum(losses) / len(losses) if losses else float("nan"), unwrap_peft(trained))

    try:
        report(0)
        trained.train()
        for step in tqdm(range(1, steps + 1), desc=f"toolken: train (top {top} layers)", disable=not show_progress):
            e = (step - 1) // per_epoch  # batches never straddle two epochs
            idx = order[e * len(examples):][((step - 1) % per_epoch) * batch_size:][:batch_size]
            loss = tool_loss(trained, states, examples, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if (eval_every and step % eval_every == 0) or step == steps:
                report(step)
                losses = []
    finally:
        if lora_rank:
            trained.merge_and_unload()
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    return model


def tool_token_examples(model: Any, tokenizer: Any, queries: Sequence[Any],
                        memorization: Sequence[str]) -> tuple[list[list[int]], Examples, list[list[int]]]:
    """(prompts, examples, tool indices per query): the queries, then every tool's memorization
    prompt (ToolGen) per phrasing, as user turns in the chat template (as `toolken.retrieve`)."""
    reg = find_registry(model)
    if reg is None:
        raise NotExtendedError(NOT_EXTENDED)
    index = {n: i for i, n in enumerate(reg.names)}
    texts, targets = [], []
    for i, q in enumerate(queries):
        pair = isinstance(q, (tuple, list)) and len(q) == 2
        text, gold = (q.text, q.gold) if hasattr(q, "text") and hasattr(q, "gold") else (q if pair else (None, None))
        gold = [gold] if isinstance(gold, str) else list(gold or ())
        if not isinstance(text, str) or not text.strip() or not gold:
            raise DataError(f"queries[{i}]: expected (text, tool name or names) or an object with .text and .gold")
        unknown = [g for g in gold if g not in index]
        if unknown:
            raise DataError(f"queries[{i}]: tool {unknown[0]!r} is not registered on this model")
        texts.append(text)
        targets.append(list(dict.fromkeys(index[g] for g in gold)))
    for phrasing in memorization:
        if phrasing not in MEMORIZATION_PROMPTS:
            raise DataError(f"memorization: unknown phrasing {phrasing!r}; choose from {', '.join(MEMORIZATION_PROMPTS)}")
        for i, name in enumerate(reg.names):
            texts.append(MEMORIZATION_PROMPTS[phrasing].format(name=name, description=reg.tools[name].description))
            targets.append([i])
    ids = reg.tool_token_ids
    rows = [(p, ids[t], 1.0 / len(ts)) for p, ts in enumerate(targets) for t in ts]
    cols = list(zip(*rows)) or [(), (), ()]
    examples = Examples(*(torch.tensor(c, dtype=t) for c, t in zip(cols, (torch.long, torch.long, torch.float))))
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": t}]) for t in texts]
    return prompts, examples, targets[:len(queries)]


def train_tool_tokens(model: Any, tokenizer: Any, queries: Sequence[Any] = (), *, train_layers: int = 0,
                      lora_rank: int = 0, memorization: Sequence[str] = ("document", "request"),
                      init: Optional[str] = None, epochs: float = 3.0, max_steps: Optional[int] = None,
                      batch_size: int = 32, lr: float = ROW_LR, layer_lr: Optional[float] = None,
                      cache_dir: Union[PathLike, ActivationCache, None] = None, seed: int = 0,
                      evaluate: Optional[Callable[[int, float, Any], None]] = None, eval_every: int = 0,
                      show_progress: bool = True) -> Any:
    """Train the tool tokens of an extended model through its top `train_layers` decoder layers.

    Args:
        model, tokenizer: from ``toolken.extend(..., trainable="tool_rows")`` (the default).
        queries: ``(text, tool name or names)`` pairs or objects with ``.text`` / ``.gold``
            (`toolken.eval.Query`): ToolGen's retrieval stage.
        train_layers: K top layers trained with the final norm; 0 trains only the tool rows.
        lora_rank: 0 trains the K layers fully; r > 0 LoRA of rank r (PEFT), merged at the end.
        memorization: phrasings of `toolken.data.MEMORIZATION_PROMPTS` per tool (ToolGen).
        init: None keeps the rows `toolken.extend` gave; ``"tool2vec"`` adds `tool2vec_rows`.
        cache_dir: folder (or `ActivationCache`) for the lower layers' states; None: in memory.
        Others: see `train_on_layer_states`.

    Returns:
        The same model, trained in place, a plain transformers model. Save it whole with
        `toolken.merge` (or ``save_pretrained``); `toolken.save` writes only the tool rows: add
        `top_layer_state_dict` for the trained layers.
    """
    if hasattr(model, "peft_config"):
        raise ToolkenError("pass the transformers model, not a PeftModel: lora_rank= adds the LoRA layers")
    n_layers = len(decoder_layers(model).layers)
    _check_options(n_layers, train_layers, lora_rank, init, epochs, max_steps, batch_size, queries)
    prompts, examples, targets = tool_token_examples(model, tokenizer, queries, memorization)
    if tool_rows(model) is None:
        raise ToolkenError("the model must be extended with trainable='tool_rows' (toolken.extend's default)")
    if not len(examples):
        raise DataError("no training examples: pass queries or memorization phrasings")
    cache = cache_dir if isinstance(cache_dir, ActivationCache) else ActivationCache(cache_dir)
    states = encode_layer_states(model, prompts, n_layers - train_layers, cache,
                                 prefix_len=template_prefix_len(tokenizer), show_progress=show_progress)
    if init == "tool2vec":
        rows = tool_rows(model)
        hidden = final_hidden(model, LayerStates(states.layer, states.prefix, states.suffix[:len(targets)]))
        with torch.no_grad():
            rows.output_rows.copy_(tool2vec_rows(hidden, targets, rows.output_rows).to(rows.output_rows))
    return train_on_layer_states(model, states, examples, lora_rank=lora_rank, epochs=epochs, max_steps=max_steps,
                                 batch_size=batch_size, lr=lr, layer_lr=layer_lr, seed=seed, evaluate=evaluate,
                                 eval_every=eval_every, show_progress=show_progress)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_options(n_layers: int, train_layers: Any, lora_rank: Any, init: Any, epochs: Any, max_steps: Any,
                   batch_size: Any, queries: Sequence[Any]) -> None:
    if not _whole(train_layers) or not 0 <= train_layers <= n_layers:
        raise ToolkenError(f"train_layers must be an integer in 0..{n_layers} (the model's layers), got {train_layers!r}")
    if not _whole(lora_rank) or lora_rank < 0 or (lora_rank and not train_layers):
        raise ToolkenError(f"lora_rank must be 0, or a positive integer with train_layers > 0; got {lora_rank!r}")
    if init not in INITS or (init == "tool2vec" and not len(queries)):
        raise ToolkenError(f"init must be None or 'tool2vec' (which needs queries), got {init!r}")
    if max_steps is None and not (isinstance(epochs, (int, float)) and epochs > 0):
        raise ToolkenError(f"epochs must be positive, got {epochs!r}")
    for name, v in (("max_steps", max_steps), ("batch_size", batch_size)):
        if v is not None and (not _whole(v) or v < 1):
            raise ToolkenError(f"{name} must be a positive integer, got {v!r}")


def top_layer_state_dict(model: Any, train_layers: int) -> dict[str, torch.Tensor]:
    """The state-dict entries `train_tool_tokens` changes besides the tool rows (top layers, final
    norm; ``{}`` for 0): save with `safetensors.torch.save_file` beside `toolken.save`'s adapter,
    restore with ``base.load_state_dict(weights, strict=False)`` before `toolken.load`."""
    dec = decoder_layers(model)
    if not train_layers:
        return {}
    names = {id(m): n for n, m in model.named_modules()}
    keep = tuple(f"{names[id(m)]}." for m in (*dec.layers[len(dec.layers) - train_layers:], dec.norm))
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(keep)}


__all__ = ["train_tool_tokens", "train_on_layer_states", "tool_token_examples", "tool_loss", "Examples",
           "tool2vec_rows", "top_layer_state_dict", "ROW_LR", "LAYER_LR", "LORA_LR", "INITS"]
