"""Jump-forward decoding (`toolken.jump_forward`): forced text is split as the tokenizer splits
the whole call, with token healing at the boundary, on the Llama-3, SentencePiece (Mistral v3)
and SmolLM2 tokenizers; `generate_tool_calls` with verified jump-forward (the default) gives
exactly the tokens of step-by-step greedy decoding, also where the model spells the forced text
its own way, in fewer forward passes wherever it chooses the forced tokens; forced jumps give
them wherever the model would choose the forced tokens itself."""
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessor

import toolken
from test_decoding import TOOLS, Nudge, extended
from toolken import ToolkenError, grammar
from toolken import jump_forward as jf
from toolken.decoding import ToolCallLogitsProcessor, compile_arguments
from toolken.format import format_arguments
from toolken.generation import left_pad_prompts, render_prompt

TOKENIZERS = ["llama3_tokenizer", "mistral_tokenizer", "smollm2_tokenizer"]
LEAD = "<<get_weather>>"
SCHEMA = {"type": "object",
          "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer"},
                         "where": {"type": "object", "properties": {"lat": {"type": "number"}, "ok": {"type": "boolean"}},
                                   "required": ["lat", "ok"]}},
          "required": ["city", "unit", "days", "where"]}


def tokenizer_or_skip(request, name):
    try:
        return request.getfixturevalue(name)
    except ToolkenError as e:  # the package that ships it is not installed
        pytest.skip(f"{name}: {e}")


@pytest.fixture(scope="module", params=TOKENIZERS)
def tiny_ext(request):
    """(tokenizer name, tiny random model, tokenizer) extended with test_decoding's TOOLS."""
    return (request.param, *extended(tokenizer_or_skip(request, request.param)))


@pytest.fixture(scope="module")
def planned(tiny_ext):
    """(tokenizer name, extended tokenizer, planner, SCHEMA compiled for it)."""
    name, _, tok = tiny_ext
    vocab = grammar.Vocabulary.from_tokenizer(tok)
    return name, tok, jf.JumpPlanner(tok, vocab), compile_arguments("get_weather", SCHEMA, vocab)


def canonical(tok, args):
    """The tokens of the arguments as the tokenizer splits the whole call (tool token first)."""
    ids = tok(LEAD + format_arguments(args), add_special_tokens=False).input_ids
    assert ids[0] == tok.convert_tokens_to_ids(LEAD)
    return list(ids[1:])


def walk(planner, compiled, target):
    """Decode `target` as a model that samples exactly its tokens would, jumping wherever the
    planner plans; every jump must append `target`'s own next tokens. Returns the jumped tokens."""
    m, call, jumped = grammar.Matcher(compiled), [], 0
    while len(call) < len(target):
        j = planner.plan(m, call, LEAD, room=1000)
        if j is not None:
            assert j.rollback == 0 and j.tokens, j
            assert j.tokens == target[len(call):len(call) + len(j.tokens)]
            call, m, jumped = call + j.tokens, j.matcher, jumped + len(j.tokens)
            continue
        assert m.accept_token(target[len(call)])
        call.append(target[len(call)])
    assert m.can_terminate()
    return jumped


ARGS = st.builds(
    lambda city, unit, days, lat, ok: {"city": city, "unit": unit, "days": days, "where": {"lat": lat, "ok": ok}},
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12), st.sampled_from(["c", "f"]),
    st.integers(-10**6, 10**6), st.floats(-90, 90, allow_nan=False).map(lambda x: round(x, 3)), st.booleans())


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=ARGS)
def test_forced_tokens_are_the_tokenizers_split_of_the_call(planned, args):
    name, tok, planner, compiled = planned
    target = canonical(tok, args)
    # a tokenizer that loses bytes (SmolLM2's GGUF vocabulary has no byte token for 0xF1) has no split to force
    assume(b"".join(planner.token_bytes(t) for t in target) == format_arguments(args).encode())
    jumped = walk(planner, compiled, target)
    # keys, separators and the closing braces are forced: at least the keys' own tokens jump
    assert jumped >= 4, (name, jumped)


