"""`netc bench`: time per layer, forward and backward (like `caffe time`), and the step rate."""
from __future__ import annotations

import statistics
import time

import numpy as np

from .gradcheck import random_targets
from .model import Model


def step_inputs(model, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + model.net.input_shape).astype(model.dtype)
    return x, random_targets(model, model.loss_name(), batch, rng)


def bench(spec, batch=64, iters=20, warmup=3, seed=0, device="cpu"):
    """Median seconds per node (forward, backward, with the node's multiply-adds for the batch)
    and per whole step (loss and all gradients), on a backend ("cpu", "cuda")."""
    model = Model(spec, backend=device, seed=seed)
    x, y = step_inputs(model, batch, seed)
    for _ in range(warmup):  # compiles the kernels (once; Numba caches them on disk)
        model.loss_and_grads(x, y)
    steps, fw, bw = [], {}, {}
    for _ in range(iters):
        f, b = {}, {}
        model.device.synchronize()
        t0 = time.perf_counter()
        model.loss_and_grads(x, y, clock=(f, b))
        model.device.synchronize()
        steps.append(time.perf_counter() - t0)
        for name, t in f.items():
            fw.setdefault(name, []).append(t)
        for name, t in b.items():
            bw.setdefault(name, []).append(t)
    layers = [(n.name, n.kind, model.algorithm(n.name, batch),
               statistics.median(fw.get(n.name, [0.0])), statistics.median(bw.get(n.name, [0.0])),
               n.macs * batch) for n in model.net.nodes]
    return {"batch": batch, "iters": iters, "step": statistics.median(steps), "layers": layers,
            **model.describe()}


def format_bench(result, name) -> str:
    threads = result.get("threads", 1)
    quota = result.get("CPU quota")
    notes = [result.get("threading")] + ([f"a CPU quota of {quota:g} CPU{'s' if quota != 1 else ''}"]
                                         if quota is not None else [])
    notes = ", ".join(n for n in notes if n)
    where = result.get("GPU") or (f"{threads} thread{'s' if threads > 1 else ''}"
                                  + (f" ({notes})" if notes else ""))
    # columns as wide as their longest entry (nested blocks' names, "winograd F4", "im2col 3x5")
    wl = max([28] + [len(row[0]) for row in result["layers"]])
    wh = max([9] + [len(row[2]) for row in result["layers"]])
    lines = [f"{name}: batch {result['batch']}, median of {result['iters']} steps, {where}",
             f"GEMM: {result['GEMM']}",
             f"{'layer':<{wl}} {'kind':<8} {'runs as':<{wh}} {'forward ms':>11} {'backward ms':>12} "
             f"{'forward GFLOP/s':>16}"]
    for layer, kind, how, f, b, macs in result["layers"]:
        rate = f"{2 * macs / f / 1e9:>16.1f}" if macs and f > 0 else f"{'-':>16}"
        lines.append(f"{layer:<{wl}} {kind:<8} {how:<{wh}} {f * 1e3:>11.3f} {b * 1e3:>12.3f} "
                     f"{rate}")
    step = result["step"]
    lines.append(f"step (forward + loss + backward): {step * 1e3:.2f} ms, "
                 f"{result['batch'] / step:,.0f} samples/s")
    return "\n".join(lines)
