"""Constrained tool-call decoding: the processor's gate and modes, parsing, retrieve, errors.

Tiny random Llama models (any weights) with SmolLM2's real tokenizer, extended with a few tools.
The grammar-constrained argument tests live in test_decoding_args.py.
"""
import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LlamaForCausalLM, LogitsProcessor

import toolken
from toolken import DecodingError, Tool, ToolSet
from tiny import tiny_llama as shared_tiny_llama
from toolken.decoding import ToolCallLogitsProcessor
from toolken.generation import parse_tool_calls, render_prompt

TOOLS = ToolSet([
    Tool("get_weather", "Current weather in a city",
         {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
          "required": ["city"]}),
    Tool("get_time", "Current time in a time zone",
         {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 8}}, "required": ["tz"]}),
    Tool("add", "Add two integers",
         {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "required": ["a", "b"], "additionalProperties": False}),
    Tool("ping", "Check the connection", {"type": "object", "properties": {}}),
])
SPARE_ROWS = 40  # output rows beyond the tokenizer (padded vocabularies): never allowed


def tiny_llama(vocab_rows: int, seed: int = 0, max_positions: int = 512) -> LlamaForCausalLM:
    return shared_tiny_llama(vocab_rows, seed=seed, max_position_embeddings=max_positions).eval()


def extended(tokenizer, seed=0, tools=TOOLS, max_positions=512):
    tok = copy.deepcopy(tokenizer)
    model = tiny_llama(len(tok) + len(tools) + SPARE_ROWS, seed, max_positions)
    model.generation_config.eos_token_id = tok.eos_token_id
    # random rows: "mean" would give every tool the same row, so retrieval scores would tie
    return toolken.extend(model, tok, tools, init="random", trainable=None, seed=seed)


@pytest.fixture(scope="module")
def ext(smollm2_tokenizer):
    return extended(smollm2_tokenizer)


def tool_ids(model):
    return set(toolken.registry(model).token_ids.values())


class Nudge(LogitsProcessor):
    """A plain logits processor standing in for a model that knows JSON (random tiny models
    rarely close a string by chance); the constrained processor masks after it.

    Favours tokens with a `"` by `boost` (they close strings), other JSON delimiters (`}`, `]`,
    `,`) by `boost / 2`, short alphanumeric tokens (digits, `true`) by `boost / 4`, EOS by
    `eos_boost`; disfavours whitespace-only tokens."""

    _texts: dict = {}  # decoding 49k tokens takes seconds: once per base vocabulary

    def __init__(self, tokenizer, boost=8.0, eos_boost=4.0):
        key = (type(tokenizer).__name__, tokenizer.vocab_size)
        if key not in Nudge._texts:
            Nudge._texts[key] = tokenizer.batch_decode([[i] for i in range(tokenizer.vocab_size)])
        texts = Nudge._texts[key]
        bias = torch.zeros(len(tokenizer))
        for i, t in enumerate(texts):
            if '"' in t:
                bias[i] = boost
            elif set(t) & set("}],"):
                bias[i] = boost / 2
            elif t.strip().isalnum() and len(t.strip()) <= 4:
                bias[i] = boost / 4
            elif t and not t.strip():
                bias[i] = -boost
        bias[tokenizer.eos_token_id] = eos_boost
        self.bias = bias

    def __call__(self, input_ids, scores):
        scores[:, : len(self.bias)] += self.bias
        return scores


# ---------------------------------------------------------------------------------------------
# the gate (no grammar needed): TEXT and START states on synthetic scores
# ---------------------------------------------------------------------------------------------
def test_text_state_blocks_disabled_tools_and_spare_rows_and_biases_enabled(ext):
    model, tok = ext
    reg = toolken.registry(model)
    V = model.config.vocab_size
    proc = ToolCallLogitsProcessor(tok, model, tools=["get_weather", "add"], tool_bias=3.0)
    scores = torch.randn(2, V)
    out = proc(torch.zeros(2, 5, dtype=torch.long), scores.clone())
    for name, tid in reg.token_ids.items():
        if name in ("get_weather", "add"):
            assert torch.allclose(out[:, tid], scores[:, tid] + 3.0)
        else:
            assert torch.isneginf(out[:, tid]).all()
    assert torch.isneginf(out[:, len(tok):]).all() and len(tok) < V
    ids = tool_ids(model)
    text = [i for i in range(len(tok)) if i not in ids]
    assert torch.equal(out[:, text], scores[:, text])


