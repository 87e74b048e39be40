"""toolken.top_layers: training tool tokens through the top K layers on cached activations.

The cached path against a plain forward and backward through the whole model (loss and every
gradient), which parameters training may change, the activation cache's reuse and invalidation,
LoRA merged and saved/loaded/merged to the same retrieval scores, and the `eval retrieval
--train-layers --lora-rank` command line on a tiny model."""
import copy
import json
import re

import pytest
import torch
from hypothesis import given, strategies as st
from safetensors import safe_open

import toolken
from tiny import tiny_llama
from toolken import cli
from toolken import activations as act
from toolken.adapter import ADAPTER_WEIGHTS, MODULE_PREFIX
from toolken.registry import find_registry
from toolken.rows import tool_rows
from toolken import top_layers as tl
from toolken.errors import DataError, NotExtendedError, ToolkenError
from toolken.generation import render_prompt

LAYERS = 3
TOOLS = toolken.ToolSet([toolken.Tool("get_weather", "Weather forecast for a city"),
                         toolken.Tool("convert_currency", "Convert money between currencies"),
                         toolken.Tool("send_email", "Send an email message")])
QUERIES = [("What's the weather in Paris?", "get_weather"), ("Convert 10 USD to EUR please", ["convert_currency"]),
           ("Send mail to bob", "send_email"), ("Rain in Oslo? Then mail me", ["get_weather", "send_email"])]


@pytest.fixture()
def extended(smollm2_tokenizer):
    """A tiny random Llama (3 layers, tied embeddings) extended with TOOLS, and its tokenizer."""
    tok = copy.deepcopy(smollm2_tokenizer)
    model = tiny_llama(len(tok), tied=True, layers=LAYERS)
    toolken.extend(model, tok, TOOLS, init="description")
    return model, tok


def reference_batch(model, prompts, examples):
    """input_ids / labels / loss_weights / attention_mask of the same examples as whole sequences
    (prompt + first gold tool token), labelled only at the tool token: what `toolken.weighted_loss`
    takes."""
    ids_of = toolken.registry(model).tool_token_ids
    seqs = [prompts[p] + [ids_of[g[0]]] for p, g in zip(examples.prompt.tolist(), examples.gold.tolist())]
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    weights, mask = torch.zeros(ids.shape), torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        labels[i, len(s) - 1] = s[-1]
        weights[i, len(s) - 1] = examples.weight[i]
    return ids, labels, weights, mask


def reference_tools_loss(model, prompts, examples):
    """The tools-only loss from plain whole-model forward passes: -log P(first gold tool) under a
    softmax over the tool tokens' logits at the prompt's last position."""
    tool_ids = torch.tensor(toolken.registry(model).tool_token_ids)
    losses = []
    for p, golds in zip(examples.prompt.tolist(), examples.gold.tolist()):
        logits = model(input_ids=torch.tensor([prompts[p]])).logits[0, -1, tool_ids]
        losses.append(-logits.log_softmax(-1)[golds[0]])
    w = examples.weight
    return (torch.stack(losses) * w).sum() / w.sum()


