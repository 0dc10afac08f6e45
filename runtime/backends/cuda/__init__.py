"""The CUDA backend: Numba CUDA kernels (NVIDIA's numba-cuda package) on one GPU, GEMMs through
cuBLAS where CuPy is installed (else netc's own tiled kernel). Importing it checks for numba-cuda
(a NetcError that says what to install, where it is missing), then registers the implementation of every layer kind, one module per family as on the CPU. Loading the
backend (registry.load) then checks for a GPU.

Parameters, gradients, optimizer state, BN statistics and workspaces live on the device; a
training step moves the batch there and the loss back. The arrays a step returns (gradients,
and the output of a device batch) are the model's own and are reused by its next step."""
from __future__ import annotations

from .device import require_gpu, require_package

require_package()

import numpy as np  # noqa: E402 - after the check: nothing below works without numba-cuda
from numba import cuda  # noqa: E402

from netc.dsl.errors import DataError  # noqa: E402

from ..context import dtype_key  # noqa: E402
from ..registry import Backend, register_backend  # noqa: E402
from . import activation, conv, dense, gemm, join, norm, pool, recurrent  # noqa: E402,F401
from . import kernels, losses, train  # noqa: E402
from .launch import SIMULATED, grid  # noqa: E402
from .memory import CudaContext, CudaMemory  # noqa: E402
from .optim import _update  # noqa: E402


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self):
        self._arrays: dict = {}  # the loss's arrays by (tag, shape, dtype), reused

    def require(self):
        require_gpu()

    def memory(self):
        return CudaMemory()

    def context(self, memory, train, rng, backward):
        return CudaContext(memory, train, rng, backward)

    # ---- arrays ----
    def from_host(self, a):
        return cuda.to_device(np.ascontiguousarray(a))

    transfer = from_host

    def to_host(self, a):
        return a if isinstance(a, np.ndarray) else a.copy_to_host()

    def device_inputs(self, x, shape, dtype, name):
        arr = x if getattr(x, "__cuda_ndarray__", False) else cuda.as_cuda_array(x)
        want = tuple(shape)
        if arr.dtype != dtype:
            raise DataError(f"{name}: a CUDA array of {arr.dtype}; this model computes in {dtype}",
                            f"convert it on the device (e.g. x.astype('{dtype}')), or build the "
                            f"model with dtype='{arr.dtype}'")
        if arr.ndim == len(want):
            arr = arr.reshape((1,) + arr.shape) if arr.is_c_contiguous() else arr
        if tuple(arr.shape[1:]) != want:
            hint = "images are NCHW: (batch, channels, height, width)"
            if len(want) == 3 and arr.ndim == 4 and tuple(arr.shape[1:]) == (want[1], want[2], want[0]):
                hint = "this looks like NHWC: transpose it to NCHW, e.g. x.transpose(0, 3, 1, 2)"
            raise DataError(f"{name}: expected shape (N, {', '.join(map(str, want))}) for the "
                            f"spec's input; received {tuple(arr.shape)}", hint)
        arr = kernels.contiguous(arr)
        if not np.isfinite(kernels.total(arr, kernels.ABSOLUTE)):
            raise DataError(f"{name}: contains NaN or Inf", "clean or impute the data before "
                            "training")
        return arr

    def zeros(self, shape, dtype):
        return kernels.zeros(shape, dtype)

    def copy(self, a):
        return kernels.copy(a)

    def copy_from_host(self, dst, src):
        dst.copy_to_device(np.ascontiguousarray(src, dst.dtype))

    def add(self, a, b):
        return kernels.add(a, b)

    def update(self, rule, theta, g, s1, s2, h, first):
        flat = theta.reshape(theta.size)
        none = flat[:0]
        _update[grid(theta.size)](rule, flat, g.reshape(g.size),
                                  none if s1 is None else s1.reshape(s1.size),
                                  none if s2 is None else s2.reshape(s2.size), h, first)

    # ---- what training does to arrays ----
    def take(self, a, idx):
        return train.take(a, idx)

    def fits(self, nbytes):
        """A data set may stay on the device where it takes at most a quarter of the free
        memory."""
        try:
            free, _ = cuda.current_context().get_memory_info()
        except Exception:  # the simulator does not say
            return True
        return nbytes <= free // 4

    def free_memory(self):
        try:
            return cuda.current_context().get_memory_info()[0]
        except Exception:  # the simulator does not say
            return None

    penalty = staticmethod(train.penalty)
    clip_values = staticmethod(train.clip_values)
    sum_squares = staticmethod(train.sum_squares)
    scale = staticmethod(train.scale)
    all_finite = staticmethod(train.all_finite)
    accuracy = staticmethod(train.accuracy)

    # ---- losses ----
    def _array(self, tag, shape, dtype):
        key = (tag, tuple(shape), dtype_key(dtype))
        if key not in self._arrays:
            self._arrays[key] = cuda.device_array(shape, dtype)
        return self._arrays[key]

    def pointwise_loss(self, code, out, target, delta, scale):
        return losses.pointwise(code, out, target, delta, scale, self._array)

    def row_loss(self, code, out, target, labels, logits, scale):
        return losses.rows(code, out, target, labels, logits, scale, self._array)

    def synchronize(self):
        cuda.synchronize()

    def describe(self):
        return {"GPU": _device_name(), "GEMM": gemm.describe()}


def _device_name():
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return f"{name} (compute capability {'.'.join(map(str, dev.compute_capability))})"
    except Exception:  # the simulator's device answers fewer questions
        return "Numba's CUDA simulator" if SIMULATED else "an unknown CUDA device"


register_backend(CudaBackend())
