"""OpenAI tool calling for a tool-token model, apart from any serving engine.

A request's OpenAI ``tools`` and ``tool_choice`` become a `CallSpec` (the enabled tools with
their argument schemas, and a mode from `toolken.decoding.MODES`), which travels to the engine
as JSON text (``CallSpec.to_json``, one string: serving engines pass per-request arguments as
strings and numbers); the engine turns it into `toolken.decoding.CallRules` (`rules_for`). The
generated text (tool tokens decoded as ``<<name>>`` text: they are non-special added tokens)
is split back into content and calls (`split_calls`, `CallStream` for streaming) and each
call's arguments are validated against the request's schema (`valid_arguments`).

``tool_choice`` maps onto modes: ``"auto"`` -> ``auto``, ``"required"`` -> ``required``,
``"none"`` -> ``none`` (no tool token at all), a named function -> ``required`` with only that
tool enabled. ``parallel_tool_calls=False`` allows one call, then only the end of the turn.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from .. import grammar
from ..decoding import DEFAULT_WHITESPACE, MODES, CallRules, compile_arguments
from ..errors import DecodingError, GrammarError, ToolkenError
from ..registry import ToolRegistry
from ..tools import Tool, argument_error

__all__ = ["XARG", "CallSpec", "spec_from_openai", "check_spec", "rules_for", "split_calls", "valid_arguments",
           "CallStream", "StreamDelta", "token_names"]

#: The per-request extra-argument key that carries a `CallSpec` as JSON text.
XARG = "toolken"


@dataclass(frozen=True)
class CallSpec:
    """What one request allows: `tools` (enabled tool name -> its arguments' JSON Schema, in
    order), `mode` (one of `MODES`) and whether several calls may follow each other (`parallel`)."""

    tools: Mapping[str, Mapping[str, Any]]
    mode: str = "auto"
    parallel: bool = True

    def to_json(self) -> str:
        return json.dumps({"tools": dict(self.tools), "mode": self.mode, "parallel": self.parallel},
                          ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: Any) -> "CallSpec":
        """Parse and check the shape of a spec (not the tools against a model: `check_spec`).

        Raises:
            DecodingError: not JSON, or a field of the wrong type or value (named).
        """
        if not isinstance(text, str):
            raise DecodingError(f"the {XARG!r} argument must be a JSON string, got {type(text).__name__}")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DecodingError(f"the {XARG!r} argument is not JSON: {e}") from None
        if not isinstance(d, dict) or set(d) - {"tools", "mode", "parallel"}:
            raise DecodingError(f"the {XARG!r} argument must be an object with keys 'tools', 'mode', 'parallel'")
        tools, mode, parallel = d.get("tools", {}), d.get("mode", "auto"), d.get("parallel", True)
        if not isinstance(tools, dict) or not all(isinstance(s, dict) for s in tools.values()):
            raise DecodingError(f"{XARG}.tools must map tool names to their parameters JSON Schema (objects)")
        if mode not in MODES:
            raise DecodingError(f"{XARG}.mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not isinstance(parallel, bool):
            raise DecodingError(f"{XARG}.parallel must be true or false, not {parallel!r}")
        if mode == "required" and not tools:
            raise DecodingError(f"{XARG}.mode 'required' needs at least one tool in {XARG}.tools")
        return cls(tools, mode, parallel)


# ---------------------------------------------------------------------------------------------
# OpenAI request -> CallSpec
# ---------------------------------------------------------------------------------------------
def _function(tool: Any, k: int) -> Mapping[str, Any]:
    """The ``{"name", "parameters", ...}`` part of an OpenAI tool (``{"type": "function", "function": ...}``)."""
    if not isinstance(tool, Mapping):
        raise DecodingError(f"tools[{k}] must be an object, got {type(tool).__name__}")
    if tool.get("type", "function") != "function":
        raise DecodingError(f"tools[{k}] has type {tool.get('type')!r}; only 'function' tools can be called")
    fn = tool.get("function", tool)
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise DecodingError(f"tools[{k}] needs a function with a string 'name'")
    return fn


def _chosen_name(tool_choice: Any) -> Optional[str]:
    """The tool named by an OpenAI named ``tool_choice`` (None for the string choices)."""
    if tool_choice is None or isinstance(tool_choice, str):
        return None
    fn = tool_choice.get("function", tool_choice) if isinstance(tool_choice, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str):
        raise DecodingError(f"tool_choice must be 'auto', 'required', 'none' or "
                            f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r:.200}")
    return name


def spec_from_openai(tools: Optional[Sequence[Any]], tool_choice: Any = "auto", parallel_tool_calls: Optional[bool] = None,
                     registry: Optional[ToolRegistry] = None) -> CallSpec:
    """The `CallSpec` of an OpenAI chat request's ``tools`` (dicts in OpenAI's shape) and
    ``tool_choice``. A function without ``parameters`` gets the schema registered on the model
    (`registry`), else the empty object schema.

    Raises:
        DecodingError: a tool that is not registered on the model, a schema that is not a valid
            JSON Schema (`ToolSpecError`'s message) or that the grammar engine cannot use, a named
            tool_choice that is not among the tools, an unknown tool_choice.
    """
    choice = "auto" if tool_choice is None else tool_choice
    named = _chosen_name(choice)
    if named is None and choice not in MODES:
        raise DecodingError(f"tool_choice must be 'auto', 'required', 'none' or a named function, not {choice!r:.200}")
    schemas: dict[str, Mapping[str, Any]] = {}
    for k, tool in enumerate(tools or []):
        fn = _function(tool, k)
        params = fn.get("parameters")
        if params is None and registry is not None and fn["name"] in registry:
            params = registry.tools[fn["name"]].parameters
        try:
            schemas[fn["name"]] = dict(Tool(fn["name"], "", params).parameters)
        except ToolkenError as e:
            raise DecodingError(f"tools[{k}]: {e}") from None
    if named is not None:
        if named not in schemas:
            raise DecodingError(f"tool_choice names {named!r}, which is not among the request's tools")
        schemas, choice = {named: schemas[named]}, "required"
    elif choice == "none":
        schemas = {}
    spec = CallSpec(schemas, choice, parallel_tool_calls is not False)
    if choice == "required" and not schemas:
        raise DecodingError("tool_choice 'required' needs at least one tool in `tools`")
    check_spec(spec, registry)
    return spec


@functools.lru_cache(maxsize=1)
def _probe_vocabulary() -> grammar.Vocabulary:
    """A 256-token byte vocabulary: enough to find out whether the engine can compile a schema
    where the model's own vocabulary is not at hand (compile errors come from the schema)."""
    return grammar.Vocabulary.from_bytes([bytes([i]) for i in range(256)])


def check_spec(spec: CallSpec, registry: Optional[ToolRegistry] = None, whitespace: str = DEFAULT_WHITESPACE) -> None:
    """Raise `DecodingError` if a tool of `spec` is not registered on the model (when `registry`
    is given) or its schema cannot be compiled by the grammar engine (checked once per schema)."""
    for name, schema in spec.tools.items():
        if registry is not None and name not in registry:
            raise DecodingError(f"tool {name!r} is not registered on the served model, so it has no tool token; "
                                f"registered: {', '.join(sorted(registry.names)[:20])}")
        try:
            compile_arguments(name, schema, _probe_vocabulary(), whitespace)
        except GrammarError as e:
            raise DecodingError(str(e)) from None


def rules_for(spec: CallSpec, registry: ToolRegistry, eos: Iterable[int], vocab: grammar.Vocabulary, n_real: int,
              whitespace: str = DEFAULT_WHITESPACE) -> CallRules:
    """The decoding rules of `spec` for a model with `registry`, over `vocab`'s logits width.
    Every enabled tool's grammar is compiled now (a `GrammarError` names the tool)."""
    check_spec(spec, registry, whitespace)
    compiled = {name: compile_arguments(name, schema, vocab, whitespace) for name, schema in spec.tools.items()}
    return CallRules({n: registry.token_ids[n] for n in spec.tools}, registry.token_ids.values(), eos, spec.mode,
                     vocab.size, n_real, compiled.__getitem__, parallel=spec.parallel)


# ---------------------------------------------------------------------------------------------
# generated text -> content and calls
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _token_pattern(tokens: tuple[str, ...]) -> "re.Pattern[str]":
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def split_calls(text: str, name_of_token: Mapping[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """``(content, [(tool name, raw argument text), ...])``: the text before the first tool token,
    then each call's name and the text up to the next tool token (or the end). `name_of_token`
    maps each tool's token text (``<<name>>``) to the tool's name."""
    if not name_of_token:
        return text, []
    parts = _token_pattern(tuple(name_of_token)).split(text)
    marks = _token_pattern(tuple(name_of_token)).findall(text)
    return parts[0], [(name_of_token[m], raw) for m, raw in zip(marks, parts[1:])]


@functools.lru_cache(maxsize=1024)
def _tool(name: str, schema_json: str) -> Tool:
    return Tool(name, "", json.loads(schema_json))


def valid_arguments(name: str, raw: str, schemas: Mapping[str, Mapping[str, Any]]) -> Optional[str]:
    """Why `raw` is not a valid call of `name` under the request's `schemas` (not a requested
    tool, not a JSON object, or not valid under its schema: `toolken.tools.argument_error`), or None."""
    if name not in schemas:
        return f"tool {name!r} was not offered in this request"
    try:
        args = json.loads(raw)
    except json.JSONDecodeError as e:
        return f"arguments are not JSON ({e})"
    if not isinstance(args, dict):
        return f"arguments are a JSON {type(args).__name__}, not an object"
    return argument_error(_tool(name, json.dumps(schemas[name], sort_keys=True)), args)


@dataclass
class StreamDelta:
    """What a streaming step adds: new content text, and per call (by index) its name when the
    call is new and the new argument text."""

    content: str = ""
    calls: list[tuple[int, Optional[str], str]] = field(default_factory=list)


class CallStream:
    """Turns the growing generated text of one streamed response into deltas: the content before
    the first call as it arrives, then each call's name once and its arguments as they grow.
    Concatenated, the deltas give exactly `split_calls` of the final text. Nothing is held back:
    a tool token is one token, so its text never arrives split across two steps."""

    def __init__(self, name_of_token: Mapping[str, str]) -> None:
        self.name_of_token = dict(name_of_token)
        self.sent_content = 0
        self.sent_args: list[int] = []

    def feed(self, text: str) -> StreamDelta:
        content, calls = split_calls(text, self.name_of_token)
        delta = StreamDelta(content[self.sent_content:])
        self.sent_content = len(content)
        for i, (name, raw) in enumerate(calls):
            new = i >= len(self.sent_args)
            if new:
                self.sent_args.append(0)
            if new or len(raw) > self.sent_args[i]:
                delta.calls.append((i, name if new else None, raw[self.sent_args[i]:]))
                self.sent_args[i] = len(raw)
        return delta


def token_names(registry: ToolRegistry) -> dict[str, str]:
    """Tool token text -> tool name, for every tool on the model."""
    return {registry.tokens[n]: n for n in registry.names}

