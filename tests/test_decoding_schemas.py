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
from toolken.decoding import ToolCallLogitsProcessor
from toolken.generation import parse_tool_calls

from test_decoding import Nudge, tiny_llama

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
    """Walk every tool; returns (finished calls, invalid finished calls as (tool, raw, error))."""
    nudge = Nudge(tok, eos_boost=12.0)  # end the turn after the call, mostly
    finished, invalid = 0, []
    for start in range(0, len(names), BATCH):
        batch = names[start:start + BATCH]
        for name, row in zip(batch, walk(model, tok, batch, seed + start, nudge)):
            r = parse_tool_calls(row, tok, model, strict=False)
            called = [c.name for c in r.tool_calls] + [c.name for c in r.invalid]
            called += [r.incomplete.name] if r.incomplete else []
            assert called[0] == name and set(called) <= set(batch)  # parallel calls may follow
            finished += len(r.tool_calls) + len(r.invalid)
            invalid += [(c.name, c.raw, c.error) for c in r.invalid]
    return finished, invalid


def uses_one_of(schema):
    if isinstance(schema, dict):
        return "oneOf" in schema or any(uses_one_of(v) for v in schema.values())
    return isinstance(schema, list) and any(uses_one_of(v) for v in schema)


def run(tokenizer, tools, seed):
    """Extend a tiny model with `tools`, walk each one; (compiled, not compiled, finished, invalid)."""
    model, tok = extended_with(tokenizer, tools)
    names = toolken.registry(model).names
    failed = ToolCallLogitsProcessor(tok, model).precompile(model.config.vocab_size)
    assert all(n in str(e) for n, e in failed.items())  # the error names the tool
    names = [n for n in names if n not in failed]
    return (names, len(failed), *check_walks(model, tok, names, seed))


def test_seal_tools_sample(smollm2_tokenizer, data_dir):
    tools = random.Random(0).sample(list(seal_tools(data_dir)), SAMPLE)
    names, not_compiled, finished, invalid = run(smollm2_tokenizer, tools, 0)
    assert not_compiled == 0 and invalid == []  # Seal-Tools schemas are plain typed objects
    assert finished >= 0.8 * len(names), (finished, len(names))


def test_maskbench_function_schemas_sample(smollm2_tokenizer, data_dir):
    tools = random.Random(1).sample(maskbench_tools(data_dir), SAMPLE)
    names, not_compiled, finished, invalid = run(smollm2_tokenizer, tools, 1)
    assert invalid == []
    assert finished >= 0.5 * len(names), (finished, len(names), not_compiled)


@pytest.mark.slow
def test_every_seal_tool(smollm2_tokenizer, data_dir):
    names, _, finished, invalid = run(smollm2_tokenizer, seal_tools(data_dir), 2)
    print(f"Seal-Tools: {finished}/{len(names)} walks finished a call, {len(invalid)} invalid")
    assert invalid == []
    assert finished >= 0.8 * len(names)


@pytest.mark.slow
def test_every_compiling_maskbench_function_schema(smollm2_tokenizer, data_dir):
    tools = maskbench_tools(data_dir)
    names, not_compiled, finished, invalid = run(smollm2_tokenizer, tools, 3)
    print(f"MaskBench Glaive/BFCL: {len(names)} compiled ({not_compiled} did not), {finished} walks finished "
          f"a call, {len(invalid)} invalid")
    assert invalid == []
    assert finished >= 0.5 * len(names)


@pytest.mark.slow
def test_maskbench_one_of_schemas(smollm2_tokenizer, data_dir):
    """oneOf compiles only when its branches provably exclude each other (else a GrammarError),
    so no generated value can match two branches."""
    tools = [t for t in maskbench_tools(data_dir) if uses_one_of(t.parameters)]
    names, not_compiled, finished, invalid = run(smollm2_tokenizer, tools, 4)
    print(f"MaskBench oneOf schemas: {len(names)} compiled ({not_compiled} did not), {finished} finished, "
          f"{len(invalid)} invalid: {invalid[:3]}")
    assert invalid == []
