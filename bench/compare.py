"""netc against PyTorch: one training step's forward + cross-entropy + all gradients.

    python bench/compare.py [--repeats 30] [--only lenet5-64,...]
    python bench/compare.py --device cuda       (float32, PyTorch's CUDA build, the GPU cases)

Both run the same architecture with the same thread count, interleaved in one process: blocks of
--block steps of netc, then of PyTorch, and so on, so that both see the same machine state while
each block measures a steady state: both run on OpenMP threads (netc through Numba, with the
system's libgomp; PyTorch with the one in its wheel), which spin for a while after their calls and
slow the first steps that follow, whoever runs them. Prints the median
milliseconds per step, the ratio (PyTorch time / netc time: above 1 means netc is faster) and the
target.
On the GPU both get their batch already in device memory, and each step is timed from a
synchronized start to a synchronized end.
Needs `pip install torch` (a CPU build, or a CUDA build for --device cuda).
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
LENET, SMALL_VGG, MLP, RESNET = (os.path.join(HERE, f) for f in (
    "lenet5_relu.net", "small_vgg.net", "mlp.net", "resnet18_32.net"))
# segmentation: transposed convolutions and skips (U-Net), bilinear upsampling (FCN), a class
# per pixel
UNET, FCN = (os.path.join(HERE, "..", "specs", f) for f in ("unet_small.net", "fcn_shapes.net"))
# group normalization for BN, as specs/resnet18_gn.net
with open(RESNET) as f:
    RESNET_GN = f.read().replace("- BN", "- GN 32")

# recurrent: the LSTM(64 -> 128) over 32 steps, and a GRU of the same size (a class per
# sequence from the last step's hidden state)
LSTM = "input seq 32x64\nLSTM 128 - OUT 10\ntrain loss=cross_entropy"
GRU = "input seq 32x64\nGRU 128 - OUT 10\ntrain loss=cross_entropy"

# name, spec, batch, target speed-up over PyTorch
CASES = [("lenet5-1", LENET, 1, 2.0), ("lenet5-64", LENET, 64, 2.0), ("lenet5-256", LENET, 256, 2.0),
         ("small-vgg-64", SMALL_VGG, 64, 1.0), ("mlp-64", MLP, 64, 1.5), ("mlp-256", MLP, 256, 1.5),
         ("unet-small-32", UNET, 32, 1.0), ("fcn-shapes-32", FCN, 32, 1.0),
         ("resnet18-gn-16", RESNET_GN, 16, 1.0), ("lstm-64", LSTM, 64, 1.0), ("gru-64", GRU, 64, 1.0)]
# on the GPU, the targets are the least speed-up allowed: at most 2x (0.5) or 1.5x (0.67) PyTorch's
# step time
CUDA_CASES = [("lenet5-256", LENET, 256, 0.5), ("small-vgg-256", SMALL_VGG, 256, 1 / 1.5),
              ("mlp-1024", MLP, 1024, 0.5), ("resnet18-128", RESNET, 128, 1 / 1.5)]


def torch_model(torch, name):
    nn = torch.nn
    if name.startswith(("lstm", "gru")):
        return _Recurrent(torch, nn.LSTM if name.startswith("lstm") else nn.GRU)
    if name.startswith("lenet5"):
        return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(),
                             nn.Flatten(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if name.startswith("small-vgg"):
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10))
    if name.startswith("resnet18-gn"):
        return resnet18(torch, lambda c: nn.GroupNorm(32, c))
    if name.startswith("resnet18"):
        return resnet18(torch)
    if name.startswith("unet"):
        return unet_small(torch)
    if name.startswith("fcn"):
        return nn.Sequential(*_conv_relu(nn, 3, 16), *_conv_relu(nn, 16, 16), nn.MaxPool2d(2),
                             *_conv_relu(nn, 16, 32), *_conv_relu(nn, 32, 32), nn.MaxPool2d(2),
                             *_conv_relu(nn, 32, 64), *_conv_relu(nn, 64, 64), nn.Conv2d(64, 4, 1),
                             nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False))
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def resnet18(torch, norm=None):
    """torchvision's resnet18 with 10 classes, written out (no torchvision needed); `norm`: its
    norm_layer (BatchNorm2d)."""
    nn = torch.nn
    norm = norm or nn.BatchNorm2d

    class Basic(nn.Module):
        def __init__(self, cin, c, s):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, c, 3, s, 1, bias=False), norm(c),
                                      nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1, bias=False), norm(c))
            self.short = (nn.Identity() if cin == c and s == 1 else
                          nn.Sequential(nn.Conv2d(cin, c, 1, s, bias=False), norm(c)))

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), norm(64), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for c, s in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        layers.append(Basic(cin, c, s))
        cin = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))


def _Recurrent(torch, cell):
    """A recurrent layer (64 -> 128, batch first) and a Linear on its last step's hidden state."""
    class Last(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.out = cell(64, 128, batch_first=True), torch.nn.Linear(128, 10)

        def forward(self, x):
            return self.out(self.rnn(x)[0][:, -1])
    return Last()


def _conv_relu(nn, cin, c):
    return [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU()]


def unet_small(torch):
    """specs/unet_small.net: three levels, CONCAT[ID | ...] skips, DECONV 2x2/2 on the way up."""
    nn = torch.nn

    class Skip(nn.Module):
        def __init__(self, *body):
            super().__init__()
            self.body = nn.Sequential(*body)

        def forward(self, x):
            return torch.cat([x, self.body(x)], 1)

    def down(cin, c):
        return _conv_relu(nn, cin, c) + _conv_relu(nn, c, c)

    def up(cin, c):
        return [nn.ConvTranspose2d(cin, c, 2, 2), nn.ReLU(), *_conv_relu(nn, c, c)]

    inner = Skip(nn.MaxPool2d(2), *down(32, 64), *up(64, 32))
    outer = Skip(nn.MaxPool2d(2), *down(16, 32), inner, *_conv_relu(nn, 64, 32), *up(32, 16))
    return nn.Sequential(*down(3, 16), outer, *_conv_relu(nn, 32, 16), nn.Conv2d(16, 4, 1))


def measure(name, spec, batch, repeats, torch, block=5, device="cpu"):
    import netc
    model = netc.Model(spec, backend=device, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + model.net.input_shape).astype(np.float32)
    out = model.net.output_shape  # a class per sample, or per pixel
    y = rng.integers(0, out[0], (batch,) + out[1:])
    tmodel = torch_model(torch, name)
    assert sum(p.numel() for p in tmodel.parameters()) == model.net.total_params, name
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    if device == "cuda":  # both find the batch in device memory
        tmodel, tx, ty = tmodel.cuda(), tx.cuda(), ty.cuda()
        x, y = model.device.from_host(x), model.device.from_host(y)

    def netc_step():
        model.loss_and_grads(x, y)
        model.device.synchronize()

    def torch_step():
        tmodel.zero_grad(set_to_none=True)
        loss_fn(tmodel(tx), ty).backward()
        if device == "cuda":
            torch.cuda.synchronize()

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
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("bench/compare.py needs PyTorch: pip install torch (a CPU build)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    if args.device == "cuda":
        import netc
        info = netc.Model("input 2\nFC 2", backend="cuda").describe()
        print(f"GPU: {info['GPU']}; netc's GEMM: {info['GEMM']}; PyTorch's GPU: "
              f"{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
        cases = CUDA_CASES
    else:
        from netc.runtime.backends.cpu import blas, jit
        torch.set_num_threads(jit.num_threads())
        print(f"threads {jit.num_threads()}; netc's GEMM: {blas.describe()}")
        cases = CASES
    print(f"{'case':<14} {'netc ms':>9} {'torch ms':>9} {'speed-up':>9} {'target':>7}")
    for name, spec, batch, target in cases:
        if args.only and name not in args.only.split(","):
            continue
        ours, theirs = measure(name, spec, batch, args.repeats, torch, args.block, args.device)
        ratio = theirs / ours
        print(f"{name:<14} {ours * 1e3:>9.2f} {theirs * 1e3:>9.2f} {ratio:>8.2f}x {target:>6.2f}x"
              + ("" if ratio >= target else "  (below target)"))


if __name__ == "__main__":
    main()
