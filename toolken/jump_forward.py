"""Jump-forward decoding of tool calls: where the argument grammar allows exactly one
continuation (a fixed key, ``": "``, a closing brace), its tokens are appended without a step of
their own and run through the model in one multi-token forward on the KV cache.

Two ways (`generate_ids`' ``jump_forward``):

- ``"verify"`` (``True``, the default): the forced tokens are a draft, fed in the same forward
  as the sampled token before them; the logits at each draft position then give the token the
  model would have chosen there (its greedy choice under the grammar mask, after the user's
  processors, exactly as a plain step). The longest draft prefix that agrees is kept, the first
  disagreeing choice replaces the rest (whose cache slots are masked out), and decoding goes on
  from there: the step-by-step greedy output token for token, a forward saved per agreeing
  draft token. (Forcing changes calls: SmolLM2-135M, untrained on calls, spells a key ``{``,
  ``"``, ``c``, ``it``, ``y`` where the tokenizer splits ``{"``, ``city``.)
- ``"force"``: the forced tokens are appended without asking the model (xgrammar's jump-forward
  strings, llguidance's fast-forward tokens), split as the tokenizer would split them in
  training (`JumpPlanner.plan`, with token healing): fewer forwards, and the training format's
  split; the same output as step by step only where the model would choose the forced tokens.

The planner: `JumpPlanner.draft` (``"verify"``) splits the forced text from the last sampled
token on as the tokenizer splits the whole call when that split has a boundary there, else into
the longest vocabulary tokens, and never rolls back a sampled token (the model chose it).
`JumpPlanner.plan` (``"force"``) gives the forced text
(`grammar.Matcher.find_jump_forward_string`) as the tokens the model would see in training: the
call so far (tool token, argument tokens) plus the forced text is re-encoded as one string.
Token healing at the boundary: when the re-encoding has no token boundary where the sampled text
ends (the last sampled token ``"`` followed by forced ``, "`` is canonically ``",`` + `` "``),
the last sampled token(s), at most `MAX_HEAL`, are rolled back and replaced by the re-encoding
from the last shared boundary; the text is unchanged, only its split. At the far end, the last
forced token is handed back to the model when a longer vocabulary token starts with its bytes
and the call is not complete (a canonical split may merge it with what follows: `` "`` before a
value). Every planned token must be accepted by the grammar, and the re-encoding must reproduce
the bytes exactly (a normalizing tokenizer skips the jump); otherwise the step is a plain one.

`generate_ids` is greedy decoding under the tool-call rules (`toolken.decoding.CallRules`) with
its own loop, because `transformers.generate` adds one token per forward. Rows of a batch
advance by different numbers of tokens per forward: each row's chunk is right-padded, padded,
rolled-back and rejected cache slots are masked out of the attention mask, and positions count
only the row's live slots, so every row sees exactly its own sequence.

References: xgrammar (Dong et al., 2024, "XGrammar: Flexible and Efficient Structured Generation
Engine for Large Language Models"): jump-forward strings of the grammar; SGLang (Zheng et al.,
2024, "SGLang: Efficient Execution of Structured Language Model Programs"): jump-forward
decoding with a compressed FSM and re-tokenization of the joined text with retraction of the
boundary tokens; llguidance (Microsoft/guidance-ai): fast-forward tokens, forced bytes tokenized
canonically, token healing by backtracking, and its note that forced text a tokenizer normalizes
must not be forced; speculative decoding (Leviathan et al., 2023, "Fast Inference from
Transformers via Speculative Decoding"): a draft checked against the model's own greedy choices
in one forward, which is how ``"verify"`` keeps the output exact.
"""
from __future__ import annotations

import bisect
import inspect
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch

from . import grammar
from .decoding import AFTER, ARGS, DONE, TEXT, CallState, ToolCallLogitsProcessor, grammar_vocabulary
from .errors import DecodingError, GrammarError
from .kernels import apply_token_bitmask_
from .modeling import pad

__all__ = ["JumpPlanner", "Jump", "planner_for", "generate_ids", "supports", "jump_mode", "JUMP_MODES", "MAX_HEAL"]

