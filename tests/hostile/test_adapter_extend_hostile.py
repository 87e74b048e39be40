"""Hostile adapters, failing saves and mismatched inputs for `toolken.extend`, `save`, `load` and
`merge` (issue 18): every failure is a `ToolkenError` subclass whose message names the file,
field, tensor, tool or token at fault, and afterwards the model's parameters and config, the
tokenizer's vocabulary and every byte of the adapter directory are exactly as they were."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
import re
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import toolken
import toolken.adapter as adapter_mod
from toolken import ToolSet
from toolken import rows as rows_lib
from toolken.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from toolken.errors import AdapterError, ExtendError, ToolkenError
from tiny import tiny_llama

TOOLS = ToolSet.from_openai([
    {"name": "get_weather", "description": "Get the current weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    {"name": "search", "description": "Search the web", "parameters": {"type": "object", "properties": {}}},
])


# ------------------------------------------------------------------------------------------
# snapshots: model, tokenizer, directory
# ------------------------------------------------------------------------------------------
def model_state(model):
    return {
        "params": {k: v.detach().clone() for k, v in model.named_parameters(remove_duplicate=False)},
        "buffers": {k: v.detach().clone() for k, v in model.named_buffers()},
        "grad": {k: v.requires_grad for k, v in model.named_parameters()},
        "toolken": copy.deepcopy(getattr(model.config, "toolken", None)),
        "vocab_size": model.config.vocab_size,
        "rows": toolken.tool_rows(model),
        "hooks": len(model.get_input_embeddings()._forward_hooks),
    }


def assert_model_unchanged(model, before):
    after = model_state(model)
    assert after["params"].keys() == before["params"].keys()
    for k, v in before["params"].items():
        assert after["params"][k].shape == v.shape and torch.equal(after["params"][k], v), k
    assert all(torch.equal(after["buffers"][k], v) for k, v in before["buffers"].items())
    for key in ("grad", "toolken", "vocab_size", "hooks"):
        assert after[key] == before[key], key
    assert after["rows"] is before["rows"]


def tok_state(tok):
    return len(tok), dict(tok.get_vocab()), {i: str(t) for i, t in tok.added_tokens_decoder.items()}


def dir_state(path):
    """Every file under `path`, with its bytes and mode (directories too, as None)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = pathlib.Path(root, name)
            out[str(p.relative_to(path))] = (None if p.is_dir() else p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


def assert_untouched(model, m_before, tok, t_before, directory=None, d_before=None):
    assert_model_unchanged(model, m_before)
    assert tok_state(tok) == t_before
    if directory is not None:
        assert dir_state(directory) == d_before


# ------------------------------------------------------------------------------------------
# an adapter, and crafting changes to it
# ------------------------------------------------------------------------------------------
@pytest.fixture
def base(tiny_tokenizer):
    return tiny_llama(len(tiny_tokenizer), hidden=16, layers=1, intermediate=32)


@pytest.fixture
def saved(base, tiny_tokenizer, tmp_path):
    """(directory, extended model, its tokenizer): two tools, rows moved away from their init."""
    model, tok = toolken.extend(copy.deepcopy(base), copy.deepcopy(tiny_tokenizer), TOOLS, init="description")
    with torch.no_grad():
        toolken.tool_rows(model).input.add_(0.25)
        toolken.tool_rows(model).output.sub_(0.5)
    out = tmp_path / "adapter"
    toolken.save(model, tok, out)
    return out, model, tok


def read_meta(directory):
    return json.loads((directory / ADAPTER_CONFIG).read_text())


def write_meta(directory, meta):
    (directory / ADAPTER_CONFIG).write_text(json.dumps(meta))


def rewrite_weights(directory, tensors):
    """Replace the weights and recompute the checksum, as a crafted adapter would."""
    save_file(tensors, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    meta = read_meta(directory)
    meta["weights_sha256"] = hashlib.sha256((directory / ADAPTER_WEIGHTS).read_bytes()).hexdigest()
    write_meta(directory, meta)


def expect_load_refused(directory, base, tok, match, error=AdapterError):
    """`load` fails with `error` matching `match`, and nothing changed anywhere."""
    m0, t0, d0 = model_state(base), tok_state(tok), dir_state(directory)
    with pytest.raises(error, match=match):
        toolken.load(base, tok, directory)
    assert_untouched(base, m0, tok, t0, directory, d0)


def loaded_rows(directory, base, tok):
    model, _ = toolken.load(copy.deepcopy(base), copy.deepcopy(tok), directory, trainable="tool_rows")
    rows = toolken.tool_rows(model)
    return rows.input.detach().clone(), rows.output.detach().clone()


# ------------------------------------------------------------------------------------------
# 1. load: checked before touched
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [7, -330], ids=["past-the-base", "existing-token-ids"])
def test_crafted_token_ids_are_refused_before_anything_changes(saved, base, tiny_tokenizer, shift):
    """Registry and weights agree (checksum recomputed) on ids the base would not assign: refused
    by the dry run, the tokenizer does not grow, and the good adapter still loads afterwards."""
    directory, model, _ = saved
    good = dir_state(directory)
    good_rows = loaded_rows(directory, base, tiny_tokenizer)
    meta = read_meta(directory)
    n0 = len(tiny_tokenizer)
    for t in meta["registry"]["tools"]:
        t["token_id"] += shift
    write_meta(directory, meta)
    tensors = load_file(str(directory / ADAPTER_WEIGHTS))
    tensors["token_ids"] = tensors["token_ids"] + shift
    rewrite_weights(directory, tensors)
    expect_load_refused(directory, base, tiny_tokenizer,
                        rf"{re.escape(str(directory))}: cannot load this adapter onto this base: tool 'get_weather': token "
                        rf"'<<get_weather>>' would get id {n0} on this tokenizer, but its rows are for id {n0 + shift}")
    assert len(tiny_tokenizer) == n0
    # the same base objects then take the good adapter
    for rel, (data, _mode) in good.items():
        (directory / rel).write_bytes(data)
    loaded, ltok = toolken.load(base, tiny_tokenizer, directory, trainable="tool_rows")
    assert len(ltok) == n0 + 2
    rows = toolken.tool_rows(loaded)
    assert torch.equal(rows.input, good_rows[0]) and torch.equal(rows.output, good_rows[1])
    assert torch.equal(rows.input, toolken.tool_rows(model).input)


def test_crafted_token_string_is_refused(saved, base, tiny_tokenizer):
    directory, _, _ = saved
    meta = read_meta(directory)
    meta["registry"]["tools"][1]["token"] = "<<other>>"
    write_meta(directory, meta)
    expect_load_refused(directory, base, tiny_tokenizer,
                        rf"{ADAPTER_CONFIG}: field 'registry\.tools\[1\]\.token' is '<<other>>', but token_format "
                        r"'<<\{name\}>>' makes '<<search>>' for tool 'search'")


def _set(path, value):
    def edit(meta):
        *parents, last = path
        d = meta
        for p in parents:
            d = d[p]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return edit


DELETE = object()

CONFIG_CASES = [
    ("hidden_size", _set(["hidden_size"], "sixty-four"), r"field 'hidden_size' must be a positive integer, got str 'sixty-four'"),
    ("hidden_size_missing", _set(["hidden_size"], DELETE), r"field 'hidden_size' is missing \(expected a positive integer\)"),
    ("hidden_size_float", _set(["hidden_size"], 16.0), r"field 'hidden_size' must be a positive integer, got float 16\.0"),
    ("hidden_size_zero", _set(["hidden_size"], 0), r"field 'hidden_size' must be a positive integer, got 0"),
    ("tied", _set(["tied"], "no"), r"field 'tied' must be true or false, got str 'no'"),
    ("base_vocab_size_bool", _set(["base_vocab_size"], True), r"field 'base_vocab_size' must be a positive integer, got True"),
    ("base_vocab_size_negative", _set(["base_vocab_size"], -1), r"field 'base_vocab_size' must be a positive integer, got -1"),
    ("base_fingerprint", _set(["base_fingerprint"], None), r"field 'base_fingerprint' must be a string, got NoneType None"),
    ("format_version_str", _set(["format_version"], "1"), r"field 'format_version' must be an integer, got str '1'"),
    ("format_version_2", _set(["format_version"], 2), r"unsupported adapter format_version 2"),
    ("weights_sha256", _set(["weights_sha256"], 5), r"field 'weights_sha256' must be a SHA-256 hex digest, got int 5"),
    ("model_type", _set(["model_type"], ["llama"]), r"field 'model_type' must be a string or null, got list"),
    ("registry_list", _set(["registry"], []), r"field 'registry' must be an object, got list"),
    ("token_format", _set(["registry", "token_format"], "<<tool>>"),
     r"field 'registry\.token_format' is invalid: token_format must contain '\{name\}' exactly once"),
    ("registry_fingerprint", _set(["registry", "base_fingerprint"], "0" * 16),
     r"field 'registry\.base_fingerprint' is '0000000000000000' but the adapter's base_fingerprint is"),
    ("tools_missing", _set(["registry", "tools"], DELETE), r"field 'registry\.tools' is missing"),
    ("tools_empty", _set(["registry", "tools"], []), r"field 'registry\.tools' is empty"),
    ("tool_not_object", _set(["registry", "tools", 0], "get_weather"), r"field 'registry\.tools\[0\]' must be an object, got str"),
    ("tool_name", _set(["registry", "tools", 0, "name"], 5), r"field 'registry\.tools\[0\]\.name' must be a string, got int 5"),
    ("tool_token_id_str", _set(["registry", "tools", 0, "token_id"], "400"),
     r"field 'registry\.tools\[0\]\.token_id' must be a non-negative integer, got str '400'"),
    ("tool_token_id_negative", _set(["registry", "tools", 1, "token_id"], -2),
     r"field 'registry\.tools\[1\]\.token_id' must be a non-negative integer, got -2"),
    ("tool_description", _set(["registry", "tools", 0, "description"], 3),
     r"field 'registry\.tools\[0\]\.description' must be a string, got int 3"),
    ("tool_init", _set(["registry", "tools", 0, "init"], None), r"field 'registry\.tools\[0\]\.init' must be a string"),
    ("tool_parameters", _set(["registry", "tools", 0, "parameters"], {"type": "array"}),
     r"registry\.tools\[0\]: tool 'get_weather': .*object"),
    ("tool_bad_name", _set(["registry", "tools", 0, "name"], "bad\u202ename"), r"registry\.tools\[0\]: .*"),
]


@pytest.mark.parametrize("edit, message", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_wrong_config_fields_name_file_and_field(saved, base, tiny_tokenizer, edit, message):
    directory, _, _ = saved
    meta = read_meta(directory)
    edit(meta)
    write_meta(directory, meta)
    expect_load_refused(directory, base, tiny_tokenizer, rf"{re.escape(str(directory / ADAPTER_CONFIG))}: {message}")


def test_duplicate_tools_and_ids(saved, base, tiny_tokenizer):
    directory, _, _ = saved
    meta = read_meta(directory)
    meta["registry"]["tools"][1]["token_id"] = meta["registry"]["tools"][0]["token_id"]
    write_meta(directory, meta)
    expect_load_refused(directory, base, tiny_tokenizer,
                        r"field 'registry\.tools\[1\]\.token_id' .* of tool 'search' is also the id of another tool")
    meta = read_meta(directory)
    meta["registry"]["tools"][1] = dict(meta["registry"]["tools"][0], token_id=meta["registry"]["tools"][0]["token_id"] + 1)
    write_meta(directory, meta)
    expect_load_refused(directory, base, tiny_tokenizer, r"field 'registry\.tools\[1\]\.name' 'get_weather': the tool is listed twice")


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", r"an adapter config must be a JSON object, got list"),
    ("{not json", r"corrupt adapter config \(JSONDecodeError"),
    (b"\xff\xfe{", r"corrupt adapter config \(UnicodeDecodeError"),
])
def test_config_not_an_object(saved, base, tiny_tokenizer, text, message):
    directory, _, _ = saved
    p = directory / ADAPTER_CONFIG
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    expect_load_refused(directory, base, tiny_tokenizer, rf"{re.escape(str(p))}: {message}")


