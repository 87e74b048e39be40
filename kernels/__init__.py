"""Kernels of toolken (installed as `toolken.kernels`): each op is one public dispatching
function; a Triton kernel for CUDA tensors, a PyTorch path for the CPU that is also the test
oracle. Importing this package never imports Triton."""
import sys

if __name__ == "kernels":  # pragma: no cover - only `python -m ...` run in a source checkout's root
    # The checkout's root is on sys.path, so this folder was imported as the top-level package
    # `kernels`: the name of Hugging Face's kernels package, which transformers (>= 5) imports.
    # Load that one in our place, so transformers keeps working from the root.
    import importlib.machinery
    import importlib.util
    import os

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _spec = importlib.machinery.PathFinder.find_spec(
        "kernels", [p for p in sys.path if os.path.abspath(p or os.curdir) != _root])
    if _spec is None or _spec.loader is None:
        raise ImportError("no module named 'kernels' outside toolken's checkout (toolken's own kernels are toolken.kernels)")
    _real = importlib.util.module_from_spec(_spec)
    sys.modules["kernels"] = _real
    _spec.loader.exec_module(_real)
else:
    from .bitmask import apply_token_bitmask_
    from .vocab_parallel import VocabParallelOptions
    from .weighted_ce import TrainableRows, fused_linear_weighted_cross_entropy

    __all__ = ["apply_token_bitmask_", "fused_linear_weighted_cross_entropy", "TrainableRows", "VocabParallelOptions"]