@pytest.mark.parametrize("path", ["shared-prefix", "generic"])
@pytest.mark.parametrize("loss", ["tools", "vocab"])
@pytest.mark.parametrize("k", [1, LAYERS], ids=["top-1", "all-layers"])
def test_cached_top_layers_give_the_full_models_loss_and_gradients(extended, k, loss, path, monkeypatch):
    """Both ways of running the top layers: Llama-style (`shared_prefix_top`: the prefix once
    per batch, the last layer at the last position) and any decoder's own forward."""
    model, tok = extended
    llama_style = act.supports_last_position(model.model, model.model.layers[-1])
    if path == "generic":
        monkeypatch.setattr(act, "supports_last_position", lambda dec, layer: False)
    prompts, examples, _ = tl.tool_token_examples(model, tok, QUERIES, ("document",), synthetic=1, query_weight=2.0,
                                                  synthetic_split=False)
    assert examples.gold.tolist()[3][:2] == [0, 2] and examples.weight.tolist()[:5] == [2.0, 2.0, 2.0, 2.0, 1.0]
    assert len(examples) == len(QUERIES) + len(TOOLS) + 2  # + one round of whole synthetic requests (3 tools)
    split = tl.tool_token_examples(model, tok, QUERIES, ("document",), synthetic=1)[1]
    assert len(split) == len(QUERIES) + len(TOOLS) + len(TOOLS)  # the default: each part its own example
    dec = model.model
    params = [*tool_rows(model).parameters(), *dec.norm.parameters(),
              *(p for layer in dec.layers[LAYERS - k:] for p in layer.parameters())]
    for p in params:
        p.requires_grad_(True)
    states = act.encode_layer_states(model, prompts, LAYERS - k, act.ActivationCache(), dtype=torch.float32,
                                    prefix_len=act.template_prefix_len(tok), show_progress=False)
    assert states.prefix.shape[0] >= 8  # the chat template's head is stored once
    assert llama_style  # the tiny model's layers take the shared-prefix path unless patched
    value = tl.tool_loss(model, states, examples, loss)
    grads = torch.autograd.grad(value, params)
    if loss == "vocab":
        ref = toolken.weighted_loss(model, *reference_batch(model, prompts, examples))
    else:
        ref = reference_tools_loss(model, prompts, examples)
    ref_grads = torch.autograd.grad(ref, params)
    torch.testing.assert_close(value, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-4)


def test_distillation_mixes_the_teacher_into_the_tools_loss(extended):
    """distill=1 is the cross-entropy to the teacher alone, distill=0 ignores it."""
    model, tok = extended
    uniform = lambda texts: (torch.arange(3).repeat(len(texts), 1), torch.full((len(texts), 3), 1 / 3))  # noqa: E731
    prompts, examples, _ = tl.tool_token_examples(model, tok, QUERIES, (), teacher=uniform)
    states = act.encode_layer_states(model, prompts, LAYERS - 1, act.ActivationCache(), show_progress=False)
    with torch.no_grad():
        logp = tl.tool_logits(model, act.top_hidden(model, states)).log_softmax(-1)
        assert torch.allclose(tl.tool_loss(model, states, examples, "tools", 1.0), -logp.mean(1).mean())
        plain = tl.tool_loss(model, states, tl.Examples(examples.prompt, examples.gold, examples.weight), "tools")
        assert torch.allclose(tl.tool_loss(model, states, examples, "tools", 0.0), plain)


@pytest.mark.parametrize("k, rank", [(0, 0), (1, 0), (2, 2)], ids=["rows-only", "top-1-full", "top-2-lora"])
def test_training_changes_only_the_top_layers_the_norm_and_the_tool_rows(extended, k, rank):
    model, tok = extended
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state_before = copy.deepcopy(model.state_dict())
    losses = []
    out = toolken.train_tool_tokens(model, tok, QUERIES, train_layers=k, lora_rank=rank, epochs=2, batch_size=4,
                                    lr=1e-2, layer_lr=1e-2, evaluate=lambda step, loss, m: losses.append(loss),
                                    show_progress=False)
    assert out is model and type(out).__name__ == "LlamaForCausalLM" and not hasattr(out, "peft_config")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    top = {f"model.layers.{i}." for i in range(LAYERS - k, LAYERS)}
    allowed = {n for n in before if n.startswith(tuple(top))} | ({"model.norm.weight"} if k else set())
    if rank:  # LoRA changes the linear layers, not the layer norms inside the layer
        allowed = {n for n in allowed if "layernorm" not in n} | ({"model.norm.weight"})
    assert changed == allowed | {"toolken_rows.input"}
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["toolken_rows.input"]
    # the checkpoint's embedding differs from before only in the tool tokens' rows
    ids = toolken.registry(model).tool_token_ids
    emb = model.state_dict()["model.embed_tokens.weight"]
    other = torch.ones(emb.shape[0], dtype=torch.bool)
    other[ids] = False
    assert torch.equal(emb[other], state_before["model.embed_tokens.weight"][other])
    assert not torch.equal(emb[ids], state_before["model.embed_tokens.weight"][ids])
    assert len(losses) == 2 and losses[-1] == losses[-1]  # step 0 (NaN) and the end


