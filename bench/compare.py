"""netc against PyTorch: one training step's forward + cross-entropy + all gradients.

    python bench/compare.py [--repeats 30] [--only lenet5-64,...] [--big] [--memory]
    python bench/compare.py --only resnet18-32-64,vgg11-64-16     (the big cases alone)
    python bench/compare.py --device cuda       (float32, PyTorch's CUDA build, the GPU cases)

Both run the same architecture (the script checks that their parameter counts agree) with the
same thread count, interleaved in one process: blocks of --block steps of netc, then of PyTorch,
and so on, so that both see the same machine state. Each block starts with untimed steps, at
least --settle of them (2) and --settle-ms milliseconds (200), so that it measures the steady state
of a training loop: PyTorch's OpenMP threads (the libgomp in its wheel) spin for about 10 ms after
each of its calls, and slowed netc's first steps after a switch by 20-70% (MLP at batch 256 on a
2-core AVX2 VM: 3.6, 3.5, 3.3, then 2.5 and 2.3 ms, against 2.3-2.4 ms with no PyTorch in
between; at batch 64, whose steps take 0.55 ms, two settling steps left most of the spin in the
timed ones: 0.97 ms a step, 0.60 after ten); the first step after any switch also finds the
caches holding the other framework's data. 20 ms were not always enough: on a 2-core Zen 4 VM
ResNet-18 with group norm at batch 16 (netc's step 31-39 ms alone) took 46-49 ms in about half
the runs with 20 ms of settling (0.92-0.97x PyTorch), 31-39 ms in three runs of three with 200. Prints the median milliseconds per step,
the ratio (PyTorch time / netc time: above 1 means netc is faster) and the target.

The big cases (ResNet-18 with the CIFAR stem on 32x32 at batch 64, VGG-11 on 64x64 at batch 16)
take a second or so a step on two cores, minutes in all: the default run leaves them out; --big
adds them, and --only names any case. Their peak training memory is measured by default: each
framework in a fresh child process (`--peak-rss CASE FRAMEWORK`) that builds the model, runs two
warm-up steps (Numba compiles or loads its cache there), resets the kernel's high-water mark of
resident memory, runs --memory-steps steps and reports the peak resident set during those steps,
above the process's RSS right after importing the framework (and absolute). --memory measures
it for every case run, --no-memory for none. netc's figure counts its loaded kernels, and on a
cold Numba cache the compiler's leftovers too: the timing run before it warms the cache, unless
runtime/ changes in between.
On the GPU both get their batch already in device memory, and each step is timed from a
synchronized start to a synchronized end.
Needs `pip install torch` (a CPU build, or a CUDA build for --device cuda).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LENET, SMALL_VGG, MLP, RESNET, VGG11 = (os.path.join(HERE, f) for f in (
    "lenet5_relu.net", "small_vgg.net", "mlp.net", "resnet18_32.net", "vgg11_64.net"))
DIGITS = os.path.join(HERE, "..", "specs", "digits.net")
# segmentation: transposed convolutions and skips (U-Net), bilinear upsampling (FCN), a class
# per pixel
UNET, FCN = (os.path.join(HERE, "..", "specs", f) for f in ("unet_small.net", "fcn_shapes.net"))
# the lecture's LeNet-5 (specs/lenet5.net): tanh, average pooling
LENET_TANH = os.path.join(HERE, "..", "specs", "lenet5.net")
with open(RESNET) as f:
    _RESNET_TEXT = f.read()
# group normalization for BN, as specs/resnet18_gn.net
RESNET_GN = _RESNET_TEXT.replace("- BN", "- GN 32")
# the CIFAR stem (He et al. 2016, section 4.2): a 3x3 convolution of 64, no max pool
_IMAGENET_STEM = "CONV 7x7/2 64 pad=same - BN - RELU - POOL max 3x3/2 pad=1 -"
assert _IMAGENET_STEM in _RESNET_TEXT, "bench/resnet18_32.net's stem changed: update compare.py"
RESNET_CIFAR = _RESNET_TEXT.replace(_IMAGENET_STEM, "CONV 3x3 64 - BN - RELU -")

# recurrent: the LSTM(64 -> 128) over 32 steps, and a GRU of the same size (a class per
# sequence from the last step's hidden state)
LSTM = "input seq 32x64\nLSTM 128 - OUT 10\ntrain loss=cross_entropy"
GRU = "input seq 32x64\nGRU 128 - OUT 10\ntrain loss=cross_entropy"

# name, spec, batch, target speed-up over PyTorch
CASES = [("lenet5-1", LENET, 1, 2.0), ("lenet5-64", LENET, 64, 3.0), ("lenet5-256", LENET, 256, 2.0),
         ("lenet5-tanh-64", LENET_TANH, 64, 1.0), ("small-vgg-64", SMALL_VGG, 64, 1.5),
         ("mlp-64", MLP, 64, 2.0), ("mlp-256", MLP, 256, 2.0),
         ("unet-small-32", UNET, 32, 1.0), ("fcn-shapes-32", FCN, 32, 1.0),
         ("resnet18-gn-16", RESNET_GN, 16, 1.0), ("lstm-64", LSTM, 64, 1.0), ("gru-64", GRU, 64, 1.0)]
# opt-in (--big or --only): ResNet-18 with the CIFAR stem, VGG-11 on 64x64 (bench/vgg11_64.net)
BIG_CASES = [("resnet18-32-64", RESNET_CIFAR, 64, 1.8), ("vgg11-64-16", VGG11, 16, 1.5)]
# on the GPU, the targets are the least speed-up allowed: at most 2x (0.5) or 1.5x (0.67) PyTorch's
# step time
CUDA_CASES = [("lenet5-256", LENET, 256, 0.5), ("small-vgg-256", SMALL_VGG, 256, 1 / 1.5),
              ("mlp-1024", MLP, 1024, 0.5), ("resnet18-128", RESNET, 128, 1 / 1.5)]
FRAMEWORKS = ("netc", "torch")


def torch_model(torch, name):
    nn = torch.nn
    if name.startswith(("lstm", "gru")):
        return _Recurrent(torch, nn.LSTM if name.startswith("lstm") else nn.GRU)
    if name.startswith("lenet5-tanh"):
        return nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5),
                             nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(16, 120, 5), nn.Tanh(),
                             nn.Flatten(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))
    if name.startswith("lenet5"):
        return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(),
                             nn.Flatten(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if name.startswith("small-vgg"):
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10))
    if name.startswith("vgg11-64"):
        return vgg11_64(torch)
    if name.startswith("digits"):  # specs/digits.net
        return nn.Sequential(*_conv_relu(nn, 1, 16), *_conv_relu(nn, 16, 16), nn.MaxPool2d(2),
                             *_conv_relu(nn, 16, 32), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.25),
                             nn.Linear(64, 10))
    if name.startswith("resnet18-gn"):
        return resnet18(torch, lambda c: nn.GroupNorm(32, c))
    if name.startswith("resnet18-32"):
        return resnet18(torch, cifar=True)
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


def resnet18(torch, norm=None, cifar=False):
    """torchvision's resnet18 with 10 classes, written out (no torchvision needed); `norm`: its
    norm_layer (BatchNorm2d); `cifar`: a 3x3 stem convolution and no max pool."""
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

    if cifar:
        layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), norm(64), nn.ReLU()]
    else:
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), norm(64), nn.ReLU(),
                  nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for c, s in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        layers.append(Basic(cin, c, s))
        cin = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))


def vgg11_64(torch):
    """bench/vgg11_64.net: torchvision's vgg11 convolutions, FC 512 - FC 512 - OUT 10."""
    nn = torch.nn
    layers, cin = [], 3
    for c in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if c == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += _conv_relu(nn, cin, c)
            cin = c
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(2 * 2 * 512, 512), nn.ReLU(),
                         nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


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


