"""The CPU backend: Numba kernels on the CPU's threads, GEMMs on netc's own AVX-512 tiles or on
netc's copy of OpenBLAS. Importing it sets up the threads and the BLAS (jit.setup) and registers
the implementation of every layer kind, one module per family."""
from __future__ import annotations

import numpy as np

from ..context import Context
from ..registry import Backend, register_backend
from . import activation, conv, dense, join, norm, pool  # noqa: F401 - they register the kinds
from . import blas, jit
from .losses import _pointwise_cpu, _rows_cpu


class CpuContext(Context):
    """The Context of a CPU pass; `workers` is how many parts a parallel kernel splits its batch
    into (and the number of per-thread slices in a workspace)."""

    def __init__(self, memory, train, rng, backward):
        super().__init__(memory, train, rng, backward)
        self.workers = jit.workers()


class CpuBackend(Backend):
    name = "cpu"

    def context(self, memory, train, rng, backward):
        return CpuContext(memory, train, rng, backward)

    def pointwise_loss(self, code, out, target, delta, scale):
        out = np.ascontiguousarray(out)
        grad = np.empty_like(out)
        target = np.ascontiguousarray(target, out.dtype).reshape(-1)
        value = _pointwise_cpu(code, out.reshape(-1), target, delta, scale, grad.reshape(-1))
        return value, grad

    def row_loss(self, code, out, target, labels, logits, scale):
        out = np.ascontiguousarray(out)
        grad = np.empty_like(out)
        target = np.ascontiguousarray(target, out.dtype)
        return _rows_cpu(code, out, target, labels, logits, scale, grad), grad

    def describe(self):
        return {"threads": jit.workers(), "GEMM": blas.describe()}


jit.setup()
register_backend(CpuBackend())
