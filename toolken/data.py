"""Training data for tool tokens: ToolGen's three stages as padded-batch-ready records.

ToolGen (Wang et al. 2024, "ToolGen: Unified Tool Retrieval and Calling via Generation",
arXiv:2410.03439) trains a model whose tools are vocabulary tokens in three stages:

1. `memorization_records` — tool documentation (name + description) -> the tool token;
2. `retrieval_records` — a user query -> the tool token(s) that answer it;
3. `trajectory_records` — agent conversations in which assistant turns emit the tool token and
   then the JSON arguments (toolken's tool-call text format:
   ``<<get_weather>>{"city": "Paris"}<<get_time>>{"tz": "CET"}``, then the end of the turn),
   tool results coming back as ``tool`` messages.

Each record is a dict of equal-length lists: ``input_ids``, ``attention_mask``, ``labels``
(the token id on assistant-turn positions, -100 elsewhere; unshifted, as in `transformers`) and
``loss_weights`` (from a `toolken.weights` policy, 0 where the label is -100). Records are plain
JSON-able dicts, so they also work as rows of a `datasets.Dataset`.

Text layout and the call format are `toolken.format`'s (chat template or plain layout).
The trained span of an assistant turn is its content up to and including the end-of-turn token
(the tokenizer's EOS when the template writes it), not the template's role header. The whole
conversation is tokenized once (with character offsets); every tool token in the text must come
out as its single id, otherwise a `DataError` says so.
"""
from __future__ import annotations

import collections
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch

from .errors import DataError
from .format import (
    PLAIN_GENERATION_PROMPT,
    format_tool_calls,
    layout_plain,
    layout_with_template,
    plain_message,
    render_prompt_text,
    template_to_use,
)
from .registry import ToolRegistry, registry as registry_of
from .tools import iter_json_lines, seal_tools_calls
from .weights import IGNORE_INDEX, PolicyLike, apply_policy

Record = dict[str, list]
Message = Mapping[str, Any]

#: The user turn of a memorization record (ToolGen's "tool documentation" input).
MEMORIZATION_PROMPT = "Tool: {name}\nDescription: {description}"
#: Named user turns for memorization: ToolGen's ``document``, and ``request`` — the description
#: alone, phrased like the user requests the token must answer (an augmentation of ours; its
#: effect on retrieval is measured in the README).
MEMORIZATION_PROMPTS = {"document": MEMORIZATION_PROMPT, "request": "{description}"}
#: Every memorization phrasing: the templates above, and ``query`` — one single-tool request in
#: users' words (`request_phrase` in the ``"query"`` style, seeded by the tool's name).
MEMORIZATION_PHRASINGS = (*MEMORIZATION_PROMPTS, "query")

#: Sentence templates of `synthetic_requests`: a request's first, middle and last part, and a
#: request for one tool. Their connectives are the most frequent ones of Seal-Tools' dev queries.
REQUEST_TEMPLATES = {
    "single": ("{D}.", "I need to {d}.", "Please {d}.", "Can you {d}?", "Help me {d}."),
    "first": ("I need to {d}.", "{D}.", "Please {d}.", "First, {d}.", "I want to {d}."),
    "middle": ("Then, {d}.", "Additionally, {d}.", "Next, {d}.", "Also, {d}."),
    "last": ("Finally, {d}.", "Lastly, {d}.", "Then, {d}.", "Additionally, {d}."),
}
REQUEST_SIZES = (1, 2, 3, 3, 3, 3, 4, 4)  # tools per request, drawn uniformly from this list


#: Verbs a request uses for a ``get...`` tool ("Retrieve the slope stability ..."); other tools
#: are asked for with their name's own verb ("Calculate the net income ...").
GET_VERBS = ("retrieve", "get", "provide", "find", "tell me", "provide information about", "give me")
SYNTHETIC_STYLES = ("query", "description")
_EXAMPLES = re.compile(r"\((?:e\.g\.|for example|such as),?\s*([^)]*)\)", re.I)
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def name_words(name: str) -> list[str]:
    """A tool or parameter name as words: ``getVLSILayout_v2`` -> get, VLSI, layout, v, 2."""
    return [w if w.isupper() and len(w) > 1 else w.lower() for w in _WORDS.findall(str(name))]


