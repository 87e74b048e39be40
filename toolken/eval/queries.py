"""Retrieval queries and tool sets from files: Seal-Tools ``{"query", "calling": [{"api"}]}`` or
OpenAI chat ``{"messages": [..., {"role": "assistant", "tool_calls": [...]}]}`` queries; OpenAI or
Seal-Tools tools."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import DataError
from ..tools import PathLike, ToolSet, load_json_records, seal_tools_calls


@dataclass(frozen=True)
class Query:
    """One retrieval query: its text, the distinct tools it calls in call order, and each call as
    ``(tool name, arguments)`` when the record gives them (they label the query's sentences for
    training, `toolken.sentences.sentence_requests`)."""

    id: str
    text: str
    gold: tuple[str, ...]
    calls: tuple[tuple[str, Any], ...] = field(default=(), compare=False, hash=False)


def _arguments(value: Any) -> Any:
    """A call's arguments as an object: OpenAI's JSON string parsed; anything unreadable is {}
    (arguments only label sentences, so a malformed one costs a label, never the query)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}


def read_records(path: PathLike) -> list[Any]:
    """A JSON document (list, or one object) or JSON Lines, optionally gzipped."""
    return load_json_records(path, error=DataError)


def query_from_record(rec: Any, where: str) -> Query:
    if not isinstance(rec, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    rid = str(rec.get("id", where))
    if "calling" in rec:  # Seal-Tools
        text, names = rec.get("query"), seal_tools_calls(rec, where)
        args = [_arguments(c.get("parameters")) for c in rec["calling"]]
    elif "messages" in rec:  # OpenAI chat: the user turn before the first assistant tool call
        msgs = rec["messages"]
        if not isinstance(msgs, list):
            raise DataError(f"{where}: 'messages' must be a list of chat messages")
        text, names, args = None, [], []
        for m in msgs:
            if not isinstance(m, Mapping):
                raise DataError(f"{where}: each message must be an object with 'role' and 'content'")
            if m.get("role") == "user":
                text = m.get("content")
            elif m.get("role") == "assistant" and m.get("tool_calls"):
                names = [(c.get("function") or c).get("name") for c in m["tool_calls"]]
                args = [_arguments((c.get("function") or c).get("arguments")) for c in m["tool_calls"]]
                break
        if not all(isinstance(n, str) for n in names):
            raise DataError(f"{where}: every tool call needs a function name")
    else:
        raise DataError(f"{where}: unknown query format; expected Seal-Tools {{'query', 'calling': "
                        f"[{{'api'}}]}} or OpenAI {{'messages': [...]}} with an assistant 'tool_calls' turn")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: no user query text (Seal-Tools 'query' or a user message before the tool call)")
    if not names:
        raise DataError(f"{where}: the query calls no tool, so it has no gold tool to retrieve")
    return Query(rid, text, tuple(dict.fromkeys(names)), tuple(zip(names, args)))


def load_queries(path: PathLike) -> list[Query]:
    """Queries from a JSON list or JSON Lines file (``.gz`` ok), Seal-Tools or OpenAI chat format."""
    return [query_from_record(r, f"{path} record #{i}") for i, r in enumerate(read_records(path))]


def load_tools(path: PathLike) -> ToolSet:
    """Tools from an OpenAI-format JSON file (a list of specs) or a Seal-Tools ``tool.jsonl[.gz]``
    (recognized by its ``api_name`` field). A file with no tool is a `DataError` (nothing to
    extend a model with), raised before any model is loaded."""
    records = read_records(path)
    if isinstance(records, list) and records and isinstance(records[0], Mapping) and "api_name" in records[0]:
        tools = ToolSet.from_seal_tools(records)
    else:
        if len(records) == 1 and isinstance(records[0], Mapping) and "tools" in records[0]:
            records = records[0]["tools"]
        tools = ToolSet.from_openai(records)
    if not len(tools):
        raise DataError(f"{path}: no tools in this file; it needs at least one tool spec")
    return tools


def unknown_gold(queries: Sequence[Query], tools: ToolSet) -> list[dict]:
    """Queries naming tools that are not in `tools`, as ``{"id", "unknown": [...]}`` (reported in
    the result; those gold tools count as misses, never silently dropped)."""
    return [{"id": q.id, "unknown": [n for n in q.gold if n not in tools]}
            for q in queries if any(n not in tools for n in q.gold)]
