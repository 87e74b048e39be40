"""The `toolken` command line: argument errors, bench pass-through, `python -m toolken`, and a
`--quick` demo run end to end on a tiny random model."""
import gzip
import json
import os
import subprocess
import sys

import pytest

from tiny import tiny_llama
from toolken import cli


def _fails(argv, capsys, match):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, match", [
    ([], "the following arguments are required"),
    (["frobnicate"], "invalid choice"),
    (["eval"], "the following arguments are required"),
    (["eval", "retrieval", "--init", "random,bogus"], "--init 'random,bogus'"),
    (["eval", "retrieval", "--steps", "zero"], "invalid int value"),
    (["eval", "retrieval", "--steps", "0"], "--steps must be positive"),
    (["eval", "retrieval", "--tools", "/nonexistent/tools.json"], "/nonexistent/tools.json: [Errno 2] No such file"),
    (["bench", "nonsense"], "invalid choice"),
    (["demo", "--queries", "q.jsonl"], "--queries needs --tools"),
    (["demo", "--init", "magic"], "--init 'magic'"),
    (["demo", "--steps", "-3"], "--steps must be positive"),
    (["demo", "--memorization", "document,poem"], "--memorization 'document,poem'"),
    (["eval", "retrieval", "--memorization", ""], "--memorization ''"),
])
def test_argument_errors(argv, match, capsys):
    _fails(argv, capsys, match)


def test_bad_model_dir_is_a_clean_error(tmp_path, capsys):
    tools = tmp_path / "t.json"
    tools.write_text(json.dumps([{"name": "a", "description": "x"}]))
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"query": "use a", "calling": [{"api": "a"}]}))
    _fails(["eval", "retrieval", "--model", str(tmp_path / "missing"), "--tools", str(tools), "--train", str(q),
            "--test", str(q)], capsys, "not a directory")
    _fails(["eval", "retrieval", "--model", str(tmp_path), "--tools", str(tools), "--train", str(q), "--test", str(q)],
           capsys, "cannot load a causal LM")


def test_bench_runs_the_installed_script_from_any_folder(tmp_path):
    """`toolken bench NAME args` runs the installed `toolken.benchmarks.bench_NAME` with the args."""
    out = subprocess.run([sys.executable, "-m", "toolken", "bench", "loss", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and "--sizes" in out.stdout, out.stderr[-2000:]


def test_bench_fails_fast_without_its_data(tmp_path):
    out = subprocess.run([sys.executable, "-m", "toolken", "bench", "grammar", "--n", "2", "--data",
                          str(tmp_path / "missing.jsonl.gz")], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode != 0 and "missing.jsonl.gz" in out.stderr


def test_python_dash_m_toolken(tmp_path):
    # cwd outside the checkout, so the installed package runs, not the source tree
    out = subprocess.run([sys.executable, "-m", "toolken", "--help"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0 and "{demo,eval,bench,serve}" in out.stdout


@pytest.mark.parametrize("quick", [True, False])
def test_demo_uses_the_bundled_seal_tools_subset(monkeypatch, quick):
    """The demo's data ships with the package: it never needs the shared data folder."""
    from toolken import demo

    monkeypatch.setattr(cli, "seal_tools_dir", lambda: None)
    data = demo.demo_data(demo.DemoConfig(quick=quick))
    sizes = demo.QUICK_SIZES if quick else demo.BUNDLE_SIZES
    assert (len(data.train), len(data.test)) == (sizes["train"], sizes["test"])
    assert len(data.tools) >= sizes["tools"] and "Seal-Tools subset shipped with toolken" in data.source
    assert all(g in data.tools for q in data.train + data.test for g in q.gold)
    assert demo.demo_data(demo.DemoConfig(quick=quick)).test == data.test  # seeded


def test_bundle_is_what_build_bundle_makes(data_dir, tmp_path):
    from toolken import demo

    demo.build_bundle(os.path.join(data_dir, "seal-tools"), tmp_path)
    for name in ("tool", "dev", "test_in_domain"):
        with gzip.open(tmp_path / f"{name}.jsonl.gz", "rt") as a, gzip.open(demo.BUNDLE / f"{name}.jsonl.gz", "rt") as b:
            assert a.read() == b.read(), name


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer):
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(len(smollm2_tokenizer), tied=True, eos_token_id=smollm2_tokenizer.eos_token_id,
               bos_token_id=smollm2_tokenizer.bos_token_id).save_pretrained(d)
    smollm2_tokenizer.save_pretrained(d)
    return d


def test_quick_demo_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    from toolken import demo

    bundled = demo.demo_data(demo.DemoConfig(quick=True))
    queries = bundled.train[:10]  # a few real queries and the tools they call
    names = {g for q in queries for g in q.gold}
    tools = [t.to_openai() for t in bundled.tools if t.name in names]
    (tmp_path / "tools.json").write_text(json.dumps(tools))
    (tmp_path / "q.jsonl").write_text("\n".join(
        json.dumps({"id": q.id, "query": q.text, "calling": [{"api": g} for g in q.gold]}) for q in queries))
    out = tmp_path / "adapter"
    code = cli.main(["demo", "--quick", "--model", str(tiny_model_dir), "--tools", str(tmp_path / "tools.json"),
                     "--queries", str(tmp_path / "q.jsonl"), "--steps", "30", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    printed = capsys.readouterr().out
    for step in ("[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6]", "[6/6]", "adapter saved to"):
        assert step in printed, printed
    assert "BM25" in printed and "tool tokens, after" in printed
    assert (out / "toolken_rows.safetensors").is_file() and (out / "toolken_adapter.json").is_file()
    # the saved adapter loads back onto the base model
    import toolken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import torch

    base, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    norm = base.model.norm.weight.detach().clone()
    model, tok = toolken.load(base, tok, out)  # the tool rows, the trained top layers and the final norm
    assert toolken.registry(model).names == [t["function"]["name"] for t in tools]
    assert "model.norm." in toolken.registry(model).trained_modules and not torch.equal(model.model.norm.weight, norm)
    # a second run reuses every cached state
    assert list((tmp_path / "cache" / "layer_states").iterdir())


def test_unexpected_failure_is_one_line_not_a_traceback(monkeypatch, capsys):
    def boom(args):
        raise ValueError("accelerate is required when loading a GGUF file")

    monkeypatch.setattr(cli, "_cmd_demo", boom)
    with pytest.raises(SystemExit) as e:
        cli.main(["demo"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "ValueError: accelerate is required" in err and "Traceback" not in err


def test_serve_without_vllm_or_model_is_a_clean_error(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        _fails(["serve", str(tmp_path)], capsys, "pip install 'toolken[vllm]'")
    else:
        _fails(["serve", str(tmp_path / "missing")], capsys, "not a directory")


def test_demo_with_tools_alone_trains_on_memorization(tiny_model_dir, tmp_path, capsys):
    """No --queries: no test queries to score, training runs on memorization (and synthetic requests without --quick)."""
    from toolken import demo

    tools = [t.to_openai() for t in list(demo.demo_data(demo.DemoConfig(quick=True)).tools)[:4]]
    (tmp_path / "tools.json").write_text(json.dumps(tools))
    code = cli.main(["demo", "--quick", "--model", str(tiny_model_dir), "--tools", str(tmp_path / "tools.json"),
                     "--steps", "3", "--out", str(tmp_path / "adapter"), "--cache-dir", str(tmp_path / "cache")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "no test queries" in printed and "for 3 steps" in printed
    meta = json.loads((tmp_path / "adapter" / "toolken_adapter.json").read_text())
    assert "model.norm." in meta["registry"]["trained_modules"]
