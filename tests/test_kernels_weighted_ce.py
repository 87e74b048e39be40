"""fused_linear_weighted_cross_entropy: the chunked PyTorch path and the Triton kernel (under
TRITON_INTERPRET=1, set by conftest) against the naive reference, for the loss and every
gradient, with non-uniform weights and per-token upstream gradients."""
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolken.kernels import fused_linear_weighted_cross_entropy
from toolken.kernels.dispatch import triton_available
from toolken.kernels.weighted_ce import TORCH_KERNEL, chunked_linear_cross_entropy, default_chunk_size
from toolken.kernels.weighted_ce_torch import (
    ChunkStats,
    cross_entropy_chunk_torch,
    reference_linear_weighted_cross_entropy,
    token_losses,
)

BACKENDS = ["torch"] + (["triton"] if triton_available() else [])
IGNORE = -100


def make_inputs(n, vocab, dim, *, seed=0, ignore_every=0, bias=False, dtype=torch.float32, zero_weights=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, dim, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(vocab, dim, generator=gen) / dim**0.5).to(dtype).requires_grad_()
    b = (torch.randn(vocab, generator=gen) * 0.1).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, vocab, (n,), generator=gen)
    if ignore_every:
        labels[::ignore_every] = IGNORE
    weights = torch.rand(n, generator=gen) * 3.0
    if zero_weights:
        weights[1::zero_weights] = 0.0
    return hidden, weight, b, labels, weights


def loss_and_grads(fn, hidden, weight, bias, labels, weights, upstream, **kwargs):
    loss = fn(hidden, weight, labels, weights, bias, **kwargs)
    inputs = [t for t in (hidden, weight, bias) if t is not None]
    grads = torch.autograd.grad(loss, inputs, upstream)
    return loss.detach(), grads


