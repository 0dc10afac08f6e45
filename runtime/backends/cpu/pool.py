"""POOL, GAP and UPSAMPLE on the CPU."""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds import pool as kinds
from netc.compiler.shapes import window_geometry

from .. import elementwise as ew
from ..registry import Implementation, implements
from .common import _fill_cpu, _valid, window
from .jit import kernel, launch, launcher, run_parts, share, split


@implements(kinds.Pool, "cpu")
class Pool(Implementation):
    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        oh, ow, _, _ = window_geometry(h, x.shape[1:])
        geo = window(h)
        y = ctx.value(x.shape[:2] + (oh, ow), x.dtype)
        if h["mode"] == "avg":
            if _two_by_two(geo, x.shape, y.shape):
                launch(_avgpool2x2_cpu, _avgpool2x2_part, _parts(x, y, geo), x, y)
            else:
                launch(_avgpool_cpu, _avgpool_part, _parts(x, y, geo), x, *geo, y)
            return y, (x.shape, None)
        arg = ctx.buffer("arg", y.shape, np.int32)
        if _two_by_two(geo, x.shape, y.shape):  # the common case gets its own unrolled kernel
            launch(_maxpool2x2_cpu, _maxpool2x2_part, _parts(x, y, geo), x, y, arg)
        else:
            launch(_maxpool_cpu, _maxpool_part, _parts(x, y, geo), x, *geo, y, arg)
        return y, (x.shape, arg)

    def backward(self, h, p, cache, dy, ctx):
        xshape, arg = cache
        dx = ctx.grad(xshape, dy.dtype)
        dy = np.ascontiguousarray(dy)
        if arg is not None:
            launch(_maxpool_back_cpu, _maxpool_back_part, _parts(dx, dy), dy, arg, dx)
        elif _two_by_two(window(h), xshape, dy.shape):
            launch(_avgpool2x2_back_cpu, _avgpool2x2_back_part, _parts(dx, dy, window(h)), dy, dx)
        else:
            launch(_avgpool_back_cpu, _avgpool_back_part, _parts(dx, dy, window(h)), dy,
                   *window(h), dx)
        return [dx], {}


@implements(kinds.GlobalAvgPool, "cpu")
class GlobalAvgPool(Implementation):
    def forward(self, h, p, xs, ctx):
        x = xs[0]
        return x.mean(axis=(2, 3)), x.shape

    def backward(self, h, p, shape, dy, ctx):
        # a fresh array, not ascontiguousarray of a broadcast view: that stays read-only where it
        # is already contiguous (1x1 planes), and the kernels after it compiled again for a
        # read-only gradient (1.8 s each)
        dx = np.empty(shape, dy.dtype)
        dx[...] = (dy / (shape[2] * shape[3]))[:, :, None, None]
        return [dx], {}


def _two_by_two(geo, xshape, yshape) -> bool:
    """Whether the unrolled 2x2/2 kernels apply: 2x2 windows at stride 2, no padding, every
    window inside the input (round=ceil's last window over an odd size is not: it read past the
    row, and past the plane)."""
    return (geo == (2, 2, 2, 2, 0, 0) and 2 * yshape[2] <= xshape[2]
            and 2 * yshape[3] <= xshape[3])


def _parts(x, y, geo=(1, 1)):
    """Parts for a pooling kernel between x and y (N, C, H, W), split by samples: a window's
    taps for each output, and the input read once."""
    return min(split(x.size + y.size * geo[0] * geo[1]), x.shape[0])


# Average pooling runs tap by tap: for each (i, j) of the window, one long sweep over the output
# rows; max pooling keeps the index of each maximum for its backward scatter, and 2x2/2 windows,
# the common case, get an unrolled kernel. Every kernel splits the samples of the batch into parts.
@launcher
def _maxpool_cpu(parts, x, kh, kw, sh, sw, ph, pw, y, arg):
    run_parts(_maxpool_part, parts, (x, kh, kw, sh, sw, ph, pw, y, arg))


@kernel()
def _maxpool_part(t, parts, x, kh, kw, sh, sw, ph, pw, y, arg):
    """y = the window maximum (padding never wins); arg = its flat index in the H*W image, the
    first maximum in row-major order, as PyTorch keeps it."""
    n_, c_, h_, w_ = x.shape
    lo, hi = share(n_, t, parts)
    for n in range(lo, hi):
        for c in range(c_):
            img = x[n, c]
            for oy in range(y.shape[2]):
                y0, y1 = max(oy * sh - ph, 0), min(oy * sh - ph + kh, h_)
                for ox in range(y.shape[3]):
                    x0, x1 = max(ox * sw - pw, 0), min(ox * sw - pw + kw, w_)
                    best, where = img[y0, x0], y0 * w_ + x0
                    for iy in range(y0, y1):
                        for ix in range(x0, x1):
                            v = img[iy, ix]
                            bigger = v > best
                            where = iy * w_ + ix if bigger else where
                            best = v if bigger else best
                    y[n, c, oy, ox] = best
                    arg[n, c, oy, ox] = where


