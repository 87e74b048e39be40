"""apply_token_bitmask_: the PyTorch path and the Triton kernel (TRITON_INTERPRET=1, set by
conftest) against a plain loop over rows and tokens."""
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolken.kernels import apply_token_bitmask_
from toolken.kernels.dispatch import triton_available

BACKENDS = ["torch"] + (["triton"] if triton_available() else [])
# "torch" on CPU tensors runs the grammar extension's C++ loop; "torch-ops" forces the operator
# path that other devices use.
PATHS = BACKENDS + ["torch-ops"]


def apply(logits, bitmask, indices=None, path="torch"):
    if path != "torch-ops":
        return apply_token_bitmask_(logits, bitmask, indices, backend=path)
    with mock.patch("toolken.kernels.bitmask_torch._native_cpu_apply", return_value=None):
        return apply_token_bitmask_(logits, bitmask, indices, backend="torch")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
NEG_INF = float("-inf")


def loop_reference(logits, bitmask, indices=None):
    """The definition, one token at a time."""
    out = logits.clone()
    words = bitmask.tolist()
    rows = range(out.shape[0]) if indices is None else indices
    for i in rows:
        for j in range(out.shape[1]):
            allowed = j < 32 * len(words[i]) and (words[i][j // 32] >> (j % 32)) & 1
            if not allowed:
                out[i, j] = NEG_INF
    return out


def random_bitmask(rows, words, gen, density=None):
    if density is None:
        return torch.randint(-(2**31), 2**31, (rows, words), generator=gen, dtype=torch.int64).to(torch.int32)
    bits = (torch.rand(rows, words * 32, generator=gen) < density).to(torch.int64)
    packed = (bits.view(rows, words, 32) << torch.arange(32)).sum(-1)
    return packed.to(torch.int32) if words else torch.zeros(rows, 0, dtype=torch.int32)


def assert_same_bits(got, want):
    """Bitwise equality (NaN-safe): the op must leave allowed logits untouched."""
    int_dtype = torch.int32 if got.dtype == torch.float32 else torch.int16
    assert torch.equal(got.view(int_dtype), want.view(int_dtype))


@settings(max_examples=90)
@given(
    batch=st.integers(1, 5),
    vocab=st.integers(1, 300),
    word_delta=st.integers(-2, 2),
    dtype=st.sampled_from(DTYPES),
    density=st.sampled_from([None, 0.0, 0.02, 0.98, 1.0]),
    use_indices=st.booleans(),
    extra_mask_rows=st.integers(0, 2),
    backend=st.sampled_from(PATHS),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_matches_loop_reference(
    batch, vocab, word_delta, dtype, density, use_indices, extra_mask_rows, backend, seed, data
):
    gen = torch.Generator().manual_seed(seed)
    words = max(0, (vocab + 31) // 32 + word_delta)  # masks narrower and wider than the logits
    logits = (torch.randn(batch, vocab, generator=gen) * 5).to(dtype)
    logits[0, 0] = float("inf")
    indices = None
    mask_rows = batch
    if use_indices:
        indices = data.draw(st.lists(st.integers(0, batch - 1), max_size=batch + 1), label="indices")
        mask_rows = batch + extra_mask_rows
    bitmask = random_bitmask(mask_rows, words, gen, density)
    want = loop_reference(logits, bitmask, indices)
    got = logits.clone()
    assert apply(got, bitmask, indices, backend) is got
    assert_same_bits(got, want)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_on_llama3_sized_rows(backend, dtype):
    """V = 128256 (not a multiple of the Triton block), index tensor, NaN/inf logits."""
    gen = torch.Generator().manual_seed(0)
    vocab = 128256
    logits = torch.randn(3, vocab, generator=gen).to(dtype)
    logits[:, :4] = torch.tensor([float("nan"), float("inf"), NEG_INF, 0.0]).to(dtype)
    bitmask = random_bitmask(3, vocab // 32, gen)
    bitmask[:, 0] = 0b1010  # tokens 1 and 3 allowed, 0 (NaN) and 2 disallowed
    indices = torch.tensor([2, 0], dtype=torch.int32)
    want = logits.clone()
    apply_token_bitmask_(want, bitmask, [0, 2], backend="torch")
    for i in (0, 2):  # spot-check the reference path against the definition on one row slice
        row_bits = (bitmask[i].to(torch.int64).unsqueeze(1) >> torch.arange(32)) & 1
        allowed = row_bits.flatten().bool()
        assert torch.all(want[i][~allowed] == NEG_INF)
        assert_same_bits(want[i][allowed], logits[i][allowed])
    assert_same_bits(want[1], logits[1])
    got = logits.clone()
    apply(got, bitmask, indices, backend)
    assert_same_bits(got, want)


@pytest.mark.parametrize("batch,vocab", [(1, 1000), (3, 97), (4, 64)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_path_blocks(monkeypatch, batch, vocab, dtype):
    """Small blocks: the PyTorch path splits the vocabulary into several blocks."""
    from toolken.kernels import bitmask_torch

    monkeypatch.setattr(bitmask_torch, "BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(bitmask_torch, "_native_cpu_apply", lambda: None)
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(batch, vocab, generator=gen).to(dtype)
    bitmask = random_bitmask(batch, (vocab + 31) // 32, gen)
    want = loop_reference(logits, bitmask)
    apply_token_bitmask_(logits, bitmask, backend="torch")
    assert_same_bits(logits, want)


@pytest.mark.parametrize("backend", PATHS)
def test_strided_and_one_dimensional_logits(backend):
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(70, 4, generator=gen)
    logits = base.t()  # [4, 70], not contiguous along the vocabulary
    bitmask = random_bitmask(4, 3, gen)
    want = loop_reference(logits, bitmask)
    apply(logits, bitmask, path=backend)
    assert_same_bits(base.t(), want)

    row = torch.randn(40, generator=gen)
    want_row = loop_reference(row.unsqueeze(0), bitmask[0, :2].unsqueeze(0))[0]
    apply(row, bitmask[0, :2], path=backend)
    assert_same_bits(row, want_row)


@pytest.mark.parametrize("backend", PATHS)
def test_all_allowed_and_none_allowed(backend):
    logits = torch.randn(2, 100)
    untouched = logits.clone()
    apply(logits, torch.full((2, 4), -1, dtype=torch.int32), path=backend)
    assert torch.equal(logits, untouched)
    apply(logits, torch.zeros(2, 4, dtype=torch.int32), path=backend)
    assert torch.all(logits == NEG_INF)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(bitmask=torch.zeros(2, 4, dtype=torch.int64)), "bitmask must be int32"),
        (dict(logits=torch.zeros(2, 100, dtype=torch.int32)), "logits must be float32, bfloat16 or float16"),
        (dict(bitmask=torch.zeros(3, 4, dtype=torch.int32)), r"one row per logits row.*bitmask \(3, 4\)"),
        (dict(bitmask=torch.zeros(2, 2, 2, dtype=torch.int32)), r"logits must be \[B, V\]"),
        (dict(indices=[0, 2]), r"indices must be in \[0, 2\)"),
        (dict(indices=[-1]), r"indices must be in \[0, 2\)"),
        (dict(indices=[0.5]), "indices must be ints"),
        (dict(indices=torch.tensor([[0]])), "1-D integer tensor"),
        (dict(bitmask=torch.zeros(2, 4, dtype=torch.int32, device="meta")), "bitmask is on meta"),
        (dict(backend="cpu"), "backend must be one of"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    args = dict(logits=torch.zeros(2, 100), bitmask=torch.zeros(2, 4, dtype=torch.int32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        apply_token_bitmask_(**args)


def test_native_cpu_loop_rejects_bad_buffers():
    """The C++ loop is called with checked inputs, but it checks again: never a crash."""
    import numpy as np

    from toolken.kernels._bitmask_cpu import apply_token_bitmask_cpu as native

    x = np.zeros((2, 70), np.int32)
    mask = np.zeros((2, 3), np.int32)
    for args, err in [
        ((x, mask, np.array([2]), 0), IndexError),
        ((x, mask, np.array([-1]), 0), IndexError),
        ((x[:, ::2], mask, np.array([0]), 0), ValueError),
        ((x.astype(np.float32), mask, np.array([0]), 0), ValueError),
        ((x.astype(np.int64), mask, np.array([0]), 0), ValueError),
        ((x[0], mask, np.array([0]), 0), ValueError),
    ]:
        with pytest.raises(err):
            native(*args)
    ro = x.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        native(ro, mask, np.array([0]), 0)
    native(x, mask[:, :0], np.array([1, 1]), 7)  # an empty mask disallows every token of row 1
    assert (x[1] == 7).all() and (x[0] == 0).all()
