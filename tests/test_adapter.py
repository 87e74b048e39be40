"""toolken.save / load / merge: round trips, mismatched bases, corrupt files, atomic writes."""
import copy
import json
import os

import pytest
import torch
from tiny import tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

import toolken
from toolken import AdapterError, ToolSet
from toolken.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS

TOOLS = ToolSet.from_openai([
    {"name": "get_weather", "description": "Get the current weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    {"name": "search", "description": "Search the web", "parameters": {"type": "object", "properties": {}}},
])


def base(vocab, tied, seed=0, hidden=32):
    return tiny_llama(vocab, seed=seed, tied=tied, hidden=hidden, layers=1)


def trained(tok, tied, trainable="tool_rows"):
    b = base(len(tok), tied)
    model, tok2 = toolken.extend(copy.deepcopy(b), copy.deepcopy(tok), TOOLS, init="description", trainable=trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1.0)
    ids = torch.tensor([[3, 4, *toolken.registry(model).tool_token_ids]])
    for _ in range(2):
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return b, model, tok2, ids


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("trainable", ["tool_rows", None])
def test_save_load_identical_logits(tiny_tokenizer, tmp_path, tied, trainable):
    b, model, tok, ids = trained(tiny_tokenizer, tied)
    toolken.save(model, tok, tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS])
    loaded, ltok = toolken.load(copy.deepcopy(b), copy.deepcopy(tiny_tokenizer), tmp_path, trainable=trainable)
    assert toolken.registry(loaded).to_dict() == toolken.registry(model).to_dict()
    with torch.no_grad():
        a, c = model(ids).logits, loaded(ids).logits
    if trainable == "tool_rows":
        assert torch.equal(a, c)
    else:
        torch.testing.assert_close(a, c, rtol=0, atol=1e-5)  # plain weights vs spliced rows
    assert ltok("<<search>>", add_special_tokens=False)["input_ids"] == [toolken.registry(loaded).id_of("search")]
    for k in ("input", "output"):
        x, y = toolken.prior(model)[k], toolken.prior(loaded)[k]
        assert (x is None and y is None) or torch.equal(x, y)


def test_merge_is_a_plain_checkpoint(tiny_tokenizer, tmp_path):
    b, model, tok, ids = trained(tiny_tokenizer, tied=False)
    out = toolken.merge(model, tok, tmp_path / "merged")
    m2 = AutoModelForCausalLM.from_pretrained(out)
    t2 = AutoTokenizer.from_pretrained(out)
    assert toolken.registry(m2).token_ids == toolken.registry(model).token_ids
    assert t2("<<get_weather>>", add_special_tokens=False)["input_ids"] == [toolken.registry(m2).id_of("get_weather")]
    with torch.no_grad():
        torch.testing.assert_close(m2(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    assert not [k for k in m2.state_dict() if "toolken" in k]
    with pytest.raises(AdapterError, match="not empty"):
        toolken.merge(model, tok, out)


def test_mismatched_base_is_refused(tiny_tokenizer, smollm2_tokenizer, tmp_path):
    b, model, tok, _ = trained(tiny_tokenizer, tied=False)
    toolken.save(model, tok, tmp_path)
    with pytest.raises(AdapterError, match="hidden size 32"):
        toolken.load(base(len(tiny_tokenizer), False, hidden=16), copy.deepcopy(tiny_tokenizer), tmp_path)
    with pytest.raises(AdapterError, match="tied=False"):
        toolken.load(base(len(tiny_tokenizer), True), copy.deepcopy(tiny_tokenizer), tmp_path)
    with pytest.raises(AdapterError, match="base tokenizer of"):
        toolken.load(base(len(tiny_tokenizer), False), copy.deepcopy(tok), tmp_path)  # already extended
    with pytest.raises(AdapterError, match="base tokenizer of 340 tokens"):
        toolken.load(base(len(smollm2_tokenizer), False), copy.deepcopy(smollm2_tokenizer), tmp_path)
    toolken.load(copy.deepcopy(b), copy.deepcopy(tiny_tokenizer), tmp_path)  # the right base still loads


def test_fingerprint_detects_same_size_different_vocab(tiny_tokenizer, tmp_path):
    from toolken.registry import vocab_fingerprint

    b, model, tok, _ = trained(tiny_tokenizer, tied=False)
    toolken.save(model, tok, tmp_path)
    meta = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    assert meta["base_fingerprint"] == vocab_fingerprint(tiny_tokenizer)
    meta["base_fingerprint"] = meta["registry"]["base_fingerprint"] = "0" * 16  # as saved from another base
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps(meta))
    snap = {k: v.clone() for k, v in b.state_dict().items()}
    t = copy.deepcopy(tiny_tokenizer)
    with pytest.raises(AdapterError, match="fingerprint mismatch"):
        toolken.load(b, t, tmp_path)
    assert len(t) == len(tiny_tokenizer)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in snap.items())


