"""Retrieval metrics and the BM25 baseline.

Per query, then averaged over queries; gold = the distinct tools the query calls:
Recall@k = |gold ∩ top-k| / |gold| (so a query with 3 gold tools scores at most 1/3 at k=1);
NDCG@k with binary relevance, DCG = Σ_{i<k, top[i] ∈ gold} 1/log2(i+2), normalized by the DCG of
an ideal ranking that puts min(|gold|, k) gold tools first. Gold tools that are not in the tool
set stay in the denominator (they count as misses). BM25 is `bm25s` (the `demo` extra); `bm25_teacher` turns its ranking into soft targets.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Sequence

import bm25s
import torch

from ..sentences import split_sentences
from ..errors import DataError
from ..tools import ToolSet
from .queries import Query


def recall_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    """Share of the gold tools found in the top k."""
    g = set(gold)
    if not g:
        raise DataError("recall_at_k: a query needs at least one gold tool")
    return len(g.intersection(ranked[:k])) / len(g)


def ndcg_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    """NDCG@k with binary relevance (see the module docstring)."""
    g = set(gold)
    if not g:
        raise DataError("ndcg_at_k: a query needs at least one gold tool")
    dcg = sum(1.0 / math.log2(i + 2) for i, t in enumerate(ranked[:k]) if t in g)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(g), k)))
    return dcg / ideal


def retrieval_metrics(rankings: Sequence[Sequence[str]], queries: Sequence[Query]) -> dict[str, float]:
    """Recall@1, Recall@5 and NDCG@5 averaged over queries."""
    if len(rankings) != len(queries):
        raise DataError(f"{len(rankings)} rankings for {len(queries)} queries")
    if not queries:
        raise DataError("no queries to evaluate")
    n = len(queries)
    return {
        "recall@1": sum(recall_at_k(r, q.gold, 1) for r, q in zip(rankings, queries)) / n,
        "recall@5": sum(recall_at_k(r, q.gold, 5) for r, q in zip(rankings, queries)) / n,
        "ndcg@5": sum(ndcg_at_k(r, q.gold, 5) for r, q in zip(rankings, queries)) / n,
    }


def hit_rate_by_size(rankings: Sequence[Sequence[str]], queries: Sequence[Query]) -> dict[str, float]:
    """Share of queries whose first-ranked tool is one of their gold tools, apart for queries that
    call one tool (``"hit@1 1 tool"``) and several (``"hit@1 2+ tools"``; any of them counts), with
    the query counts (``"n 1 tool"``, ``"n 2+ tools"``). Recall@1 mixes the two and caps a 3-tool
    query at 1/3; this split shows which kind of request a ranker misses (README, issue 14)."""
    if len(rankings) != len(queries):
        raise DataError(f"{len(rankings)} rankings for {len(queries)} queries")
    out: dict[str, float] = {}
    for label, keep in (("1 tool", lambda q: len(set(q.gold)) == 1), ("2+ tools", lambda q: len(set(q.gold)) > 1)):
        hits = [bool(r) and r[0] in set(q.gold) for r, q in zip(rankings, queries) if keep(q)]
        out[f"n {label}"] = float(len(hits))
        if hits:
            out[f"hit@1 {label}"] = sum(hits) / len(hits)
    return out


def tool_document(tool: Any) -> str:
    """What BM25 indexes for a tool: the name split into words (camelCase, snake_case) plus the
    description — the same information memorization training gives the tool token."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", tool.name).replace("_", " ")
    return f"{words} {tool.description}"


def bm25_index(tools: ToolSet) -> Any:
    """A `bm25s` retriever over the tools' documents (`tool_document`), Lucene scoring, English
    stop words: what `bm25_rankings` and `bm25_teacher` query."""
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([tool_document(t) for t in tools], stopwords="en", show_progress=False),
                    show_progress=False)
    return retriever


def bm25_rankings(tools: ToolSet, texts: Sequence[str], k: int = 5, per_sentence: bool = False) -> list[list[str]]:
    """Top-k tool names per text by BM25 (`bm25_index`). ``per_sentence``: each sentence
    (`toolken.sentences.split_sentences`) queried apart and a tool scored by its best sentence — the
    same split the tool tokens get with ``rank="sentences"``, so the peer is measured both ways."""
    retriever = bm25_index(tools)
    names = tools.names
    if not per_sentence:
        docs, _ = retriever.retrieve(bm25s.tokenize(list(texts), stopwords="en", show_progress=False),
                                     k=min(k, len(tools)), show_progress=False)
        return [[names[int(i)] for i in row] for row in docs]
    parts = [split_sentences(t) for t in texts]
    docs, scores = retriever.retrieve(bm25s.tokenize([s for p in parts for s in p], stopwords="en", show_progress=False),
                                      k=min(max(k, 50), len(tools)), show_progress=False)
    out, j = [], 0
    for p in parts:
        best: dict[int, float] = {}
        for row, sc in zip(docs[j:j + len(p)], scores[j:j + len(p)]):
            for i, v in zip(row.tolist(), sc.tolist()):
                best[i] = max(best.get(i, float("-inf")), v)
        j += len(p)
        out.append([names[i] for i in sorted(best, key=lambda i: -best[i])[:k]])
    return out


def bm25_teacher(tools: ToolSet, k: int = 50, temperature: float = 2.0):
    """A `toolken.top_layers.Teacher` from BM25: for each text, its top-`k` tools and the softmax
    of their BM25 scores / `temperature` — BM25's ranking as soft targets to distill into the
    tool tokens (knowledge distillation, Hinton et al. 2015; a lexical teacher for a dense
    student, as in distilled dense retrievers)."""
    retriever = bm25_index(tools)

    def teacher(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        docs, scores = retriever.retrieve(bm25s.tokenize(list(texts), stopwords="en", show_progress=False),
                                          k=min(k, len(tools)), show_progress=False)
        return (torch.as_tensor(docs, dtype=torch.long),
                torch.softmax(torch.as_tensor(scores, dtype=torch.float32) / temperature, dim=-1))

    return teacher