def assert_matches_reference(hidden, weight, bias, labels, weights, *, reduction, atol, rtol, seed=0, **kwargs):
    gen = torch.Generator().manual_seed(seed + 1)
    # Non-uniform per-token upstream gradients for "none" (what Liger-Kernel once got wrong).
    upstream = torch.randn(hidden.shape[0], generator=gen) if reduction == "none" else torch.tensor(1.7)
    got_loss, got_grads = loss_and_grads(
        fused_linear_weighted_cross_entropy, hidden, weight, bias, labels, weights,
        upstream, reduction=reduction, **kwargs,
    )
    options = {k: v for k, v in kwargs.items() if k not in ("chunk_size", "backend")}
    ref_inputs = [t.detach().float().requires_grad_() if t is not None else None for t in (hidden, weight, bias)]
    want_loss, want_grads = loss_and_grads(
        reference_linear_weighted_cross_entropy, ref_inputs[0], ref_inputs[1], ref_inputs[2],
        labels, weights, upstream, reduction=reduction, **options,
    )
    torch.testing.assert_close(got_loss.float(), want_loss, atol=atol, rtol=rtol)
    for got, want in zip(got_grads, want_grads):
        assert got.dtype == hidden.dtype
        torch.testing.assert_close(got.float(), want, atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing,z_loss,bias", [(0.0, 0.0, False), (0.1, 1e-2, True)])
def test_matches_reference_fp32(backend, reduction, smoothing, z_loss, bias):
    inputs = make_inputs(37, 203, 16, ignore_every=5, bias=bias, zero_weights=7)
    assert_matches_reference(
        *inputs, reduction=reduction, atol=2e-5, rtol=1e-4, label_smoothing=smoothing,
        z_loss=z_loss, chunk_size=8, backend=backend,
    )


@settings(max_examples=30)
@given(
    n=st.integers(0, 40),
    vocab=st.integers(1, 300),
    dim=st.integers(1, 32),
    chunk=st.one_of(st.none(), st.integers(1, 48)),
    ignore_every=st.integers(0, 4),
    zero_weights=st.integers(0, 3),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    smoothing=st.sampled_from([0.0, 0.05, 1.0]),
    z_loss=st.sampled_from([0.0, 1e-3]),
    bias=st.booleans(),
    backend=st.sampled_from(BACKENDS),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(
    n, vocab, dim, chunk, ignore_every, zero_weights, reduction, smoothing, z_loss, bias, backend, seed
):
    inputs = make_inputs(n, vocab, dim, seed=seed, ignore_every=ignore_every, bias=bias, zero_weights=zero_weights)
    assert_matches_reference(
        *inputs, reduction=reduction, atol=5e-5, rtol=1e-4, seed=seed, label_smoothing=smoothing,
        z_loss=z_loss, chunk_size=chunk, backend=backend,
    )


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("vocab,block", [(300, 64), (64, 64), (1, 16), (257, 256)])
def test_triton_chunk_kernel_matches_torch(dtype, vocab, block):
    """The per-chunk kernel alone, with V spanning several blocks (not a multiple of the block),
    ignored rows inside the chunk, smoothing and z-loss; half inputs are upcast in-kernel."""
    from toolken.kernels.weighted_ce_triton import cross_entropy_chunk_triton

    gen = torch.Generator().manual_seed(vocab)
    logits = (torch.randn(9, vocab, generator=gen) * 3).to(dtype)
    labels = torch.randint(0, vocab, (9,), generator=gen)
    labels[[1, 4]] = IGNORE
    scale = torch.rand(9, generator=gen)
    opts = dict(ignore_index=IGNORE, label_smoothing=0.1, z_loss=1e-2, compute_grad=True)
    want_loss, want_grad, want_lse = cross_entropy_chunk_torch(logits.clone(), labels, scale, **opts)
    got_loss, got_grad, got_lse = cross_entropy_chunk_triton(logits.clone(), labels, scale, block_v=block, **opts)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(got_loss, want_loss, **tol)
    valid = labels != IGNORE
    torch.testing.assert_close(got_lse[valid], want_lse[valid], **tol)
    assert got_grad.dtype == dtype
    torch.testing.assert_close(got_grad.float(), want_grad.float(), **tol)
    assert torch.all(got_grad[[1, 4]] == 0) and torch.all(got_loss[[1, 4]] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bf16_matches_fp32_reference(backend, reduction):
    """bf16 inputs: matmuls in bf16, softmax in fp32; looser tolerance than fp32."""
    inputs = make_inputs(24, 150, 32, ignore_every=6, bias=True, dtype=torch.bfloat16)
    loss = fused_linear_weighted_cross_entropy(
        inputs[0], inputs[1], inputs[3], inputs[4], inputs[2], reduction=reduction, backend=backend
    )
    assert loss.dtype == torch.float32
    assert_matches_reference(*inputs, reduction=reduction, atol=3e-2, rtol=3e-2, chunk_size=7, backend=backend)


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton not installed")
def test_triton_and_torch_agree_bf16():
    inputs = make_inputs(20, 130, 16, ignore_every=3, dtype=torch.bfloat16)
    h, w, _, y, wt = inputs
    results = []
    for name in ("torch", "triton"):
        loss = fused_linear_weighted_cross_entropy(h, w, y, wt, z_loss=1e-3, label_smoothing=0.1, chunk_size=6, backend=name)
        results.append((loss, *torch.autograd.grad(loss, (h, w))))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got.float(), want.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_float64(reduction):
    h, w, b, y, wt = make_inputs(7, 11, 5, ignore_every=3, bias=True, dtype=torch.float64, seed=3)

    def fn(hidden, weight, bias):
        return fused_linear_weighted_cross_entropy(
            hidden, weight, y, wt, bias, reduction=reduction, label_smoothing=0.1, z_loss=0.01,
            chunk_size=3, backend="torch",
        )

    assert torch.autograd.gradcheck(fn, (h, w, b), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["all_ignored", "all_zero_weight", "empty"])
def test_nothing_to_learn_gives_zero_not_nan(backend, case):
    n = 0 if case == "empty" else 6
    h, w, b, y, wt = make_inputs(n, 10, 4, bias=True)
    if case == "all_ignored":
        y[:] = IGNORE
    if case == "all_zero_weight":
        wt[:] = 0.0
    for reduction in ("mean", "sum"):
        loss = fused_linear_weighted_cross_entropy(h, w, y, wt, b, reduction=reduction, backend=backend)
        grads = torch.autograd.grad(loss, (h, w, b))
        assert loss.item() == 0.0
        assert all(torch.all(g == 0) for g in grads)
    per_token = fused_linear_weighted_cross_entropy(h, w, y, wt, b, reduction="none", backend=backend)
    assert per_token.shape == (n,) and torch.all(per_token == 0)
    grads = torch.autograd.grad(per_token, (h, w, b), torch.ones(n))
    assert all(torch.all(g == 0) for g in grads)


def test_only_requested_gradients_are_computed():
    h, w, _, y, wt = make_inputs(12, 20, 8)
    frozen_weight = w.detach()
    loss = fused_linear_weighted_cross_entropy(h, frozen_weight, y, wt)
    loss.backward()
    assert frozen_weight.grad is None
    want = torch.autograd.grad(reference_linear_weighted_cross_entropy(h, frozen_weight, y, wt), h)[0]
    torch.testing.assert_close(h.grad, want)
    with torch.no_grad():
        value = fused_linear_weighted_cross_entropy(h, w, y, wt)
    assert not value.requires_grad
    torch.testing.assert_close(value, loss.detach())


def test_chunks_bound_the_logits():
    """Every chunk the kernel sees has at most chunk_size rows: no [N, V] logits."""
    h, w, _, y, wt = make_inputs(50, 30, 8)
    seen = []

    def recording_chunk_fn(logits, *args, **kwargs):
        seen.append(tuple(logits.shape))
        return cross_entropy_chunk_torch(logits, *args, **kwargs)

    chunked_linear_cross_entropy(
        h.detach(), w.detach(), None, y, wt, kernel=TORCH_KERNEL._replace(fused=recording_chunk_fn), chunk_size=16,
        ignore_index=IGNORE, label_smoothing=0.0, z_loss=0.0, grad_hidden=True, grad_weight=True, grad_bias=False,
    )
    assert seen == [(16, 30), (16, 30), (16, 30), (2, 30)]
    assert default_chunk_size(8192, 128256, 1024, torch.device("cpu")) * 128256 <= 1 << 25


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_repeated_backward_recomputes(reduction):
    """retain_graph: the first backward uses the gradients from forward, the second recomputes."""
    h, w, _, y, wt = make_inputs(5, 9, 4, ignore_every=2)
    loss = fused_linear_weighted_cross_entropy(h, w, y, wt, reduction=reduction).sum()
    loss.backward(retain_graph=True)
    first = (h.grad.clone(), w.grad.clone())
    loss.backward()
    torch.testing.assert_close(h.grad, 2 * first[0])
    torch.testing.assert_close(w.grad, 2 * first[1])


def test_int32_labels_and_no_weights():
    h, w, _, y, _ = make_inputs(9, 13, 4, ignore_every=4)
    got = fused_linear_weighted_cross_entropy(h, w, y.to(torch.int32))
    want = torch.nn.functional.cross_entropy(h @ w.t(), y, ignore_index=IGNORE)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: a.update(labels=torch.tensor([0, 1, 10, 2])), r"labels must be in \[0, 10\).*10"),
        (lambda a: a.update(labels=torch.tensor([0, 1, -1, 2])), r"labels must be in \[0, 10\)"),
        (lambda a: a.update(loss_weights=torch.tensor([1.0, -0.5, 1.0, 1.0])), r"loss_weights must be finite and >= 0"),
        (lambda a: a.update(loss_weights=torch.tensor([1.0, float("nan"), 1.0, 1.0])), r"loss_weights must be finite"),
        (lambda a: a.update(loss_weights=torch.ones(3)), r"loss_weights must be \[N\].*\(4, 3\).*\(3,\)"),
        (lambda a: a.update(labels=torch.zeros(5, dtype=torch.long)), r"labels must be \[N\].*hidden \(4, 3\)"),
        (lambda a: a.update(weight=torch.zeros(10, 2)), r"weight must be \[V, d\].*weight \(10, 2\)"),
        (lambda a: a.update(hidden=torch.zeros(2, 2, 3)), r"hidden must be 2-D"),
        (lambda a: a.update(bias=torch.zeros(9)), r"bias must be \[V\].*bias \(9,\)"),
        (lambda a: a.update(weight=torch.zeros(10, 3, dtype=torch.float64)), r"weight dtype torch.float64"),
        (lambda a: a.update(labels=torch.zeros(4)), r"labels must be int64 or int32"),
        (lambda a: a.update(labels=torch.zeros(4, dtype=torch.long, device="meta")), r"labels is on meta"),
        (lambda a: a.update(reduction="avg"), r"reduction must be one of"),
        (lambda a: a.update(label_smoothing=1.5), r"label_smoothing must be in \[0, 1\]"),
        (lambda a: a.update(z_loss=-1.0), r"z_loss must be"),
        (lambda a: a.update(chunk_size=0), r"chunk_size must be a positive int"),
        (lambda a: a.update(backend="cuda"), r"backend must be one of"),
    ],
)
def test_bad_input_raises_value_error(change, message):
    args = dict(hidden=torch.zeros(4, 3), weight=torch.zeros(10, 3), labels=torch.tensor([0, 1, IGNORE, 9]))
    change(args)
    with pytest.raises(ValueError, match=message):
        fused_linear_weighted_cross_entropy(**args)


