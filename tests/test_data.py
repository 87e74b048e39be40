"""ToolGen training records (toolken.data): label masks, tool-token round trip, Seal-Tools, batches."""
import copy
import gzip
import json
import os
import re

import pytest
import torch
from hypothesis import given, strategies as st

from toolken import data
from toolken.errors import DataError
from toolken.registry import ToolRegistry
from toolken.tools import Tool, ToolSet

IGN = -100


def _extended(tokenizer, tools: ToolSet):
    """A copy of `tokenizer` with one added token per tool and the matching registry."""
    tok = copy.deepcopy(tokenizer)
    tokens = {n: f"<<{n}>>" for n in tools.names}
    tok.add_tokens(list(tokens.values()))
    reg = ToolRegistry(tools=tools, tokens=tokens,
                       token_ids={n: tok.convert_tokens_to_ids(t) for n, t in tokens.items()})
    return tok, reg


TOOLS = ToolSet([
    Tool("get_weather", "Current weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}}),
    Tool("get_time", "Current time in a time zone", {"type": "object", "properties": {"tz": {"type": "string"}}}),
])

CONVERSATION = [
    {"role": "system", "content": "You call tools."},
    {"role": "user", "content": "Weather in Paris, and the time?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "c2", "content": "14:05"},
    {"role": "assistant", "content": "Sunny, and it is 14:05."},
]
TURN_1 = '<<get_weather>>{"city": "Paris"}<<get_time>>{"tz": "CET"}'
TURN_2 = "Sunny, and it is 14:05."


@pytest.fixture(scope="module")
def smol(smollm2_tokenizer):
    return _extended(smollm2_tokenizer, TOOLS)


def _trained_runs(tok, rec):
    """Decoded text of each maximal run of trained positions."""
    runs, cur = [], []
    for i, lab in zip(rec["input_ids"], rec["labels"]):
        if lab != IGN:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


@pytest.mark.parametrize("chat_template", [None, False], ids=["chat-template", "plain"])
def test_trajectory_trains_only_assistant_turns(smol, chat_template):
    tok, reg = smol
    rec = data.trajectory_records(tok, reg, [CONVERSATION], chat_template=chat_template)[0]
    assert set(rec) == {"input_ids", "attention_mask", "labels", "loss_weights"}
    assert len({len(v) for v in rec.values()}) == 1
    # the trained spans are exactly the two assistant completions with their end of turn
    assert _trained_runs(tok, rec) == [TURN_1 + tok.eos_token, TURN_2 + tok.eos_token]
    # each tool token is its single id, once, and trained
    for name in TOOLS.names:
        assert rec["input_ids"].count(reg.id_of(name)) == 1
        assert rec["labels"].count(reg.id_of(name)) == 1
    # the system, user and tool turns are context only
    prompt_ids = [i for i, lab in zip(rec["input_ids"], rec["labels"]) if lab == IGN]
    prompt = tok.decode(prompt_ids)
    for text in ("You call tools.", "Weather in Paris, and the time?", "sunny", "14:05"):
        assert text in prompt
    assert rec["loss_weights"] == [float(lab != IGN) for lab in rec["labels"]]


def test_chat_template_text_is_the_tokenizers_rendering(smol):
    tok, reg = smol
    rec = data.trajectory_records(tok, reg, [CONVERSATION])[0]
    plain = [{"role": m["role"], "content": m["content"]} for m in CONVERSATION]
    plain[2]["content"] = TURN_1
    expected = tok.apply_chat_template(plain, tokenize=False)
    assert tok.decode(rec["input_ids"]) == expected


@pytest.mark.parametrize("chat_template", [None, False], ids=["chat-template", "plain"])
def test_generation_prompt_is_the_training_prefix(smol, chat_template):
    """What decoding prompts with (`render_prompt_text`) is exactly the record's context before
    the first trained assistant position: the model is asked in the layout it was trained on."""
    tok, reg = smol
    messages = [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": TURN_1}]
    rec = data.encode_conversation(tok, reg, messages, chat_template=chat_template)
    first = next(i for i, lab in enumerate(rec["labels"]) if lab != IGN)
    prompt = data.render_prompt_text(tok, messages[:1], chat_template=chat_template)
    assert tok(prompt, add_special_tokens=False).input_ids == rec["input_ids"][:first]
    assert rec["input_ids"][first] == reg.id_of("get_weather")
    with pytest.raises(DataError, match="message 0"):
        data.render_prompt_text(tok, [{"content": "no role"}], chat_template=chat_template)


def test_train_on_last_and_max_length(smol):
    tok, reg = smol
    rec = data.trajectory_records(tok, reg, [CONVERSATION], train_on="last")[0]
    assert _trained_runs(tok, rec) == [TURN_2 + tok.eos_token]
    short = data.trajectory_records(tok, reg, [{"messages": CONVERSATION}], max_length=10)[0]
    assert all(len(v) == 10 for v in short.values())


def test_memorization_records(smol):
    tok, reg = smol
    recs = data.memorization_records(tok, reg)
    assert len(recs) == 2
    for name, rec in zip(TOOLS.names, recs):
        assert [lab for lab in rec["labels"] if lab != IGN] == [reg.id_of(name), tok.eos_token_id]
        prompt = tok.decode([i for i, lab in zip(rec["input_ids"], rec["labels"]) if lab == IGN])
        assert name in prompt and TOOLS[name].description in prompt


def test_weight_policy_is_applied(smol):
    tok, reg = smol
    rec = data.memorization_records(tok, reg, tools=["get_time"], policy=data_tool_policy())[0]
    w = dict(zip(rec["labels"], rec["loss_weights"]))
    assert w[reg.id_of("get_time")] == 3.0 and w[tok.eos_token_id] == 1.0


def data_tool_policy():
    from toolken.weights import tool_tokens

    return tool_tokens(3.0)


def test_bad_tool_calls_are_data_errors(smol):
    tok, reg = smol
    unknown = [{"role": "user", "content": "x"},
               {"role": "assistant", "tool_calls": [{"function": {"name": "nope", "arguments": "{}"}}]}]
    with pytest.raises(DataError, match="'nope'"):
        data.trajectory_records(tok, reg, [unknown])
    bad_json = [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "get_time", "arguments": "{tz:"}}]}]
    with pytest.raises(DataError, match="not valid JSON"):
        data.trajectory_records(tok, reg, [bad_json])
    with pytest.raises(DataError, match="no assistant turn"):
        data.trajectory_records(tok, reg, [[{"role": "user", "content": "x"}]])