@launcher
def _maxpool2x2_cpu(parts, x, y, arg):
    run_parts(_maxpool2x2_part, parts, (x, y, arg))


@kernel()
def _maxpool2x2_part(t, parts, x, y, arg):
    """2x2 windows at stride 2, no padding: unrolled."""
    n_, c_, h_, w_ = x.shape
    lo, hi = share(n_, t, parts)
    for n in range(lo, hi):
        for c in range(c_):
            for oy in range(y.shape[2]):
                top = 2 * oy * w_
                for ox in range(y.shape[3]):
                    a = x[n, c, 2 * oy, 2 * ox]
                    b = x[n, c, 2 * oy, 2 * ox + 1]
                    d = x[n, c, 2 * oy + 1, 2 * ox]
                    e = x[n, c, 2 * oy + 1, 2 * ox + 1]
                    k = top + 2 * ox
                    best, k = (b, k + 1) if b > a else (a, k)
                    best, k = (d, top + w_ + 2 * ox) if d > best else (best, k)
                    best, k = (e, top + w_ + 2 * ox + 1) if e > best else (best, k)
                    y[n, c, oy, ox] = best
                    arg[n, c, oy, ox] = k


@launcher
def _maxpool_back_cpu(parts, dy, arg, dx):
    run_parts(_maxpool_back_part, parts, (dy, arg, dx))


@kernel()
def _maxpool_back_part(t, parts, dy, arg, dx):
    n_, c_, h_, w_ = dx.shape
    lo, hi = share(n_, t, parts)
    for n in range(lo, hi):
        for c in range(c_):
            flat = dx[n, c].reshape(-1)
            _fill_cpu(flat, 0.0)
            for oy in range(dy.shape[2]):
                for ox in range(dy.shape[3]):
                    flat[arg[n, c, oy, ox]] += dy[n, c, oy, ox]


@launcher
def _avgpool2x2_cpu(parts, x, y):
    run_parts(_avgpool2x2_part, parts, (x, y))


@kernel()
def _avgpool2x2_part(t, parts, x, y):
    """2x2 windows at stride 2, no padding: unrolled, the mean in the data's type (the general
    kernel below, tap by tap over rows of 14, took 0.35 + 0.48 ms forward and backward on
    LeNet-5's first pool at batch 64, these two 0.06 + 0.15)."""
    quarter = np.float32(0.25)  # (float32 keeps float32 data in float32; exact in float64)
    lo, hi = share(x.shape[0], t, parts)
    for n in range(lo, hi):
        for c in range(x.shape[1]):
            img, out = x[n, c], y[n, c]
            for oy in range(y.shape[2]):
                top, bottom = img[2 * oy], img[2 * oy + 1]
                for ox in range(y.shape[3]):
                    out[oy, ox] = ((top[2 * ox] + top[2 * ox + 1])
                                   + (bottom[2 * ox] + bottom[2 * ox + 1])) * quarter


@launcher
def _avgpool2x2_back_cpu(parts, dy, dx):
    run_parts(_avgpool2x2_back_part, parts, (dy, dx))


@kernel()
def _avgpool2x2_back_part(t, parts, dy, dx):
    """Each window's four inputs get a quarter of its output gradient; a last row or column that
    no window covers (an odd size, rounded down) gets zero."""
    quarter = np.float32(0.25)
    oh, ow = dy.shape[2], dy.shape[3]
    odd = dx.shape[2] > 2 * oh or dx.shape[3] > 2 * ow
    lo, hi = share(dx.shape[0], t, parts)
    for n in range(lo, hi):
        for c in range(dx.shape[1]):
            g, out = dy[n, c], dx[n, c]
            if odd:
                _fill_cpu(out.reshape(-1), 0.0)
            for oy in range(oh):
                top, bottom = out[2 * oy], out[2 * oy + 1]
                for ox in range(ow):
                    v = g[oy, ox] * quarter
                    top[2 * ox] = top[2 * ox + 1] = bottom[2 * ox] = bottom[2 * ox + 1] = v


@launcher
def _avgpool_cpu(parts, x, kh, kw, sh, sw, ph, pw, y):
    run_parts(_avgpool_part, parts, (x, kh, kw, sh, sw, ph, pw, y))


