"""Kernels every CUDA layer family uses: fills, copies, sums of arrays, and reductions. A
reduction runs in two passes, without barriers: PARTS threads per reduced value each sum a
strided share (consecutive threads read consecutive values), then one thread per value adds its
parts in order, so that every run gives the same bits."""
from __future__ import annotations

import numpy as np
from numba import cuda

from .launch import PARTS, grid, kernel

# what a reduction sums (reduce's `mode`): x; x y; (x - m)^2; |x|; x^2; x y where y <= 0
VALUES, PRODUCTS, SQUARED_DEVIATIONS, ABSOLUTE, SQUARES, NEGATIVE_PRODUCTS = range(6)


@kernel()
def _fill(a, v):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = v


@kernel()
def _copy(src, dst):
    for i in range(cuda.grid(1), src.size, cuda.gridsize(1)):
        dst[i] = src[i]


@kernel()
def _add(a, b, out):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = a[i] + b[i]


@kernel()
def _partial_sums(mode, x, y, m, parts, out):
    """out[b, p] = the sum over the p-th share of x[:, b, :] (x viewed as (A, B, C)) of x, x*y,
    (x - m[b])^2, |x| or x^2 by `mode`, in float64."""
    a_, b_, c_ = x.shape
    for t in range(cuda.grid(1), b_ * parts, cuda.gridsize(1)):
        b, p = t // parts, t % parts
        acc = 0.0
        for j in range(p, a_ * c_, parts):
            v = x[j // c_, b, j % c_]
            if mode == PRODUCTS:
                v = v * y[j // c_, b, j % c_]
            elif mode == SQUARED_DEVIATIONS:
                v = (v - m[b]) * (v - m[b])
            elif mode == ABSOLUTE:
                v = abs(v)
            elif mode == SQUARES:
                v = v * v
            elif mode == NEGATIVE_PRODUCTS:
                w = y[j // c_, b, j % c_]
                v = v * w if w <= 0 else v * 0
            acc += v
        out[b, p] = acc


@kernel()
def _finish_sums(partial, scale, accumulate, out):
    for b in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        acc = 0.0
        for p in range(partial.shape[1]):
            acc += partial[b, p]
        out[b] = out[b] + acc * scale if accumulate else acc * scale


def flat(a):
    return a.reshape(a.size)


def fill(a, value):
    if a.size:
        _fill[grid(a.size)](flat(a), a.dtype.type(value))
    return a


def zeros(shape, dtype):
    return fill(cuda.device_array(shape, dtype), 0)


def copy(a):
    out = cuda.device_array(a.shape, a.dtype)
    if a.size:
        _copy[grid(a.size)](flat(contiguous(a)), flat(out))
    return out


def contiguous(a):
    """a itself if C-contiguous, else a contiguous copy of the 2-D or 4-D view a."""
    if a.is_c_contiguous():
        return a
    out = cuda.device_array(a.shape, a.dtype)
    if a.ndim == 2:
        _copy_strided2[grid(a.size)](a, out)
    else:
        _copy_strided4[grid(a.size)](a, out)
    return out


@kernel()
def _copy_strided2(src, dst):
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        r, c = i // dst.shape[1], i % dst.shape[1]
        dst[r, c] = src[r, c]


@kernel()
def _copy_strided4(src, dst):
    _, c_, h_, w_ = dst.shape
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        n, c, y, x = i // (c_ * h_ * w_), (i // (h_ * w_)) % c_, (i // w_) % h_, i % w_
        dst[n, c, y, x] = src[n, c, y, x]


def add(a, b, out=None):
    out = cuda.device_array(a.shape, a.dtype) if out is None else out
    if a.size:
        _add[grid(a.size)](flat(a), flat(b), flat(out))
    return out


def reduce(x3, out, mode=VALUES, y3=None, m=None, scale=1.0, accumulate=False, ctx=None):
    """out[b] = scale * sum over x3[:, b, :] (x3 an (A, B, C) view) of what `mode` says (added to
    out[b] with `accumulate`); out has B values (float64 or the data's type). Partial sums go
    into a workspace of ctx's, or a fresh array."""
    b_ = x3.shape[1]
    shape = (b_, PARTS)
    partial = (ctx.scratch("partial_sums", shape, np.float64) if ctx is not None
               else cuda.device_array(shape, np.float64))
    y3 = x3 if y3 is None else y3
    m = out if m is None else m
    _partial_sums[grid(b_ * PARTS)](mode, x3, y3, m, PARTS, partial)
    _finish_sums[grid(b_)](partial, scale, accumulate, out)
    return out


def total(x, mode=VALUES, ctx=None) -> float:
    """The sum of an array's values (or their absolute values, squares) as a host float."""
    out = cuda.device_array(1, np.float64)
    reduce(x.reshape(1, 1, x.size), out, mode, ctx=ctx)
    return float(out.copy_to_host()[0])
