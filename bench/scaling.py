"""Data-parallel scaling (netc train --distributed): training steps per second of one process on
1 thread, one process on 2 threads, and 2 MPI ranks of 1 thread each (each on half the batch,
their gradients summed by one Allreduce), with the Allreduce's share of a rank's step.

    python bench/scaling.py                          # the zoo's small networks and ResNet-18 32x32
    python bench/scaling.py --only resnet18_32 --steps 5 --repeats 5
    python bench/scaling.py --model --rate 43e9 --link 1.25e9   # the model for the zoo's networks

A step is what `netc train` runs per batch: loss and gradients of the rank's shard, the group's
reduce_step (weighting, the in-place Allreduce of one flat float32 buffer, and its unpacking),
the optimizer's update; on random inputs of the network's shape. Needs pip install '.[mpi]'."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# (name, spec, global batch): the zoo's small networks at their train sections' batch, and
# ResNet-18 at 32x32 at the 128
NETWORKS = [("mlp", os.path.join(ROOT, "specs", "mlp.net"), 64),
            ("digits", os.path.join(ROOT, "specs", "digits.net"), 32),
            ("lenet5", os.path.join(ROOT, "specs", "lenet5.net"), 64),
            ("resnet18_32", os.path.join(HERE, "resnet18_32.net"), 128)]
# (label, ranks, threads each, reduce): the last, 2 ranks that skip the Allreduce (each updating
# from its own half batch), is the ceiling this machine's two cores give two processes
SETUPS = [("1 rank x 1 thread", 1, 1, True), ("1 rank x 2 threads", 1, 2, True),
          ("2 ranks x 1 thread", 2, 1, True), ("2 ranks, no Allreduce", 2, 1, False)]


# ---- one process (a rank, under mpiexec) --------------------------------------------------------
def worker(spec, batch, steps, warmup, reduce_grads=True):
    """Time `steps` training steps after `warmup`; rank 0 prints the medians as JSON."""
    from netc.runtime import distributed, optim
    from netc.runtime.bench import step_inputs
    from netc.runtime.model import Model
    group = distributed.connect() if distributed.launched()[1] > 1 else distributed.SOLO
    model = Model(spec, seed=0)
    x, y = step_inputs(model, batch // group.size, seed=group.rank)
    opt = optim.optimizer("momentum", model.params, lr=1e-3)
    step, reduce = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss, grads = model.loss_and_grads(x, y)
        t1 = time.perf_counter()
        if reduce_grads:
            grads, loss, _, _ = group.reduce_step(grads, model.device, 1 / group.size, loss,
                                                  None, False)
        t2 = time.perf_counter()
        opt.step(grads)
        if i >= warmup:
            step.append(time.perf_counter() - t0)
            reduce.append(t2 - t1)
    alone = allreduce_alone(group, grads, model.device) if group.size > 1 and reduce_grads \
        else 0.0
    if group.lead:
        print(json.dumps({"step": statistics.median(step), "reduce": statistics.median(reduce),
                          "alone": alone,
                          "params": sum(int(p.size) for p in model.params.values())}))


def allreduce_alone(group, grads, device, repeats=7):
    """The median reduce_step with the ranks in step (a Barrier first): the communication
    without the wait for a slower rank that a training step's figure includes."""
    times = []
    for _ in range(repeats):
        group.comm.Barrier()
        t0 = time.perf_counter()
        group.reduce_step(grads, device, 1.0, 0.0, None, False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---- the driver ---------------------------------------------------------------------------------
def run(spec, batch, ranks, threads, reduce_grads, steps, warmup):
    """One setup's medians, from a fresh process (or `ranks` of them under mpiexec)."""
    env = {**os.environ, "NETC_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", spec, "--batch", str(batch), "--steps",
           str(steps), "--warmup", str(warmup)] + ([] if reduce_grads else ["--no-reduce"])
    if ranks > 1:
        cmd = [mpiexec(), "-n", str(ranks), *cmd]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def machine() -> str:
    """The CPU's model, its widest vector instructions, the cores and the load now."""
    model, flags = platform.processor() or "?", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = value
    except OSError:
        pass
    simd = "AVX-512" if "avx512f" in flags.split() else "AVX2" if "avx2" in flags.split() else "?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model} ({simd}), {os.cpu_count()} cores, load {load:.2f}"


def measure(spec, batch, steps, warmup, repeats):
    """[(label, medians)] per setup: each setup's figures the median over `repeats` runs, the
    setups taking turns (this machine's speed drifts over minutes)."""
    runs = {label: [] for label, _, _, _ in SETUPS}
    for _ in range(repeats):
        for label, k, t, reduce_grads in SETUPS:
            runs[label].append(run(spec, batch, k, t, reduce_grads, steps, warmup))
    return [(label, {key: statistics.median(r[key] for r in rs) for key in rs[0]})
            for label, rs in runs.items()]


def table(name, batch, results):
    """One network's lines: steps/s per setup, the speed-up over 1 thread, the reduce share."""
    base = 1 / results[0][1]["step"]
    params = int(results[0][1]["params"])
    lines = [f"{name}: batch {batch}, {params:,} params ({4 * params / 2 ** 20:.2f} MiB of "
             f"float32 gradients per step)"]
    for label, r in results:
        rate = 1 / r["step"]
        share = f", reduce {100 * r['reduce'] / r['step']:.1f}% of the step " \
                f"({1e3 * r['reduce']:.2f} ms; {1e3 * r['alone']:.2f} ms in step)" \
            if label == "2 ranks x 1 thread" else ""
        lines.append(f"  {label:<20} {rate:9.2f} steps/s  x{rate / base:.2f}{share}")
    return "\n".join(lines)


ZOO = ["mlp", "digits", "lenet5", "alexnet", "vgg16", "resnet18", "resnet50"]


def model_table(rate, link, shm):
    """The model of a step on K ranks: compute 3 x MACs per sample (forward, and backward's two
    products) at `rate` multiply-adds/s per rank, plus one ring Allreduce of 4 bytes per
    parameter, 2(K-1)/K of them through each rank's link of `link` bytes/s (K large); `shm`:
    the Allreduce's bytes/s between 2 ranks on one host, as measured. n10: the samples per rank
    per step above which the Allreduce over the link is under 10% of the step."""
    from netc.compiler import compile as compile_spec
    lines = [f"{'network':<12} {'params':>12} {'grad MiB':>9} {'MMAC/sample':>12} "
             f"{'ms/sample':>10} {'Allreduce ms':>13} {'2 ranks shm':>12} {'n10':>6}"]
    specs = [(n, os.path.join(ROOT, "specs", n + ".net")) for n in ZOO]
    specs.insert(3, ("resnet18_32", os.path.join(HERE, "resnet18_32.net")))
    for name, path in specs:
        net = compile_spec(path)
        grad = 4 * net.total_params
        per_sample = 3 * net.total_macs / rate
        ring = 2 * grad / link
        lines.append(f"{name:<12} {net.total_params:>12,} {grad / 2 ** 20:>9.2f} "
                     f"{net.total_macs / 1e6:>12.2f} {1e3 * per_sample:>10.3f} {1e3 * ring:>13.2f} "
                     f"{1e3 * grad / shm:>12.2f} {9 * ring / per_sample:>6.0f}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated: " + ", ".join(n for n, _, _ in NETWORKS))
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30; 5 for "
                   "ResNet-18)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="runs of each setup, in turns "
                   "(default 3; medians)")
    p.add_argument("--model", action="store_true", help="print the scaling model's table")
    p.add_argument("--rate", type=float, default=43e9, help="multiply-adds/s of one rank "
                   "(default 43e9: one core here, from ResNet-18 32x32's step at 3.05/s)")
    p.add_argument("--link", type=float, default=1.25e9, help="bytes/s of a rank's link "
                   "(default 1.25e9: 10 Gb/s Ethernet)")
    p.add_argument("--shm", type=float, default=2.1e9, help="reduce_step bytes/s of 2 ranks "
                   "on one host (default 2.1e9: ResNet-18's 44.7 MB in 21 ms here)")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--no-reduce", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model:
        return print(model_table(args.rate, args.link, args.shm))
    if args.worker:
        return worker(args.worker, args.batch, args.steps or 30, args.warmup, not args.no_reduce)
    chosen = args.only.split(",") if args.only else [n for n, _, _ in NETWORKS]
    print(machine(), flush=True)
    for name, spec, batch in NETWORKS:
        if name in chosen:
            steps = args.steps or (5 if name.startswith("resnet") else 30)
            results = measure(spec, batch, steps, args.warmup, args.repeats)
            print(table(name, batch, results), flush=True)
    print(f"after: {machine()}")


if __name__ == "__main__":
    main()