@pytest.mark.parametrize("mode", ["none", "required"])
def test_none_and_required_first_step(ext, mode):
    model, tok = ext
    V = model.config.vocab_size
    proc = ToolCallLogitsProcessor(tok, model, tools=["get_time", "ping"], mode=mode, tool_bias=5.0)
    out = proc(torch.zeros(3, 4, dtype=torch.long), torch.randn(3, V))
    allowed = set(torch.isfinite(out).all(0).nonzero().flatten().tolist())
    ids = tool_ids(model)
    if mode == "none":
        assert not allowed & ids and len(allowed) == len(tok) - len(ids)
    else:
        reg = toolken.registry(model)
        assert allowed == {reg.id_of("get_time"), reg.id_of("ping")}


@pytest.mark.parametrize("seed", [0, 1])
def test_mode_none_never_emits_a_tool_token(smollm2_tokenizer, seed):
    model, tok = extended(smollm2_tokenizer, seed=seed)
    # a huge bias would make every step a tool token if "none" leaked one
    res = toolken.generate_tool_calls(model, tok, ["hi", "what is the weather in a long prompt here?"],
                                      mode="none", tool_bias=100.0, max_new_tokens=12, do_sample=True)
    for r in res:
        assert not set(r.token_ids) & tool_ids(model) and r.tool_calls == [] and r.incomplete is None


def test_auto_with_bias_calls_only_enabled_tools(ext):
    """With a large tool bias the first token is a tool token, and only an enabled one."""
    model, tok = ext
    proc = ToolCallLogitsProcessor(tok, model, tools=["get_time"], tool_bias=1e4)
    out = model.generate(input_ids=torch.tensor([[1, 2, 3]]), logits_processor=[proc], max_new_tokens=1,
                         do_sample=True, pad_token_id=2)
    assert out[0, -1].item() == toolken.registry(model).id_of("get_time")


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------
def encode(tok, text, eos=True):
    return tok(text, add_special_tokens=False).input_ids + ([tok.eos_token_id] if eos else [])


def test_parse_text_and_parallel_calls(ext):
    model, tok = ext
    ids = encode(tok, 'Sure. <<get_weather>>{"city": "Paris"}<<add>>{"a":1,"b":2}') + [tok.eos_token_id] * 3
    r = parse_tool_calls(ids, tok, model)
    text, calls = r
    assert text == "Sure. " and r.incomplete is None and r.invalid == []
    assert calls == [toolken.ToolCall("get_weather", {"city": "Paris"}), toolken.ToolCall("add", {"a": 1, "b": 2})]
    assert calls[1].to_openai() == {"type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}


def test_parse_incomplete_and_invalid(ext):
    model, tok = ext
    cut = parse_tool_calls(encode(tok, '<<get_weather>>{"city": "Par', eos=False), tok, model)
    assert cut.tool_calls == [] and cut.incomplete.name == "get_weather" and "not JSON" in cut.incomplete.error
    bad = encode(tok, '<<add>>{"a": 1}<<ping>>{}')
    with pytest.raises(DecodingError, match="'add'.*'b' is a required property"):
        parse_tool_calls(bad, tok, model)
    r = parse_tool_calls(bad, tok, model, strict=False)
    assert r.tool_calls == [toolken.ToolCall("ping", {})] and r.invalid[0].name == "add"


# BMP only: SmolLM2's GGUF tokenizer loses 4-byte UTF-8 characters (they decode to U+FFFD)
json_text = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=12)
call_args = st.one_of(
    st.builds(lambda c, u: ("get_weather", {"city": c, **({"unit": u} if u else {})}), json_text,
              st.sampled_from([None, "c", "f"])),
    st.builds(lambda a, b: ("add", {"a": a, "b": b}), st.integers(-10**6, 10**6), st.integers(-10**6, 10**6)),
    st.just(("ping", {})),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(["", "Let me check. ", "ok\n"]), calls=st.lists(call_args, min_size=0, max_size=3),
       compact=st.booleans())
def test_parse_roundtrips_the_training_format(ext, prefix, calls, compact):
    """Text in the training format (toolken.data.format_tool_calls) parses back to the calls."""
    model, tok = ext
    sep = (",", ":") if compact else (", ", ": ")
    text = prefix + "".join(f"<<{n}>>" + json.dumps(a, separators=sep, ensure_ascii=False) for n, a in calls)
    r = parse_tool_calls(encode(tok, text), tok, model)
    assert [(c.name, c.arguments) for c in r.tool_calls] == calls
    assert r.text == prefix and r.incomplete is None


# ---------------------------------------------------------------------------------------------
# retrieve
# ---------------------------------------------------------------------------------------------
def test_retrieve_topk_distinct_sorted_and_matches_a_plain_forward(ext):
    model, tok = ext
    reg = toolken.registry(model)
    got = toolken.retrieve(model, tok, "weather in Paris?", k=3)
    names = [n for n, _ in got]
    scores = [s for _, s in got]
    assert len(set(names)) == 3 and scores == sorted(scores, reverse=True)
    ids = torch.tensor([render_prompt(tok, [{"role": "user", "content": "weather in Paris?"}])])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
    ref = sorted(((n, logp[reg.id_of(n)].item()) for n in reg.names), key=lambda x: -x[1])[:3]
    assert names == [n for n, _ in ref]
    assert scores == pytest.approx([s for _, s in ref], abs=1e-4)


