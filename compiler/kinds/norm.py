"""BN (batch normalization) and LRN (local response normalization, AlexNet)."""
from __future__ import annotations

import math

from ..registry import Float, Int, LayerKind, register


@register
class BatchNorm(LayerKind):
    name = "BN"
    example = ("3x3x4", "BN")
    doc = "batch normalization: 2*C trainable (gamma, beta) and 2*C running statistics"
    elementwise = True
    init_passthrough = True
    color = "#eeeeee"
    keys = {"eps": Float(1e-5, low=0.0), "momentum": Float(0.1, low=0.0, high=1.0 + 1e-12)}
    positional = {float: "eps"}

    def params(self, h, xs):
        c = xs[0][0]
        return {"weight": (c,), "bias": (c,)}

    def buffers(self, h, xs):
        c = xs[0][0]
        return {"running_mean": (c,), "running_var": (c,)}

    def flops(self, h, xs, y):
        return 2 * math.prod(y)

    def init_rule(self, short):
        """gamma and the running variance start at 1, beta and the running mean at 0."""
        return "ones" if short in ("weight", "running_var") else "zeros"


@register
class LocalResponseNorm(LayerKind):
    name = "LRN"
    example = ("3x3x6", "LRN 3 alpha=0.1")
    doc = "local response normalization across channels (AlexNet: size=5 alpha=1e-4 beta=0.75 k=2)"
    elementwise = True
    spatial = True
    keys = {"size": Int(5), "alpha": Float(1e-4), "beta": Float(0.75), "k": Float(2.0)}
    positional = {int: "size"}

    def flops(self, h, xs, y):
        return math.prod(y) * (h["size"] + 3)

    def label(self, h):
        return f"LRN {h['size']}"
