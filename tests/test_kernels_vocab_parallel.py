"""Vocabulary-parallel fused weighted CE on 2 gloo processes (spawned once for the module, every
case run in them) equals the single-process op: the loss on every process, the hidden states'
gradient on every process, and each process's slice of the weight, bias and trainable-row
gradients; uneven slices, either process holding the upper slice, both backends (Triton under
TRITON_INTERPRET=1, which the spawned processes inherit from conftest). Bad inputs on one process
make both raise instead of hanging."""
import multiprocessing as mp
import os
import re
import socket

import pytest
import torch
import torch.distributed as dist

from toolken.kernels import VocabParallelOptions, fused_linear_weighted_cross_entropy
from toolken.kernels.dispatch import triton_available

BACKENDS = ["torch"] + (["triton"] if triton_available() else [])
N, V, D = 23, 61, 8
IGNORE = -100
TIMEOUT_S = 300

# name -> options. cut: rank 0 holds [0, cut) (or [cut, V) with swap); rows: where the trainable
# rows live ("last": the upper slice only, as tool rows appended to a vocabulary do; "both").
CASES = {
    "mean_rows_last": dict(backend="torch", reduction="mean", cut=25, rows="last"),
    "sum_all_options": dict(backend="torch", reduction="sum", cut=40, rows="both", smoothing=0.1, z_loss=1e-2,
                            bias=True, train_weight=True),
    "none_per_token": dict(backend="torch", reduction="none", cut=33, rows="both", smoothing=0.1, z_loss=1e-2),
    "swapped_slices_default_chunks": dict(backend="torch", reduction="mean", cut=20, rows="last", swap=True,
                                          chunk=None),
    "frozen_hidden_rows_only": dict(backend="torch", reduction="mean", cut=30, rows="last", train_hidden=False),
    "no_rows": dict(backend="torch", reduction="mean", cut=50, rows=None, smoothing=0.05, bias=True,
                    train_weight=True),
}
for _reduction in ("mean", "none"):
    CASES[f"triton_{_reduction}"] = dict(backend="triton", reduction=_reduction, cut=29, rows="both",
                                         smoothing=0.1, z_loss=1e-2, bias=True)
CASES = {k: v for k, v in CASES.items() if v["backend"] in BACKENDS}

# name -> (what rank 1 does wrong, the message each rank must raise)
ERROR_CASES = {
    "gap": ("slices [0, 30) and [31, 61)", [r"tile \[0, V\).*leaves a gap", r"tile \[0, V\).*leaves a gap"]),
    "duplicate_id": ("a repeated trainable id",
                     [r"process\(es\) \[1\] of the group rejected", r"token_ids must be distinct"]),
    "id_outside_slice": ("a trainable id in rank 0's slice",
                         [r"process\(es\) \[1\] of the group rejected", r"token_ids must be in \[30, 61\)"]),
    "label_out_of_range": ("labels >= V", [r"labels must be in \[0, 61\)", r"labels must be in \[0, 61\)"]),
}