#: the ways of `generate_ids` (see the module docstring); ``True`` means the first.
JUMP_MODES = ("verify", "force")

#: Sampled tokens a jump may roll back and re-split (token healing at the boundary).
MAX_HEAL = 2

#: generation-config fields `generate_ids` reproduces only at these values (None: unset).
_NEUTRAL = {"do_sample": (None, False), "num_beams": (None, 1), "num_return_sequences": (None, 1),
            "repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
            "min_new_tokens": (None, 0), "min_length": (None, 0), "suppress_tokens": (None,),
            "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
            "sequence_bias": (None,), "encoder_repetition_penalty": (None, 1.0), "penalty_alpha": (None,),
            "num_beam_groups": (None, 1), "constraints": (None,), "force_words_ids": (None,),
            "renormalize_logits": (None, False), "guidance_scale": (None, 1.0), "watermarking_config": (None,),
            "assistant_model": (None,), "prompt_lookup_num_tokens": (None,), "exponential_decay_length_penalty": (None,)}
#: keyword arguments of `generate` that `generate_ids` takes (anything else: step-by-step `generate`).
_TAKEN = {"max_new_tokens", "max_length", "use_cache", *_NEUTRAL}


@dataclass
class Jump:
    """A planned jump: roll back the last `rollback` tokens, then append `tokens`; `matcher` is
    the grammar state after them (the original matcher is left unchanged)."""

    rollback: int
    tokens: list[int]
    matcher: grammar.Matcher


