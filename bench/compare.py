"""netc against PyTorch (CPU): one training step's forward + cross-entropy + all gradients.

    python bench/compare.py [--repeats 30] [--only lenet5-64,...]

Both run the same architecture with the same thread count, interleaved in one process: blocks of
--block steps of netc, then of PyTorch, and so on, so that both see the same machine state while
each block measures a steady state: both run on OpenMP threads (netc through Numba, with the
system's libgomp; PyTorch with the one in its wheel), which spin for a while after their calls and
slow the first steps that follow, whoever runs them. Prints the median
milliseconds per step, the ratio (PyTorch time / netc time: above 1 means netc is faster) and the
target.
Needs `pip install torch` (a CPU build).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LENET, SMALL_VGG, MLP = (os.path.join(HERE, f) for f in ("lenet5_relu.net", "small_vgg.net", "mlp.net"))

# name, spec, batch, target speed-up over PyTorch
CASES = [("lenet5-1", LENET, 1, 2.0), ("lenet5-64", LENET, 64, 2.0), ("lenet5-256", LENET, 256, 2.0),
         ("small-vgg-64", SMALL_VGG, 64, 1.0), ("mlp-64", MLP, 64, 1.5), ("mlp-256", MLP, 256, 1.5)]


def torch_model(torch, name):
    nn = torch.nn
    if name.startswith("lenet5"):
        return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(),
                             nn.Flatten(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if name.startswith("small-vgg"):
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10))
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def measure(name, spec, batch, repeats, torch, block=5):
    import netc
    model = netc.Model(spec, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + model.net.input_shape).astype(np.float32)
    y = rng.integers(0, 10, batch)
    tmodel = torch_model(torch, name)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def netc_step():
        model.loss_and_grads(x, y)

    def torch_step():
        tmodel.zero_grad(set_to_none=True)
        loss_fn(tmodel(tx), ty).backward()

    for _ in range(3):  # warm-up: Numba compiles (or loads its cache), PyTorch allocates
        netc_step()
        torch_step()
    ours, theirs = [], []
    for _ in range(max(1, repeats // block)):
        for step, times in ((netc_step, ours), (torch_step, theirs)):
            for _ in range(block):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
    return statistics.median(ours), statistics.median(theirs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30, help="steps of each, in total")
    ap.add_argument("--block", type=int, default=5, help="steps in a row before switching")
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("bench/compare.py needs PyTorch: pip install torch (a CPU build)")
    from netc.runtime.backends.cpu import blas, jit
    torch.set_num_threads(jit.num_threads())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"threads {jit.num_threads()}")
    print(f"netc's GEMM: {blas.describe()}")
    print(f"{'case':<14} {'netc ms':>9} {'torch ms':>9} {'speed-up':>9} {'target':>7}")
    for name, spec, batch, target in CASES:
        if args.only and name not in args.only.split(","):
            continue
        ours, theirs = measure(name, spec, batch, args.repeats, torch, args.block)
        ratio = theirs / ours
        print(f"{name:<14} {ours * 1e3:>9.2f} {theirs * 1e3:>9.2f} {ratio:>8.2f}x {target:>6.1f}x"
              + ("" if ratio >= target else "  (below target)"))


if __name__ == "__main__":
    main()