def _tensor_case(name, edit, message):
    return pytest.param(edit, message, id=name)


@pytest.mark.parametrize("edit, message", [
    _tensor_case("float-token-ids", lambda t: t.update(token_ids=t["token_ids"].float()),
                 r"tensor 'token_ids' has dtype torch\.float32, expected an integer dtype"),
    _tensor_case("nan-row", lambda t: t["input"].__setitem__((0, 3), float("nan")), r"tensor 'input' holds NaN or infinite"),
    _tensor_case("inf-prior", lambda t: t["prior_input"].__setitem__((1, 0), float("inf")),
                 r"tensor 'prior_input' holds NaN or infinite"),
    _tensor_case("int-rows", lambda t: t.update(output=t["output"].long()),
                 r"tensor 'output' has dtype torch\.int64, expected a floating point dtype"),
    _tensor_case("missing-output", lambda t: t.pop("output"), r"tensor 'output' has shape None, expected \(2, 16\)"),
    _tensor_case("wide-input", lambda t: t.update(input=torch.zeros(2, 17)), r"tensor 'input' has shape \(2, 17\), expected \(2, 16\)"),
    _tensor_case("bad-prior-output", lambda t: t.update(prior_output=torch.zeros(3, 16)),
                 r"tensor 'prior_output' has shape \(3, 16\), expected \(2, 16\)"),
    _tensor_case("unknown-tensor", lambda t: t.update(extra=torch.zeros(1)), r"unexpected tensor 'extra'"),
    _tensor_case("other-ids", lambda t: t.update(token_ids=t["token_ids"].flip(0).contiguous()),
                 r"token ids in the weights do not match the registry"),
])
def test_crafted_tensors_are_refused(saved, base, tiny_tokenizer, edit, message):
    directory, _, _ = saved
    tensors = load_file(str(directory / ADAPTER_WEIGHTS))
    edit(tensors)
    rewrite_weights(directory, tensors)
    expect_load_refused(directory, base, tiny_tokenizer, rf"{re.escape(str(directory / ADAPTER_WEIGHTS))}: {message}")


