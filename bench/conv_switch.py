"""One CONV layer timed forward + backward (the per-layer clock, its input gradient included) with
a setting of the CPU kernels switched between values, in rounds interleaved in one process: how
bench/RESULTS.md's AVX2 kernel choices were measured against each other.

    python bench/conv_switch.py "32x32x32 CONV 3x3 32 pad=1" conv.FORCE=winograd,direct
    python bench/conv_switch.py "32x32x64 CONV 3x3 64 pad=1" winograd.ROWS_MAX_CHANNELS=0,64
    python bench/conv_switch.py "32x32x16 CONV 3x3 16 pad=1" direct.WIDE=True,False

The setting is a module attribute read at every step (conv.FORCE, winograd.ROWS_MAX_CHANNELS,
direct.WIDE, dense.PAIRS ...); the algorithm rule's thresholds are worked out once per model, so
compare algorithms through conv.FORCE. Prints each value's median forward and backward ms.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import statistics

import numpy as np

import netc

_CPU = "netc.runtime.backends.cpu"
MODULES = {"conv": f"{_CPU}.conv", "winograd": f"{_CPU}.conv.winograd",
           "direct": f"{_CPU}.conv.direct", "im2col": f"{_CPU}.conv.im2col",
           "dense": f"{_CPU}.dense", "jit": f"{_CPU}.jit"}


def parse_setting(text, tool="conv_switch"):
    """'module.NAME=v1,v2' -> (module, name, [values]); values as Python literals where they are
    (0, 64, True, None), else strings (winograd). A setting the module does not have, or text
    not of that form, ends the program with a message from `tool` (this script or
    net_switch.py)."""
    target, _, values = text.partition("=")
    module, _, name = target.partition(".")
    if not values or not name or module not in MODULES:
        raise SystemExit(f"{tool}: '{text}': write module.NAME=value,value with module one of "
                         f"{', '.join(MODULES)}")
    found = importlib.import_module(MODULES[module])
    if not hasattr(found, name):
        raise SystemExit(f"{tool}: {found.__name__} has no setting {name}")

    def value(v):
        try:
            return ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return v
    return found, name, [value(v) for v in values.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("layer", help='"HxWxC CONV ...": the input and the layer, as a spec writes them')
    ap.add_argument("setting", help="module.NAME=value,value,...")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="timed steps a round and value")
    args = ap.parse_args(argv)
    module, name, values = parse_setting(args.setting)
    shape, _, layer = args.layer.partition(" ")
    try:
        model = netc.Model(f"input {shape}\n{layer} - GAP - OUT 10 softmax")
    except netc.NetcError as e:
        raise SystemExit(f"conv_switch: the layer '{args.layer}' (input, then the layer):\n{e}")
    node = model.net.nodes[1].name
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch,) + model.net.input_shape).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    old = getattr(module, name)
    times = {repr(v): [] for v in values}
    try:
        for _ in range(args.rounds):
            for v in values:
                setattr(module, name, v)
                for _ in range(2):
                    model.loss_and_grads(x, y, input_grad=True)
                fwd, bwd = {}, {}
                for _ in range(args.steps):
                    model.loss_and_grads(x, y, clock=(fwd, bwd), input_grad=True)
                times[repr(v)].append((fwd[node] / args.steps * 1e3, bwd[node] / args.steps * 1e3))
    finally:
        setattr(module, name, old)
    print(f"{args.layer}, batch {args.batch}: {node} forward + backward (input gradient included), "
          f"medians of {args.rounds} rounds of {args.steps} steps")
    for v, t in times.items():
        f, b = statistics.median(a for a, _ in t), statistics.median(b for _, b in t)
        print(f"  {name} = {v:>10}: forward {f:8.3f} ms  backward {b:8.3f} ms  both {f + b:8.3f}")


if __name__ == "__main__":
    main()