def count_calls(monkeypatch, module):
    calls = []
    forward = module.forward

    def counting(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        calls.append(hidden.shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(module, "forward", counting)
    return calls


def test_activation_cache_is_reused_and_invalidated(extended, tmp_path, monkeypatch):
    model, tok = extended
    prompts, _, _ = tl.tool_token_examples(model, tok, QUERIES, ("request",))
    P = act.template_prefix_len(tok)
    calls = count_calls(monkeypatch, model.model.layers[0])

    def encode(ps, cache):
        calls.clear()
        return act.encode_layer_states(model, ps, 2, cache, prefix_len=P, show_progress=False)

    first = encode(prompts, act.ActivationCache(tmp_path))
    assert calls == [1, len(prompts)]  # the prefix once, then one batch
    again = encode(prompts, act.ActivationCache(tmp_path))  # a new cache over the same folder
    assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(first.suffix, again.suffix))
    new = render_prompt(tok, [{"role": "user", "content": "a new question"}])
    encode(prompts + [new], act.ActivationCache(tmp_path))
    assert calls == [1, 1]  # only the new prompt runs
    with torch.no_grad():  # a layer above the cached one: the states still hold
        model.model.layers[2].mlp.down_proj.weight.mul_(1.5)
    encode(prompts, act.ActivationCache(tmp_path))
    assert calls == []
    with torch.no_grad():  # a layer below: every prompt runs again, and the states change
        model.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    changed = encode(prompts, act.ActivationCache(tmp_path))
    assert calls == [1, len(prompts)]
    assert not torch.equal(changed.suffix[0], first.suffix[0])
    # train_tool_tokens reuses the folder too: the lower layers do not run on the second call
    toolken.train_tool_tokens(model, tok, QUERIES, train_layers=1, memorization=("request",), max_steps=1,
                              cache_dir=tmp_path, show_progress=False)
    calls.clear()
    toolken.train_tool_tokens(model, tok, QUERIES, train_layers=1, memorization=("request",), max_steps=1,
                              cache_dir=tmp_path, show_progress=False)
    assert calls == []


def retrieved(model, tok):
    return toolken.retrieve(model, tok, [q for q, _ in QUERIES], k=3)


def assert_same_scores(got, want):
    for g, w in zip(got, want):
        assert [n for n, _ in g] == [n for n, _ in w]
        torch.testing.assert_close(torch.tensor([s for _, s in g]), torch.tensor([s for _, s in w]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rank", ["sentences", "query"])
def test_eval_ranking_from_cached_states_is_retrieves(extended, tmp_path, rank):
    """The eval scores test queries from cached states through the trained top layers; its
    ranking is `toolken.retrieve`'s, per sentence or whole."""
    from toolken import eval as ev
    from toolken.eval.experiment import ScoredPrompts, rank_by_states, eval_prompts

    model, tok = extended
    toolken.train_tool_tokens(model, tok, QUERIES, train_layers=2, epochs=2, batch_size=2, lr=1e-2, show_progress=False)
    test = [ev.Query(str(i), q, ("get_weather",)) for i, (q, _) in enumerate(QUERIES)]
    test.append(ev.Query("m", "Convert 5 EUR. Then mail the total to Ann! Is it raining?", ("send_email",)))
    prompts, owner = eval_prompts(tok, test, rank)
    assert len(prompts) == len(test) + (3 if rank == "sentences" else 0)  # "Rain in Oslo? Then mail me" is two
    states = act.encode_layer_states(model, prompts, LAYERS - 2, act.ActivationCache(tmp_path), show_progress=False)
    ours = rank_by_states(model, ScoredPrompts(states, owner), TOOLS, 3)
    theirs = toolken.retrieve(model, tok, [q.text for q in test], k=3, per_sentence=rank == "sentences")
    assert ours == [[n for n, _ in r] for r in theirs]


def test_lora_training_merges_and_round_trips_through_save_load_merge(extended, smollm2_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = extended
    untrained = retrieved(model, tok)
    toolken.train_tool_tokens(model, tok, QUERIES, train_layers=2, lora_rank=2, init="tool2vec", epochs=3,
                              batch_size=4, lr=1e-2, show_progress=False)
    trained = retrieved(model, tok)
    assert trained != untrained
    # 1. the whole model, merged: a plain checkpoint
    toolken.merge(model, tok, tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert_same_scores(retrieved(plain, AutoTokenizer.from_pretrained(tmp_path / "merged")), trained)
    # 2. toolken.save: the tool rows and the trained layers (the registry names them), onto a fresh base
    toolken.save(model, tok, tmp_path / "adapter")
    assert find_registry(model).trained_modules == ("model.layers.1.", "model.layers.2.", "model.norm.")
    stored = [k.removeprefix(MODULE_PREFIX) for k in safe_open(tmp_path / "adapter" / ADAPTER_WEIGHTS, "pt").keys()
              if k.startswith(MODULE_PREFIX)]
    assert sorted({k.split(".")[2] for k in stored if k.startswith("model.layers.")}) == ["1", "2"]
    assert "model.norm.weight" in stored and not any(k.startswith("model.layers.0.") for k in stored)
    base = tiny_llama(len(smollm2_tokenizer), tied=True, layers=LAYERS)
    loaded, loaded_tok = toolken.load(base, copy.deepcopy(smollm2_tokenizer), tmp_path / "adapter")
    assert_same_scores(retrieved(loaded, loaded_tok), trained)
    assert find_registry(loaded).trained_modules == find_registry(model).trained_modules  # saved again, kept
    toolken.merge(loaded, loaded_tok, tmp_path / "merged-again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged-again")
    assert_same_scores(retrieved(again, AutoTokenizer.from_pretrained(tmp_path / "merged-again")), trained)
    # 3. a base whose trained layers differ in shape is refused before anything changes
    other = tiny_llama(len(smollm2_tokenizer), tied=True, layers=LAYERS, intermediate=48)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(toolken.errors.AdapterError, match="trained module tensor 'model.layers.1.mlp"):
        toolken.load(other, copy.deepcopy(smollm2_tokenizer), tmp_path / "adapter")
    assert find_registry(other) is None
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())


def test_tool2vec_rows_hand_computed():
    fallback = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])  # mean norm (1 + 2 + 5) / 3
    hidden = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 4.0]])   # mean (2/3, 4/3)
    rows = tl.tool2vec_rows(hidden, [[0], [0], [1]], fallback)
    usage0 = torch.nn.functional.normalize(torch.tensor([1.0, 0.0]) - torch.tensor([2 / 3, 4 / 3]), dim=0)
    usage1 = torch.nn.functional.normalize(torch.tensor([-2 / 3, 8 / 3]), dim=0)
    torch.testing.assert_close(rows[0], fallback[0] + usage0 * 8 / 3)
    torch.testing.assert_close(rows[1], fallback[1] + usage1 * 8 / 3)
    assert torch.equal(rows[2], fallback[2])  # no query calls it


