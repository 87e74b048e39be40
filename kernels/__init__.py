"""Kernels of toolken (installed as `toolken.kernels`): each op is one public dispatching
function; a Triton kernel for CUDA tensors, a PyTorch path for the CPU that is also the test
oracle."""
