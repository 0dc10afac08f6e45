"""POOL (max | avg) and GAP (global average pooling)."""
from __future__ import annotations

import math

import numpy as np

from ..jit import cpu_kernel
from ..registry import Choice, LayerKind, Pad, Pair, register
from ..shapes import resolve_pad
from .conv import conv_geometry


@register
class Pool(LayerKind):
    name = "POOL"
    example = ("7x7x3", "POOL avg 3x3/2 pad=1")
    doc = "max or average pooling: `POOL max 3x3/2`, `POOL avg 2x2/2` (avg counts padded zeros)"
    spatial = True
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
        oh, ow, _, _ = conv_geometry(h, xs[0])
        return (xs[0][0], oh, ow)

    def dropped(self, h, xs):
        """Input pixels at the bottom/right border that no window covers (a warning)."""
        _, _, dh, dw = conv_geometry(h, xs[0])
        return dh, dw

    def flops(self, h, xs, y):
        return math.prod(y) * h["kernel"][0] * h["kernel"][1]

    def window(self, h, xs):
        return h["kernel"], h["stride"]

    def label(self, h):
        (kh, kw), (sh, sw) = h["kernel"], h["stride"]
        text = f"POOL {h['mode']} {kh}x{kw}" + (f"/{sh}" if sh == sw else f"/{sh}x{sw}")
        if h["pad"] != (0, 0):
            text += f" pad={h['pad'][0]}"
        return text

    # ---- runtime ------------------------------------------------------------------------------
    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        oh, ow, _, _ = conv_geometry(h, x.shape[1:])
        (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
        y = ctx.buffer("y", x.shape[:2] + (oh, ow), x.dtype)
        cost = y[0].size * kh * kw  # comparisons or adds per sample
        if h["mode"] == "max":
            arg = ctx.buffer("arg", y.shape, np.int64)
            ctx.split(len(x), lambda lo, hi, t: _maxpool_cpu(x[lo:hi], kh, kw, sh, sw, ph, pw,
                                                             y[lo:hi], arg[lo:hi]), cost)
            return y, (x.shape, arg)
        ctx.split(len(x), lambda lo, hi, t: _avgpool_cpu(x[lo:hi], kh, kw, sh, sw, ph, pw, y[lo:hi]),
                  cost)
        return y, (x.shape, None)

    def backward(self, h, p, cache, dy, ctx):
        xshape, arg = cache
        (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
        dx = ctx.buffer("dx", xshape, dy.dtype)
        dy = np.ascontiguousarray(dy)
        cost = dy[0].size * kh * kw
        if arg is not None:
            ctx.split(len(dy), lambda lo, hi, t: _maxpool_back_cpu(dy[lo:hi], arg[lo:hi], dx[lo:hi]),
                      cost)
        else:
            ctx.split(len(dy), lambda lo, hi, t: _avgpool_back_cpu(dy[lo:hi], kh, kw, sh, sw, ph, pw,
                                                                   dx[lo:hi]), cost)
        return [dx], {}


@register
class GlobalAvgPool(LayerKind):
    name = "GAP"
    example = ("4x5x3", "GAP")
    doc = "global average pooling: C x H x W -> C"
    spatial = True

    def shape(self, h, xs):
        return (xs[0][0],)

    def flops(self, h, xs, y):
        return math.prod(xs[0])

    def window(self, h, xs):
        return "global"

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        return x.mean(axis=(2, 3)), x.shape

    def backward(self, h, p, shape, dy, ctx):
        dx = np.broadcast_to((dy / (shape[2] * shape[3]))[:, :, None, None], shape)
        return [np.ascontiguousarray(dx)], {}

@cpu_kernel()
def _maxpool_cpu(x, kh, kw, sh, sw, ph, pw, y, arg):
    """y = the window maximum (padding never wins); arg = its flat index in the H*W image."""
    n_, c_, h_, w_ = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in range(n_ * c_):
        n = nc // c_
        c = nc % c_
        for oy in range(oh):
            for ox in range(ow):
                best = -np.inf
                where = -1
                for i in range(kh):
                    iy = oy * sh - ph + i
                    if iy < 0 or iy >= h_:
                        continue
                    for j in range(kw):
                        ix = ox * sw - pw + j
                        if 0 <= ix < w_ and (where < 0 or x[n, c, iy, ix] > best):
                            best = x[n, c, iy, ix]
                            where = iy * w_ + ix
                y[n, c, oy, ox] = best
                arg[n, c, oy, ox] = where


@cpu_kernel()
def _maxpool_back_cpu(dy, arg, dx):
    n_, c_, h_, w_ = dx.shape
    dx[:] = 0
    for nc in range(n_ * c_):
        n = nc // c_
        c = nc % c_
        for oy in range(dy.shape[2]):
            for ox in range(dy.shape[3]):
                k = arg[n, c, oy, ox]
                dx[n, c, k // w_, k % w_] += dy[n, c, oy, ox]


@cpu_kernel()
def _avgpool_cpu(x, kh, kw, sh, sw, ph, pw, y):
    """y = the window mean, padded zeros counted (divide by kh*kw, as PyTorch and Caffe)."""
    n_, c_, h_, w_ = x.shape
    oh, ow = y.shape[2], y.shape[3]
    scale = 1.0 / (kh * kw)
    for nc in range(n_ * c_):
        n = nc // c_
        c = nc % c_
        for oy in range(oh):
            for ox in range(ow):
                s = 0.0
                for i in range(kh):
                    iy = oy * sh - ph + i
                    if iy < 0 or iy >= h_:
                        continue
                    for j in range(kw):
                        ix = ox * sw - pw + j
                        if 0 <= ix < w_:
                            s += x[n, c, iy, ix]
                y[n, c, oy, ox] = s * scale


@cpu_kernel()
def _avgpool_back_cpu(dy, kh, kw, sh, sw, ph, pw, dx):
    n_, c_, h_, w_ = dx.shape
    scale = 1.0 / (kh * kw)
    dx[:] = 0
    for nc in range(n_ * c_):
        n = nc // c_
        c = nc % c_
        for oy in range(dy.shape[2]):
            for i in range(kh):
                iy = oy * sh - ph + i
                if iy < 0 or iy >= h_:
                    continue
                for ox in range(dy.shape[3]):
                    g = dy[n, c, oy, ox] * scale
                    for j in range(kw):
                        ix = ox * sw - pw + j
                        if 0 <= ix < w_:
                            dx[n, c, iy, ix] += g
