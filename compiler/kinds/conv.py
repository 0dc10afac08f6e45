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
    # with its own buffers; bias and activation are applied as the GEMM's result is written back;
    # backward unfolds again instead of keeping the unfolded input.
    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        n, f = x.shape[0], h["filters"]
        oh, ow = conv_out_hw(h, x.shape)
        w = p["weight"].reshape(f, -1)                                   # (F, C/g*kh*kw)
        fused = h["act"] in ACT_CODES
        y = ctx.buffer("y" if fused else "z", (n, f, oh, ow), x.dtype)
        bias = p.get("bias", np.zeros(f, x.dtype))
        code = ACT_CODES.get(h["act"], 0)

        def work(lo, hi, t):
            for s, e, cols in _chunks(x, lo, hi, h, oh, ow, ctx, t):
                zf = ctx.buffer(f"zf{t}", (f, cols.shape[1]), x.dtype)    # (F, m*oh*ow)
                for fs, ks in _group_slices(h, cols.shape[0]):
                    np.matmul(w[fs], cols[ks], out=zf[fs])               # one GEMM per group
                _epilogue_cpu(zf, bias, code, y.reshape(n, f, oh * ow), s)

        ctx.split(n, work, cost=self.macs(h, [x.shape[1:]], (f, oh, ow)))
        if fused:
            return y, (x, None, y)
        z = y  # PReLU: its learned slope is applied apart
        y = fused_forward(h, p, z)
        return y, (x, z, y)

    def backward(self, h, p, cache, dy, ctx):
        x, z, y = cache
        f = h["filters"]
        n, _, oh, ow = dy.shape
        w = p["weight"].reshape(f, -1)
        grads = {}
        if z is not None:  # PReLU
            dy, grads = fused_backward(h, p, z, y, dy)
            code = 0
        else:
            code = ACT_CODES[h["act"]]
        dy = np.ascontiguousarray(dy).reshape(n, f, oh * ow)
        yv = y.reshape(n, f, oh * ow)
        dx = ctx.buffer("dx", x.shape, dy.dtype) if ctx.need_dx else None
        partial = {}  # per-worker weight and bias gradients, summed afterwards

        def work(lo, hi, t):
            dw, db = np.zeros_like(w), np.zeros(f, dy.dtype)
            partial[t] = (dw, db)
            part = np.empty_like(w)
            for s, e, cols in _chunks(x, lo, hi, h, oh, ow, ctx, t):
                d2 = ctx.buffer(f"d2{t}", (f, cols.shape[1]), dy.dtype)   # (F, m*oh*ow)
                _prologue_cpu(dy, yv, code, s, d2, db)
                dcols = ctx.buffer(f"dcols{t}", cols.shape, cols.dtype) if dx is not None else None
                for fs, ks in _group_slices(h, cols.shape[0]):
                    np.matmul(d2[fs], cols[ks].T, out=part[fs])
                    if dcols is not None:
                        np.matmul(w[fs].T, d2[fs], out=dcols[ks])
                dw += part
                if dx is not None:
                    _col2im_cpu(dcols, *_geometry(h), oh, ow, dx[s:e])

        ctx.split(n, work, cost=2 * self.macs(h, [x.shape[1:]], (f, oh, ow)))
        grads["weight"] = sum(dw for dw, _ in partial.values()).reshape(p["weight"].shape)
        if "bias" in p:
            grads["bias"] = sum(db for _, db in partial.values())
        return [dx], grads


# activations applied in the conv kernels (PReLU, with its learned slope, goes through NumPy)
ACT_CODES = {"none": 0, "relu": 1, "leaky": 2, "elu": 3, "sigmoid": 4, "tanh": 5}


@cpu_kernel()
def _act(code, v):
    if code == 1:
        return v if v > 0 else 0.0 * v
    if code == 2:
        return v if v > 0 else 0.01 * v
    if code == 3:
        return v if v > 0 else np.expm1(v)
    if code == 4:
        return 1 / (1 + np.exp(-v)) if v >= 0 else np.exp(v) / (1 + np.exp(v))
    if code == 5:
        return np.tanh(v)
    return v


