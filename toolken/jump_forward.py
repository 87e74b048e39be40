"""Jump-forward decoding of tool calls: where the argument grammar allows exactly one
continuation (a fixed key, ``": "``, a closing brace), its tokens are appended without sampling
and run through the model in one multi-token forward on the KV cache.

Two parts:

- `JumpPlanner.plan`: the forced text (`grammar.Matcher.find_jump_forward_string`) as the
  tokens the model would see in training. The call so far (tool token, argument tokens) plus
  the forced text is re-encoded by the tokenizer as one string, so the forced text is split
  exactly as in the whole call's canonical tokenization. Token healing at the boundary: when the
  re-encoding has no token boundary where the sampled text ends (the last sampled token ``"``
  followed by forced ``, "`` is canonically ``",`` + `` "``), the last sampled token(s), at
  most `MAX_HEAL`, are rolled back and replaced by the re-encoding from the last shared
  boundary; the text is unchanged, only its split. At the far end, the last forced token is
  handed back to the model when a longer vocabulary token starts with its bytes and the call is
  not complete (the text after it is unknown, and a canonical split may merge it with what
  follows: `` "`` before a value). Every planned token must be accepted by the grammar, and the
  re-encoding must reproduce the bytes exactly (a normalizing tokenizer skips the jump);
  otherwise the step is a plain sampled step.
- `generate_ids`: greedy decoding under the tool-call rules (`toolken.decoding.CallRules`) with
  its own loop, because `transformers.generate` adds one token per forward. Rows of a batch
  advance by different numbers of tokens per forward: each row's chunk is right-padded, padded
  and rolled-back cache slots are masked out of the attention mask, and positions count only
  the row's live slots, so every row sees exactly its own sequence.

References: xgrammar (Dong et al., 2024, "XGrammar: Flexible and Efficient Structured Generation
Engine for Large Language Models"): jump-forward strings of the grammar; SGLang (Zheng et al.,
2024, "SGLang: Efficient Execution of Structured Language Model Programs"): jump-forward
decoding with a compressed FSM and re-tokenization of the joined text with retraction of the
boundary tokens; llguidance (Microsoft/guidance-ai): fast-forward tokens, forced bytes tokenized
canonically, token healing by backtracking, and its note that forced text a tokenizer normalizes
must not be forced.
"""
from __future__ import annotations

import bisect
import inspect
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from . import grammar
from .decoding import AFTER, ARGS, DONE, TEXT, CallState, ToolCallLogitsProcessor, grammar_vocabulary
from .errors import DecodingError, GrammarError
from .kernels import apply_token_bitmask_
from .modeling import pad

__all__ = ["JumpPlanner", "Jump", "planner_for", "generate_ids", "supports", "MAX_HEAL"]

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

    def _shared_boundary(self, pieces: list[bytes], ids: list[int]) -> Optional[tuple[int, int]]:
        """(sampled tokens to roll back, index in `ids` to append from): the last token boundary
        of the sampled text, at most `max_heal` tokens back, that the re-encoding shares."""
        offsets: dict[int, int] = {0: 0}
        pos = 0
        for j, t in enumerate(ids):
            pos += len(self.token_bytes(t))
            offsets[pos] = j + 1
        end = sum(len(p) for p in pieces)
        for rollback in range(0, min(self.max_heal, len(pieces)) + 1):
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


@dataclass
class _Row:
    """One sequence of `generate_ids`: its generated ids, rule state, and cache bookkeeping."""

    state: CallState
    live: int  # the row's tokens in the cache that attention sees (prompt included)
    out: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # cache index of each fed generated token
    call_start: int = 0
    lead: str = ""
    done: bool = False
    drop: int = 0  # fed tokens a jump rolled back, masked out at the next feed


