"""Training tool tokens: a short run where the weighted loss falls and only tool rows change,
toolken.Trainer and the stock Trainer with toolken.compute_loss_func, and PEFT LoRA."""
import pytest
import torch
import transformers

import toolken
import toolken.trainer
from toolken import data
from toolken.rows import tool_rows

from test_loss_api import CONVERSATIONS, naive_loss, tiny_batch, tiny_extended  # noqa: E402


def _records(tokenizer, model, policy="tl_training"):
    reg = toolken.registry(model)
    return (data.trajectory_records(tokenizer, reg, CONVERSATIONS, policy=policy)
            + data.memorization_records(tokenizer, reg, policy=policy))


def _changed_rows(before: dict, after: dict) -> dict:
    """{state_dict key: sorted row indices that changed} (whole-tensor keys map to [-1])."""
    out = {}
    for k, v in before.items():
        w = after[k]
        if torch.equal(v, w):
            continue
        out[k] = (v != w).reshape(v.shape[0], -1).any(-1).nonzero().flatten().tolist() if v.dim() == 2 else [-1]
    return out


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=5, learning_rate=0.05,
                logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                lr_scheduler_type="constant", seed=0)
    return transformers.TrainingArguments(**{**base, **kw})


def test_weighted_loss_falls_and_only_tool_rows_change(smollm2_tokenizer):
    model, tok = tiny_extended(smollm2_tokenizer)
    ids = sorted(toolken.registry(model).tool_token_ids)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"toolken_rows.input", "toolken_rows.output"}
    # ToolGen memorization: every target (tool token, then end of turn) depends on the tool rows
    batch = data.collate(data.memorization_records(tok, toolken.registry(model), policy="tl_training"),
                         tok.pad_token_id)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = toolken.weighted_loss(model, **batch) + toolken.prior_regularization(model)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.7 * losses[0], losses
    changed = _changed_rows(before, model.state_dict())
    assert changed == {"model.embed_tokens.weight": ids, "lm_head.weight": ids}


def test_toolken_trainer_uses_loss_weights(smollm2_tokenizer, tmp_path, monkeypatch):
    model, tok = tiny_extended(smollm2_tokenizer)
    records = _records(tok, model)
    expected = toolken.weighted_loss(model, **data.collate(records, tok.pad_token_id)).item()
    seen = []
    real = toolken.trainer.hidden_states_loss

    def spy(model, hidden, labels, loss_weights=None, attention_mask=None, **kw):
        seen.append(loss_weights)
        return real(model, hidden, labels, loss_weights, attention_mask, **kw)

    monkeypatch.setattr(toolken.trainer, "hidden_states_loss", spy)
    logit_shapes = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: logit_shapes.append(out.shape))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # remove_unused_columns=True (the default) must not drop loss_weights
    trainer = toolken.Trainer(model=model, args=_args(tmp_path), train_dataset=data.ToolDataset(records),
                              processing_class=tok, prior_lambda=1e-2)
    trainer.train()
    handle.remove()
    assert len(seen) == 3 and all(w is not None and (w > 1).any() for w in seen)
    assert len(logit_shapes) == 3 and all(s[1] == 1 for s in logit_shapes)  # logits_to_keep=1
    first = trainer.state.log_history[0]["loss"]
    assert first == pytest.approx(expected, rel=1e-3)  # one full batch: the weighted mean (+ prior 0)
    ids = sorted(toolken.registry(model).tool_token_ids)
    assert _changed_rows(before, model.state_dict()) == {"model.embed_tokens.weight": ids, "lm_head.weight": ids}
    # evaluation reports the loss without building logits
    metrics = trainer.evaluate(data.ToolDataset(records))
    assert metrics["eval_loss"] > 0


def test_toolken_trainer_full_fine_tuning(smollm2_tokenizer, tmp_path):
    model, tok = tiny_extended(smollm2_tokenizer, tie=True, trainable="full")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = toolken.Trainer(model=model, args=_args(tmp_path, max_steps=1),
                              train_dataset=data.ToolDataset(_records(tok, model)), processing_class=tok)
    trainer.train()
    changed = _changed_rows(before, model.state_dict())
    assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.norm.weight" in changed
    ids = set(toolken.registry(model).tool_token_ids)
    assert ids < set(changed["model.embed_tokens.weight"])  # tool rows and ordinary rows alike


