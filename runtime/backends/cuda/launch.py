"""Launch sizes, in one place. Every kernel loops grid-stride, so any grid computes the same
result; these sizes are only a matter of speed. Under Numba's CUDA simulator
(NUMBA_ENABLE_CUDASIM=1), where each simulated thread costs about half a millisecond and each
barrier tens, launches are one small block."""
from __future__ import annotations

import os
import types

import numpy as np
from numba import config, cuda

from .. import elementwise
from ..cache import cached

SIMULATED = bool(config.ENABLE_CUDASIM)
THREADS = 4 if SIMULATED else 256   # threads per block of the elementwise kernels
MAX_BLOCKS = 1 if SIMULATED else 4096
TILE = 4 if SIMULATED else 16       # the GEMM's square tile: TILE x TILE threads per block
# (simulated, 4: tests/cuda/gpu took 33 s, against 49 s with 8's 64 threads a block, each a
# Python thread the simulator starts per block, 33 s of it system time, and 52 s with 2's
# eight times as many barriers)
PARTS = 2 if SIMULATED else 128     # partial sums per reduced value (reductions in two passes)

# numba-cuda warns at every launch of fewer than 128 blocks ("Grid size 1 will likely result in GPU
# under-utilization"): a small layer's grid is sized to its work here on purpose, and the warning
# only repeated itself through every `netc train --device cuda` (and cost each such launch a
# warning object). Off, unless the user set NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS.
if "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" not in os.environ:
    config.CUDA_LOW_OCCUPANCY_WARNINGS = 0


def grid(n):
    """(blocks, threads) for about one thread per item of n."""
    return max(1, min(MAX_BLOCKS, -(-n // THREADS))), THREADS


def kernel(**options):
    """cuda.jit for a kernel, cached on disk in its module's folder (cache.py)."""
    return cached(cuda.jit, **options)


def device(**options):
    """cuda.jit for a device function, inlined into its callers at Numba's level."""
    return cuda.jit(device=True, inline="always", **options)


def _plain(module):
    """A module's Numba functions as plain Python, calling each other: what the simulator runs
    (it runs kernels as Python, and a compiled CPU function cannot take its arrays). Its float32
    constants become Python floats, which NumPy, as Numba, lets take the other operand's type."""
    names = dict(vars(module))
    for key, value in list(names.items()):
        if isinstance(value, np.float32):
            names[key] = float(value)
        fn = getattr(value, "py_func", None)
        if fn is not None:
            names[key] = types.FunctionType(fn.__code__, names, fn.__name__, fn.__defaults__,
                                            fn.__closure__)
    return types.SimpleNamespace(**names)


# elementwise.py as the kernels call it: on a GPU, Numba compiles its functions into the kernels
ew = _plain(elementwise) if SIMULATED else elementwise