class JumpPlanner:
    """Plans jumps for one tokenizer and grammar vocabulary (see the module docstring).

    Args:
        tokenizer: a Hugging Face tokenizer (the extended one: tool tokens split off as tokens).
        vocab: the grammar vocabulary of that tokenizer (token ids -> bytes).
        max_heal: sampled tokens a jump may roll back.
    """

    def __init__(self, tokenizer: Any, vocab: grammar.Vocabulary, max_heal: int = MAX_HEAL) -> None:
        self.tokenizer, self.vocab, self.max_heal = tokenizer, vocab, int(max_heal)
        self._bytes = [_bytes_or_empty(vocab, i) for i in range(vocab.size)]
        self._sorted = sorted({b for b in self._bytes if b})
        self._ids: dict[bytes, int] = {}  # bytes -> the smallest id with them
        for i in range(len(self._bytes) - 1, -1, -1):
            if self._bytes[i]:
                self._ids[self._bytes[i]] = i
        self._longest = max(map(len, self._ids), default=0)
        self._heads: dict[str, list[int]] = {}

    def token_bytes(self, token: int) -> bytes:
        return self._bytes[token] if 0 <= token < len(self._bytes) else b""

    def extendable(self, piece: bytes) -> bool:
        """Whether a longer vocabulary token starts with `piece`."""
        i = bisect.bisect_right(self._sorted, piece)
        return i < len(self._sorted) and self._sorted[i].startswith(piece)

    def encode(self, lead: str, text: str) -> Optional[list[int]]:
        """The tokens of `text` as the tokenizer splits ``lead + text`` (lead: the tool token's text,
        so the arguments are split as in the whole training turn), or None when that split does
        not start with `lead`'s own tokens or does not reproduce `text`'s bytes exactly."""
        head = self._heads.get(lead)
        if head is None:
            head = self._heads[lead] = list(self.tokenizer(lead, add_special_tokens=False).input_ids)
        ids = list(self.tokenizer(lead + text, add_special_tokens=False).input_ids)
        if ids[:len(head)] != head:
            return None
        ids = ids[len(head):]
        if b"".join(self.token_bytes(t) for t in ids) != text.encode("utf-8"):
            return None
        return ids

    def plan(self, matcher: grammar.Matcher, call: Sequence[int], lead: str, room: int) -> Optional[Jump]:
        """The jump after the argument tokens `call` (matcher: their grammar state; lead: the
        call's tool token text), adding at most `room` tokens net; None when nothing is forced
        or the forced text cannot be split as the tokenizer would (then sample as usual)."""
        forced = matcher.find_jump_forward_string()
        if not forced or room <= 0:
            return None
        pieces = [self.token_bytes(t) for t in call]
        sampled = b"".join(pieces)
        try:
            text = sampled.decode("utf-8") + forced
        except UnicodeDecodeError:  # the call ends inside a character
            return None
        ids = self.encode(lead, text)
        if ids is None:
            return None
        start = self._shared_boundary(pieces, ids)
        if start is None:
            return None
        rollback, first = start
        new = ids[first:]
        m = matcher.copy()
        if rollback:
            m.rollback(rollback)
        for t in new:
            if not m.accept_token(t):
                return None
        keep = min(len(new), room + rollback)
        if keep < len(new):  # the token budget ends inside the forced text
            m.rollback(len(new) - keep)
            new = new[:keep]
        if new and not m.can_terminate() and self.extendable(self.token_bytes(new[-1])):
            m.rollback(1)  # hand the last token back: the text after it may merge with it
            new = new[:-1]
        if sum(len(self.token_bytes(t)) for t in new) <= sum(len(p) for p in pieces[len(pieces) - rollback:]):
            return None  # no forced byte would be appended
        return Jump(rollback, new, m)

    def draft(self, matcher: grammar.Matcher, call: Sequence[int], lead: str, room: int) -> list[int]:
        """The forced text after the argument tokens `call` as at most `room` tokens for the model
        to check (``"verify"``; matcher: the state after `call`, left unchanged): the tokenizer's
        split of the whole call from the end of `call` on when it has a boundary there, else
        the longest vocabulary tokens; cut where the grammar refuses a token. Empty when
        nothing is forced."""
        forced = matcher.find_jump_forward_string()
        if not forced or room <= 0:
            return []
        pieces = [self.token_bytes(t) for t in call]
        try:
            ids = self.encode(lead, b"".join(pieces).decode("utf-8") + forced)
        except UnicodeDecodeError:  # the call ends inside a character
            ids = None
        start = None if ids is None else self._shared_boundary(pieces, ids, max_heal=0)
        new = ids[start[1]:] if start is not None else self.longest_split(forced.encode("utf-8"))
        m, kept = matcher.copy(), []
        for t in new[:room]:
            if not m.accept_token(t):
                break
            kept.append(t)
        return kept

    def longest_split(self, text: bytes) -> list[int]:
        """`text` as vocabulary tokens, longest first from the left; [] if a byte has no token."""
        out, i = [], 0
        while i < len(text):
            n = min(self._longest, len(text) - i)
            while n and text[i:i + n] not in self._ids:
                n -= 1
            if not n:
                return []
            out.append(self._ids[text[i:i + n]])
            i += n
        return out

    def _shared_boundary(self, pieces: list[bytes], ids: list[int],
                         max_heal: Optional[int] = None) -> Optional[tuple[int, int]]:
        """(sampled tokens to roll back, index in `ids` to append from): the last token boundary
        of the sampled text, at most `max_heal` (default the planner's) tokens back, that the
        re-encoding shares."""
        max_heal = self.max_heal if max_heal is None else max_heal
        offsets: dict[int, int] = {0: 0}
        pos = 0
        for j, t in enumerate(ids):
            pos += len(self.token_bytes(t))
            offsets[pos] = j + 1
        end = sum(len(p) for p in pieces)
        for rollback in range(0, min(max_heal, len(pieces)) + 1):
            if end in offsets:
                return rollback, offsets[end]
            if rollback < len(pieces):
                end -= len(pieces[len(pieces) - 1 - rollback])
        return None


def _bytes_or_empty(vocab: grammar.Vocabulary, token: int) -> bytes:
    """A token's bytes; b"" for the padding rows past the tokenizer's tokens."""
    try:
        return vocab.token_bytes(token)
    except GrammarError:
        return b""


_PLANNERS: "weakref.WeakKeyDictionary[Any, dict[int, JumpPlanner]]" = weakref.WeakKeyDictionary()


def planner_for(tokenizer: Any, vocab: grammar.Vocabulary) -> JumpPlanner:
    """One planner per tokenizer and vocabulary (it reads every token's bytes once)."""
    per = _PLANNERS.setdefault(tokenizer, {})
    if id(vocab) not in per:
        per[id(vocab)] = JumpPlanner(tokenizer, vocab)
    return per[id(vocab)]