def test_adapter_files_that_are_directories_or_missing(saved, base, tiny_tokenizer):
    directory, _, _ = saved
    (directory / ADAPTER_WEIGHTS).unlink()
    (directory / ADAPTER_WEIGHTS).mkdir()
    expect_load_refused(directory, base, tiny_tokenizer, rf"{re.escape(str(directory / ADAPTER_WEIGHTS))}: is not a file")
    expect_load_refused(directory.parent / "nowhere", base, tiny_tokenizer, r"nowhere/toolken_adapter\.json: not found")


def test_remote_ref_in_the_registry_is_refused_offline(saved, base, tiny_tokenizer, counting_server):
    directory, _, _ = saved
    meta = read_meta(directory)
    meta["registry"]["tools"][0]["parameters"]["properties"]["city"] = {"$ref": counting_server.url("city.json")}
    write_meta(directory, meta)
    expect_load_refused(directory, base, tiny_tokenizer,
                        rf"{re.escape(str(directory / ADAPTER_CONFIG))}: registry\.tools\[0\]: tool 'get_weather': field "
                        r"'parameters\.properties\.city\.\$ref' \(JSON pointer /properties/city/\$ref\)")
    meta["registry"]["tools"][0]["parameters"]["$schema"] = counting_server.url("meta")
    meta["registry"]["tools"][0]["parameters"]["properties"]["city"] = {"type": "string"}
    write_meta(directory, meta)
    loaded, _ = toolken.load(copy.deepcopy(base), copy.deepcopy(tiny_tokenizer), directory)  # a remote $schema is read offline
    assert toolken.registry(loaded).tools["get_weather"].parameters["$schema"] == counting_server.url("meta")
    assert counting_server.count == 0, counting_server.requests


