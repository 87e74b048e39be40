"""Schema-constrained tool-call arguments: every emitted call names an enabled tool and its
arguments validate, across seeds, sampling, greedy, beam search and left-padded batches; the
row states follow token histories, not row positions; the end-of-call rules.

Random tiny models rarely close a JSON string by chance, so the generation tests add `Nudge`
(see test_decoding.py); calls cut by the token limit must come back as `incomplete`, never as
invalid.
"""
import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import toolken
from toolken.decoding import ToolCallLogitsProcessor

from test_decoding import Nudge, extended, tool_ids


@pytest.fixture(scope="module")
def ext(smollm2_tokenizer):
    return extended(smollm2_tokenizer)


@pytest.fixture(scope="module")
def nudge(ext):
    return Nudge(ext[1])


def check(results, model, enabled, mode):
    """Every call names an enabled tool and validates (parse_tool_calls is strict); returns the
    number of finished calls."""
    reg = toolken.registry(model)
    n = 0
    for r in results:
        for c in r.tool_calls:
            assert c.name in enabled
        if r.incomplete is not None:
            assert r.incomplete.name in enabled
        if mode == "required":
            assert r.token_ids and reg.name_of(r.token_ids[0]) in enabled
        n += len(r.tool_calls)
    return n


PROMPTS = ["hi", [{"role": "user", "content": "What's the weather in Paris, and the time in Tokyo?"}],
           "add 2 and 3 please, thanks"]


@pytest.mark.parametrize("seed", [0, 1])
def test_sampling_left_padded_batch_emits_valid_calls(ext, nudge, seed):
    model, tok = ext
    torch.manual_seed(seed)
    enabled = ["get_weather", "add", "ping"]
    res = toolken.generate_tool_calls(model, tok, PROMPTS, tools=enabled, mode="required", max_new_tokens=32,
                                      do_sample=True, logits_processor=[nudge])
    assert check(res, model, enabled, "required") >= 1


def test_greedy_auto_with_bias(ext, nudge):
    model, tok = ext
    res = toolken.generate_tool_calls(model, tok, PROMPTS, tools=["add", "get_time"], tool_bias=50.0,
                                      max_new_tokens=32, logits_processor=[nudge])
    assert check(res, model, ["add", "get_time"], "auto") >= 1


@pytest.mark.parametrize("seed", [0, 1])
def test_beam_search_sampled_and_greedy(ext, nudge, seed):
    model, tok = ext
    enabled = ["get_weather", "add", "get_time", "ping"]
    finished = 0
    for do_sample in (True, False):
        torch.manual_seed(seed)
        res = toolken.generate_tool_calls(model, tok, PROMPTS[:2], tools=enabled, mode="required",
                                          max_new_tokens=32, num_beams=3, num_return_sequences=2,
                                          do_sample=do_sample, logits_processor=[nudge])
        assert len(res) == 2 and all(1 <= len(per_prompt) <= 2 for per_prompt in res)
        for per_prompt in res:
            assert [r.score for r in per_prompt] == sorted((r.score for r in per_prompt), reverse=True)
            finished += check(per_prompt, model, enabled, "required")
    assert finished >= 1


# ---------------------------------------------------------------------------------------------
# end-of-call rules, on token sequences written in the training format
# ---------------------------------------------------------------------------------------------
def allowed_after(proc, tok, model, text, prompt=(1, 2)):
    """The allowed ids after `text` (fed token by token, the way generate does)."""
    ids = list(prompt)
    target = tok(text, add_special_tokens=False).input_ids
    V = model.config.vocab_size
    for j in range(len(target) + 1):
        out = proc(torch.tensor([ids]), torch.zeros(1, V))
        allowed = set(torch.isfinite(out[0]).nonzero().flatten().tolist())
        if j < len(target):
            assert target[j] in allowed, f"{tok.decode(target[:j + 1])!r} was not allowed"
            ids.append(target[j])
    return allowed


def test_closed_call_allows_only_next_call_or_end_of_turn(ext):
    model, tok = ext
    reg = toolken.registry(model)
    proc = ToolCallLogitsProcessor(tok, model, tools=["add", "ping"], whitespace="flexible")
    after = allowed_after(proc, tok, model, 'Sure <<add>>{"a": 1, "b": -20}<<ping>>{ }')
    assert after == {reg.id_of("add"), reg.id_of("ping"), tok.eos_token_id}
    inside = allowed_after(proc, tok, model, '<<add>>{"a": 1, "b": 2')
    assert not inside & tool_ids(model) and tok.eos_token_id not in inside
    # a disabled tool's token never appears, not even inside a JSON string
    proc = ToolCallLogitsProcessor(tok, model, tools=["get_weather"])
    inside_str = allowed_after(proc, tok, model, '<<get_weather>>{"city": "Par')
    assert not inside_str & tool_ids(model) and tok("is", add_special_tokens=False).input_ids[0] in inside_str


def test_whitespace_before_the_arguments_and_inside_is_allowed_when_flexible(ext):
    model, tok = ext
    proc = ToolCallLogitsProcessor(tok, model, tools=["add"], mode="required", whitespace="flexible")
    allowed_after(proc, tok, model, '<<add>>{\n  "a": 1,\n  "b": 2\n}')