def test_centroid_rows_hand_computed():
    hidden = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [4.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    fallback = torch.tensor([[9.0, 9.0, 9.0], [9.0, 9.0, 9.0], [1.0, -1.0, 5.0]])
    rows = tl.centroid_rows(hidden, torch.tensor([0, 1, 0, 1]), 3, fallback)
    mu = hidden.mean(0)  # (1.5, 0.5, 1)
    u = mu / mu.norm()
    expect = torch.stack([torch.tensor([1.5, -0.5, 0.0]) * 2, torch.tensor([-1.5, 0.5, 0.0]) * 2, fallback[2]])
    expect = torch.nn.functional.normalize(expect - (expect @ u).unsqueeze(1) * u, dim=-1)
    torch.testing.assert_close(rows, expect)
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(rows @ u, torch.zeros(3), atol=1e-6, rtol=0)  # no per-tool bias along the mean


@given(st.integers(0, 2**31 - 1))
def test_fit_row_scale_is_the_grid_minimum(seed):
    g = torch.Generator().manual_seed(seed)
    hidden, rows = torch.randn(40, 8, generator=g), torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    target = torch.randint(0, 5, (40,), generator=g)
    s = tl.fit_row_scale(hidden, rows, target)
    losses = [torch.nn.functional.cross_entropy(hidden @ rows.T * c, target).item() for c in tl.SCALE_GRID]
    assert s in tl.SCALE_GRID and torch.nn.functional.cross_entropy(hidden @ rows.T * s, target).item() == min(losses)


def test_centroid_init_sets_the_rows_from_the_memorization_prompts(extended):
    """The default init: before the first step, each output row is the centroid of its tool's
    memorization prompts' final hidden states (through the untrained top layers), at the fitted norm."""
    model, tok = extended
    prompts, examples, _ = tl.tool_token_examples(model, tok, QUERIES, ("document", "request"))
    states = act.encode_layer_states(model, prompts, LAYERS - 1, act.ActivationCache(), show_progress=False)
    hidden = act.final_hidden(model, states)[len(QUERIES):]
    unit = tl.centroid_rows(hidden, torch.tensor([0, 1, 2, 0, 1, 2]), 3, tool_rows(model).output_rows)
    seen = []
    toolken.train_tool_tokens(model, tok, QUERIES, train_layers=1, synthetic=0, max_steps=1, show_progress=False,
                              memorization=("document", "request"),
                              evaluate=lambda step, loss, m: seen.append(tool_rows(m).output_rows.detach().clone()))
    norms = seen[0].norm(dim=-1)
    assert round(norms[0].item(), 4) in {round(c, 4) for c in tl.SCALE_GRID}
    torch.testing.assert_close(seen[0], unit * norms[0], atol=1e-5, rtol=1e-4)
    assert not torch.equal(seen[-1], seen[0])  # then trained


@pytest.mark.parametrize("kwargs, error, match", [
    ({"train_layers": LAYERS + 1}, ToolkenError, "train_layers must be an integer in 0..3"),
    ({"lora_rank": 2, "train_layers": 0}, ToolkenError, "lora_rank must be 0, or a positive integer with train_layers > 0"),
    ({"train_layers": 1, "init": "magic"}, ToolkenError, "init must be None, 'centroid' or 'tool2vec'"),
    ({"memorization": ()}, ToolkenError, "init='centroid' builds the rows from the memorization prompts"),
    ({"batch_size": 0}, ToolkenError, "batch_size must be a positive integer"),
    ({"memorization": ("poem",)}, DataError, "memorization: unknown phrasing 'poem'"),
    ({"queries": [("hello", "no_such_tool")]}, DataError, "queries[0]: tool 'no_such_tool' is not registered"),
    ({"queries": ["just a text"]}, DataError, "queries[0]: expected (text, tool name or names)"),
    ({"queries": [], "memorization": (), "synthetic": 0}, DataError, "no training examples"),
    ({"loss": "hinge"}, ToolkenError, "loss must be one of tools, vocab"),
    ({"distill": 0.5}, ToolkenError, "distill > 0 needs a teacher= and loss='tools'"),
    ({"distill": 2.0, "teacher": lambda texts: None}, ToolkenError, "distill must be a weight in [0, 1]"),
    ({"synthetic": -1}, ToolkenError, "synthetic must be a non-negative integer"),
    ({"synthetic": 0, "synthetic_style": "poem"}, DataError, "synthetic style must be one of"),
])
def test_option_errors_name_the_field(extended, kwargs, error, match):
    model, tok = extended
    kwargs = {"queries": QUERIES, **kwargs}
    with pytest.raises(error, match=re.escape(match)):
        toolken.train_tool_tokens(model, tok, kwargs.pop("queries"), show_progress=False, **kwargs)


def test_an_unextended_model_is_refused(smollm2_tokenizer):
    model = tiny_llama(len(smollm2_tokenizer), tied=True, layers=LAYERS)
    with pytest.raises(NotExtendedError):
        toolken.train_tool_tokens(model, smollm2_tokenizer, QUERIES, show_progress=False)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer):
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(len(smollm2_tokenizer), tied=True, layers=LAYERS, eos_token_id=smollm2_tokenizer.eos_token_id,
               bos_token_id=smollm2_tokenizer.bos_token_id).save_pretrained(d)
    smollm2_tokenizer.save_pretrained(d)
    return d