def test_tool_token_must_round_trip(smol, smollm2_tokenizer):
    _, reg = smol
    # the base tokenizer does not hold the tool tokens: the text would be split into pieces
    with pytest.raises(DataError, match="<<get_weather>>"):
        data.memorization_records(smollm2_tokenizer, reg)


def test_sentencepiece_tokenizer(mistral_tokenizer):
    tok, reg = _extended(mistral_tokenizer, TOOLS)
    rec = data.trajectory_records(tok, reg, [CONVERSATION[1:3] + [CONVERSATION[-1]]], chat_template=False)[0]
    trained = [i for i, lab in zip(rec["input_ids"], rec["labels"]) if lab != IGN]
    assert trained.count(reg.id_of("get_weather")) == 1 and trained[-1] == tok.eos_token_id
    assert tok.decode(trained, skip_special_tokens=True).replace(" ", "") == (TURN_1 + TURN_2).replace(" ", "")


# -- retrieval: Seal-Tools dev ----------------------------------------------------------------


@pytest.fixture(scope="module")
def seal(seal_tools_dir, smollm2_tokenizer):
    queries = data.load_seal_tools_queries(os.path.join(seal_tools_dir, "dev.jsonl.gz"))[:40]
    names = {c["api"] for q in queries for c in q["calling"]}
    specs = {}
    with gzip.open(os.path.join(seal_tools_dir, "tool.jsonl.gz"), "rt") as f:
        for line in f:
            r = json.loads(line)
            if r["api_name"] in names:
                specs[r["api_name"]] = Tool(r["api_name"], r["api_description"])
    tools = ToolSet(specs.values())
    tok, reg = _extended(smollm2_tokenizer, tools)
    return queries, tok, reg


def test_seal_tools_retrieval_records(seal):
    queries, tok, reg = seal
    known = [q for q in queries if all(c["api"] in reg for c in q["calling"])]
    assert len(known) >= 20
    recs = data.retrieval_records(tok, reg, known)
    assert len(recs) == len(known)
    for q, rec in zip(known, recs):
        apis = list(dict.fromkeys(c["api"] for c in q["calling"]))
        trained = [lab for lab in rec["labels"] if lab != IGN]
        assert trained == [reg.id_of(a) for a in apis] + [tok.eos_token_id]
        assert q["query"] in tok.decode(rec["input_ids"])