def test_import_does_not_need_triton(tmp_path):
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, toolken.kernels as k\n"
        "h = torch.randn(3, 4, requires_grad=True); w = torch.randn(5, 4)\n"
        "k.fused_linear_weighted_cross_entropy(h, w, torch.tensor([0, 1, 4])).backward()\n"
        "x = torch.zeros(1, 5); k.apply_token_bitmask_(x, torch.tensor([[3]], dtype=torch.int32))\n"
        "assert x[0, 2] == float('-inf') and x[0, 1] == 0\n"
        "try:\n"
        "    k.fused_linear_weighted_cross_entropy(h, w, torch.tensor([0, 1, 4]), backend='triton')\n"
        "except ValueError as e:\n"
        "    assert 'needs the triton package' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # cwd outside the checkout: `python -c` puts cwd on sys.path, and the source tree's `toolken/`
    # (no compiled extension, no `kernels` subpackage) must not shadow the installed package
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)


# ------------------------------------------------------------------ per-chunk passes on vocabulary slices


def _chunk_kernels():
    kernels = {"torch": TORCH_KERNEL}
    if "triton" in BACKENDS:
        from toolken.kernels.weighted_ce_triton import chunk_grad_triton, chunk_stats_triton, cross_entropy_chunk_triton

        small_blocks = {"block_v": 16}  # slices span several blocks
        kernels["triton"] = TORCH_KERNEL._replace(
            fused=lambda *a, **k: cross_entropy_chunk_triton(*a, **k, **small_blocks),
            stats=lambda *a, **k: chunk_stats_triton(*a, **k, **small_blocks),
            grad=lambda *a, **k: chunk_grad_triton(*a, **k, **small_blocks),
        )
    return kernels


