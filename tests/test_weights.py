"""Loss-weight policies (toolken.weights): uniform, tool_tokens, TL-Training key tokens, custom."""
import copy
import json

import pytest
import torch
from hypothesis import given, strategies as st

from toolken import weights
from toolken.errors import ToolkenError
from toolken.registry import ToolRegistry
from toolken.tools import Tool, ToolSet

IGN = -100

# -- synthetic labels ------------------------------------------------------------------------


def test_uniform_and_tool_tokens():
    labels = torch.tensor([IGN, IGN, 5, 900, 7, IGN, 901, 3])
    assert weights.apply_policy("uniform", labels).tolist() == [0, 0, 1, 1, 1, 0, 1, 1]
    w = weights.apply_policy(weights.tool_tokens(4.0), labels, tool_token_ids=[900, 901])
    assert w.tolist() == [0, 0, 1, 4, 1, 0, 4, 1]
    assert w.dtype == torch.float32


def _delimiter_free_tokenizer():
    """decode() for synthetic ids: id -> a word with no JSON structural characters."""
    class Tok:
        def decode(self, ids):
            return f"w{ids[0]} "
    return Tok()


def test_tl_training_weight_formula_and_cap():
    tok = _delimiter_free_tokenizer()
    # one turn: first token (key), tool token (key), 6 other tokens -> w_key = 6 / 2 = 3
    labels = torch.tensor([IGN, 11, 12, 900, 13, 14, 15, 16, 17])
    w = weights.apply_policy(weights.tl_training(9), labels, tool_token_ids=[900], tokenizer=tok)
    assert w.tolist() == [0, 3, 1, 3, 1, 1, 1, 1, 1]
    # the cap: 2 keys, 40 others -> min(20, max_weight=9)
    labels = torch.tensor([11, 900] + list(range(20, 60)))
    w = weights.apply_policy(weights.tl_training(max_weight=9), labels, tool_token_ids=[900], tokenizer=tok)
    assert w[:2].tolist() == [9, 9] and set(w[2:].tolist()) == {1.0}
    # as many keys as others: nothing is boosted
    labels = torch.tensor([11, 900, 12, 13])
    w = weights.apply_policy("tl_training", labels, tool_token_ids=[900], tokenizer=tok)
    assert w.tolist() == [1, 1, 1, 1]


def test_tl_training_is_per_sequence_in_a_batch():
    tok = _delimiter_free_tokenizer()
    rows = [[IGN, 11, 900, 12, 13, 14, 15], [IGN, IGN, 21, 22, 23, 24, 25]]
    policy = weights.tl_training(9, delimiters=True)
    batch = weights.apply_policy(policy, rows, tool_token_ids=[900], tokenizer=tok)
    for b, row in enumerate(rows):
        alone = weights.apply_policy(policy, row, tool_token_ids=[900], tokenizer=tok)
        assert torch.equal(batch[b], alone)
    assert batch[0, 1] == 2.0 and batch[1, 2] == 4.0  # 4 others / 2 keys; 4 others / 1 key


def test_each_assistant_turn_has_its_own_first_token():
    tok = _delimiter_free_tokenizer()
    labels = torch.tensor([IGN, 1, 2, 3, IGN, IGN, 4, 5, 6, 7, 8, 9, 10])
    key = weights.key_token_mask(labels, tool_token_ids=[], tokenizer=tok)
    assert key.nonzero().flatten().tolist() == [1, 6]


def test_tl_training_needs_a_tokenizer_for_delimiters():
    with pytest.raises(ToolkenError, match="tokenizer"):
        weights.apply_policy("tl_training", torch.tensor([1, 2]), tool_token_ids=[1])
    w = weights.apply_policy(weights.tl_training(delimiters=False), torch.tensor([1, 2, 3, 4]), tool_token_ids=[9])
    assert w.tolist() == [3, 1, 1, 1]


# -- JSON structure scanner against a recursive reference -------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab,:{}[]"\\ \n'), max_size=6),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(alphabet='k,:"\\{', max_size=3), kids, max_size=3),
    max_leaves=8,
)


