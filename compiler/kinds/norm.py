"""BN (batch normalization), LRN (local response normalization, AlexNet), and LN, IN and GN (layer,
instance and group normalization: one rule, normalizing each sample over groups of channels)."""
from __future__ import annotations

import math

import numpy as np

from ..registry import Float, Int, LayerError, LayerKind, register
from ..shapes import divisors


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

    def init_rule(self, short, h=None):
        """gamma and the running variance start at 1, beta and the running mean at 0."""
        return "ones" if short in ("weight", "running_var") else "zeros"

    def onnx(self, h, xs, g):
        """The inference form, with the running statistics."""
        return g.op("BatchNormalization", [g.x[0]] + [g.param(k) for k in (
            "weight", "bias", "running_mean", "running_var")], epsilon=h["eps"])


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

    def onnx(self, h, xs, g):
        """ONNX's LRN sums the window c - (size-1)//2 .. c + size//2, netc's (PyTorch's)
        c - size//2 .. c + (size-1)//2: the same for odd sizes. An even size is written out:
        the squares padded along the channels, averaged over `size` of them."""
        x, n = g.x[0], h["size"]
        if n % 2:
            return g.op("LRN", [x], size=n, alpha=h["alpha"], beta=h["beta"], bias=h["k"])
        sq = g.op("Unsqueeze", [g.op("Mul", [x, x]), g.const([1], hint="axes")])
        sq = g.op("Pad", [sq, g.const([0, 0, n // 2, 0, 0, 0, 0, (n - 1) // 2, 0, 0],
                                      hint="pads")])
        avg = g.op("Squeeze", [g.op("AveragePool", [sq], kernel_shape=[n, 1, 1]),
                               g.const([1], hint="axes")])
        scale = g.op("Add", [g.op("Mul", [avg, g.const(h["alpha"], "float32", "alpha")]),
                             g.const(h["k"], "float32", "k")])
        return g.op("Div", [x, g.op("Pow", [scale, g.const(h["beta"], "float32", "beta")])])


class _GroupNorm(LayerKind):
    """Normalization of each sample over groups of channels (and all their pixels), with a learned
    scale and shift per channel; no running statistics: the same in training and evaluation."""
    elementwise = True
    init_passthrough = True
    color = "#eeeeee"
    keys = {"eps": Float(1e-5, low=0.0)}
    positional = {float: "eps"}

    def groups(self, h, xs):
        """How many groups the channels (features) fall into."""
        raise NotImplementedError

    def params(self, h, xs):
        c = xs[0][0]
        return {"weight": (c,), "bias": (c,)}

    def flops(self, h, xs, y):
        return 4 * math.prod(y)  # subtract, scale, and the affine's multiply-add

    def init_rule(self, short, h=None):
        return "ones" if short == "weight" else "zeros"

    def onnx(self, h, xs, g):
        """IN: InstanceNormalization. LN on a vector: LayerNormalization. Otherwise the groups
        as ONNX's instances: (N, G, C/G*H*W) normalized, shaped back, then the affine per
        channel."""
        x, shape, groups = g.x[0], xs[0], self.groups(h, xs)
        if len(shape) == 1:
            return g.op("LayerNormalization", [x, g.param("weight"), g.param("bias")],
                        axis=-1, epsilon=h["eps"])
        if groups == shape[0]:
            return g.op("InstanceNormalization", [x, g.param("weight"), g.param("bias")],
                        epsilon=h["eps"])
        grouped = g.op("Reshape", [x, g.const([0, groups, -1], hint="groups")], aside=True)
        ones, zeros = (g.const(np.full(groups, v), "float32", hint) for v, hint in
                       ((1, "ones"), (0, "zeros")))
        normed = g.op("InstanceNormalization", [grouped, ones, zeros], epsilon=h["eps"])
        back = g.op("Reshape", [normed, g.op("Shape", [x])])
        scaled = g.op("Mul", [back, g.per_channel("weight", len(shape))])
        return g.op("Add", [scaled, g.per_channel("bias", len(shape))])


@register
class LayerNorm(_GroupNorm):
    name = "LN"
    example = ("3x3x4", "LN")
    doc = ("layer normalization: each sample over all its features (PyTorch's GroupNorm(1, C); "
           "LayerNorm(N) on a vector), scale and shift per channel")

    def groups(self, h, xs):
        return 1


@register
class InstanceNorm(_GroupNorm):
    name = "IN"
    example = ("3x3x4", "IN")
    doc = "instance normalization: each sample and channel over H x W, scale and shift per channel"
    spatial = True

    def groups(self, h, xs):
        return xs[0][0]


@register
class GroupNorm(_GroupNorm):
    name = "GN"
    example = ("3x3x4", "GN groups=2")
    doc = "group normalization: `GN groups=8` (default 32), each sample over groups of channels"
    keys = {**_GroupNorm.keys, "groups": Int(32)}
    positional = {float: "eps", int: "groups"}

    def resolve(self, h, xs):
        c, g = xs[0][0], h["groups"]
        if c % g:
            raise LayerError(f"GN with groups={g} needs a channel count divisible by {g}; received "
                             f"{c} channels", key="groups",
                             hint=f"choose groups among the divisors of {c}: {divisors(c)}")
        return h

    def groups(self, h, xs):
        return h["groups"]

    def label(self, h):
        return f"GN {h['groups']}"