@settings(max_examples=25)
@given(
    vocab=st.integers(2, 90),
    cuts=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=3),
    smoothing=st.sampled_from([0.0, 0.1]),
    z_loss=st.sampled_from([0.0, 1e-2]),
    backend=st.sampled_from(BACKENDS),
    seed=st.integers(0, 2**16),
)
def test_passes_on_vocab_slices_match_whole_vocabulary(vocab, cuts, smoothing, z_loss, backend, seed):
    """Pass 1 on uneven vocabulary slices, stats combined as vocab-parallel mode does (logsumexp of
    the slices' lse, sums of label logit and logit sum), pass 2 per slice: the loss and the
    gradient of the whole vocabulary (the math of `vocab_parallel.py` without processes)."""
    kernel = _chunk_kernels()[backend]
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(7, vocab, generator=gen) * 3
    labels = torch.randint(0, vocab, (7,), generator=gen)
    labels[2] = IGNORE
    scale = torch.rand(7, generator=gen)
    opts = dict(ignore_index=IGNORE, label_smoothing=smoothing)
    want_loss, want_grad, _ = kernel.fused(logits.clone(), labels, scale, z_loss=z_loss, compute_grad=True, **opts)

    bounds = sorted({0, vocab, *(min(vocab - 1, max(1, int(c * vocab))) for c in cuts)})
    slices = list(zip(bounds[:-1], bounds[1:]))
    parts = [kernel.stats(logits[:, s:e].clone(), labels, vocab_start=s, **opts) for s, e in slices]
    lse = torch.logsumexp(torch.stack([p[0].lse for p in parts]), 0)
    z_label = sum(p[0].z_label for p in parts)
    z_sum = sum(p[0].z_sum for p in parts) if smoothing else None
    stats = ChunkStats(lse, z_label, z_sum)
    loss = token_losses(stats, labels, z_loss=z_loss, vocab_total=vocab, **opts)
    grads = []
    for (s, e), (_, state) in zip(slices, parts):
        buffer = logits[:, s:e].clone() if state is None else state[0]  # torch's stats pass keeps its buffer
        grads.append(kernel.grad(buffer, labels, scale, lse, state, z_loss=z_loss, vocab_start=s, vocab_total=vocab, **opts))
    torch.testing.assert_close(loss, want_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(grads, 1), want_grad, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ row-sparse head (trainable_rows)


def make_rows(vocab, dim, n_rows, *, seed=0, dtype=torch.float32):
    """`n_rows` distinct ids in random order, and rows for them."""
    gen = torch.Generator().manual_seed(seed + 7)
    ids = torch.randperm(vocab, generator=gen)[:n_rows]
    rows = (torch.randn(n_rows, dim, generator=gen) / dim**0.5).to(dtype).requires_grad_()
    return ids, rows


def dense_reference(hidden, weight, bias, labels, weights, ids, rows, upstream, **options):
    """Today's path, naively: a full copy of the head with the rows substituted, autograd through
    it, the rows' gradient gathered from the full one. Returns (loss, {name: grad})."""
    leaves = {"hidden": hidden, "rows": rows, "bias": bias, "weight": weight}
    leaves = {k: v.detach().double().requires_grad_(v.requires_grad) for k, v in leaves.items() if v is not None}
    full = leaves["weight"].index_copy(0, ids, leaves["rows"])
    loss = reference_linear_weighted_cross_entropy(
        leaves["hidden"], full, labels, weights, leaves.get("bias"), **options
    )
    wanted = {k: v for k, v in leaves.items() if v.requires_grad}
    grads = torch.autograd.grad(loss, list(wanted.values()), upstream.double())
    return loss.detach(), dict(zip(wanted, grads))


def assert_rows_match_dense(hidden, weight, bias, labels, weights, ids, rows, *, reduction, atol, rtol, seed=0,
                            **kwargs):
    gen = torch.Generator().manual_seed(seed + 1)
    upstream = torch.randn(hidden.shape[0], generator=gen) if reduction == "none" else torch.tensor(1.7)
    options = {k: v for k, v in kwargs.items() if k not in ("chunk_size", "backend")}
    want_loss, want = dense_reference(
        hidden, weight, bias, labels, weights, ids, rows, upstream, reduction=reduction, **options
    )
    loss = fused_linear_weighted_cross_entropy(
        hidden, weight, labels, weights, bias, reduction=reduction, trainable_rows=(ids, rows), **kwargs
    )
    leaves = {"hidden": hidden, "rows": rows, "bias": bias, "weight": weight}
    leaves = {k: v for k, v in leaves.items() if v is not None and v.requires_grad}
    assert set(leaves) == set(want)
    got = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()), upstream)))
    torch.testing.assert_close(loss.double(), want_loss, atol=atol, rtol=rtol)
    for name, grad in got.items():
        assert grad.dtype == leaves[name].dtype and grad.shape == leaves[name].shape, name
        torch.testing.assert_close(grad.double(), want[name], atol=atol, rtol=rtol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing,z_loss,bias", [(0.0, 0.0, False), (0.1, 1e-2, True)])
def test_trainable_rows_match_dense_reference(backend, reduction, smoothing, z_loss, bias):
    h, w, b, y, wt = make_inputs(37, 203, 16, ignore_every=5, bias=bias, zero_weights=7)
    w.requires_grad_(False)  # the frozen base head of trainable="tool_rows"
    ids, rows = make_rows(203, 16, 11)
    y[::3] = ids[torch.arange(len(y[::3])) % 11]  # many targets are replaced rows
    assert_rows_match_dense(
        h, w, b, y, wt, ids, rows, reduction=reduction, atol=2e-5, rtol=1e-4, label_smoothing=smoothing,
        z_loss=z_loss, chunk_size=8, backend=backend,
    )


@settings(max_examples=30)
@given(
    n=st.integers(0, 30),
    vocab=st.integers(1, 120),
    dim=st.integers(1, 24),
    row_frac=st.floats(0.0, 1.0),
    chunk=st.one_of(st.none(), st.integers(1, 40)),
    ignore_every=st.integers(0, 4),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    smoothing=st.sampled_from([0.0, 0.05]),
    z_loss=st.sampled_from([0.0, 1e-3]),
    bias=st.booleans(),
    train_weight=st.booleans(),
    backend=st.sampled_from(BACKENDS),
    seed=st.integers(0, 2**16),
)
def test_property_trainable_rows_match_dense_reference(
    n, vocab, dim, row_frac, chunk, ignore_every, reduction, smoothing, z_loss, bias, train_weight, backend, seed
):
    """Any number of rows (none to all) in any order; a weight that requires grad gets the dense
    gradient, zero at the replaced rows."""
    h, w, b, y, wt = make_inputs(n, vocab, dim, seed=seed, ignore_every=ignore_every, bias=bias, zero_weights=3)
    w.requires_grad_(train_weight)
    ids, rows = make_rows(vocab, dim, round(row_frac * vocab), seed=seed)
    assert_rows_match_dense(
        h, w, b, y, wt, ids, rows, reduction=reduction, atol=5e-5, rtol=1e-4, seed=seed, label_smoothing=smoothing,
        z_loss=z_loss, chunk_size=chunk, backend=backend,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_trainable_rows_allocate_nothing_of_vocab_size(backend, reduction):
    """The base weight is read in place: no op of forward or backward outputs a tensor as large as
    [V, d] (the dense path does: its copy and its gradient), the weight is not written to, and it
    gets no gradient."""
    from torch.utils._python_dispatch import TorchDispatchMode

    vocab, dim = 257, 48  # V * d is larger than any [N, d], [chunk, V] or [N, V] tensor here
    h, w, _, y, wt = make_inputs(32, vocab, dim, ignore_every=4)
    w.requires_grad_(False)
    ids, rows = make_rows(vocab, dim, 9)
    before, version = w.clone(), w._version

    class LargestOutput(TorchDispatchMode):
        """The largest tensor any op writes to new memory (views and in-place results skipped)."""

        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            flat_inputs = [*args, *kwargs.values()]
            flat_inputs += [x for a in flat_inputs if isinstance(a, (tuple, list)) for x in a]
            inputs = {t.untyped_storage().data_ptr() for t in flat_inputs if isinstance(t, torch.Tensor)}
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                    self.largest = max(self.largest, t.numel())
            return out

    def run(trainable_rows, weight):
        with LargestOutput() as mode:
            loss = fused_linear_weighted_cross_entropy(
                h, weight, y, wt, reduction=reduction, chunk_size=8, backend=backend, trainable_rows=trainable_rows
            )
            loss.sum().backward()
        return mode.largest

    assert run((ids, rows), w) < vocab * dim
    assert w.grad is None and w._version == version and torch.equal(w, before)
    assert rows.grad.shape == (9, dim)
    assert run(None, w.index_copy(0, ids, rows)) >= vocab * dim  # the check sees today's path


def test_trainable_rows_any_order_and_named_tuple():
    """Permuting (ids, rows) together changes nothing but the order of the rows' gradient."""
    from toolken.kernels import TrainableRows

    h, w, _, y, wt = make_inputs(20, 40, 8, ignore_every=6)
    ids, rows = make_rows(40, 8, 6)
    y[:6] = ids
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    results = []
    for order in (torch.arange(6), perm):
        r = rows.detach()[order].requires_grad_()
        loss = fused_linear_weighted_cross_entropy(h, w.detach(), y, wt, trainable_rows=TrainableRows(ids[order], r))
        results.append((loss, *torch.autograd.grad(loss, (h, r))))
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])
    torch.testing.assert_close(results[1][2], results[0][2][perm])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_trainable_rows_gradcheck_float64(reduction):
    h, w, b, y, wt = make_inputs(7, 11, 5, ignore_every=3, bias=True, dtype=torch.float64, seed=3)
    ids, rows = make_rows(11, 5, 4, dtype=torch.float64)
    y[1] = ids[0]

    def fn(hidden, rows, bias):
        return fused_linear_weighted_cross_entropy(
            hidden, w.detach(), y, wt, bias, reduction=reduction, label_smoothing=0.1, z_loss=0.01,
            chunk_size=3, backend="torch", trainable_rows=(ids, rows),
        )

    assert torch.autograd.gradcheck(fn, (h, rows, b), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trainable_rows_bf16(backend):
    """bf16 head and rows: matmuls in bf16, softmax in fp32; rows' gradient in bf16."""
    h, w, _, y, wt = make_inputs(24, 150, 32, ignore_every=6, dtype=torch.bfloat16)
    w.requires_grad_(False)
    ids, rows = make_rows(150, 32, 10, dtype=torch.bfloat16)
    y[::2] = ids[torch.arange(12) % 10]
    assert_rows_match_dense(h, w, None, y, wt, ids, rows, reduction="mean", atol=3e-2, rtol=3e-2, chunk_size=7,
                            backend=backend)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_trainable_rows_repeated_backward(reduction):
    h, w, _, y, wt = make_inputs(9, 13, 4, ignore_every=4)
    ids, rows = make_rows(13, 4, 3)
    loss = fused_linear_weighted_cross_entropy(h, w.detach(), y, wt, reduction=reduction, trainable_rows=(ids, rows))
    loss.sum().backward(retain_graph=True)
    first = (h.grad.clone(), rows.grad.clone())
    loss.sum().backward()
    torch.testing.assert_close(h.grad, 2 * first[0])
    torch.testing.assert_close(rows.grad, 2 * first[1])


@pytest.mark.parametrize(
    "trainable_rows,message",
    [
        ((torch.tensor([3, 7, 3]), torch.zeros(3, 3)), r"token_ids must be distinct; 1 id\(s\) repeat \(e\.g\. \[3\]\)"),
        ((torch.tensor([3, 10]), torch.zeros(2, 3)), r"token_ids must be in \[0, 10\).*e\.g\. 10"),
        ((torch.tensor([-1]), torch.zeros(1, 3)), r"token_ids must be in \[0, 10\)"),
        ((torch.tensor([1, 2]), torch.zeros(3, 3)), r"rows must be \[n, d\] with n = len\(token_ids\)"),
        ((torch.tensor([1, 2]), torch.zeros(2, 4)), r"rows must be \[n, d\].*the d of weight"),
        ((torch.tensor([1, 2]), torch.zeros(2, 3, dtype=torch.float64)), r"rows dtype torch.float64 must match"),
        ((torch.tensor([1.0, 2.0]), torch.zeros(2, 3)), r"token_ids must be a 1-D int64/int32 tensor"),
        ((torch.tensor([1, 2]),), r"must be a \(token_ids, rows\) pair"),
        ((torch.tensor([1, 2]), torch.zeros(2, 3, device="meta")), r"rows is on meta"),
    ],
)
def test_bad_trainable_rows_raise_value_error(trainable_rows, message):
    with pytest.raises(ValueError, match=message):
        fused_linear_weighted_cross_entropy(
            torch.zeros(4, 3), torch.zeros(10, 3), torch.tensor([0, 1, IGNORE, 9]), trainable_rows=trainable_rows
        )
