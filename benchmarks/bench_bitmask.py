"""Benchmark `toolken.kernels.apply_token_bitmask_` against xgrammar's `apply_token_bitmask_inplace`
(method: benchmarks/README.md): microseconds per call on [B, V] logits, same inputs, same process.

Cases: B in {1, 8, 64}, V = 128256 (Llama-3), float32 and bfloat16, masks with random bits
("random", about half allowed) and with 1% of tokens allowed ("sparse"). On a machine without a
GPU both run on the CPU (toolken's vectorized PyTorch path, xgrammar's C++ CPU kernel); with
CUDA tensors toolken's Triton kernel runs against xgrammar's default GPU backend. Every case
first checks that both give bitwise-identical logits. Target: toolken's throughput >= xgrammar's.

    python benchmarks/bench_bitmask.py [--batch 1,8,64] [--vocab 128256] [--dtypes float32,bfloat16]
        [--masks random,sparse] [--threads N] [--device cpu|cuda] [--out bench_results/bench_bitmask.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from toolken.kernels import apply_token_bitmask_

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_bitmask(batch: int, vocab: int, kind: str, gen: torch.Generator) -> torch.Tensor:
    words = (vocab + 31) // 32
    if kind == "random":
        return torch.randint(-(2**31), 2**31, (batch, words), generator=gen, dtype=torch.int64).to(torch.int32)
    if kind == "sparse":
        bits = torch.zeros(batch, words * 32, dtype=torch.int64)
        allowed = torch.randint(0, vocab, (batch, max(1, vocab // 100)), generator=gen)
        bits.scatter_(1, allowed, 1)
        return (bits.view(batch, words, 32) << torch.arange(32)).sum(-1).to(torch.int32)
    raise ValueError(f"unknown mask kind {kind!r} (random, sparse)")


def time_call(fn: Callable[[], None], sync: Callable[[], None], min_time: float, repeats: int) -> float:
    """Median over `repeats` rounds of the mean time per call (µs); each round runs >= min_time."""
    fn()
    sync()
    calls = 1
    while True:  # calibrate calls per round
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        if time.perf_counter() - start >= min_time:
            break
        calls *= 2
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds)


def xgrammar_apply() -> Optional[Callable[[torch.Tensor, torch.Tensor], None]]:
    try:
        import xgrammar
    except ImportError:
        return None
    return lambda logits, bitmask: xgrammar.apply_token_bitmask_inplace(logits, bitmask)


def run(args: argparse.Namespace) -> Dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    xgr = xgrammar_apply()
    if xgr is None:
        print("xgrammar not installed: only toolken is timed")
    gen = torch.Generator().manual_seed(0)
    rows: List[Dict] = []
    for kind in args.masks.split(","):
        for dtype_name in args.dtypes.split(","):
            for batch in [int(b) for b in args.batch.split(",")]:
                logits = torch.randn(batch, args.vocab, generator=gen).to(DTYPES[dtype_name]).to(device)
                bitmask = make_bitmask(batch, args.vocab, kind, gen).to(device)
                want = logits.clone()
                apply_token_bitmask_(want, bitmask)
                row = dict(mask=kind, dtype=dtype_name, batch=batch, vocab=args.vocab)
                # Applying a mask twice gives the same result, so timing on the same tensor is fair.
                work = logits.clone()
                row["toolken_us"] = time_call(lambda w=work, m=bitmask: apply_token_bitmask_(w, m), sync, args.min_time, args.repeats)
                if xgr is not None:
                    check = logits.clone()
                    xgr(check, bitmask)
                    row["identical"] = bool(torch.equal(check.view(torch.int16), want.view(torch.int16)))
                    work = logits.clone()
                    row["xgrammar_us"] = time_call(lambda w=work, m=bitmask: xgr(w, m), sync, args.min_time, args.repeats)
                    row["speedup_vs_xgrammar"] = row["xgrammar_us"] / row["toolken_us"]
                rows.append(row)
                print_row(row)
    return dict(
        benchmark="bitmask",
        device=str(device),
        torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        load_average=os.getloadavg(),
        toolken_backend="triton" if device.type == "cuda" else "torch (vectorized)",
        xgrammar_backend="auto (cuda/triton)" if device.type == "cuda" else "cpu (C++)",
        rows=rows,
    )


HEADER = f"{'mask':>7} {'dtype':>9} {'B':>4} {'toolken µs':>11} {'xgrammar µs':>12} {'xgr/toolken':>12} {'same':>5}"


def print_row(row: Dict) -> None:
    xgr = row.get("xgrammar_us")
    xgr_text = f"{xgr:.1f}" if xgr else "-"
    ratio_text = f"{row['speedup_vs_xgrammar']:.2f}x" if xgr else "-"
    print(
        f"{row['mask']:>7} {row['dtype']:>9} {row['batch']:>4} {row['toolken_us']:>11.1f} "
        f"{xgr_text:>12} {ratio_text:>12} {str(row.get('identical', '-')):>5}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", default="1,8,64")
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--masks", default="random,sparse")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timing round")
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds (median reported)")
    parser.add_argument("--out", default="bench_results/bench_bitmask.json")
    args = parser.parse_args()
    if args.device == "cpu" and not torch.cuda.is_available():
        print("CUDA section skipped: no GPU (torch.cuda.is_available() is False); timing the CPU paths")
    print(f"threads={args.threads or torch.get_num_threads()} load average={os.getloadavg()}")
    print(HEADER)
    result = run(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
