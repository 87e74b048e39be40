"""Constrained decoding grammars: JSON Schema -> next-token bitmask (C++ engine `toolken._grammar`).

The engine compiles a JSON Schema into a byte-level grammar (rules of byte classes, sequences,
alternations and rule calls; patterns, formats and integer ranges compiled to the same form),
runs it with a nondeterministic pushdown matcher (a set of stacks), and computes each mask by
walking a trie of the vocabulary's byte strings with the parser state, pruning a subtree at the
first rejected byte. Per grammar node it caches the tokens whose acceptance does not depend on
the rest of the stack (after XGrammar's adaptive token mask cache, Dong et al. 2024) and, for
the others, only re-checks the suffix that leaves the node's rule (after llguidance's trie walk).
Masks of JSON leaves (string bodies, numbers) are shared by all grammars of a vocabulary; a
leaf position whose next bytes are (almost) those of another position, such as every position
of a ``maxLength`` string or of a key that must differ from the known property names, derives
its mask from that position's (ultimately from the shared ``{"type": "string"}`` masks) by a
paired trie walk that only visits the tokens whose outcome can differ. ``fill_next_token_bitmasks``
fills a batch on persistent worker threads.

Example::

    from toolken import grammar
    vocab = grammar.Vocabulary.from_tokenizer(tokenizer)
    cg = grammar.compile_json_schema({"type": "object", "properties": {"city": {"type": "string"}}}, vocab)
    m = grammar.Matcher(cg)
    bm = grammar.allocate_token_bitmask(1, vocab.size)
    m.fill_next_token_bitmask(bm, 0)          # bit i%32 of word i//32: token i allowed
    m.accept_token(token_id)

JSON Schema coverage and semantics (the grammar accepts a subset of the schema's instances,
never more; anything it cannot express exactly raises :class:`toolken.GrammarError` naming the
keyword and its JSON pointer):

- ``type`` (all types, lists), ``enum``, ``const``, ``anyOf``, ``oneOf``, ``allOf`` and ``$ref``
  with sibling keywords (merged into one schema: differing ``pattern``s all apply,
  ``patternProperties`` by pattern, unknown keywords are annotations; conflicting keywords that
  cannot be merged are an error), local ``$ref`` into
  ``$defs``/``definitions``/any JSON pointer, recursion included.
- ``oneOf`` (``one_of="exclusive"``, the default) compiles only when its branches are provably
  mutually exclusive, because the grammar is the union of the branches and cannot reject a
  value that matches two of them. Proved: different JSON types; disjoint ``const``/``enum``
  values; a property one branch requires whose schemas in the two branches are disjoint (e.g.
  ``{"kind": {"const": "a"}}`` vs ``{"kind": {"const": "b"}}``) or that the other branch forbids
  (``additionalProperties: false``); non-overlapping numeric bounds, string languages (lengths,
  patterns, formats), array lengths or first items; nested ``anyOf``/``oneOf`` branch by branch.
  With ``property_order="any"``, branches that only require keys (``required``, with ``type:
  object`` and ``properties`` the object already gives) compile exactly although they overlap:
  the object is accepted when exactly one branch's keys are all present (its seen-key set
  decides at ``}``).
  Otherwise :class:`toolken.GrammarError` names the oneOf's JSON pointer and the two branches.
  ``one_of="any"`` compiles oneOf as anyOf instead (a value matching several branches is then
  accepted although oneOf rejects it).
- Objects: ``properties`` in schema order (optional ones may be skipped), ``required``,
  ``additionalProperties`` (true/false/schema; absent means true, or false with
  ``strict=True`` for objects that list ``properties``); additional properties come after the
  known ones. ``minProperties`` up to the number of required properties, ``maxProperties``
  when it cannot be exceeded. With ``property_order="any"``: properties in any order, each
  known one at most once, ``required`` before ``}``, ``minProperties``/``maxProperties``
  counting every member; the matcher keeps each open object's set of seen keys and count in
  its state (an object is a rule whose member calls are guarded by that set), so the grammar
  stays linear in the number of properties. An additional key written twice (JSON text with a
  repeated name) counts twice. ``propertyNames``: its string keywords (``type``, lengths,
  ``pattern``, ``format``, ``enum``/``const``) limit every key; a required key it refuses
  makes the object unsatisfiable.
- Arrays: ``items``, ``prefixItems``, tuple ``items`` + ``additionalItems``, ``minItems``,
  ``maxItems`` (up to 2000), ``uniqueItems: false``.
- Strings: ``minLength``/``maxLength`` (code points, exact at any size: bounds up to 64 are
  unrolled into automaton states, larger ones are counted in the matcher state, so a
  ``maxLength`` of 65535 costs no more states than none; ``propertyNames`` unrolls up to 1000
  and refuses larger bounds that constrain the keys), ``pattern`` (regex subset:
  literals, ``.``, classes, ``\\d \\w \\s`` (ASCII), groups, alternation, quantifiers, ``^``/``$``
  anywhere, ``$`` only at the very end; no lookaround or backreferences), ``format`` date-time,
  date, time, email, uuid, uri, ipv4, ipv6 (no zone id), duration (RFC 3339 appendix A, upper
  case), hostname (other standard formats are errors; unknown custom formats are
  annotations and ignored). Strings are matched in their JSON encoding: escapes and
  ``\\uXXXX`` (as ``json.dumps`` writes non-ASCII) are accepted.
- Numbers: integer ``minimum``/``maximum``/exclusive bounds exact (bounds beyond ±10^18 are
  clamped inward); number bounds exact, integer or not, on the decimal value of the JSON text
  (0.1 is the decimal 0.1, not the nearest double; no exponent form when bounded);
  ``multipleOf`` exact for integers and decimals with a finite expansion (``p / 10^k``: a
  remainder automaton of about ``p (k + 2)`` states, within the per-rule state limit);
  unbounded numbers without ``multipleOf`` accept exponents. ``-0`` is left out of bounded
  numbers (a subset).
- Unsupported keywords (errors): ``not``, ``if``/``then``/``else``, overlapping ``patternProperties``,
  ``dependencies``/``dependent*``, ``contains``, ``unevaluated*``, ``uniqueItems: true``.
- Whitespace: ``"flexible"`` allows JSON whitespace between tokens, at most ``max_whitespace``
  characters in a row (so a model cannot loop on spaces); ``"compact"`` allows none;
  ``"canonical"`` allows exactly ``json.dumps``' separators ``", "`` and ``": "`` and nothing else.

Limits: a schema's JSON text is at most :data:`MAX_SCHEMA_BYTES` (1 MiB) and nested at most
:data:`MAX_SCHEMA_DEPTH` (256) levels of objects/arrays; a rule's automaton has at most 50,000
states and a grammar 1,000,000 (beyond them :class:`toolken.GrammarError` names the schema's
pointer). Strings of a schema must be valid Unicode (no lone surrogates, bytes must be UTF-8).
Count keywords (``minLength``, ``maxItems``, ...) must be non-negative integers; patterns follow
Python's ``re`` in refusing a quantifier after a quantifier (``a**``).

Threads: a compiled grammar is immutable and shared; each matcher serializes its own methods
with a lock (taken with the GIL released), so a matcher used from several threads stays
consistent, though its calls then run one at a time.

Tokens: special tokens and every added token (tool tokens, chat markers) never match grammar
text; stop tokens (the tokenizer's EOS plus ``stop_ids``) are allowed exactly when the value is
complete. Rows beyond ``len(tokenizer)`` in a padded model vocabulary are never allowed.
"""
from __future__ import annotations

