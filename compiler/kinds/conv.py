"""CONV: 2-D convolution with stride, padding, groups and a fused activation."""
from __future__ import annotations

import math

import numpy as np

from ..jit import cpu_kernel
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
    # im2col + GEMM, a chunk of samples at a time so that the unfolded chunk stays in cache; the
    # batch is split across the runtime's workers (BLAS runs single-threaded inside each), each
    # with its own buffers; backward unfolds again instead of keeping the unfolded input.
    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        n, f = x.shape[0], h["filters"]
        oh, ow = conv_out_hw(h, x.shape)
        w = p["weight"].reshape(f, -1)                                   # (F, C/g*kh*kw)
        z = ctx.buffer("z" if h["act"] != "none" else "y", (n, f, oh, ow), x.dtype)

        def work(lo, hi, t):
            for s, e, cols in _chunks(x, lo, hi, h, oh, ow, ctx, t):
                zf = ctx.buffer(f"zf{t}", (f, cols.shape[1]), x.dtype)    # (F, m*oh*ow)
                for fs, ks in _group_slices(h, cols.shape[0]):
                    np.matmul(w[fs], cols[ks], out=zf[fs])               # one GEMM per group
                np.copyto(z[s:e], zf.reshape(f, e - s, oh, ow).transpose(1, 0, 2, 3))

        ctx.split(n, work)
        if "bias" in p:
            z += p["bias"].reshape(1, f, 1, 1)
        y = fused_forward(h, p, z)
        return y, (x, z if h["act"] != "none" else None, y)

    def backward(self, h, p, cache, dy, ctx):
        x, z, y = cache
        dz, grads = fused_backward(h, p, z, y, dy)
        f = h["filters"]
        if "bias" in p:
            grads["bias"] = dz.sum(axis=(0, 2, 3))
        oh, ow = dz.shape[2], dz.shape[3]
        w = p["weight"].reshape(f, -1)
        dx = ctx.buffer("dx", x.shape, dz.dtype)
        partial = {}  # per-worker weight gradients, summed afterwards

        def work(lo, hi, t):
            dw = partial[t] = np.zeros_like(w)
            part = np.empty_like(w)
            for s, e, cols in _chunks(x, lo, hi, h, oh, ow, ctx, t):
                d2 = ctx.buffer(f"d2{t}", (f, cols.shape[1]), dz.dtype)   # (F, m*oh*ow)
                np.copyto(d2.reshape(f, e - s, oh, ow), dz[s:e].transpose(1, 0, 2, 3))
                dcols = ctx.buffer(f"dcols{t}", cols.shape, cols.dtype)
                for fs, ks in _group_slices(h, cols.shape[0]):
                    np.matmul(d2[fs], cols[ks].T, out=part[fs])
                    np.matmul(w[fs].T, d2[fs], out=dcols[ks])
                dw += part
                _col2im_cpu(dcols, *_geometry(h), oh, ow, dx[s:e])

        ctx.split(x.shape[0], work)
        grads["weight"] = sum(partial.values()).reshape(p["weight"].shape)
        return [dx], grads


CHUNK_BYTES = 1 << 20  # the unfolded input of one chunk of samples: about 1 MiB


def _geometry(h):
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    return kh, kw, sh, sw, ph, pw


def _chunks(x, lo, hi, h, oh, ow, ctx, t):
    """(start, end, unfolded chunk) over samples lo..hi, chunks whose im2col is ~CHUNK_BYTES."""
    c = x.shape[1]
    k = c * h["kernel"][0] * h["kernel"][1]
    per = max(1, min(hi - lo, CHUNK_BYTES // (k * oh * ow * x.itemsize)))
    flat = ctx.buffer(f"cols{t}", (k * per * oh * ow,), x.dtype)
    for s in range(lo, hi, per):
        e = min(hi, s + per)
        cols = flat[:k * (e - s) * oh * ow].reshape(k, (e - s) * oh * ow)
        _im2col_cpu(x[s:e], *_geometry(h), oh, ow, cols)
        yield s, e, cols


def _group_slices(h, k):
    """(filter rows, im2col rows) of each group."""
    f, g = h["filters"], h["groups"]
    return [(slice(i * f // g, (i + 1) * f // g), slice(i * k // g, (i + 1) * k // g)) for i in range(g)]


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


@cpu_kernel()
def _valid(o, s, p, k, size):
    """The first and one-past-last output positions whose tap k lands inside [0, size)."""
    lo = 0
    while lo < o and lo * s - p + k < 0:
        lo += 1
    hi = o
    while hi > lo and (hi - 1) * s - p + k >= size:
        hi -= 1
    return lo, hi


@cpu_kernel()
def _im2col_cpu(x, kh, kw, sh, sw, ph, pw, oh, ow, out):
    """out[(c, i, j), (n, y, x)] = x[n, c, y*sh - ph + i, x*sw - pw + j], zero outside."""
    n_, c_, h_, w_ = x.shape
    for r in range(c_ * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        ylo, yhi = _valid(oh, sh, ph, i, h_)
        xlo, xhi = _valid(ow, sw, pw, j, w_)
        for n in range(n_):
            base = n * oh * ow
            out[r, base:base + ylo * ow] = 0
            out[r, base + yhi * ow:base + oh * ow] = 0
            for oy in range(ylo, yhi):
                row = base + oy * ow
                iy = oy * sh - ph + i
                out[r, row:row + xlo] = 0
                out[r, row + xhi:row + ow] = 0
                if sw == 1:
                    out[r, row + xlo:row + xhi] = x[n, c, iy, xlo - pw + j:xhi - pw + j]
                else:
                    for ox in range(xlo, xhi):
                        out[r, row + ox] = x[n, c, iy, ox * sw - pw + j]


@cpu_kernel()
def _col2im_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dx):
    """The adjoint of im2col: fold dcols (C*kh*kw, N*oh*ow) into dx (N, C, H, W)."""
    n_, c_, h_, w_ = dx.shape
    dx[:] = 0
    for n in range(n_):
        base = n * oh * ow
        for c in range(c_):
            for i in range(kh):
                ylo, yhi = _valid(oh, sh, ph, i, h_)
                for j in range(kw):
                    xlo, xhi = _valid(ow, sw, pw, j, w_)
                    r = (c * kh + i) * kw + j
                    for oy in range(ylo, yhi):
                        iy = oy * sh - ph + i
                        row = base + oy * ow
                        if sw == 1:
                            dx[n, c, iy, xlo - pw + j:xhi - pw + j] += dcols[r, row + xlo:row + xhi]
                        else:
                            for ox in range(xlo, xhi):
                                dx[n, c, iy, ox * sw - pw + j] += dcols[r, row + ox]
