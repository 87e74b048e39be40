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

import contextlib
import copy
import hashlib
import inspect
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from .data import MEMORIZATION_PROMPTS
from .errors import DataError, NotExtendedError, ToolkenError
from .generation import render_prompt
from .loss import hidden_states_loss
from .modeling import pad, unwrap_peft
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


# --- the decoder, run over a slice of its layers -------------------------------------------------
def decoder_layers(model: Any) -> Any:
    """The decoder stack (under PEFT too) with ``.layers`` and a final ``.norm`` (Llama-style)."""
    base = unwrap_peft(model)
    dec = base.get_decoder() if hasattr(base, "get_decoder") else None
    if dec is not None and isinstance(getattr(dec, "layers", None), nn.ModuleList) and isinstance(getattr(dec, "norm", None), nn.Module):
        return dec
    raise ToolkenError(f"top-layer training needs a decoder with .layers and a final .norm (Llama-style); {type(base).__name__} has none")


@contextlib.contextmanager
def _inference(model: Any) -> Iterator[None]:
    """Eval mode and no gradients inside; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _layer_slice(dec: Any, start: int, end: int, states: Optional[torch.Tensor] = None) -> Iterator[dict]:
    """Inside, `dec` runs only ``layers[start:end]`` in its own forward (masks, rotary, norm);
    `states` [B, T, d] replace the stream entering them; ``yielded["h"]``: the stream leaving."""
    layers, seen = dec.layers, {}

    def replace(module: Any, args: tuple, kwargs: dict) -> tuple:
        return ((states, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": states})

    def read(module: Any, args: tuple, kwargs: dict) -> None:
        seen["h"] = args[0] if args else kwargs["hidden_states"]

    entry = layers[start] if start < end else dec.norm
    handles = [] if states is None else [entry.register_forward_pre_hook(replace, with_kwargs=True)]
    handles.append(dec.norm.register_forward_pre_hook(read, with_kwargs=True))
    dec.layers = layers[start:end]
    try:
        yield seen
    finally:
        dec.layers = layers
        for h in handles:
            h.remove()


# --- the activation cache ------------------------------------------------------------------------
def states_fingerprint(model: Any, layer: int) -> str:
    """Key of "the states entering decoder `layer`": the config and each parameter they depend on
    (embeddings without tool rows, the layers below) as a strided sample plus its float64 sum."""
    base = unwrap_peft(model)
    dec = decoder_layers(base)
    emb, head, rows = base.get_input_embeddings(), base.get_output_embeddings(), tool_rows(base)
    skip = {id(p) for m in (*dec.layers[layer:], dec.norm, rows, head) if m is not None for p in m.parameters()}
    skip.discard(id(emb.weight))
    reg = find_registry(base)
    cfg = {k: v for k, v in base.config.to_dict().items()
           if k not in ("toolken", "_name_or_path", "transformers_version", "vocab_size")}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode() + f"|layer {layer}".encode())
    with torch.no_grad():
        for name, p in base.named_parameters():
            if id(p) in skip:
                continue
            t = p.detach()[: reg.base_vocab_size] if (p is emb.weight and reg is not None) else p.detach()
            flat = t.reshape(-1)
            h.update(f"{name}{tuple(t.shape)}{float(torch.sum(flat, dtype=torch.float64))!r}".encode())
            h.update(flat[:: max(1, flat.numel() // 256)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


class ActivationCache:
    """Residual-stream states of prompts, keyed by model fingerprint + layer + dtype (a folder
    each: ``<directory>/layer_states/<key>/``) and by the prompt's token ids; the shared prefix is
    stored once. Shards are renamed into place (never half an entry; a corrupt one is a miss).
    ``directory=None`` keeps everything in memory. One cache serves any models and layers."""

    def __init__(self, directory: Optional[PathLike] = None) -> None:
        self.directory = None if directory is None else Path(directory) / "layer_states"
        self.entries: dict[str, dict[str, torch.Tensor]] = {}

    def folder(self, model_key: str) -> dict[str, torch.Tensor]:
        """The entries of one model key, read from disk the first time."""
        if model_key not in self.entries:
            found = self.entries[model_key] = {}
            where = None if self.directory is None else self.directory / model_key
            for shard in sorted(where.glob("*.pt")) if where is not None and where.is_dir() else []:
                try:
                    data = torch.load(shard, weights_only=True)
                    found.update(zip(data["keys"], data["states"]))
                except Exception:  # a corrupt shard is only a miss
                    continue
        return self.entries[model_key]

    @staticmethod
    def key(token_ids: Sequence[int], prefix_len: int) -> str:
        return hashlib.sha1(json.dumps([int(t) for t in token_ids]).encode()).hexdigest() + f":{prefix_len}"

    def put(self, model_key: str, keys: Sequence[str], states: Sequence[torch.Tensor]) -> None:
        states = [s.detach().cpu().contiguous() for s in states]
        self.folder(model_key).update(zip(keys, states))
        if self.directory is None or not keys:
            return
        where = self.directory / model_key
        where.mkdir(parents=True, exist_ok=True)
        tmp = where / f".{uuid.uuid4().hex}.tmp"
        torch.save({"keys": list(keys), "states": states}, tmp)
        os.replace(tmp, where / f"{uuid.uuid4().hex}.pt")


@dataclass
class LayerStates:
    """States entering decoder `layer`: the shared prefix [P, d] and per prompt [T_i - P, d];
    at ``layer == L`` (rows only) just each prompt's last position, with P = 0."""

    layer: int
    prefix: torch.Tensor
    suffix: list[torch.Tensor]