def netc_step(name, spec, batch, device="cpu"):
    """(model, step): netc's model for `spec` and a function that runs one training step on a
    fixed random batch."""
    import netc
    model = netc.Model(spec, backend=device, seed=0)
    x, y = _batch(model.net, batch)
    if device == "cuda":  # the batch in device memory
        x, y = model.device.from_host(x), model.device.from_host(y)

    def step():
        model.loss_and_grads(x, y)
        model.device.synchronize()
    return model, step


def torch_step(name, net, batch, torch, device="cpu"):
    """(model, step) for PyTorch's twin of `name`, on a batch of the shapes of `net` (netc's
    compiled network)."""
    x, y = _batch(net, batch)
    tmodel = torch_model(torch, name)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    if device == "cuda":
        tmodel, tx, ty = tmodel.cuda(), tx.cuda(), ty.cuda()

    def step():
        tmodel.zero_grad(set_to_none=True)
        loss_fn(tmodel(tx), ty).backward()
        if device == "cuda":
            torch.cuda.synchronize()
    return tmodel, step


def _batch(net, batch):
    """A fixed random batch for `net`: inputs, and a class per sample or per pixel."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + net.input_shape).astype(np.float32)
    out = net.output_shape
    return x, rng.integers(0, out[0], (batch,) + out[1:])


def check_parity(name, model, tmodel):
    ours, theirs = model.net.total_params, sum(p.numel() for p in tmodel.parameters())
    if ours != theirs:
        sys.exit(f"{name}: netc's model has {ours:,} parameters, PyTorch's twin {theirs:,}: "
                 "they are not the same network (fix torch_model() or the spec)")


def build(name, spec, batch, torch, device="cpu"):
    """The two steps of a case, after checking that both models have the same parameters."""
    model, ours = netc_step(name, spec, batch, device)
    tmodel, theirs = torch_step(name, model.net, batch, torch, device)
    check_parity(name, model, tmodel)
    return ours, theirs


def interleave(steps, repeats, block=5, warmup=3, settle=2, settle_s=0.0):
    """Median seconds of each step function, run in turns of untimed steps (at least `settle`
    of them and `settle_s` seconds) and `block` timed ones, after `warmup` steps of each (Numba
    compiles or loads its cache, PyTorch allocates)."""
    for _ in range(warmup):
        for step in steps:
            step()
    times, block = [[] for _ in steps], max(1, min(block, repeats))
    for _ in range(max(1, repeats // block)):
        for step, ts in zip(steps, times):
            start, done = time.perf_counter(), 0
            while done < settle or (settle_s > 0 and time.perf_counter() - start < settle_s):
                step()
                done += 1
            for _ in range(block):
                t = time.perf_counter()
                step()
                ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def measure(name, spec, batch, repeats, torch, block=5, device="cpu", settle=2, settle_s=0.0):
    """(netc seconds, PyTorch seconds): medians of one training step, interleaved."""
    return tuple(interleave(build(name, spec, batch, torch, device), repeats, block,
                            settle=settle, settle_s=settle_s))


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo on x86, lscpu where it has none (ARM), else platform."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def vector_width() -> str:
    """The widest SIMD the CPU flags announce: AVX-512, AVX2, AVX, SVE or NEON."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sve", "SVE"),
                        ("asimd", "NEON")):
        if flag in flags:
            return label
    return "NEON" if platform.machine() in ("arm64", "aarch64") else "unknown"


