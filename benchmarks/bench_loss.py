"""Benchmark the fused linear + token-weighted cross-entropy.

Forward + backward (gradients of hidden and weight) of `toolken.kernels.
fused_linear_weighted_cross_entropy` against, in the same run and on the same inputs:
  naive          F.linear -> F.cross_entropy(reduction="none") x weights -> weighted mean
  torch_chunked  PyTorch's own chunked F.linear_cross_entropy(..., reduction="none",
                 options=LinearCrossEntropyOptions()), weighted afterwards (torch >= 2.13)
  liger, cce     (CUDA only, when installed) Liger-Kernel's fused linear cross-entropy and Cut
                 Cross-Entropy, reduction="none", weighted afterwards
  naive_compiled (CUDA only) torch.compile of the naive path
Each case runs in a fresh subprocess. Reported: wall time of forward + backward, peak memory
above the inputs (CPU: the process's peak resident set, reset with /proc/self/clear_refs once
the inputs exist, because tracemalloc does not see torch; CUDA: torch.cuda.max_memory_allocated),
and the max abs difference of the loss and of both gradients against the naive path. Ratios are
to the naive path of the same run. Targets (CPU, fp32, N=8192, V=128256, d=1024): peak memory
<= 1/8 of naive and time <= naive.

Tool-rows case (`--tool-rows`; issue 15): a frozen head whose n tool rows are trainable, as
`trainable="tool_rows"` trains it. Forward + backward (gradients of hidden and the rows) of
  dense_rows   today's path: `weight.index_copy(0, ids, rows)` (a full [V, d] copy with the rows
               substituted, what `toolken.output_weight` builds) into the fused op, which
               accumulates a full [V, d] weight gradient that autograd then gathers the rows from
  sparse_rows  the fused op with `trainable_rows=(ids, rows)`: no copy, gradient for the rows only
with time, peak memory above the inputs and the max abs difference of the loss and gradients
against dense_rows. Targets: time <= 0.75x and peak memory <= 0.5x of dense_rows.

    python benchmarks/bench_loss.py                      # quick sizes, a few minutes on 2 cores
    python benchmarks/bench_loss.py --full               # the §2 grid (long: tens of minutes)
    python benchmarks/bench_loss.py --sizes 8192x128256x1024 --impls naive,toolken
    python benchmarks/bench_loss.py --tool-rows          # 4096x128256x512 and 512x128256x4096, 1024 rows
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

QUICK_SIZES = ["1024x32768x512", "512x128256x512"]
FULL_SIZES = [f"{n}x{v}x{d}" for n in (2048, 8192) for v in (32768, 128256) for d in (1024, 2048)]
CPU_IMPLS = ["naive", "toolken", "torch_chunked"]
CUDA_IMPLS = ["naive", "toolken", "torch_chunked", "liger", "cce", "naive_compiled"]
# Tool rows: N=4096 times and measures memory; d=4096 at N=512 measures memory (its time is
# dominated by the same matmuls, 8x larger).
TOOL_ROWS_SIZES = ["4096x128256x512", "512x128256x4096"]
TOOL_ROWS_IMPLS = ["dense_rows", "sparse_rows"]
IGNORE_INDEX = -100


# ----------------------------------------------------------------------------- one case (child)


def _peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the kernel's peak resident set of this process


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _make_inputs(n: int, vocab: int, dim: int, dtype, device, ignore_frac: float):
    import torch

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, dim, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    weight = torch.randn(vocab, dim, generator=gen).mul_(dim**-0.5).to(device=device, dtype=dtype).requires_grad_()
    labels = torch.randint(0, vocab, (n,), generator=gen)
    labels[: int(n * ignore_frac)] = IGNORE_INDEX  # a prompt part that is not trained on
    weights = torch.rand(n, generator=gen).add_(0.5)
    weights[torch.rand(n, generator=gen) < 0.05] = 5.0  # a few up-weighted key tokens
    return hidden, weight, labels.to(device), weights.to(device)


def _make_tool_rows(vocab: int, dim: int, n_rows: int, dtype, device):
    """The last `n_rows` ids (tool tokens are appended to a vocabulary), in shuffled order, and
    their trainable rows."""
    import torch

    gen = torch.Generator().manual_seed(1)
    ids = (vocab - n_rows + torch.randperm(n_rows, generator=gen)).to(device)
    rows = torch.randn(n_rows, dim, generator=gen).mul_(dim**-0.5).to(device=device, dtype=dtype).requires_grad_()
    return ids, rows


def _rows_loss_fn(impl: str, chunk_size: Optional[int]):
    from toolken.kernels import fused_linear_weighted_cross_entropy

    if impl == "dense_rows":
        return lambda h, w, y, lw, ids, rows: fused_linear_weighted_cross_entropy(
            h, w.index_copy(0, ids, rows), y, lw, chunk_size=chunk_size
        )
    if impl == "sparse_rows":
        return lambda h, w, y, lw, ids, rows: fused_linear_weighted_cross_entropy(
            h, w, y, lw, chunk_size=chunk_size, trainable_rows=(ids, rows)
        )
    raise ValueError(f"unknown tool-rows impl {impl!r}")


def _weighted_mean(per_token, labels, weights):
    valid = (labels != IGNORE_INDEX).to(per_token.dtype)
    w = weights.to(per_token.dtype) * valid
    return (per_token * w).sum() / w.sum().clamp_min(1e-30)


def _loss_fn(impl: str, chunk_size: Optional[int]):
    import torch
    import torch.nn.functional as F

    from toolken.kernels import fused_linear_weighted_cross_entropy
    from toolken.kernels.weighted_ce_torch import reference_linear_weighted_cross_entropy

    if impl == "naive":
        return lambda h, w, y, lw: reference_linear_weighted_cross_entropy(h, w, y, lw, ignore_index=IGNORE_INDEX)
    if impl == "naive_compiled":
        return torch.compile(lambda h, w, y, lw: reference_linear_weighted_cross_entropy(h, w, y, lw))
    if impl == "toolken":
        return lambda h, w, y, lw: fused_linear_weighted_cross_entropy(h, w, y, lw, chunk_size=chunk_size)
    if impl == "torch_chunked":
        options = torch.nn.LinearCrossEntropyOptions()

        def torch_chunked(h, w, y, lw):
            per_token = F.linear_cross_entropy(h, w, y, reduction="none", ignore_index=IGNORE_INDEX, options=options)
            return _weighted_mean(per_token.float(), y, lw)

        return torch_chunked
    if impl == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(reduction="none", ignore_index=IGNORE_INDEX)
        return lambda h, w, y, lw: _weighted_mean(liger(w, h, y).float(), y, lw)
    if impl == "cce":
        from cut_cross_entropy import linear_cross_entropy

        return lambda h, w, y, lw: _weighted_mean(
            linear_cross_entropy(h, w, y, reduction="none", ignore_index=IGNORE_INDEX).float(), y, lw
        )
    raise ValueError(f"unknown impl {impl!r}")


def run_case(case: Dict) -> Dict:
    """Time one implementation at one size; compare with the naive outputs saved by its case."""
    import torch

    device = torch.device(case["device"])
    dtype = getattr(torch, case["dtype"])
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n_rows = case.get("n_rows")
    if n_rows:
        # A frozen head with trainable tool rows; labels partly on the tool ids.
        fn = _rows_loss_fn(case["impl"], case.get("chunk_size"))

        def inputs(n: int, vocab: int, dim: int, ignore_frac: float):
            h, w, y, lw = _make_inputs(n, vocab, dim, dtype, device, ignore_frac)
            ids, rows = _make_tool_rows(vocab, dim, min(n_rows, vocab), dtype, device)
            y[::10] = ids[torch.arange(len(y[::10]), device=device) % len(ids)]
            return (h, w.requires_grad_(False), y, lw, ids, rows), {"hidden": h, "rows": rows}
    else:
        fn = _loss_fn(case["impl"], case.get("chunk_size"))

        def inputs(n: int, vocab: int, dim: int, ignore_frac: float):
            h, w, y, lw = _make_inputs(n, vocab, dim, dtype, device, ignore_frac)
            return (h, w, y, lw), {"hidden": h, "weight": w}

    # Library start-up (thread pools, MKL, Triton compilation for tiny shapes) outside the timing.
    small, _ = inputs(64, 512, 32, 0.0)
    fn(*small).backward()
    del small

    args, leaves = inputs(case["n"], case["vocab"], case["dim"], case["ignore_frac"])
    times = []
    for _ in range(case["warmup"]):
        for leaf in leaves.values():
            leaf.grad = None
        fn(*args).backward()
    for _ in range(case["iters"]):
        for leaf in leaves.values():
            leaf.grad = None
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            _peak_rss_reset()
            base = _rss_kib("VmRSS") * 1024
        start = time.perf_counter()
        loss = fn(*args)
        loss.backward()
        sync()
        times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024
    result = dict(case, time_s=sorted(times)[len(times) // 2], times_s=times, peak_bytes_above_inputs=peak - base)

    outputs = {"loss": loss.detach().float().cpu()}
    outputs.update({f"grad_{name}": leaf.grad.float().cpu() for name, leaf in leaves.items()})
    del args, leaves, loss
    reference_impl = "dense_rows" if n_rows else "naive"
    rows_tag = f"-rows{n_rows}" if n_rows else ""
    reference = os.path.join(
        case["workdir"], f"{reference_impl}-{case['n']}x{case['vocab']}x{case['dim']}{rows_tag}.pt"
    )
    if case["impl"] == reference_impl:
        torch.save(outputs, reference)
    elif os.path.exists(reference):
        want = torch.load(reference)
        for key, value in outputs.items():
            result[f"max_abs_diff_{key}"] = float((value - want[key]).abs().max())
    return result


# ----------------------------------------------------------------------------- driver (parent)


def _spawn(case: Dict) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--case", json.dumps(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return dict(case, error=f"exit {proc.returncode}: {error}")


def _fmt_bytes(n: Optional[float]) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _header(reference: str, last_grad: str) -> str:
    return (
        f"{'N x V x d':>18} {'impl':>14} {'time s':>8} {'x ' + reference:>12} {'peak mem':>10} "
        f"{'x ' + reference:>12} {'|dloss|':>9} {'|dgrad_h|':>9} {'|dgrad_' + last_grad + '|':>12}"
    )


def _print_row(row: Dict, reference: str, last_grad: str) -> None:
    size = f"{row['n']}x{row['vocab']}x{row['dim']}"
    if "error" in row:
        print(f"{size:>18} {row['impl']:>14}  failed: {row['error'][:120]}")
        return

    def diff(key: str) -> str:
        return f"{row[key]:.1e}" if key in row else "-"

    time_key, memory_key = f"time_ratio_vs_{reference}", f"memory_ratio_vs_{reference}"
    time_ratio = f"{row[time_key]:.2f}" if time_key in row else "-"
    mem_ratio = f"{row[memory_key]:.3f}" if memory_key in row else "-"
    print(
        f"{size:>18} {row['impl']:>14} {row['time_s']:>8.2f} {time_ratio:>12} "
        f"{_fmt_bytes(row['peak_bytes_above_inputs']):>10} {mem_ratio:>12} "
        f"{diff('max_abs_diff_loss'):>9} {diff('max_abs_diff_grad_hidden'):>9} "
        f"{diff('max_abs_diff_grad_' + last_grad):>12}",
        flush=True,
    )


def _available(impl: str) -> Optional[str]:
    """None if the peer can run here, else why not."""
    import importlib.util

    import torch

    module = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}.get(impl)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} not installed"
    if impl == "torch_chunked" and not hasattr(torch.nn, "LinearCrossEntropyOptions"):
        return "torch < 2.13 has no chunked F.linear_cross_entropy"
    return None


def run_section(
    device: str, dtype: str, impls: List[str], sizes: List[str], args, workdir: str, n_rows: Optional[int] = None
) -> List[Dict]:
    """One table: every impl at every size, ratios to the first impl (naive, or dense_rows for
    the tool-rows case with `n_rows` trainable rows)."""
    rows = []
    reference_impl, last_grad = ("dense_rows", "rows") if n_rows else ("naive", "W")
    print(f"\n== {device}, {dtype}" + (f", tool rows: {n_rows} trainable rows of a frozen head ==" if n_rows else " =="))
    print(_header(reference_impl, last_grad))
    for size in sizes:
        n, vocab, dim = (int(x) for x in size.lower().split("x"))
        reference = None
        for impl in impls:
            reason = _available(impl)
            if reason:
                print(f"{size:>18} {impl:>14}  skipped: {reason}")
                continue
            case = dict(
                impl=impl, n=n, vocab=vocab, dim=dim, device=device, dtype=dtype, ignore_frac=args.ignore_frac,
                chunk_size=args.chunk_size, warmup=args.warmup if args.warmup is not None else (1 if device == "cuda" else 0),
                iters=args.iters or (5 if device == "cuda" else 1), workdir=workdir,
            )
            if n_rows:
                case["n_rows"] = n_rows
            row = _spawn(case)
            if impl == reference_impl and "error" not in row:
                reference = row
            if reference is not None and "error" not in row:
                row[f"time_ratio_vs_{reference_impl}"] = row["time_s"] / reference["time_s"]
                row[f"memory_ratio_vs_{reference_impl}"] = (
                    row["peak_bytes_above_inputs"] / max(1, reference["peak_bytes_above_inputs"])
                )
            _print_row(row, reference_impl, "weight" if last_grad == "W" else last_grad)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(QUICK_SIZES), help="comma-separated NxVxd")
    parser.add_argument("--full", action="store_true", help="the full grid of benchmarks/README.md")
    parser.add_argument("--impls", default=None, help=f"subset of {CUDA_IMPLS}")
    parser.add_argument("--ignore-frac", type=float, default=0.0, help="fraction of tokens labelled ignore_index")
    parser.add_argument("--chunk-size", type=int, default=None, help="toolken chunk size (default: its own)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs per case (default CPU 0, CUDA 1)")
    parser.add_argument("--iters", type=int, default=None, help="timed runs per case, median (default CPU 1, CUDA 5)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU section")
    parser.add_argument("--tool-rows", action="store_true",
                        help="run only the tool-rows case (dense_rows vs sparse_rows; sizes from --tool-rows-sizes)")
    parser.add_argument("--tool-rows-sizes", default=",".join(TOOL_ROWS_SIZES), help="comma-separated NxVxd")
    parser.add_argument("--n-rows", type=int, default=1024, help="trainable tool rows in the tool-rows case")
    parser.add_argument("--out", default=None,
                        help="JSON path (default bench_results/bench_loss.json, or bench_loss_tool_rows.json)")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    if args.out is None:
        args.out = "bench_results/bench_loss_tool_rows.json" if args.tool_rows else "bench_results/bench_loss.json"

    import torch

    sizes = args.tool_rows_sizes.split(",") if args.tool_rows else FULL_SIZES if args.full else args.sizes.split(",")
    wanted = args.impls.split(",") if args.impls else None
    workdir = tempfile.mkdtemp(prefix="bench_loss_")
    result: Dict = dict(
        benchmark="loss", torch=torch.__version__, torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        load_average_start=os.getloadavg(), sizes=sizes, sections=[],
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    n_rows = args.n_rows if args.tool_rows else None
    if n_rows:
        result.update(case="tool_rows", n_rows=n_rows)
    try:
        if not args.no_cpu:
            impls = [i for i in (TOOL_ROWS_IMPLS if n_rows else CPU_IMPLS) if wanted is None or i in wanted]
            rows = run_section("cpu", "float32", impls, sizes, args, workdir, n_rows)
            result["sections"].append(dict(device="cpu", dtype="float32", rows=rows))
        if torch.cuda.is_available():
            impls = [i for i in (TOOL_ROWS_IMPLS if n_rows else CUDA_IMPLS) if wanted is None or i in wanted]
            rows = run_section("cuda", "bfloat16", impls, sizes, args, workdir, n_rows)
            result["sections"].append(dict(device=torch.cuda.get_device_name(), dtype="bfloat16", rows=rows))
        else:
            print("\nCUDA section skipped: no GPU (torch.cuda.is_available() is False)")
            result["cuda"] = "skipped: no GPU"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["load_average_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