@kernel()
def _avgpool_part(t, parts, x, kh, kw, sh, sw, ph, pw, y):
    """y = the window mean, padded zeros counted (divide by kh*kw, as PyTorch and Caffe)."""
    n_, c_, h_, w_ = x.shape
    oh, ow = y.shape[2], y.shape[3]
    scale = 1.0 / (kh * kw)
    lo, hi = share(n_, t, parts)
    for n in range(lo, hi):
        for c in range(c_):
            img, out = x[n, c], y[n, c]
            _fill_cpu(out.reshape(-1), 0.0)
            for i in range(kh):
                ylo, yhi = _valid(oh, sh, ph, i, h_)
                for j in range(kw):
                    xlo, xhi = _valid(ow, sw, pw, j, w_)
                    for oy in range(ylo, yhi):
                        iy = oy * sh - ph + i
                        for ox in range(xlo, xhi):
                            out[oy, ox] += img[iy, ox * sw - pw + j]
            for oy in range(oh):
                for ox in range(ow):
                    out[oy, ox] *= scale


@launcher
def _avgpool_back_cpu(parts, dy, kh, kw, sh, sw, ph, pw, dx):
    run_parts(_avgpool_back_part, parts, (dy, kh, kw, sh, sw, ph, pw, dx))


@kernel()
def _avgpool_back_part(t, parts, dy, kh, kw, sh, sw, ph, pw, dx):
    n_, c_, h_, w_ = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    scale = 1.0 / (kh * kw)
    lo, hi = share(n_, t, parts)
    for n in range(lo, hi):
        for c in range(c_):
            g, out = dy[n, c], dx[n, c]
            _fill_cpu(out.reshape(-1), 0.0)
            for i in range(kh):
                ylo, yhi = _valid(oh, sh, ph, i, h_)
                for j in range(kw):
                    xlo, xhi = _valid(ow, sw, pw, j, w_)
                    for oy in range(ylo, yhi):
                        iy = oy * sh - ph + i
                        for ox in range(xlo, xhi):
                            out[iy, ox * sw - pw + j] += g[oy, ox] * scale


@implements(kinds.Upsample, "cpu")
class Upsample(Implementation):
    """Nearest: each output pixel copies its source; bilinear: elementwise.linear_taps' two
    sources per dimension. Backward is the adjoint: each output's gradient goes back to its
    sources with the same weights."""

    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        s = h["scale"]
        y = ctx.value(x.shape[:2] + (x.shape[2] * s, x.shape[3] * s), x.dtype)
        parts = min(split(4 * y.size), x.shape[0] * x.shape[1])
        launch(_upsample_cpu, _upsample_part, parts, x, s, h["mode"] == "bilinear", y)
        return y, x.shape

    def backward(self, h, p, shape, dy, ctx):
        dx = ctx.grad(shape, dy.dtype)
        parts = min(split(4 * dy.size), dx.shape[0] * dx.shape[1])
        launch(_upsample_back_cpu, _upsample_back_part, parts, np.ascontiguousarray(dy), h["scale"],
               h["mode"] == "bilinear", dx)
        return [dx], {}


@launcher
def _upsample_cpu(parts, x, s, bilinear, y):
    run_parts(_upsample_part, parts, (x, s, bilinear, y))


@kernel()
def _upsample_part(t, parts, x, s, bilinear, y):
    n_, c_, h_, w_ = x.shape
    lo, hi = share(n_ * c_, t, parts)
    for q in range(lo, hi):
        img, out = x[q // c_, q % c_], y[q // c_, q % c_]
        for oy in range(h_ * s):
            y0, y1, a0, a1 = ew.linear_taps(oy, s, h_)
            for ox in range(w_ * s):
                if bilinear:
                    x0, x1, b0, b1 = ew.linear_taps(ox, s, w_)
                    out[oy, ox] = (a0 * (b0 * img[y0, x0] + b1 * img[y0, x1])
                                   + a1 * (b0 * img[y1, x0] + b1 * img[y1, x1]))
                else:
                    out[oy, ox] = img[oy // s, ox // s]


@launcher
def _upsample_back_cpu(parts, dy, s, bilinear, dx):
    run_parts(_upsample_back_part, parts, (dy, s, bilinear, dx))


@kernel()
def _upsample_back_part(t, parts, dy, s, bilinear, dx):
    n_, c_, h_, w_ = dx.shape
    lo, hi = share(n_ * c_, t, parts)
    for q in range(lo, hi):
        g, out = dy[q // c_, q % c_], dx[q // c_, q % c_]
        _fill_cpu(out.reshape(-1), 0.0)
        for oy in range(h_ * s):
            y0, y1, a0, a1 = ew.linear_taps(oy, s, h_)
            for ox in range(w_ * s):
                v = g[oy, ox]
                if bilinear:
                    x0, x1, b0, b1 = ew.linear_taps(ox, s, w_)
                    out[y0, x0] += a0 * b0 * v
                    out[y0, x1] += a0 * b1 * v
                    out[y1, x0] += a1 * b0 * v
                    out[y1, x1] += a1 * b1 * v
                else:
                    out[oy // s, ox // s] += v