def template_prefix_len(tokenizer: Any) -> int:
    """Tokens the chat template puts before every user message (system turn, user header)."""
    a, b = (render_prompt(tokenizer, [{"role": "user", "content": t}]) for t in ("a b", "c"))
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def encode_layer_states(model: Any, prompts: Sequence[Sequence[int]], layer: int, cache: ActivationCache, *,
                        prefix_len: Optional[int] = None, dtype: Optional[torch.dtype] = None, batch_size: int = 32,
                        show_progress: bool = True) -> LayerStates:
    """States entering decoder `layer` at every position of every prompt, from the frozen lower
    layers; prompts in `cache` are not run again. The prefix the prompts share (at most
    `prefix_len` tokens; none under 8) runs once, the rest continue from its KV cache in
    length-sorted right-padded batches (a position never attends to later padding). Stored in
    `dtype` (default: the model's)."""
    dec = decoder_layers(model)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise DataError("encode_layer_states needs non-empty prompts")
    n_layers = len(dec.layers)
    if not 0 <= layer <= n_layers:
        raise ToolkenError(f"layer must be in 0..{n_layers}, got {layer}")
    dtype = dtype or dec.norm.weight.dtype
    model_key = f"{states_fingerprint(model, layer)}-L{layer}-{str(dtype).replace('torch.', '')}"
    P = _shared_prefix(prompts, prefix_len)
    last_only = layer == n_layers
    entries = cache.folder(model_key)
    pkey = cache.key(prompts[0][:P], P) + ":prefix"
    keys = [cache.key(p, P) for p in prompts]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in entries}.values(), key=lambda i: len(prompts[i]))
    if missing or (P and not last_only and pkey not in entries):
        with _inference(model), _layer_slice(dec, 0, layer) as seen:
            for batch, states in _lower_layer_states(dec, prompts, missing, P, seen, batch_size,
                                                     f"toolken: states at layer {layer}", show_progress):
                if batch is not None or not last_only:  # (the prefix, batch None, only above layer L)
                    cache.put(model_key, [pkey] if batch is None else [keys[i] for i in batch],
                              [s[-1:].to(dtype) if last_only else s.to(dtype) for s in states])
    prefix = torch.zeros(0, dec.norm.weight.shape[-1], dtype=dtype) if (last_only or not P) else entries[pkey]
    return LayerStates(layer, prefix, [entries[k] for k in keys])