def test_unknown_tool_in_a_query(seal):
    queries, tok, reg = seal
    q = {"id": "dev-x", "query": "Do a thing.", "calling": [{"api": "notATool", "parameters": {}}]}
    with pytest.raises(DataError, match="dev-x.*notATool"):
        data.retrieval_records(tok, reg, [queries[0], q])
    skipped = []
    recs = data.retrieval_records(tok, reg, [q, ("Weather?", [reg.names[0]])], on_unknown="skip", skipped=skipped)
    assert len(recs) == 1 and skipped == [(q, ["notATool"])]


def test_seal_tools_loader_errors(tmp_path):
    bad = tmp_path / "dev.jsonl"
    bad.write_text('{"query": "a", "calling": []}\n{not json\n')
    with pytest.raises(DataError, match="dev.jsonl: line 2"):
        data.load_seal_tools_queries(bad)
    with pytest.raises(DataError, match="missing.jsonl"):
        data.load_seal_tools_queries(tmp_path / "missing.jsonl")


# -- batches ----------------------------------------------------------------------------------


def test_collate_pads_labels_and_weights():
    recs = [{"input_ids": [5, 6, 7], "labels": [IGN, 6, 7], "loss_weights": [0.0, 2.0, 1.0]},
            {"input_ids": [8], "labels": [8]}]
    b = data.collate(recs, pad_token_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[IGN, 6, 7], [8, IGN, IGN]]
    assert b["loss_weights"].tolist() == [[0, 2, 1], [1, 0, 0]]
    left = data.collate(recs, pad_token_id=0, padding_side="left", pad_to_multiple_of=4)
    assert left["labels"].tolist() == [[IGN, IGN, 6, 7], [IGN, IGN, IGN, 8]]
    assert left["loss_weights"].dtype == torch.float32
    with pytest.raises(DataError, match="record #0: 'labels'"):
        data.collate([{"input_ids": [1, 2], "labels": [1]}])


def test_dataset_and_dataloader(smol):
    tok, reg = smol
    ds = data.ToolDataset(data.memorization_records(tok, reg))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=data.Collator.for_tokenizer(tok))
    batch = next(iter(loader))
    assert batch["input_ids"].shape == batch["loss_weights"].shape == (2, max(len(r["input_ids"]) for r in ds))
    pad = batch["attention_mask"] == 0
    assert torch.all(batch["input_ids"][pad] == tok.pad_token_id)


def test_plain_format_needs_an_eos(smol):
    tok, reg = smol
    tok = copy.deepcopy(tok)
    tok.chat_template = None
    tok.eos_token = None
    with pytest.raises(DataError, match="no eos_token"):
        data.memorization_records(tok, reg)


def test_template_that_is_not_prefix_stable_is_refused(smol):
    tok, reg = smol
    unstable = "{% for m in messages %}{% if loop.last %}[last]{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(DataError, match="prefix-stable"):
        data.trajectory_records(tok, reg, [CONVERSATION], chat_template=unstable)
    stable = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<|im_end|>{% endfor %}"
              "{% if add_generation_prompt %}<assistant>{% endif %}")
    rec = data.trajectory_records(tok, reg, [CONVERSATION], chat_template=stable)[0]
    assert _trained_runs(tok, rec) == [TURN_1 + "<|im_end|>", TURN_2 + "<|im_end|>"]


@given(st.lists(st.sampled_from(["<<a>>", "<<ab>>", "<<a_b>>", "a", "ab", "a_b", "<", ">", "<>", " x ", "{}"]),
                max_size=12),
       st.sampled_from(["<<{name}>>", "{name}"]))
def test_tool_token_scan_counts_written_tokens(pieces, fmt):
    names = ["a", "ab", "a_b"]
    tokens = {n: fmt.format(name=n) for n in names}
    reg = ToolRegistry(token_format=fmt, tools=ToolSet([Tool(n) for n in names]), tokens=tokens,
                       token_ids={n: i for i, n in enumerate(names)})
    if fmt == "{name}":  # bare names, kept apart by spaces
        pieces = [p for p in pieces if "<" not in p and ">" not in p]
        text = " ".join(pieces)
    else:  # no name letters outside whole tokens, so fillers cannot combine into a token
        pieces = [p for p in pieces if p in tokens.values() or not any(c in p for c in "ab_")]
        text = "".join(pieces)
    found = data._ToolTokens.of(reg).written(text)
    assert {n: found[tokens[n]] for n in names} == {n: pieces.count(tokens[n]) for n in names}