@cpu_kernel()
def _act_grad_from_y(code, y):
    """act'(z) written with y = act(z) (z itself is not kept)."""
    if code == 1:
        return 1.0 if y > 0 else 0.0
    if code == 2:
        return 1.0 if y > 0 else 0.01
    if code == 3:
        return 1.0 if y > 0 else y + 1.0
    if code == 4:
        return y * (1 - y)
    if code == 5:
        return 1 - y * y
    return 1.0


@cpu_kernel()
def _epilogue_cpu(zf, bias, code, y, s):
    """y[s + n, f, k] = act(zf[f, n*L + k] + bias[f]) for the chunk's samples n."""
    f_, ml = zf.shape
    ln = y.shape[2]
    for f in range(f_):
        b = bias[f]
        for n in range(ml // ln):
            src, dst = zf[f, n * ln:(n + 1) * ln], y[s + n, f]
            if code == 0:  # the activation is chosen outside the inner loops
                for k in range(ln):
                    dst[k] = src[k] + b
            elif code == 1:
                for k in range(ln):
                    v = src[k] + b
                    dst[k] = v if v > 0 else 0
            else:
                for k in range(ln):
                    dst[k] = _act(code, src[k] + b)


@cpu_kernel()
def _prologue_cpu(dy, y, code, s, d2, dbias):
    """d2[f, n*L + k] = dy * act'(z) for the chunk's samples; dbias[f] accumulates it."""
    f_, ml = d2.shape
    ln = dy.shape[2]
    for f in range(f_):
        acc = 0.0
        for n in range(ml // ln):
            g, out, dst = dy[s + n, f], y[s + n, f], d2[f, n * ln:(n + 1) * ln]
            if code == 0:
                for k in range(ln):
                    dst[k] = g[k]
                    acc += g[k]
            elif code == 1:
                for k in range(ln):
                    v = g[k] if out[k] > 0 else 0
                    dst[k] = v
                    acc += v
            else:
                for k in range(ln):
                    v = g[k] * _act_grad_from_y(code, out[k])
                    dst[k] = v
                    acc += v
        dbias[f] += acc


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
    src = x.reshape(-1)
    for r in range(c_ * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        ylo, yhi = _valid(oh, sh, ph, i, h_)
        xlo, xhi = _valid(ow, sw, pw, j, w_)
        dst = out[r]
        for n in range(n_):
            base = n * oh * ow
            plane = (n * c_ + c) * h_ * w_
            for oy in range(oh):
                row = base + oy * ow
                if oy < ylo or oy >= yhi:
                    for ox in range(ow):
                        dst[row + ox] = 0
                    continue
                line = plane + (oy * sh - ph + i) * w_ - pw + j
                for ox in range(xlo):
                    dst[row + ox] = 0
                for ox in range(xlo, xhi):
                    dst[row + ox] = src[line + ox * sw]
                for ox in range(xhi, ow):
                    dst[row + ox] = 0


@cpu_kernel()
def _col2im_cpu(dcols, kh, kw, sh, sw, ph, pw, oh, ow, dx):
    """The adjoint of im2col: fold dcols (C*kh*kw, N*oh*ow) into dx (N, C, H, W)."""
    n_, c_, h_, w_ = dx.shape
    dst = dx.reshape(-1)
    dst[:] = 0
    for n in range(n_):
        base = n * oh * ow
        for c in range(c_):
            plane = (n * c_ + c) * h_ * w_
            for i in range(kh):
                ylo, yhi = _valid(oh, sh, ph, i, h_)
                for j in range(kw):
                    xlo, xhi = _valid(ow, sw, pw, j, w_)
                    src = dcols[(c * kh + i) * kw + j]
                    for oy in range(ylo, yhi):
                        row = base + oy * ow
                        line = plane + (oy * sh - ph + i) * w_ - pw + j
                        for ox in range(xlo, xhi):
                            dst[line + ox * sw] += src[row + ox]