def _lower_layer_states(dec: Any, prompts: Sequence[Sequence[int]], missing: list[int], P: int, seen: dict,
                        batch_size: int, desc: str, show_progress: bool) -> Iterator[tuple[Any, list[torch.Tensor]]]:
    """Yields ``(None, [prefix states])`` when P > 0, then ``(batch, [states after P per prompt])``
    from `dec` inside `_layer_slice` (`seen`); whole prompts run when there is no KV cache."""
    device = dec.norm.weight.device
    kv_arg = "cache" if "cache" in inspect.signature(dec.forward).parameters else "past_key_values"
    kv = None
    if P:
        out = dec(input_ids=torch.tensor([list(prompts[0][:P])], device=device), use_cache=len(dec.layers) > 0)
        kv = getattr(out, "cache", None) if len(dec.layers) else None
        kv = getattr(out, "past_key_values", None) if kv is None and len(dec.layers) else kv  # transformers 4
        kv = kv if hasattr(kv, "batch_repeat_interleave") else None
        yield None, [seen["h"][0]]
    skip = 0 if kv is not None else P  # positions run but not returned
    batches = [missing[i:i + batch_size] for i in range(0, len(missing), batch_size)]
    for batch in tqdm(batches, desc=desc, disable=not show_progress):
        seqs = [list(prompts[i][P - skip:]) for i in batch]
        ids = pad(seqs)[0].to(device)
        extra: dict[str, Any] = {}
        if kv is not None:
            kvb = copy.deepcopy(kv)
            kvb.batch_repeat_interleave(len(batch))
            pos = torch.arange(P, P + ids.shape[1], device=device).expand(len(batch), -1)
            extra = {kv_arg: kvb, "position_ids": pos, "use_cache": True}
        dec(input_ids=ids, **extra)
        yield batch, [seen["h"][j, skip:len(s)] for j, s in enumerate(seqs)]


def _shared_prefix(prompts: Sequence[Sequence[int]], limit: Optional[int]) -> int:
    first, n = prompts[0], 0
    bound = min(min(len(p) for p in prompts) - 1, len(first) if limit is None else limit)
    while n < bound and all(p[n] == first[n] for p in prompts):
        n += 1
    return n if n >= 8 else 0


# --- the top layers on cached states -------------------------------------------------------------
def top_hidden(model: Any, states: LayerStates, index: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Final normed hidden state at each prompt's last position [B, d] (differentiable): cached
    states through layers ``states.layer ..`` (LoRA included) and the final norm."""
    dec = decoder_layers(model)
    suffix = states.suffix if index is None else [states.suffix[i] for i in index]
    dtype, device = dec.norm.weight.dtype, dec.norm.weight.device
    x = pad_sequence([torch.cat([states.prefix, s.to(states.prefix.dtype)]) for s in suffix], batch_first=True)
    x = x.to(device, dtype)
    last = torch.tensor([states.prefix.shape[0] + s.shape[0] - 1 for s in suffix], device=device)
    with _layer_slice(dec, states.layer, len(dec.layers), x):
        out = dec(inputs_embeds=torch.zeros_like(x), use_cache=False)
    h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return h[torch.arange(len(suffix), device=device), last]


def final_hidden(model: Any, states: LayerStates, batch_size: int = 64) -> torch.Tensor:
    """`top_hidden` of every prompt, without gradients, in eval mode: [N, d] float32 on the CPU."""
    order = sorted(range(len(states.suffix)), key=lambda i: states.suffix[i].shape[0])
    out = torch.zeros(len(order), states.prefix.shape[-1])
    with _inference(model):
        for s in range(0, len(order), batch_size):
            out[order[s:s + batch_size]] = top_hidden(model, states, order[s:s + batch_size]).float().cpu()
    return out


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


__all__ = ["train_tool_tokens", "train_on_layer_states", "tool_token_examples", "tool_loss", "Examples", "ActivationCache",
           "LayerStates", "encode_layer_states", "states_fingerprint", "template_prefix_len", "top_hidden", "final_hidden",
           "tool2vec_rows", "top_layer_state_dict", "decoder_layers", "ROW_LR", "LAYER_LR", "LORA_LR", "INITS"]