def supports(model: Any, generate_kwargs: dict) -> bool:
    """Whether `generate_ids` reproduces `model.generate(**generate_kwargs)`: greedy search, one
    sequence per prompt, no other logits-changing setting (in the kwargs or the model's config)."""
    if set(generate_kwargs) - _TAKEN:
        return False
    gc = getattr(model, "generation_config", None)
    for name, neutral in _NEUTRAL.items():
        value = generate_kwargs[name] if name in generate_kwargs else getattr(gc, name, None)
        if value not in neutral and not (isinstance(value, (list, tuple)) and not value):
            return False
    return generate_kwargs.get("use_cache", True) is not False


def new_token_budget(model: Any, prompt_len: int, generate_kwargs: dict) -> int:
    """`max_new_tokens` as `generate` reads it (the kwarg, else the config's, else max_length - prompt)."""
    gc = getattr(model, "generation_config", None)
    n = generate_kwargs.get("max_new_tokens", getattr(gc, "max_new_tokens", None))
    if n is None:
        total = generate_kwargs.get("max_length", getattr(gc, "max_length", None)) or 20
        n = total - prompt_len
    return max(0, int(n))


def jump_mode(jump_forward: Union[bool, str, None]) -> Optional[str]:
    """The way `jump_forward` names (one of `JUMP_MODES`; True: ``"verify"``), None for no jumps."""
    if jump_forward is None or jump_forward is False:
        return None
    if jump_forward is True:
        return JUMP_MODES[0]
    if jump_forward not in JUMP_MODES:
        raise DecodingError(f"unknown jump_forward {jump_forward!r}; use True, False or one of "
                            f"{', '.join(map(repr, JUMP_MODES))}")
    return str(jump_forward)


@dataclass
class _Row:
    """One sequence of `generate_ids`: its generated ids, rule state, and cache bookkeeping."""

    state: CallState
    live: int  # the row's tokens in the cache that attention sees (prompt included)
    out: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # cache index of each fed token: `out`'s, then `draft`'s
    draft: list[int] = field(default_factory=list)  # fed after `out`, not yet checked ("verify")
    call_start: int = 0
    lead: str = ""
    done: bool = False
    drop: int = 0  # fed tokens rolled back or rejected, masked out at the next feed