import json
import operator
import os
import threading
from collections import OrderedDict
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _grammar
from .errors import GrammarError
from .grammar_input import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    schema_text,
    token_bytes_from_tokenizer,
    unsupported_combination,
)

__all__ = [
    "Vocabulary",
    "CompiledGrammar",
    "Matcher",
    "compile_json_schema",
    "allocate_token_bitmask",
    "fill_next_token_bitmasks",
    "token_bytes_from_tokenizer",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
]

_COMPILE_CACHE_SIZE = 512
#: Values of ``compile_json_schema(whitespace=...)``.
WHITESPACE_MODES = ("flexible", "compact", "canonical")
#: Values of ``compile_json_schema(property_order=...)``.
PROPERTY_ORDERS = ("schema", "any")
#: Largest ``max_whitespace`` (characters of whitespace in a row, flexible mode).
MAX_WHITESPACE = 1000
_INT64 = 1 << 63


def _as_int(value: Any, what: str) -> int:
    """`value` as a Python int (ints and numpy integers; not bools, floats or strings)."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise GrammarError(f"{what} must be an integer, not {type(value).__name__} {value!r}")
    return operator.index(value)


class Vocabulary:
    """A tokenizer's token bytes, stop tokens and mask width, shared by every grammar compiled for it.

    Build with :meth:`from_tokenizer` or :meth:`from_bytes`. Also holds the per-vocabulary cache
    of compiled grammars and of token masks inside JSON leaves. Thread-safe.
    """

    def __init__(self, native: Any) -> None:
        self._native = native
        self._cache: "OrderedDict[tuple, CompiledGrammar]" = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_bytes(cls, tokens: Sequence[Optional[bytes]], stop_ids: Iterable[int] = (), size: Optional[int] = None) -> "Vocabulary":
        """Vocabulary from ``tokens[i]`` = token i's bytes (None or b"" = special, never matches text).

        Args:
            tokens: byte string per token id.
            stop_ids: token ids that end generation (allowed exactly when the grammar can end).
            size: mask width, e.g. a model's padded vocabulary size (default ``len(tokens)``);
                ids ``>= len(tokens)`` are never allowed.
        Raises:
            GrammarError: a stop id outside ``[0, size)``, ``size < len(tokens)``, or ``size``
                above ``2 * len(tokens) + 65536`` (padding rows are few; a larger size is a
                mistake that would allocate gigabytes).
        """
        toks = [None if t is None else bytes(t) for t in tokens]
        size = len(toks) if size is None else _as_int(size, "size")
        stops = [_as_int(s, "stop id") for s in stop_ids]
        if size < 0 or size > _grammar.max_vocabulary_size(len(toks)):
            raise GrammarError(
                f"invalid vocabulary: size {size} for {len(toks)} tokens (at most "
                f"{_grammar.max_vocabulary_size(len(toks))}: 2 * tokens + 65536); pass the model's (padded) vocabulary size"
            )
        try:
            return cls(_grammar.Vocabulary(toks, stops, size))
        except (ValueError, TypeError) as e:
            raise GrammarError(f"invalid vocabulary: {e}") from None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, stop_ids: Optional[Iterable[int]] = None, size: Optional[int] = None) -> "Vocabulary":
        """Vocabulary of a Hugging Face tokenizer (see :func:`token_bytes_from_tokenizer`).

        Args:
            tokenizer: a ``transformers`` tokenizer.
            stop_ids: extra stop token ids besides the tokenizer's ``eos_token_id`` (or its
                ``</s>`` added token when no EOS is configured, as for Tekken).
            size: the model's (possibly padded) vocabulary size; default ``len(tokenizer)``.
        """
        stops = set(stop_ids or [])
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:  # e.g. Tekken converted by transformers has no eos_token set: use </s>
            eos = {t.content: i for i, t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()}.get("</s>")
        if isinstance(eos, int):
            stops.add(eos)
        return cls.from_bytes(token_bytes_from_tokenizer(tokenizer), sorted(stops), size)

    @property
    def size(self) -> int:
        """Mask width in tokens (bits per bitmask row that are meaningful)."""
        return int(self._native.size)

    @property
    def stop_ids(self) -> List[int]:
        return list(self._native.stop_ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for (b"" for special tokens).

        Raises:
            GrammarError: ``token_id`` is not a token of this vocabulary.
        """
        try:
            return self._native.token_bytes(token_id)
        except (_grammar.ArgumentError, TypeError) as e:
            raise GrammarError(f"token id {token_id!r}: {e}") from None

    def __len__(self) -> int:
        return self.size


