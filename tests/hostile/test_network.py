"""No network access, ever: every tool loader, the offline validators, the grammar compiler,
`extend`, `load` and constrained decoding, given schemas whose `$schema`, `$ref` or `$id` point
at a local counting server (tests/hostile/conftest.py), make zero connections — and either work
offline or fail with a `ToolkenError` that names the tool, the field and the JSON pointer.

To add a case: take the `counting_server` fixture, put `counting_server.url(...)` where a URI
goes, run the code, and end with `assert counting_server.count == 0, counting_server.requests`.
"""
from __future__ import annotations

import copy
import json
import urllib.request
from typing import Annotated

import jsonschema
import pytest
from referencing.exceptions import Unresolvable
from transformers import LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

import toolken
from toolken import Tool, ToolSet
from toolken.generation import generate_tool_calls, parse_tool_calls
from toolken.errors import AdapterError, GrammarError, ToolkenError, ToolSpecError
from toolken.tools import argument_error, argument_validator, offline_validator
from toolken.tools.schema import OFFLINE_REGISTRY

from tiny import tiny_llama


def _offline(server) -> None:
    assert server.count == 0, f"toolken contacted the network: {server.requests}"


def test_the_counting_server_sees_a_fetch(counting_server):
    """The fixture works: a real fetch of its URL is counted (so a zero count means something)."""
    with urllib.request.urlopen(counting_server.url("meta.json"), timeout=5) as response:
        assert json.load(response) == {"type": "string"}
    assert counting_server.requests == ["GET /meta.json"] and counting_server.count == 2


def _with_ref(url: str) -> list[tuple[dict, str]]:
    """Parameters schemas with a remote reference, and the JSON pointer of that reference."""
    return [
        ({"type": "object", "properties": {"x": {"$ref": url}}}, "/properties/x/$ref"),
        ({"type": "object", "properties": {"x": {"type": "array", "items": {"$ref": url}}}}, "/properties/x/items/$ref"),
        ({"type": "object", "properties": {"x": {"anyOf": [{"type": "null"}, {"$ref": url}]}}},
         "/properties/x/anyOf/1/$ref"),
        ({"type": "object", "properties": {"x": {"if": {"$ref": url}}}}, "/properties/x/if/$ref"),
        ({"type": "object", "$ref": url}, "/$ref"),
        ({"type": "object", "properties": {}, "$defs": {"a/b": {"$dynamicRef": url}}}, "/$defs/a~1b/$dynamicRef"),
        # a relative reference under a remote base URI: still a download
        ({"$id": url, "type": "object", "properties": {"x": {"$ref": "other.json"}}}, "/properties/x/$ref"),
    ]


# ------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------
def test_from_openai_remote_meta_schema_is_read_as_draft_2020_12_offline(counting_server):
    """An unknown or remote `$schema` is never fetched: the schema is checked under Draft
    2020-12 (still catching bad keywords) and loads."""
    meta = counting_server.url("meta")
    counting_server.body = {}  # a meta-schema that would accept anything, if it were fetched
    spec = {"name": "f", "parameters": {"$schema": meta, "type": "object", "properties": {"x": {"type": "string"}}}}
    tool = ToolSet.from_openai(spec)["f"]
    assert tool.parameters["$schema"] == meta
    with pytest.raises(ToolSpecError, match=r"tool 'g': field 'parameters\.properties\.x\.type' is not valid JSON Schema"):
        ToolSet.from_openai({"name": "g", "parameters": {"$schema": meta, "type": "object",
                                                          "properties": {"x": {"type": "strng"}}}})
    nested = {"type": "object", "properties": {"x": {"$schema": meta, "$id": meta + "/x", "type": "string"}}}
    assert ToolSet.from_openai({"name": "h", "parameters": nested})["h"].parameters == nested
    _offline(counting_server)