def _argument_value(name: str, spec: Any, rng: random.Random) -> str:
    """A value a user might give: one of the description's examples, a number for numbers, an
    id for ids, else "the given <name>"."""
    spec = spec if isinstance(spec, Mapping) else {}
    examples = _EXAMPLES.search(str(spec.get("description", "")))
    words = " ".join(name_words(name))
    if examples:
        choices = [c.strip(" .'\"") for c in re.split(r",|\bor\b", examples.group(1)) if c.strip(" .'\"")]
        if choices:
            return f"{words} {rng.choice(choices)}"
    kind = spec.get("type")
    if kind == "integer":
        return f"{words} {rng.randint(1, 100)}"
    if kind == "number":
        return f"{words} {round(rng.uniform(0, 100), 1)}"
    if name.lower().endswith("id"):
        return f"{words} '{''.join(rng.choice('abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789') for _ in range(9))}'"
    return f"the given {words}"


def request_phrase(tool: Any, rng: random.Random, style: str = "query") -> str:
    """One tool's part of a synthetic request, a verb phrase. ``"description"``: its description.
    ``"query"``: half the time the name's words ("retrieve the slope stability"), else the
    description, then up to three arguments ("for slope angle 34.2 and slope material soil"),
    required ones first, values from the parameter descriptions' examples: user requests name the
    action and its arguments (Seal-Tools' queries do), not the tool's documentation."""
    text = " ".join(str(tool.description).split()).rstrip(".") or " ".join(name_words(tool.name))
    if style == "description":
        return text
    words = name_words(tool.name)
    if len(words) > 1 and rng.random() < 0.5:
        verb = rng.choice(GET_VERBS) if words[0] == "get" else words[0]
        text = f"{verb} the {' '.join(words[1:])}"
    params = tool.parameters.get("properties") or {} if isinstance(tool.parameters, Mapping) else {}
    required = set(tool.parameters.get("required") or ()) if isinstance(tool.parameters, Mapping) else set()
    chosen = [n for n in params if (rng.random() < 0.7 if n in required else rng.random() < 0.2)][:3]
    args = [_argument_value(n, params[n], rng) for n in chosen]
    if args:
        text += rng.choice((" for ", " with ")) + (args[0] if len(args) == 1 else ", ".join(args[:-1]) + " and " + args[-1])
    return text


def memorization_prompt(tool: Any, phrasing: str) -> str:
    """The user turn memorizing `tool` in one of `MEMORIZATION_PHRASINGS`; the same text on every
    call (``query`` draws from a generator seeded by the tool's name)."""
    if phrasing == "query":
        text = request_phrase(tool, random.Random(f"memorize {tool.name}"), "query")
        return _fill(random.Random(f"template {tool.name}").choice(REQUEST_TEMPLATES["single"]), text)
    if phrasing not in MEMORIZATION_PROMPTS:
        raise DataError(f"memorization: unknown phrasing {phrasing!r}; choose from {', '.join(MEMORIZATION_PHRASINGS)}")
    return MEMORIZATION_PROMPTS[phrasing].format(name=tool.name, description=tool.description)


def _fill(template: str, text: str) -> str:
    """A request template with `text` as its verb phrase (``{d}``) or sentence start (``{D}``)."""
    return template.format(d=text[:1].lower() + text[1:], D=text[:1].upper() + text[1:])


def synthetic_requests(tools: Sequence[Any], rounds: int = 2, seed: int = 0,
                       style: str = "query", split: bool = False) -> list[tuple[str, list[str]]]:
    """Multi-intent user requests composed from tools, ``(text, tool names in the order asked)``:
    every tool in `rounds` requests, 1-4 random tools each ("I need to <first>. Then, <second>.
    Finally, <third>."), each part a `request_phrase` of `style`. Real requests often ask for
    several tools at once (Seal-Tools: 394 of 700 test queries call three); memorization alone
    (ToolGen) shows a tool token only one description at a time. With `split`, each part is its
    own example, ``("Then, <second>.", [second])``: the sentences that per-sentence retrieval
    (`toolken.retrieve`'s ``per_sentence``) scores. Augmentations of ours, measured in the README."""
    if style not in SYNTHETIC_STYLES:
        raise DataError(f"synthetic style must be one of {', '.join(SYNTHETIC_STYLES)}, got {style!r}")
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        order = list(range(len(tools)))
        rng.shuffle(order)
        start = 0
        while start < len(order):
            group = order[start:start + rng.choice(REQUEST_SIZES)]
            start += len(group)
            parts = []
            for j, t in enumerate(group):
                text = request_phrase(tools[t], rng, style)
                slot = "single" if len(group) == 1 else "first" if j == 0 else "last" if j == len(group) - 1 else "middle"
                parts.append(_fill(rng.choice(REQUEST_TEMPLATES[slot]), text))
            names = [tools[t].name for t in group]
            out.extend(zip(parts, ([n] for n in names)) if split else [(" ".join(parts), names)])
    return out