class CompiledGrammar:
    """An immutable compiled schema, safe to share across threads; make a :class:`Matcher` per sequence."""

    def __init__(self, native: Any, vocab: Vocabulary, schema: str) -> None:
        self._native = native
        self.vocab = vocab
        self.schema = schema

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the grammar and the token masks it has computed so far.

        Masks of string/number leaves live in the vocabulary's shared cache and are counted in
        every grammar that uses them.
        """
        return int(self._native.memory_bytes)

    @property
    def num_rules(self) -> int:
        return int(self._native.num_rules)

    def dump(self) -> str:
        """Human-readable listing of the rules (for debugging)."""
        return self._native.dump()


def compile_json_schema(
    schema: Union[Mapping[str, Any], str, bool],
    vocab: Vocabulary,
    whitespace: str = "flexible",
    strict: bool = False,
    max_whitespace: int = 20,
    one_of: str = "exclusive",
    property_order: str = "schema",
) -> CompiledGrammar:
    """Compile a JSON Schema for ``vocab``; repeated compiles of the same schema hit a cache.

    Args:
        schema: the schema as a dict (or bool) or JSON text (str, or UTF-8 bytes).
        vocab: the :class:`Vocabulary` the masks are for.
        whitespace: where whitespace may go between JSON tokens.

            - ``"flexible"`` (default): any JSON whitespace between tokens, at most
              ``max_whitespace`` characters in a row. Use it when the model's own formatting
              habits should be kept (it may indent or break lines as in its training data).
            - ``"compact"``: none at all (``json.dumps(x, separators=(",", ":"))``). Use it for
              the shortest output and when the model was trained on compact JSON.
            - ``"canonical"``: exactly the separators of ``json.dumps(x, ensure_ascii=False)``,
              ``", "`` between items and properties and ``": "`` after keys, and no whitespace
              anywhere else. Use it for models trained on ``json.dumps`` output (most tool-call
              data): every separator is forced, so with fixed-order properties the text between
              values is a single forced run (see :meth:`Matcher.find_jump_forward_string`) and
              the model never spends probability mass on whitespace variants.
        strict: treat an absent ``additionalProperties`` as false (objects with ``properties``).
        max_whitespace: most whitespace characters in a row in flexible mode.
        one_of: ``"exclusive"`` (oneOf must have provably disjoint branches, see the module
            docstring) or ``"any"`` (oneOf compiled as anyOf, overlaps accepted).
        property_order: ``"schema"`` (known properties in the schema's order, additional ones
            after them) or ``"any"`` (an object's properties in any order, each known one at
            most once, ``required`` met before ``}``; exact for ``additionalProperties``,
            ``patternProperties``, ``minProperties`` and ``maxProperties``: the matcher keeps
            the set of keys seen per open object).
    Raises:
        GrammarError: unsupported keyword (named, with its JSON pointer), invalid schema, a size
            or depth limit exceeded (see "Limits" in the module docstring), invalid Unicode in
            the schema, or an invalid argument (``max_whitespace`` outside [0, 1000], ...).
    """
    if whitespace not in WHITESPACE_MODES:
        raise GrammarError(f"whitespace must be one of {WHITESPACE_MODES}, not {whitespace!r}")
    if one_of not in ("exclusive", "any"):
        raise GrammarError(f"one_of must be 'exclusive' or 'any', not {one_of!r}")
    if property_order not in PROPERTY_ORDERS:
        raise GrammarError(f"property_order must be one of {PROPERTY_ORDERS}, not {property_order!r}")
    max_ws = _as_int(max_whitespace, "max_whitespace")
    if not 0 <= max_ws <= MAX_WHITESPACE:
        raise GrammarError(f"max_whitespace must be in [0, {MAX_WHITESPACE}], not {max_ws}")
    if not isinstance(vocab, Vocabulary):
        raise GrammarError(f"vocab must be a toolken.grammar.Vocabulary, not {type(vocab).__name__}")
    text = schema_text(schema)
    refusal = unsupported_combination(json.loads(text), bool(strict)) if ("minProperties" in text or "allOf" in text) else None
    if refusal is not None:
        raise GrammarError(f"cannot compile JSON Schema: {refusal}")
    key = (text, whitespace, bool(strict), max_ws, one_of, property_order)
    with vocab._lock:
        hit = vocab._cache.get(key)
        if hit is not None:
            vocab._cache.move_to_end(key)
            return hit
    try:
        native = _grammar.compile_json_schema(text, vocab._native, whitespace == "flexible", max_ws, bool(strict),
                                              one_of == "any", whitespace == "canonical", property_order == "any")
    except _grammar.CompileError as e:
        raise GrammarError(f"cannot compile JSON Schema: {e}") from None
    cg = CompiledGrammar(native, vocab, text)
    with vocab._lock:
        vocab._cache[key] = cg
        while len(vocab._cache) > _COMPILE_CACHE_SIZE:
            vocab._cache.popitem(last=False)
    return cg


def _as_int32_2d(bitmask: Any) -> np.ndarray:
    if isinstance(bitmask, np.ndarray):
        arr = bitmask
    elif hasattr(bitmask, "numpy") and hasattr(bitmask, "device"):
        if str(bitmask.device) != "cpu":
            raise GrammarError("the bitmask must live in CPU memory; fill on CPU, then copy to the device")
        arr = bitmask.numpy()  # shares memory with the tensor
    else:
        raise GrammarError(f"bitmask must be a numpy array or a CPU torch tensor of int32, not {type(bitmask).__name__}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    return arr


class Matcher:
    """Matches one sequence against a compiled grammar, token by token.

    One per sequence; many matchers may share a grammar across threads. A matcher's own methods
    are serialized by a per-matcher lock, so sharing one between threads cannot corrupt it (the
    calls then simply run one at a time).

    Raises:
        GrammarError: ``compiled`` is not a :class:`CompiledGrammar`.
    """

    def __init__(self, compiled: CompiledGrammar, _native: Any = None) -> None:
        if not isinstance(compiled, CompiledGrammar):
            raise GrammarError(f"Matcher needs a CompiledGrammar (from compile_json_schema), not {type(compiled).__name__}")
        self.compiled = compiled
        self._native = _native if _native is not None else _grammar.Matcher(compiled._native)

    @property
    def vocab(self) -> Vocabulary:
        return self.compiled.vocab

    def fill_next_token_bitmask(self, bitmask: Any, row: int = 0) -> None:
        """Write the allowed next tokens into ``bitmask[row]`` (int32 words; GIL released).

        Bit ``i % 32`` of word ``i // 32`` is set iff token ``i`` may come next. After
        termination nothing is allowed.
        """
        row = _as_int(row, "row")
        try:
            self._native.fill_next_token_bitmask(_as_int32_2d(bitmask), row)
        except _grammar.ArgumentError as e:
            raise GrammarError(str(e)) from None

    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; False (and the state unchanged) if it is not allowed.

        A stop token is accepted only where the grammar can end, and terminates the matcher.
        Invalid ids (negative, beyond the vocabulary) are rejected, never an error.

        Raises:
            GrammarError: ``token_id`` is not an integer (e.g. 1.5) or not a 64-bit one.
        """
        if type(token_id) is not int:
            token_id = _as_int(token_id, "token id")
        if not -_INT64 <= token_id < _INT64:
            raise GrammarError(f"token id {token_id} is not a 64-bit integer (no token has it)")
        return bool(self._native.accept_token(token_id))

    def accept_string(self, text: Union[str, bytes]) -> bool:
        """Advance by the bytes of ``text`` (counts as one step for :meth:`rollback`); False if rejected."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return bool(self._native.accept_bytes(data))

    def rollback(self, num_tokens: int = 1) -> None:
        """Undo the last ``num_tokens`` accepted steps.

        Raises:
            GrammarError: more steps than were accepted, or a negative count.
        """
        num_tokens = _as_int(num_tokens, "num_tokens")
        if num_tokens < 0:
            raise GrammarError(f"num_tokens must be >= 0, not {num_tokens}")
        if num_tokens > self._native.num_accepted:
            raise GrammarError(f"cannot roll back {num_tokens} tokens: only {self._native.num_accepted} accepted")
        try:
            self._native.rollback(num_tokens)
        except _grammar.ArgumentError as e:
            raise GrammarError(str(e)) from None

    @property
    def num_accepted(self) -> int:
        """Steps accepted since the start (what :meth:`rollback` can undo)."""
        return int(self._native.num_accepted)

    def is_terminated(self) -> bool:
        """True once a stop token was accepted where the grammar could end."""
        return bool(self._native.is_terminated())

    def can_terminate(self) -> bool:
        """True when the JSON value is complete here (a stop token would be accepted)."""
        return bool(self._native.can_terminate())

    def reset(self) -> None:
        """Back to the start of the grammar."""
        self._native.reset()

    def copy(self) -> "Matcher":
        """An independent matcher in the same state (e.g. for beam search)."""
        return Matcher(self.compiled, self._native.copy())

    def find_jump_forward_string(self) -> str:
        """The text that must come next whatever the model picks (e.g. a fixed key), possibly ''.

        Only whole UTF-8 characters are returned; the caller may tokenize it and accept it.
        """
        raw = self._native.find_jump_forward_bytes()
        for cut in range(len(raw), max(len(raw) - 4, -1), -1):
            try:
                return raw[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
        return ""


def allocate_token_bitmask(batch_size: int, vocab_size: int) -> np.ndarray:
    """An int32 ``[batch_size, ceil(vocab_size / 32)]`` bitmask with every token allowed.

    Raises:
        GrammarError: a negative or non-integer size.
    """
    rows, size = _as_int(batch_size, "batch_size"), _as_int(vocab_size, "vocab_size")
    if rows < 0 or size < 0:
        raise GrammarError(f"batch_size and vocab_size must be >= 0, not {rows} and {size}")
    return np.full((rows, (size + 31) // 32), -1, dtype=np.int32)


#: Smallest batch that `fill_next_token_bitmasks` spreads over threads by default.
PARALLEL_FILL_MIN_BATCH = 16
_CPUS = os.cpu_count() or 1  # read once: os.cpu_count() costs ~30 µs, several warm masks


def fill_next_token_bitmasks(matchers: Sequence[Matcher], bitmask: Any, num_threads: Optional[int] = None) -> None:
    """Fill row i of ``bitmask`` for ``matchers[i]``, in parallel threads with the GIL released.

    Args:
        matchers: distinct matchers (a matcher may not appear twice).
        bitmask: int32 ``[>= len(matchers), words]`` numpy array or CPU tensor.
        num_threads: worker threads (at most one per matcher). Default: one thread below
            `PARALLEL_FILL_MIN_BATCH` matchers (waking a worker costs more than a few warm
            masks of ~5 µs: measured 0.18x for a batch of 4 on two threads), else all cores.
    """
    for m in matchers:
        if not isinstance(m, Matcher):
            raise GrammarError(f"fill_next_token_bitmasks needs Matcher objects, got {type(m).__name__}")
    if len({id(m) for m in matchers}) != len(matchers):
        raise GrammarError("a matcher appears more than once in the batch")
    arr = _as_int32_2d(bitmask)
    if arr.shape[0] < len(matchers):
        raise GrammarError(f"bitmask has {arr.shape[0]} rows for {len(matchers)} matchers")
    if num_threads is None:
        num_threads = 1 if len(matchers) < PARALLEL_FILL_MIN_BATCH else _CPUS
    try:
        _grammar.fill_next_token_bitmasks([m._native for m in matchers], arr, max(1, _as_int(num_threads, "num_threads")))
    except _grammar.ArgumentError as e:
        raise GrammarError(str(e)) from None