def describe_machine(torch, threads=None) -> list[str]:
    """The header lines: the CPU, the software, the threads (unless None) and what runs netc's
    GEMMs."""
    import numba
    from netc.runtime.backends.cpu import blas, jit
    jit.setup()
    cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "?")()
    lines = [f"machine: {cpu_model()} ({platform.machine()}, {vector_width()}), {os.cpu_count()} "
             f"cores, {_usable_cores()} usable; {platform.system()} "
             f"{platform.release()}",
             f"software: Python {platform.python_version()}, NumPy {np.__version__}, Numba "
             f"{numba.__version__}, torch {torch.__version__} (its CPU kernels: {cap})",
             f"netc's GEMM: {blas.describe()}"]
    if threads:
        lines.insert(2, f"threads: netc {threads} (Numba {numba.get_num_threads()}, "
                        f"{jit.threading_layer()} layer), PyTorch {torch.get_num_threads()}")
    emulated = [f"{k}={os.environ[k]}" for k in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES",
                                                 "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
                if os.environ.get(k)]
    if emulated:  # another CPU's code on this one (README: AVX2 on an AVX-512 host)
        lines.insert(1, "compiled for: " + ", ".join(emulated))
    return lines


def _usable_cores():
    from netc.runtime import cores
    return cores.usable()  # (the affinity's cores, at most the container's CPU quota)


