"""FC (fully connected, flattens a 3-D input first), OUT (an FC with the output activation), FLATTEN."""
from __future__ import annotations

import math

import numpy as np

from ..registry import ACTIVATIONS, Bool, Choice, Int, LayerError, LayerKind, register
from .conv import fused_backward, fused_forward


@register
class FullyConnected(LayerKind):
    name = "FC"
    example = ("3x3x2", "FC 5 act=tanh")
    doc = "fully connected: `FC 4096`, `FC 84 act=tanh`; a C x H x W input is flattened first"
    keys = {
        "units": Int(doc="the number of units, an integer >= 1"),
        "bias": Bool(True),
        "act": Choice(ACTIVATIONS, "none"),
    }
    positional = {int: "units", str: "act"}

    def resolve(self, h, xs):
        if "units" not in h:
            raise LayerError(f"{self.name} needs the number of units", key="units",
                             hint=f"write it after the kind, e.g. `{self.name} 10`, or set a "
                                  f"default with `{self.name}: 10`")
        return h

    def shape(self, h, xs):
        return (h["units"],)

    def params(self, h, xs):
        p = {"weight": (h["units"], math.prod(xs[0]))}
        if h["bias"]:
            p["bias"] = (h["units"],)
        if h["act"] == "prelu":
            p["slope"] = (h["units"],)
        return p

    def macs(self, h, xs, y):
        return math.prod(xs[0]) * h["units"]

    def flops(self, h, xs, y):
        return h["units"] * (int(h["bias"]) + (h["act"] != "none"))

    def window(self, h, xs):
        return "global" if len(xs[0]) == 3 else None

    def label(self, h):
        return f"{self.name} {h['units']}" + (f" {h['act']}" if h["act"] != "none" else "")

    # ---- runtime ------------------------------------------------------------------------------
    def forward(self, h, p, xs, ctx):
        x = xs[0]
        x2 = x.reshape(x.shape[0], -1)
        z = np.empty((x2.shape[0], h["units"]), x.dtype)
        wt = p["weight"].T

        def work(lo, hi, t):
            np.matmul(x2[lo:hi], wt, out=z[lo:hi])

        ctx.split(x2.shape[0], work, cost=3 * x2.shape[1] * h["units"])
        if "bias" in p:
            z += p["bias"]
        y = fused_forward(h, p, z)
        return y, (x.shape, x2, z, y)

    def backward(self, h, p, cache, dy, ctx):
        return self.backward_linear(h, p, cache, fused_backward(h, p, cache[2], cache[3], dy), ctx)

    def backward_linear(self, h, p, cache, dz_grads, ctx):
        """The backward pass from dL/dz (a loss fused with the output activation starts here)."""
        xshape, x2, _, _ = cache
        dz, grads = dz_grads
        w = p["weight"]
        dx = np.empty(x2.shape, dz.dtype) if ctx.need_dx else None
        partial = {}

        def work(lo, hi, t):  # per-worker weight gradients, summed afterwards
            partial[t] = dz[lo:hi].T @ x2[lo:hi]
            if dx is not None:
                np.matmul(dz[lo:hi], w, out=dx[lo:hi])

        ctx.split(x2.shape[0], work, cost=3 * x2.shape[1] * h["units"])
        grads["weight"] = sum(partial.values())
        if "bias" in p:
            grads["bias"] = dz.sum(axis=0)
        return [None if dx is None else dx.reshape(xshape)], grads

    @staticmethod
    def logits(cache):
        return cache[2]


@register
class Output(FullyConnected):
    name = "OUT"
    example = ("6", "OUT 4 softmax")
    doc = "the output layer, an FC with the output activation: `OUT 10 softmax`"
    keys = {**FullyConnected.keys, "act": Choice(("softmax", "sigmoid", "none"), "none")}


@register
class Flatten(LayerKind):
    name = "FLATTEN"
    example = ("2x3x2", "FLATTEN")
    doc = "C x H x W -> C*H*W"

    def shape(self, h, xs):
        return (math.prod(xs[0]),)

    def flops(self, h, xs, y):
        return 0

    def window(self, h, xs):
        return "global" if len(xs[0]) == 3 else None

    def forward(self, h, p, xs, ctx):
        return xs[0].reshape(xs[0].shape[0], -1), xs[0].shape

    def backward(self, h, p, shape, dy, ctx):
        return [dy.reshape(shape)], {}
