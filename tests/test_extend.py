"""toolken.extend: tokens, resizing, init formulas, tool_rows training, atomicity, incremental."""
import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import tiny_llama
from transformers import GPT2Config, GPT2LMHeadModel

import toolken
from toolken import ExtendError, Tool, ToolSet
from toolken.init import text_token_ids

TOOLS = ToolSet.from_openai([
    {"name": "get_weather", "description": "Get the current weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "description": "Current time in a time zone",
     "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
    {"name": "send_email", "description": "Send an e-mail to someone",
     "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}}},
])


def llama(vocab, tied=False, rows=None, seed=0):
    return tiny_llama(rows or vocab, seed=seed, tied=tied)


def gpt2(vocab, seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128))


@pytest.fixture
def tok(tiny_tokenizer):
    return tiny_tokenizer


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("make", [lambda v: llama(v, tied=False), lambda v: llama(v, tied=True), gpt2],
                         ids=["llama-untied", "llama-tied", "gpt2-tied"])
def test_tokens_are_atomic_and_rows_follow_description_formula(make, tok):
    model = make(len(tok))
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    n0 = len(tok)
    model, tok = toolken.extend(model, tok, TOOLS, init="description", trainable=None)
    reg = toolken.registry(model)
    assert len(tok) == n0 + len(TOOLS)
    assert reg.tool_token_ids == list(range(n0, n0 + len(TOOLS)))
    for name in TOOLS.names:
        tid = reg.id_of(name)
        assert tok(f"<<{name}>>", add_special_tokens=False)["input_ids"] == [tid]
        assert tid in tok(f"call <<{name}>>{{\"a\": 1}}", add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(tid) == f"<<{name}>>"
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    ids = text_token_ids(tok, list(TOOLS), with_description=True)
    emb = model.get_input_embeddings().weight
    for tool, sub in zip(TOOLS, ids):
        expect = emb0[torch.tensor(sub)].mean(0)
        torch.testing.assert_close(emb[reg.id_of(tool.name)], expect)
    if not model.config.tie_word_embeddings:
        head = model.get_output_embeddings().weight
        for tool, sub in zip(TOOLS, ids):
            torch.testing.assert_close(head[reg.id_of(tool.name)], head0[torch.tensor(sub)].mean(0))
    # the original rows are untouched
    assert torch.equal(emb[:n0], emb0[:n0])


def test_init_strategies(tok):
    n0 = len(tok)
    base = llama(n0)
    emb0 = base.get_input_embeddings().weight.detach().clone()
    results = {}
    for init in ["random", "mean", "name", "description", "hidden"]:
        m, t = toolken.extend(copy.deepcopy(base), copy.deepcopy(tok), TOOLS, init=init, trainable=None, seed=0)
        reg = toolken.registry(m)
        assert set(reg.init.values()) == {init}
        ids = torch.tensor(reg.tool_token_ids)
        results[init] = (m.get_input_embeddings().weight[ids].detach(), m.get_output_embeddings().weight[ids].detach())
        pr = toolken.prior(m)
        torch.testing.assert_close(pr["input"], results[init][0])
        torch.testing.assert_close(pr["output"], results[init][1])
    torch.testing.assert_close(results["mean"][0][0], emb0.mean(0))
    name_ids = text_token_ids(tok, list(TOOLS), with_description=False)
    torch.testing.assert_close(results["name"][0][0], emb0[torch.tensor(name_ids[0])].mean(0))
    # hidden: description for input rows; output rows are unit vectors times the mean row norm
    torch.testing.assert_close(results["hidden"][0], results["description"][0])
    target = base.get_output_embeddings().weight.detach().norm(dim=-1).mean()
    torch.testing.assert_close(results["hidden"][1].norm(dim=-1), target.expand(len(TOOLS)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(results["hidden"][1], results["description"][1])
    std = emb0.std()
    assert 0.5 * std < results["random"][0].std() < 2 * std


def test_hidden_init_matches_pooled_hidden_states(tok):
    """Each row is its text's own pooled state, although texts of different lengths share a
    right-padded batch (no attention mask: causal positions never see the padding after them)."""
    base = llama(len(tok))
    m, t = toolken.extend(copy.deepcopy(base), copy.deepcopy(tok), TOOLS, init="hidden", trainable=None)
    subs = text_token_ids(tok, list(TOOLS), with_description=True)
    assert len({len(s) for s in subs}) > 1
    target = base.get_output_embeddings().weight.norm(dim=-1).mean()
    for tool, sub in zip(TOOLS, subs):
        with torch.no_grad():
            h = base.model(input_ids=torch.tensor([sub])).last_hidden_state[0].mean(0)
        expect = h / h.norm() * target
        got = m.get_output_embeddings().weight[toolken.registry(m).id_of(tool.name)]
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-5)


def test_spare_rows_are_used_without_resizing(tok):
    rows = len(tok) + 64  # padded embedding, like many released checkpoints
    model = llama(len(tok), rows=rows)
    model, tok = toolken.extend(model, tok, TOOLS)
    assert model.get_input_embeddings().weight.shape[0] == rows
    reg = toolken.registry(model)
    assert reg.tool_token_ids == [len(tok) - 3, len(tok) - 2, len(tok) - 1]
    logits = model(torch.tensor([[1, reg.id_of("get_time")]])).logits
    assert logits.shape[-1] == rows


@pytest.mark.parametrize("tied", [False, True])
def test_tool_rows_only_tool_rows_change_under_adamw(tok, tied):
    model, tok = toolken.extend(llama(len(tok), tied=tied), tok, TOOLS, trainable="tool_rows")
    before = state(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == (1 if tied else 2)
    opt = torch.optim.AdamW(trainable, lr=0.05, weight_decay=0.1)
    reg = toolken.registry(model)
    ids = torch.tensor([[5, 17, reg.id_of("get_time"), 9, reg.id_of("send_email"), 3]])
    losses = []
    for _ in range(5):
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    after = state(model)
    assert set(after) == set(before)  # a plain checkpoint: no toolken_rows.* keys
    tool_ids = torch.tensor(reg.tool_token_ids)
    other = torch.ones(model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
    other[tool_ids] = False
    for k in before:
        if before[k].shape[0] == other.shape[0] and before[k].dim() == 2 and ("embed" in k or "lm_head" in k):
            assert torch.equal(before[k][other], after[k][other]), k
            assert not torch.equal(before[k][tool_ids], after[k][tool_ids]), k
        else:
            assert torch.equal(before[k], after[k]), k


def test_full_and_none_trainable(tok):
    m, _ = toolken.extend(llama(len(tok)), copy.deepcopy(tok), TOOLS, trainable="full")
    assert all(p.requires_grad for p in m.parameters())
    assert toolken.tool_rows(m) is None
    base = llama(len(tok))
    base.model.layers[0].requires_grad_(False)
    m, _ = toolken.extend(base, copy.deepcopy(tok), TOOLS, trainable=None)
    assert not any(p.requires_grad for p in m.model.layers[0].parameters())
    assert m.model.norm.weight.requires_grad


def test_output_weight_matches_lm_head_logits(tok):
    model, tok = toolken.extend(llama(len(tok)), tok, TOOLS)
    with torch.no_grad():
        toolken.tool_rows(model).output.add_(1.0)
    ids = torch.tensor([[1, 2, 3]])
    hidden = model.model(ids).last_hidden_state
    logits = model(ids).logits
    torch.testing.assert_close(hidden @ toolken.output_weight(model).T, logits, rtol=1e-5, atol=1e-5)
    w = toolken.output_weight(model)
    w.sum().backward()
    assert toolken.tool_rows(model).output.grad is not None


def test_incremental_extension_and_noop(tok):
    model, tok = toolken.extend(llama(len(tok)), tok, TOOLS[:2])
    ids_before = toolken.registry(model).tool_token_ids
    rows_before = toolken.tool_rows(model).input.detach().clone()
    n = len(tok)
    model, tok = toolken.extend(model, tok, TOOLS[:2])  # same tools: no-op
    assert len(tok) == n and toolken.registry(model).tool_token_ids == ids_before
    model, tok = toolken.extend(model, tok, TOOLS)  # adds only the third
    reg = toolken.registry(model)
    assert len(tok) == n + 1 and reg.tool_token_ids[:2] == ids_before and reg.names == TOOLS.names
    torch.testing.assert_close(toolken.tool_rows(model).input[:2], rows_before)
    assert toolken.prior(model)["input"].shape[0] == 3


def test_changed_spec_needs_update(tok):
    model, tok = toolken.extend(llama(len(tok)), tok, TOOLS)
    changed = Tool("get_time", "Time of day anywhere", {"type": "object", "properties": {}})
    with pytest.raises(ExtendError, match="'get_time' is already registered with a different spec.*update=True"):
        toolken.extend(model, tok, [changed])
    model, tok = toolken.extend(model, tok, [changed], update=True)
    assert toolken.registry(model).tools["get_time"].description == "Time of day anywhere"
    assert len(toolken.registry(model)) == 3


def test_registry_survives_save_pretrained(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = toolken.extend(llama(len(tok)), tok, TOOLS)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert toolken.registry(loaded).token_ids == toolken.registry(model).token_ids
    assert toolken.registry(loaded).tools == TOOLS
    ids = torch.tensor([[1, toolken.registry(model).id_of("get_time")]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)


def assert_unchanged(model, tok, snap, n_tok):
    assert len(tok) == n_tok
    after = state(model)
    assert after.keys() == snap.keys()
    for k in snap:
        assert torch.equal(after[k], snap[k]), k
    assert toolken.registry.__module__  # registry untouched below


def test_failed_extend_leaves_model_and_tokenizer_unchanged(tok):
    model, tok = toolken.extend(llama(len(tok)), tok, TOOLS[:1])
    snap, n_tok, reg = state(model), len(tok), toolken.registry(model).to_dict()
    clash = tok.convert_ids_to_tokens(100)  # an existing token used as a tool token
    bad = [TOOLS[1], Tool(clash, "x")]
    with pytest.raises(ExtendError, match="differs from this model's"):
        toolken.extend(model, tok, [TOOLS[1]], token_format="[{name}]")
    fresh, ftok = llama(len(tok)), copy.deepcopy(tok)
    fsnap, fn = state(fresh), len(ftok)
    with pytest.raises(ExtendError, match="already exists in the tokenizer's vocabulary"):
        toolken.extend(fresh, ftok, bad, token_format="{name}")
    assert_unchanged(fresh, ftok, fsnap, fn)
    assert getattr(fresh.config, "toolken", None) is None
    assert_unchanged(model, tok, snap, n_tok)
    assert toolken.registry(model).to_dict() == reg


def test_failure_during_commit_rolls_back(tok, monkeypatch):
    from toolken import rows

    model = llama(len(tok))
    snap, n = state(model), len(tok)

    def boom(*a, **k):
        raise RuntimeError("injected failure after resize")

    monkeypatch.setattr(rows, "update_prior", boom)
    with pytest.raises(RuntimeError, match="injected"):
        toolken.extend(model, tok, TOOLS)
    assert_unchanged(model, tok, snap, n)
    assert model.get_input_embeddings().weight.shape[0] == n
    assert model.config.vocab_size == n
    assert getattr(model.config, "toolken", None) is None


def test_errors(tok):
    model = llama(len(tok))
    with pytest.raises(ExtendError, match="unknown init strategy 'bogus'"):
        toolken.extend(model, tok, TOOLS, init="bogus")
    with pytest.raises(ExtendError, match="unknown trainable"):
        toolken.extend(model, tok, TOOLS, trainable="some")
    with pytest.raises(ExtendError, match=r"must contain '\{name\}'"):
        toolken.extend(model, tok, TOOLS, token_format="<<tool>>")
    with pytest.raises(toolken.ToolkenError, match="no tool registry"):
        toolken.registry(model)
    with pytest.raises(toolken.ToolkenError, match="not registered"):
        toolken.extend(model, copy.deepcopy(tok), TOOLS)[0] and toolken.registry(model).id_of("nope")
    other = copy.deepcopy(tok)
    with pytest.raises(ExtendError, match="pass the tokenizer that was extended"):
        toolken.extend(model, other, TOOLS)


@pytest.mark.parametrize("fixture", ["mistral_tokenizer", "tekken_tokenizer", "smollm2_tokenizer"])
def test_real_tokenizers(fixture, request):
    tok = copy.deepcopy(request.getfixturevalue(fixture))
    n0 = len(tok)
    model = llama(n0)
    model, tok = toolken.extend(model, tok, TOOLS, init="description")
    reg = toolken.registry(model)
    assert reg.tool_token_ids == list(range(n0, n0 + 3))
    for name in TOOLS.names:
        assert tok(f"<<{name}>>", add_special_tokens=False)["input_ids"] == [reg.id_of(name)]
        text = f"Sure. <<{name}>>{{\"city\": \"Paris\"}}"
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]).endswith(f"<<{name}>>{{\"city\": \"Paris\"}}")


name_chars = st.characters(blacklist_categories=("Cs", "Cc"))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(names=st.lists(st.text(name_chars, min_size=1, max_size=80).filter(lambda s: s.strip()), min_size=1,
                      max_size=4, unique=True))
def test_hypothesis_tool_names(tiny_tokenizer_session, names):
    tok = copy.deepcopy(tiny_tokenizer_session)
    model = llama(len(tok))
    tools = []
    for n in names:
        try:
            tools.append(Tool(n, "d"))
        except toolken.ToolSpecError:
            return
    try:
        model, tok = toolken.extend(model, tok, tools, init="name", trainable=None)
    except ExtendError as e:
        assert any(repr(n) in str(e) for n in names)
        assert getattr(model.config, "toolken", None) is None
        return
    reg = toolken.registry(model)
    for n in names:
        assert tok(reg.tokens[n], add_special_tokens=False)["input_ids"] == [reg.id_of(n)]
        assert reg.tokens[n] == f"<<{n}>>"


def test_all_seal_tools_description_init(smollm2_tokenizer, data_dir):
    """All 4,076 Seal-Tools tools: one id each, rows equal the description formula."""
    import os

    tools = ToolSet.from_seal_tools(os.path.join(data_dir, "seal-tools", "tool.jsonl.gz"))
    assert len(tools) == 4076
    tok = copy.deepcopy(smollm2_tokenizer)
    n0 = len(tok)
    model = tiny_llama(n0, tied=True, hidden=16, layers=1, intermediate=32)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    model, tok = toolken.extend(model, tok, tools, init="description")
    reg = toolken.registry(model)
    assert reg.tool_token_ids == list(range(n0, n0 + 4076))
    tokens = [reg.tokens[n] for n in tools.names]
    encoded = tok(tokens, add_special_tokens=False)["input_ids"]
    assert encoded == [[reg.id_of(n)] for n in tools.names]
    ids = text_token_ids(tok, list(tools), with_description=True)
    expect = torch.stack([emb0[torch.tensor(sub)].mean(0) for sub in ids])
    torch.testing.assert_close(toolken.tool_rows(model).input.detach(), expect)
    torch.testing.assert_close(toolken.prior(model)["input"], expect)