def test_eval_retrieval_cli_trains_top_layers_with_lora(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "tools.json").write_text(json.dumps([t.to_openai() for t in TOOLS]))
    for name, queries in (("train", QUERIES[:3]), ("test", QUERIES[3:] + QUERIES[:1])):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(
            {"id": f"{name}-{i}", "query": q, "calling": [{"api": g} for g in ([gold] if isinstance(gold, str) else gold)]})
            for i, (q, gold) in enumerate(queries)))
    out = tmp_path / "out"
    code = cli.main(["eval", "retrieval", "--model", str(tiny_model_dir), "--tools", str(tmp_path / "tools.json"),
                     "--train", str(tmp_path / "train.jsonl"), "--test", str(tmp_path / "test.jsonl"),
                     "--init", "description,tool2vec", "--steps", "4", "--eval-every", "2", "--train-layers", "1",
                     "--lora-rank", "2", "--sentences", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top 1 layers (LoRA r=2)" in printed
    assert "| RRF(BM25, tool tokens, top 1 layers (LoRA r=2), best sentence, tool2vec init)" in printed
    result = json.loads((out / "retrieval.json").read_text())
    assert result["config"]["train_layers"] == 1 and result["config"]["lora_rank"] == 2
    assert result["config"]["layer_batch_size"] == 32 and result["config"]["rank"] == "sentences"
    assert result["config"]["sentences"] is True
    for init in ("description", "tool2vec"):
        assert [h["step"] for h in result["inits"][init]["history"]] == [0, 2, 4]
        assert set(result["inits"][init]["rrf_bm25"]) == {"recall@1", "recall@5", "ndcg@5"}
    assert list((tmp_path / "cache" / "layer_states").iterdir())


@pytest.mark.parametrize("argv, match", [
    (["--train-layers", "0", "--lora-rank", "2"], "--lora-rank needs --train-layers K > 0"),
    (["--train-layers", "-1"], "--train-layers must be >= 0"),
    (["--train-layers", "0", "--rank", "sentences"], "--rank sentences needs --train-layers K > 0"),
    (["--init", "tool2vec,magic"], "--init 'tool2vec,magic'"),
])
def test_eval_retrieval_cli_option_errors(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "retrieval", *argv])
    assert e.value.code == 2
    assert match in capsys.readouterr().err


@given(st.lists(st.integers(1, 300), min_size=1, max_size=400), st.integers(1, 17), st.integers(0, 2**31))
def test_length_grouped_batches_cover_each_example_once(lengths, batch_size, seed):
    batches = tl.length_grouped_batches(lengths, batch_size, torch.Generator().manual_seed(seed), group=4)
    flat = torch.cat(batches).tolist()
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert len(batches) <= -(-len(lengths) // batch_size) + -(-len(lengths) // (4 * batch_size))


def test_length_grouped_batches_waste_less_padding():
    lengths = [30] * 512 + [150] * 512  # memorization prompts and multi-intent requests
    gen = torch.Generator().manual_seed(0)
    padded = sum(len(b) * max(lengths[i] for i in b.tolist()) for b in tl.length_grouped_batches(lengths, 32, gen))
    random_batches = torch.randperm(len(lengths), generator=gen).split(32)
    padded_random = sum(len(b) * max(lengths[i] for i in b.tolist()) for b in random_batches)
    assert padded < 0.7 * padded_random
