"""GFLOP/s of the GEMMs netc's kernels call, on one thread, for layer-sized shapes: netc's own
register tiles (runtime/backends/cpu/tiles.py, used on CPUs with AVX-512) against the BLAS, interleaved.

    python bench/gemm.py                          # the BLAS kernels OpenBLAS runs here
    NETC_BLAS_CORETYPE=auto python bench/gemm.py  # OpenBLAS's own choice, past OPENBLAS_CORETYPE

Prints which BLAS and kernels run (as `netc bench` does), then the median rate of each per shape.
"""
from __future__ import annotations

import statistics
import time

import numba
import numpy as np

from netc.runtime.backends.cpu import blas, jit, tiles

# (name, ta, tb, m, n, k) for C (m x n) = op(A) op(B) over k
SHAPES = [
    ("MLP weight gradient, batch 64", True, False, 256, 784, 64),
    ("MLP weight gradient, batch 256", True, False, 256, 784, 256),
    ("MLP input gradient", False, False, 64, 784, 256),
    ("small VGG fc1 weight gradient", True, False, 256, 4096, 64),
    ("LeNet C2 forward (im2col)", False, False, 16, 3200, 150),
    ("Winograd M = V U^T (conv4)", False, False, 2048, 64, 64),
    ("Winograd dU = dM^T V (conv4)", True, False, 64, 64, 2048),
    ("LeNet F6 weight gradient", True, False, 84, 120, 64),
    ("MLP forward (x W^T)", False, True, 64, 256, 784),
    ("small VGG fc1 forward", False, True, 64, 256, 4096),
    ("LeNet C2 weight gradient", False, True, 16, 150, 3200),
    ("LeNet F6 forward", False, True, 64, 84, 120),
]


@numba.njit
def _tiles(ta, tb, a, b, c, reps):
    for _ in range(reps):
        if tb:
            tiles.gemm_tiles_nt(1.0, a, b, 0.0, c)
        else:
            tiles.gemm_tiles(ta, 1.0, a, b, 0.0, c)


@numba.njit
def _blas(ta, tb, a, b, c, reps):
    for _ in range(reps):
        blas.blas_gemm(ta, tb, 1.0, a, b, 0.0, c)


def rates(ta, tb, m, n, k, repeats=15):
    """Median GFLOP/s of (tiles, BLAS), timed in turns."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    reps = max(1, int(1e8 // (m * n * k)))
    times = {_tiles: [], _blas: []}
    for fn in times:
        fn(ta, tb, a, b, c, 1)
    for _ in range(repeats):
        for fn, out in times.items():
            t = time.perf_counter()
            fn(ta, tb, a, b, c, reps)
            out.append((time.perf_counter() - t) / reps)
    return tuple(2 * m * n * k / statistics.median(t) / 1e9 for t in times.values())


def main():
    jit.setup()
    numba.set_num_threads(1)
    print(f"GEMM: {blas.describe()}")
    print(f"netc's tiles: {'used' if blas.own_tiles() else 'not used (no AVX-512)'} by the kernels here")
    print(f"{'GEMM':<32} {'m x n x k':>16} {'tiles':>7} {'BLAS':>7} GFLOP/s")
    for name, ta, tb, m, n, k in SHAPES:
        ours, theirs = rates(ta, tb, m, n, k)
        print(f"{name:<32} {f'{m}x{n}x{k}':>16} {ours:7.1f} {theirs:7.1f}")


if __name__ == "__main__":
    main()
