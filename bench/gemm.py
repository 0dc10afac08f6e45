"""GFLOP/s of the GEMMs netc's kernels call, on one thread, for layer-sized shapes: netc's own
register tiles (runtime/backends/cpu/tiles.py, in this CPU's geometry) against the BLAS,
interleaved.

    python bench/gemm.py                          # the BLAS kernels OpenBLAS runs here
    NETC_BLAS_CORETYPE=auto python bench/gemm.py  # OpenBLAS's own choice, past OPENBLAS_CORETYPE
    python bench/gemm.py --vector-bytes 64        # another width's tiles (LLVM splits wider ones)

Prints which BLAS and kernels run (as `netc bench` does), the tiles' geometry and which GEMMs run
on them, then the median rate of each per shape.
"""
from __future__ import annotations

import argparse
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
    ("small VGG conv2 Winograd M (32 ch)", False, False, 1024, 32, 32),
    ("Winograd M by a row of tiles (64 ch)", False, False, 16, 64, 64),
    ("ResNet-18 Winograd M (128 ch)", False, False, 1024, 128, 128),
    ("ResNet-18 Winograd M (256 ch)", False, False, 512, 256, 256),
    ("ResNet-18 Winograd dU (256 ch)", True, False, 256, 256, 512),
    ("MLP forward (x W^T)", False, True, 64, 256, 784),
    ("small VGG fc1 forward", False, True, 64, 256, 4096),
    ("LeNet C2 weight gradient", False, True, 16, 150, 3200),
    ("LeNet F6 forward", False, True, 64, 84, 120),
]


def _tiles(key):
    """A loop over the tiles of GEOMETRIES[key] (a constant inside it)."""
    @numba.njit
    def run(ta, tb, a, b, c, reps):
        for _ in range(reps):
            if tb:
                tiles.gemm_tiles_nt(1.0, a, b, 0.0, c, key)
            else:
                tiles.gemm_tiles(ta, 1.0, a, b, 0.0, c, key)
    return run


@numba.njit
def _blas(ta, tb, a, b, c, reps):
    for _ in range(reps):
        blas.blas_gemm(ta, tb, 1.0, a, b, 0.0, c)


def rates(ours, ta, tb, m, n, k, repeats=15):
    """Median GFLOP/s of (ours: a _tiles loop, BLAS), timed in turns."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    reps = max(1, int(1e8 // (m * n * k)))
    times = {ours: [], _blas: []}
    for fn in times:
        fn(ta, tb, a, b, c, 1)
    for _ in range(repeats):
        for fn, out in times.items():
            t = time.perf_counter()
            fn(ta, tb, a, b, c, reps)
            out.append((time.perf_counter() - t) / reps)
    return tuple(2 * m * n * k / statistics.median(t) / 1e9 for t in times.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vector-bytes", type=int, choices=sorted(tiles.GEOMETRIES),
                    help="the tiles' geometry (default: this CPU's)")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    jit.setup()
    numba.set_num_threads(1)
    key = args.vector_bytes or tiles.host_vector_bytes() or 64
    ab, abt, most, rows = blas.tile_routes()
    where = "the tiles" if ab else "the BLAS"
    if ab and most:
        where = f"the tiles where n and k are at most {most}, else the BLAS"
    where_nt = "the tiles" if abt else "the BLAS"
    if rows and not abt:
        where_nt = f"the tiles where m is at most {rows}, else the BLAS"
    print(f"GEMM: {blas.describe()}")
    print(f"tiles benchmarked: {tiles.GEOMETRIES[key]}; the kernels here run C = op(A) B on "
          f"{where}, C = A B^T on {where_nt}")
    print(f"{'GEMM':<32} {'m x n x k':>16} {'tiles':>7} {'BLAS':>7} GFLOP/s")
    ours = _tiles(key)
    for name, ta, tb, m, n, k in SHAPES:
        mine, theirs = rates(ours, ta, tb, m, n, k, args.repeats)
        print(f"{name:<32} {f'{m}x{n}x{k}':>16} {mine:7.1f} {theirs:7.1f}", flush=True)


if __name__ == "__main__":
    main()
