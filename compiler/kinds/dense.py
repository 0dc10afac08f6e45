"""FC (fully connected, flattens a 3-D input first), OUT (an FC with the output activation), FLATTEN.

On a sequence (T x D) FC and OUT apply per step, as a Linear on the last axis: the same weights
(units, D) at every step, T x units out (OUT's softmax per step)."""
from __future__ import annotations

import math

from ..registry import ACTIVATIONS, Bool, Choice, Int, LayerError, LayerKind, register


@register
class FullyConnected(LayerKind):
    name = "FC"
    example = ("3x3x2", "FC 5 act=tanh")
    doc = ("fully connected: `FC 4096`, `FC 84 act=tanh`; a C x H x W input is flattened first, "
           "a sequence (T x D) takes it per step")
    color = "#fce5cd"
    on_sequences = True
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
        return (xs[0][0], h["units"]) if len(xs[0]) == 2 else (h["units"],)

    def params(self, h, xs):
        p = {"weight": (h["units"], xs[0][1] if len(xs[0]) == 2 else math.prod(xs[0]))}
        if h["bias"]:
            p["bias"] = (h["units"],)
        if h["act"] == "prelu":
            p["slope"] = (h["units"],)
        return p

    def macs(self, h, xs, y):
        return math.prod(xs[0]) * h["units"]

    def flops(self, h, xs, y):
        return math.prod(y) * (int(h["bias"]) + (h["act"] != "none"))

    def window(self, h, xs):
        return "global" if len(xs[0]) == 3 else None

    def label(self, h):
        return f"{self.name} {h['units']}" + (f" {h['act']}" if h["act"] != "none" else "")

    def init_rule(self, short, h=None):
        return 0.25 if short == "slope" else super().init_rule(short, h)

    def regularized(self, h):
        return ("weight",)

    def onnx(self, h, xs, g):
        """Gemm with the weight transposed (an image flattened first); on a sequence, per step:
        MatMul by W^T and the bias added."""
        x, slope = g.x[0], (g.param("slope") if h["act"] == "prelu" else None)
        if len(xs[0]) == 2:
            y = g.op("MatMul", [x, g.param("weight", g.arrays[f"{g.layer}.weight"].T)])
            if h["bias"]:
                y = g.op("Add", [y, g.param("bias")])
        else:
            if len(xs[0]) == 3:
                x = g.op("Flatten", [x], axis=1, aside=True)
            y = g.op("Gemm", [x, g.param("weight")] + ([g.param("bias")] if h["bias"] else []),
                     transB=1)
        return g.act(y, h["act"], slope=slope)


@register
class Output(FullyConnected):
    """The output layer. With per=pixel, on a C x H x W input, the same FC runs at every pixel
    (a 1x1 convolution, weights (units, C)) and its activation over each pixel's units: a class
    per pixel, for segmentation."""
    name = "OUT"
    example = ("6", "OUT 4 softmax")
    doc = ("the output layer, an FC with the output activation: `OUT 10 softmax`; "
           "`OUT 4 softmax per=pixel` classifies every pixel of a C x H x W input")
    color = "#f4cccc"
    keys = {**FullyConnected.keys,
            "act": Choice(("softmax", "sigmoid", "none"), "none",
                          hint="OUT ends in softmax, sigmoid or none (its loss takes them "
                               "with it); for another output activation end with an FC "
                               "instead: `FC N act=tanh`"),
            "per": Choice(("sample", "pixel"), "sample")}

    def resolve(self, h, xs):
        h = super().resolve(h, xs)
        if h["per"] == "pixel" and len(xs[0]) != 3:
            raise LayerError(f"OUT per=pixel needs an image (C x H x W) input; received a vector "
                             f"of {xs[0][0]}", key="per",
                             hint="classify the whole sample with per=sample (the default), or "
                                  "keep the tensor an image up to OUT")
        return h

    def shape(self, h, xs):
        if h["per"] == "sample":
            return super().shape(h, xs)  # (units,), or (T, units) per step of a sequence
        return (h["units"],) + tuple(xs[0][1:])

    def params(self, h, xs):
        if h["per"] == "sample":
            return super().params(h, xs)
        return super().params(h, (xs[0][:1],))  # the same FC on each pixel's C values

    def macs(self, h, xs, y):
        return math.prod(y) * xs[0][0] if h["per"] == "pixel" else super().macs(h, xs, y)

    def flops(self, h, xs, y):
        return math.prod(y) * (int(h["bias"]) + (h["act"] != "none"))

    def window(self, h, xs):
        return ((1, 1), (1, 1)) if h["per"] == "pixel" else super().window(h, xs)

    def label(self, h):
        return super().label(h) + (" per pixel" if h["per"] == "pixel" else "")

    def onnx(self, h, xs, g):
        if h["per"] == "sample":
            return super().onnx(h, xs, g)
        w = g.arrays[f"{g.layer}.weight"]
        inputs = [g.x[0], g.param("weight", w.reshape(w.shape + (1, 1)))]
        y = g.op("Conv", inputs + ([g.param("bias")] if h["bias"] else []), kernel_shape=[1, 1])
        return g.act(y, h["act"], axis=1)

    def pixel_conv(self, h):
        """The CONV that OUT per=pixel is: 1x1, units filters; its weight is OUT's (units, C) as
        (units, C, 1, 1)."""
        return {"filters": h["units"], "kernel": (1, 1), "stride": (1, 1), "pad": (0, 0),
                "groups": 1, "bias": h["bias"], "act": h["act"], "round": "floor"}


@register
class Flatten(LayerKind):
    name = "FLATTEN"
    example = ("2x3x2", "FLATTEN")
    doc = "C x H x W -> C*H*W (T x D -> T*D)"
    on_sequences = True

    def shape(self, h, xs):
        return (math.prod(xs[0]),)

    def flops(self, h, xs, y):
        return 0

    def window(self, h, xs):
        return "global" if len(xs[0]) == 3 else None

    def onnx(self, h, xs, g):
        return g.op("Flatten", [g.x[0]], axis=1)
