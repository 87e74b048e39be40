"""Activations of a decoder's layers: the frozen lower layers run once, the top ones on demand.

Training tool tokens through the top K decoder layers (`toolken.top_layers`) needs the residual
stream entering layer L - K for every position of every prompt. `encode_layer_states` computes it
once with the frozen lower layers (the chat template's shared prefix once for all prompts) and
keeps it in an `ActivationCache` keyed by the weights it depends on; `top_hidden` then runs only
layers L - K .. L and the final norm on those states, differentiably. For Llama-style layers the
shared prefix runs once per batch and the last layer at the last position only (the only one the
tool-token loss reads).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import inspect
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from .errors import DataError, ToolkenError
from .generation import render_prompt
from .modeling import pad, unwrap_peft
from .registry import find_registry
from .rows import tool_rows
from .tools import PathLike


# --- the decoder, run over a slice of its layers -------------------------------------------------
def decoder_layers(model: Any) -> Any:
    """The decoder stack (under PEFT too) with ``.layers`` and a final ``.norm`` (Llama-style)."""
    base = unwrap_peft(model)
    dec = base.get_decoder() if hasattr(base, "get_decoder") else None
    if dec is not None and isinstance(getattr(dec, "layers", None), nn.ModuleList) and isinstance(getattr(dec, "norm", None), nn.Module):
        return dec
    raise ToolkenError(f"top-layer training needs a decoder with .layers and a final .norm (Llama-style); {type(base).__name__} has none")


@contextlib.contextmanager
def inference(model: Any) -> Iterator[None]:
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
        with inference(model), _layer_slice(dec, 0, layer) as seen:
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
    states through layers ``states.layer ..`` (LoRA included) and the final norm. Llama-style
    layers run in `shared_prefix_top`: the shared prefix once per batch, the last layer at the
    last position only; other decoders run their own forward over prefix + suffix."""
    dec = decoder_layers(model)
    suffix = states.suffix if index is None else [states.suffix[i] for i in index]
    dtype, device = dec.norm.weight.dtype, dec.norm.weight.device
    n = len(dec.layers)
    if states.layer < n and all(supports_last_position(dec, layer) for layer in dec.layers[states.layer:]):
        return dec.norm(shared_prefix_top(dec, states.layer, states.prefix, suffix))
    x = pad_sequence([torch.cat([states.prefix, s.to(states.prefix.dtype)]) for s in suffix], batch_first=True)
    x = x.to(device, dtype)
    last = torch.tensor([states.prefix.shape[0] + s.shape[0] - 1 for s in suffix], device=device)
    with _layer_slice(dec, states.layer, n, x):
        out = dec(inputs_embeds=torch.zeros_like(x), use_cache=False)
    h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return h[torch.arange(len(suffix), device=device), last]