def test_load_onto_an_extended_or_mismatched_base(saved, base, tiny_tokenizer):
    directory, model, tok = saved
    expect_load_refused(directory, model, tiny_tokenizer, r"the base model is already extended")
    n0 = len(tiny_tokenizer)
    expect_load_refused(directory, base, tok, rf"adapter expects a base tokenizer of {n0} tokens, got {n0 + 2}")
    with pytest.raises(AdapterError, match=r"unknown trainable='rows'"):
        toolken.load(base, tiny_tokenizer, directory, trainable="rows")


def test_failure_while_committing_a_load_rolls_back(saved, base, tiny_tokenizer, monkeypatch):
    directory, _, _ = saved
    m0, t0, d0 = model_state(base), tok_state(tiny_tokenizer), dir_state(directory)

    def boom(*a, **k):
        raise RuntimeError("injected failure after the rows were written")

    monkeypatch.setattr(rows_lib, "install", boom)
    with pytest.raises(RuntimeError, match="injected"):
        toolken.load(base, tiny_tokenizer, directory, trainable="tool_rows")
    assert_untouched(base, m0, tiny_tokenizer, t0, directory, d0)


def test_extend_rollback_restores_spare_rows_written_in_place(tiny_tokenizer, monkeypatch):
    """With a padded embedding nothing is resized: the tool rows are written into the existing
    matrix, and a failure must put those rows back too."""
    model = tiny_llama(len(tiny_tokenizer) + 64, hidden=16, layers=1, intermediate=32)
    m0, t0 = model_state(model), tok_state(tiny_tokenizer)

    def boom(*a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(rows_lib, "update_prior", boom)
    with pytest.raises(RuntimeError, match="injected"):
        toolken.extend(model, tiny_tokenizer, TOOLS)
    assert_untouched(model, m0, tiny_tokenizer, t0)


# ------------------------------------------------------------------------------------------
# 2. save: the previous adapter survives any failure
# ------------------------------------------------------------------------------------------
def retrained(model):
    with torch.no_grad():
        toolken.tool_rows(model).input.mul_(-1.0)
    return model


def assert_only_adapter_left(directory, extra=()):
    assert sorted(os.listdir(directory)) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS, *extra])
    assert [p for p in os.listdir(directory.parent) if p.startswith(".")] == []


