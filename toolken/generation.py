"""Generating and reading tool calls with a tool-token model: `generate_tool_calls` (generate
under `ToolCallLogitsProcessor`, then parse), `parse_tool_calls` (generated ids -> text and
validated calls, in `toolken.format`'s layout) and `retrieve` (ToolGen's retrieval by tool token).

References: ToolGen (Wang et al., 2024, "ToolGen: Unified Tool Retrieval and Calling via
Generation") for retrieval by constrained generation of atomic tool tokens.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from transformers import LogitsProcessorList

from . import jump_forward as jump
from .sentences import split_sentences
from .decoding import DEFAULT_WHITESPACE, ToolCallLogitsProcessor, ToolsArg, enabled_tools, eos_ids, registry_of
from .errors import DataError, DecodingError
from .format import RawCall, ToolCall, ToolCallResult, parse_calls, render_prompt_text
from .modeling import pad
from .registry import ToolRegistry
from .tools import argument_error

__all__ = ["generate_tool_calls", "parse_tool_calls", "retrieve", "best_sentence_scores", "render_prompt", "left_pad_prompts",
           "ToolCall", "RawCall", "ToolCallResult"]


Messages = Sequence[dict]


def _is_messages(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(m, dict) for m in x)


def _as_batch(x: Any, what: str) -> tuple[list[Any], bool]:
    """(items, batched): one prompt / one conversation, or a list of them."""
    if isinstance(x, str) or _is_messages(x):
        return [x], False
    if isinstance(x, (list, tuple)) and x and all(isinstance(i, str) or _is_messages(i) for i in x):
        return list(x), True
    raise DecodingError(f"{what} must be a string, a list of chat messages ({{'role': ..., 'content': ...}} "
                        f"dicts), or a non-empty list of those; got {type(x).__name__}: {str(x)[:80]!r}")


def render_prompt(tokenizer: Any, prompt_or_messages: Union[str, Messages]) -> list[int]:
    """Token ids of a prompt: a string is tokenized as is (with the tokenizer's special tokens);
    messages are laid out by `toolken.format.render_prompt_text` (the chat template with its
    generation prompt, or the plain format training used, then its assistant header)."""
    if isinstance(prompt_or_messages, str):
        return list(tokenizer(prompt_or_messages).input_ids)
    try:
        text = render_prompt_text(tokenizer, list(prompt_or_messages))
    except DataError as e:
        raise DecodingError(str(e)) from None
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _max_positions(model: Any) -> Optional[int]:
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if n else None


def left_pad_prompts(model: Any, prompts: list[list[int]], pad_id: int,
                     max_new_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of prompts left-padded for `generate`, on the model's device;
    a prompt that is empty or longer than the model's positions is a `DecodingError`."""
    limit = _max_positions(model)
    for i, p in enumerate(prompts):
        if not p:
            raise DecodingError(f"prompt {i} is empty after tokenization")
        if limit is not None and len(p) + max_new_tokens > limit:
            extra = f" + max_new_tokens {max_new_tokens}" if max_new_tokens else ""
            raise DecodingError(f"prompt {i} has {len(p)} tokens{extra}, more than the model's "
                                f"{limit} positions (config.max_position_embeddings); shorten it")
    ids, mask = pad(prompts, pad_id, side="left")
    device = getattr(model, "device", torch.device("cpu"))
    return ids.to(device), mask.to(device)


# ---------------------------------------------------------------------------------------------
# Parsing generated ids
# ---------------------------------------------------------------------------------------------
def parse_tool_calls(token_ids: Union[Sequence[int], torch.Tensor], tokenizer: Any, model_or_registry: Any,
                     eos_token_id: Union[int, Sequence[int], None] = None, strict: bool = True) -> ToolCallResult:
    """Split generated ids (without the prompt) into text and tool calls by the registry's tool
    token ids, in the training format (`toolken.format`: text, then `<<tool>>{json}` calls, then
    end of turn).

    Each call's arguments are parsed with `json.loads` and validated with `jsonschema` against
    the tool's schema (offline: remote references are an error, never fetched). The last call,
    if the ids stop before an end-of-turn token and its arguments do not parse or validate, is
    `incomplete` (the token limit cut it). A call that was finished (followed by another call or
    end of turn) but is invalid raises `DecodingError` when `strict`, else goes to `invalid`.
    """
    reg = registry_of(model_or_registry)
    model = None if isinstance(model_or_registry, ToolRegistry) else model_or_registry
    eos = set(eos_ids(tokenizer, model, eos_token_id))
    ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else [int(i) for i in token_ids]
    ended = False
    for j, t in enumerate(ids):
        if t in eos:
            ids, ended = ids[:j], True
            break
    name_of = {i: n for n, i in reg.token_ids.items()}
    return parse_calls(ids, tokenizer, name_of, ended, lambda name, args: argument_error(reg.tools[name], args), strict)


# ---------------------------------------------------------------------------------------------
# generate_tool_calls / retrieve
# ---------------------------------------------------------------------------------------------
def generate_tool_calls(model: Any, tokenizer: Any, messages_or_prompt: Any, tools: ToolsArg = None,
                        mode: str = "auto", tool_bias: float = 0.0, strict: bool = True,
                        whitespace: str = DEFAULT_WHITESPACE, jump_forward: Union[bool, str] = True,
                        **generate_kwargs: Any) -> Any:
    """Generate a turn under `ToolCallLogitsProcessor` and parse it into text and tool calls.

    `messages_or_prompt`: a prompt string, a list of chat messages (rendered with the chat
    template), or a list of either for a batch (left-padded). Other keyword arguments go to
    `model.generate` (`max_new_tokens`, `do_sample`, `num_beams`, `num_return_sequences`,
    `logits_processor`, ...).

    Returns a `ToolCallResult` (unpacks as `text, tool_calls`) per prompt — a list of them for a
    batch — or, with `num_return_sequences > 1`, a list of results per prompt, best first. Beam
    search can keep a beam whose last token the constraints forbid (score -inf) when fewer
    allowed continuations exist than beams; such dead beams are left out of those lists.
    Each call's arguments are validated with `jsonschema`; see `parse_tool_calls`.

    `jump_forward` (default True): under greedy search (one sequence per prompt, no
    repetition penalty or other logits-changing setting), text the argument grammar forces (a
    fixed key, ``": "``, a closing brace) is run through the model in one forward with the
    token that led to it (`toolken.jump_forward`). True (``"verify"``): the forced tokens are a
    draft the model's own greedy choices check, so the output is exactly that of step-by-step
    decoding, in fewer forwards wherever the model agrees. ``"force"``: they are appended
    without asking the model, split as the tokenizer splits the whole call (the output is that
    of step-by-step decoding only where the model would have chosen them). `logits_processor`
    entries then run one row at a time at every position the model chooses. Other settings
    (sampling, beams) decode step by step with `generate`.
    """
    reg = registry_of(model)
    items, batched = _as_batch(messages_or_prompt, "messages_or_prompt")
    proc = ToolCallLogitsProcessor(tokenizer, model, tools=tools, mode=mode, tool_bias=tool_bias,
                                   eos_token_id=generate_kwargs.pop("eos_token_id", None), whitespace=whitespace)
    pad_id = generate_kwargs.pop("pad_token_id", None)
    pad_id = pad_id if pad_id is not None else tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else proc.eos_ids[0]
    prompts = [render_prompt(tokenizer, x) for x in items]
    input_ids, attention_mask = left_pad_prompts(model, prompts, pad_id, int(generate_kwargs.get("max_new_tokens") or 0))
    processors = LogitsProcessorList(generate_kwargs.pop("logits_processor", None) or [])
    if jump.jump_mode(jump_forward) and jump.supports(model, generate_kwargs):
        budget = jump.new_token_budget(model, input_ids.shape[1], generate_kwargs)
        rows = jump.generate_ids(model, proc, prompts, pad_id, budget, processors, jump_forward)
        results = [parse_tool_calls(row, tokenizer, reg, eos_token_id=proc.eos_ids, strict=strict) for row in rows]
        return results if batched else results[0]
    processors.append(proc)
    beams = int(generate_kwargs.get("num_beams") or 1) > 1
    if beams:
        generate_kwargs.update(return_dict_in_generate=True, output_scores=True)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, logits_processor=processors,
                             pad_token_id=pad_id, eos_token_id=proc.eos_ids, **generate_kwargs)
    sequences = out.sequences if hasattr(out, "sequences") else out
    scores = out.sequences_scores.tolist() if beams else [None] * sequences.shape[0]
    generated = sequences[:, input_ids.shape[1]:].cpu()
    per_prompt = generated.shape[0] // len(items)
    results: list[list[ToolCallResult]] = [[] for _ in items]
    for j, (row, score) in enumerate(zip(generated, scores)):
        if score is not None and score == float("-inf"):
            continue  # a dead beam
        r = parse_tool_calls(row, tokenizer, reg, eos_token_id=proc.eos_ids, strict=strict)
        r.score = score
        results[j // per_prompt].append(r)
    flat: list[Any] = [r if per_prompt > 1 else r[0] for r in results]
    return flat if batched else flat[0]


def retrieve(model: Any, tokenizer: Any, query: Any, k: int = 5, tools: ToolsArg = None,
             batch_size: int = 16, per_sentence: bool = False) -> Union[list[tuple[str, float]], list[list[tuple[str, float]]]]:
    """The `k` enabled tools the model most expects to call for `query`, as `(name, log-prob)`
    sorted by score, best first (ToolGen's retrieval, Wang et al. 2024).

    ToolGen retrieves by beam search constrained to tool tokens; with atomic tool tokens every
    tool is one token, so that search is exact after one step: the next-token log-probabilities
    of the prompt (over the whole vocabulary) restricted to enabled tool tokens, top-k. One
    forward pass per batch of queries, only the last position's logits.

    `query`: a string (sent as one user message through the chat template), a list of chat
    messages, or a list of either (returns one list per query).

    ``per_sentence=True``: a request for several tools is scored one sentence at a time
    (`toolken.sentences.split_sentences` of the string, or of a message list's last user message),
    each sentence's log-probabilities renormalized over the enabled tools (which tool, given
    that one is called), and a tool's score is its best over the sentences. One last-position
    state must otherwise stand for every intent of the request; on Seal-Tools' held-out `dev`
    queries this raised Recall@1 from 0.376 to 0.431 and Recall@5 from 0.569 to 0.849 (README).
    """
    reg = registry_of(model)
    enabled = enabled_tools(reg, tools)
    if not enabled:
        raise DecodingError("retrieve needs at least one enabled tool, but `tools` is empty")
    if not isinstance(k, int) or k < 1:
        raise DecodingError(f"k must be a positive integer, got {k!r}")
    items, batched = _as_batch(query, "query")
    conversations = [[{"role": "user", "content": q}] if isinstance(q, str) else list(q) for q in items]
    owner = list(range(len(items)))
    if per_sentence:
        conversations, owner = _sentence_conversations(conversations)
    prompts = [render_prompt(tokenizer, c) for c in conversations]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids(tokenizer, model)[0]
    ids_t = torch.tensor([reg.token_ids[n] for n in enabled])
    kk = min(k, len(enabled))
    scores: list[torch.Tensor] = []
    keep_last = _accepts(model, "logits_to_keep")
    for s in range(0, len(prompts), batch_size):
        input_ids, mask = left_pad_prompts(model, prompts[s:s + batch_size], pad_id)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if keep_last else {}
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                           use_cache=False, **kwargs).logits[:, -1, :].float()
        if int(ids_t.max()) >= logits.shape[-1]:
            raise DecodingError("tool token ids are beyond the model's output vocabulary: resize the model "
                                "(toolken.extend does) before retrieving")
        logp = torch.log_softmax(logits, dim=-1)[:, ids_t.to(logits.device)].cpu()
        scores.append(logp)
    logp = torch.cat(scores)
    if per_sentence:
        logp = best_sentence_scores(logp, owner)
    top = logp.topk(kk, dim=-1)
    out = [[(enabled[i], v) for i, v in zip(idx, vals)] for vals, idx in zip(top.values.tolist(), top.indices.tolist())]
    return out if batched else out[0]


