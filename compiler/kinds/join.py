"""The compiler's own kinds: INPUT, and the joins ADD (residual units) and CONCAT (inception,
dense blocks). They are not written in specs; RES[...], CONCAT[...] and DENSE[...] make them."""
from __future__ import annotations

import math

import numpy as np

from ..registry import ACTIVATIONS, Choice, LayerError, LayerKind, register
from .activation import act_backward, act_forward


@register
class Input(LayerKind):
    name = "INPUT"
    example = ("4", "FC 2")
    internal = True

    def flops(self, h, xs, y):
        return 0

    def forward(self, h, p, xs, ctx):
        return xs[0], None


@register
class Add(LayerKind):
    name = "ADD"
    example = ("4x4x3", "RES[CONV 3x3 3 pad=same - BN]")
    doc = "y = act(a + b): the join of a residual unit"
    internal = True
    join = True
    keys = {"act": Choice(ACTIVATIONS, "relu")}

    def resolve(self, h, xs):
        if any(x != xs[0] for x in xs):
            raise LayerError("the residual branch and its shortcut have different shapes: "
                             + " vs ".join("x".join(map(str, x)) for x in xs))
        return h

    def flops(self, h, xs, y):
        return math.prod(y) * (len(xs) - 1 + (h["act"] != "none"))

    def label(self, h):
        return "ADD" + (f" {h['act']}" if h["act"] != "none" else "")

    def forward(self, h, p, xs, ctx):
        z = xs[0] + xs[1]
        for x in xs[2:]:
            z = z + x
        y = act_forward(h["act"], z)
        return y, (z, y, len(xs))

    def backward(self, h, p, cache, dy, ctx):
        z, y, k = cache
        dz, _ = act_backward(h["act"], z, y, dy)
        return [dz] * k, {}


@register
class Concat(LayerKind):
    name = "CONCAT"
    example = ("4x4x2", "CONCAT[CONV 1x1 3 | POOL max 3x3/1 pad=1]")
    doc = "concatenation along channels (features)"
    internal = True
    join = True

    def resolve(self, h, xs):
        if len({len(x) for x in xs}) > 1 or len({tuple(x[1:]) for x in xs}) > 1:
            sizes = ", ".join("x".join(map(str, x)) for x in xs)
            raise LayerError(f"CONCAT needs branches of the same spatial size; received {sizes}",
                             hint="give every branch the same stride and padding "
                                  "(e.g. pad=same on each CONV and POOL)")
        return h

    def shape(self, h, xs):
        return (sum(x[0] for x in xs),) + tuple(xs[0][1:])

    def flops(self, h, xs, y):
        return 0

    def forward(self, h, p, xs, ctx):
        return np.concatenate(xs, axis=1), [x.shape[1] for x in xs]

    def backward(self, h, p, sizes, dy, ctx):
        return np.split(dy, np.cumsum(sizes)[:-1], axis=1), {}