def _takes(model: Any, kwarg: str) -> bool:
    try:
        return kwarg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _Decoder:
    """The greedy loop of `generate_ids` (one instance per call)."""

    def __init__(self, model: Any, proc: ToolCallLogitsProcessor, pad_id: int, budget: int,
                 processors: Sequence[Any], mode: Optional[str]) -> None:
        self.model, self.proc, self.pad_id, self.budget = model, proc, int(pad_id), int(budget)
        self.processors, self.mode = list(processors), mode
        self.eos = frozenset(proc.eos_ids)
        self.forwards = 0
        self.cache: Any = None
        self.cache_arg = "cache" if _takes(model, "cache") else "past_key_values"  # transformers >= 5.2x: `cache`
        self.length = 0  # cache slots so far (every row has as many, live or masked)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One model forward of `ids` on the cache; all positions' float32 logits."""
        kwargs = {self.cache_arg: self.cache} if self.cache is not None else {}
        out = self.model(input_ids=ids, attention_mask=self.attn, position_ids=positions, use_cache=True, **kwargs)
        self.cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        self.forwards += 1
        self.length += ids.shape[1]
        return out.logits.float()

    def setup(self, vocab_size: int) -> None:
        self.proc.precompile(vocab_size, tools=[])  # builds the rules and the grammar vocabulary
        self.rules = self.proc.rules
        vocab = grammar_vocabulary(self.proc.tokenizer, vocab_size, self.proc.eos_ids)
        self.planner = planner_for(self.proc.tokenizer, vocab) if self.mode else None
        self.enabled = torch.tensor(self.rules.enabled_ids, dtype=torch.long)

    def run(self, prompts: list[list[int]]) -> list[list[int]]:
        ids, self.attn = pad(prompts, self.pad_id, side="left")
        device = getattr(self.model, "device", torch.device("cpu"))
        ids, self.attn = ids.to(device), self.attn.to(device)
        logits = self.forward(ids, (self.attn.cumsum(-1) - 1).clamp(min=0))[:, -1:, :]
        self.setup(logits.shape[-1])
        self.prompts = prompts
        rows = [_Row(self.rules.initial(), live=len(p)) for p in prompts]
        pending = {b: logits[b] for b in range(len(rows))}
        while self.budget > 0:
            chosen = self.verify(pending, rows)
            chunks = {b: self.advance(rows[b], t) for b, t in chosen.items()}
            chunks = {b: c for b, c in chunks.items() if not rows[b].done}
            if not chunks:
                break
            pending = self.feed(rows, chunks)
        return [r.out for r in rows]

    def verify(self, pending: dict[int, torch.Tensor], rows: list[_Row]) -> dict[int, int]:
        """Each live row's next token. `pending[b]`: row b's logits after its last generated
        token and after each of its draft tokens. The model's choice at every one of those
        positions (`choose`); the draft's longest prefix that agrees is appended, and the choice
        after it is returned (none when the prefix used up the token budget)."""
        live = [b for b in pending if not rows[b].done]
        states: dict[int, list[CallState]] = {}
        for b in live:
            chain = [rows[b].state]
            for t in rows[b].draft:
                chain.append(chain[-1].copy())
                self.rules.advance(chain[-1], t)
            states[b] = chain
        where = [(b, i) for b in live for i in range(len(states[b]))]
        picks = self.choose(torch.stack([pending[b][i] for b, i in where]), [states[b][i] for b, i in where],
                            [self.prompts[b] + rows[b].out + rows[b].draft[:i] for b, i in where])
        pick = dict(zip(where, picks))
        chosen = {}
        for b in live:
            row = rows[b]
            agree = 0
            while agree < len(row.draft) and pick[b, agree] == row.draft[agree]:
                agree += 1
            row.out.extend(row.draft[:agree])
            row.state, row.drop, row.draft = states[b][agree], len(row.draft) - agree, []
            if len(row.out) >= self.budget:
                row.done = True
            else:
                chosen[b] = pick[b, agree]
        return chosen

    def choose(self, logits: torch.Tensor, states: list[CallState], seqs: list[list[int]]) -> list[int]:
        """The greedy token at each position (logits row i, rule state i, ids i: prompt and
        generated): the user's processors (on the unpadded ids), then the tool-call rules' mask
        (and `tool_bias` in free text), then the arg max."""
        scores = logits.clone()
        for i, seq in enumerate(seqs):
            if self.processors:
                ids = torch.tensor([seq], device=scores.device)
                for p in self.processors:
                    scores[i:i + 1] = p(ids, scores[i:i + 1])
        words = len(self.rules.start_bits)
        masks = grammar.allocate_token_bitmask(len(states), self.rules.vocab_size)
        args = [i for i, s in enumerate(states) if s.phase == ARGS]
        if args:  # every grammar mask of the step in one engine call (GIL released)
            filled = grammar.allocate_token_bitmask(len(args), self.rules.vocab_size)
            grammar.fill_next_token_bitmasks([states[i].matcher for i in args], filled)
            masks[args] = filled
        masked = list(args)
        for i, state in enumerate(states):
            fixed = self.rules.text_bits if state.phase == TEXT else self.rules.fixed_mask(state)
            if fixed is not None:
                masks[i, :words] = fixed
                masked.append(i)
        if masked:
            apply_token_bitmask_(scores, torch.from_numpy(masks).to(scores.device), indices=sorted(masked))
        text = [i for i, s in enumerate(states) if s.phase == TEXT]
        if text and self.proc.tool_bias and self.rules.mode != "none" and self.enabled.numel():
            idx = torch.tensor(text, device=scores.device)
            scores[idx[:, None], self.enabled.to(scores.device)[None, :]] += self.proc.tool_bias
        return scores.argmax(-1).tolist()

    def advance(self, row: _Row, token: int) -> list[int]:
        """Append `token` to `row`, then a forced jump ("force") or a draft ("verify") after it;
        the row's tokens to feed next. Adds to ``row.drop`` the fed tokens a jump rolled back."""
        fed = len(row.slots) - row.drop  # generated tokens in the cache (no draft is pending)
        row.out.append(token)
        was_args = row.state.phase == ARGS
        self.rules.advance(row.state, token)
        if token in self.eos or row.state.phase == DONE or len(row.out) >= self.budget:
            row.done = True
            return []
        if row.state.phase == ARGS and not was_args:  # a tool token opened a call
            row.call_start, row.lead = len(row.out), self.proc.tokenizer.convert_ids_to_tokens(token)
        keep = len(row.out)
        room = self.budget - len(row.out)
        if self.mode == "verify" and row.state.phase == ARGS:
            row.draft = self.planner.draft(row.state.matcher, row.out[row.call_start:], row.lead, room)
        elif self.mode == "force" and row.state.phase == ARGS:
            jump = self.planner.plan(row.state.matcher, row.out[row.call_start:], row.lead, room)
            if jump is not None:
                keep -= jump.rollback
                del row.out[keep:]
                row.out.extend(jump.tokens)
                row.state.matcher = jump.matcher
                if jump.matcher.can_terminate():
                    row.state.phase, row.state.matcher = AFTER, None
                if len(row.out) >= self.budget:
                    row.done = True
        row.drop += max(0, fed - keep)
        return row.out[min(keep, fed):] + row.draft

    def feed(self, rows: list[_Row], chunks: dict[int, list[int]]) -> dict[int, torch.Tensor]:
        """One forward of every row's chunk (right-padded; dropped slots masked out); per row, the
        logits after its last generated token and after each of its draft tokens."""
        B, width = len(rows), max(len(c) for c in chunks.values())
        device = self.attn.device
        ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, width), dtype=self.attn.dtype)
        positions = torch.zeros((B, width), dtype=torch.long)
        for b, chunk in chunks.items():
            row = rows[b]
            if row.drop:
                self.attn[b, row.slots[-row.drop:]] = 0
                del row.slots[-row.drop:]
                row.live -= row.drop
                row.drop = 0
            ids[b, :len(chunk)] = torch.tensor(chunk, dtype=torch.long)
            mask[b, :len(chunk)] = 1
            positions[b] = torch.arange(row.live, row.live + width)
            row.slots.extend(range(self.length, self.length + len(chunk)))
            row.live += len(chunk)
        self.attn = torch.cat([self.attn, mask.to(device)], dim=1)
        logits = self.forward(ids.to(device), positions.to(device))
        return {b: logits[b, len(c) - len(rows[b].draft) - 1:len(c)] for b, c in chunks.items()}