def best_sentence_scores(tool_scores: torch.Tensor, owner: Sequence[int]) -> torch.Tensor:
    """[requests, tools] from [sentences, tools] tool scores (logits or log-probabilities): each
    sentence's log-softmax over the tools, then each tool's best over its request's sentences
    (`owner`: the request of each row, a request's rows contiguous) — `retrieve`'s ``per_sentence``."""
    counts = torch.bincount(torch.as_tensor(list(owner))).tolist()
    return torch.stack([part.log_softmax(-1).amax(0) for part in tool_scores.split(counts)])


def _sentence_conversations(conversations: list[list[Any]]) -> tuple[list[list[Any]], list[int]]:
    """One conversation per sentence of each conversation's last user message (the messages
    before it kept), and the index of the conversation each came from."""
    out: list[list[Any]] = []
    owner: list[int] = []
    for i, conv in enumerate(conversations):
        last = next((j for j in range(len(conv) - 1, -1, -1)
                     if isinstance(conv[j], Mapping) and conv[j].get("role") == "user"), None)
        if last is None or not isinstance(conv[last].get("content"), str):
            raise DecodingError(f"per_sentence: query #{i} has no user message with text content to split")
        for sentence in split_sentences(conv[last]["content"]):
            out.append([*conv[:last], {**conv[last], "content": sentence}, *conv[last + 1:]])
            owner.append(i)
    return out, owner


def _accepts(model: Any, kwarg: str) -> bool:
    try:
        return kwarg in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