def test_config_write_failure_keeps_the_old_adapter(saved, base, tiny_tokenizer, monkeypatch):
    """Disk full while writing the config, after the new weights were written: the old adapter
    is byte for byte intact, loads, and gives the same rows."""
    directory, model, tok = saved
    before, rows_before = dir_state(directory), loaded_rows(directory, base, tiny_tokenizer)
    real = pathlib.Path.write_text
    written = []

    def full(self, *a, **k):
        if self.name == ADAPTER_CONFIG:
            assert (self.parent / ADAPTER_WEIGHTS).stat().st_size > 0  # the new weights are already written
            written.append(self)
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(AdapterError, match=rf"{re.escape(str(directory))}: cannot save the adapter \(OSError: .*No space left on device\); "
                                           "any previous adapter there is unchanged"):
        toolken.save(retrained(model), tok, directory)
    monkeypatch.undo()
    assert written and dir_state(directory) == before
    assert_only_adapter_left(directory)
    after = loaded_rows(directory, base, tiny_tokenizer)
    assert torch.equal(after[0], rows_before[0]) and torch.equal(after[1], rows_before[1])


def test_failure_while_switching_files_is_undone(saved, base, tiny_tokenizer, monkeypatch):
    """The new config cannot be moved in (after the old pair went aside and the new weights came
    in): every move is undone."""
    directory, model, tok = saved
    before = dir_state(directory)
    real = os.rename

    def flaky(src, dst):
        if pathlib.Path(dst) == directory / ADAPTER_CONFIG and "new" in pathlib.Path(src).parts[-2:]:
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", flaky)
    with pytest.raises(AdapterError, match=r"cannot save the adapter \(OSError: .*Input/output error\)"):
        toolken.save(retrained(model), tok, directory)
    monkeypatch.undo()
    assert dir_state(directory) == before
    assert_only_adapter_left(directory)
    toolken.load(copy.deepcopy(base), copy.deepcopy(tiny_tokenizer), directory)


