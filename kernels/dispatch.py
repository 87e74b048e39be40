"""Which implementation an op runs, decided in one place for every kernel: Triton for CUDA tensors
when Triton is installed (or when asked for, e.g. under ``TRITON_INTERPRET=1`` on the CPU), the
PyTorch path otherwise. Triton is imported only when it is chosen."""
from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")


def triton_available() -> bool:
    """Whether Triton can be imported (it is optional)."""
    return importlib.util.find_spec("triton") is not None


def use_triton(backend: str, device: torch.device) -> bool:
    """True when `backend` ("auto", "torch" or "triton") on tensors of `device` means the Triton
    kernel; a request that cannot be met is a `ValueError` saying what to do."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    chosen = backend == "triton" or (backend == "auto" and device.type == "cuda" and triton_available())
    if not chosen:
        return False
    if not triton_available():
        raise ValueError('backend="triton" needs the triton package (pip install "toolken[triton]")')
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f'backend="triton" needs CUDA tensors (got {device}); set TRITON_INTERPRET=1 before '
            "importing toolken to run the kernel on the CPU for testing"
        )
    return True
