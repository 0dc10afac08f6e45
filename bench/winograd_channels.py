"""Where Winograd F(2x2, 3x3) starts to pay on the CPU: one 3x3 CONV (C input channels, C filters,
pad 1, ReLU) timed forward + backward as Winograd and as im2col (conv.FORCE), interleaved in
rounds, at the sizes WINOGRAD_MIN_CHANNELS was chosen from. Prints the medians and im2col's time
over Winograd's (above 1: Winograd is faster).

    python bench/winograd_channels.py [--rounds 6] [--steps 30]
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

import netc
from netc.runtime.backends.cpu import conv, jit

# (channels, height = width, batch)
CASES = [(16, 8, 32), (16, 16, 32), (16, 32, 32), (16, 16, 128), (24, 16, 32), (32, 16, 32),
         (32, 8, 64)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=30, help="steps a round and algorithm")
    args = ap.parse_args()
    print(f"{jit.num_threads()} threads ({jit.threading_layer()}); ms: forward + backward of the CONV")
    rng = np.random.default_rng(0)
    for c, hw, batch in CASES:
        model = netc.Model(f"input {hw}x{hw}x{c}\nCONV 3x3 {c} pad=1 act=relu - GAP - OUT 10 softmax")
        x = rng.standard_normal((batch, c, hw, hw)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        ms = {"winograd": [], "im2col": []}
        for _ in range(args.rounds):
            for how, times in ms.items():
                conv.FORCE = how
                for _ in range(3):
                    model.loss_and_grads(x, y)
                fwd, bwd = {}, {}
                for _ in range(args.steps):
                    model.loss_and_grads(x, y, clock=(fwd, bwd))
                times.append((fwd["conv1"] + bwd["conv1"]) / args.steps * 1e3)
        conv.FORCE = None
        w, i = statistics.median(ms["winograd"]), statistics.median(ms["im2col"])
        print(f"C = F = {c:3d}, {hw:2d}x{hw:<2d} batch {batch:3d}: winograd {w:7.3f} ms, "
              f"im2col {i:7.3f} ms, im2col / winograd {i / w:.2f}")


if __name__ == "__main__":
    main()
