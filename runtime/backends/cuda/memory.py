"""The CUDA backend's memory: device arrays for a model's buffers, workspaces and gradients."""
from __future__ import annotations

from numba import cuda

from ..context import Context, Memory, span


class CudaMemory(Memory):
    @staticmethod
    def empty(shape, dtype):
        return cuda.device_array(shape, dtype)

    @staticmethod
    def owner(arr, arrays: dict):
        """Device arrays do not say what they view: the one whose memory holds arr's first byte."""
        lo = _span(arr)[0]
        return next((a for a in arrays.values() if _span(a)[0] <= lo < _span(a)[1]), None)

    @staticmethod
    def overlap(a, b) -> bool:
        (a_lo, a_hi), (b_lo, b_hi) = _span(a), _span(b)
        return a_lo < b_hi and b_lo < a_hi


def _span(a):
    """(The simulator's arrays wrap NumPy arrays, which say where they lie.)"""
    return span(getattr(a, "_ary", a))


class CudaContext(Context):
    """The Context of a pass on the GPU (the interface's every method, on device memory)."""
