"""toolken.weighted_loss and toolken.prior_regularization on tiny extended Llama models, against
the naive loss computed from the model's full logits."""
import copy

import pytest
import torch
import torch.nn.functional as F

import toolken
import toolken.loss
from toolken import data
from toolken.errors import ToolkenError
from toolken.rows import current_rows, tool_rows
from toolken.tools import Tool, ToolSet

IGN = -100

TOOLS = ToolSet([
    Tool("get_weather", "Current weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}}),
    Tool("get_time", "Current time in a time zone", {"type": "object", "properties": {"tz": {"type": "string"}}}),
    Tool("send_email", "Send an email to someone", {"type": "object", "properties": {"to": {"type": "string"}}}),
])

CONVERSATIONS = [
    [{"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
     {"role": "tool", "content": "sunny"},
     {"role": "assistant", "content": "It is sunny."}],
    [{"role": "user", "content": "Mail Bob the time in CET."},
     {"role": "assistant", "content": "On it.", "tool_calls": [
         {"function": {"name": "get_time", "arguments": {"tz": "CET"}}},
         {"function": {"name": "send_email", "arguments": {"to": "bob@example.com"}}}]}],
]


def tiny_extended(base_tokenizer, *, tie: bool = False, trainable="tool_rows", seed: int = 0):
    """A random 2-layer Llama with SmolLM2's vocabulary (hidden 16), extended with TOOLS."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(base_tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         tie_word_embeddings=tie, pad_token_id=base_tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    return toolken.extend(model, copy.deepcopy(base_tokenizer), TOOLS, init="description", trainable=trainable)


def tiny_batch(tokenizer, model, policy="tl_training"):
    """Two trajectories + one memorization record, padded to one batch."""
    reg = toolken.registry(model)
    records = data.trajectory_records(tokenizer, reg, CONVERSATIONS, policy=policy)
    records += data.memorization_records(tokenizer, reg, tools=["send_email"], policy=policy)
    return data.Collator.for_tokenizer(tokenizer)(records)


def naive_loss(model, batch, reduction="mean"):
    """The weighted loss from the model's full [B, T, V] logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:].reshape(-1)
    w = batch["loss_weights"][:, 1:].reshape(-1)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target,
                         ignore_index=IGN, reduction="none")
    if reduction == "none":
        return w * ce
    return (w * ce).sum() / w[target != IGN].sum()


@pytest.fixture(scope="module")
def untied(smollm2_tokenizer):
    return tiny_extended(smollm2_tokenizer)


def _no_head_calls(model):
    """A hook that fails if the LM head (full logits) runs."""
    def hook(*_):
        raise AssertionError("the LM head ran: full logits were built")
    return model.get_output_embeddings().register_forward_hook(hook)


def test_weighted_loss_matches_full_logits(untied):
    model, tok = untied
    batch = tiny_batch(tok, model)
    assert (batch["loss_weights"] > 1).any()  # TL-Training boosted some key tokens
    rows = tool_rows(model)
    handle = _no_head_calls(model)
    try:
        loss = toolken.weighted_loss(model, **batch)
    finally:
        handle.remove()
    got = torch.autograd.grad(loss, [rows.input, rows.output])
    ref = naive_loss(model, batch)
    want = torch.autograd.grad(ref, [rows.input, rows.output])
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for g, w in zip(got, want):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def _dense_loss(model, batch):
    """The dense reference: `toolken.output_weight` (a [V, d] copy of the head with the tool rows
    in place, differentiable w.r.t. them) handed to the fused op."""
    hidden = toolken.loss.final_hidden_states(model, batch["input_ids"], batch["attention_mask"])
    target, w = toolken.loss.shifted_targets(batch["labels"], batch["loss_weights"], batch["attention_mask"])
    weight = toolken.output_weight(model)
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1]).to(weight.dtype)
    return toolken.kernels.fused_linear_weighted_cross_entropy(hidden, weight, target, w)


@pytest.mark.parametrize("tie,dtype", [(False, torch.float32), (True, torch.float32), (False, torch.bfloat16)])
def test_tool_rows_use_the_row_sparse_head(smollm2_tokenizer, monkeypatch, tie, dtype):
    """trainable="tool_rows": the kernel reads the frozen head weight in place with the tool rows
    as `trainable_rows` (same loss and tool-row gradients as the dense copy of the head); the head
    weight gets no gradient."""
    model, tok = tiny_extended(smollm2_tokenizer, tie=tie)
    model.to(dtype)
    batch = tiny_batch(tok, model)
    rows = tool_rows(model)
    params = [rows.input] + ([] if tie else [rows.output])
    head = model.get_output_embeddings().weight
    calls = []
    real = toolken.loss.fused_linear_weighted_cross_entropy

    def spy(hidden, weight, *args, **kwargs):
        calls.append((hidden.dtype, weight, kwargs.get("trainable_rows")))
        return real(hidden, weight, *args, **kwargs)

    monkeypatch.setattr(toolken.loss, "fused_linear_weighted_cross_entropy", spy)
    loss = toolken.weighted_loss(model, **batch)
    loss.backward()
    got = [p.grad.clone() for p in params]
    (hidden_dtype, weight, trainable), = calls
    assert weight is head and hidden_dtype == head.dtype  # read in place, hidden cast (not the weight)
    assert torch.equal(trainable[0], rows.token_ids) and trainable[1].shape == (len(rows.token_ids), head.shape[1])
    assert head.grad is None and not head.requires_grad
    for p in params:
        p.grad = None
    ref = _dense_loss(model, batch)
    ref.backward()
    assert head.grad is None
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(loss, ref, **tol)
    for g, p in zip(got, params):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, p.grad, **tol)


