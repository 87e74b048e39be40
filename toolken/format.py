"""toolken's tool-call text format, in one place: what training writes and decoding reads.

A tool is one atomic token (ToolGen's tool tokens, Wang et al. 2024), ``<<name>>`` by default
(`DEFAULT_TOKEN_FORMAT`); a call is that token followed by its arguments as
``json.dumps(arguments, ensure_ascii=False)`` (`format_arguments`: separators ``", "`` and
``": "``, no other whitespace); calls follow each other back to back, then the turn ends::

    <<get_weather>>{"city": "Paris"}<<get_time>>{"tz": "CET"}<eos>

Conversations are laid out with the tokenizer's chat template when it has one (calls written
into the assistant ``content`` as text, never as ``tool_calls``, so the template cannot reformat
them), else the plain layout::

    <bos>system:\\n...\\nuser:\\n...\\nassistant:\\n<completion><eos>\\ntool:\\n...\\n

(a newline, not a space, after each role, so that BPE never merges the header into the first
completion token). `parse_calls` splits generated ids back into text and calls.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from .errors import DataError, DecodingError, ExtendError

Message = Mapping[str, Any]

#: How a tool name becomes its token (fixed at a model's first extension).
DEFAULT_TOKEN_FORMAT = "<<{name}>>"


def check_token_format(fmt: Any) -> None:
    """A token format holds ``{name}`` exactly once and nothing else to format."""
    if not isinstance(fmt, str) or fmt.count("{name}") != 1:
        raise ExtendError(f"token_format must contain '{{name}}' exactly once, got {fmt!r}")
    try:
        fmt.format(name="x")
    except (KeyError, IndexError, ValueError) as e:
        raise ExtendError(f"token_format {fmt!r} is not a valid format string: {e}") from None


def format_arguments(arguments: Mapping[str, Any]) -> str:
    """A call's argument text as training writes it (and canonical decoding accepts)."""
    return json.dumps(arguments, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# conversation layout
# ---------------------------------------------------------------------------------------------
def render_with_template(tokenizer: Any, messages: Sequence[Message], generation_prompt: bool,
            chat_template: Optional[str]) -> str:
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=generation_prompt,
                                             chat_template=chat_template)
    except Exception as e:  # jinja errors (role alternation, missing fields, ...) are data errors
        raise DataError(f"the chat template cannot render this conversation ({e}); pass "
                        "chat_template=False to use toolken's plain format instead") from None


def template_to_use(tokenizer: Any, chat_template: Union[bool, str, None]) -> Optional[str]:
    """The template to use (a string, or "" for the tokenizer's own), or None for plain text."""
    if chat_template is False:
        return None
    if isinstance(chat_template, str):
        return chat_template
    if getattr(tokenizer, "chat_template", None):
        return ""
    if chat_template is True:
        raise DataError("chat_template=True but the tokenizer has no chat template; pass a template "
                        "string or chat_template=None to fall back to the plain format")
    return None


def layout_with_template(tokenizer: Any, messages: Sequence[Message], trained: Sequence[bool],
                     template: str) -> tuple[str, list[tuple[int, int]]]:
    """Render with the chat template; return the text and the [start, end) character span of
    each trained assistant completion. Relies on the template being prefix-stable (rendering the
    first k messages gives a prefix of rendering all of them), which is checked."""
    tpl = template or None
    text = render_with_template(tokenizer, messages, False, tpl)
    eos = getattr(tokenizer, "eos_token", None)
    spans = []
    for i, (msg, train) in enumerate(zip(messages, trained)):
        if not train:
            continue
        if i == 0:
            raise DataError("a conversation cannot start with a trained assistant turn: "
                            "add the user message it answers")
        head = render_with_template(tokenizer, messages[:i], True, tpl)
        upto = render_with_template(tokenizer, messages[: i + 1], False, tpl)
        if not (upto.startswith(head) and text.startswith(upto)):
            raise DataError(f"the chat template is not prefix-stable at message {i} (rendering a "
                            "conversation prefix is not a prefix of the whole), so assistant turns "
                            "cannot be located; pass chat_template=False for the plain format")
        start, end = len(head), len(upto)
        content_at = text.find(msg["content"], start, end) if msg["content"] else start
        search_from = content_at + len(msg["content"]) if content_at >= 0 else start
        eos_at = text.find(eos, search_from, end) if eos else -1
        if eos_at >= 0:
            end = eos_at + len(eos)
        else:
            end = start + len(text[start:end].rstrip())
        spans.append((start, end))
    return text, spans


def layout_plain(tokenizer: Any, messages: Sequence[Message],
                  trained: Sequence[bool]) -> tuple[str, list[tuple[int, int]]]:
    """toolken's plain format (module docstring), for tokenizers without a chat template."""
    text = getattr(tokenizer, "bos_token", None) or ""
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise DataError(f"{type(tokenizer).__name__} has no eos_token, so an assistant turn would have no "
                        "end to learn; set tokenizer.eos_token (e.g. '</s>') or give it a chat template")
    spans = []
    for msg, train in zip(messages, trained):
        text += f"{msg['role']}:\n"
        start = len(text)
        text += msg["content"] + (eos if msg["role"] == "assistant" else "")
        if train:
            spans.append((start, len(text)))
        text += "\n"
    return text, spans


#: The assistant header of the plain format: what a model trained on it is prompted with.
PLAIN_GENERATION_PROMPT = "assistant:\n"


