"""CONV: 2-D convolution with stride, padding, groups and a fused activation."""
from __future__ import annotations

import math

import numpy as np

from ..jit import cpu_kernel, prange
from ..registry import (ACTIVATIONS, Bool, Choice, Int, LayerError, LayerKind, Pad, Pair,
                        register)
from ..shapes import resolve_pad, window_out
from .activation import act_backward, act_forward, channel_view


def conv_geometry(h, x):
    """(out_h, out_w, dropped_h, dropped_w) of a CONV or POOL window over x = (C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    oh, dh = window_out(x[1], kh, sh, ph, h["round"], axis="height")
    ow, dw = window_out(x[2], kw, sw, pw, h["round"], axis="width")
    return oh, ow, dh, dw


@register
class Conv(LayerKind):
    name = "CONV"
    example = ("5x6x4", "CONV 3x3/2 6 pad=1 groups=2 act=prelu")
    doc = "2-D convolution: `CONV 11x11/4 96`, `CONV 3x3 64 pad=same act=relu`, `groups=G`"
    spatial = True
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
    positional = {tuple: "kernel", int: "filters", str: "act"}

    def resolve(self, h, xs):
        x = xs[0]
        if "filters" not in h:
            raise LayerError("CONV needs the number of filters", key="filters",
                             hint="write it after the kernel, e.g. `CONV 3x3 64`, or set a default "
                                  "with `CONV: 64`")
        if h["pad"] == "same" and h["round"] == "exact":
            h["round"] = "floor"  # 'same' at stride S gives ceil(W/S), as PyTorch's padding=k//2
        h["pad"] = resolve_pad(h["pad"], h["kernel"])
        g = h["groups"]
        if x[0] % g or h["filters"] % g:
            raise LayerError(f"groups={g} must divide the input channels ({x[0]}) and the filters "
                             f"({h['filters']})", key="groups",
                             hint="choose groups among the common divisors: "
                                  + ", ".join(str(d) for d in range(1, x[0] + 1)
                                              if x[0] % d == 0 and h["filters"] % d == 0))
        return h

    def shape(self, h, xs):
        oh, ow, _, _ = conv_geometry(h, xs[0])
        return (h["filters"], oh, ow)

    def params(self, h, xs):
        kh, kw = h["kernel"]
        p = {"weight": (h["filters"], xs[0][0] // h["groups"], kh, kw)}
        if h["bias"]:
            p["bias"] = (h["filters"],)
        if h["act"] == "prelu":
            p["slope"] = (h["filters"],)
        return p

    def macs(self, h, xs, y):
        kh, kw = h["kernel"]
        return math.prod(y) * (xs[0][0] // h["groups"]) * kh * kw

    def flops(self, h, xs, y):
        return math.prod(y) * (int(h["bias"]) + (h["act"] != "none"))

    def window(self, h, xs):
        return h["kernel"], h["stride"]

    def label(self, h):
        kh, kw = h["kernel"]
        s = h["stride"]
        text = f"CONV {kh}x{kw}" + (f"/{s[0]}" if s == (s[0], s[0]) and s[0] > 1 else
                                    "" if s[0] == 1 == s[1] else f"/{s[0]}x{s[1]}")
        text += f" {h['filters']}"
        if h["pad"] != (0, 0):
            text += f" pad={h['pad'][0]}" if h["pad"][0] == h["pad"][1] else f" pad={h['pad'][0]}x{h['pad'][1]}"
        if h["groups"] > 1:
            text += f" g={h['groups']}"
        if h["act"] != "none":
            text += f" {h['act']}"
        return text

    # ---- runtime ------------------------------------------------------------------------------
    def forward(self, h, p, xs, ctx):
        x = xs[0]
        n = x.shape[0]
        f, g = h["filters"], h["groups"]
        oh, ow = conv_out_hw(h, x.shape)
        cols = im2col(x, h, oh, ow)                           # (C*kh*kw, N*oh*ow)
        w = p["weight"].reshape(g, f // g, -1)                # (g, F/g, C/g*kh*kw)
        z = np.matmul(w, cols.reshape(g, -1, cols.shape[1]))  # (g, F/g, N*oh*ow)
        z = z.reshape(f, n, oh, ow).transpose(1, 0, 2, 3)
        if "bias" in p:
            z = z + p["bias"].reshape(1, f, 1, 1)
        z = np.ascontiguousarray(z)
        y = fused_forward(h, p, z)
        return y, (x.shape, cols, z if h["act"] != "none" else None, y)

    def backward(self, h, p, cache, dy, ctx):
        xshape, cols, z, y = cache
        dz, grads = fused_backward(h, p, z, y, dy)
        f, g = h["filters"], h["groups"]
        if "bias" in p:
            grads["bias"] = dz.sum(axis=(0, 2, 3))
        d2 = dz.transpose(1, 0, 2, 3).reshape(g, f // g, -1)                   # (g, F/g, N*L)
        c3 = cols.reshape(g, -1, cols.shape[1])                                 # (g, K, N*L)
        grads["weight"] = np.matmul(d2, c3.transpose(0, 2, 1)).reshape(p["weight"].shape)
        w = p["weight"].reshape(g, f // g, -1)
        dcols = np.matmul(w.transpose(0, 2, 1), d2).reshape(cols.shape)         # (C*kh*kw, N*L)
        return [col2im(dcols, xshape, h, dz.shape[2], dz.shape[3])], grads


def conv_out_hw(h, xshape):
    oh, ow, _, _ = conv_geometry(h, xshape[1:])
    return oh, ow


def fused_forward(h, p, z):
    """The activation fused into a CONV/FC (PReLU's slope is the layer's `slope` parameter)."""
    slope = channel_view(p["slope"], z.ndim) if "slope" in p else None
    return act_forward(h["act"], z, slope)


def fused_backward(h, p, z, y, dy):
    if h["act"] == "none":
        return dy, {}
    slope = channel_view(p["slope"], z.ndim) if "slope" in p else None
    dz, dslope = act_backward(h["act"], z, y, dy, slope)
    return dz, ({"slope": dslope} if dslope is not None else {})


def im2col(x, h, oh, ow):
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    n, c = x.shape[:2]
    out = np.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
    _im2col_cpu(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, oh, ow, out)
    return out


def col2im(dcols, xshape, h, oh, ow):
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    dx = np.empty(xshape, dtype=dcols.dtype)
    _col2im_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dx)
    return dx


@cpu_kernel(parallel=True)
def _im2col_cpu(x, kh, kw, sh, sw, ph, pw, oh, ow, out):
    """out[(c, i, j), (n, y, x)] = x[n, c, y*sh - ph + i, x*sw - pw + j], zero outside."""
    n_, c_, h_, w_ = x.shape
    for r in prange(c_ * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        for n in range(n_):
            base = n * oh * ow
            for oy in range(oh):
                iy = oy * sh - ph + i
                row = base + oy * ow
                if iy < 0 or iy >= h_:
                    for ox in range(ow):
                        out[r, row + ox] = 0
                    continue
                for ox in range(ow):
                    ix = ox * sw - pw + j
                    out[r, row + ox] = x[n, c, iy, ix] if 0 <= ix < w_ else 0


@cpu_kernel(parallel=True)
def _col2im_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dx):
    """The adjoint of im2col: every (n, c) image is summed by one thread (no write races)."""
    n_, c_, h_, w_ = dx.shape
    for nc in prange(n_ * c_):
        n = nc // c_
        c = nc % c_
        for y in range(h_):
            for x in range(w_):
                dx[n, c, y, x] = 0
        base = n * oh * ow
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for oy in range(oh):
                    iy = oy * sh - ph + i
                    if iy < 0 or iy >= h_:
                        continue
                    row = base + oy * ow
                    for ox in range(ow):
                        ix = ox * sw - pw + j
                        if 0 <= ix < w_:
                            dx[n, c, iy, ix] += dcols[r, row + ox]