def _rss_mib(field="VmRSS"):
    """This process's resident memory (VmRSS) or its high-water mark (VmHWM), in MiB; where there
    is no /proc (macOS), the high-water mark getrusage gives."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2 ** 20 if sys.platform == "darwin" else 1024)


def peak_rss(name, framework, threads, steps):
    """In a fresh process: a case's peak resident memory over `steps` training steps, after two
    warm-up steps, in MiB above the RSS after importing the framework (and the absolute peak)."""
    case = {c[0]: c for c in CASES + BIG_CASES}[name]
    if framework == "netc":
        from netc.runtime.backends.cpu import jit
        jit.setup()  # Numba, llvmlite and the BLAS loaded, as PyTorch's libraries on import
        base = _rss_mib()
        _, step = netc_step(name, case[1], case[2])
    else:
        import torch
        from netc.compiler import compile as compile_spec  # numba-free: the shapes only
        torch.set_num_threads(threads)
        base = _rss_mib()
        _, step = torch_step(name, compile_spec(case[1]), case[2], torch)
    for _ in range(2):
        step()
    try:  # reset the high-water mark (Linux >= 4.0), so that compilation does not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    for _ in range(steps):
        step()
    peak = _rss_mib("VmHWM")
    return {"above": peak - base, "peak": peak, "reset": reset}


def child_peak_rss(name, framework, threads, steps):
    """peak_rss() in a child process with `threads` threads: RSS is per process."""
    env = dict(os.environ, NETC_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak-rss", name, framework,
                          "--threads", str(threads), "--memory-steps", str(steps)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{name}: the {framework} memory run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=(
        "The default run leaves out the big cases (" + ", ".join(c[0] for c in BIG_CASES) +
        "): --big or --only adds them; their peak memory is measured unless --no-memory."))
    ap.add_argument("--repeats", type=int, default=30, help="steps of each, in total")
    ap.add_argument("--block", type=int, default=5, help="steps in a row before switching")
    ap.add_argument("--settle", type=int, default=2,
                    help="untimed steps at the start of each block, at least (0 and "
                         "--settle-ms 0: time them all)")
    ap.add_argument("--settle-ms", type=float, default=200.0,
                    help="untimed milliseconds at the start of each block, at least (the other "
                         "framework's threads spin for 10 ms or more after its last call)")
    ap.add_argument("--only", default="", help="comma-separated case names (big ones included)")
    ap.add_argument("--big", action="store_true", help="also run the big cases (minutes)")
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                    help="peak training RSS of each framework in its own process, for every case "
                         "run (default: the big cases only)")
    ap.add_argument("--memory-steps", type=int, default=3, help="steps measured for the peak RSS")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--peak-rss", nargs=2, metavar=("CASE", "FRAMEWORK"),
                    help="(internal) print one case's peak RSS for netc or torch as JSON")
    ap.add_argument("--threads", type=int, default=None, help="(with --peak-rss) the threads")
    args = ap.parse_args(argv)
    if args.peak_rss and args.peak_rss[1] not in FRAMEWORKS:
        ap.error(f"--peak-rss FRAMEWORK is one of {', '.join(FRAMEWORKS)}. "
                 f"Received: {args.peak_rss[1]!r}")
    return args


def _selected(args):
    """The cases to run: --only's (big ones and, on the GPU, the GPU's), else the default set."""
    pool = CUDA_CASES if args.device == "cuda" else CASES + BIG_CASES
    if not args.only:
        return CUDA_CASES if args.device == "cuda" else CASES + (BIG_CASES if args.big else [])
    names = args.only.split(",")
    unknown = [n for n in names if n not in {c[0] for c in pool}]
    if unknown:
        sys.exit(f"unknown case(s) {', '.join(unknown)}; the {args.device} cases: "
                 f"{', '.join(c[0] for c in pool)}")
    return [c for c in pool if c[0] in names]


def main(argv=None):
    args = _parse(argv)
    if args.peak_rss:
        from netc.runtime.backends.cpu import jit
        print(json.dumps(peak_rss(*args.peak_rss, args.threads or jit.num_threads(),
                                  args.memory_steps)))
        return
    try:
        import torch
    except ImportError:
        sys.exit("bench/compare.py needs PyTorch: pip install torch (a CPU build)")
    cases = _selected(args)
    if args.device == "cuda":
        import netc
        print(f"machine: {cpu_model()}; python {platform.python_version()}, numpy "
              f"{np.__version__}, torch {torch.__version__}")
        info = netc.Model("input 2\nFC 2", backend="cuda").describe()
        print(f"GPU: {info['GPU']}; netc's GEMM: {info['GEMM']}; PyTorch's GPU: "
              f"{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
        threads = None
    else:
        from netc.runtime.backends.cpu import jit
        threads = jit.num_threads()
        torch.set_num_threads(threads)
        print("\n".join(describe_machine(torch, threads)))
    memory = args.device == "cpu" and args.memory is not False
    print(f"{'case':<15} {'netc ms':>9} {'torch ms':>9} {'speed-up':>9} {'target':>7}"
          + (f" {'netc MiB':>9} {'torch MiB':>9} {'mem ratio':>9}" if memory else ""))
    for name, spec, batch, target in cases:
        ours, theirs = measure(name, spec, batch, args.repeats, torch, args.block, args.device,
                               args.settle, args.settle_ms / 1e3)
        ratio = theirs / ours
        line = f"{name:<15} {ours * 1e3:>9.2f} {theirs * 1e3:>9.2f} {ratio:>8.2f}x {target:>6.2f}x"
        if memory and (args.memory or (name, spec, batch, target) in BIG_CASES):
            mib = [child_peak_rss(name, fw, threads, args.memory_steps) for fw in FRAMEWORKS]
            line += (f" {mib[0]['above']:>9.0f} {mib[1]['above']:>9.0f} "
                     f"{mib[0]['above'] / mib[1]['above']:>8.2f}x"
                     f"  (peaks {mib[0]['peak']:.0f} / {mib[1]['peak']:.0f} MiB"
                     + ("" if mib[0]["reset"] and mib[1]["reset"] else ", warm-up included")
                     + ")")
        elif memory:
            line += f" {'-':>9} {'-':>9} {'-':>9}"
        print(line + ("" if ratio >= target else "  (below target)"))
    if memory:
        print("MiB: peak resident memory over training steps, above the RSS after importing the "
              "framework, each in its own process (peaks: absolute); mem ratio: netc / PyTorch")


if __name__ == "__main__":
    main()
