"""Training steps a framework completes in a fixed time: the average step, every pause
included (a median would hide a cgroup's throttling, which stops a process for the rest of a
100 ms period once its CPU quota is spent).

    python bench/throughput.py [CASE] [--framework netc|torch] [--threads N] [--seconds S]

CASE is a bench/compare.py case's network and batch (default digits-32: the digits CNN at batch
32). netc's threads are NETC_NUM_THREADS's, else its default (runtime/cores.py); PyTorch's are
--threads, else its default. To measure under a CPU quota (Linux, cgroup v1, as root):
    mkdir /sys/fs/cgroup/cpu/q && echo 100000 > /sys/fs/cgroup/cpu/q/cpu.cfs_quota_us
    bash -c 'echo $$ > /sys/fs/cgroup/cpu/q/tasks; python bench/throughput.py'
(cgroup v2: `echo "100000 100000" > GROUP/cpu.max`, `echo $$ > GROUP/cgroup.procs`.)
"""
from __future__ import annotations

import argparse
import time

import compare

CASES = {"digits-32": (compare.DIGITS, 32)} | {name: (spec, batch)
                                              for name, spec, batch, _ in compare.CASES}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", nargs="?", default="digits-32", choices=sorted(CASES))
    ap.add_argument("--framework", choices=("netc", "torch"), default="netc")
    ap.add_argument("--threads", type=int, help="PyTorch's threads (netc: NETC_NUM_THREADS)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args(argv)
    spec, batch = CASES[args.case]
    if args.framework == "netc":
        from netc.runtime.backends.cpu import jit
        _, step = compare.netc_step(args.case, spec, batch)
        threads = jit.workers()
    else:
        import torch

        import netc
        if args.threads:
            torch.set_num_threads(args.threads)
        _, step = compare.torch_step(args.case, netc.compile(spec), batch, torch)
        threads = torch.get_num_threads()
    for _ in range(args.warmup):
        step()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
    took = time.perf_counter() - start
    print(f"{args.framework} {args.case}, {threads} thread{'s' if threads > 1 else ''}: {steps} "
          f"steps in {took:.2f} s, {1e3 * took / steps:.2f} ms a step on average")


if __name__ == "__main__":
    main()
