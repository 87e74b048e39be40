"""Benchmark `toolken.extend`: wall time and peak memory of vocabulary extension.

Cases (each in a fresh subprocess so peak memory is its own):
  seal       all Seal-Tools tools on SmolLM2-135M, init="description"        target ≤ 10 s
  synthetic  N synthetic tools on a 32k x 4096 untied embedding (Mistral 32,768-token
             tokenizer, 1-layer Llama), init="description"                  target ≤ 60 s
  hidden     init="hidden" on SmolLM2-135M for a subset of Seal-Tools tools: tokens/s against
             plain batched forward passes of the same texts                 target ≥ 0.9x
Peak memory is the process's resident set sampled every 2 ms during `extend`, above the resident
set just before it, compared with the size of the final embedding matrices (target ≤ 1.5x).

    python benchmarks/bench_extend.py [--cases seal,synthetic,hidden] [--synthetic-tools 47000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from toolken.local_models import shared_data



def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set in a thread; `peak - start` is the extra memory of the block."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def embedding_bytes(model) -> int:
    inp = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    n = inp.numel() * inp.element_size()
    if head is not None and head.weight is not inp:
        n += head.weight.numel() * head.weight.element_size()
    return n


def case_seal(args) -> dict:
    import toolken
    from toolken.local_models import load_smollm2

    model, tok = load_smollm2()
    tools = toolken.ToolSet.from_seal_tools(args.seal)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        toolken.extend(model, tok, tools, init="description", trainable="tool_rows")
        dt = time.perf_counter() - t0
    return {"case": "seal", "tools": len(tools), "seconds": dt, "target_seconds": 10.0,
            "peak_extra_bytes": mem.peak - mem.start, "final_embedding_bytes": embedding_bytes(model)}


def case_synthetic(args) -> dict:
    import random

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import toolken
    from toolken.local_models import mistral_sentencepiece_tokenizer

    tok = mistral_sentencepiece_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=4096, num_hidden_layers=1, num_attention_heads=32,
                      num_key_value_heads=8, intermediate_size=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    rng = random.Random(0)
    words = [w.strip("▁") for w in list(tok.get_vocab())[1000:9000] if w.strip("▁").isalpha()]
    tools = toolken.ToolSet(
        toolken.Tool(f"tool_{i}_{rng.choice(words)}", " ".join(rng.choice(words) for _ in range(rng.randint(8, 30))))
        for i in range(args.synthetic_tools))
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        toolken.extend(model, tok, tools, init="description", trainable="tool_rows", show_progress=False)
        dt = time.perf_counter() - t0
    return {"case": "synthetic", "tools": len(tools), "seconds": dt, "target_seconds": 60.0,
            "peak_extra_bytes": mem.peak - mem.start, "final_embedding_bytes": embedding_bytes(model)}


def case_hidden(args) -> dict:
    import copy

    import torch

    import toolken
    from toolken.init import length_sorted_batches, right_pad, text_token_ids
    from toolken.local_models import load_smollm2

    torch.set_grad_enabled(False)
    model, tok = load_smollm2()
    tools = toolken.ToolSet.from_seal_tools(args.seal)[: args.hidden_tools]
    ids = text_token_ids(tok, list(tools), with_description=True)
    n_tokens = sum(len(x) for x in ids)
    # the plain baseline: the same texts, same length-sorted batches, through the same decoder
    t0 = time.perf_counter()
    for batch in length_sorted_batches(ids, args.batch_size):
        x, m = right_pad([ids[i] for i in batch])
        model.model(input_ids=x, attention_mask=m)
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    toolken.extend(model, copy.deepcopy(tok), tools, init="hidden", batch_size=args.batch_size, show_progress=False)
    ours = time.perf_counter() - t0
    return {"case": "hidden", "tools": len(tools), "tokens": n_tokens, "seconds": ours,
            "tokens_per_s": n_tokens / ours, "plain_tokens_per_s": n_tokens / plain,
            "ratio_to_plain": plain / ours, "target_ratio": 0.9}


CASES = {"seal": case_seal, "synthetic": case_synthetic, "hidden": case_hidden}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="seal,synthetic,hidden")
    p.add_argument("--seal", help="Seal-Tools tool.jsonl.gz (default: from $TOOLKEN_DATA or ../shared/data)")
    p.add_argument("--synthetic-tools", type=int, default=47000)
    p.add_argument("--hidden-tools", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default="bench_results/bench_extend.json")
    p.add_argument("--_case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._case:  # child process: run one case, print its JSON
        print("RESULT " + json.dumps(CASES[args._case](args)))
        return
    cases = args.cases.split(",")
    if args.seal is None and {"seal", "hidden"} & set(cases):  # fails fast when the data is absent
        args.seal = str(shared_data("seal-tools") / "tool.jsonl.gz")
    results = []
    for name in cases:
        cmd = [sys.executable, __file__, "--_case", name, "--seal", args.seal, "--batch-size", str(args.batch_size),
               "--synthetic-tools", str(args.synthetic_tools), "--hidden-tools", str(args.hidden_tools)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"case {name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            results.append({"case": name, "error": proc.stderr[-500:]})
            continue
        results.append(json.loads(line[0][7:]))
    print(f"{'case':<10} {'tools':>7} {'seconds':>8} {'target':>8} {'peak extra MB':>14} {'final emb MB':>13} {'ratio':>6}")
    for r in results:
        if "error" in r:
            print(f"{r['case']:<10} FAILED")
            continue
        if r["case"] == "hidden":
            print(f"{r['case']:<10} {r['tools']:>7} {r['seconds']:>8.2f} {'':>8} {'':>14} {'':>13} "
                  f"{r['ratio_to_plain']:>5.2f}x  ({r['tokens_per_s']:.0f} tok/s vs plain {r['plain_tokens_per_s']:.0f} tok/s)")
        else:
            ratio = r["peak_extra_bytes"] / r["final_embedding_bytes"]
            r["peak_ratio"] = ratio
            print(f"{r['case']:<10} {r['tools']:>7} {r['seconds']:>8.2f} {r['target_seconds']:>7.0f}s "
                  f"{r['peak_extra_bytes'] / 2**20:>14.0f} {r['final_embedding_bytes'] / 2**20:>13.0f} {ratio:>5.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "extend", "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
