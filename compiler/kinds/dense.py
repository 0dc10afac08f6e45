"""FC (fully connected, flattens a 3-D input first), OUT (an FC with the output activation), FLATTEN."""
from __future__ import annotations

import math

from ..registry import ACTIVATIONS, Bool, Choice, Int, LayerError, LayerKind, register


@register
class FullyConnected(LayerKind):
    name = "FC"
    example = ("3x3x2", "FC 5 act=tanh")
    doc = "fully connected: `FC 4096`, `FC 84 act=tanh`; a C x H x W input is flattened first"
    color = "#fce5cd"
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

    def init_rule(self, short):
        return 0.25 if short == "slope" else super().init_rule(short)

    def regularized(self, h):
        return ("weight",)


@register
class Output(FullyConnected):
    name = "OUT"
    example = ("6", "OUT 4 softmax")
    doc = "the output layer, an FC with the output activation: `OUT 10 softmax`"
    color = "#f4cccc"
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