def test_corrupt_and_truncated_files(tiny_tokenizer, tmp_path):
    b, model, tok, _ = trained(tiny_tokenizer, tied=False)
    toolken.save(model, tok, tmp_path)
    w = tmp_path / ADAPTER_WEIGHTS
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match="checksum mismatch"):
        toolken.load(copy.deepcopy(b), copy.deepcopy(tiny_tokenizer), tmp_path)
    w.write_bytes(data)
    (tmp_path / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(AdapterError, match="corrupt adapter config"):
        toolken.load(copy.deepcopy(b), copy.deepcopy(tiny_tokenizer), tmp_path)
    with pytest.raises(AdapterError, match="not found"):
        toolken.load(copy.deepcopy(b), copy.deepcopy(tiny_tokenizer), tmp_path / "nowhere")


def test_failed_save_leaves_no_partial_file(tiny_tokenizer, tmp_path, monkeypatch):
    import toolken.adapter as adapter_mod

    b, model, tok, _ = trained(tiny_tokenizer, tied=False)

    def broken(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(adapter_mod, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        toolken.save(model, tok, tmp_path)
    assert os.listdir(tmp_path) == []


def test_trained_modules_travel_with_the_rows_and_are_checked(tiny_tokenizer, tmp_path):
    """Base modules the registry lists as trained (train_tool_tokens' top layers) are saved with the
    rows and restored by load; a registry entry that is not a prefix, or a module tensor the
    registry does not list, is refused naming the field or tensor."""
    from safetensors.torch import load_file, save_file

    from toolken.adapter import _sha256
    from toolken.registry import set_registry

    b, model, tok, ids = trained(tiny_tokenizer, tied=True)
    reg = toolken.registry(model)
    reg.trained_modules = ("model.norm.",)
    set_registry(model, reg)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    toolken.save(model, tok, tmp_path)
    loaded, _ = toolken.load(copy.deepcopy(b), copy.deepcopy(tiny_tokenizer), tmp_path)
    assert torch.equal(loaded.model.norm.weight, model.model.norm.weight)
    with torch.no_grad():  # plain weights vs spliced rows, as in test_save_load_identical_logits
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    meta = json.loads((tmp_path / ADAPTER_CONFIG).read_text())
    meta["registry"]["trained_modules"] = ["model.norm"]
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="registry.trained_modules"):
        toolken.load(copy.deepcopy(b), copy.deepcopy(tiny_tokenizer), tmp_path)
    del meta["registry"]["trained_modules"]
    tensors = load_file(str(tmp_path / ADAPTER_WEIGHTS))
    save_file(tensors, str(tmp_path / ADAPTER_WEIGHTS))
    meta["weights_sha256"] = _sha256(tmp_path / ADAPTER_WEIGHTS)
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="unexpected tensor 'module.model.norm.weight'"):
        toolken.load(copy.deepcopy(b), copy.deepcopy(tiny_tokenizer), tmp_path)