# -- synthetic requests ----------------------------------------------------------------------
SLOPE = Tool("getSlopeStability", "Assess whether a slope may fail", {"type": "object", "properties": {
    "slope_angle": {"type": "number", "description": "The angle in degrees (e.g., 30, 40)"},
    "material": {"type": "string", "description": "The material of the slope (e.g., soil, rock)"},
    "site_id": {"type": "string"}}, "required": ["slope_angle", "material", "site_id"]})


def test_name_words():
    assert data.name_words("getVLSILayout_v2") == ["get", "VLSI", "layout", "v", "2"]
    assert data.name_words("slope_angle") == ["slope", "angle"]


def test_query_style_names_the_action_and_its_arguments():
    """Query-style parts use the name's words or the description, then arguments whose values
    come from the parameter descriptions' examples (numbers, ids otherwise)."""
    import random

    rng = random.Random(0)
    phrases = [data.request_phrase(SLOPE, rng) for _ in range(200)]
    assert any(p.startswith(("retrieve the slope stability", "get the slope stability", "find the slope stability"))
               for p in phrases)
    assert any(p.startswith("Assess whether a slope may fail") for p in phrases)
    with_material = [p for p in phrases if "material " in p]
    assert with_material and all(("material soil" in p) or ("material rock" in p) for p in with_material)
    assert any("slope angle 30" in p or "slope angle 40" in p for p in phrases)
    assert any("site id '" in p for p in phrases)
    assert data.request_phrase(SLOPE, rng, "description") == "Assess whether a slope may fail"


@given(st.integers(0, 10_000), st.sampled_from(data.SYNTHETIC_STYLES))
def test_synthetic_requests_cover_every_tool(seed, style):
    tools = [SLOPE, *TOOLS]
    out = data.synthetic_requests(tools, rounds=2, seed=seed, style=style)
    asked = [n for _, names in out for n in names]
    assert sorted(asked) == sorted(2 * [t.name for t in tools])  # each tool once per round
    assert all(text.strip() for text, _ in out)


@given(st.integers(0, 10_000), st.sampled_from(data.SYNTHETIC_STYLES))
def test_split_synthetic_requests_are_the_parts_of_the_whole_ones(seed, style):
    """split=True: the same requests, each part its own one-tool example, in order."""
    tools = [SLOPE, *TOOLS]
    whole = data.synthetic_requests(tools, rounds=2, seed=seed, style=style)
    parts = data.synthetic_requests(tools, rounds=2, seed=seed, style=style, split=True)
    assert all(len(names) == 1 for _, names in parts)
    assert [n for _, names in parts for n in names] == [n for _, names in whole for n in names]
    assert " ".join(text for text, _ in parts) == " ".join(text for text, _ in whole)


def test_unknown_synthetic_style():
    with pytest.raises(DataError, match="synthetic style"):
        data.synthetic_requests(list(TOOLS), style="nope")


def test_memorization_prompt_phrasings():
    """``document`` / ``request`` fill their templates; ``query`` is one single-tool request in
    users' words, the same on every call, different across tools."""
    assert data.memorization_prompt(SLOPE, "document") == data.MEMORIZATION_PROMPT.format(name=SLOPE.name,
                                                                                          description=SLOPE.description)
    assert data.memorization_prompt(SLOPE, "request") == SLOPE.description
    query = data.memorization_prompt(SLOPE, "query")
    assert query == data.memorization_prompt(copy.deepcopy(SLOPE), "query")
    assert "slope" in query.lower() and query != SLOPE.description and "\n" not in query
    shapes = [re.escape(t).replace(r"\{D\}", ".+").replace(r"\{d\}", ".+") for t in data.REQUEST_TEMPLATES["single"]]
    assert any(re.fullmatch(shape, query) for shape in shapes)
    assert len({data.memorization_prompt(t, "query") for t in [SLOPE, *TOOLS]}) == 1 + len(TOOLS)
    assert data.MEMORIZATION_PHRASINGS == ("document", "request", "query")
    with pytest.raises(DataError, match="unknown phrasing 'poem'"):
        data.memorization_prompt(SLOPE, "poem")
