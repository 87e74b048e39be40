"""toolken.eval: metrics against hand-computed values, loaders of both query formats, BM25,
the hidden-state cache, and output-row training on cached states against the full-vocabulary
fused loss."""
import gzip
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import toolken
from toolken.data import synthetic_requests
from toolken.sentences import sentence_requests, split_sentences
from tiny import tiny_llama
from toolken import eval as ev
from toolken.eval import cache as cache_module
from toolken.errors import DataError, ToolkenError


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def test_metrics_hand_computed():
    ranked = ["a", "b", "c", "d", "e"]
    assert ev.recall_at_k(ranked, ["b", "x"], 1) == 0.0
    assert ev.recall_at_k(ranked, ["b", "x"], 5) == 0.5
    # gold b at rank 2 (DCG 1/log2 3), ideal puts 2 gold first (1 + 1/log2 3)
    assert ev.ndcg_at_k(ranked, ["b", "x"], 5) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ev.ndcg_at_k(ranked, ["a"], 5) == 1.0
    assert ev.ndcg_at_k(ranked, ["c"], 5) == pytest.approx(0.5)  # 1/log2(4)
    assert ev.ndcg_at_k(ranked, ["e"], 5) == pytest.approx(1 / math.log2(6))
    assert ev.ndcg_at_k(ranked, ["f"], 5) == 0.0
    six = ["a", "b", "c", "d", "e", "f"]
    assert ev.recall_at_k(ranked, six, 5) == pytest.approx(5 / 6)
    assert ev.ndcg_at_k(ranked, six, 5) == 1.0  # ideal DCG@5 has only 5 slots
    # gold at ranks 1 and 3 of 3 gold: (1 + 1/2) / (1 + 1/log2 3 + 1/2)
    assert ev.ndcg_at_k(ranked, ["a", "c", "z"], 5) == pytest.approx(1.5 / (1 + 1 / math.log2(3) + 0.5))
    with pytest.raises(DataError):
        ev.recall_at_k(ranked, [], 1)


def test_retrieval_metrics_average_over_queries():
    qs = [ev.Query("1", "q", ("a",)), ev.Query("2", "q", ("b", "c"))]
    m = ev.retrieval_metrics([["a", "x"], ["x", "c"]], qs)
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["recall@5"] == pytest.approx((1 + 0.5) / 2)
    assert m["ndcg@5"] == pytest.approx((1 + (1 / math.log2(3)) / (1 + 1 / math.log2(3))) / 2)


def test_hit_rate_by_size_splits_one_tool_and_several_tool_queries():
    qs = [ev.Query("1", "q", ("a",)), ev.Query("2", "q", ("b",)), ev.Query("3", "q", ("b", "c", "d")),
          ev.Query("4", "q", ("a", "a"))]  # a repeated gold tool is still one tool
    m = ev.hit_rate_by_size([["a", "b"], ["x", "b"], ["d", "x"], ["a"]], qs)
    assert m == {"n 1 tool": 3.0, "hit@1 1 tool": pytest.approx(2 / 3), "n 2+ tools": 1.0, "hit@1 2+ tools": 1.0}
    assert ev.hit_rate_by_size([["a"]], qs[:1]) == {"n 1 tool": 1.0, "hit@1 1 tool": 1.0, "n 2+ tools": 0.0}
    assert "2+ tools 1.000 (1)" in ev.format_by_size(m)
    with pytest.raises(DataError):
        ev.hit_rate_by_size([["a"]], qs)


@given(st.permutations(list("abcdefgh")), st.sets(st.sampled_from(list("abcdefghxy")), min_size=1))
def test_metric_properties(ranked, gold):
    for k in (1, 3, 5):
        n = ev.ndcg_at_k(ranked, gold, k)
        assert 0.0 <= n <= 1.0 + 1e-12
        ideal = all(t in gold for t in ranked[:min(k, len(gold))])
        assert (abs(n - 1.0) < 1e-12) == ideal
        assert ev.recall_at_k(ranked, gold, k) <= ev.recall_at_k(ranked, gold, k + 1)


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------
def test_load_seal_tools_queries(tmp_path):
    path = tmp_path / "q.jsonl.gz"
    recs = [{"id": "d-0", "query": "weather in Paris", "calling": [{"api": "getWeather", "parameters": {}},
                                                                  {"api": "getTime"}, {"api": "getWeather"}]},
            {"id": "d-1", "query": "time?", "calling": [{"api": "getTime"}]}]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in recs) + "\n\n")
    qs = ev.load_queries(path)
    assert qs == [ev.Query("d-0", "weather in Paris", ("getWeather", "getTime")), ev.Query("d-1", "time?", ("getTime",))]
    assert qs[0].calls == (("getWeather", {}), ("getTime", {}), ("getWeather", {}))  # every call, with its arguments


