"""Activations as layers: RELU, LEAKY, PRELU, ELU, SIGMOID, TANH, SOFTMAX, MAXOUT; and DROPOUT."""
from __future__ import annotations

import math

from ..registry import Bool, Choice, Float, Int, LayerError, LayerKind, register


class _Activation(LayerKind):
    """A layer that applies one of the activation words elementwise."""
    elementwise = True
    on_sequences = True
    act = "none"

    def act_of(self, h):
        return self.act

    def onnx(self, h, xs, g):
        if self.act == "prelu":
            return g.act(g.x[0], "prelu", slope=g.per_channel("weight", len(xs[0])))
        return g.act(g.x[0], self.act, h, axis=1 if h.get("per") == "pixel" else -1)


@register
class Relu(_Activation):
    name = "RELU"
    act = "relu"
    example = ("8", "RELU")
    doc = "max(0, x)"


@register
class Leaky(_Activation):
    name = "LEAKY"
    act = "leaky"
    example = ("8", "LEAKY 0.2")
    doc = "leaky ReLU: x if x > 0 else slope*x (slope 0.01 unless given)"
    keys = {"slope": Float(0.01)}
    positional = {float: "slope"}

    def label(self, h):
        return f"LEAKY {h['slope']:g}"


@register
class PRelu(_Activation):
    name = "PRELU"
    act = "prelu"
    on_sequences = False  # a slope per channel
    example = ("2x2x3", "PRELU")
    doc = "parametric ReLU: a learned slope per channel (shared=true: one slope)"
    keys = {"shared": Bool(False)}

    def params(self, h, xs):
        return {"weight": (1 if h["shared"] else xs[0][0],)}

    def init_rule(self, short, h=None):
        return 0.25


@register
class Elu(_Activation):
    name = "ELU"
    act = "elu"
    example = ("8", "ELU")
    doc = "x if x > 0 else alpha*(exp(x) - 1)"
    keys = {"alpha": Float(1.0)}
    positional = {float: "alpha"}


@register
class Sigmoid(_Activation):
    name = "SIGMOID"
    act = "sigmoid"
    example = ("8", "SIGMOID")
    doc = "1 / (1 + exp(-x))"


@register
class Tanh(_Activation):
    name = "TANH"
    act = "tanh"
    example = ("8", "TANH")
    doc = "tanh(x)"


@register
class Softmax(_Activation):
    name = "SOFTMAX"
    act = "softmax"
    on_sequences = False
    sequence_hint = "OUT K softmax, which takes a sequence per step"
    example = ("8", "SOFTMAX")
    doc = ("softmax over the features (a vector input), or with per=pixel over the channels of "
           "each pixel of a C x H x W input")
    keys = {"per": Choice(("sample", "pixel"), "sample")}

    def resolve(self, h, xs):
        if h["per"] == "sample" and len(xs[0]) != 1:
            raise LayerError("SOFTMAX needs a vector input; received "
                             + "x".join(map(str, xs[0][1:] + xs[0][:1])), key="per",
                             hint="put GAP or FLATTEN before it, or write SOFTMAX per=pixel for a "
                                  "softmax over each pixel's channels")
        if h["per"] == "pixel" and len(xs[0]) != 3:
            raise LayerError(f"SOFTMAX per=pixel needs an image (C x H x W) input; received a "
                             f"vector of {xs[0][0]}", key="per",
                             hint="a vector's softmax is SOFTMAX (per=sample)")
        return h

    def label(self, h):
        return "SOFTMAX" + (" per pixel" if h["per"] == "pixel" else "")


@register
class Maxout(LayerKind):
    name = "MAXOUT"
    example = ("2x2x6", "MAXOUT 3")
    doc = "maxout: the maximum over groups of `pieces` consecutive channels (features)"
    keys = {"pieces": Int(2, low=2)}
    positional = {int: "pieces"}

    def resolve(self, h, xs):
        if xs[0][0] % h["pieces"]:
            raise LayerError(f"MAXOUT with {h['pieces']} pieces needs a channel count divisible by "
                             f"{h['pieces']}; received {xs[0][0]}", key="pieces",
                             hint="make the previous layer's width a multiple of the pieces")
        return h

    def shape(self, h, xs):
        return (xs[0][0] // h["pieces"],) + tuple(xs[0][1:])

    def flops(self, h, xs, y):
        return math.prod(xs[0])

    def label(self, h):
        return f"MAXOUT {h['pieces']}"

    def onnx(self, h, xs, g):
        """The channels as (C/pieces, pieces), the maximum over the second."""
        c, p = xs[0][0], h["pieces"]
        grouped = g.op("Reshape", [g.x[0], g.const([0, c // p, p] + list(xs[0][1:]), hint="shape")],
                       aside=True)
        return g.op("ReduceMax", [grouped], axes=[2], keepdims=0)


@register
class Dropout(LayerKind):
    name = "DROPOUT"
    example = ("8", "DROPOUT 0.5")
    doc = "inverted dropout with drop probability p (training only): `DROPOUT 0.5`"
    elementwise = True
    on_sequences = True
    init_passthrough = True
    color = "#eeeeee"
    keys = {"p": Float(0.5, low=0.0, high=1.0)}
    positional = {float: "p"}

    def flops(self, h, xs, y):
        return 0

    def label(self, h):
        return f"DROPOUT {h['p']:g}"

    def onnx(self, h, xs, g):
        return g.op("Identity", g.x)  # inference
