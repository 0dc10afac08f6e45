"""CONV: 2-D convolution with stride, padding, groups and a fused activation; DECONV, its
transpose (upsampling by a learned kernel)."""
from __future__ import annotations

import math

from ..registry import (ACTIVATIONS, Bool, Choice, Int, LayerError, LayerKind, Pad, Pair,
                        register)
from ..shapes import divisors, onnx_pads, resolve_pad, transposed_out, window_geometry


class _Filters(LayerKind):
    """What CONV and DECONV share: filters, groups, a bias, a fused activation; their label,
    counts of the per-output work, initialisation and regularisation."""

    spatial = True
    positional = {tuple: "kernel", int: "filters", str: "act"}
    label_keys = ("pad",)  # the padding keys the label shows when they are not 0

    def need_filters(self, h, hint):
        if "filters" not in h:
            raise LayerError(f"{self.name} needs the number of filters", key="filters", hint=hint)

    def check_groups(self, h, xs):
        """groups must divide the input channels and the filters."""
        x, g = xs[0], h["groups"]
        if x[0] % g or h["filters"] % g:
            raise LayerError(f"groups={g} must divide the input channels ({x[0]}) and the filters "
                             f"({h['filters']})", key="groups",
                             hint="choose groups among the common divisors: "
                                  + divisors(math.gcd(x[0], h["filters"])))

    def weight_shape(self, h, xs):
        raise NotImplementedError

    def params(self, h, xs):
        p = {"weight": self.weight_shape(h, xs)}
        if h["bias"]:
            p["bias"] = (h["filters"],)
        if h["act"] == "prelu":
            p["slope"] = (h["filters"],)
        return p

    def flops(self, h, xs, y):
        return math.prod(y) * (int(h["bias"]) + (h["act"] != "none"))

    def label(self, h):
        (kh, kw), s = h["kernel"], h["stride"]
        text = f"{self.name} {kh}x{kw}" + (f"/{s[0]}" if s == (s[0], s[0]) and s[0] > 1 else
                                           "" if s == (1, 1) else f"/{s[0]}x{s[1]}")
        text += f" {h['filters']}"
        for key in self.label_keys:
            if h[key] != (0, 0):
                v = h[key]
                text += f" {key}={v[0]}" if v[0] == v[1] else f" {key}={v[0]}x{v[1]}"
        if h["groups"] > 1:
            text += f" g={h['groups']}"
        if h["act"] != "none":
            text += f" {h['act']}"
        return text

    def init_rule(self, short, h=None):
        return 0.25 if short == "slope" else super().init_rule(short, h)

    def regularized(self, h):
        return ("weight",)

    def onnx(self, h, xs, g):
        inputs = [g.x[0], g.param("weight")] + ([g.param("bias")] if h["bias"] else [])
        y = g.op(self.onnx_op, inputs, kernel_shape=list(h["kernel"]), strides=list(h["stride"]),
                 group=h["groups"], **self.onnx_attrs(h, xs))
        slope = g.per_channel("slope", 3) if h["act"] == "prelu" else None
        return g.act(y, h["act"], slope=slope)