def test_from_openai_known_draft_uris_are_read_locally(counting_server):
    for uri, bad in [("http://json-schema.org/draft-07/schema#", {"exclusiveMinimum": True}),
                     ("https://json-schema.org/draft-07/schema", {"exclusiveMinimum": True}),
                     ("http://json-schema.org/draft-04/schema#", {"exclusiveMinimum": 3}),
                     ("https://json-schema.org/draft/2019-09/schema", {"minimum": "0"})]:
        ToolSet.from_openai({"name": "f", "parameters": {"$schema": uri, "type": "object"}})
        with pytest.raises(ToolSpecError, match=r"tool 'f': field 'parameters\.properties\.n\.(exclusiveMinimum|minimum)'"):
            ToolSet.from_openai({"name": "f", "parameters": {"$schema": uri, "type": "object", "properties": {"n": bad}}})
    _offline(counting_server)


def test_from_openai_refuses_remote_references_naming_the_pointer(counting_server):
    for parameters, pointer in _with_ref(counting_server.url("ref.json")):
        message = rf"tool 'f': field '.*' \(JSON pointer {pointer.replace('$', '[$]')}\) refers to .*outside the tool's schema"
        with pytest.raises(ToolSpecError, match=message):
            ToolSet.from_openai([{"type": "function", "function": {"name": "f", "parameters": parameters}}])
    _offline(counting_server)


def test_local_references_under_a_remote_base_uri_resolve_offline(counting_server):
    base = counting_server.url("root.json")
    parameters = {"$id": base, "type": "object", "$defs": {"s": {"type": "string"}},
                  "properties": {"x": {"$ref": "#/$defs/s"}, "y": {"$id": "y.json", "$defs": {"n": {"type": "integer"}},
                                                                    "$ref": "#/$defs/n"}}}
    tool = ToolSet.from_openai({"name": "f", "parameters": parameters})["f"]
    assert argument_error(tool, {"x": "a", "y": 1}) is None
    assert argument_error(tool, {"x": 1}) == "at x: 1 is not of type 'string'"
    assert argument_error(tool, {"y": "1"}) == "at y: '1' is not of type 'integer'"
    _offline(counting_server)


def test_from_json_refuses_remote_references_naming_file_and_pointer(counting_server, tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": [{"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"$ref": counting_server.url("ref.json")}}}}]}))
    with pytest.raises(ToolSpecError, match=r"tools\.json: tool 'f': field 'parameters\.properties\.x\.\$ref' "
                                            r"\(JSON pointer /properties/x/\$ref\)"):
        ToolSet.from_json(path)
    path.write_text(json.dumps([{"name": "f", "parameters": {"$schema": counting_server.url("meta"), "type": "object"}}]))
    assert ToolSet.from_json(path).names == ["f"]
    _offline(counting_server)


def test_from_bfcl_drops_references_and_meta_schemas(counting_server):
    """BFCL parameter specs keep only known JSON Schema keywords: `$schema` and `$ref` are not
    among them, so a record carrying them loads without them, offline."""
    url = counting_server.url("ref.json")
    record = {"id": "r", "function": [{"name": "f", "parameters": {
        "type": "dict", "$schema": url, "properties": {"x": {"type": "string", "$ref": url}, "y": {"$ref": url}}}}]}
    tool = ToolSet.from_bfcl(record)["f"]
    assert "$schema" not in tool.parameters and tool.parameters["properties"] == {"x": {"type": "string"}, "y": {}}
    _offline(counting_server)


def test_from_seal_tools_ignores_uris_in_data(counting_server):
    url = counting_server.url("ref.json")
    record = {"api_name": "f", "parameters": {"x": {"type": "dict", "description": url, "$ref": url,
                                                    "default": {"$ref": url}}}, "required": []}
    tool = ToolSet.from_seal_tools([record])["f"]
    assert tool.parameters["properties"]["x"] == {"type": "object", "description": url, "default": {"$ref": url}}
    assert argument_error(tool, {"x": {"$ref": url}}) is None  # data, not a reference
    _offline(counting_server)


