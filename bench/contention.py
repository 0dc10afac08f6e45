"""netc against PyTorch on a busy machine: how much slower a training step gets while another
process keeps one core busy.

    python bench/contention.py [--repeats 30] [--threads 2,1] [--only digits-32,...] [--free]

For each thread count (a fresh child process per count, since netc reads NETC_NUM_THREADS once per
process; PyTorch gets torch.set_num_threads) and each case, the step of bench/compare.py (forward,
cross-entropy, all gradients) is timed for netc and PyTorch interleaved as there, first on the
quiet machine, then while a busy process started by the script spins a pure Python loop. The busy
process is pinned to the first core this process may use (os.sched_setaffinity), or left to the
scheduler with --free; it is killed at the end of each case (and at exit; it also stops by itself
once its parent is gone). Prints the median milliseconds per step, each framework's slowdown
(busy / quiet) and the ratio of the slowdowns (netc's / PyTorch's: at most 1 means netc suffers
no more than PyTorch).
Needs `pip install torch` (a CPU build).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import subprocess
import sys
import time

import compare

# name, spec, batch
CASES = [("digits-32", compare.DIGITS, 32), ("lenet5-64", compare.LENET, 64),
         ("mlp-64", compare.MLP, 64)]
# spins until its parent is gone, so that it cannot outlive the benchmark
BUSY_LOOP = ("import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n"
             "    for _ in range(1000000):\n        pass\n")


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def busy_core(pin=True):
    """A child process that keeps one core busy while the block runs; `pin`: on the first core
    this process may use."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    atexit.register(_stop, proc)
    try:
        if pin and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(proc.pid, {min(os.sched_getaffinity(0))})
        time.sleep(0.2)  # let it start spinning
        yield proc
    finally:
        _stop(proc)
        atexit.unregister(_stop)


def worker(threads, names, repeats, block, pin):
    """In the child with NETC_NUM_THREADS=threads: a JSON line of medians per case."""
    import torch
    torch.set_num_threads(threads)
    for name, spec, batch in CASES:
        if name not in names:
            continue
        steps = compare.build(name, spec, batch, torch)
        quiet = compare.interleave(steps, repeats, block, settle=0)
        with busy_core(pin):
            busy = compare.interleave(steps, repeats, block, warmup=1, settle=0)
        print(json.dumps({"case": name, "threads": threads, "quiet": quiet, "busy": busy}),
              flush=True)


def run_child(threads, args):
    """Runs worker() in a fresh process and yields its rows as they come."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(threads),
           "--only", ",".join(args.only), "--repeats", str(args.repeats),
           "--block", str(args.block)] + (["--free"] if args.free else [])
    env = dict(os.environ, NETC_NUM_THREADS=str(threads))
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if line.startswith("{"):
                yield json.loads(line)
            else:
                print(line, end="")
    if proc.returncode:
        sys.exit(f"the {threads}-thread run failed (exit {proc.returncode})")


def _row(r):
    (nq, tq), (nb, tb) = r["quiet"], r["busy"]
    ns, ts = nb / nq, tb / tq
    return (f"{r['case']:<10} {r['threads']:>7} {nq * 1e3:>8.2f} {nb * 1e3:>8.2f} {ns:>7.2f}x "
            f"{tq * 1e3:>8.2f} {tb * 1e3:>8.2f} {ts:>7.2f}x {ns / ts:>7.2f}"
            + ("  (netc slows more)" if ns > ts else ""))


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " "
                                 + __doc__.splitlines()[1])
    ap.add_argument("--repeats", type=int, default=30, help="steps of each, per setting")
    ap.add_argument("--block", type=int, default=5, help="steps in a row before switching")
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    ap.add_argument("--only", default=",".join(c[0] for c in CASES),
                    help="comma-separated case names (default: all)")
    ap.add_argument("--free", action="store_true",
                    help="leave the busy process unpinned (default: pinned to one core)")
    ap.add_argument("--worker", type=int, help="(internal) measure with this many threads")
    args = ap.parse_args(argv)
    args.only = args.only.split(",")
    known = [c[0] for c in CASES]
    unknown = [n for n in args.only if n not in known]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; the cases: {', '.join(known)}")
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads takes whole numbers separated by commas. Received: {args.threads!r}")
    return args


def main(argv=None):
    args = _parse(argv)
    try:
        import torch
    except ImportError:
        sys.exit("bench/contention.py needs PyTorch: pip install torch (a CPU build)")
    if args.worker:
        worker(args.worker, args.only, args.repeats, args.block, not args.free)
        return
    print("\n".join(compare.describe_machine(torch)))
    print(f"busy process: a Python loop, {'unpinned' if args.free else 'pinned to one core'}")
    print(f"{'case':<10} {'threads':>7} {'netc':>8} {'busy':>8} {'slower':>8} "
          f"{'torch':>8} {'busy':>8} {'slower':>8} {'ratio':>7}")
    for threads in args.threads:
        for row in run_child(threads, args):
            print(_row(row), flush=True)
    print("ms per step, quiet and busy; slower: busy / quiet; ratio: netc's slowdown / PyTorch's")


if __name__ == "__main__":
    main()