def test_weights_write_failure_in_a_new_directory_leaves_nothing(saved, monkeypatch):
    _, model, tok = saved
    target = saved[0].parent / "new-adapter"

    def broken(tensors, path, metadata=None):
        pathlib.Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(adapter_mod, "save_file", broken)
    with pytest.raises(AdapterError, match=rf"{re.escape(str(target))}: cannot save the adapter"):
        toolken.save(model, tok, target)
    assert not target.exists()
    assert [p for p in os.listdir(target.parent) if p.startswith(".")] == []


def test_a_directory_in_the_way(saved, monkeypatch):
    directory, model, tok = saved
    (directory / ADAPTER_CONFIG).unlink()
    (directory / ADAPTER_CONFIG).mkdir()
    (directory / ADAPTER_CONFIG / "keep.txt").write_text("mine")
    before = dir_state(directory)
    with pytest.raises(AdapterError, match=rf"{re.escape(str(directory / ADAPTER_CONFIG))}: is a directory, where the adapter file"):
        toolken.save(model, tok, directory)
    assert dir_state(directory) == before
    a_file = directory.parent / "a_file"
    a_file.write_text("x")
    with pytest.raises(AdapterError, match=rf"{re.escape(str(a_file))}: exists and is not a directory"):
        toolken.save(model, tok, a_file)
    assert a_file.read_text() == "x"


def test_save_over_an_adapter_keeps_other_files_and_normal_modes(saved, base, tiny_tokenizer):
    directory, model, tok = saved
    (directory / "notes.txt").write_text("keep me")
    old = os.umask(0o027)
    try:
        toolken.save(retrained(model), tok, directory)
        fresh = toolken.save(model, tok, directory.parent / "fresh" / "adapter")
    finally:
        os.umask(old)
    assert_only_adapter_left(directory, extra=["notes.txt"])
    assert (directory / "notes.txt").read_text() == "keep me"
    for d in (directory, fresh):
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            assert stat.S_IMODE((d / name).stat().st_mode) == 0o666 & ~0o027, (d, name)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o777 & ~0o027
    rows = loaded_rows(directory, base, tiny_tokenizer)
    assert torch.equal(rows[0], toolken.tool_rows(model).input)


# ------------------------------------------------------------------------------------------
# merge
# ------------------------------------------------------------------------------------------
def test_merge_failure_leaves_nothing_under_the_final_name(saved, monkeypatch):
    _, model, tok = saved
    target = saved[0].parent / "merged"

    def broken(path, **kwargs):
        pathlib.Path(path, "model.safetensors").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model, "save_pretrained", broken)
    with pytest.raises(AdapterError, match=rf"{re.escape(str(target))}: cannot write the merged checkpoint \(OSError: .*No space left"):
        toolken.merge(model, tok, target)
    assert not target.exists()
    assert [p for p in os.listdir(target.parent) if p.startswith(".")] == []


def test_merge_into_an_empty_directory_and_onto_a_file(saved):
    _, model, tok = saved
    target = saved[0].parent / "empty"
    target.mkdir()
    old = os.umask(0o022)
    try:
        toolken.merge(model, tok, target)
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert toolken.registry(AutoModelForCausalLM.from_pretrained(target)).names == TOOLS.names
    a_file = saved[0].parent / "a_file"
    a_file.write_text("x")
    with pytest.raises(AdapterError, match=rf"{re.escape(str(a_file))}: exists and is not a directory"):
        toolken.merge(model, tok, a_file)


# ------------------------------------------------------------------------------------------
# 3. extend: a tokenizer that does not belong to the model
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["description", "mean"])
def test_llama3_tokenizer_on_a_smollm2_sized_model_is_refused(llama3_tokenizer, init):
    model = tiny_llama(49152, hidden=8, layers=1, intermediate=16)
    m0, t0 = model_state(model), tok_state(llama3_tokenizer)
    with pytest.raises(ExtendError, match=r"the tokenizer has 128256 tokens but the model's input embedding has 49152 "
                                          r"rows, and 78848 of the tokenizer's own tokens have no row \(first: .*, id 49152\)"
                                          r": this tokenizer does not belong to this model"):
        toolken.extend(model, llama3_tokenizer, TOOLS, init=init)
    assert_untouched(model, m0, llama3_tokenizer, t0)


