"""Kernels of toolken (installed as `toolken.kernels`): each op is one public dispatching
function; a Triton kernel for CUDA tensors, a PyTorch path for the CPU that is also the test
oracle. Importing this package never imports Triton."""
from .bitmask import apply_token_bitmask_
from .vocab_parallel import VocabParallelOptions
from .weighted_ce import TrainableRows, fused_linear_weighted_cross_entropy

__all__ = ["apply_token_bitmask_", "fused_linear_weighted_cross_entropy", "TrainableRows", "VocabParallelOptions"]