def test_from_functions_offline(counting_server):
    url = counting_server.url("ref.json")

    def fetch(target={"$ref": url}):  # noqa: B006
        """Fetch nothing."""

    fetch.__annotations__ = {"target": Annotated[dict, url]}
    tool = ToolSet.from_functions([fetch])["fetch"]
    assert tool.parameters["properties"]["target"] == {"type": "object", "description": url, "default": {"$ref": url}}
    _offline(counting_server)


# ------------------------------------------------------------------------------------------
# validators
# ------------------------------------------------------------------------------------------
def test_offline_validator_refuses_remote_references(counting_server):
    for parameters, pointer in _with_ref(counting_server.url("ref.json")):
        with pytest.raises(ToolSpecError, match=rf"tool 'g': field .*\(JSON pointer {pointer.replace('$', '[$]')}\)"):
            offline_validator(parameters, "tool 'g'")
    _offline(counting_server)


def test_argument_validator_on_a_tool_changed_after_loading(counting_server):
    """`Tool.parameters` is a dict: a schema changed after the checks still cannot fetch."""
    tool = Tool("f", "d", {"type": "object", "properties": {"x": {"type": "string"}}})
    assert argument_error(tool, {"x": "a"}) is None
    tool.parameters["properties"]["x"] = {"$ref": counting_server.url("ref.json")}
    with pytest.raises(ToolSpecError, match=r"tool 'f': field 'parameters\.properties\.x\.\$ref' "
                                            r"\(JSON pointer /properties/x/\$ref\) refers to 'http://127\.0\.0\.1"):
        argument_validator(tool)
    with pytest.raises(ToolSpecError, match=r"JSON pointer /properties/x/\$ref"):
        argument_error(tool, {"x": "a"})
    _offline(counting_server)


def test_offline_registry_refuses_retrieval(counting_server):
    """The registry under every toolken validator: a remote reference that reaches it (here a
    plain jsonschema validator built on it, with no toolken checks) is refused, not fetched."""
    schema = {"properties": {"x": {"$ref": counting_server.url("ref.json")}}}
    validator = jsonschema.Draft202012Validator(schema, registry=OFFLINE_REGISTRY)
    assert validator.is_valid({"y": 1})
    with pytest.raises(Unresolvable):
        validator.is_valid({"x": 1})
    _offline(counting_server)


# ------------------------------------------------------------------------------------------
# the grammar engine, extend, load
# ------------------------------------------------------------------------------------------
def test_compile_json_schema_offline(counting_server):
    grammar = pytest.importorskip("toolken.grammar")
    vocab = grammar.Vocabulary.from_bytes([bytes([i]) for i in range(256)] + [b""], stop_ids=[256])
    with pytest.raises(GrammarError, match=r"unsupported \$ref 'http://127\.0\.0\.1:\d+/ref\.json'"):
        grammar.compile_json_schema({"type": "object", "properties": {"x": {"$ref": counting_server.url("ref.json")}}},
                                    vocab)
    grammar.compile_json_schema({"$schema": counting_server.url("meta"), "$id": counting_server.url("root"),
                                 "type": "object", "properties": {"x": {"type": "string"}}}, vocab)
    _offline(counting_server)


