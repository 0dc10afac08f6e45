"""POOL, GAP and UPSAMPLE on the GPU: one thread per output value forward; backward, one thread
per input value gathering the windows (or outputs) that read it (no atomics)."""
from __future__ import annotations

import numpy as np
from numba import cuda

from netc.compiler.kinds import pool as kinds
from netc.compiler.shapes import window_geometry

from ..registry import Implementation, implements
from .kernels import reduce
from .launch import ew, grid, kernel


def _window(h):
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    return kh, kw, sh, sw, ph, pw


@implements(kinds.Pool, "cuda")
class Pool(Implementation):
    """Max pooling keeps the flat index (in H*W) of each window's first maximum, as the CPU;
    average pooling counts padded zeros (divides by kh*kw)."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        oh, ow, _, _ = window_geometry(h, x.shape[1:])
        y = ctx.buffer("y", x.shape[:2] + (oh, ow), x.dtype)
        if h["mode"] == "avg":
            _avgpool[grid(y.size)](x, *_window(h), y)
            return y, (x.shape, None)
        arg = ctx.buffer("arg", y.shape, np.int32)
        _maxpool[grid(y.size)](x, *_window(h), y, arg)
        return y, (x.shape, arg)

    def backward(self, h, p, cache, dy, ctx):
        shape, arg = cache
        dx = ctx.grad(shape, dy.dtype)
        zero = dy.dtype.type(0)
        if arg is None:
            _avgpool_grad[grid(dx.size)](dy, *_window(h), zero, dx)
        else:
            _maxpool_grad[grid(dx.size)](dy, arg, *_window(h), zero, dx)
        return [dx], {}


@implements(kinds.GlobalAvgPool, "cuda")
class GlobalAvgPool(Implementation):
    def forward(self, h, p, xs, ctx):
        x = xs[0]
        n, c = x.shape[0], x.shape[1]
        y = ctx.buffer("y", (n, c), x.dtype)
        reduce(x.reshape(1, n * c, x.size // (n * c)), y.reshape(n * c),
               scale=1.0 / (x.shape[2] * x.shape[3]), ctx=ctx)
        return y, x.shape

    def backward(self, h, p, shape, dy, ctx):
        dx = ctx.grad(shape, dy.dtype)
        _spread[grid(dx.size)](dy, dy.dtype.type(1.0 / (shape[2] * shape[3])), dx)
        return [dx], {}


@kernel()
def _maxpool(x, kh, kw, sh, sw, ph, pw, y, arg):
    _, c_, h_, w_ = x.shape
    _, _, oh, ow = y.shape
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, c, oy, ox = t // (c_ * oh * ow), (t // (oh * ow)) % c_, (t // ow) % oh, t % ow
        y0, x0 = max(oy * sh - ph, 0), max(ox * sw - pw, 0)
        y1, x1 = min(oy * sh - ph + kh, h_), min(ox * sw - pw + kw, w_)
        best, where = x[n, c, y0, x0], y0 * w_ + x0
        for iy in range(y0, y1):
            for ix in range(x0, x1):
                if x[n, c, iy, ix] > best:
                    best, where = x[n, c, iy, ix], iy * w_ + ix
        y[n, c, oy, ox] = best
        arg[n, c, oy, ox] = where


@kernel()
def _maxpool_grad(dy, arg, kh, kw, sh, sw, ph, pw, zero, dx):
    """dx[n, c, iy, ix] = the sum of dy over the windows whose maximum it was."""
    _, c_, h_, w_ = dx.shape
    _, _, oh, ow = dy.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, iy, ix = t // (c_ * h_ * w_), (t // (h_ * w_)) % c_, (t // w_) % h_, t % w_
        acc = zero
        here = iy * w_ + ix
        for oy in range(max(0, (iy + ph - kh) // sh), min(oh, (iy + ph) // sh + 1)):
            for ox in range(max(0, (ix + pw - kw) // sw), min(ow, (ix + pw) // sw + 1)):
                if arg[n, c, oy, ox] == here:
                    acc += dy[n, c, oy, ox]
        dx[n, c, iy, ix] = acc


@kernel()
def _avgpool(x, kh, kw, sh, sw, ph, pw, y):
    _, c_, h_, w_ = x.shape
    _, _, oh, ow = y.shape
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, c, oy, ox = t // (c_ * oh * ow), (t // (oh * ow)) % c_, (t // ow) % oh, t % ow
        acc = 0.0
        for iy in range(max(oy * sh - ph, 0), min(oy * sh - ph + kh, h_)):
            for ix in range(max(ox * sw - pw, 0), min(ox * sw - pw + kw, w_)):
                acc += x[n, c, iy, ix]
        y[n, c, oy, ox] = acc / (kh * kw)


@kernel()
def _avgpool_grad(dy, kh, kw, sh, sw, ph, pw, zero, dx):
    """dx[n, c, iy, ix] = the sum of dy / (kh*kw) over the windows that hold it."""
    _, c_, h_, w_ = dx.shape
    _, _, oh, ow = dy.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, iy, ix = t // (c_ * h_ * w_), (t // (h_ * w_)) % c_, (t // w_) % h_, t % w_
        acc = zero
        for oy in range(max(0, (iy + ph - kh) // sh), min(oh, (iy + ph) // sh + 1)):
            if oy * sh - ph <= iy < oy * sh - ph + kh:
                for ox in range(max(0, (ix + pw - kw) // sw), min(ow, (ix + pw) // sw + 1)):
                    if ox * sw - pw <= ix < ox * sw - pw + kw:
                        acc += dy[n, c, oy, ox]
        dx[n, c, iy, ix] = acc / (kh * kw)


@kernel()
def _spread(dy, scale, dx):
    """dx[n, c, :, :] = dy[n, c] * scale (GAP's backward)."""
    _, c_, h_, w_ = dx.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c = t // (c_ * h_ * w_), (t // (h_ * w_)) % c_
        dx[n, c, (t // w_) % h_, t % w_] = dy[n, c] * scale


@implements(kinds.Upsample, "cuda")
class Upsample(Implementation):
    """As the CPU's; backward gathers, for each input pixel, the outputs that read it."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        s = h["scale"]
        y = ctx.buffer("y", x.shape[:2] + (x.shape[2] * s, x.shape[3] * s), x.dtype)
        _upsample[grid(y.size)](x, s, h["mode"] == "bilinear", y)
        return y, x.shape

    def backward(self, h, p, shape, dy, ctx):
        dx = ctx.grad(shape, dy.dtype)
        _upsample_grad[grid(dx.size)](dy, h["scale"], h["mode"] == "bilinear", dx)
        return [dx], {}


@kernel()
def _upsample(x, s, bilinear, y):
    _, c_, h_, w_ = x.shape
    _, _, oh, ow = y.shape
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, c, oy, ox = t // (c_ * oh * ow), (t // (oh * ow)) % c_, (t // ow) % oh, t % ow
        if bilinear:
            y0, y1, a0, a1 = ew.linear_taps(oy, s, h_)
            x0, x1, b0, b1 = ew.linear_taps(ox, s, w_)
            y[n, c, oy, ox] = (a0 * (b0 * x[n, c, y0, x0] + b1 * x[n, c, y0, x1])
                               + a1 * (b0 * x[n, c, y1, x0] + b1 * x[n, c, y1, x1]))
        else:
            y[n, c, oy, ox] = x[n, c, oy // s, ox // s]


@kernel()
def _upsample_grad(dy, s, bilinear, dx):
    _, c_, h_, w_ = dx.shape
    _, _, oh, ow = dy.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, iy, ix = t // (c_ * h_ * w_), (t // (h_ * w_)) % c_, (t // w_) % h_, t % w_
        acc = 0.0
        if bilinear:  # the outputs that can read row iy lie within rows s(iy - 1) .. s(iy + 2)
            for oy in range(max(0, s * (iy - 1)), min(oh, s * (iy + 2))):
                y0, y1, a0, a1 = ew.linear_taps(oy, s, h_)
                wy = (a0 if y0 == iy else 0.0) + (a1 if y1 == iy else 0.0)
                if wy == 0.0:
                    continue
                for ox in range(max(0, s * (ix - 1)), min(ow, s * (ix + 2))):
                    x0, x1, b0, b1 = ew.linear_taps(ox, s, w_)
                    wx = (b0 if x0 == ix else 0.0) + (b1 if x1 == ix else 0.0)
                    acc += wy * wx * dy[n, c, oy, ox]
        else:
            for oy in range(iy * s, iy * s + s):
                for ox in range(ix * s, ix * s + s):
                    acc += dy[n, c, oy, ox]
        dx[n, c, iy, ix] = acc