def test_load_openai_chat_queries(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"messages": [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
            {"type": "function", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "content": "sunny"}]}]))
    qs = ev.load_queries(path)
    assert qs == [ev.Query(f"{path} record #0", "Weather and time in Oslo?", ("get_weather", "get_time"))]
    assert qs[0].calls == (("get_weather", {"city": "Oslo"}), ("get_time", {}))  # JSON-string arguments parsed


@pytest.mark.parametrize("content, match", [
    ('{"question": "x"}', "unknown query format"),
    ('{"query": "", "calling": [{"api": "a"}]}', "no user query"),
    ('{"query": "x", "calling": []}', "calls no tool"),
    ('{"query": "x", "calling": [{"name": "a"}]}', "'calling' must be"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "calls no tool"),
    ('{"query": "x"}\n{broken', "line 2 is not valid JSON"),
])
def test_query_loader_errors(tmp_path, content, match):
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        ev.load_queries(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: .*No such file"):
        ev.load_queries(tmp_path / "nope.jsonl")


def test_load_tools_both_formats(tmp_path):
    openai = tmp_path / "tools.json"
    openai.write_text(json.dumps([{"type": "function", "function": {"name": "get_weather", "description": "w",
                                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]))
    assert ev.load_tools(openai).names == ["get_weather"]
    seal = tmp_path / "tool.jsonl"
    seal.write_text(json.dumps({"api_name": "getWeather", "api_description": "weather",
                                "parameters": {"city": {"type": "str", "description": "c"}}, "required": ["city"]}))
    tools = ev.load_tools(seal)
    assert tools.names == ["getWeather"] and tools[0].parameters["required"] == ["city"]


def test_unknown_gold_is_reported_and_scored_as_a_miss():
    tools = toolken.ToolSet([toolken.Tool("a", "alpha"), toolken.Tool("b", "beta")])
    qs = [ev.Query("1", "q", ("a", "zz"))]
    assert ev.unknown_gold(qs, tools) == [{"id": "1", "unknown": ["zz"]}]
    assert ev.retrieval_metrics([["a", "b"]], qs)["recall@5"] == 0.5


def test_split_sentences():
    assert split_sentences("  Get the weather in Paris. Then, email Bob! Is it 3.5 degrees? ok, e.g. Rome. Ask Dr. Who.") == [
        "Get the weather in Paris.", "Then, email Bob!", "Is it 3.5 degrees? ok, e.g. Rome.", "Ask Dr. Who."]
    assert split_sentences("no end") == ["no end"] and split_sentences('Say hi. "Bye" too.') == ["Say hi.", '"Bye" too.']
    with pytest.raises(DataError, match="needs a string"):
        split_sentences(None)


@given(st.lists(st.sampled_from(["Get", "the", "weather.", "Then", "mail", "Bob!", "ok?", "3.5", "e.g."]), min_size=1))
def test_split_sentences_keeps_every_word_in_order(words):
    text = " ".join(words)
    assert " ".join(split_sentences(text)).split() == text.split()


def test_sentence_requests_label_each_sentence_by_its_calls_arguments():
    text = ("As part of our program, retrieve the integration status of refugees in Germany. Additionally, record "
            "the interaction with customer C123 through email. Thanks!")
    calls = [("getRefugeeIntegrationStatus", {"country": "Germany"}),
             ("recordData", {"customer_id": "C123", "interaction_type": "email", "tags": ["vip", "x"]})]
    assert sentence_requests(text, calls) == [
        ("As part of our program, retrieve the integration status of refugees in Germany.", "getRefugeeIntegrationStatus"),
        ("Additionally, record the interaction with customer C123 through email.", "recordData")]
    assert sentence_requests("Weather in Germany.", calls) == []  # one sentence: the query itself is the example
    tie = [("a", {"city": "Oslo"}), ("b", {"town": "oslo"})]
    assert sentence_requests("Rain in Oslo. Sun in Oslo.", tie) == []
    assert sentence_requests("Rain in Oslo. Sun in Oslo.", [("a", "not an object")]) == []
    twice = [("a", {"city": "Oslo"}), ("a", {"city": "oslo", "day": "monday"})]
    assert sentence_requests("Rain in Oslo. Sun in Bergen.", twice) == [("Rain in Oslo.", "a")]


def test_training_pairs_add_labelled_sentences_of_known_tools():
    from toolken.eval.experiment import training_pairs

    q = ev.Query("0", "Convert 10 USD to EUR. Then mail bob the rate.", ("convert_currency", "send_email", "nope"),
                 (("convert_currency", {"amount": 10, "to": "EUR"}), ("send_email", {"to": "bob"}), ("nope", {"x": "rate"})))
    assert training_pairs([q], TOOLS, sentences=False) == [(q.text, ["convert_currency", "send_email"])]
    assert training_pairs([q], TOOLS, sentences=True) == [
        (q.text, ["convert_currency", "send_email"]), ("Convert 10 USD to EUR.", ["convert_currency"]),
        ("Then mail bob the rate.", ["send_email"])]


def test_bm25_per_sentence_scores_a_tool_by_its_best_sentence():
    tools = toolken.ToolSet([toolken.Tool("getWeatherForecast", "Forecast of rain and sun for a city"),
                             toolken.Tool("convertCurrency", "Convert money between currencies"),
                             toolken.Tool("sendEmail", "Send an email to someone")])
    texts = ["Please convert 10 dollars to another currency. Then send an email to Bob.", "weather forecast in Rome"]
    per = ev.bm25_rankings(tools, texts, k=3, per_sentence=True)
    assert per[1] == ev.bm25_rankings(tools, texts[1:], k=3)[0]  # one sentence: the plain ranking
    first = [ev.bm25_rankings(tools, [s], k=1)[0][0] for s in split_sentences(texts[0])]
    assert per[0][0] in first and set(per[0][:2]) == {"convertCurrency", "sendEmail"}


def test_bm25_ranks_the_matching_tool_first():
    tools = toolken.ToolSet([toolken.Tool("getWeatherForecast", "Forecast of rain and sun for a city"),
                             toolken.Tool("convertCurrency", "Convert money between currencies"),
                             toolken.Tool("sendEmail", "Send an email to someone")])
    ranked = ev.bm25_rankings(tools, ["please convert 10 dollars to another currency", "weather forecast in Rome"], k=3)
    assert ranked[0][0] == "convertCurrency" and ranked[1][0] == "getWeatherForecast"
    assert ev.tool_document(tools[0]).startswith("get Weather Forecast")


# ---------------------------------------------------------------------------------------------
# hidden states and training (tiny random model, SmolLM2 tokenizer)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(smollm2_tokenizer):
    return tiny_llama(len(smollm2_tokenizer), tied=True).eval(), smollm2_tokenizer


QUERIES = [ev.Query(str(i), t, (g,)) for i, (t, g) in enumerate([
    ("What's the weather in Paris?", "get_weather"), ("Convert 10 USD to EUR please", "convert_currency"),
    ("Send mail to bob", "send_email"), ("Is it raining in Oslo today?", "get_weather"),
    ("How many yen is a dollar?", "convert_currency"), ("email alice the notes", "send_email")])]
TOOLS = toolken.ToolSet([toolken.Tool("get_weather", "Weather forecast for a city"),
                         toolken.Tool("convert_currency", "Convert money between currencies"),
                         toolken.Tool("send_email", "Send an email message")])


@pytest.mark.parametrize("template", [True, False], ids=["shared-prefix", "no-prefix"])
def test_encode_prompts_matches_plain_forward_and_caches_on_disk(tiny, tmp_path, monkeypatch, template):
    model, tok = tiny
    if template:  # chat prompts share the template's system turn: its KV cache is reused
        prompts = [ev.user_prompt(tok, q.text) for q in QUERIES]
        assert ev.SharedPrefix(model.get_decoder(), prompts, torch.device("cpu")).length >= 8
    else:
        prompts = [tok(q.text).input_ids for q in QUERIES]
        assert ev.SharedPrefix(model.get_decoder(), prompts, torch.device("cpu")).length == 0
    key = ev.model_fingerprint(model)
    h = ev.encode_prompts(model, prompts, ev.HiddenStateCache(tmp_path, key), batch_size=4, show_progress=False)
    with torch.no_grad():
        ref = torch.stack([model.model(input_ids=torch.tensor([p])).last_hidden_state[0, -1] for p in prompts])
    torch.testing.assert_close(h, ref, atol=1e-5, rtol=1e-4)
    # a new cache object over the same folder serves every prompt without running the model
    monkeypatch.setattr(cache_module, "require_decoder_stack",
                        lambda m, why: pytest.fail("the model ran although every prompt was cached"))
    again = ev.encode_prompts(model, prompts, ev.HiddenStateCache(tmp_path, key), show_progress=False)
    torch.testing.assert_close(again, h)


def test_fingerprint_changes_with_weights(tiny):
    import copy

    model, _ = tiny
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    assert ev.model_fingerprint(model) != ev.model_fingerprint(other)
    assert ev.model_fingerprint(model) == ev.model_fingerprint(copy.deepcopy(model))


@pytest.fixture()
def extended(tiny):
    import copy

    model, tok = tiny
    m, t = copy.deepcopy(model), copy.deepcopy(tok)
    hidden = ev.encode_prompts(m, [ev.user_prompt(t, q.text) for q in QUERIES], ev.HiddenStateCache(None, "x"),
                               show_progress=False)
    toolken.extend(m, t, TOOLS, init="description")
    return m, t, hidden


def test_collapsed_vocab_loss_equals_full_vocab_fused_loss(extended):
    from toolken.kernels import fused_linear_weighted_cross_entropy

    m, _, hidden = extended
    rows, bias, ids = ev.tool_row_handles(m)
    data = ev.build_training_data(m, TOOLS, hidden[:3], hidden, QUERIES)
    assert len(data) == 3 + len(QUERIES)
    with pytest.raises(DataError, match="one per tool"):
        ev.build_training_data(m, TOOLS, hidden[:4], hidden, QUERIES)
    full = fused_linear_weighted_cross_entropy(data.hidden, toolken.output_weight(m), ids[data.targets], data.weights)
    collapsed = ev.full_vocab_loss(rows, data)
    torch.testing.assert_close(collapsed, full, atol=1e-5, rtol=1e-5)
    g_full, = torch.autograd.grad(full, rows)
    g_col, = torch.autograd.grad(collapsed, rows)
    torch.testing.assert_close(g_col, g_full, atol=1e-6, rtol=1e-4)


def test_training_output_rows_learns_retrieval_and_changes_only_tool_rows(extended):
    m, _, hidden = extended
    rows, bias, ids = ev.tool_row_handles(m)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    data = ev.build_training_data(m, TOOLS, None, hidden, QUERIES)

    def score():
        return ev.retrieval_metrics(ev.rank_tools(rows, hidden, TOOLS.names, 5, bias), QUERIES)

    history = ev.train_tool_rows(rows, data, steps=90, lr=1e-1, evaluate=score, eval_every=30, show_progress=False)
    assert [h["step"] for h in history] == [0, 30, 60, 90]
    assert history[-1]["loss"] < history[1]["loss"]
    assert history[-1]["recall@1"] >= 5 / 6 and history[-1]["recall@1"] > history[0]["recall@1"]
    changed = [n for n, p in m.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed == ["toolken_rows.input"]  # tied embeddings: the output rows are the input rows
    # the model's own next-token logits now rank the gold tool first among tool tokens
    ours = ev.rank_tools(rows, hidden, TOOLS.names, 3, bias)
    theirs = [[n for n, _ in r] for r in toolken.retrieve(m, extended[1], [q.text for q in QUERIES], k=3)]
    assert ours == theirs


def test_experiment_result_and_plot(tiny, tmp_path):
    model, tok = tiny
    cfg = ev.ExperimentConfig(inits=["random", "description"], steps=20, lr=5e-2, eval_every=10, cache_dir=tmp_path,
                              memorization=("document", "request"), show_progress=False)
    several = ev.Query("m", "How many yen is a dollar? Then email alice.", ("convert_currency", "send_email"))
    result = ev.run_retrieval_experiment(model, tok, TOOLS, QUERIES[:4],
                                         QUERIES[4:] + [ev.Query("u", "x", ("nope",)), several], cfg, log=lambda s: None)
    assert set(result["inits"]) == {"random", "description"}
    assert result["unknown_gold"]["test"] == [{"id": "u", "unknown": ["nope"]}]
    assert [h["step"] for h in result["inits"]["random"]["history"]] == [0, 10, 20]
    synthetic = len(synthetic_requests(list(TOOLS), cfg.synthetic, cfg.seed, split=cfg.synthetic_split))
    assert result["inits"]["random"]["n_examples"] == 2 * len(TOOLS) + 4 + synthetic  # phrasings, queries, requests
    assert len(result["verdict"]) == 3 and "BM25 at" in result["verdict"][0] and "BM25 per sentence" in result["verdict"][1]
    assert result["config"]["rank"] == "sentences" and set(result["bm25_sentences"]) == {"recall@1", "recall@5", "ndcg@5"}
    assert "| BM25, best sentence |" in ev.format_table(result) and ", best sentence, random init" in ev.format_table(result)
    n_test = len(QUERIES[4:]) + 2
    for by_size in (result["bm25_by_size"], result["inits"]["random"]["final_by_size"]):
        assert by_size["n 1 tool"] + by_size["n 2+ tools"] == n_test
    js, png = ev.write_result(result, tmp_path / "out")
    assert json.loads(js.read_text())["n_tools"] == 3
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "| BM25 (bm25s) |" in ev.format_table(result)
    assert find_registry_is_none(model)


@pytest.mark.parametrize("k", [0, 1], ids=["rows-only", "top-1"])
def test_centroid_init_sets_the_rows_before_the_first_step(tiny, tmp_path, k, monkeypatch):
    """The default init: description rows, then the output rows from the centroids of the
    memorization prompts' hidden states (one per tool and phrasing), for the centroid init only."""
    from toolken import top_layers
    from toolken.eval import experiment

    model, tok = tiny
    calls, original = [], top_layers.centroid_rows

    def recording(hidden, tool_of, n_tools, fallback):
        calls.append((tuple(hidden.shape), tool_of.tolist(), n_tools))
        return original(hidden, tool_of, n_tools, fallback)

    for module in (top_layers, experiment):
        monkeypatch.setattr(module, "centroid_rows", recording)
    cfg = ev.ExperimentConfig(inits=["description", "centroid"], steps=4, eval_every=2, cache_dir=tmp_path,
                              train_layers=k, synthetic=0, show_progress=False, memorization=("document", "request"))
    assert ev.ExperimentConfig().inits == ("centroid",)
    result = ev.run_retrieval_experiment(model, tok, TOOLS, QUERIES[:4], QUERIES[4:], cfg, log=lambda s: None)
    assert calls == [((2 * len(TOOLS), model.config.hidden_size), [0, 1, 2, 0, 1, 2], len(TOOLS))]
    assert [h["step"] for h in result["inits"]["centroid"]["history"]] == [0, 2, 4]
    with pytest.raises(ToolkenError, match="rank must be one of sentences, query, got 'words'"):
        ev.run_retrieval_experiment(model, tok, TOOLS, QUERIES[:4], QUERIES[4:], ev.ExperimentConfig(rank="words"))
    if k == 0:
        with pytest.raises(ToolkenError, match="rank='sentences' needs train_layers > 0"):
            ev.run_retrieval_experiment(model, tok, TOOLS, QUERIES[:4], QUERIES[4:],
                                        ev.ExperimentConfig(train_layers=0, rank="sentences"))
    with pytest.raises(ToolkenError, match="'centroid' builds the rows from the memorization prompts"):
        ev.run_retrieval_experiment(model, tok, TOOLS, QUERIES[:4], QUERIES[4:],
                                    ev.ExperimentConfig(memorization=(), train_layers=k),
                                    log=lambda s: None)


def find_registry_is_none(model):
    from toolken.registry import find_registry

    return find_registry(model) is None


def test_a_file_without_tools_is_refused_before_any_model_loads(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(DataError, match="empty.json: no tools"):
        ev.load_tools(empty)
