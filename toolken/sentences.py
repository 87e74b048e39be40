"""Requests as sentences: a request for several tools mostly asks for each in its own sentence.

`split_sentences` cuts a request into them (`toolken.retrieve`'s ``per_sentence``, the eval's
``rank="sentences"``, BM25 measured the same way); `sentence_requests` labels each sentence of a
training request with the call whose arguments it names.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from .errors import DataError


#: Where `split_sentences` cuts: after ``.``, ``!`` or ``?`` and white space, before a capital
#: letter or a quote ("... in Germany. Additionally, record ..."), not after a title or "e.g."
#: ("Dr. Emma Smith"); "3.5" stays whole.
SENTENCE_END = re.compile(r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bvs\.)"
                          r"(?<=[.!?])\s+(?=[A-Z\"'])")


def split_sentences(text: str) -> list[str]:
    """The sentences of a request, in order (the stripped text alone when it has one). A
    request for several tools mostly asks for each in its own sentence (Seal-Tools: 3.5
    sentences per held-out `dev` query); scoring each sentence's next token apart gives each
    intent its own state (`toolken.retrieve`'s ``per_sentence``)."""
    if not isinstance(text, str):
        raise DataError(f"split_sentences needs a string, got {type(text).__name__}")
    parts = [s.strip() for s in SENTENCE_END.split(text.strip())]
    return [s for s in parts if s] or [text.strip()]


def _argument_strings(arguments: Any) -> list[str]:
    """A call's argument values as lower-case strings of 2+ characters (lists and objects
    flattened one level): what a request mentions of the call."""
    values = arguments.values() if isinstance(arguments, Mapping) else ()
    flat: list[Any] = []
    for v in values:
        flat.extend(v.values() if isinstance(v, Mapping) else v if isinstance(v, (list, tuple)) else (v,))
    return [s for s in (str(v).strip().lower() for v in flat) if len(s) >= 2]


def sentence_requests(text: str, calls: Sequence[tuple[str, Any]]) -> list[tuple[str, str]]:
    """``(sentence, tool name)`` for the sentences of a request (`split_sentences`) that name the
    argument values of one of its `calls` (``(tool name, arguments)``) more often than any other
    tool's; sentences that name none, or tie between tools, are left out, and a one-sentence request gives
    nothing. Labels for training per-sentence retrieval from requests with several calls (an
    augmentation of ours, measured in the README); e.g. "Additionally, record the interaction
    with customer C123 through email." -> ``recordData`` from its arguments ``C123`` and ``email``."""
    sentences = split_sentences(text)
    if len(sentences) < 2 or not calls:
        return []
    values = [(name, _argument_strings(args)) for name, args in calls]
    out = []
    for s in sentences:
        low = s.lower()
        hits = [sum(v in low for v in vs) for _, vs in values]
        best = max(hits)
        names = {name for (name, _), h in zip(values, hits) if h == best}
        if best and len(names) == 1:  # two calls of one tool may tie: still that tool
            out.append((s, names.pop()))
    return out
