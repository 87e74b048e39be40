"""Real tool schemas under the processor: Seal-Tools tools and the Glaive/BFCL-style schemas of
MaskBench. No language model: each step's "logits" are `Nudge`'s JSON preference plus Gumbel
noise (sampling), the processor masks them, the argmax is appended — a random walk through the
constrained space, many tools per batch. Every call that finishes must validate against its
tool's schema (`parse_tool_calls` is strict); calls the step limit cut must come back as
incomplete, never invalid.

The default run takes a fixed sample; `-m slow` runs every Seal-Tools tool and every MaskBench
Glaive/BFCL schema that is a valid tool schema and compiles.
"""
import copy
import gzip
import json
import os
import random

import pytest
import torch

import toolken
from toolken import Tool, ToolSet, ToolSpecError
from toolken.decoding import ToolCallLogitsProcessor, parse_tool_calls

from test_decoding import Nudge, one_thread, tiny_llama  # noqa: F401 (one_thread: autouse fixture)

BATCH = 48
SAMPLE = 16  # tools per default-run test
MAX_STEPS = 160
TOOL_CATEGORIES = ("Glaiveai2K", "BFCL")


def seal_tools(data_dir):
    return ToolSet.from_seal_tools(os.path.join(data_dir, "seal-tools", "tool.jsonl.gz"))


def maskbench_tools(data_dir):
    """MaskBench schemas from function-calling sources that are valid tool schemas."""
    out, names = [], set()
    with gzip.open(os.path.join(data_dir, "maskbench-dev.jsonl.gz"), "rt") as f:
        for i, line in enumerate(f):
            rec = json.loads(line)
            if not rec["category"].startswith(TOOL_CATEGORIES):
                continue
            try:
                tool = Tool(f"mb{i}_{rec['category']}", rec.get("description") or "", rec["schema"])
            except ToolSpecError:
                continue
            if tool.name not in names:
                names.add(tool.name)
                out.append(tool)
    return out


def extended_with(tokenizer, tools):
    tok = copy.deepcopy(tokenizer)
    model = tiny_llama(len(tok) + len(tools))
    return toolken.extend(model, tok, tools, init="random", trainable=None, seed=0)


def walk(model, tok, names, seed, nudge):
    """One constrained random walk per tool (the first step is forced to that tool's token)."""
    reg = toolken.registry(model)
    V = model.config.vocab_size
    proc = ToolCallLogitsProcessor(tok, model, tools=names, mode="required")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.full((len(names), 2), tok.eos_token_id)
    ids[:, 0] = 1
    done = torch.zeros(len(names), dtype=torch.bool)
    for step in range(MAX_STEPS):
        gumbel = -torch.log(-torch.log(torch.rand(len(names), V, generator=gen).clamp_min(1e-20)))
        scores = nudge(ids, gumbel)
        if step == 0:
            scores[torch.arange(len(names)), torch.tensor([reg.id_of(n) for n in names])] = 1e9
        nxt = proc(ids, scores).argmax(-1)
        nxt[done] = tok.eos_token_id
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == tok.eos_token_id
        if done.all():
            break
    assert proc.off_rows == 0
    return ids[:, 2:]


def check_walks(model, tok, names, seed):
    nudge = Nudge(tok, eos_boost=12.0)  # end the turn after the call, mostly
    finished = 0
    for start in range(0, len(names), BATCH):
        batch = names[start:start + BATCH]
        for name, row in zip(batch, walk(model, tok, batch, seed + start, nudge)):
            r = parse_tool_calls(row, tok, model)  # strict: an invalid finished call raises
            called = [c.name for c in r.tool_calls] + ([r.incomplete.name] if r.incomplete else [])
            assert called[0] == name and set(called) <= set(batch)  # parallel calls may follow
            finished += len(r.tool_calls)
    return finished


def run(tokenizer, tools, seed):
    """Extend a tiny model with `tools`, walk each one; (compiled, not compiled, finished)."""
    model, tok = extended_with(tokenizer, tools)
    names = toolken.registry(model).names
    failed = ToolCallLogitsProcessor(tok, model).precompile(model.config.vocab_size)
    assert all(n in str(e) for n, e in failed.items())  # the error names the tool
    names = [n for n in names if n not in failed]
    return names, len(failed), check_walks(model, tok, names, seed)


def test_seal_tools_sample(smollm2_tokenizer, data_dir):
    names, not_compiled, finished = run(smollm2_tokenizer, random.Random(0).sample(list(seal_tools(data_dir)), SAMPLE), 0)
    assert not_compiled == 0  # Seal-Tools schemas are plain typed objects
    assert finished >= 0.8 * len(names), (finished, len(names))


def test_maskbench_function_schemas_sample(smollm2_tokenizer, data_dir):
    tools = random.Random(1).sample(maskbench_tools(data_dir), SAMPLE)
    names, not_compiled, finished = run(smollm2_tokenizer, tools, 1)
    assert finished >= 0.5 * len(names), (finished, len(names), not_compiled)


@pytest.mark.slow
def test_every_seal_tool(smollm2_tokenizer, data_dir):
    names, _, finished = run(smollm2_tokenizer, seal_tools(data_dir), 2)
    print(f"Seal-Tools: {finished}/{len(names)} walks finished a call; every finished call validated")
    assert finished >= 0.8 * len(names)


@pytest.mark.slow
def test_every_compiling_maskbench_function_schema(smollm2_tokenizer, data_dir):
    names, not_compiled, finished = run(smollm2_tokenizer, maskbench_tools(data_dir), 3)
    print(f"MaskBench Glaive/BFCL: {len(names)} compiled ({not_compiled} did not), {finished} walks finished "
          f"a call; every finished call validated")
    assert finished >= 0.5 * len(names)