def test_token_healing_rolls_back_a_non_canonical_last_token(planned):
    name, tok, planner, compiled = planned
    args = {"city": "Paris", "unit": "c", "days": 3, "where": {"lat": 1.5, "ok": True}}
    target = canonical(tok, args)
    text = format_arguments(args)
    m = grammar.Matcher(compiled)
    prefix = tok(LEAD + '{"city": "Paris', add_special_tokens=False).input_ids[1:]
    quote = next(i for i in range(len(tok)) if planner.token_bytes(i) == b'"')
    call = list(prefix) + [quote]  # the model closed the string with a bare `"`
    for t in call:
        assert m.accept_token(t)
    j = planner.plan(m, call, LEAD, room=1000)
    assert j is not None and j.rollback == 1, (name, j)
    healed = call[:-1] + j.tokens
    assert healed == target[:len(healed)]  # the tokenizer's own split: `",` then ` "`, `unit`, ...
    assert text.startswith(b"".join(planner.token_bytes(t) for t in healed).decode())
    assert len(healed) > len(call)
    assert j.matcher.num_accepted == len(healed) and m.num_accepted == len(call)  # the original is untouched


def test_last_forced_token_is_handed_back_when_the_value_may_merge_with_it(planned):
    name, tok, planner, compiled = planned
    m = grammar.Matcher(compiled)
    j = planner.plan(m, [], LEAD, room=1000)  # `{"city": "` is forced at the start
    assert j is not None and j.rollback == 0
    forced = b"".join(planner.token_bytes(t) for t in j.tokens)
    assert b'{"city"'.startswith(forced) or forced.startswith(b'{"city"'), forced
    assert not forced.endswith(b' "')  # ` "` can merge with the value's first characters
    j2 = planner.plan(m, [], LEAD, room=1)
    assert j2 is not None and len(j2.tokens) == 1 and j2.tokens == j.tokens[:1]


class Normalizing:
    """A tokenizer that drops the space after a colon (as some do around JSON separators)."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, text, add_special_tokens=False):
        return self.tok(text.replace(": ", ":"), add_special_tokens=add_special_tokens)


def test_text_a_tokenizer_normalizes_is_never_forced(planned):
    name, tok, planner, compiled = planned
    normalizing = jf.JumpPlanner(Normalizing(tok), planner.vocab)
    assert normalizing.encode(LEAD, '{"city": "') is None
    assert normalizing.plan(grammar.Matcher(compiled), [], LEAD, room=1000) is None
    assert planner.encode(LEAD, '{"city": "') is not None


# ---------------------------------------------------------------------------------------------
# decoding on tiny models
# ---------------------------------------------------------------------------------------------
class Oracle(LogitsProcessor):
    """Stands in for a model that knows the answer: while a row's generated ids are a prefix of
    its target, the target's next token gets +100 (the model "chooses the forced tokens")."""

    def __init__(self, targets, pad_id):
        self.targets, self.pad_id = targets, pad_id  # prompt tuple -> target ids

    def __call__(self, input_ids, scores):
        for b, row in enumerate(input_ids.tolist()):
            while row and row[0] == self.pad_id:
                row = row[1:]
            for prompt, target in self.targets.items():
                gen = row[len(prompt):]
                if tuple(row[:len(prompt)]) == prompt and gen == target[:len(gen)] and len(gen) < len(target):
                    scores[b, target[len(gen)]] += 100.0
        return scores


def target_for(model, tok, tool, args):
    reg = toolken.registry(model)
    ids = tok(f"<<{tool}>>" + format_arguments(args), add_special_tokens=False).input_ids
    assert ids[0] == reg.token_ids[tool]
    return list(ids) + [tok.eos_token_id]


def run_both(model, tok, prompts, targets, max_new_tokens=60, mode=True, oracle=None):
    """(step-by-step ids via generate, jump-forward ids, forwards step-by-step, forwards jumping);
    `oracle`: the logits processor of both (default: an `Oracle` of `targets`)."""
    eos = tok.eos_token_id
    encoded = [render_prompt(tok, [{"role": "user", "content": p}]) for p in prompts]
    if oracle is None:
        oracle = Oracle({tuple(e): t for e, t in zip(encoded, targets)}, eos)
    proc = ToolCallLogitsProcessor(tok, model, mode="required", eos_token_id=eos)
    input_ids, mask = left_pad_prompts(model, encoded, eos)
    count = {"n": 0}
    hook = model.register_forward_pre_hook(lambda *a: count.__setitem__("n", count["n"] + 1))
    try:
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=eos, eos_token_id=eos, logits_processor=[oracle, proc])
        steps = count["n"]
        count["n"] = 0
        stats = {}
        jumped = jf.generate_ids(model, ToolCallLogitsProcessor(tok, model, mode="required", eos_token_id=eos),
                                 encoded, eos, max_new_tokens, [oracle], jump_forward=mode, stats=stats)
    finally:
        hook.remove()
    stepped = [[t for t in row] for row in out[:, input_ids.shape[1]:].tolist()]
    stepped = [row[:row.index(eos) + 1] if eos in row else row for row in stepped]
    assert stats["forwards"] == count["n"]
    return stepped, jumped, steps, count["n"]