def test_stock_trainer_with_compute_loss_func(smollm2_tokenizer, tmp_path):
    model, tok = tiny_extended(smollm2_tokenizer)
    records = _records(tok, model)
    expected = toolken.weighted_loss(model, **data.collate(records, tok.pad_token_id)).item()
    logit_shapes = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: logit_shapes.append(out.shape))
    loss_func = toolken.compute_loss_func(model)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=2, remove_unused_columns=False),
                                   train_dataset=data.ToolDataset(records),
                                   data_collator=data.Collator.for_tokenizer(tok), compute_loss_func=loss_func)
    try:
        trainer.train()
    finally:
        loss_func.remove()
        handle.remove()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(expected, rel=1e-3)
    assert len(logit_shapes) == 2 and all(s[1] == 1 for s in logit_shapes)  # logits_to_keep=1
    # once removed, the model is back to its normal forward
    out = model(input_ids=torch.tensor([[1, 2, 3]]))
    assert out.logits.shape[1] == 3 and out.hidden_states is None


def test_gradient_accumulation_is_the_weighted_mean_of_the_whole_batch(smollm2_tokenizer, tmp_path):
    """Two one-record micro-batches with different mean loss weights (a trajectory with TL-Training
    key tokens, a memorization record with uniform weights): each micro-batch's Σ wℓ is divided by
    Σ w over both, so the step's gradient is that of the weighted mean over the two records as
    one batch. (Scaling each micro-batch's mean by its share of the targets instead would change
    the gradient by several percent; the losses alone cannot tell, they are all about ln V here.)"""
    results = []
    for batch_size, accumulation in ((2, 1), (1, 2)):
        model, tok = tiny_extended(smollm2_tokenizer)
        all_records = _records(tok, model)
        records = [all_records[0], all_records[len(CONVERSATIONS)]]  # a trajectory, a memorization record
        batch = data.collate(records, tok.pad_token_id)
        mean_weight = [toolken.trainer.trained_weight(b["labels"], b["loss_weights"]).item()
                       / toolken.trainer.trained_weight(b["labels"]).item()
                       for b in (data.collate([r], tok.pad_token_id) for r in records)]
        assert abs(mean_weight[0] / mean_weight[1] - 1) > 0.05, mean_weight
        expected = toolken.weighted_loss(model, **batch).item()
        args = _args(tmp_path, max_steps=1, per_device_train_batch_size=batch_size,
                     gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=1.0)
        trainer = toolken.Trainer(model=model, args=args, train_dataset=data.ToolDataset(records), processing_class=tok)
        trainer.train()
        assert trainer.state.log_history[0]["loss"] == pytest.approx(expected, rel=1e-5)
        results.append({k: v.detach().clone() for k, v in tool_rows(model).named_parameters()})
    for key in results[0]:
        # measured: 2e-6 apart (padding changes float32 sums), 2e-2 with the share-of-targets scaling
        torch.testing.assert_close(results[1][key], results[0][key], rtol=1e-5, atol=2e-5)


def test_lora_with_trainable_tool_rows(smollm2_tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    model, tok = tiny_extended(smollm2_tokenizer)  # trainable="tool_rows", then LoRA on attention
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    rows = tool_rows(model)
    for p in rows.parameters():  # PEFT froze every non-LoRA parameter; train the tool rows too
        p.requires_grad_(True)
    records = _records(tok, model)
    before = {k: v.clone() for k, v in lora.named_parameters()}
    trainer = toolken.Trainer(model=lora, args=_args(tmp_path, max_steps=2), train_dataset=data.ToolDataset(records),
                              processing_class=tok, prior_lambda=1e-2)
    trainer.train()
    changed = {k for k, v in lora.named_parameters() if not torch.equal(v, before[k])}
    trainable = {k for k, v in lora.named_parameters() if v.requires_grad}
    assert changed == trainable
    assert any("lora_" in k for k in changed) and any("toolken_rows" in k for k in changed)


def test_peft_trainable_tokens_gradients(smollm2_tokenizer):
    """PEFT's own `trainable_token_indices` (extend with trainable=None): the fused loss sees the
    trainable rows of both embeddings, with the same gradients as the full-logit loss."""
    peft = pytest.importorskip("peft")
    model, tok = tiny_extended(smollm2_tokenizer, trainable=None)
    ids = toolken.registry(model).tool_token_ids
    lora = peft.get_peft_model(model, peft.LoraConfig(
        r=2, target_modules=["q_proj"], trainable_token_indices={"embed_tokens": ids, "lm_head": ids}))
    deltas = [p for n, p in lora.named_parameters() if "trainable_tokens_delta" in n]
    assert len(deltas) == 2
    batch = tiny_batch(tok, model)
    got = torch.autograd.grad(toolken.weighted_loss(lora, **batch), deltas)
    want = torch.autograd.grad(naive_loss(lora, batch), deltas)
    for g, w in zip(got, want):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