def render_prompt_text(tokenizer: Any, messages: Sequence[Message],
                       chat_template: Union[bool, str, None] = None) -> str:
    """The text that prompts the next assistant turn after `messages`, in the same layout the
    records of this module are built with: the chat template with its generation prompt (when
    the tokenizer has one, or `chat_template` gives one), else the plain format followed by
    `PLAIN_GENERATION_PROMPT`. Tokenize it with ``add_special_tokens=False`` (it already holds
    the template's or the plain format's BOS)."""
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise DataError(f"message {i} ({str(m)[:80]!r}) needs 'role' and 'content' keys")
    template = template_to_use(tokenizer, chat_template)
    if template is not None:
        return render_with_template(tokenizer, messages, True, template or None)
    text, _ = layout_plain(tokenizer, messages, [False] * len(messages))
    return text + PLAIN_GENERATION_PROMPT


# ---------------------------------------------------------------------------------------------
# calls as text
# ---------------------------------------------------------------------------------------------
def format_tool_calls(reg: Any, tool_calls: Sequence[Mapping[str, Any]], where: str = "") -> str:
    """OpenAI ``tool_calls`` -> toolken's tool-call text: per call the tool token, then
    ``json.dumps(arguments)``. Arguments may be a dict or a JSON string (as OpenAI sends them)."""
    parts = []
    for k, call in enumerate(tool_calls):
        fn = call.get("function", call)
        name = fn.get("name")
        if name not in reg:
            raise DataError(f"{where}tool call #{k} names tool {name!r}, which is not registered on the model")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as e:
                raise DataError(f"{where}tool call #{k} ({name!r}): arguments are not valid JSON: {e}") from None
        if not isinstance(args, Mapping):
            raise DataError(f"{where}tool call #{k} ({name!r}): arguments must be a JSON object, "
                            f"got {type(args).__name__}")
        parts.append(reg.tokens[name] + format_arguments(args))
    return "".join(parts)


def plain_message(reg: Any, msg: Any, where: str) -> dict:
    if not isinstance(msg, Mapping) or "role" not in msg:
        raise DataError(f"{where}: each message must be a dict with a 'role'")
    role, content = msg["role"], msg.get("content") or ""
    if not isinstance(content, str):
        raise DataError(f"{where}: 'content' must be a string (multi-part content is not supported)")
    if role == "assistant" and msg.get("tool_calls"):
        content += format_tool_calls(reg, msg["tool_calls"], f"{where}: ")
    out = {"role": role, "content": content}
    if role == "tool":
        out.update({k: msg[k] for k in ("tool_call_id", "name") if k in msg})
    return out


# ---------------------------------------------------------------------------------------------
# calls back from generated ids
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    """One tool call: the tool's name and its (schema-valid) arguments."""

    name: str
    arguments: dict

    def to_openai(self) -> dict:
        """The OpenAI `tool_calls` item shape (arguments as a JSON string)."""
        return {"type": "function", "function": {"name": self.name, "arguments": json.dumps(self.arguments)}}


@dataclass(frozen=True)
class RawCall:
    """A call that is not a valid `ToolCall`: its tool, the raw argument text and why."""

    name: str
    raw: str
    error: str


@dataclass
class ToolCallResult:
    """What one generated turn holds: the text before the calls, the valid calls, the call cut
    off by the token limit (`incomplete`, at most one: the last), and calls whose finished
    arguments failed to parse or validate (`invalid`; empty unless `strict=False` — under the
    processor's constraints this only happens if the grammar engine is wrong).

    Unpacks as `text, tool_calls = result`."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    incomplete: Optional[RawCall] = None
    invalid: list[RawCall] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    score: Optional[float] = None  # the beam's score under beam search

    def __iter__(self) -> Iterator[Any]:
        return iter((self.text, self.tool_calls))


def parse_calls(ids: Sequence[int], tokenizer: Any, name_of: Mapping[int, str], ended: bool,
                validate: Callable[[str, Any], Optional[str]], strict: bool = True) -> ToolCallResult:
    """Split generated ids (no prompt, cut at the end of turn; `ended` says whether it came) into
    text and calls by `name_of` (tool token id -> tool name). `validate(name, arguments)` returns
    an error message or None. The last call, when the turn did not end and its arguments do not
    parse or validate, is `incomplete`; a finished invalid call raises `DecodingError` when
    `strict`, else goes to `invalid`."""
    ids = list(ids)
    starts = [j for j, t in enumerate(ids) if t in name_of]
    text_ids = ids[:starts[0]] if starts else ids
    result = ToolCallResult(text=tokenizer.decode(text_ids, skip_special_tokens=True), token_ids=ids)
    for c, j in enumerate(starts):
        name = name_of[ids[j]]
        last = c == len(starts) - 1
        raw = tokenizer.decode(ids[j + 1:(None if last else starts[c + 1])], skip_special_tokens=False,
                               clean_up_tokenization_spaces=False)
        try:
            args = json.loads(raw)
            error = None if isinstance(args, dict) else f"arguments are a JSON {type(args).__name__}, not an object"
            error = error or validate(name, args)
        except json.JSONDecodeError as e:
            error = f"arguments are not JSON: {e}"
        if error is None:
            result.tool_calls.append(ToolCall(name, args))
        elif last and not ended:
            result.incomplete = RawCall(name, raw, error)
        elif strict:
            raise DecodingError(f"tool call {name!r} has invalid arguments {raw!r}: {error}")
        else:
            result.invalid.append(RawCall(name, raw, error))
    return result
