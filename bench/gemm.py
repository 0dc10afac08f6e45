"""GFLOP/s of the GEMM netc's kernels call, on one thread, for layer-sized shapes.

    python bench/gemm.py                          # the kernels OpenBLAS runs here
    NETC_BLAS_CORETYPE=auto python bench/gemm.py  # OpenBLAS's own choice, past OPENBLAS_CORETYPE

Prints which BLAS and kernels run (as `netc bench` does), then the median rate per shape.
"""
from __future__ import annotations

import statistics
import time

import numba
import numpy as np

from netc.compiler import blas, jit

# (m, k, n): an MLP's 64x784 @ 784x256, a 32x32 conv's 32 filters over 3x3x32 unfolded columns
# (per chunk), a Winograd GEMM of VGG's conv4, a square one
SHAPES = [(64, 784, 256), (32, 288, 1024), (256, 64, 64), (512, 512, 512)]


@numba.njit
def _call(a, b, c, reps):
    for _ in range(reps):
        jit.gemm(False, False, 1.0, a, b, 0.0, c)


def rate(m, k, n, repeats=30):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    reps = max(1, int(2e7 // (m * k * n)))
    _call(a, b, c, 1)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _call(a, b, c, reps)
        times.append((time.perf_counter() - t) / reps)
    return 2 * m * k * n / statistics.median(times) / 1e9


def main():
    jit.setup()
    numba.set_num_threads(1)
    print(f"BLAS: {blas.describe()}")
    for m, k, n in SHAPES:
        print(f"{m:>4} x {k:>4} x {n:>4}: {rate(m, k, n):6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