@register
class Conv(_Filters):
    name = "CONV"
    example = ("5x6x4", "CONV 3x3/2 6 pad=1 groups=2 act=prelu")
    doc = "2-D convolution: `CONV 11x11/4 96`, `CONV 3x3 64 pad=same act=relu`, `groups=G`"
    color = "#cfe2f3"
    keys = {
        "filters": Int(doc="the number of filters, an integer >= 1"),
        "kernel": Pair((3, 3)),
        "stride": Pair((1, 1)),
        "pad": Pad(0),
        "groups": Int(1),
        "bias": Bool(True),
        "act": Choice(ACTIVATIONS, "none"),
        "round": Choice(("exact", "floor", "ceil"), "exact"),
    }

    def resolve(self, h, xs):
        self.need_filters(h, "write it after the kernel, e.g. `CONV 3x3 64`, or set a default "
                             "with `CONV: 64`")
        if h["pad"] == "same" and h["round"] == "exact":
            h["round"] = "floor"  # 'same' at stride S gives ceil(W/S), as PyTorch's padding=k//2
        h["pad"] = resolve_pad(h["pad"], h["kernel"])
        self.check_groups(h, xs)
        return h

    def shape(self, h, xs):
        oh, ow, _, _ = window_geometry(h, xs[0])
        return (h["filters"], oh, ow)

    def weight_shape(self, h, xs):
        kh, kw = h["kernel"]
        return (h["filters"], xs[0][0] // h["groups"], kh, kw)

    def macs(self, h, xs, y):
        kh, kw = h["kernel"]
        return math.prod(y) * (xs[0][0] // h["groups"]) * kh * kw

    def window(self, h, xs):
        return h["kernel"], h["stride"]

    onnx_op = "Conv"

    def onnx_attrs(self, h, xs):
        return {"pads": onnx_pads(h, xs[0], self.shape(h, xs))}


@register
class Deconv(_Filters):
    """The transposed convolution (PyTorch's ConvTranspose2d): each input pixel spreads its
    kernel-weighted values over a K x K patch of the output, patches S apart."""
    name = "DECONV"
    example = ("3x4x4", "DECONV 3x3/2 6 pad=1 outpad=1 groups=2 act=tanh")
    doc = ("transposed convolution: `DECONV 4x4/2 64 pad=1`, output (H - 1)*S - 2P + K + outpad; "
           "keys as CONV's, and `outpad`")
    label_keys = ("pad", "outpad")
    color = "#d0e0f0"
    keys = {
        "filters": Int(doc="the number of filters, an integer >= 1"),
        "kernel": Pair((3, 3)),
        "stride": Pair((1, 1)),
        "pad": Pair((0, 0), low=0, doc="an integer >= 0 or HxW"),
        "outpad": Pair((0, 0), low=0, doc="an integer >= 0 or HxW, less than the stride"),
        "groups": Int(1),
        "bias": Bool(True),
        "act": Choice(ACTIVATIONS, "none"),
    }

    def resolve(self, h, xs):
        self.need_filters(h, "write it after the kernel, e.g. `DECONV 4x4/2 64`")
        if any(o >= s for o, s in zip(h["outpad"], h["stride"])):
            raise LayerError(f"outpad must be less than the stride; received outpad="
                             f"{h['outpad'][0]}x{h['outpad'][1]} with stride "
                             f"{h['stride'][0]}x{h['stride'][1]}", key="outpad",
                             hint="outpad only picks among the sizes one stride allows: "
                                  "use 0 .. stride - 1")
        self.check_groups(h, xs)
        return h

    def shape(self, h, xs):
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = h["kernel"], h["stride"], h["pad"], h["outpad"]
        return (h["filters"], transposed_out(xs[0][1], kh, sh, ph, oh),
                transposed_out(xs[0][2], kw, sw, pw, ow))

    def weight_shape(self, h, xs):
        kh, kw = h["kernel"]
        return (xs[0][0], h["filters"] // h["groups"], kh, kw)

    def macs(self, h, xs, y):
        """Every input value times its kernel (fvcore's convention)."""
        kh, kw = h["kernel"]
        return math.prod(xs[0]) * (h["filters"] // h["groups"]) * kh * kw

    def window(self, h, xs):
        """An output pixel sees ceil(K/S) input pixels per dimension; the jump divides by S."""
        (kh, kw), (sh, sw) = h["kernel"], h["stride"]
        return (-(-kh // sh), -(-kw // sw)), (1 / sh, 1 / sw)

    onnx_op = "ConvTranspose"

    def onnx_attrs(self, h, xs):
        (ph, pw), (oh, ow) = h["pad"], h["outpad"]
        return {"pads": [ph, pw, ph, pw], "output_padding": [oh, ow]}
