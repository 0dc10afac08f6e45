"""The graph's plumbing: INPUT, the joins ADD (residual units), CONCAT (inception, dense blocks)
and MEAN (FractalNet's join), which RES[...], CONCAT[...], DENSE[...] and MEAN[...] make (not
written in specs), and ID, the identity a branch may be (`CONCAT[ID | ...]`)."""
from __future__ import annotations

import math

from ..registry import ACTIVATIONS, Choice, Float, LayerError, LayerKind, register

# the chance of dropping a path (RES's drop=, MEAN's drop_path=): below 1, or nothing survives
DROP = Float(0.0, low=0.0, high=1.0, doc="a probability in [0, 1)")


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
    doc = ("y = act(branch + shortcut): the join of a residual unit; with drop=p (stochastic "
           "depth) training drops the branch per sample with probability p and scales the kept "
           "ones by 1/(1 - p)")
    on_sequences = True
    internal = True
    join = True
    color = "#fff2cc"
    keys = {"act": Choice(ACTIVATIONS, "relu"), "drop": DROP}

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
        return ("ADD" + (f" {h['act']}" if h["act"] != "none" else "")
                + (f" drop {h['drop']:g}" if h["drop"] else ""))

    def onnx(self, h, xs, g):
        """Sum, then the act; stochastic depth is for training only."""
        return g.act(g.op("Sum", g.x), h["act"])


@register
class Mean(LayerKind):
    name = "MEAN"
    example = ("4x4x2", "MEAN[CONV 3x3 2 pad=1 - CONV 3x3 2 pad=1 | CONV 3x3 2 pad=1]")
    doc = ("the element-wise mean of parallel branches (FractalNet's join); with drop_path=p "
           "training drops each branch per sample with probability p, keeps at least one, and "
           "takes the mean of the survivors")
    on_sequences = True
    internal = True
    join = True
    color = "#fff2cc"
    keys = {"drop_path": DROP}

    def resolve(self, h, xs):
        if any(x != xs[0] for x in xs):
            raise LayerError("MEAN needs branches of one shape; received "
                             + " vs ".join("x".join(map(str, x[1:] + x[:1])) for x in xs),
                             hint="give every branch the same output channels, stride and "
                                  "padding (e.g. pad=same on each CONV)")
        return h

    def flops(self, h, xs, y):  # the sum, then one multiply by 1/k
        return math.prod(y) * len(xs)

    def label(self, h):
        return "MEAN" + (f" drop_path {h['drop_path']:g}" if h["drop_path"] else "")

    def onnx(self, h, xs, g):
        return g.op("Mean", g.x)


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

    def onnx(self, h, xs, g):
        return g.op("Concat", g.x, axis=1)

    def flops(self, h, xs, y):
        return 0


@register
class Identity(LayerKind):
    name = "ID"
    example = ("4x4x2", "CONCAT[ID | CONV 3x3 2 pad=1]")
    doc = "the identity: a branch that passes its input through (`CONCAT[ID | ...]`, a U-Net's skip)"
    on_sequences = True
    elementwise = True

    def flops(self, h, xs, y):
        return 0

    def onnx(self, h, xs, g):
        return g.op("Identity", g.x)
