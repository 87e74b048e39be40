"""The experiments, kept apart from the library: `toolken eval retrieval` and `toolken demo`.

- `queries`: retrieval queries and tools from files (Seal-Tools, OpenAI chat);
- `metrics`: Recall@k, NDCG@k and the BM25 baseline;
- `cache`: hidden states of the frozen model, cached on disk, shared prompt prefixes run once;
- `row_training`: training the output tool rows on cached hidden states (ToolkenGPT, Re-Init);
- `experiment`: the retrieval experiment over init strategies at one budget (the tool rows, or the
  top K layers too through `toolken.top_layers`), with an RRF hybrid of BM25 and tool tokens;
- `report`: verdict, table, plot and JSON.
"""
from .cache import (
    HiddenStateCache,
    SharedPrefix,
    default_cache_dir,
    encode_memorization,
    encode_prompts,
    encode_retrieval_prompts,
    memorization_text,
    model_fingerprint,
    user_prompt,
)
from .experiment import INITS, RANKS, ROW_INITS, ExperimentConfig, rrf, run_retrieval_experiment, train_extended
from .metrics import bm25_index, bm25_rankings, bm25_teacher, hit_rate_by_size, ndcg_at_k, recall_at_k, retrieval_metrics, tool_document
from .queries import Query, load_queries, load_tools, query_from_record, read_records, unknown_gold
from .report import format_by_size, format_metrics, format_table, metrics_of, plot_history, verdict, write_result
from .row_training import (
    DEFAULT_LR,
    RowTrainingData,
    base_logsumexp,
    build_training_data,
    full_vocab_loss,
    rank_tools,
    tool_row_handles,
    train_tool_rows,
)

__all__ = [
    "HiddenStateCache", "SharedPrefix", "default_cache_dir", "encode_memorization", "encode_prompts", "encode_retrieval_prompts",
    "memorization_text", "model_fingerprint", "user_prompt", "INITS", "RANKS", "ROW_INITS", "ExperimentConfig", "rrf",
    "run_retrieval_experiment",
    "train_extended", "bm25_index", "bm25_rankings", "bm25_teacher", "hit_rate_by_size", "ndcg_at_k", "recall_at_k",
    "retrieval_metrics", "tool_document", "Query", "load_queries",
    "load_tools", "query_from_record", "read_records", "unknown_gold", "format_by_size", "format_metrics", "format_table",
    "metrics_of", "plot_history", "verdict", "write_result", "DEFAULT_LR", "RowTrainingData", "base_logsumexp", "build_training_data",
    "full_vocab_loss", "rank_tools", "tool_row_handles", "train_tool_rows",
]
