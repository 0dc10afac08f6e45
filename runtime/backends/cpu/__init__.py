"""The CPU backend: Numba kernels on the CPU's threads, GEMMs on netc's own AVX-512 tiles or on
netc's copy of OpenBLAS. Importing it sets up the threads and the BLAS (jit.setup) and registers
the implementation of every layer kind, one module per family."""
from __future__ import annotations

import warnings

import numpy as np

from netc.dsl.errors import DataError

from ... import cores
from ..context import Context, Memory
from ..registry import Backend, register_backend
from . import activation, conv, dense, join, norm, pool, recurrent  # noqa: F401 - they register the kinds
from . import background, blas, jit
from .losses import _pointwise_cpu, rows
from .optim import (_update0_cpu, _update0_part, _update1_cpu, _update1_part, _update2_cpu,
                    _update2_part)


class CpuContext(Context):
    """The Context of a CPU pass; `workers` is how many parts a parallel kernel splits its batch
    into (and the number of per-thread slices in a workspace)."""

    def __init__(self, memory, train, rng, backward):
        super().__init__(memory, train, rng, backward)
        self.workers = jit.workers()


class CpuBackend(Backend):
    name = "cpu"

    def compile_ahead(self, step):
        """The step's parts, recorded without running any (jit.recording), compiled here and
        in the compiler process at once (jit.compile_ahead). A step that fails on the values
        the skipped parts left (nothing the real step sees) ends the record there: the parts
        noted so far are compiled ahead, the rest as the real step reaches them."""
        if not background.available():
            return 0
        with jit.recording() as calls, np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                step()
            except Exception:  # noqa: BLE001 - see above
                pass
        return jit.compile_ahead(calls)

    def from_host(self, a):
        """A C-ordered copy, on a cache line where it is large (Memory.empty)."""
        a = np.asarray(a)
        out = Memory.empty(a.shape, a.dtype)
        out[...] = a
        return out

    def to_host(self, a):
        return a

    def transfer(self, a):
        return a

    def device_inputs(self, x, shape, dtype, name):
        raise DataError(f"{name}: a CUDA array ({type(x).__name__}), and this model runs on the CPU",
                        "pass a NumPy array (e.g. cupy.asnumpy(x)), or build the model with "
                        "backend='cuda'")

    def copy(self, a):
        return a.copy()

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype)

    def copy_from_host(self, dst, src):
        dst[...] = src

    def add(self, a, b):
        return a + b

    def take(self, a, idx):
        return a[idx]

    def penalty(self, w, g, l1, l2):
        g += l1 * np.sign(w) + l2 * w
        return l1 * float(np.abs(w).sum()) + 0.5 * l2 * float((w * w).sum())

    def clip_values(self, g, limit):
        np.clip(g, -limit, limit, out=g)

    def sum_squares(self, a):
        return float(np.square(a, dtype=np.float64).sum())

    def scale(self, a, factor):
        a *= factor

    def all_finite(self, arrays):
        return all(np.isfinite(a).all() for a in arrays)

    def accuracy(self, out, y, binary):
        if binary:
            return float(((out > 0.5) == (y.reshape(out.shape) > 0.5)).mean())
        return float((out.argmax(axis=1) == y).mean())

    def update(self, rule, theta, g, s1, s2, h, first):
        flat, parts = theta.reshape(-1), jit.split(8 * theta.size)
        g = np.ascontiguousarray(g, theta.dtype).reshape(-1)
        if s2 is not None:  # a part for each set of states (optim.py)
            jit.launch(_update2_cpu, _update2_part, parts, rule, flat, g, s1.reshape(-1),
                       s2.reshape(-1), h, first)
        elif s1 is not None:
            jit.launch(_update1_cpu, _update1_part, parts, rule, flat, g, s1.reshape(-1), h, first)
        else:
            jit.launch(_update0_cpu, _update0_part, parts, rule, flat, g, h, first)

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
        return rows(code, out, target, labels, logits, scale, grad), grad

    def describe(self):
        info = {"threads": jit.workers(), "threading": jit.threading_layer(),
                "GEMM": blas.describe()}
        quota = cores.cpu_quota()
        if quota is not None:  # (a container's: the threads are at most its CPUs)
            info["CPU quota"] = quota
        return info


jit.setup()
register_backend(CpuBackend())
