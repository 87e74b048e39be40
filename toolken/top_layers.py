"""Training tool tokens through the top K decoder layers, on cached activations.

ToolGen (Wang et al. 2024, arXiv:2410.03439) fine-tunes the whole model to generate the right
tool token; ToolkenGPT (Hao et al. 2023) and Re-Initialization Token Learning (Li et al. 2025,
arXiv:2506.14248) train only the tool rows of a frozen model (each tool a linear read-out of one
frozen final hidden state). In between, and cheap: the frozen lower ``L - K`` layers run once per
prompt (`toolken.activations`); each step runs only the top K layers (fully, or LoRA through
PEFT, merged back at the end), the final norm and the tool rows, with `tool_loss` at the position
that predicts the tool token: a softmax over the tool tokens (optionally mixed with a teacher's
soft targets), or the fused full-vocabulary weighted cross-entropy. K = 0 trains the tool rows
alone. The data: the training queries, ToolGen's memorization prompts and synthetic multi-intent
requests (`toolken.data.synthetic_requests`). One call: `train_tool_tokens`. Tool2Vec rows
(arXiv:2409.02141): `tool2vec_rows`.
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
from .data import memorization_prompt, synthetic_requests
from .errors import DataError, NotExtendedError, ToolkenError
from .generation import render_prompt
from .loss import hidden_states_loss, logit_scale
from .modeling import unwrap_peft
from .registry import NOT_EXTENDED, find_registry, set_registry
from .rows import tool_rows
from .tools import PathLike
from .weights import IGNORE_INDEX

try:  # the `train` extra; needed only for lora_rank > 0
    import peft
except ImportError:  # pragma: no cover - peft is installed with toolken[train]
    peft = None

# Defaults: the held-out choices of the Seal-Tools study in the README (500 dev queries to train,
# 200 held-out dev queries to choose; the test queries never chose anything).
ROW_LR = 3e-3          # Adam lr of the tool rows
LAYER_LR = 1e-3        # full top layers and final norm
LORA_LR = 1e-3         # LoRA weights: a prior, not tuned
TRAIN_LAYERS = 2       # K (K=2 beat K=1 on held-out dev: Recall@1 0.337 vs 0.309; K=4 did not fit the 45-minute budget)
EPOCHS = 5.0          # held-out Recall@1 still rose after 3; 5 fit the 45-minute budget with the shared prefix
SYNTHETIC_ROUNDS = 2   # rounds of synthetic multi-intent requests
SYNTHETIC_STYLE = "query"  # their parts: name words and arguments (toolken.data.request_phrase)
SYNTHETIC_SPLIT = True  # each part its own example (per-sentence retrieval scores sentences)
MEMORIZATION = ("document",)  # ToolGen's alone; chosen with SYNTHETIC_SPLIT (held-out Recall@1 0.468 vs 0.431)
DISTILL = 0.5          # weight of a teacher's soft targets, when a teacher is given
WARMUP_STEPS = 50
INITS = (None, "tool2vec", "centroid")
ROW_INIT = "centroid"  # output rows from the memorization prompts' hidden states (`centroid_rows`)
SCALE_GRID = tuple(2.0 ** (k / 2) for k in range(-8, 11))  # candidate norms of the unit centroid rows
SCALE_SAMPLE = 2048    # training prompts the row norm is fitted on


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


def centroid_rows(hidden: torch.Tensor, tool_of: torch.Tensor, n_tools: int, fallback: torch.Tensor) -> torch.Tensor:
    """Unit output rows, one per tool, from the final hidden states [N, d] of prompts about it
    (`tool_of` [N]: ToolGen's memorization prompts, one per phrasing): each tool's mean minus the
    mean of all, with the common direction projected out (a component along it would act as a
    per-tool logit bias), normalized. A nearest-centroid read-out (Rocchio 1971), as Tool2Vec
    (arXiv:2409.02141) builds tool vectors from usage queries, here from the tool's own documents
    so every tool has one from the start. Tools without prompts keep `fallback`'s direction.
    On Seal-Tools held-out dev queries it ranks at Recall@1 0.206 before any training, against
    0.013 for the description rows (README)."""
    h = hidden.float()
    mu = h.mean(0)
    acc = torch.zeros(n_tools, h.shape[1]).index_add_(0, tool_of, h - mu)
    used = torch.bincount(tool_of, minlength=n_tools) > 0
    out = fallback.detach().float().cpu().clone()
    out[used] = acc[used]
    u = F.normalize(mu, dim=0)
    return F.normalize(out - (out @ u).unsqueeze(1) * u, dim=-1)


def fit_row_scale(hidden: torch.Tensor, unit_rows: torch.Tensor, target: torch.Tensor) -> float:
    """The norm s of `unit_rows` (one for all) that minimizes the tool-softmax cross-entropy of
    `hidden` [N, d] (already times the model's logit scale) to `target` [N], from `SCALE_GRID`:
    unit rows rank well but their logits are too flat or too sharp for the loss to train from."""
    logits = hidden.float() @ unit_rows.T
    return min(SCALE_GRID, key=lambda sc: F.cross_entropy(logits * sc, target).item())


# --- training ------------------------------------------------------------------------------------
#: Soft targets of a teacher per prompt: ``texts -> (tool indices [N, k] long, probabilities [N, k])``
Teacher = Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]
LOSSES = ("tools", "vocab")


@dataclass
class Examples:
    """One training prompt each: its index in the prompt list, its gold tools (registry indices,
    -1 padded, in the order asked), a loss weight, and optionally a teacher's distribution over
    the tools (``teacher_index`` / ``teacher_prob`` [N, k])."""

    prompt: torch.Tensor    # [N] long
    gold: torch.Tensor      # [N, G] long, -1 = none
    weight: torch.Tensor    # [N] float32
    teacher_index: Optional[torch.Tensor] = None
    teacher_prob: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.prompt.shape[0]

    def select(self, index: torch.Tensor) -> "Examples":
        t = None if self.teacher_index is None else (self.teacher_index[index], self.teacher_prob[index])
        return Examples(self.prompt[index], self.gold[index], self.weight[index], *(t or (None, None)))


def tool_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of the tool tokens alone [B, n_tools] from final hidden states: the model's own
    logits at those ids (the trainable tool rows, the head's bias, its logit scale)."""
    base = unwrap_peft(model)
    rows = tool_rows(base)
    out = F.linear(hidden * logit_scale(base), rows.output_rows.to(hidden.dtype))
    bias = getattr(base.get_output_embeddings(), "bias", None)
    return out if bias is None else out + bias[rows.token_ids.to(bias.device)].to(out.dtype)


def tool_loss(model: Any, states: LayerStates, examples: Examples, loss: str = "tools", distill: float = 0.0) -> torch.Tensor:
    """Weighted mean loss of `examples` from cached states at each prompt's last position. The
    target is the first gold tool: the call a model makes first, as in a ToolGen trajectory (a
    request for several tools names them in order). On Seal-Tools' held-out dev queries it
    retrieved better than spreading the target over all of a request's tools (README).

    ``"tools"``: ToolkenGPT's softmax over the tool tokens only (Hao et al. 2023); with `distill`
    > 0, mixed with the cross-entropy to the teacher's distribution (knowledge distillation,
    Hinton et al. 2015). ``"vocab"``: the fused full-vocabulary weighted cross-entropy
    (`toolken.loss.hidden_states_loss`, TL-Training): what fine-tuning the whole model optimizes."""
    h = top_hidden(model, states, examples.prompt.tolist())
    w = examples.weight.to(h.device)
    first = examples.gold[:, 0].to(h.device)
    if loss == "vocab":
        ids = tool_rows(unwrap_peft(model)).token_ids.to(h.device)[first]
        return hidden_states_loss(model, torch.stack([h, torch.zeros_like(h)], 1),
                                  torch.stack([torch.full_like(ids, IGNORE_INDEX), ids], 1),
                                  torch.stack([torch.zeros_like(w), w], 1))
    logp = tool_logits(model, h).float().log_softmax(-1)
    per = -logp.gather(1, first.unsqueeze(1)).squeeze(1)
    if distill and examples.teacher_index is not None:
        teacher = -(examples.teacher_prob.to(h.device) * logp.gather(1, examples.teacher_index.to(h.device))).sum(1)
        per = (1 - distill) * per + distill * teacher
    return (per * w).sum() / w.sum()


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


def length_grouped_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                           group: int = 16) -> list[torch.Tensor]:
    """One epoch of batches: a random order cut into groups of `group` batches, each group sorted
    by length before it is cut into batches, then the batches shuffled (as transformers'
    ``group_by_length``). Batches of like lengths waste little compute on padding: Seal-Tools'
    multi-intent requests are five times as long as a memorization prompt."""
    order = torch.randperm(len(lengths), generator=generator)
    size = torch.tensor(lengths)
    batches = [b for chunk in order.split(batch_size * group)
               for b in chunk[size[chunk].argsort(descending=True, stable=True)].split(batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def warmup_cosine(steps: int, warmup: int = WARMUP_STEPS) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`."""
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))


def train_on_layer_states(model: Any, states: LayerStates, examples: Examples, *, lora_rank: int = 0,
                          loss: str = "tools", distill: float = 0.0, epochs: float = EPOCHS,
                          max_steps: Optional[int] = None, batch_size: int = 32, lr: float = ROW_LR,
                          layer_lr: Optional[float] = None, seed: int = 0, shuffle: bool = True,
                          evaluate: Optional[Callable[[int, float, Any], None]] = None, eval_every: int = 0,
                          show_progress: bool = True) -> Any:
    """Adam on the tool rows (`lr`) and, for ``states.layer < L``, the top layers (fully, or LoRA
    of rank `lora_rank`, merged at the end) and the final norm (`layer_lr`, default `LAYER_LR` /
    `LORA_LR`), warm-up then cosine decay, `tool_loss` on `length_grouped_batches` (drawn anew
    each epoch; in order with ``shuffle=False``): `epochs` passes, or `max_steps` steps when given. Nothing else changes;
    ``requires_grad`` is restored. ``evaluate(step, mean loss since the last call, model)`` runs at
    step 0 (loss NaN), every `eval_every` steps and at the end. Returns the model, trained in place."""
    top = len(decoder_layers(model).layers) - states.layer
    flags, was_training = [(p, p.requires_grad) for p in model.parameters()], model.training
    trained, layers, rows = _trainable(model, states.layer, lora_rank)
    layer_lr = layer_lr or (LORA_LR if lora_rank else LAYER_LR)
    opt = torch.optim.Adam([{"params": rows, "lr": lr}] + ([{"params": layers, "lr": layer_lr}] if layers else []))
    per_epoch = math.ceil(len(examples) / batch_size)
    steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, min(WARMUP_STEPS, max(1, steps // 10))))
    gen = torch.Generator().manual_seed(seed)
    lengths = [states.suffix[i].shape[0] for i in examples.prompt.tolist()]
    batches = [b for _ in range(math.ceil(steps / per_epoch))
               for b in (length_grouped_batches(lengths, batch_size, gen) if shuffle
                         else list(torch.arange(len(examples)).split(batch_size)))]
    losses: list[float] = []

    def report(step: int) -> None:
        if evaluate is not None:
            evaluate(step, sum(losses) / len(losses) if losses else float("nan"), unwrap_peft(trained))

    try:
        report(0)
        trained.train()
        for step in tqdm(range(1, steps + 1), desc=f"toolken: train (top {top} layers)", disable=not show_progress):
            idx = batches[step - 1]
            value = tool_loss(trained, states, examples.select(idx), loss, distill)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            schedule.step()
            losses.append(value.item())
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


def _query_text_and_gold(q: Any, i: int, index: dict[str, int]) -> tuple[str, list[int]]:
    pair = isinstance(q, (tuple, list)) and len(q) == 2
    text, gold = (q.text, q.gold) if hasattr(q, "text") and hasattr(q, "gold") else (q if pair else (None, None))
    gold = [gold] if isinstance(gold, str) else list(gold or ())
    if not isinstance(text, str) or not text.strip() or not gold:
        raise DataError(f"queries[{i}]: expected (text, tool name or names) or an object with .text and .gold")
    unknown = [g for g in gold if g not in index]
    if unknown:
        raise DataError(f"queries[{i}]: tool {unknown[0]!r} is not registered on this model")
    return text, list(dict.fromkeys(index[g] for g in gold))


def tool_token_examples(model: Any, tokenizer: Any, queries: Sequence[Any], memorization: Sequence[str],
                        synthetic: int = 0, teacher: Optional[Teacher] = None, query_weight: float = 1.0,
                        seed: int = 0, synthetic_style: str = SYNTHETIC_STYLE,
                        synthetic_split: bool = SYNTHETIC_SPLIT) -> tuple[list[list[int]], Examples, list[list[int]]]:
    """(prompts, examples, tool indices per query): the queries (loss weight `query_weight`),
    every tool's memorization prompt (ToolGen) per phrasing, then `synthetic` rounds of
    `toolken.data.synthetic_requests` in `synthetic_style` (each part apart with
    `synthetic_split`), as user turns in the chat template (as `toolken.retrieve`); with a
    `teacher`, its soft targets for every prompt text."""
    reg = find_registry(model)
    if reg is None:
        raise NotExtendedError(NOT_EXTENDED)
    index = {n: i for i, n in enumerate(reg.names)}
    texts, targets = map(list, zip(*[_query_text_and_gold(q, i, index) for i, q in enumerate(queries)])) if len(queries) else ([], [])
    for phrasing in memorization:  # memorization_prompt refuses an unknown phrasing
        for i, name in enumerate(reg.names):
            texts.append(memorization_prompt(reg.tools[name], phrasing))
            targets.append([i])
    requests = synthetic_requests([reg.tools[n] for n in reg.names], synthetic, seed, synthetic_style,  # checks the style
                                  synthetic_split)
    for text, names in requests:
        texts.append(text)
        targets.append([index[n] for n in names])
    width = max((len(t) for t in targets), default=1)
    gold = torch.tensor([t + [-1] * (width - len(t)) for t in targets], dtype=torch.long).reshape(len(targets), width)
    weight = torch.ones(len(texts))
    weight[:len(queries)] = query_weight
    t_index, t_prob = teacher(texts) if teacher is not None and texts else (None, None)
    examples = Examples(torch.arange(len(texts)), gold, weight, t_index, t_prob)
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": t}]) for t in texts]
    return prompts, examples, targets[:len(queries)]


def train_tool_tokens(model: Any, tokenizer: Any, queries: Sequence[Any] = (), *, train_layers: int = TRAIN_LAYERS,
                      lora_rank: int = 0, memorization: Sequence[str] = MEMORIZATION,
                      synthetic: int = SYNTHETIC_ROUNDS, synthetic_style: str = SYNTHETIC_STYLE,
                      synthetic_split: bool = SYNTHETIC_SPLIT, loss: str = "tools",
                      teacher: Optional[Teacher] = None, distill: Optional[float] = None, init: Optional[str] = ROW_INIT,
                      epochs: float = EPOCHS,
                      max_steps: Optional[int] = None, batch_size: int = 32, lr: float = ROW_LR,
                      layer_lr: Optional[float] = None, cache_dir: Union[PathLike, ActivationCache, None] = None,
                      seed: int = 0, evaluate: Optional[Callable[[int, float, Any], None]] = None, eval_every: int = 0,
                      show_progress: bool = True) -> Any:
    """Train the tool tokens of an extended model through its top `train_layers` decoder layers.

    Args:
        model, tokenizer: from ``toolken.extend(..., trainable="tool_rows")`` (the default).
        queries: ``(text, tool name or names)`` pairs or objects with ``.text`` / ``.gold``
            (`toolken.eval.Query`): ToolGen's retrieval stage.
        train_layers: K top layers trained with the final norm; 0 trains only the tool rows.
        lora_rank: 0 trains the K layers fully; r > 0 LoRA of rank r (PEFT), merged at the end.
        memorization: phrasings of `toolken.data.MEMORIZATION_PHRASINGS` per tool (ToolGen).
        synthetic: rounds of `toolken.data.synthetic_requests` (multi-intent requests); 0: none.
        synthetic_style: their parts: ``"query"`` (name words and arguments, as users ask) or
            ``"description"`` (`toolken.data.request_phrase`).
        synthetic_split: each part of a synthetic request its own example (the default: the
            sentences `toolken.retrieve(..., per_sentence=True)` scores), or whole requests.
        loss: ``"tools"`` (softmax over the tool tokens) or ``"vocab"`` (full vocabulary); `tool_loss`.
        teacher, distill: soft targets per prompt text (e.g. BM25's ranking, as `toolken eval
            retrieval` does) and their weight in the ``"tools"`` loss (default `DISTILL` with a
            teacher, else 0).
        init: ``"centroid"`` (default) sets the output rows to `centroid_rows` of the memorization
            prompts (`centroid_init`); None keeps the rows `toolken.extend` gave; ``"tool2vec"``
            adds `tool2vec_rows` of the queries.
        cache_dir: folder (or `ActivationCache`) for the lower layers' states; None: in memory.
        Others: see `train_on_layer_states`.

    Returns:
        The same model, trained in place, a plain transformers model. Its registry records the
        trained modules, so `toolken.save` stores them with the tool rows and `toolken.load`
        restores both; `toolken.merge` (or ``save_pretrained``) writes the whole model.
    """
    if hasattr(model, "peft_config"):
        raise ToolkenError("pass the transformers model, not a PeftModel: lora_rank= adds the LoRA layers")
    n_layers = len(decoder_layers(model).layers)
    distill = (DISTILL if teacher is not None else 0.0) if distill is None else distill
    _check_options(n_layers, train_layers, lora_rank, init, epochs, max_steps, batch_size, queries)
    _check_loss(loss, distill, teacher, synthetic)
    prompts, examples, targets = tool_token_examples(model, tokenizer, queries, memorization, synthetic,
                                                     teacher if distill else None, seed=seed,
                                                     synthetic_style=synthetic_style, synthetic_split=synthetic_split)
    if tool_rows(model) is None:
        raise ToolkenError("the model must be extended with trainable='tool_rows' (toolken.extend's default)")
    if not len(examples):
        raise DataError("no training examples: pass queries, memorization phrasings or synthetic rounds")
    if init == "centroid" and not memorization:
        raise ToolkenError("init='centroid' builds the rows from the memorization prompts: pass memorization "
                           "phrasings, or init=None to keep the rows toolken.extend gave")
    cache = cache_dir if isinstance(cache_dir, ActivationCache) else ActivationCache(cache_dir)
    states = encode_layer_states(model, prompts, n_layers - train_layers, cache,
                                 prefix_len=template_prefix_len(tokenizer), show_progress=show_progress)
    if init == "centroid":
        centroid_init(model, states, examples, first=len(targets), count=len(memorization) * len(find_registry(model).names), seed=seed)
    if init == "tool2vec":
        rows = tool_rows(model)
        hidden = final_hidden(model, LayerStates(states.layer, states.prefix, states.suffix[:len(targets)]))
        with torch.no_grad():
            rows.output_rows.copy_(tool2vec_rows(hidden, targets, rows.output_rows).to(rows.output_rows))
    train_on_layer_states(model, states, examples, lora_rank=lora_rank, loss=loss, distill=distill,
                          epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, layer_lr=layer_lr,
                          seed=seed, evaluate=evaluate, eval_every=eval_every, show_progress=show_progress)
    reg = find_registry(model)
    reg.trained_modules = tuple(sorted({*reg.trained_modules, *top_layer_prefixes(model, train_layers)}))
    set_registry(model, reg)
    return model


def centroid_init(model: Any, states: LayerStates, examples: Examples, first: int, count: int, seed: int = 0) -> None:
    """Set the output tool rows to `centroid_rows` of the memorization examples ``first ..
    first + count`` (final hidden states through the model as it is), times the norm
    `fit_row_scale` picks on a seeded sample of up to `SCALE_SAMPLE` training examples."""
    rows = tool_rows(model)
    memo = torch.arange(first, first + count)
    sample = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))[:SCALE_SAMPLE]
    uniq, inv = torch.unique(torch.cat([memo, sample]), return_inverse=True)
    hidden = final_hidden(model, LayerStates(states.layer, states.prefix,
                                             [states.suffix[i] for i in examples.prompt[uniq].tolist()]))
    unit = centroid_rows(hidden[inv[:count]], examples.gold[memo, 0], rows.output_rows.shape[0], rows.output_rows)
    scale = fit_row_scale(hidden[inv[count:]] * logit_scale(unwrap_peft(model)), unit, examples.gold[sample, 0])
    with torch.no_grad():
        rows.output_rows.copy_((unit * scale).to(rows.output_rows))


def _check_loss(loss: Any, distill: Any, teacher: Any, synthetic: Any) -> None:
    if loss not in LOSSES:
        raise ToolkenError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not isinstance(distill, (int, float)) or not 0 <= distill <= 1:
        raise ToolkenError(f"distill must be a weight in [0, 1], got {distill!r}")
    if distill and (teacher is None or loss != "tools"):
        raise ToolkenError("distill > 0 needs a teacher= and loss='tools'")
    if not _whole(synthetic) or synthetic < 0:
        raise ToolkenError(f"synthetic must be a non-negative integer (rounds), got {synthetic!r}")


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_options(n_layers: int, train_layers: Any, lora_rank: Any, init: Any, epochs: Any, max_steps: Any,
                   batch_size: Any, queries: Sequence[Any]) -> None:
    if not _whole(train_layers) or not 0 <= train_layers <= n_layers:
        raise ToolkenError(f"train_layers must be an integer in 0..{n_layers} (the model's layers), got {train_layers!r}")
    if not _whole(lora_rank) or lora_rank < 0 or (lora_rank and not train_layers):
        raise ToolkenError(f"lora_rank must be 0, or a positive integer with train_layers > 0; got {lora_rank!r}")
    if init not in INITS or (init == "tool2vec" and not len(queries)):
        raise ToolkenError(f"init must be None, 'centroid' or 'tool2vec' (which needs queries), got {init!r}")
    if max_steps is None and not (isinstance(epochs, (int, float)) and epochs > 0):
        raise ToolkenError(f"epochs must be positive, got {epochs!r}")
    for name, v in (("max_steps", max_steps), ("batch_size", batch_size)):
        if v is not None and (not _whole(v) or v < 1):
            raise ToolkenError(f"{name} must be a positive integer, got {v!r}")


def top_layer_prefixes(model: Any, train_layers: int) -> list[str]:
    """State-dict prefixes of the top `train_layers` decoder layers and the final norm (none for 0)."""
    dec = decoder_layers(model)
    if not train_layers:
        return []
    names = {id(m): n for n, m in model.named_modules()}
    return [f"{names[id(m)]}." for m in (*dec.layers[len(dec.layers) - train_layers:], dec.norm)]


__all__ = ["train_tool_tokens", "train_on_layer_states", "tool_token_examples", "tool_loss", "tool_logits",
           "Examples", "Teacher", "LOSSES", "warmup_cosine", "TRAIN_LAYERS", "EPOCHS", "SYNTHETIC_ROUNDS",
           "SYNTHETIC_STYLE", "SYNTHETIC_SPLIT", "MEMORIZATION", "DISTILL", "tool2vec_rows", "top_layer_prefixes",
           "length_grouped_batches", "ROW_LR", "LAYER_LR", "LORA_LR", "INITS", "ROW_INIT", "centroid_rows",
           "fit_row_scale", "centroid_init"]