def test_retrieve_per_sentence_is_each_tools_best_sentence(ext):
    """per_sentence: every sentence scored apart, renormalized over the enabled tools, a tool's
    best sentence; against single-sentence `retrieve` calls, in one batch and as messages."""
    model, tok = ext
    enabled = ["add", "ping", "get_time", "get_weather"]
    query = "What time is it in Tokyo? Then add 2 and 3. And ping the server!"
    sentences = ["What time is it in Tokyo?", "Then add 2 and 3.", "And ping the server!"]
    system = {"role": "system", "content": "You call tools."}

    def best_sentence(prompts):
        per = [dict(toolken.retrieve(model, tok, p, k=len(enabled), tools=enabled)) for p in prompts]
        norm = [{n: v - torch.logsumexp(torch.tensor(list(p.values())), 0).item() for n, v in p.items()} for p in per]
        return sorted(((n, max(p[n] for p in norm)) for n in enabled), key=lambda x: -x[1])[:3]

    def assert_same(got, want):
        assert [n for n, _ in got] == [n for n, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-4)

    got = toolken.retrieve(model, tok, query, k=3, tools=enabled, per_sentence=True)
    assert_same(got, best_sentence(sentences))
    batch = toolken.retrieve(model, tok, ["ping it", query], k=3, tools=enabled, per_sentence=True)
    assert_same(batch[1], got)
    # a one-sentence query ranks as without per_sentence
    assert [n for n, _ in batch[0]] == [n for n, _ in toolken.retrieve(model, tok, "ping it", k=3, tools=enabled)]
    # messages: the last user message is split, the turns before it kept
    as_msgs = toolken.retrieve(model, tok, [system, {"role": "user", "content": query}], k=3, tools=enabled,
                               per_sentence=True)
    assert_same(as_msgs, best_sentence([[system, {"role": "user", "content": s}] for s in sentences]))
    with pytest.raises(DecodingError, match="per_sentence: query #0 has no user message"):
        toolken.retrieve(model, tok, [[system]], per_sentence=True)


def test_retrieve_batch_with_left_padding_equals_single_queries(ext):
    model, tok = ext
    queries = ["hi", "what time is it in a very long and wordy question about Tokyo?", "add 2 and 3"]
    batch = toolken.retrieve(model, tok, queries, k=10, tools=["add", "ping", "get_time"])
    for q, b in zip(queries, batch):
        single = toolken.retrieve(model, tok, q, k=10, tools=["add", "ping", "get_time"])
        assert len(single) == 3  # k is capped at the number of enabled tools
        assert [n for n, _ in b] == [n for n, _ in single]
        assert [s for _, s in b] == pytest.approx([s for _, s in single], abs=1e-4)
        assert {n for n, _ in b} == {"add", "ping", "get_time"}


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_clear_errors(ext, smollm2_tokenizer):
    model, tok = ext
    with pytest.raises(DecodingError, match="'nope' is not registered"):
        ToolCallLogitsProcessor(tok, model, tools=["get_time", "nope"])
    with pytest.raises(DecodingError, match="unknown mode 'always'"):
        ToolCallLogitsProcessor(tok, model, mode="always")
    with pytest.raises(DecodingError, match="'required' needs at least one enabled tool"):
        ToolCallLogitsProcessor(tok, model, tools=[], mode="required")
    with pytest.raises(toolken.NotExtendedError, match="never extended"):
        toolken.generate_tool_calls(tiny_llama(len(smollm2_tokenizer)), smollm2_tokenizer, "hi")
    with pytest.raises(toolken.NotExtendedError, match="never extended"):
        toolken.retrieve(tiny_llama(len(smollm2_tokenizer)), smollm2_tokenizer, "hi")
    with pytest.raises(DecodingError, match="more than the model's 512 positions"):
        toolken.generate_tool_calls(model, tok, "word " * 600, max_new_tokens=4)
    with pytest.raises(DecodingError, match="more than the model's 512 positions"):
        toolken.retrieve(model, tok, "word " * 600)
    with pytest.raises(DecodingError, match="k must be a positive integer"):
        toolken.retrieve(model, tok, "hi", k=0)
    with pytest.raises(DecodingError, match="must be a string, a list of chat messages"):
        toolken.generate_tool_calls(model, tok, 42)
    with pytest.raises(DecodingError, match="needs 'role' and 'content'"):
        toolken.generate_tool_calls(model, tok, [{"text": "hi"}])
