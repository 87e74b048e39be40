"""toolken: tool tokens for Hugging Face causal LMs.

One vocabulary token per tool (ToolGen), initialized from the tool's name and description
(Re-Initialization Token Learning), trained with a token-weighted loss (TL-Training) through a
fused kernel, and decoded under constraints (registered tool tokens, then JSON arguments that
match the tool's schema, masked by a C++ grammar engine).

Submodules load lazily so that `import toolken` stays cheap and never needs Triton.
"""
from importlib import import_module
from typing import Any

from .errors import (
    AdapterError,
    DataError,
    DecodingError,
    ExtendError,
    GrammarError,
    ToolkenError,
    ToolSpecError,
)
from .tools import Tool, ToolSet

# Functions named like their modules (`toolken.extend`, `toolken.registry`) are imported eagerly:
# importing a submodule binds its name on the package, which would shadow a lazy function.
from .registry import ToolRegistry, registry  # noqa: E402
from .extend import extend, output_weight, prior, tool_rows  # noqa: E402

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "save": "adapter",
    "load": "adapter",
    "merge": "adapter",
    "prior_regularization": "loss",
    "weighted_loss": "loss",
    "Trainer": "trainer",
    "compute_loss_func": "trainer",
    "ToolCallLogitsProcessor": "decoding",
    "ToolCall": "decoding",
    "generate_tool_calls": "decoding",
    "retrieve": "decoding",
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
    "AdapterError", "DataError", "DecodingError", "ExtendError", "GrammarError", "ToolkenError",
    "ToolSpecError", "Tool", "ToolSet", "ToolRegistry", "registry", "extend", "output_weight", "prior",
    "tool_rows", *[k for k in _LAZY],
]
