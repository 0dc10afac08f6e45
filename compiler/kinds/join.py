"""The compiler's own kinds: INPUT, and the joins ADD (residual units) and CONCAT (inception,
dense blocks). They are not written in specs; RES[...], CONCAT[...] and DENSE[...] make them."""
from __future__ import annotations

import math

from ..registry import ACTIVATIONS, Choice, LayerError, LayerKind, register


@register
class Input(LayerKind):
    name = "INPUT"
    internal = True

    def flops(self, h, xs, y):
        return 0


@register
class Add(LayerKind):
    name = "ADD"
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


@register
class Concat(LayerKind):
    name = "CONCAT"
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