# --------------------------------------------------------------------------------------------
# conversation -> token ids, labels
# --------------------------------------------------------------------------------------------
def _tokenize_with_spans(tokenizer: Any, text: str,
                         spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"{type(tokenizer).__name__} is a slow tokenizer; toolken.data needs a fast "
                        "(tokenizers-backed) one for character offsets, e.g. AutoTokenizer(..., use_fast=True)")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    labels = []
    for tok, (a, b) in zip(ids, offsets):
        inside = b > a and any(a < e and b > s for s, e in spans)
        labels.append(tok if inside else IGNORE_INDEX)
    return ids, labels


@dataclass(frozen=True)
class _ToolTokens:
    """A registry's tool tokens indexed for scanning texts; built once per call of a records
    function, not once per record (Seal-Tools has thousands of tools)."""

    registry: ToolRegistry
    name_of: dict[str, str]  # token string -> tool name
    ids: list[int]  # tool token ids, registry order
    lengths: tuple[int, ...]  # distinct token lengths, longest first
    prefix: str  # the token format's text before the name ("" = any position may start a token)

    @classmethod
    def of(cls, reg: ToolRegistry) -> "_ToolTokens":
        name_of = {reg.tokens[n]: n for n in reg.names}
        return cls(reg, name_of, reg.tool_token_ids, tuple(sorted({len(t) for t in name_of}, reverse=True)),
                   reg.token_format.split("{name}")[0])

    def written(self, text: str) -> collections.Counter:
        """How often each tool token occurs in `text` (longest match, non-overlapping)."""
        found: collections.Counter = collections.Counter()
        pos = text.find(self.prefix) if self.prefix else 0
        while 0 <= pos < len(text):
            match = next((text[pos:pos + n] for n in self.lengths if text[pos:pos + n] in self.name_of), None)
            if match:
                found[match] += 1
            step = len(match) if match else 1
            pos = text.find(self.prefix, pos + step) if self.prefix else pos + step
        return found

    def check_encoded(self, tokenizer: Any, text: str, ids: list[int]) -> None:
        """Every tool token written in `text` must appear in `ids` as its own single id."""
        encoded = collections.Counter(ids)
        for token, n_text in self.written(text).items():
            name = self.name_of[token]
            token_id = self.registry.token_ids[name]
            if tokenizer.convert_tokens_to_ids(token) != token_id:
                raise DataError(f"tool token {token!r} (tool {name!r}) has id {token_id} in the model's "
                                f"registry but {tokenizer.convert_tokens_to_ids(token)} in this tokenizer: "
                                "use the tokenizer returned by toolken.extend")
            if encoded[token_id] != n_text:
                raise DataError(f"tool token {token!r} (tool {name!r}) occurs {n_text} times in the text but "
                                f"its id {token_id} {encoded[token_id]} times after tokenization: the "
                                "tokenizer or chat template split or altered it")


def encode_conversation(tokenizer: Any, reg: Union[ToolRegistry, _ToolTokens], messages: Sequence[Message], *,
                        train_on: str = "all", policy: PolicyLike = None,
                        chat_template: Union[bool, str, None] = None,
                        max_length: Optional[int] = None) -> Record:
    """One conversation (plain ``role``/``content`` messages, tool calls already written into the
    assistant content) -> a record. `train_on`: ``"all"`` assistant turns or only the ``"last"``."""
    if train_on not in ("all", "last"):
        raise DataError(f"train_on must be 'all' or 'last', got {train_on!r}")
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant:
        raise DataError("conversation has no assistant turn to train on")
    chosen = set(assistant if train_on == "all" else assistant[-1:])
    trained = [i in chosen for i in range(len(messages))]
    template = template_to_use(tokenizer, chat_template)
    if template is None:
        text, spans = layout_plain(tokenizer, messages, trained)
    else:
        text, spans = layout_with_template(tokenizer, messages, trained, template)
    ids, labels = _tokenize_with_spans(tokenizer, text, spans)
    tool_tokens = reg if isinstance(reg, _ToolTokens) else _ToolTokens.of(reg)
    tool_tokens.check_encoded(tokenizer, text, ids)
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    weights = apply_policy(policy, labels, tool_token_ids=tool_tokens.ids, tokenizer=tokenizer)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels,
            "loss_weights": weights.tolist()}