def test_sharded_head_is_refused(smollm2_tokenizer):
    """A head weight that is not the whole [V, d] matrix (what FSDP1 leaves outside the root
    unit's forward: a flat shard) is refused with the fix named, not fed to the kernel."""
    model, tok = tiny_extended(smollm2_tokenizer)
    batch = tiny_batch(tok, model)
    hidden = torch.randn(*batch["input_ids"].shape, model.config.hidden_size)
    model.lm_head.weight = torch.nn.Parameter(torch.zeros(40), requires_grad=False)
    with pytest.raises(ToolkenError, match=r"shape \(40,\).*toolken.Trainer.*use_orig_params"):
        toolken.loss.hidden_states_loss(model, hidden, batch["labels"], batch["loss_weights"], batch["attention_mask"])


def test_reduction_none_and_padding(untied):
    model, tok = untied
    batch = tiny_batch(tok, model, policy="uniform")
    with torch.no_grad():
        per_token = toolken.weighted_loss(model, **batch, reduction="none")
        torch.testing.assert_close(per_token, naive_loss(model, batch, "none"), rtol=1e-5, atol=1e-6)
        # each record alone (no padding) gives the same per-token losses as inside the padded batch
        for b in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][b].sum())
            alone = {k: v[b:b + 1, :n] for k, v in batch.items()}
            row = per_token.reshape(batch["input_ids"].shape[0], -1)[b]
            torch.testing.assert_close(toolken.weighted_loss(model, **alone, reduction="none"), row[: n - 1],
                                       rtol=1e-5, atol=1e-6)
            assert torch.all(row[n - 1:] == 0)


def test_weighted_loss_rejects_bad_batches(untied):
    model, tok = untied
    batch = tiny_batch(tok, model)
    with pytest.raises(ToolkenError, match="labels has shape"):
        toolken.weighted_loss(model, batch["input_ids"], batch["labels"][:, 1:])
    model.config.final_logit_softcapping = 30.0
    try:
        with pytest.raises(ToolkenError, match="soft-caps"):
            toolken.weighted_loss(model, **batch)
    finally:
        del model.config.final_logit_softcapping


def test_prior_regularization_untied_tool_rows(untied):
    model, _ = untied
    rows = tool_rows(model)
    assert toolken.prior_regularization(model).item() == 0.0
    d_in, d_out = torch.randn_like(rows.input), torch.randn_like(rows.output)
    with torch.no_grad():
        rows.input += d_in
        rows.output += d_out
    try:
        reg = toolken.prior_regularization(model, lam=0.5)
        torch.testing.assert_close(reg, 0.5 * (d_in.norm() + d_out.norm()))
        sq = toolken.prior_regularization(model, lam=0.5, squared=True)
        torch.testing.assert_close(sq, 0.5 * (d_in.pow(2).sum() + d_out.pow(2).sum()))
        g_in, g_out = torch.autograd.grad(reg, [rows.input, rows.output])
        torch.testing.assert_close(g_in, 0.5 * d_in / d_in.norm())
        torch.testing.assert_close(g_out, 0.5 * d_out / d_out.norm())
    finally:
        with torch.no_grad():
            rows.input -= d_in
            rows.output -= d_out


def test_prior_regularization_tied_full(smollm2_tokenizer):
    model, _ = tiny_extended(smollm2_tokenizer, tie=True, trainable="full")
    assert tool_rows(model) is None and toolken.prior(model)["output"] is None
    emb = model.get_input_embeddings().weight
    ids = torch.tensor(toolken.registry(model).tool_token_ids)
    delta = torch.randn(len(ids), emb.shape[1])
    with torch.no_grad():
        emb[ids] += delta
    reg = toolken.prior_regularization(model)  # λ = 1e-2, unsquared: Re-Init Token Learning
    torch.testing.assert_close(reg, 1e-2 * delta.norm())
    (grad,) = torch.autograd.grad(reg, [emb])
    others = torch.ones(emb.shape[0], dtype=torch.bool)
    others[ids] = False
    assert torch.all(grad[others] == 0) and torch.all(grad[ids].abs().sum(-1) > 0)
    assert set(current_rows(model)) == {"input"}
    with pytest.raises(ToolkenError, match="lam"):
        toolken.prior_regularization(model, lam=-1.0)


def test_weighted_loss_through_peft_lora(smollm2_tokenizer):
    peft = pytest.importorskip("peft")
    model, tok = tiny_extended(smollm2_tokenizer, trainable=None)
    batch = tiny_batch(tok, model)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora_params = [p for n, p in lora.named_parameters() if "lora_" in n]
    assert lora_params and all(p.requires_grad for p in lora_params)
    loss = toolken.weighted_loss(lora, **batch)
    got = torch.autograd.grad(loss, lora_params)
    ref = naive_loss(lora, batch)
    want = torch.autograd.grad(ref, lora_params)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
