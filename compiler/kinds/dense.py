"""FC (fully connected, flattens a 3-D input first), OUT (an FC with the output activation), FLATTEN."""
from __future__ import annotations

import math

import numpy as np

from ..jit import cpu_kernel, gemm, prange
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
    # Both passes are one parallel kernel each: the batch's rows are split between the threads
    # for z = x W^T + b and dx = dz W, the units for dW = dz^T x (so no partial sums to add).
    def forward(self, h, p, xs, ctx):
        x = xs[0]
        x2 = np.ascontiguousarray(x.reshape(x.shape[0], -1))
        z = np.empty((x2.shape[0], h["units"]), x.dtype)
        bias = p.get("bias", np.zeros(0, x.dtype))
        _linear_forward_cpu(x2, p["weight"], bias, ctx.workers, z)
        y = fused_forward(h, p, z)
        return y, (x.shape, x2, z, y)

    def backward(self, h, p, cache, dy, ctx):
        return self.backward_linear(h, p, cache, fused_backward(h, p, cache[2], cache[3], dy), ctx)

    def backward_linear(self, h, p, cache, dz_grads, ctx):
        """The backward pass from dL/dz (a loss fused with the output activation starts here)."""
        xshape, x2, _, _ = cache
        dz, grads = dz_grads
        dz = np.ascontiguousarray(dz)
        w = p["weight"]
        dx = ctx.buffer("dx", x2.shape if ctx.need_dx else (0, x2.shape[1]), dz.dtype)
        grads["weight"] = np.empty_like(w)
        _linear_backward_cpu(x2, w, dz, ctx.workers, grads["weight"], dx)
        if "bias" in p:
            grads["bias"] = dz.sum(axis=0)
        return [dx.reshape(xshape) if ctx.need_dx else None], grads

    @staticmethod
    def logits(cache):
        return cache[2]


@cpu_kernel(parallel=True)
def _linear_forward_cpu(x, w, bias, parts, z):
    """z = x w^T + bias (bias may be empty), split into `parts` by rows (samples) or, where there
    are more units than samples, by units: each part's GEMM packs the whole of the other operand,
    so the split goes along the larger one (an MLP's 64 x 784 x 256 layer: 79 us against 118)."""
    n, u = z.shape
    by_units = u > n
    for t in prange(parts):
        size = u if by_units else n
        lo, hi = size * t // parts, size * (t + 1) // parts
        if hi > lo:
            if by_units:
                gemm(False, True, 1.0, x, w[lo:hi], 0.0, z[:, lo:hi])
            else:
                gemm(False, True, 1.0, x[lo:hi], w, 0.0, z[lo:hi])
            if bias.size:
                rows, cols = (range(n), range(lo, hi)) if by_units else (range(lo, hi), range(u))
                for i in rows:
                    for j in cols:
                        z[i, j] += bias[j]


@cpu_kernel(parallel=True)
def _linear_backward_cpu(x, w, dz, parts, dw, dx):
    """dw = dz^T x (split by units) and, unless dx is empty, dx = dz w (split by rows, or by
    input features where there are more of them than samples, as in the forward pass)."""
    n, u = dz.shape
    k = w.shape[1]
    by_features = k > n
    for t in prange(parts):
        lo, hi = u * t // parts, u * (t + 1) // parts
        if hi > lo:
            gemm(True, False, 1.0, dz[:, lo:hi], x, 0.0, dw[lo:hi])
        if dx.shape[0]:
            size = k if by_features else n
            lo, hi = size * t // parts, size * (t + 1) // parts
            if hi > lo and by_features:
                gemm(False, False, 1.0, dz, w[:, lo:hi], 0.0, dx[:, lo:hi])
            elif hi > lo:
                gemm(False, False, 1.0, dz[lo:hi], w, 0.0, dx[lo:hi])


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
