"""The CUDA backend's memory: device arrays for a model's buffers, workspaces and gradients."""
from __future__ import annotations

from numba import cuda

from ..context import Context, Memory, span


class CudaMemory(Memory):
    @staticmethod
    def empty(shape, dtype):
        return cuda.device_array(shape, dtype)

    @staticmethod
    def span(a):
        """(The simulator's arrays wrap NumPy arrays, which say where they lie.)"""
        return span(getattr(a, "_ary", a))


class CudaContext(Context):
    """The Context of a pass on the GPU (the interface's every method, on device memory)."""
