"""FC's forward two ways, interleaved: netc's dot-product loops ("dots") against the BLAS ("gemm").

    python bench/fc.py                      # the shapes below, float32, netc's thread count
    python bench/fc.py --shapes 64x784x256  # samples x features x units

Prints the median microseconds of each way per shape, their ratio (gemm / dots: above 1 means
dots is faster) and which way netc's rule picks (compiler/kinds/dense.py, linear_algorithm).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from netc.runtime.backends.cpu import blas, dense, jit
from netc.runtime.backends.cpu.common import act_pair

# an MLP's first layer at batch 64 and 256, LeNet's C5 and F6, batch 1, a small VGG's FC (rows
# of 16 KiB)
SHAPES = [(64, 784, 256), (256, 784, 256), (64, 400, 120), (64, 120, 84), (1, 784, 256),
          (64, 4096, 256)]


def measure(n, k, u, repeats):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k)).astype(np.float32)
    w = rng.standard_normal((u, k)).astype(np.float32)
    b = rng.standard_normal(u).astype(np.float32)
    z = np.empty((n, u), np.float32)
    relu = act_pair("relu", np.float32)
    times = {"dots": [], "gemm": []}
    try:
        for _ in range(3):  # compiles (or loads the cache)
            for way in times:
                dense.FORCE = way
                dense.linear_forward(x, w, b, relu, z)
        for _ in range(repeats):
            for way, ts in times.items():
                dense.FORCE = way
                t = time.perf_counter()
                dense.linear_forward(x, w, b, relu, z)
                ts.append(time.perf_counter() - t)
    finally:
        dense.FORCE = None
    return {way: statistics.median(ts) for way, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="", help="comma-separated NxKxU (samples x features x units)")
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    shapes = ([tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
              if args.shapes else SHAPES)
    jit.setup()
    print(f"GEMM: {blas.describe()}; {jit.workers()} threads")
    print(f"{'samples x features x units':<28} {'dots us':>8} {'gemm us':>8} {'gemm/dots':>10}  rule")
    for n, k, u in shapes:
        t = measure(n, k, u, args.repeats)
        print(f"{f'{n} x {k} x {u}':<28} {t['dots'] * 1e6:>8.1f} {t['gemm'] * 1e6:>8.1f} "
              f"{t['gemm'] / t['dots']:>9.2f}x  {dense.linear_algorithm(n, k, 4)}")


if __name__ == "__main__":
    main()
