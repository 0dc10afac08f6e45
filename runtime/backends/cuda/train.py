"""What training does to arrays on the GPU (trainer.py through the backend): batches gathered from
a data set kept in device memory, the L1/L2 penalty, gradient clipping, the finiteness check and
the accuracy count, each a kernel whose result, where there is one, is a single number."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .kernels import ABSOLUTE, SQUARES, flat, reduce
from .launch import PARTS, grid, kernel


def take(a, idx):
    """The rows a[idx] of a device array, idx a NumPy array of row indices (copied over), as a
    device array; of a host array (the trainer's batches of other sizes, made from a host batch
    where the data set is not kept on the device), gathered here and copied over."""
    if isinstance(a, np.ndarray):
        return cuda.to_device(np.ascontiguousarray(a[np.asarray(idx)]))
    rows = cuda.to_device(np.ascontiguousarray(idx, np.int64))
    out = cuda.device_array((len(idx),) + a.shape[1:], a.dtype)
    width = a.size // a.shape[0] if a.shape[0] else 0
    if out.size:
        _take_rows[grid(out.size)](a.reshape(a.shape[0], width), rows,
                                   out.reshape(len(idx), width))
    return out


@kernel()
def _take_rows(a, rows, out):
    w = a.shape[1]
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[t // w, t % w] = a[rows[t // w], t % w]


def penalty(w, g, l1, l2):
    _penalty_grad[grid(w.size)](flat(w), flat(g), w.dtype.type(l1), w.dtype.type(l2))
    sums = cuda.device_array(2, np.float64)
    reduce(w.reshape(1, 1, w.size), sums[0:1], ABSOLUTE)
    reduce(w.reshape(1, 1, w.size), sums[1:2], SQUARES)
    s = sums.copy_to_host()
    return l1 * float(s[0]) + 0.5 * l2 * float(s[1])


@kernel()
def _penalty_grad(w, g, l1, l2):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        v = w[i]
        sign = 1 if v > 0 else (-1 if v < 0 else 0)
        g[i] = g[i] + (l1 * sign + l2 * v)


def clip_values(g, limit):
    _clip[grid(g.size)](flat(g), g.dtype.type(limit))


@kernel()
def _clip(g, limit):
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        g[i] = min(max(g[i], -limit), limit)


def sum_squares(a):
    out = cuda.device_array(1, np.float64)
    reduce(a.reshape(1, 1, a.size), out, SQUARES)
    return float(out.copy_to_host()[0])


def scale(a, factor):
    _scale[grid(a.size)](flat(a), a.dtype.type(factor))


@kernel()
def _scale(a, factor):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = a[i] * factor


def all_finite(arrays):
    """One number back: the sum of |x| over all the arrays is finite exactly when they are (in
    float64, the sum of finite float32 or float64 values does not overflow short of 1e300)."""
    arrays = [a for a in arrays if a.size]
    out = cuda.device_array(len(arrays), np.float64)
    for i, a in enumerate(arrays):
        reduce(a.reshape(1, 1, a.size), out[i:i + 1], ABSOLUTE)
    return all(math.isfinite(v) for v in out.copy_to_host())


def accuracy(out, y, binary):
    """The fraction of correct predictions (Backend.accuracy). Labels on the host (a batch the
    trainer augmented or measures from the host) are copied over once here: handed to the kernel
    as they were, numba-cuda copied them there and back at the launch, with a warning."""
    if isinstance(y, np.ndarray):
        y = cuda.to_device(np.ascontiguousarray(y))
    hits = cuda.device_array(PARTS, np.float64)
    if binary:
        _binary_hits[grid(PARTS)](flat(out), flat(y), hits)
        count = out.size
    else:  # a class per sample, or per pixel: out (N, K, P), y (N, P)
        n, k = out.shape[0], out.shape[1]
        rows = out.reshape(n, k, out.size // (n * k))
        _argmax_hits[grid(PARTS)](rows, y.reshape(n, rows.shape[2]), hits)
        count = n * rows.shape[2]
    return float(hits.copy_to_host().sum()) / count


@kernel()
def _argmax_hits(out, y, hits):
    parts, rows = hits.size, out.shape[2]
    for q in range(cuda.grid(1), parts, cuda.gridsize(1)):
        acc = 0.0
        for t in range(q, out.shape[0] * rows, parts):
            i, p = t // rows, t % rows
            best = 0
            for j in range(1, out.shape[1]):
                if out[i, j, p] > out[i, best, p]:
                    best = j
            acc += 1.0 if best == y[i, p] else 0.0
        hits[q] = acc


@kernel()
def _binary_hits(out, y, hits):
    parts = hits.size
    for p in range(cuda.grid(1), parts, cuda.gridsize(1)):
        acc = 0.0
        for i in range(p, out.size, parts):
            acc += 1.0 if (out[i] > 0.5) == (y[i] > 0.5) else 0.0
        hits[p] = acc
