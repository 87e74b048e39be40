"""Multi-process training as users run it: `toolken.Trainer` under ``accelerate launch`` with 2 CPU
processes (gloo), DDP and FSDP, against one process training on the same global batch.

Each launch runs tests/distributed_train.py (a tiny Llama with SmolLM2's vocabulary, extended
with 3 tools; 4 records with TL-Training weights, 2 per process; 3 SGD steps). After the same
steps on the same global batch, the tool rows and the logged losses equal the one-process run's,
and the adapter written by `Trainer.save_adapter` (process 0; gathered under FSDP) loads into a
fresh model (`toolken.load`) with the one-process model's `toolken.retrieve` scores.

Tolerances: rows within 1e-6 absolute + 1e-5 relative (measured: at most 1e-7; they differ only
by the order of float32 sums across processes, while training moved them by 0.03-0.1), logged
losses within relative 1e-5, retrieve log-probabilities within 1e-4 (1e-6 for the one-process
adapter loaded back).

FSDP on the CPU: accelerate applies ``--use_fsdp`` only on accelerators (on the CPU it silently
trains with DDP); distributed_train.py turns accelerate's state to FSDP (see
`allow_fsdp_on_cpu`), and the test checks that the model really was wrapped in FSDP units.

Also here: `toolken.weighted_loss(..., vocab_parallel=...)` on 2 spawned gloo processes, each
holding half of the LM head, equals the one-process loss and gradients.
"""
import copy
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import toolken
from distributed_train import base_model, build, records, train
from test_loss_api import tiny_batch, tiny_extended
from toolken.kernels import VocabParallelOptions
from toolken.rows import tool_rows

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_train.py")
LAUNCH_TIMEOUT_S = 400
STEPS = 3
QUERIES = ["Is it raining in Oslo?", "What time is it in Tokyo?", "Email Ann the report"]
ROWS_TOL = dict(rtol=1e-5, atol=1e-6)

DDP = ["--multi_gpu"]  # accelerate's multi-process launcher (torchrun); on a machine without GPUs it runs gloo
FSDP_COMMON = ["--use_fsdp", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
               "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer", "--fsdp_state_dict_type", "FULL_STATE_DICT",
               "--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"]
FSDP1 = FSDP_COMMON + ["--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_use_orig_params", "true"]
FSDP2 = FSDP_COMMON + ["--fsdp_version", "2", "--fsdp_reshard_after_forward", "true"]