def test_canonical_whitespace_is_the_default_and_refuses_other_whitespace(ext):
    model, tok = ext
    proc = ToolCallLogitsProcessor(tok, model, tools=["add"], mode="required")
    assert proc.whitespace == "canonical"
    allowed_after(proc, tok, model, '<<add>>{"a": 1, "b": 2}')
    with pytest.raises(AssertionError):
        allowed_after(proc, tok, model, '<<add>>{\n  "a": 1,\n  "b": 2\n}')


# ---------------------------------------------------------------------------------------------
# rows follow their own histories: any reordering / duplication of rows gives the same masks
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def histories(ext, nudge):
    """Sampled constrained continuations of one prompt (same width), as lists of ids."""
    model, tok = ext
    torch.manual_seed(0)
    proc = ToolCallLogitsProcessor(tok, model, tools=["get_weather", "add", "ping"], mode="required")
    out = model.generate(input_ids=torch.tensor([[1, 9, 8]] * 6), logits_processor=[nudge, proc],
                         do_sample=True, max_new_tokens=14, pad_token_id=tok.eos_token_id)
    return out.tolist()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_row_states_follow_histories_not_positions(ext, histories, seed):
    """Each step feeds a random choice of rows (reordered, duplicated); each row's mask must
    equal what a fresh processor computes from that row's history alone (the replay path)."""
    model, tok = ext
    rnd = random.Random(seed)
    V = model.config.vocab_size
    make = lambda: ToolCallLogitsProcessor(tok, model, tools=["get_weather", "add", "ping"], mode="required")  # noqa: E731
    proc = make()
    P = 3
    for t in range(0, len(histories[0]) - P + 1, 1):
        rows = [rnd.randrange(len(histories)) for _ in range(4)]
        ids = torch.tensor([histories[r][:P + t] for r in rows])
        out = proc(ids, torch.zeros(len(rows), V))
        for b, r in enumerate(rows):
            if t % 4 == 0 or b == 0:  # reference replays are O(t): check a subset
                ref = make()
                ref._start(torch.tensor([histories[r][:P]]), V)
                ref._last_width = P + t - 1
                expect = ref(torch.tensor([histories[r][:P + t]]), torch.zeros(1, V))
                assert torch.equal(torch.isfinite(out[b]), torch.isfinite(expect[0])), (t, r)


def test_a_reused_processor_starts_over_on_a_new_prompt(ext, nudge):
    """Second generate call whose prompt is one token longer than the first call's output: the
    width grew by one, but the prompt changed, so the processor must start over."""
    model, tok = ext
    proc = ToolCallLogitsProcessor(tok, model, tools=["add"], mode="required")
    first = model.generate(input_ids=torch.tensor([[1, 2, 3]]), logits_processor=[nudge, proc], max_new_tokens=4,
                           do_sample=False, pad_token_id=tok.eos_token_id)
    prompt = torch.tensor([[7] * (first.shape[1] + 1)])
    out = model.generate(input_ids=prompt, logits_processor=[nudge, proc], max_new_tokens=1, do_sample=False,
                         pad_token_id=tok.eos_token_id)
    assert out[0, -1].item() == toolken.registry(model).id_of("add") and proc.off_rows == 0


# ---------------------------------------------------------------------------------------------
# options and odd inputs
# ---------------------------------------------------------------------------------------------
def test_extra_arguments_only_when_asked(ext):
    """No additionalProperties in get_weather's schema: undeclared argument names are refused by
    default (strict, as OpenAI's strict mode) and allowed with extra_arguments=True."""
    model, tok = ext
    zzz = tok('zzz', add_special_tokens=False).input_ids[0]
    for extra in (False, True):
        proc = ToolCallLogitsProcessor(tok, model, tools=["get_weather"], extra_arguments=extra)
        allowed = allowed_after(proc, tok, model, '<<get_weather>>{"city": "x", "')
        assert (zzz in allowed) == extra


def test_uncompilable_schema_names_the_tool(smollm2_tokenizer):
    from toolken import GrammarError, Tool

    tools = [Tool("odd", "", {"type": "object", "properties": {"a": {"not": {"type": "string"}}}})]
    model, tok = extended(smollm2_tokenizer, tools=tools)
    proc = ToolCallLogitsProcessor(tok, model)
    failed = proc.precompile(model.config.vocab_size)
    assert list(failed) == ["odd"] and "tool 'odd'" in str(failed["odd"]) and "not" in str(failed["odd"])
    with pytest.raises(GrammarError, match="tool 'odd'"):
        toolken.generate_tool_calls(model, tok, "hi", mode="required", max_new_tokens=3)


def test_a_forbidden_token_marks_the_row_off_and_leaves_it_alone(ext):
    """Beam search may keep a -inf candidate as a running beam: no error, no constraint."""
    model, tok = ext
    V = model.config.vocab_size
    proc = ToolCallLogitsProcessor(tok, model, tools=["add"], mode="required")
    proc(torch.tensor([[1, 2], [1, 2]]), torch.zeros(2, V))
    add = toolken.registry(model).id_of("add")
    scores = torch.randn(2, V)
    out = proc(torch.tensor([[1, 2, 5], [1, 2, add]]), scores.clone())  # row 0: text where a call was required
    assert proc.off_rows == 1 and torch.equal(out[0], scores[0])
    assert torch.isfinite(out[1]).sum() < V // 2
