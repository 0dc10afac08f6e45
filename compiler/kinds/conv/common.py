"""Kernels every CONV algorithm shares: the fused activations, row epilogues and prologues, fills."""
from __future__ import annotations

import numpy as np

from ...jit import REDUCE, cpu_kernel


@cpu_kernel()
def _fill_cpu(a, v):
    for i in range(a.size):
        a[i] = v


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


@cpu_kernel(inline=True)  # called once per output row: a call cost as much as a short row
def _act_row_cpu(code, src, b, dst, count):
    """dst[:count] = act(src[:count] + b); the activation is chosen outside the inner loops."""
    if code == 0:
        for k in range(count):
            dst[k] = src[k] + b
    elif code == 1:
        for k in range(count):
            v = src[k] + b
            dst[k] = v if v > 0 else 0
    else:
        for k in range(count):
            dst[k] = _act(code, src[k] + b)


@cpu_kernel(fastmath=REDUCE, inline=True)
def _grad_row_cpu(code, g, out, dst, count):
    """dst[:count] = g * act'(z) (from out = act(z)); returns its sum (for the bias gradient)."""
    acc = 0.0
    if code == 0:
        for k in range(count):
            dst[k] = g[k]
            acc += g[k]
    elif code == 1:
        for k in range(count):
            v = g[k] if out[k] > 0 else 0
            dst[k] = v
            acc += v
    else:
        for k in range(count):
            v = g[k] * _act_grad_from_y(code, out[k])
            dst[k] = v
            acc += v
    return acc


CHUNK_BYTES = 1 << 20  # the unfolded input of one chunk of samples: about 1 MiB


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
