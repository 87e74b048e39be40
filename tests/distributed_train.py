"""Train a tiny tool-extended Llama with `toolken.Trainer`, as a user would under `accelerate launch`
(DDP or FSDP, CPU + gloo), or in one process for the reference run of tests/test_distributed.py.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_train.py --tokenizer DIR --out DIR --mode tool_rows
    accelerate launch --num_processes 2 --use_fsdp --fsdp_version 1 ... (the same arguments)

(tests/test_distributed.py has the exact flags.)

Writes to --out (process 0): the adapter (``adapter/``, `toolken.Trainer.save_adapter`) and
``result.json`` (losses, world size, how the model was wrapped).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

import toolken  # noqa: E402
from toolken import data  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_loss_api import CONVERSATIONS, TOOLS  # noqa: E402

MODES = ("tool_rows", "lora", "full")


def base_model(tokenizer, tie: bool = False, seed: int = 0) -> transformers.LlamaForCausalLM:
    """A random 2-layer Llama (hidden 16) with the tokenizer's vocabulary, the same for a seed."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tie, pad_token_id=tokenizer.pad_token_id)
    return transformers.LlamaForCausalLM(config)


def build(tokenizer, mode: str, tie: bool = False, seed: int = 0):
    """`base_model` extended with TOOLS: trainable tool rows, LoRA + PEFT's trainable tokens on the
    tool rows, or every parameter."""
    model = base_model(tokenizer, tie, seed)
    trainable = {"tool_rows": "tool_rows", "lora": None, "full": "full"}[mode]
    model, tokenizer = toolken.extend(model, copy.deepcopy(tokenizer), TOOLS, init="description", trainable=trainable)
    if mode == "lora":
        import peft  # optional dependency (the "train" extra)

        ids = toolken.registry(model).tool_token_ids
        model = peft.get_peft_model(model, peft.LoraConfig(
            r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
            trainable_token_indices=ids if tie else {"embed_tokens": ids, "lm_head": ids}))
    return model, tokenizer


def records(tokenizer, model) -> list:
    """4 records with TL-Training weights (key tokens weighted up): one global batch."""
    reg = toolken.registry(model)
    out = data.trajectory_records(tokenizer, reg, CONVERSATIONS, policy="tl_training")
    out += data.memorization_records(tokenizer, reg, tools=["get_time", "send_email"], policy="tl_training")
    return out


def train(model, tokenizer, recs: list, out_dir: str, per_device_batch: int, steps: int) -> toolken.Trainer:
    args = transformers.TrainingArguments(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=per_device_batch, optim="sgd",
        learning_rate=0.5, lr_scheduler_type="constant", weight_decay=0.0, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    trainer = toolken.Trainer(model=model, args=args, train_dataset=data.ToolDataset(recs), processing_class=tokenizer,
                              prior_lambda=1e-2)
    trainer.train()
    return trainer


def allow_fsdp_on_cpu() -> None:
    """Let accelerate run FSDP on the CPU, for this test only.

    accelerate turns ``--use_fsdp`` into FSDP only on accelerators: on the CPU its state stays
    ``DistributedType.MULTI_CPU`` (``AcceleratorState.__init__`` sets ``FSDP`` only for MULTI_GPU,
    MULTI_XPU, ...), so the Trainer would silently train with DDP. torch's FSDP itself runs on the
    CPU with gloo; this turns the state to FSDP after accelerate built it (and its device to
    ``cpu``, since FSDP1 refuses ``device_id=cpu:0`` for CPU parameters), so that accelerate's own
    FSDP preparation (its plugin, auto-wrap policy, ``use_orig_params``) runs unchanged.
    """
    from accelerate.state import AcceleratorState, PartialState  # only under --use_fsdp
    from accelerate.utils import DistributedType

    init = AcceleratorState.__init__

    def fsdp_init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            self.device = torch.device("cpu")

    AcceleratorState.__init__ = fsdp_init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True, help="a saved tokenizer folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=MODES, default="tool_rows")
    parser.add_argument("--tie", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not torch.cuda.is_available():
        allow_fsdp_on_cpu()
    torch.set_num_threads(1)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
    model, tokenizer = build(tokenizer, args.mode, args.tie)
    recs = records(tokenizer, model)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainer = train(model, tokenizer, recs, os.path.join(args.out, "trainer"), len(recs) // world, args.steps)
    trainer.save_adapter(os.path.join(args.out, "adapter"))
    if trainer.is_world_process_zero():
        report(trainer, args.out)


def report(trainer: toolken.Trainer, out: str) -> None:
    """result.json: the logged losses, the world size, how the model was wrapped, which
    parameters trained."""
    wrapped = trainer.model_wrapped
    info = {"losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "world_size": trainer.args.world_size, "distributed_type": str(trainer.accelerator.distributed_type),
            "wrapped": type(wrapped).__name__,
            "fsdp_units": sum(1 for m in wrapped.modules() if "FullyShardedDataParallel" in type(m).__name__
                              or "FSDP" in type(m).__name__)}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main()