def test_smollm2_tokenizer_on_a_tiny_model_is_refused(smollm2_tokenizer, tiny_tokenizer):
    model = tiny_llama(len(tiny_tokenizer), hidden=16, layers=1, intermediate=32)
    tok = copy.deepcopy(smollm2_tokenizer)
    m0, t0 = model_state(model), tok_state(tok)
    with pytest.raises(ExtendError, match=rf"the tokenizer has 49152 tokens but the model's input embedding has "
                                          rf"{len(tiny_tokenizer)} rows, and {49152 - len(tiny_tokenizer)} of"):
        toolken.extend(model, tok, TOOLS)
    assert_untouched(model, m0, tok, t0)


@pytest.mark.parametrize("pad", [64, 128], ids=["padded-64", "multiple-of-128"])
def test_padded_embedding_is_legitimate(tiny_tokenizer, pad):
    """More rows than tokens (Qwen, Phi-3, Pythia pad the embedding): the spare rows are used."""
    n0 = len(tiny_tokenizer)
    rows = (n0 // pad + 1) * pad
    model = tiny_llama(rows, hidden=16, layers=1, intermediate=32)
    model, tok = toolken.extend(model, tiny_tokenizer, TOOLS)
    assert model.get_input_embeddings().weight.shape[0] == rows
    assert toolken.registry(model).tool_token_ids == [n0, n0 + 1]


def test_tokens_added_after_the_model_was_built_are_legitimate(tiny_tokenizer):
    """A tokenizer with a few more tokens than rows, all of them added tokens (say special
    tokens the user added before resizing): extend resizes, their rows are zero."""
    n0 = len(tiny_tokenizer)
    model = tiny_llama(n0, hidden=16, layers=1, intermediate=32)
    tiny_tokenizer.add_special_tokens({"additional_special_tokens": ["<|image|>", "<|audio|>"]})
    assert len(tiny_tokenizer) == n0 + 2
    model, tok = toolken.extend(model, tiny_tokenizer, TOOLS, trainable=None)
    assert toolken.registry(model).tool_token_ids == [n0 + 2, n0 + 3]
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == n0 + 4 and not emb[n0:n0 + 2].any() and emb[n0 + 2:].abs().all(dim=-1).all()


# ------------------------------------------------------------------------------------------
# 4. extend: no tools
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tools", [[], ToolSet(), ToolSet.from_openai([]), ()], ids=["list", "ToolSet", "from_openai", "tuple"])
def test_no_tools_is_refused(tiny_tokenizer, tools):
    model = tiny_llama(len(tiny_tokenizer), hidden=16, layers=1, intermediate=32)
    m0, t0 = model_state(model), tok_state(tiny_tokenizer)
    with pytest.raises(ExtendError, match=r"no tools to add: `tools` is empty"):
        toolken.extend(model, tiny_tokenizer, tools)
    assert_untouched(model, m0, tiny_tokenizer, t0)
    assert isinstance(ExtendError("x"), ToolkenError)


def test_no_tools_on_an_extended_model_only_reinstalls_rows(tiny_tokenizer):
    """An extended model keeps its tools: `extend(model, tok, [])` adds nothing and, with
    trainable='tool_rows', makes the existing tool rows trainable again."""
    model, tok = toolken.extend(tiny_llama(len(tiny_tokenizer), hidden=16, layers=1, intermediate=32),
                                tiny_tokenizer, TOOLS, trainable=None)
    reg, n = toolken.registry(model).to_dict(), len(tok)
    assert toolken.tool_rows(model) is None
    model, tok = toolken.extend(model, tok, [])
    assert toolken.registry(model).to_dict() == reg and len(tok) == n
    assert toolken.tool_rows(model) is not None
    assert toolken.tool_rows(model).token_ids.tolist() == toolken.registry(model).tool_token_ids