CALLS = [("get_weather", {"city": "Paris", "unit": "c"}), ("add", {"a": 2, "b": 40}),
         ("get_time", {"tz": "Asia/Tok"}), ("ping", {})]
PROMPTS = ["Weather in Paris?", "Add 2 and 40", "What time is it in Tokyo?", "ping the server"]


@pytest.mark.parametrize("mode", ["verify", "force"])
def test_jump_forward_equals_step_by_step_where_the_model_chooses_the_forced_tokens(tiny_ext, mode):
    _, model, tok = tiny_ext
    targets = [target_for(model, tok, name, args) for name, args in CALLS]
    stepped, jumped, steps, jumps = run_both(model, tok, PROMPTS, targets, mode=mode)
    assert stepped == targets  # the oracle model picks the tokenizer's split everywhere
    assert jumped == stepped
    assert jumps < steps, (jumps, steps)


@pytest.mark.parametrize("mode", ["verify", "force"])
@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(city=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=8),
       unit=st.sampled_from(["c", "f", None]), budget=st.integers(1, 40))
def test_jump_forward_equals_step_by_step_for_any_arguments_and_budget(tiny_smollm2, mode, city, unit, budget):
    model, tok = tiny_smollm2
    args = {"city": city, **({"unit": unit} if unit else {})}
    target = target_for(model, tok, "get_weather", args)
    vocab = grammar.Vocabulary.from_tokenizer(tok)
    assume(b"".join(vocab.token_bytes(t) for t in target[1:-1]) == format_arguments(args).encode())  # lossless
    stepped, jumped, steps, jumps = run_both(model, tok, ["Weather?"], [target], max_new_tokens=budget, mode=mode)
    assert stepped == [target[:budget]]
    assert jumped == stepped
    assert jumps <= steps


class Speller(LogitsProcessor):
    """Stands in for SmolLM2-135M before training on calls: it spells forced text in short
    pieces (``{``, ``"``, ``c``...) where the tokenizer writes ``{"``, ``city``: every token
    loses 3 per byte beyond its first."""

    def __init__(self, planner):
        lengths = torch.tensor([len(planner.token_bytes(i)) for i in range(planner.vocab.size)], dtype=torch.float32)
        self.bias = -3.0 * (lengths - 1).clamp(min=0)

    def __call__(self, input_ids, scores):
        scores[:, :len(self.bias)] += self.bias.to(scores.device)[:scores.shape[1]]
        return scores


def test_verified_jumps_equal_step_by_step_where_the_model_spells_the_forced_text_otherwise(tiny_ext):
    name, model, tok = tiny_ext
    speller = Speller(jf.JumpPlanner(tok, grammar.Vocabulary.from_tokenizer(tok)))
    stepped, verified, steps, passes = run_both(model, tok, PROMPTS, [], max_new_tokens=30, oracle=speller)
    assert verified == stepped
    assert passes <= steps
    _, forced, _, _ = run_both(model, tok, PROMPTS, [], max_new_tokens=30, mode="force", oracle=speller)
    # what made the calls differ before verification: forced tokens are not the model's own split
    assert forced != stepped, name


