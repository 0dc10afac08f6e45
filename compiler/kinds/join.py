"""The graph's plumbing: INPUT, the joins ADD (residual units) and CONCAT (inception, dense blocks),
which RES[...], CONCAT[...] and DENSE[...] make (not written in specs), and ID, the identity a
branch may be (`CONCAT[ID | ...]`)."""
from __future__ import annotations

import math

from ..registry import ACTIVATIONS, Choice, LayerError, LayerKind, register


@register
class Input(LayerKind):
    name = "INPUT"
    example = ("4", "FC 2")
    internal = True

    def flops(self, h, xs, y):
        return 0

    def label(self, h):
        return "input"


@register
class Add(LayerKind):
    name = "ADD"
    example = ("4x4x3", "RES[CONV 3x3 3 pad=same - BN]")
    doc = "y = act(a + b): the join of a residual unit"
    internal = True
    join = True
    color = "#fff2cc"
    keys = {"act": Choice(ACTIVATIONS, "relu")}

    def resolve(self, h, xs):
        if any(x != xs[0] for x in xs):
            raise LayerError("the residual branch and its shortcut have different shapes: "
                             + " vs ".join("x".join(map(str, x)) for x in xs))
        if h["act"] == "prelu":
            raise LayerError("a residual unit's act cannot be prelu: the join has no parameters "
                             "to learn a slope with", key="act",
                             hint="write RES[...] act=none - PRELU")
        return h

    def flops(self, h, xs, y):
        return math.prod(y) * (len(xs) - 1 + (h["act"] != "none"))

    def label(self, h):
        return "ADD" + (f" {h['act']}" if h["act"] != "none" else "")


@register
class Concat(LayerKind):
    name = "CONCAT"
    example = ("4x4x2", "CONCAT[CONV 1x1 3 | POOL max 3x3/1 pad=1]")
    doc = "concatenation along channels (features)"
    internal = True
    join = True
    color = "#fff2cc"

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


@register
class Identity(LayerKind):
    name = "ID"
    example = ("4x4x2", "CONCAT[ID | CONV 3x3 2 pad=1]")
    doc = "the identity: a branch that passes its input through (`CONCAT[ID | ...]`, a U-Net's skip)"
    elementwise = True

    def flops(self, h, xs, y):
        return 0
