"""A whole network's training step with a setting of the CPU kernels switched between values, one
model per value, their steps interleaved in one process (so that the machine's drift touches
each value alike): how bench/RESULTS.md's whole-network A/Bs were measured.

    python bench/net_switch.py resnet18-32 conv.WINOGRAD_TILE=2,None --batch 64
    python bench/net_switch.py vgg11-64 conv.WINOGRAD_TILE=2,None --batch 16
    python bench/net_switch.py bench/small_vgg.net conv.CUT_TAPS=False,True

The network: a case of bench/compare.py (its name without the batch: lenet5, small-vgg, mlp,
resnet18-32, resnet18-gn, vgg11-64, ...) or a .net file. The setting as bench/conv_switch.py takes
it (module.NAME=value,...; None is the module's own rule where the setting forces one). Prints
each value's median step and its steps in order.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402 - the cases' specs
from conv_switch import parse_setting  # noqa: E402


def network(name, tool="net_switch"):
    """The spec text or path of a compare.py case (its name up to the batch) or a .net file; a
    name it does not know, or a file that is not there, ends the program with a message from
    `tool` (this script or kernel_profile.py)."""
    if name.endswith(".net"):
        if not os.path.isfile(name):
            raise SystemExit(f"{tool}: no such file '{name}'")
        return name
    cases = {case.rsplit("-", 1)[0]: spec for case, spec, _, _ in compare.CASES + compare.BIG_CASES}
    if name not in cases:
        raise SystemExit(f"{tool}: no case '{name}'; one of {', '.join(sorted(cases))}, "
                         "or a .net file")
    return cases[name]


def build_step(name, spec, batch, tool="net_switch"):
    """compare.netc_step's (model, step), a spec netc refuses ending the program with netc's
    message from `tool`."""
    import netc
    try:
        return compare.netc_step(name, spec, batch)
    except netc.NetcError as e:
        raise SystemExit(f"{tool}: {name}:\n{e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("network", help="a bench/compare.py case (without the batch) or a .net file")
    ap.add_argument("setting", help="module.NAME=value,value,...")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7, help="timed steps a value")
    args = ap.parse_args(argv)
    module, name, values = parse_setting(args.setting, "net_switch")
    spec = network(args.network)
    old = getattr(module, name)
    steps, times = {}, {repr(v): [] for v in values}
    try:
        for v in values:  # a model each: workspaces and plans are worked out per model
            setattr(module, name, v)
            _, steps[repr(v)] = build_step(args.network, spec, args.batch)
            steps[repr(v)]()
        for r in range(args.rounds):
            for v in (values if r % 2 == 0 else values[::-1]):
                setattr(module, name, v)
                steps[repr(v)]()  # settles after the other value's step
                t = time.perf_counter()
                steps[repr(v)]()
                times[repr(v)].append(time.perf_counter() - t)
    finally:
        setattr(module, name, old)
    print(f"{args.network}, batch {args.batch}: a training step, {args.rounds} timed a value, "
          "interleaved")
    for v, t in times.items():
        print(f"  {name} = {v:>8}: median {statistics.median(t) * 1e3:9.2f} ms  "
              f"({', '.join(f'{s * 1e3:.0f}' for s in t)})")


if __name__ == "__main__":
    main()