# (launcher, mode[-tied]): the default run keeps DDP and FSDP1 with tool rows; the rest is @slow
CASES = [
    pytest.param("ddp", "tool_rows", id="ddp-tool_rows"),
    pytest.param("fsdp1", "tool_rows", id="fsdp1-tool_rows"),
    pytest.param("ddp", "lora", id="ddp-lora", marks=pytest.mark.slow),
    pytest.param("ddp", "full", id="ddp-full", marks=pytest.mark.slow),
    pytest.param("fsdp1", "lora", id="fsdp1-lora", marks=pytest.mark.slow),
    pytest.param("fsdp1", "full", id="fsdp1-full", marks=pytest.mark.slow),
    pytest.param("fsdp2", "tool_rows", id="fsdp2-tool_rows", marks=pytest.mark.slow),
    pytest.param("fsdp2", "lora", id="fsdp2-lora", marks=pytest.mark.slow),
    pytest.param("fsdp2", "full", id="fsdp2-full", marks=pytest.mark.slow),
    pytest.param("fsdp1", "tool_rows-tied", id="fsdp1-tool_rows-tied", marks=pytest.mark.slow),
    pytest.param("fsdp2", "tool_rows-tied", id="fsdp2-tool_rows-tied", marks=pytest.mark.slow),
]
FLAGS = {"ddp": DDP, "fsdp1": FSDP1, "fsdp2": FSDP2}
WRAPPER = {"ddp": "DistributedDataParallel", "fsdp1": "FullyShardedDataParallel", "fsdp2": "FSDP"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACCELERATE_", "FSDP_", "PYTEST_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    return env


@pytest.fixture(scope="module")
def tokenizer_dir(smollm2_tokenizer, tmp_path_factory):
    """SmolLM2's tokenizer saved as a plain folder (the children load it in a second)."""
    path = tmp_path_factory.mktemp("tokenizer")
    smollm2_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def reference(smollm2_tokenizer, tmp_path_factory):
    """One process, the whole global batch per step, per mode: (trained model, tokenizer,
    adapter folder, logged losses); built on first use."""
    runs = {}

    def get(mode, tie):
        if (mode, tie) not in runs:
            out = tmp_path_factory.mktemp(f"single-{mode}")
            model, tok = build(smollm2_tokenizer, mode, tie)
            recs = records(tok, model)
            trainer = train(model, tok, recs, str(out / "trainer"), len(recs), STEPS)
            adapter = trainer.save_adapter(out / "adapter")
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            runs[mode, tie] = (trainer.model, tok, adapter, losses)
        return runs[mode, tie]

    return get


def launch(kind, mode, tie, tokenizer_dir, out):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           *FLAGS[kind], SCRIPT, "--tokenizer", tokenizer_dir, "--out", str(out), "--mode", mode,
           "--steps", str(STEPS)] + (["--tie"] if tie else [])
    proc = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    with open(os.path.join(out, "result.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("kind,mode", CASES)
def test_two_processes_match_one(kind, mode, tokenizer_dir, reference, smollm2_tokenizer, tmp_path):
    mode, tie = mode.removesuffix("-tied"), mode.endswith("-tied")
    result = launch(kind, mode, tie, tokenizer_dir, tmp_path)
    assert result["world_size"] == 2 and result["wrapped"].startswith(WRAPPER[kind]), result
    if kind.startswith("fsdp"):  # really sharded: the root and one unit per decoder layer
        assert "FSDP" in result["distributed_type"] and result["fsdp_units"] >= 3, result
    model, tok, ref_adapter, ref_losses = reference(mode, tie)
    assert result["losses"] == pytest.approx(ref_losses, rel=1e-5)
    got, want = load_file(tmp_path / "adapter" / "toolken_rows.safetensors"), load_file(ref_adapter / "toolken_rows.safetensors")
    roles = ("input",) if tie else ("input", "output")
    assert got.keys() == want.keys() and set(roles) <= set(got)
    assert torch.equal(got["token_ids"], want["token_ids"])
    for key in roles + ("prior_input",):
        torch.testing.assert_close(got[key], want[key], **ROWS_TOL)
    for key in roles:  # training moved the rows far more than the tolerance (~0.03-0.1)
        assert (want[key] - want[f"prior_{key}"]).abs().max() > 1000 * ROWS_TOL["atol"]
    if mode == "tool_rows":  # the model differs from the base by its tool rows only
        ref_scores = toolken.retrieve(model.eval(), tok, QUERIES, k=3)
        for adapter, tol in ((ref_adapter, 1e-6), (tmp_path / "adapter", 1e-4)):
            fresh, fresh_tok = toolken.load(base_model(smollm2_tokenizer, tie), copy.deepcopy(smollm2_tokenizer), adapter)
            scores = toolken.retrieve(fresh.eval(), fresh_tok, QUERIES, k=3)
            for s, r in zip(scores, ref_scores):
                assert [n for n, _ in s] == [n for n, _ in r]
                assert [v for _, v in s] == pytest.approx([v for _, v in r], abs=tol)


# --- vocabulary-parallel loss: 2 spawned gloo processes, each computing half of the head -------
VP_TIMEOUT_S = 300


def _vp_params(model):
    """The parameters whose gradients the vocabulary-parallel test compares."""
    rows = tool_rows(model)
    if rows is not None:
        return {"rows.input": rows.input, "rows.output": rows.output}
    return {"lm_head": model.lm_head.weight, "embed": model.model.embed_tokens.weight,
            "q_proj": model.model.layers[0].self_attn.q_proj.weight}


def _vp_slice(rank, cut, vocab):
    return VocabParallelOptions(0, cut) if rank == 0 else VocabParallelOptions(cut, vocab)


def _vp_worker(rank, port, cases, out_dir):
    """One process of the group: each case's loss and gradients with this process's half of the head."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {}
        for name, (model, batch, cut) in cases.items():
            params = _vp_params(model)
            vocab = model.lm_head.weight.shape[0]
            loss = toolken.weighted_loss(model, **batch, vocab_parallel=_vp_slice(rank, cut, vocab))
            grads = torch.autograd.grad(loss, list(params.values()))
            results[name] = (loss.detach(), dict(zip(params, grads)))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def test_vocab_parallel_loss_matches_one_process(smollm2_tokenizer, tmp_path):
    """`weighted_loss(..., vocab_parallel=...)` with the head split at `cut` (one tool row on
    process 0, two on process 1): every process gets the one-process loss and the gradients of the
    decoder, the input rows and the embeddings; each gets the head's (or the output rows')
    gradient for its own vocabulary slice, zero elsewhere."""
    cases = {}
    for trainable in ("tool_rows", "full"):
        model, tok = tiny_extended(smollm2_tokenizer, trainable=trainable)
        vocab = model.lm_head.weight.shape[0]
        ids = sorted(toolken.registry(model).tool_token_ids)
        assert ids == list(range(vocab - 3, vocab))
        cases[trainable] = (model, tiny_batch(tok, model), vocab - 2)
    port = _free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_vp_worker, args=(rank, port, cases, str(tmp_path))) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(VP_TIMEOUT_S)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0], "vocab-parallel processes failed or hung"
    shards = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, (model, batch, cut) in cases.items():
        params = _vp_params(model)
        loss = toolken.weighted_loss(model, **batch)
        want = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        rows, vocab = tool_rows(model), model.lm_head.weight.shape[0]
        for rank, shard in enumerate(shards):
            got_loss, got = shard[name]
            torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-5, atol=1e-6)
            for key, g in got.items():
                expected = want[key].clone()
                if key in ("rows.output", "lm_head"):  # the head's gradient stays on its slice
                    vocab_ids = rows.token_ids if key == "rows.output" else torch.arange(vocab)
                    opts = _vp_slice(rank, cut, vocab)
                    expected[(vocab_ids < opts.start) | (vocab_ids >= opts.end)] = 0
                    assert expected.abs().sum() > 0
                torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-6, msg=f"{name} {key} rank {rank}")
