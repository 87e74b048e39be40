"""toolken: tool tokens for Hugging Face causal LMs.

One vocabulary token per tool (ToolGen), initialized from the tool's name and description
(Re-Initialization Token Learning), trained with a token-weighted loss (TL-Training) through a
fused kernel, and decoded under constraints (registered tool tokens, then JSON arguments that
match the tool's schema, masked by a C++ grammar engine).

Layers, each importing only those below it (import-linter checks it, see pyproject.toml):

====================================  ========================================================
``cli``, ``demo``                      the command line and the demo
``eval``                               the experiments (retrieval vs BM25), apart from the library
``top_layers``                         tool tokens trained through the top K layers on cached states
``generation``, ``trainer``            generate/parse/retrieve calls; training with the fused loss
``decoding``                           the constrained-decoding logits processor
``loss``, ``data``, ``weights``        the weighted loss; ToolGen-stage records; loss weights
``adapter``, ``extension``, ``init``   save/load/merge; `extend`; row init strategies
``rows``, ``modeling``                 trainable tool rows; model structure (decoder, padding)
``registry``, ``format``, ``tools``    the tool registry; the tool-call text format; tool specs
``sentences``                          a request cut into sentences (per-sentence retrieval)
``grammar`` (``_grammar``)             the C++ grammar engine (no torch)
``errors``                             every user-facing error
====================================  ========================================================

Everything that needs torch loads on first use, so ``import toolken`` is cheap and
``import toolken.grammar`` works without torch.
"""
from importlib import import_module
from typing import Any

from .errors import (
    AdapterError,
    DataError,
    DecodingError,
    ExtendError,
    GrammarError,
    NotExtendedError,
    ToolkenError,
    ToolSpecError,
)
from .registry import ToolRegistry, registry
from .tools import Tool, ToolSet

__version__ = "0.1.0"

# public name -> submodule that defines it (None: the name is a submodule)
_LAZY = {
    "extend": "extension",
    "output_weight": "rows",
    "prior": "rows",
    "tool_rows": "rows",
    "save": "adapter",
    "load": "adapter",
    "merge": "adapter",
    "prior_regularization": "loss",
    "weighted_loss": "loss",
    "Trainer": "trainer",
    "compute_loss_func": "trainer",
    "ToolCallLogitsProcessor": "decoding",
    "generate_tool_calls": "generation",
    "parse_tool_calls": "generation",
    "retrieve": "generation",
    "train_tool_tokens": "top_layers",
    "top_layers": None,
    "ToolCall": "format",
    "grammar": None,
    "weights": None,
    "data": None,
    "kernels": None,
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'toolken' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        return import_module(f".{name}", __name__)
    return getattr(import_module(f".{module}", __name__), name)


__all__ = [
    "AdapterError", "DataError", "DecodingError", "ExtendError", "GrammarError", "NotExtendedError", "ToolkenError",
    "ToolSpecError", "Tool", "ToolSet", "ToolRegistry", "registry", *_LAZY,
]