def _skeleton(v) -> str:
    """The structural characters json.dumps writes for `v`, in order."""
    if isinstance(v, dict):
        return "{" + ",".join('"":' + _skeleton(x) for x in v.values()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_skeleton(x) for x in v) + "]"
    if isinstance(v, str):
        return '""'
    return ""


@given(json_values, st.booleans())
def test_json_structural_chars_match_reference(value, compact):
    text = json.dumps(value, separators=(",", ":") if compact else None)
    marks = weights.json_structural_chars(text)
    assert "".join(c for c, m in zip(text, marks) if m) == _skeleton(value)


# -- policies as callables ---------------------------------------------------------------------


def test_resolve_policy_and_custom_callables():
    labels = torch.tensor([IGN, 4, 5])
    assert weights.apply_policy(None, labels).tolist() == [0, 1, 1]
    # a callable that only takes labels gets no context keywords; ignored positions are forced to 0
    assert weights.apply_policy(lambda labels: torch.full(labels.shape, 2.0), labels).tolist() == [0, 2, 2]
    # one that declares tool_token_ids gets them
    seen = {}

    def custom(labels, tool_token_ids):
        seen["ids"] = list(tool_token_ids)
        return torch.ones(labels.shape)

    weights.apply_policy(custom, labels, tool_token_ids=[7, 8])
    assert seen["ids"] == [7, 8]
    with pytest.raises(ToolkenError, match="unknown weight policy"):
        weights.resolve_policy("nope")
    with pytest.raises(ToolkenError, match="negative or non-finite"):
        weights.apply_policy(lambda labels: -torch.ones(labels.shape), labels)
    with pytest.raises(ToolkenError, match="shape"):
        weights.apply_policy(lambda labels: torch.ones(5), labels)
    with pytest.raises(ToolkenError):
        weights.tool_tokens(float("nan"))
    with pytest.raises(ToolkenError):
        weights.tl_training(max_weight=0.5)


# -- real tokenized example (SmolLM2 tokenizer, chat template) --------------------------------


@pytest.fixture(scope="module")
def tok_and_registry(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    tools = ToolSet([
        Tool("get_weather", "Current weather in a city",
             {"type": "object", "properties": {"city": {"type": "string"}}}),
        Tool("get_time", "Current time in a time zone",
             {"type": "object", "properties": {"tz": {"type": "string"}}}),
    ])
    tokens = {n: f"<<{n}>>" for n in tools.names}
    tok.add_tokens(list(tokens.values()))
    reg = ToolRegistry(tools=tools, tokens=tokens,
                       token_ids={n: tok.convert_tokens_to_ids(t) for n, t in tokens.items()})
    return tok, reg


CONVERSATION = [
    {"role": "user", "content": "Weather in Paris, and the time?"},
    {"role": "assistant", "content": "Sure.", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris, FR"}'}},
        {"type": "function", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]},
    {"role": "tool", "content": "sunny, 14:05"},
    {"role": "assistant", "content": "It is sunny."},
]


def test_tl_training_key_tokens_on_a_real_trajectory(tok_and_registry):
    from toolken import data

    tok, reg = tok_and_registry
    rec = data.trajectory_records(tok, reg, [CONVERSATION], policy="tl_training")[0]
    labels = torch.tensor(rec["labels"])
    key = weights.key_token_mask(labels, tool_token_ids=reg.tool_token_ids, tokenizer=tok)
    pieces = [tok.decode([i]) for i in labels[key].tolist()]
    # hand-checked on SmolLM2's BPE: per turn the first token, each tool token, and the argument
    # tokens that carry JSON structure; the comma inside "Paris, FR" and text tokens are not keys
    assert pieces == ["Sure", "<<get_weather>>", '{"', '":', ' "', '"}',
                      "<<get_time>>", '{"', '":', ' "', '"}', "It"]
    trained = labels != IGN
    n_key, n_other = int(key.sum()), int(trained.sum() - key.sum())
    w = torch.tensor(rec["loss_weights"])
    assert n_key < n_other
    assert torch.allclose(w[key], torch.tensor(min(n_other / n_key, 9.0)))
    assert torch.all(w[trained & ~key] == 1) and torch.all(w[~trained] == 0)