def _tiny_model(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    model = tiny_llama(len(tokenizer) + 4, seed=seed, hidden=16, layers=1, intermediate=32, max_position_embeddings=256).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def test_extend_offline(counting_server, tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    remote_meta = {"name": "f", "parameters": {"$schema": counting_server.url("meta"), "type": "object"}}
    remote_ref = {"name": "g", "parameters": {"type": "object", "properties": {"x": {"$ref": counting_server.url("x")}}}}
    model = _tiny_model(tok)
    with pytest.raises(ToolSpecError, match=r"tool 'g': field 'parameters\.properties\.x\.\$ref'"):
        toolken.extend(model, tok, [remote_meta, remote_ref], init="random", trainable=None)
    model, tok = toolken.extend(model, tok, [remote_meta], init="random", trainable=None)
    assert toolken.registry(model).names == ["f"]
    _offline(counting_server)


def test_load_offline(counting_server, tiny_tokenizer, tmp_path):
    """An adapter whose registry names a remote `$schema` loads offline; one whose registry
    has a remote `$ref` is refused as corrupt, naming the reference."""
    base = _tiny_model(tiny_tokenizer)
    model, tok = toolken.extend(copy.deepcopy(base), copy.deepcopy(tiny_tokenizer), [Tool("f", "d")],
                                init="random", trainable=None)
    toolken.save(model, tok, tmp_path)
    config = tmp_path / "toolken_adapter.json"
    meta = json.loads(config.read_text())
    meta["registry"]["tools"][0]["parameters"]["$schema"] = counting_server.url("meta")
    config.write_text(json.dumps(meta))
    loaded, _ = toolken.load(copy.deepcopy(base), copy.deepcopy(tiny_tokenizer), tmp_path)
    assert toolken.registry(loaded).tools["f"].parameters["$schema"] == counting_server.url("meta")
    meta["registry"]["tools"][0]["parameters"]["properties"] = {"x": {"$ref": counting_server.url("x")}}
    config.write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match=r"JSON pointer /properties/x/\$ref"):
        toolken.load(copy.deepcopy(base), copy.deepcopy(tiny_tokenizer), tmp_path)
    _offline(counting_server)


# ------------------------------------------------------------------------------------------
# decoding: a tool whose schema was changed after loading (the loaders refuse remote `$ref`s)
# ------------------------------------------------------------------------------------------
class _CloseArguments(LogitsProcessor):
    """Favours `}` and end of turn, so a tiny random model finishes `{}` quickly."""

    def __init__(self, tokenizer) -> None:
        self.ids = [i for i in range(len(tokenizer)) if "}" in tokenizer.decode([i])] + [tokenizer.eos_token_id]

    def __call__(self, input_ids, scores):
        scores[:, self.ids] += 20.0
        return scores


@pytest.fixture
def probe_model(tiny_tokenizer, counting_server):
    """A tiny model with one tool, `probe`, taking `{}`, whose schema then gets an `if` with a
    remote `$ref` (the grammar engine ignores `if`; argument validation follows it)."""
    probe = Tool("probe", "Probe", {"type": "object", "properties": {}, "additionalProperties": False})
    model, tok = toolken.extend(_tiny_model(tiny_tokenizer), tiny_tokenizer, [probe], init="random", trainable=None)
    toolken.registry(model).tools["probe"].parameters["if"] = {"$ref": counting_server.url("if.json")}
    return model, tok


def _assert_not_accepted_on_a_download(result_or_error) -> None:
    if isinstance(result_or_error, ToolkenError):
        assert "probe" in str(result_or_error) and "$ref" in str(result_or_error)
    else:
        assert result_or_error.tool_calls == []


def test_parse_tool_calls_offline(probe_model, counting_server):
    model, tok = probe_model
    ids = tok("<<probe>>{}", add_special_tokens=False).input_ids + [tok.eos_token_id]
    try:
        outcome = parse_tool_calls(ids, tok, model)
    except ToolkenError as e:
        outcome = e
    _offline(counting_server)
    _assert_not_accepted_on_a_download(outcome)


def test_generate_tool_calls_offline(probe_model, counting_server):
    model, tok = probe_model
    try:
        outcome = generate_tool_calls(model, tok, "hello", mode="required", max_new_tokens=64, do_sample=False,
                                      logits_processor=LogitsProcessorList([_CloseArguments(tok)]))
    except ToolkenError as e:
        outcome = e
    _offline(counting_server)
    _assert_not_accepted_on_a_download(outcome)