def _takes(model: Any, kwarg: str) -> bool:
    try:
        return kwarg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _Decoder:
    """The greedy loop of `generate_ids` (one instance per call)."""

    def __init__(self, model: Any, proc: ToolCallLogitsProcessor, pad_id: int, budget: int,
                 processors: Sequence[Any], jump: bool) -> None:
        self.model, self.proc, self.pad_id, self.budget = model, proc, int(pad_id), int(budget)
        self.processors, self.jump = list(processors), bool(jump)
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
        self.planner = planner_for(self.proc.tokenizer, vocab) if self.jump else None
        self.enabled = torch.tensor(self.rules.enabled_ids, dtype=torch.long)

    def run(self, prompts: list[list[int]]) -> list[list[int]]:
        ids, self.attn = pad(prompts, self.pad_id, side="left")
        device = getattr(self.model, "device", torch.device("cpu"))
        ids, self.attn = ids.to(device), self.attn.to(device)
        logits = self.forward(ids, (self.attn.cumsum(-1) - 1).clamp(min=0))[:, -1, :]
        self.setup(logits.shape[-1])
        self.prompts = prompts
        rows = [_Row(self.rules.initial(), live=len(p)) for p in prompts]
        while self.budget > 0:
            chosen = self.choose(logits, rows)
            chunks = {b: self.advance(rows[b], t) for b, t in chosen.items()}
            chunks = {b: c for b, c in chunks.items() if not rows[b].done}
            if not chunks:
                break
            logits = self.feed(rows, chunks)
        return [r.out for r in rows]

    def choose(self, logits: torch.Tensor, rows: list[_Row]) -> dict[int, int]:
        """Each live row's next token: the user's processors (per row, on its own ids), then the
        tool-call rules' mask (and `tool_bias` in free text), then the arg max."""
        active = [b for b, r in enumerate(rows) if not r.done]
        scores = logits[active].clone()
        for i, b in enumerate(active):
            if self.processors:
                seq = torch.tensor([self.prompts[b] + rows[b].out], device=scores.device)
                for p in self.processors:
                    scores[i:i + 1] = p(seq, scores[i:i + 1])
        words = len(self.rules.start_bits)
        masks = grammar.allocate_token_bitmask(len(active), self.rules.vocab_size)
        args = [i for i, b in enumerate(active) if rows[b].state.phase == ARGS]
        if args:  # every grammar mask of the step in one engine call (GIL released)
            filled = grammar.allocate_token_bitmask(len(args), self.rules.vocab_size)
            grammar.fill_next_token_bitmasks([rows[active[i]].state.matcher for i in args], filled)
            masks[args] = filled
        masked = list(args)
        for i, b in enumerate(active):
            state = rows[b].state
            fixed = self.rules.text_bits if state.phase == TEXT else self.rules.fixed_mask(state)
            if fixed is not None:
                masks[i, :words] = fixed
                masked.append(i)
        if masked:
            apply_token_bitmask_(scores, torch.from_numpy(masks).to(scores.device), indices=sorted(masked))
        text = [i for i, b in enumerate(active) if rows[b].state.phase == TEXT]
        if text and self.proc.tool_bias and self.rules.mode != "none" and self.enabled.numel():
            idx = torch.tensor(text, device=scores.device)
            scores[idx[:, None], self.enabled.to(scores.device)[None, :]] += self.proc.tool_bias
        return dict(zip(active, scores.argmax(-1).tolist()))

    def advance(self, row: _Row, token: int) -> list[int]:
        """Append `token` (and a jump after it) to `row`; the row's tokens to feed next. Sets
        ``row.drop`` to the fed tokens that a jump's rollback removed."""
        fed = len(row.slots)
        row.out.append(token)
        was_args = row.state.phase == ARGS
        self.rules.advance(row.state, token)
        if token in self.eos or row.state.phase == DONE or len(row.out) >= self.budget:
            row.done = True
            return []
        if row.state.phase == ARGS and not was_args:  # a tool token opened a call
            row.call_start, row.lead = len(row.out), self.proc.tokenizer.convert_ids_to_tokens(token)
        keep = len(row.out)
        if self.planner is not None and row.state.phase == ARGS:
            jump = self.planner.plan(row.state.matcher, row.out[row.call_start:], row.lead,
                                     self.budget - len(row.out))
            if jump is not None:
                keep -= jump.rollback
                del row.out[keep:]
                row.out.extend(jump.tokens)
                row.state.matcher = jump.matcher
                if jump.matcher.can_terminate():
                    row.state.phase, row.state.matcher = AFTER, None
                if len(row.out) >= self.budget:
                    row.done = True
        row.drop = max(0, fed - keep)
        return row.out[min(keep, fed):]

    def feed(self, rows: list[_Row], chunks: dict[int, list[int]]) -> torch.Tensor:
        """One forward of every row's chunk (right-padded; rolled-back slots masked out); the
        logits after each row's last token (rows without a chunk keep a zero row)."""
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
            ids[b, :len(chunk)] = torch.tensor(chunk, dtype=torch.long)
            mask[b, :len(chunk)] = 1
            positions[b] = torch.arange(row.live, row.live + width)
            row.slots.extend(range(self.length, self.length + len(chunk)))
            row.live += len(chunk)
        self.attn = torch.cat([self.attn, mask.to(device)], dim=1)
        logits = self.forward(ids.to(device), positions.to(device))
        last = logits.new_zeros((B, logits.shape[-1]))
        for b, chunk in chunks.items():
            last[b] = logits[b, len(chunk) - 1]
        return last


def generate_ids(model: Any, proc: ToolCallLogitsProcessor, prompts: list[list[int]], pad_id: int,
                 max_new_tokens: int, logits_processors: Sequence[Any] = (), jump_forward: bool = True,
                 stats: Optional[dict] = None) -> list[list[int]]:
    """Greedy decoding of `prompts` (token ids) under `proc`'s tool-call rules, with jump-forward
    when `jump_forward` (see the module docstring); each row's generated ids, ending with its
    end-of-turn token unless `max_new_tokens` cut it. `logits_processors` run before the
    rules on every sampled step, one row at a time on that row's unpadded ids; forced tokens
    are not passed through them. `stats` (a dict), if given, receives ``forwards`` (model
    forward passes, the prompt's included).

    Without jumps the tokens are those of `model.generate` with greedy search under `proc`
    (the same forward passes, one per token); with jumps they are the same wherever the model
    would itself have chosen the forced tokens as the tokenizer splits them.
    """
    if not prompts:
        raise DecodingError("generate_ids needs at least one prompt")
    dec = _Decoder(model, proc, pad_id, max_new_tokens, logits_processors, jump_forward)
    with torch.no_grad():
        out = dec.run([list(map(int, p)) for p in prompts])
    if stats is not None:
        stats["forwards"] = stats.get("forwards", 0) + dec.forwards
    return out
