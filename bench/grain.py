"""Where a second thread pays: kernels timed as one part on the calling thread against split
into parts on Numba's threads, over growing work, for runtime/backends/cpu/jit.py's GRAIN.

    python bench/grain.py [--repeats 200]

For each kernel and size: its work (multiply-adds for the GEMM, values for tanh), the median
microseconds one part and split take, and their ratio (above 1: the split is faster). GRAIN, in
nanoseconds of one part's time, should sit where the ratio crosses about 1.2 (with OpenMP threads
the region itself costs less, and on a busy machine far more: a thread that waits for its core
holds the region a time slice; see jit.py), and MACS_PER_NS at the GEMM's rate here.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from netc.runtime.backends import elementwise as ew
from netc.runtime.backends.cpu import activation, dense, jit


def _median_us(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e6 * statistics.median(times)


def cases():
    """(name, work, one part, split) for growing sizes of two kernels: an elementwise tanh (work:
    values read and written) and an FC's GEMM forward (work: multiply-adds)."""
    rng = np.random.default_rng(0)
    parts = jit.workers()
    run, part = activation._ACT["tanh"]
    a = np.float32(0)
    for size in (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18):
        z = rng.standard_normal(size).astype(np.float32)
        y = np.empty_like(z)
        yield (f"tanh x{size}", 2 * size,
               lambda: part(0, 1, a, z, y),
               lambda: run(parts, a, z, y))
    act = (ew.ACT_CODES["relu"], np.float32(0))
    for n, k, u in ((16, 64, 32), (32, 128, 64), (64, 256, 128), (64, 784, 256), (256, 784, 256)):
        x = rng.standard_normal((n, k)).astype(np.float32)
        w = rng.standard_normal((u, k)).astype(np.float32)
        b = np.zeros(u, np.float32)
        z = np.empty((n, u), np.float32)
        yield (f"FC {n}x{k}->{u}", n * k * u,
               lambda: dense._linear_forward_part(0, 1, x, w, b, act, z),
               lambda: dense._linear_forward_cpu(parts, x, w, b, act, z))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    jit.setup()
    print(f"threads {jit.workers()}; GRAIN now {jit.GRAIN}")
    print(f"{'kernel':<22} {'work':>10} {'one part us':>12} {'split us':>10} {'ratio':>7}")
    for name, work, one, many in cases():
        t1, t2 = (_median_us(fn, args.repeats) for fn in (one, many))
        print(f"{name:<22} {work:>10} {t1:12.1f} {t2:10.1f} {t1 / t2:6.2f}x")


if __name__ == "__main__":
    main()
