"""Constrained decoding speed: tokens/s of `generate` on SmolLM2-135M, and what a completed call costs.

Four variants on the same prompts, interleaved per prompt and repeat so that machine noise
hits them alike:

- ``unconstrained``: plain `generate`;
- ``toolken``: `toolken.ToolCallLogitsProcessor` (``mode="required"``: every step after the
  first is inside a tool call's JSON arguments, the grammar-masked path) with canonical
  separators (``whitespace="canonical"``: exactly the training format, `toolken.format`);
- ``toolken-flexible``: the same with ``whitespace="flexible"`` (any bounded JSON whitespace);
- ``toolken-jump``: the same rules as ``toolken`` with verified jump-forward decoding
  (`toolken.jump_forward.generate_ids`, what `toolken.generate_tool_calls` runs by default under
  greedy search): text the grammar forces (keys, ``": "``, closing braces) is fed as a draft in
  the same multi-token forward as the token before it, and kept as far as the model's own greedy
  choices agree with it. Its generated ids are compared with ``toolken``'s (step by step, one
  forward per token) on every prompt of the run, and model forward passes are counted for every
  variant (a forward pre-hook on the model);
- ``toolken-force``: forced jump-forward (``jump_forward="force"``): the forced text is appended
  without asking the model, split as the tokenizer splits the whole call (fewer forwards; the
  ids differ from step by step where the model would spell the forced text otherwise);
- ``xgrammar``: xgrammar's transformers processor (`xgrammar.contrib.hf.LogitsProcessor`) with
  the same calls as one grammar: the union over tools of ``"<<tool>>"`` followed by the tool's
  JSON Schema (flexible whitespace; strict mode, i.e. no undeclared argument names, like
  toolken's default ``extra_arguments=False``), then the stop token. (xgrammar's processor runs
  one grammar per sequence, so it allows one call where toolken allows parallel calls.)

The model is SmolLM2-135M-Instruct extended with the tools (`toolken.extend`), greedy decoding,
batch 1 by default (``--batch B``: B different prompts per call, left-padded). Reported per
variant: generated tokens (rows x decoding steps: a row that ended early in a batch still costs
its steps), wall time, tokens/s, the ratio to unconstrained in the same run, and — measured
around each processor's ``__call__`` — the processor's own time per token, which is the
overhead isolated from the noise of the forward pass. Grammar compilation happens in an untimed
warm-up run (toolken compiles each tool's schema on first use and caches it; xgrammar's compile
is timed separately).

Per completed call: a generated row completes a call when its text holds a tool token followed
by a JSON object that validates against that tool's schema (`toolken.tools.argument_error`;
each such call's argument text is also compared with the training format,
`toolken.format.format_arguments`);
calls cut off by ``max_new_tokens`` do not count. Reported: the share of rows with a completed
call, and generated tokens and seconds divided by the completed calls (what a user pays per
call, whitespace and cut-off calls included).

    python benchmarks/bench_decode.py                       # 6 prompts x 2 repeats, 64 tokens
    python benchmarks/bench_decode.py --variants toolken,toolken-jump,toolken-force --repeats 1
    python benchmarks/bench_decode.py --tools 16 --batch 4 --out bench_results/decode_b4.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import torch

from toolken.local_models import shared_data
from toolken.format import format_arguments
from toolken.tools import argument_error

JUMP_VARIANTS = ("toolken-jump", "toolken-force")  # run by toolken.jump_forward.generate_ids, not generate

HANDWRITTEN = [
    {"name": "get_weather", "description": "Get the current weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                    "required": ["city"]}},
    {"name": "get_time", "description": "Current local time in a time zone",
     "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}},
    {"name": "send_email", "description": "Send an e-mail",
     "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"},
                                                     "body": {"type": "string"}}, "required": ["to", "body"]}},
    {"name": "search_flights", "description": "Search flights between two airports on a date",
     "parameters": {"type": "object", "properties": {
         "origin": {"type": "string"}, "destination": {"type": "string"}, "date": {"type": "string"},
         "passengers": {"type": "integer", "minimum": 1}, "nonstop": {"type": "boolean"}},
         "required": ["origin", "destination", "date"]}},
]

PROMPTS = [
    "What's the weather like in Paris right now?",
    "Send an email to bob@example.com saying the meeting moved to 3pm.",
    "Find me a nonstop flight from SFO to JFK on 2024-07-01 for two people.",
    "What time is it in Tokyo?",
    "Is it raining in London? Answer in fahrenheit.",
    "Email alice@example.com the quarterly report summary.",
]


def load_tools(n: int) -> Any:
    import toolken

    tools = toolken.ToolSet.from_openai(HANDWRITTEN)
    if n > len(tools):  # more than the handwritten tools: Seal-Tools' (shared data, fails fast when absent)
        seal = toolken.ToolSet.from_seal_tools(shared_data("seal-tools") / "tool.jsonl.gz")
        tools = toolken.ToolSet(list(tools) + list(seal)[: n - len(tools)])
    return tools[: max(n, 1)]


def completed_calls(text: str, tools: Any) -> list[tuple[str, dict]]:
    """The finished calls in generated `text`: a tool token, then a JSON object that validates
    against the tool's schema; as (argument text exactly as generated, parsed arguments)."""
    decoder = json.JSONDecoder()
    found = []
    for tool in tools:
        token = f"<<{tool.name}>>"
        start = text.find(token)
        while start >= 0:
            body = text[start + len(token):]
            try:
                value, end = decoder.raw_decode(body)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict) and argument_error(tool, value) is None:
                found.append((body[:end], value))
            start = text.find(token, start + 1)
    return found


