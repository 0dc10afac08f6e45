"""Training steps' times and the page faults each takes, after warm-up steps.

    python bench/step_faults.py SPEC [--batch N] [--steps N] [--warmup N]

A step that allocates a large array anew each time gets fresh pages from the kernel (glibc's
malloc maps a block over its mmap threshold, 128 KiB rising to at most 32 MiB, and unmaps it when
freed), which the kernel clears at the first touch; NumPy asks for huge pages from 4 MiB on,
which may make the kernel compact memory first. The faults per step count how many pages a step
touches for the first time; the same run with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=
68719476736` in the environment (glibc keeps what is freed) shows what they cost. Linux only
(ru_minflt)."""
import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    import netc
    from netc.runtime.bench import step_inputs
    model = netc.Model(args.spec, seed=0)
    x, y = step_inputs(model, args.batch)
    for _ in range(args.warmup):
        model.loss_and_grads(x, y)
    times, faults = [], []
    for _ in range(args.steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        model.loss_and_grads(x, y)
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(f"{model.net.name}, batch {args.batch}: median step "
          f"{statistics.median(times) * 1e3:.1f} ms (min {min(times) * 1e3:.1f}), median "
          f"{statistics.median(faults):.0f} page faults a step")


if __name__ == "__main__":
    main()
