"""Calls decoded under canonical whitespace are written exactly as training writes them
(`toolken.format.format_arguments`: json.dumps with ensure_ascii=False), byte for byte."""
import json

import pytest
import torch
from transformers import LogitsProcessorList

import toolken
from test_decoding import Nudge, extended
from toolken.decoding import ToolCallLogitsProcessor
from toolken.format import format_arguments
from toolken.generation import left_pad_prompts, parse_tool_calls, render_prompt

PROMPTS = ["Weather in Paris?", "Add 2 and 40", "What time is it in Tokyo?", "ping the server"]


@pytest.fixture(scope="module")
def ext(smollm2_tokenizer):
    return extended(smollm2_tokenizer)


def argument_texts(ids, tokenizer, tool_token_ids, eos):
    """The raw text after each tool token, up to the next tool token or the end of the turn."""
    texts, current = [], None
    for t in ids + [eos]:
        if t in tool_token_ids or t == eos:
            if current is not None:
                texts.append(tokenizer.decode(current, skip_special_tokens=False, clean_up_tokenization_spaces=False))
            current = [] if t in tool_token_ids else None
            if t == eos:
                break
        elif current is not None:
            current.append(t)
    return texts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_canonical_calls_equal_the_training_format(ext, seed):
    model, tok = ext
    eos = tok.eos_token_id
    proc = ToolCallLogitsProcessor(tok, model, mode="required", eos_token_id=eos, whitespace="canonical")
    prompts = [render_prompt(tok, [{"role": "user", "content": p}]) for p in PROMPTS]
    input_ids, mask = left_pad_prompts(model, prompts, eos)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=40, do_sample=True,
                             pad_token_id=eos, eos_token_id=eos,
                             logits_processor=LogitsProcessorList([Nudge(tok, eos_boost=12.0), proc]))
    tool_token_ids = set(toolken.registry(model).token_ids.values())
    checked = 0
    for row in out[:, input_ids.shape[1]:].tolist():
        result = parse_tool_calls(row, tok, model, eos_token_id=eos, strict=True)
        texts = argument_texts(row, tok, tool_token_ids, eos)
        for call, text in zip(result.tool_calls, texts):
            assert text == format_arguments(call.arguments) == json.dumps(call.arguments, ensure_ascii=False)
            checked += 1
    assert checked >= 2, "too few completed calls to check"