def supports_last_position(dec: Any, layer: Any) -> bool:
    """`shared_prefix_top` is written for Llama-style layers (Llama, SmolLM2, Mistral, Qwen2):
    pre-norm attention and MLP, q/k/v/o projections, rotary embeddings from the decoder, full
    causal attention without dropout (no sliding window, no q/k norms, no extra norms around the
    MLP, no attention biases beyond the linears)."""
    a = getattr(layer, "self_attn", None)
    return (a is not None and hasattr(dec, "rotary_emb") and hasattr(layer, "mlp")
            and all(hasattr(layer, n) for n in ("input_layernorm", "post_attention_layernorm"))
            and not any(hasattr(layer, n) for n in ("pre_feedforward_layernorm", "post_feedforward_layernorm"))
            and all(hasattr(a, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling"))
            and not hasattr(a, "q_norm") and getattr(a, "sliding_window", None) is None
            and not getattr(a, "attention_dropout", 0.0)
            and hasattr(importlib.import_module(type(a).__module__), "apply_rotary_pos_emb"))


def _keys_values(layer: Any, xn: torch.Tensor, rotary: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated keys and values [B, kv heads, T, head dim] of normed inputs `xn` [B, T, d]."""
    a = layer.self_attn
    rope = importlib.import_module(type(a).__module__).apply_rotary_pos_emb
    B, T, _ = xn.shape
    k = a.k_proj(xn).view(B, T, -1, a.head_dim).transpose(1, 2)
    v = a.v_proj(xn).view(B, T, -1, a.head_dim).transpose(1, 2)
    k, _ = rope(k, k, *rotary)
    return k, v


def _attention_block(layer: Any, x: torch.Tensor, q_index: Optional[torch.Tensor], rotary: tuple,
                     past: Optional[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, tuple]:
    """One Llama-style layer on `x` [B, T, d] after the `past` keys/values of a shared prefix
    [1, kv heads, P, head dim] (or none): the whole sequence (`q_index` None, causal), or only
    position ``q_index[b]`` of each row ([B, d]). Returns (output, this sequence's keys/values)."""
    a = layer.self_attn
    rope = importlib.import_module(type(a).__module__).apply_rotary_pos_emb
    B, T, _ = x.shape
    cos, sin = rotary
    xn = layer.input_layernorm(x)
    k, v = _keys_values(layer, xn, rotary)
    P = 0 if past is None else past[0].shape[2]
    keys = k if past is None else torch.cat([past[0].expand(B, -1, -1, -1), k], 2)
    values = v if past is None else torch.cat([past[1].expand(B, -1, -1, -1), v], 2)
    col = torch.arange(P + T, device=x.device)
    if q_index is None:
        q = a.q_proj(xn).view(B, T, -1, a.head_dim).transpose(1, 2)
        q, _ = rope(q, q, cos, sin)
        allowed = (col.unsqueeze(0) <= torch.arange(T, device=x.device).unsqueeze(1) + P).view(1, 1, T, P + T)
        res = x
    else:
        rows = torch.arange(B, device=x.device)
        q = a.q_proj(xn[rows, q_index]).view(B, 1, -1, a.head_dim).transpose(1, 2)
        c, s = (t.expand(B, -1, -1)[rows, q_index].unsqueeze(1) for t in (cos, sin))
        q, _ = rope(q, q, c, s)
        allowed = (col.unsqueeze(0) <= q_index.unsqueeze(1) + P).view(B, 1, 1, P + T)
        res = x[rows, q_index].unsqueeze(1)
    o = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, scale=a.scaling,
                                       enable_gqa=q.shape[1] != keys.shape[1])
    h = res + a.o_proj(o.transpose(1, 2).reshape(B, o.shape[2], -1))
    h = h + layer.mlp(layer.post_attention_layernorm(h))
    return (h if q_index is None else h[:, 0]), (k, v)


def shared_prefix_top(dec: Any, start: int, prefix: torch.Tensor, suffix: Sequence[torch.Tensor]) -> torch.Tensor:
    """Llama-style layers ``start ..`` of `dec` on a shared `prefix` [P, d] followed by each of
    `suffix` [T_i, d]: the stream leaving the last layer at each sequence's last position [B, d]
    (before the final norm), differentiable. The prefix runs once per batch, its keys and values
    shared by every row (as a prefix KV cache); the last layer runs at the last positions only
    (keys and values for the rest): the tool-token loss reads nothing else."""
    dtype, device = dec.norm.weight.dtype, dec.norm.weight.device
    xs = pad_sequence([s.to(dtype) for s in suffix], batch_first=True).to(device)
    xp = prefix.to(device, dtype).unsqueeze(0)
    P, T = xp.shape[1], xs.shape[1]
    cos, sin = dec.rotary_emb(xs, torch.arange(P + T, device=device).unsqueeze(0))
    rot_p, rot_s = (cos[:, :P], sin[:, :P]), (cos[:, P:], sin[:, P:])
    last = torch.tensor([s.shape[0] - 1 for s in suffix], device=device)
    layers = dec.layers[start:]
    for i, layer in enumerate(layers):
        final = i == len(layers) - 1
        past = None
        if P:
            if final:
                past = _keys_values(layer, layer.input_layernorm(xp), rot_p)
            else:
                xp, past = _attention_block(layer, xp, None, rot_p, None)
        xs, _ = _attention_block(layer, xs, last if final else None, rot_s, past)
    return xs


def final_hidden(model: Any, states: LayerStates, batch_size: int = 64) -> torch.Tensor:
    """`top_hidden` of every prompt, without gradients, in eval mode: [N, d] float32 on the CPU."""
    order = sorted(range(len(states.suffix)), key=lambda i: states.suffix[i].shape[0])
    out = torch.zeros(len(order), states.prefix.shape[-1])
    with inference(model):
        for s in range(0, len(order), batch_size):
            out[order[s:s + batch_size]] = top_hidden(model, states, order[s:s + batch_size]).float().cpu()
    return out




__all__ = ["decoder_layers", "inference", "states_fingerprint", "ActivationCache", "LayerStates", "template_prefix_len",
           "encode_layer_states", "top_hidden", "final_hidden",
           "supports_last_position", "shared_prefix_top"]