def case_inputs(case, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=gen)
    weight = torch.randn(V, D, generator=gen) / D**0.5
    bias = torch.randn(V, generator=gen) * 0.1 if case.get("bias") else None
    labels = torch.randint(0, V, (N,), generator=gen)
    labels[::6] = IGNORE
    weights = torch.rand(N, generator=gen) * 2
    weights[1::7] = 0.0
    ids = None
    if case.get("rows") == "last":
        ids = torch.tensor([V - 1, V - 4, V - 2, V - 9])
    elif case.get("rows") == "both":
        ids = torch.tensor([V - 1, 3, V - 5, 17, 0, 2 * V // 3])
    rows = None if ids is None else torch.randn(len(ids), D, generator=gen) / D**0.5
    if ids is not None:
        labels[2::5] = ids[torch.arange(len(labels[2::5])) % len(ids)]  # targets on the rows
    return hidden, weight, bias, labels, weights, ids, rows


def run_op(case, hidden, weight, bias, labels, weights, ids, rows, vocab_parallel=None):
    """The op with the case's options; backward with a fixed upstream gradient. Returns the loss
    and the gradients of everything that requires one."""
    leaves = dict(hidden=hidden.requires_grad_(case.get("train_hidden", True)),
                  weight=weight.requires_grad_(case.get("train_weight", False)))
    if bias is not None:
        leaves["bias"] = bias.requires_grad_()
    if rows is not None:
        leaves["rows"] = rows.requires_grad_()
    loss = fused_linear_weighted_cross_entropy(
        hidden, weight, labels, weights, bias, ignore_index=IGNORE, reduction=case["reduction"],
        label_smoothing=case.get("smoothing", 0.0), z_loss=case.get("z_loss", 0.0), chunk_size=case.get("chunk", 5),
        backend=case["backend"], trainable_rows=None if ids is None else (ids, rows), vocab_parallel=vocab_parallel,
    )
    upstream = torch.linspace(-1.0, 2.0, N) if case["reduction"] == "none" else torch.tensor(1.5)
    wanted = {k: v for k, v in leaves.items() if v.requires_grad}
    grads = {}
    if loss.requires_grad:  # a process without trainable rows under frozen hidden states has none
        grads = dict(zip(wanted, torch.autograd.grad(loss, list(wanted.values()), upstream)))
    return loss.detach(), grads


def slice_of(case, rank):
    start, end = (0, case["cut"]) if (rank == 0) != bool(case.get("swap")) else (case["cut"], V)
    return start, end


def run_shard(case, rank, seed):
    hidden, weight, bias, labels, weights, ids, rows = case_inputs(case, seed)
    start, end = slice_of(case, rank)
    mine = None if ids is None else (ids >= start) & (ids < end)
    local_ids, local_rows = (None, None)
    if mine is not None and bool(mine.any()):
        local_ids, local_rows = ids[mine], rows[mine]
    loss, grads = run_op(
        case, hidden, weight[start:end].clone(), None if bias is None else bias[start:end].clone(), labels, weights,
        local_ids, local_rows, VocabParallelOptions(start, end),
    )
    return dict(loss=loss, grads=grads, ids=local_ids)


def run_error_case(name, rank):
    hidden, weight, _, labels, _, _, _ = case_inputs({}, 0)
    start, end = (0, 30) if rank == 0 else (30, V)
    ids, rows = None, None
    if name == "gap" and rank == 1:
        start = 31
    if name == "duplicate_id" and rank == 1:
        ids, rows = torch.tensor([40, 41, 40]), torch.zeros(3, D)
    if name == "id_outside_slice" and rank == 1:
        ids, rows = torch.tensor([40, 5]), torch.zeros(2, D)
    if name == "label_out_of_range":
        labels = labels.clone()
        labels[3] = V
    try:
        fused_linear_weighted_cross_entropy(
            hidden, weight[start:end], labels, trainable_rows=None if ids is None else (ids, rows),
            vocab_parallel=VocabParallelOptions(start, end),
        )
    except ValueError as exc:
        return str(exc)
    return None


def _worker(rank, port, out_dir):
    """One process of the group: every case, then every error case; results saved for the parent."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {name: run_shard(case, rank, seed) for seed, (name, case) in enumerate(CASES.items())}
        results.update({name: run_error_case(name, rank) for name in ERROR_CASES})
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shard_results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("vocab_parallel"))
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, port, out_dir)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT_S)
    for p in procs:
        if p.is_alive():
            p.kill()
    codes = [p.exitcode for p in procs]
    assert codes == [0, 0], f"vocab-parallel processes exited with {codes} (None: hung past {TIMEOUT_S} s)"
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(2)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_match_one(shard_results, name):
    case = CASES[name]
    seed = list(CASES).index(name)
    hidden, weight, bias, labels, weights, ids, rows = case_inputs(case, seed)
    want_loss, want = run_op(case, hidden, weight, bias, labels, weights, ids, rows)
    tol = dict(atol=2e-5, rtol=1e-5)
    for rank, results in enumerate(shard_results):
        got = results[name]
        start, end = slice_of(case, rank)
        torch.testing.assert_close(got["loss"], want_loss, **tol)
        expected = {}
        if "hidden" in want:
            expected["hidden"] = want["hidden"]
        if "weight" in want:
            expected["weight"] = want["weight"][start:end]
        if "bias" in want:
            expected["bias"] = want["bias"][start:end]
        if got["ids"] is not None:
            expected["rows"] = want["rows"][torch.cat([(ids == i).nonzero()[0] for i in got["ids"]])]
        if not case.get("train_hidden", True) and got["ids"] is None and "weight" not in want:
            expected = {}  # nothing of this process needs a gradient: its loss has no graph
        assert set(got["grads"]) == set(expected), (rank, set(got["grads"]))
        for key, value in expected.items():
            torch.testing.assert_close(got["grads"][key], value, **tol, msg=lambda m, rank=rank, key=key: f"rank {rank} {key}: {m}")


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_bad_input_on_one_process_raises_on_both(shard_results, name):
    _, messages = ERROR_CASES[name]
    for rank, pattern in enumerate(messages):
        message = shard_results[rank][name]
        assert message is not None, f"rank {rank} did not raise"
        assert re.search(pattern, message), (rank, message)


def test_needs_an_initialized_group():
    if dist.is_initialized():
        pytest.skip("a default process group exists in this process")
    with pytest.raises(ValueError, match="needs torch.distributed initialized"):
        fused_linear_weighted_cross_entropy(
            torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1]), vocab_parallel=VocabParallelOptions(0, 4)
        )