def generate_ids(model: Any, proc: ToolCallLogitsProcessor, prompts: list[list[int]], pad_id: int,
                 max_new_tokens: int, logits_processors: Sequence[Any] = (),
                 jump_forward: Union[bool, str] = True, stats: Optional[dict] = None) -> list[list[int]]:
    """Greedy decoding of `prompts` (token ids) under `proc`'s tool-call rules, with jump-forward
    (`jump_forward`: True or ``"verify"``, ``"force"``, or False for none; see the module
    docstring); each row's generated ids, ending with its end-of-turn token unless
    `max_new_tokens` cut it. `logits_processors` run before the rules at every position whose
    token the model chooses (``"verify"`` checks each draft token that way), one row at a time
    on that row's unpadded ids; tokens forced by ``"force"`` are not passed through them.
    `stats` (a dict), if given, receives ``forwards`` (model forward passes, the prompt's included).

    Without jumps and with ``"verify"`` the tokens are those of `model.generate` with greedy
    search under `proc` (without jumps in the same forward passes, one per token; with
    ``"verify"`` in fewer wherever the model agrees with the forced tokens); with ``"force"``
    they are the same wherever the model would itself choose the forced tokens as the tokenizer
    splits them.
    """
    mode = jump_mode(jump_forward)
    if not prompts:
        raise DecodingError("generate_ids needs at least one prompt")
    dec = _Decoder(model, proc, pad_id, max_new_tokens, logits_processors, mode)
    with torch.no_grad():
        out = dec.run([list(map(int, p)) for p in prompts])
    if stats is not None:
        stats["forwards"] = stats.get("forwards", 0) + dec.forwards
    return out
