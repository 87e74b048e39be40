"""Constrained tool-call decoding: a `transformers.LogitsProcessor` and the APIs on top of it.

Each generated sequence runs this state machine over its own tokens (the text format that the
training data uses: optional text, then `<<tool>>{json arguments}` calls back to back, then
the end of the turn):

======================  =====================================================================
state                   tokens allowed next
======================  =====================================================================
``TEXT``                (``mode="auto"`` or ``"none"``, the start) every real token (ids
                        ``< len(tokenizer)``) except the tokens of tools that are not enabled;
                        enabled tool tokens get ``+tool_bias`` and start a call (``ARGS``).
                        ``mode="none"``: no tool token at all (the row never leaves ``TEXT``).
``START``               (``mode="required"``, nothing generated yet) only enabled tool tokens.
``ARGS``                after tool token ``<<t>>``: what ``t``'s JSON-Schema grammar allows
                        next (JSON whitespace per ``whitespace=``; argument names the schema does not
                        declare only with ``extra_arguments=True``; never a tool token or
                        end-of-turn, since a complete value has already moved the row on).
``AFTER``               the arguments value is complete (``Matcher.can_terminate()``; tool
                        arguments are JSON objects, so this is right after the closing ``}``
                        and nothing but whitespace could follow): only an enabled tool token
                        (the next, parallel call) or an end-of-turn token — no whitespace, no
                        text, exactly as the training data writes calls.
``DONE``                end-of-turn was emitted; the row is left alone (``generate`` pads it).
======================  =====================================================================

End-of-turn tokens are ``eos_token_id`` if given, else the model's ``generation_config``
EOS ids, else the tokenizer's EOS. A row whose last token is one its state forbids (a beam
search candidate with a ``-inf`` score that was kept as a running beam) is marked off and left
unconstrained; its score stays -inf and `generate_tool_calls` leaves such beams out.
Nothing forces a call to end: a call cut off by ``max_new_tokens`` is reported as incomplete.

Why the state is derived from tokens: beam search reorders and duplicates rows every step, so
a row's position says nothing about its history. Each step the processor keys every row by the
tuple of its generated ids, finds the state of that tuple minus its last token in the previous
step's table, and advances it by the last token (copying the grammar matcher with
`Matcher.copy()` only when several rows continue the same parent). Rows with identical
histories share one state and one mask. A row whose parent is unknown is replayed from the
start, so the result never depends on how rows were ordered.

Masks of all grammar rows of a step are filled in one `fill_next_token_bitmasks` call (the C++
engine releases the GIL) and applied, with the fixed masks of `START`/`AFTER` rows, in one
`toolken.kernels.apply_token_bitmask_` call; `TEXT` rows only need a few ids set to -inf.

References: ToolGen (Wang et al., 2024, "ToolGen: Unified Tool Retrieval and Calling via
Generation") for atomic tool tokens, constrained generation of tool tokens and retrieval by
constrained beam search; ToolkenGPT (Hao et al., 2023) for the tool-token logit bias.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from transformers import LogitsProcessor

from . import grammar
from .errors import DecodingError, GrammarError, NotExtendedError, ToolkenError
from .kernels import apply_token_bitmask_
from .registry import NOT_EXTENDED, ToolRegistry, find_registry
from .tools import Tool

__all__ = ["ToolCallLogitsProcessor", "CallRules", "CallState", "MODES", "DEFAULT_WHITESPACE", "registry_of",
           "enabled_tools", "eos_ids", "check_mode", "compile_arguments", "grammar_vocabulary",
           "TEXT", "START", "ARGS", "AFTER", "DONE", "OFF"]

MODES = ("auto", "required", "none")

#: JSON whitespace the argument grammars allow (`grammar.compile_json_schema`'s ``whitespace``):
#: - "canonical" (the default): exactly ``json.dumps``' separators ``", "`` and ``": "`` and no
#:   other whitespace, which is how toolken's training data writes arguments
#:   (`toolken.format.format_arguments`): the model cannot drift into whitespace it never saw.
#: - "flexible": any JSON whitespace between tokens (bounded runs), for models trained on
#:   arguments from other serializers (pretty-printed JSON, hand-written examples).
#: - "compact": no whitespace at all, for models trained on ``json.dumps(separators=(",", ":"))``.
DEFAULT_WHITESPACE = "canonical"

# Row phases (see the module docstring); OFF: the row took a token its phase forbids.
TEXT, START, ARGS, AFTER, DONE, OFF = "text", "start", "args", "after", "done", "off"

ToolsArg = Optional[Iterable[Union[str, Tool]]]

# ---------------------------------------------------------------------------------------------
# Argument checks shared with toolken.generation
# ---------------------------------------------------------------------------------------------
def registry_of(model_or_registry: Any) -> ToolRegistry:
    """The registry of an extended model with at least one tool (else a clear error)."""
    reg = find_registry(model_or_registry)
    if reg is None:
        raise NotExtendedError(NOT_EXTENDED)
    if len(reg) == 0:
        raise DecodingError("the model's tool registry is empty: extend it with at least one tool")
    return reg


def enabled_tools(reg: ToolRegistry, tools: ToolsArg) -> list[str]:
    """The registered tool names `tools` enables (all when None), deduplicated, in order."""
    if isinstance(tools, (str, Tool)):
        tools = [tools]
    try:
        names = reg.subset(None if tools is None else list(tools))
    except ToolkenError as e:
        raise DecodingError(f"{e}. Pass only registered tools in `tools=`, or extend the model with the "
                            f"missing ones first") from None
    return list(dict.fromkeys(names))


def check_mode(mode: str, enabled: Sequence[str]) -> None:
    """A `DecodingError` unless `mode` is one of `MODES` and "required" has a tool to call."""
    if mode not in MODES:
        raise DecodingError(f"unknown mode {mode!r}; use one of {', '.join(map(repr, MODES))}")
    if mode == "required" and not enabled:
        raise DecodingError("mode='required' needs at least one enabled tool, but `tools` is empty")


def eos_ids(tokenizer: Any, model: Any = None, eos_token_id: Any = None) -> list[int]:
    """End-of-turn ids: `eos_token_id`, else the model's generation config, else the tokenizer's."""
    ids = eos_token_id
    if ids is None and model is not None:
        gen = getattr(model, "generation_config", None)
        ids = getattr(gen, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        raise DecodingError("no end-of-turn token: the tokenizer has no eos_token and the model's "
                            "generation_config none either; pass `eos_token_id=`")
    return sorted({int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])})


def compile_arguments(tool: str, parameters: Any, vocab: grammar.Vocabulary, whitespace: str = DEFAULT_WHITESPACE,
                      extra_arguments: bool = False) -> grammar.CompiledGrammar:
    """The grammar of `tool`'s arguments (its `parameters` JSON Schema) for `vocab`; compiles are
    cached per vocabulary and schema. A schema the engine cannot use is a `GrammarError` naming the tool."""
    try:
        return grammar.compile_json_schema(dict(parameters), vocab, whitespace=whitespace, strict=not extra_arguments)
    except GrammarError as e:
        raise GrammarError(f"tool {tool!r}: its parameters schema cannot be used for constrained "
                           f"decoding: {e}") from None


def _bits(ids: Iterable[int], vocab_size: int) -> np.ndarray:
    """One bitmask row (int32 words, bit i%32 of word i//32) with `ids` set."""
    words = np.zeros((vocab_size + 31) // 32, dtype=np.uint32)
    ids = np.asarray([i for i in ids if 0 <= i < vocab_size], dtype=np.int64)
    np.bitwise_or.at(words, ids // 32, (np.uint32(1) << (ids % 32).astype(np.uint32)))
    return words.view(np.int32)


# ---------------------------------------------------------------------------------------------
# Grammar vocabularies (one per tokenizer and logits width)
# ---------------------------------------------------------------------------------------------
_VOCABS: "weakref.WeakKeyDictionary[Any, dict[tuple, grammar.Vocabulary]]" = weakref.WeakKeyDictionary()


def grammar_vocabulary(tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> grammar.Vocabulary:
    """The grammar engine's vocabulary for a tokenizer at a logits width, built once (it reads
    every token's bytes) and kept as long as the tokenizer lives. Compiled grammars are cached
    on it (`grammar.compile_json_schema`), so sharing it shares them."""
    per_tokenizer = _VOCABS.setdefault(tokenizer, {})
    key = (vocab_size, tuple(stop_ids), len(tokenizer))
    if key not in per_tokenizer:
        per_tokenizer[key] = grammar.Vocabulary.from_tokenizer(tokenizer, stop_ids=list(stop_ids), size=vocab_size)
    return per_tokenizer[key]


# ---------------------------------------------------------------------------------------------
# The per-sequence state machine (shared with toolken.integrations)
# ---------------------------------------------------------------------------------------------
@dataclass
class CallState:
    """Where one sequence is in the state machine of the module docstring (`phase`), the tool
    whose arguments it is writing and that call's grammar matcher (`ARGS` only)."""

    phase: str
    tool: Optional[str] = None
    matcher: Optional[grammar.Matcher] = None

    def copy(self) -> "CallState":
        return CallState(self.phase, self.tool, self.matcher.copy() if self.matcher is not None else None)


class CallRules:
    """The rules one generation runs under (the module docstring's table): which tool tokens
    start a call, the grammar of each tool's arguments, the end-of-turn ids, over logits of
    `vocab_size` columns of which the first `n_real` are real tokens. Immutable and shared by
    every sequence under the same rules; each sequence holds its own `CallState`.

    Args:
        enabled: enabled tool name -> its token id.
        tool_ids: the token ids of every tool on the model (the ones not enabled are never allowed).
        eos: end-of-turn ids.
        mode: one of `MODES`.
        vocab_size, n_real: the logits' width, and how many of its ids are real tokens.
        grammar_for: tool name -> its arguments' compiled grammar (called at the tool's first call).
        parallel: whether another call may follow a call (else only the end of the turn).
    """

    def __init__(self, enabled: Mapping[str, int], tool_ids: Iterable[int], eos: Iterable[int], mode: str,
                 vocab_size: int, n_real: int, grammar_for: Callable[[str], grammar.CompiledGrammar],
                 parallel: bool = True) -> None:
        check_mode(mode, list(enabled))
        self.mode, self.vocab_size, self.n_real = mode, int(vocab_size), int(n_real)
        self.grammar_for = grammar_for
        self.eos_ids = frozenset(int(i) for i in eos)
        self.tool_of_id = {int(i): n for n, i in enabled.items()}
        all_tools = {int(i) for i in tool_ids} | set(self.tool_of_id)
        bad = [i for i in sorted(all_tools) if not 0 <= i < self.vocab_size]
        if bad:
            raise DecodingError(f"tool token id {bad[0]} is beyond the logits' vocabulary ({self.vocab_size}): the model's "
                                f"output embedding was not resized for its tools")
        self.enabled_ids = sorted(self.tool_of_id)
        self.text_blocked = sorted(all_tools if mode == "none" else all_tools - set(self.tool_of_id))
        self.text_blocked_set = frozenset(self.text_blocked)
        self.start_bits = _bits(self.enabled_ids, self.vocab_size)
        self.parallel = bool(parallel)
        self.after_bits = _bits((self.enabled_ids if parallel else []) + sorted(self.eos_ids), self.vocab_size)
        self._text_bits: Optional[np.ndarray] = None

    @property
    def text_bits(self) -> np.ndarray:
        """The `TEXT` state's mask: every real token but the blocked tool tokens (built on first use)."""
        if self._text_bits is None:
            words = _bits(range(self.n_real), self.vocab_size)
            words &= ~_bits(self.text_blocked, self.vocab_size)
            self._text_bits = words
        return self._text_bits

    def initial(self) -> CallState:
        return CallState(START if self.mode == "required" else TEXT)

    def advance(self, state: CallState, token: int) -> bool:
        """Move `state` (in place) past `token`; False if its phase forbids `token` (it is now `OFF`)."""
        phase = state.phase
        if phase in (DONE, OFF):
            return True
        tool = self.tool_of_id.get(token)
        if phase == ARGS:  # the grammar decides; a complete value closes the call
            if not state.matcher.accept_token(token):
                return self._off(state)
            if state.matcher.can_terminate():
                state.phase, state.matcher = AFTER, None
            return True
        if token in self.eos_ids and phase in (TEXT, AFTER):
            state.phase = DONE
        elif tool is not None and (phase == START or (phase == AFTER and self.parallel) or
                                   (phase == TEXT and self.mode != "none")):
            state.phase, state.tool, state.matcher = ARGS, tool, grammar.Matcher(self.grammar_for(tool))
        elif phase != TEXT or not 0 <= token < self.n_real or token in self.text_blocked_set:
            return self._off(state)
        return True

    def fixed_mask(self, state: CallState) -> Optional[np.ndarray]:
        """The mask of a `START`/`AFTER` state (None for the others)."""
        return self.start_bits if state.phase == START else self.after_bits if state.phase == AFTER else None

    @staticmethod
    def _off(state: CallState) -> bool:
        state.phase, state.matcher = OFF, None
        return False


# ---------------------------------------------------------------------------------------------
# The processor
# ---------------------------------------------------------------------------------------------
class ToolCallLogitsProcessor(LogitsProcessor):
    """Constrains `generate` to the tool-call format: text, then `<<tool>>{arguments JSON}` calls
    whose tool is enabled and whose arguments match its JSON Schema, then end of turn.

    Args:
        tokenizer: the extended tokenizer (tool tokens included).
        model_or_registry: the extended model (its registry and EOS ids are read) or a
            `ToolRegistry`.
        tools: enabled tool names or `Tool`s (default: all registered). Other tools' tokens are
            never allowed.
        mode: `"auto"` (model chooses text or calls), `"required"` (the first token is a tool
            call; after calls only further calls or end of turn), `"none"` (no tool token ever).
        tool_bias: added to the logits of enabled tool tokens where free text competes with a
            call (the `TEXT` state), ToolkenGPT's knob for calling more or less often.
        eos_token_id: end-of-turn id(s); default from the model's generation config or tokenizer.
        extra_arguments: allow argument names a tool's schema does not list when the schema does
            not say (an absent `additionalProperties`, which JSON Schema reads as "allowed").
            Default False: only declared parameters, as in OpenAI's strict function calling;
            an explicit `additionalProperties` is obeyed either way.
        whitespace: JSON whitespace allowed inside arguments: "canonical" (the default,
            `DEFAULT_WHITESPACE`: exactly the separators toolken trains with), "flexible" or
            "compact" (see `DEFAULT_WHITESPACE` for when to use which).

    One processor serves one `generate` call at a time; it notices a new call (the input did not
    grow by one token, or its prompt part changed) and starts over. The state machine is in the module docstring.
    """

    def __init__(self, tokenizer: Any, model_or_registry: Any, tools: ToolsArg = None, mode: str = "auto",
                 tool_bias: float = 0.0, eos_token_id: Union[int, Sequence[int], None] = None,
                 extra_arguments: bool = False, whitespace: str = DEFAULT_WHITESPACE) -> None:
        self.registry = registry_of(model_or_registry)
        self.enabled = enabled_tools(self.registry, tools)
        check_mode(mode, self.enabled)
        self.tokenizer = tokenizer
        self.mode = mode
        self.tool_bias = float(tool_bias)
        self.extra_arguments = bool(extra_arguments)
        self.whitespace = whitespace
        self._compiled: dict[str, grammar.CompiledGrammar] = {}  # tool name -> its arguments grammar
        model = None if isinstance(model_or_registry, ToolRegistry) else model_or_registry
        self.eos_ids = eos_ids(tokenizer, model, eos_token_id)
        self._vocab_size = 0
        self._prompt_len = 0
        self._prompt = torch.empty(0, 0, dtype=torch.long)
        self._last_width = -1
        self._prev: dict[tuple, CallState] = {}
        self.off_rows = 0  # rows that took a token their state forbids (dead beams); for debugging

    # -- per-generation setup ----------------------------------------------------------------
    def _start(self, input_ids: torch.Tensor, vocab_size: int) -> None:
        """A new `generate` call: its first input is the (left-padded) prompt of every row."""
        self._prompt_len = input_ids.shape[1]
        self._prompt = input_ids.clone()
        self._prev = {}
        if vocab_size != self._vocab_size:
            self._setup_vocab(vocab_size)

    def _setup_vocab(self, V: int) -> None:
        n_real = min(len(self.tokenizer), V)
        self.rules = CallRules({n: self.registry.token_ids[n] for n in self.enabled}, self.registry.token_ids.values(),
                               self.eos_ids, self.mode, V, n_real, self._grammar_for)
        self._vocab_size = V
        self._vocab = grammar_vocabulary(self.tokenizer, V, self.eos_ids)
        self._text_blocked = torch.tensor(self.rules.text_blocked, dtype=torch.long)
        self._enabled_t = torch.tensor(self.rules.enabled_ids, dtype=torch.long)
        self._mask_buf = np.empty((0, len(self.rules.start_bits)), dtype=np.int32)  # [batch, words], reused

    def precompile(self, vocab_size: int, tools: ToolsArg = None) -> dict[str, GrammarError]:
        """Build the grammar vocabulary for `vocab_size` logits and compile the argument grammars
        of `tools` (default: every enabled tool) now rather than at each tool's first call
        during generation. Returns the tools whose schema the engine cannot compile, with the
        error; generating such a call raises that `GrammarError`."""
        if vocab_size != self._vocab_size:
            self._setup_vocab(vocab_size)
        failed = {}
        for name in self.enabled if tools is None else enabled_tools(self.registry, tools):
            try:
                self._grammar_for(name)
            except GrammarError as e:
                failed[name] = e
        return failed

    def _grammar_for(self, tool: str) -> grammar.CompiledGrammar:
        cg = self._compiled.get(tool)
        if cg is None:
            cg = compile_arguments(tool, self.registry.tools[tool].parameters, self._vocab, self.whitespace,
                                   self.extra_arguments)
            self._compiled[tool] = cg
        return cg

    # -- state transitions -------------------------------------------------------------------
    def _advance(self, row: CallState, token: int) -> None:
        if not self.rules.advance(row, token):
            self.off_rows += 1

    def _replay(self, history: tuple) -> CallState:
        row = self.rules.initial()
        for t in history:
            self._advance(row, t)
        return row

    def _rows_for(self, histories: list[tuple]) -> dict[tuple, CallState]:
        """The state of every distinct history, continued from the previous step's table."""
        children: dict[tuple, int] = {}
        for h in histories:
            if h and h[:-1] in self._prev:
                children[h[:-1]] = children.get(h[:-1], 0) + 1
        out: dict[tuple, CallState] = {}
        for h in histories:
            if not h:
                out[h] = self.rules.initial()
                continue
            parent_key = h[:-1]
            parent = self._prev.get(parent_key)
            if parent is None:
                out[h] = self._replay(h)
                continue
            children[parent_key] -= 1
            row = parent if children[parent_key] == 0 else parent.copy()
            self._advance(row, h[-1])
            out[h] = row
        return out

    # -- masks -------------------------------------------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        B, width = input_ids.shape
        if (width != self._last_width + 1 or scores.shape[-1] != self._vocab_size
                or not torch.equal(input_ids[:, :self._prompt_len], self._prompt)):
            self._start(input_ids, scores.shape[-1])
        self._last_width = width
        histories = [tuple(r) for r in input_ids[:, self._prompt_len:].tolist()]
        rows = self._rows_for(list(dict.fromkeys(histories)))
        self._prev = rows

        args = [h for h, r in rows.items() if r.phase == ARGS]
        mask_of: dict[tuple, np.ndarray] = {}
        if args:  # every grammar mask of the step in one engine call (GIL released)
            grammar_masks = grammar.allocate_token_bitmask(len(args), self._vocab_size)
            grammar.fill_next_token_bitmasks([rows[h].matcher for h in args], grammar_masks)
            mask_of = dict(zip(args, grammar_masks))
        text_rows, masked_rows = [], []
        if self._mask_buf.shape[0] < B:
            self._mask_buf = np.empty((B, self._mask_buf.shape[1]), dtype=np.int32)
        for b, h in enumerate(histories):
            row = rows[h]
            if row.phase == TEXT:
                text_rows.append(b)
            elif row.phase in (START, AFTER, ARGS):
                masked_rows.append(b)
                self._mask_buf[b] = mask_of[h] if row.phase == ARGS else self.rules.fixed_mask(row)
        if text_rows:
            self._constrain_text(scores, text_rows, B)
        if masked_rows:
            apply_token_bitmask_(scores, torch.from_numpy(self._mask_buf[:B]).to(scores.device),
                                 indices=None if len(masked_rows) == B else masked_rows)
        return scores

    def _constrain_text(self, scores: torch.Tensor, text_rows: list[int], B: int) -> None:
        rows = slice(None) if len(text_rows) == B else torch.tensor(text_rows, device=scores.device)
        view = scores if len(text_rows) == B else scores[rows]
        if self._text_blocked.numel():
            view[:, self._text_blocked.to(scores.device)] = float("-inf")
        if self.rules.n_real < self._vocab_size:
            view[:, self.rules.n_real:] = float("-inf")
        if self.tool_bias and self.mode != "none" and self._enabled_t.numel():
            view[:, self._enabled_t.to(scores.device)] += self.tool_bias
        if len(text_rows) != B:
            scores[rows] = view