class Timed:
    """Wraps a logits processor, summing the time spent in it."""

    def __init__(self, proc: Callable) -> None:
        self.proc, self.seconds = proc, 0.0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        out = self.proc(input_ids, scores)
        self.seconds += time.perf_counter() - t
        return out


def xgrammar_grammar(tools: Any, tokenizer: Any, vocab_size: int, eos: int) -> tuple[Any, float]:
    import xgrammar as xgr

    t = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=[eos])
    calls = [xgr.Grammar.concat(xgr.Grammar.from_ebnf(f"root ::= {json.dumps('<<' + tool.name + '>>')}"),
                                xgr.Grammar.from_json_schema(json.dumps(tool.parameters), any_whitespace=True,
                                                             strict_mode=True))
             for tool in tools]
    grammar = xgr.Grammar.union(*calls) if len(calls) > 1 else calls[0]
    compiled = xgr.GrammarCompiler(info).compile_grammar(grammar)
    return compiled, time.perf_counter() - t


def jump_forward_comparison(rows: list[dict], outputs: dict) -> Any:
    """Jump-forward against step-by-step decoding (``toolken-jump`` and ``toolken-force`` vs
    ``toolken``, same prompts, same run): forward passes per completed call, tokens/s, and
    whether every row's generated ids are the same. Printed as a table; None when ``toolken`` or
    ``toolken-jump`` did not run."""
    by = {r["variant"]: r for r in rows}
    if "toolken" not in by or "toolken-jump" not in by:
        return None
    keys = [k[1:] for k in outputs if k[0] == "toolken" and k[1] >= 0]

    def identical(name: str) -> tuple[int, int]:
        pairs = [(outputs[("toolken", *k)], outputs[(name, *k)]) for k in keys]
        return sum(a == b for step, other in pairs for a, b in zip(step, other)), sum(len(step) for step, _ in pairs)

    print("\n| decoding | forward passes | forward passes / completed call | tok/s | x step-by-step | calls completed |"
          " rows identical to step by step |\n|---|---|---|---|---|---|---|")
    for name, label in (("toolken", "step by step"), ("toolken-jump", "jump-forward, verified"),
                        ("toolken-force", "jump-forward, forced")):
        if name not in by:
            continue
        r = by[name]
        fpc = "-" if r["forward_passes_per_completed_call"] is None else f"{r['forward_passes_per_completed_call']:.1f}"
        print(f"| {label} | {r['forward_passes']} | {fpc} | {r['tokens_per_s']:.1f} | "
              f"{r['tokens_per_s'] / by['toolken']['tokens_per_s']:.2f} | {100 * r['completed_share']:.0f}% | "
              "{} of {} |".format(*identical(name)))
    same, total = identical("toolken-jump")
    forced = identical("toolken-force")[0] if "toolken-force" in by else None
    return {"rows_identical": same, "rows": total, "identical": same == total, "forced_rows_identical": forced,
            "step_forward_passes_per_completed_call": by["toolken"]["forward_passes_per_completed_call"],
            "jump_forward_passes_per_completed_call": by["toolken-jump"]["forward_passes_per_completed_call"],
            "step_tokens_per_s": by["toolken"]["tokens_per_s"], "jump_tokens_per_s": by["toolken-jump"]["tokens_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--tools", type=int, default=len(HANDWRITTEN),
                    help="number of tools (the handwritten ones, then Seal-Tools tools)")
    ap.add_argument("--batch", type=int, default=1, help="different prompts per generate call (left-padded)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--variants", default="unconstrained,toolken,toolken-jump,toolken-flexible,xgrammar")
    ap.add_argument("--out", default=os.path.join("bench_results", "decode.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import toolken
    from toolken.generation import left_pad_prompts, render_prompt
    from toolken.jump_forward import generate_ids
    from toolken.local_models import load_smollm2

    t0 = time.perf_counter()
    model, tokenizer = load_smollm2()
    model.eval()
    tools = load_tools(args.tools)
    model, tokenizer = toolken.extend(model, tokenizer, tools, init="description", trainable=None)
    load_s = time.perf_counter() - t0
    eos = tokenizer.eos_token_id
    V = model.get_output_embeddings().weight.shape[0]
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS[: args.prompts]]
    variants = args.variants.split(",")

    compiled_xgr, xgr_compile_s = (None, None)
    if "xgrammar" in variants:
        compiled_xgr, xgr_compile_s = xgrammar_grammar(tools, tokenizer, V, eos)

    def processor(name: str) -> Any:
        if name == "unconstrained":
            return None
        if name in ("toolken", "toolken-flexible"):
            whitespace = "flexible" if name == "toolken-flexible" else "canonical"
            return Timed(toolken.ToolCallLogitsProcessor(tokenizer, model, mode="required", eos_token_id=eos,
                                                         whitespace=whitespace))
        import xgrammar as xgr

        return Timed(xgr.contrib.hf.LogitsProcessor(compiled_xgr))

    forwards = [0]
    model.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))

    def generated(name: str, batch: list[list[int]]) -> tuple[list[list[int]], int, float, Any]:
        """(each row's ids up to its end of turn, rows x decoding steps, wall seconds, processor)."""
        if name in JUMP_VARIANTS:
            proc = toolken.ToolCallLogitsProcessor(tokenizer, model, mode="required", eos_token_id=eos)
            t = time.perf_counter()
            rows = generate_ids(model, proc, batch, eos, args.max_new_tokens,
                                jump_forward="force" if name == "toolken-force" else "verify")
            return rows, len(rows) * max(map(len, rows)), time.perf_counter() - t, None
        proc = processor(name)
        input_ids, attention_mask = left_pad_prompts(model, batch, eos)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                 max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=eos,
                                 eos_token_id=eos, logits_processor=[proc] if proc else None)
        wall = time.perf_counter() - t
        new = out[:, input_ids.shape[1]:]
        rows = [row[:row.index(eos) + 1] if eos in row else row for row in new.tolist()]
        return rows, new.numel(), wall, proc  # numel: a row that finished early still costs its steps

    outputs: dict[tuple[str, int, int], list[list[int]]] = {}

    def run(name: str, batch: list[list[int]], key: tuple[int, int] = (-1, -1)) -> tuple:
        forwards[0] = 0
        rows, n, wall, proc = generated(name, batch)
        outputs[(name, *key)] = rows
        calls = [completed_calls(tokenizer.decode(row, skip_special_tokens=False), tools) for row in rows]
        done = sum(bool(c) for c in calls)
        noncanonical = sum(text != format_arguments(args) for c in calls for text, args in c)
        return n, wall, proc.seconds if proc else 0.0, rows[0], done, noncanonical, forwards[0]

    # each call: `batch` different prompts (left-padded), starting at a different prompt each time
    batches = [[prompts[(i + j) % len(prompts)] for j in range(args.batch)] for i in range(len(prompts))]

    # warm-up: compiles toolken's per-tool grammars and the vocabulary tables (timed apart)
    warm = {}
    for name in variants:
        t = time.perf_counter()
        for batch in batches:
            run(name, batch)
        warm[name] = time.perf_counter() - t

    stats = {name: {"tokens": 0, "seconds": 0.0, "processor_seconds": 0.0, "per_call_tps": [], "rows": 0,
                    "completed": 0, "noncanonical": 0, "forwards": 0} for name in variants}
    samples: dict[str, list[str]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for p, batch in enumerate(batches):
            for name in (variants if (r + p) % 2 == 0 else variants[::-1]):
                n, wall, proc_s, first, done, noncanonical, passes = run(name, batch, (r, p))
                s = stats[name]
                s["forwards"] += passes
                s["rows"] += len(batch)
                s["completed"] += done
                s["noncanonical"] += noncanonical
                s["tokens"] += n
                s["seconds"] += wall
                s["processor_seconds"] += proc_s
                s["per_call_tps"].append(n / wall)
                if r == 0:
                    samples[name].append(tokenizer.decode(first))

    base = stats.get("unconstrained")
    base_tps = base["tokens"] / base["seconds"] if base else None
    rows = []
    for name in variants:
        s = stats[name]
        tps = s["tokens"] / s["seconds"]
        row = {
            "variant": name, "tokens": s["tokens"], "seconds": round(s["seconds"], 3),
            "tokens_per_s": round(tps, 2),
            "median_call_tokens_per_s": round(statistics.median(s["per_call_tps"]), 2),
            "ratio_to_unconstrained": round(tps / base_tps, 4) if base_tps else None,
            # the jump-forward loop calls the processor inside generate_ids: not timed apart
            "processor_ms_per_token": None if name in JUMP_VARIANTS else round(1e3 * s["processor_seconds"] / s["tokens"], 4),
            "processor_share_of_time": None if name in JUMP_VARIANTS else round(s["processor_seconds"] / s["seconds"], 4),
            "warmup_seconds": round(warm[name], 2),
            "completed_share": round(s["completed"] / s["rows"], 4),
            "completed_calls_not_in_training_format": s["noncanonical"],
            "tokens_per_completed_call": round(s["tokens"] / s["completed"], 1) if s["completed"] else None,
            "seconds_per_completed_call": round(s["seconds"] / s["completed"], 3) if s["completed"] else None,
            "forward_passes": s["forwards"],
            "forward_passes_per_completed_call": round(s["forwards"] / s["completed"], 2) if s["completed"] else None,
        }
        rows.append(row)

    print(f"\nSmolLM2-135M, {len(tools)} tools, batch {args.batch}, greedy, max_new_tokens {args.max_new_tokens}, "
          f"{len(prompts)} prompts x {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    hdr = ("variant", "tokens", "tok/s", "x unconstrained", "proc ms/token", "calls completed",
           "tokens / completed call", "s / completed call")
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))

    def per_call(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for row in rows:
        print(f"| {row['variant']} | {row['tokens']} | {row['tokens_per_s']:.1f} | "
              f"{per_call(row['ratio_to_unconstrained'], '.3f')} | {per_call(row['processor_ms_per_token'], '.3f')} | "
              f"{100 * row['completed_share']:.0f}% | {per_call(row['tokens_per_completed_call'], '.1f')} | "
              f"{per_call(row['seconds_per_completed_call'], '.2f')} |")
    if xgr_compile_s is not None:
        print(f"xgrammar grammar compile: {xgr_compile_s:.2f} s; warm-up runs (incl. toolken's lazy compiles): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in warm.items()))
    for name in variants:
        print(f"  {name} sample: {samples[name][0][:160]!r}")
    for row in rows:
        print(f"  {row['variant']}: {row['completed_calls_not_in_training_format']} completed calls whose argument "
              "text differs from json.dumps(arguments, ensure_ascii=False)")

    jump = jump_forward_comparison(rows, outputs)
    load = os.getloadavg()
    print(f"load average (1, 5, 15 min): {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "decode", "model": "SmolLM2-135M-Instruct (GGUF Q4_1, fp32)", "tools": tools.names,
                   "jump_forward": jump, "load_average": load,
                   "batch": args.batch, "max_new_tokens": args.max_new_tokens, "prompts": len(prompts),
                   "repeats": args.repeats, "threads": torch.get_num_threads(), "load_seconds": round(load_s, 1),
                   "xgrammar_compile_seconds": xgr_compile_s, "results": rows, "samples": samples,
                   "machine": platform.platform(), "cpu_count": os.cpu_count()}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