# --------------------------------------------------------------------------------------------
# the three ToolGen stages
# --------------------------------------------------------------------------------------------
def _with_system(system: Optional[str], messages: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + messages


def memorization_records(tokenizer: Any, registry_or_model: Any, *, tools: Optional[Iterable[str]] = None,
                         prompt: str = MEMORIZATION_PROMPT, system: Optional[str] = None,
                         policy: PolicyLike = None, chat_template: Union[bool, str, None] = None) -> list[Record]:
    """ToolGen stage 1, one record per tool: user turn `prompt` (formatted with the tool's
    ``name`` and ``description``) -> assistant turn that is the tool token alone."""
    reg = registry_of(registry_or_model)
    tool_tokens = _ToolTokens.of(reg)
    out = []
    for name in reg.subset(tools):
        tool = reg.tools[name]
        messages = _with_system(system, [
            {"role": "user", "content": prompt.format(name=tool.name, description=tool.description)},
            {"role": "assistant", "content": reg.tokens[name]},
        ])
        out.append(encode_conversation(tokenizer, tool_tokens, messages, policy=policy, chat_template=chat_template))
    return out


def _query_tools(item: Any, index: int) -> tuple[str, list[str], str]:
    """(query, tool names, label for errors) from a Seal-Tools record, a {"query", "tools"} dict
    or a (query, tools) pair."""
    if isinstance(item, Mapping):
        where = f"query {item.get('id', index)!r}"
        query = item.get("query")
        if "calling" in item:
            names = seal_tools_calls(item, where)
        else:
            names = item.get("tools", item.get("tool"))
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        where, (query, names) = f"query #{index}", item
    else:
        raise DataError(f"query #{index}: expected a Seal-Tools record {{'query', 'calling'}}, a "
                        f"{{'query', 'tools'}} dict or a (query, tools) pair, got {type(item).__name__}")
    if isinstance(names, str):
        names = [names]
    if not isinstance(query, str) or not query.strip():
        raise DataError(f"{where}: 'query' must be a non-empty string")
    if not names:
        raise DataError(f"{where}: names no tool")
    return query, list(dict.fromkeys(names)), where


def retrieval_records(tokenizer: Any, registry_or_model: Any, queries: Iterable[Any], *,
                      on_unknown: str = "raise", skipped: Optional[list] = None,
                      system: Optional[str] = None, policy: PolicyLike = None,
                      chat_template: Union[bool, str, None] = None) -> list[Record]:
    """ToolGen stage 2: user query -> the tool tokens of the tools it needs, back to back in call
    order (duplicates once).

    `queries` items: Seal-Tools records ``{"id", "query", "calling": [{"api", ...}]}`` (see
    `load_seal_tools_queries`), ``{"query", "tools": [names]}`` dicts, or ``(query, names)`` pairs.
    A query naming a tool that is not registered raises `DataError` naming both; with
    ``on_unknown="skip"`` it is left out instead and, when `skipped` is a list, appended to it as
    ``(item, [unknown names])``.
    """
    if on_unknown not in ("raise", "skip"):
        raise DataError(f"on_unknown must be 'raise' or 'skip', got {on_unknown!r}")
    reg = registry_of(registry_or_model)
    tool_tokens = _ToolTokens.of(reg)
    out = []
    for index, item in enumerate(queries):
        query, names, where = _query_tools(item, index)
        unknown = [n for n in names if n not in reg]
        if unknown:
            if on_unknown == "raise":
                raise DataError(f"{where} uses tool(s) {unknown} that are not registered on the model; "
                                "extend the model with them or pass on_unknown='skip'")
            if skipped is not None:
                skipped.append((item, unknown))
            continue
        messages = _with_system(system, [
            {"role": "user", "content": query},
            {"role": "assistant", "content": "".join(reg.tokens[n] for n in names)},
        ])
        out.append(encode_conversation(tokenizer, tool_tokens, messages, policy=policy, chat_template=chat_template))
    return out


def trajectory_records(tokenizer: Any, registry_or_model: Any, conversations: Iterable[Any], *,
                       train_on: str = "all", system: Optional[str] = None, policy: PolicyLike = None,
                       chat_template: Union[bool, str, None] = None,
                       max_length: Optional[int] = None) -> list[Record]:
    """ToolGen stage 3: OpenAI-style conversations (a list of messages, or a dict with
    ``"messages"``) -> one record each. Assistant ``tool_calls`` become the tool token followed by
    the JSON arguments after the turn's text; ``tool`` messages carry the results. Loss is on the
    assistant turns only (all of them, or the last with ``train_on="last"``)."""
    reg = registry_of(registry_or_model)
    tool_tokens = _ToolTokens.of(reg)
    out = []
    for index, conv in enumerate(conversations):
        messages = conv.get("messages") if isinstance(conv, Mapping) else conv
        if not isinstance(messages, (list, tuple)) or not messages:
            raise DataError(f"conversation #{index}: expected a non-empty list of messages")
        plain = [plain_message(reg, m, f"conversation #{index} message {j}") for j, m in enumerate(messages)]
        if system and plain[0]["role"] != "system":
            plain = _with_system(system, plain)
        try:
            out.append(encode_conversation(tokenizer, tool_tokens, plain, train_on=train_on, policy=policy,
                                           chat_template=chat_template, max_length=max_length))
        except DataError as e:
            raise DataError(f"conversation #{index}: {e}") from None
    return out


# --------------------------------------------------------------------------------------------
# files, batches
# --------------------------------------------------------------------------------------------
def load_seal_tools_queries(path: Union[str, Path]) -> list[dict]:
    """Seal-Tools query records (``dev.jsonl[.gz]``, ``test_in_domain.jsonl[.gz]``): one JSON object
    a line, ``{"id", "query", "calling": [{"api", "parameters", "responses"}]}``."""
    out = []
    for lineno, rec in iter_json_lines(path, error=DataError):
        if not isinstance(rec, dict) or "query" not in rec or not isinstance(rec.get("calling"), list):
            raise DataError(f"{path}:{lineno}: expected an object with 'query' and a 'calling' list")
        out.append(rec)
    return out


def collate(records: Sequence[Mapping[str, Any]], pad_token_id: int = 0, *,
            padding_side: str = "right", pad_to_multiple_of: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Pad records to one batch: ``input_ids`` with `pad_token_id`, ``attention_mask`` 0,
    ``labels`` -100 and ``loss_weights`` 0 on padding. Records without ``loss_weights`` get 1 on
    every trained position."""
    if not records:
        raise DataError("collate() got no records")
    if padding_side not in ("left", "right"):
        raise DataError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    longest = max(len(r["input_ids"]) for r in records)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    fills = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX, "loss_weights": 0.0}
    batch: dict[str, list] = {k: [] for k in fills}
    for i, r in enumerate(records):
        n = len(r["input_ids"])
        labels = list(r["labels"])
        row = {
            "input_ids": list(r["input_ids"]),
            "attention_mask": list(r.get("attention_mask", [1] * n)),
            "labels": labels,
            "loss_weights": list(r["loss_weights"]) if r.get("loss_weights") is not None
            else [float(lab != IGNORE_INDEX) for lab in labels],
        }
        for key, values in row.items():
            if len(values) != n:
                raise DataError(f"record #{i}: '{key}' has {len(values)} entries but 'input_ids' has {n}")
            pad = [fills[key]] * (longest - n)
            batch[key].append(values + pad if padding_side == "right" else pad + values)
    return {
        "input_ids": torch.tensor(batch["input_ids"], dtype=torch.long),
        "attention_mask": torch.tensor(batch["attention_mask"], dtype=torch.long),
        "labels": torch.tensor(batch["labels"], dtype=torch.long),
        "loss_weights": torch.tensor(batch["loss_weights"], dtype=torch.float32),
    }


@dataclass
class Collator:
    """`collate` as a `data_collator` for `transformers.Trainer` / `DataLoader(collate_fn=...)`."""

    pad_token_id: int = 0
    padding_side: str = "right"
    pad_to_multiple_of: Optional[int] = None

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> "Collator":
        """Pads with the tokenizer's pad token (its EOS when it has none)."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(pad_token_id=int(pad if pad is not None else 0), **kwargs)

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(records, self.pad_token_id, padding_side=self.padding_side,
                       pad_to_multiple_of=self.pad_to_multiple_of)


class ToolDataset(torch.utils.data.Dataset):
    """Records as a map-style `torch.utils.data.Dataset` (pair it with `Collator`)."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]


__all__ = ["Record", "MEMORIZATION_PROMPT", "MEMORIZATION_PROMPTS", "MEMORIZATION_PHRASINGS", "memorization_prompt",
           "REQUEST_TEMPLATES", "synthetic_requests",
           "PLAIN_GENERATION_PROMPT", "render_prompt_text",
           "encode_conversation", "memorization_records",
           "retrieval_records", "trajectory_records", "format_tool_calls", "load_seal_tools_queries",
           "collate", "Collator", "ToolDataset"]
