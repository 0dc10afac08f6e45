"""POOL (max | avg), GAP (global average pooling) and UPSAMPLE (nearest, bilinear): the spatial
resampling family."""
from __future__ import annotations

import math

from ..registry import Choice, Int, LayerKind, Pad, Pair, register
from ..shapes import onnx_pads, resolve_pad, window_geometry


@register
class Pool(LayerKind):
    name = "POOL"
    example = ("7x7x3", "POOL avg 3x3/2 pad=1")
    doc = "max or average pooling: `POOL max 3x3/2`, `POOL avg 2x2/2` (avg counts padded zeros)"
    sequence_hint = "return=last (the default) on the recurrent layer, or FLATTEN"
    spatial = True
    color = "#d9ead3"
    keys = {
        "mode": Choice(("max", "avg"), "max"),
        "kernel": Pair((2, 2)),
        "stride": Pair(None),
        "pad": Pad(0),
        "round": Choice(("floor", "ceil", "exact"), "floor"),
    }
    positional = {str: "mode", tuple: "kernel", int: "kernel"}

    def resolve(self, h, xs):
        if h.get("stride") is None:  # as PyTorch: the stride defaults to the kernel size
            h["stride"] = h["kernel"]
        h["pad"] = resolve_pad(h["pad"], h["kernel"])
        return h

    def shape(self, h, xs):
        oh, ow, _, _ = window_geometry(h, xs[0])
        return (xs[0][0], oh, ow)

    def dropped(self, h, xs):
        """Input pixels at the bottom/right border that no window covers (a warning)."""
        _, _, dh, dw = window_geometry(h, xs[0])
        return dh, dw

    def flops(self, h, xs, y):
        return math.prod(y) * h["kernel"][0] * h["kernel"][1]

    def window(self, h, xs):
        return h["kernel"], h["stride"]

    def onnx(self, h, xs, g):
        """Max: MaxPool (padding never wins). Avg: zeros padded explicitly, then AveragePool
        without padding, so every window divides by kh*kw as netc's (round=ceil's last one too)."""
        pads = onnx_pads(h, xs[0], self.shape(h, xs))
        window = {"kernel_shape": list(h["kernel"]), "strides": list(h["stride"])}
        if h["mode"] == "max":
            return g.op("MaxPool", [g.x[0]], pads=pads, **window)
        x = g.x[0]
        if any(pads):
            x = g.op("Pad", [x, g.const([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]],
                                        hint="pads")], aside=True)
        return g.op("AveragePool", [x], **window)

    def label(self, h):
        (kh, kw), (sh, sw) = h["kernel"], h["stride"]
        text = f"POOL {h['mode']} {kh}x{kw}" + (f"/{sh}" if sh == sw else f"/{sh}x{sw}")
        if h["pad"] != (0, 0):
            text += f" pad={h['pad'][0]}"
        return text


@register
class GlobalAvgPool(LayerKind):
    name = "GAP"
    example = ("4x5x3", "GAP")
    doc = "global average pooling: C x H x W -> C"
    sequence_hint = ("return=last (the default) on the recurrent layer for its last step, "
                     "or FLATTEN")
    spatial = True
    color = "#d9ead3"

    def shape(self, h, xs):
        return (xs[0][0],)

    def flops(self, h, xs, y):
        return math.prod(xs[0])

    def window(self, h, xs):
        return "global"

    def onnx(self, h, xs, g):
        return g.op("Flatten", [g.op("GlobalAveragePool", [g.x[0]])], axis=1)


@register
class Upsample(LayerKind):
    name = "UPSAMPLE"
    example = ("3x4x2", "UPSAMPLE 2 bilinear")
    doc = ("upsampling by an integer factor: `UPSAMPLE 2 nearest`, `UPSAMPLE 2 bilinear` "
           "(PyTorch's interpolate, align_corners=False)")
    spatial = True
    color = "#d9ead3"
    keys = {"scale": Int(2), "mode": Choice(("nearest", "bilinear"), "nearest")}
    positional = {int: "scale", str: "mode"}

    def shape(self, h, xs):
        c, hh, ww = xs[0]
        return (c, hh * h["scale"], ww * h["scale"])

    def flops(self, h, xs, y):
        return 0 if h["mode"] == "nearest" else 8 * math.prod(y)  # four weights, three adds

    def window(self, h, xs):
        """An output pixel reads one input pixel (nearest) or two per dimension (bilinear); the
        jump divides by the scale."""
        k = 1 if h["mode"] == "nearest" else 2
        return (k, k), (1 / h["scale"], 1 / h["scale"])

    def label(self, h):
        return f"UPSAMPLE {h['scale']} {h['mode']}"

    def onnx(self, h, xs, g):
        """Resize: nearest as PyTorch's (the floor of the scaled coordinate), bilinear with
        align_corners=False (half pixels)."""
        scales = g.const([1.0, 1.0, h["scale"], h["scale"]], "float32", hint="scales")
        if h["mode"] == "nearest":
            return g.op("Resize", [g.x[0], "", scales], mode="nearest", nearest_mode="floor",
                        coordinate_transformation_mode="asymmetric")
        return g.op("Resize", [g.x[0], "", scales], mode="linear",
                    coordinate_transformation_mode="pytorch_half_pixel")