def test_verified_jumps_keep_the_agreeing_part_of_a_draft(tiny_ext):
    """The model writes the call in the tokenizer's split except one key, spelled byte by byte:
    a draft is then accepted up to that key and replaced from there."""
    name, model, tok = tiny_ext
    planner = jf.JumpPlanner(tok, grammar.Vocabulary.from_tokenizer(tok))
    text = format_arguments({"city": "Paris", "unit": "c"})
    head, tail = text.split("unit", 1)
    full = canonical(tok, {"city": "Paris", "unit": "c"})
    split_head = tok(LEAD + head, add_special_tokens=False).input_ids[1:]
    assume_bytes = b"".join(planner.token_bytes(t) for t in split_head) == head.encode()
    if not assume_bytes or full[:len(split_head)] != split_head:
        pytest.skip(f"{name}: the call's split has no boundary before the key")
    spelled = [planner.longest_split(bytes([c]))[0] for c in b"unit"]
    target = [toolken.registry(model).token_ids["get_weather"], *split_head, *spelled,
              *planner.longest_split(tail.encode()), tok.eos_token_id]
    stepped, verified, steps, passes = run_both(model, tok, ["Weather?"], [target], max_new_tokens=40)
    assert stepped == [target] and verified == stepped
    assert passes < steps, (passes, steps)  # `{"`, `city`, `":` ... were accepted from drafts


def test_an_unknown_jump_forward_value_is_refused(tiny_smollm2):
    model, tok = tiny_smollm2
    with pytest.raises(ToolkenError, match="jump_forward"):
        toolken.generate_tool_calls(model, tok, "Weather?", max_new_tokens=2, jump_forward="sometimes")


@pytest.fixture(scope="module")
def tiny_smollm2(smollm2_tokenizer):
    return extended(smollm2_tokenizer)


def test_without_jumps_the_loop_reproduces_generate_on_a_left_padded_batch(tiny_smollm2):
    model, tok = tiny_smollm2
    eos = tok.eos_token_id
    prompts = [render_prompt(tok, [{"role": "user", "content": p}])
               for p in ["Weather in Paris?", "Add 2 and 40 please, quickly", "ping"]]
    nudge = Nudge(tok)
    input_ids, mask = left_pad_prompts(model, prompts, eos)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=30, do_sample=False,
                             pad_token_id=eos, eos_token_id=eos,
                             logits_processor=[nudge, ToolCallLogitsProcessor(tok, model, mode="auto", tool_bias=4.0)])
    expected = [row[:row.index(eos) + 1] if eos in row else row for row in out[:, input_ids.shape[1]:].tolist()]
    got = jf.generate_ids(model, ToolCallLogitsProcessor(tok, model, mode="auto", tool_bias=4.0), prompts, eos, 30,
                          [nudge], jump_forward=False)
    assert got == expected


def test_generate_tool_calls_jumps_by_default_and_calls_are_valid(tiny_smollm2):
    model, tok = tiny_smollm2
    prompts = ["Weather in Paris?", "Add 2 and 40", "What time is it in Tokyo?", "ping the server"]
    nudge = Nudge(tok, eos_boost=12.0)
    count = {"n": 0}
    hook = model.register_forward_pre_hook(lambda *a: count.__setitem__("n", count["n"] + 1))
    try:
        jumped = toolken.generate_tool_calls(model, tok, prompts, mode="required", max_new_tokens=40,
                                             logits_processor=[nudge])
        forwards_jumped = count["n"]
        count["n"] = 0
        stepped = toolken.generate_tool_calls(model, tok, prompts, mode="required", max_new_tokens=40,
                                              logits_processor=[nudge], jump_forward=False)
    finally:
        hook.remove()
    assert forwards_jumped <= count["n"]
    assert [(r.text, r.tool_calls, r.incomplete) for r in jumped] == [(r.text, r.tool_calls, r.incomplete) for r in stepped]
    # strict parsing (the default) raises on a finished call whose arguments do not validate
    completed = [c for r in jumped for c in r.tool_calls]
    assert completed, "no completed call"
    assert {c.name for c in completed} <= set(TOOLS.names)
    assert len(stepped) == len(jumped)


def test_sampling_and_beams_fall_back_to_generate(tiny_smollm2):
    model, tok = tiny_smollm2
    assert jf.supports(model, {"max_new_tokens": 5})
    assert not jf.supports(model, {"do_sample": True})
    assert not jf.supports(model, {"num_beams": 2})
    assert not jf.supports(model, {"repetition_penalty": 1.2})
    torch.manual_seed(0)
    r = toolken.generate_tool_calls(model, tok, "Weather?", mode="required", max_new_tokens=8, do_sample=True)
    assert set(TOOLS.names) >= {c.name for c in r.tool_calls}
