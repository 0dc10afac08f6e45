"""The loss kernels on the CPU: elementwise.py's rules, summed; each gradient scaled by the
reduction's 1/N."""
from __future__ import annotations

import numpy as np
from numba import prange

from .. import elementwise as ew
from .jit import kernel


@kernel()
def _pointwise_cpu(code, out, target, delta, scale, grad):
    total = 0.0
    for i in range(out.size):
        v, g = ew.pointwise_loss(code, out[i], target[i], delta)
        total += v
        grad[i] = g * scale
    return total * scale


# rows (samples x pixels) from which the row losses split the samples across threads: below, a
# parallel launch costs more than the rows (LeNet's batch of one is a single row)
PARALLEL_ROWS = 4096


@kernel(inline=True)
def _row(code, out, target, labels, logits, scale, grad, i, p):
    """The loss of row out[i, :, p], its gradient (times scale) into grad[i, :, p]."""
    g = grad[i, :, p]
    value = ew.row_loss(code, out, target, labels, i, p, g, logits)
    for j in range(out.shape[1]):
        g[j] *= scale
    return value


@kernel()
def _rows_cpu(code, out, target, labels, logits, scale, grad):
    """Row losses over out (N, K, P), a row out[n, :, p] per sample (P = 1) or pixel:
    cross-entropy from labels (N, P) or probability rows target (N, K, P), KL, multiclass
    hinge. Summed per sample, then over the samples in order (as _rows_parallel_cpu)."""
    total = 0.0
    for i in range(out.shape[0]):
        s = 0.0
        for p in range(out.shape[2]):
            s += _row(code, out, target, labels, logits, scale, grad, i, p)
        total += s
    return total * scale


@kernel(parallel=True)
def _rows_parallel_cpu(code, out, target, labels, logits, scale, grad):
    """_rows_cpu with the samples split across threads: the same sums, so the same total."""
    part = np.empty(out.shape[0])
    for i in prange(out.shape[0]):
        s = 0.0
        for p in range(out.shape[2]):
            s += _row(code, out, target, labels, logits, scale, grad, i, p)
        part[i] = s
    total = 0.0
    for i in range(out.shape[0]):
        total += part[i]
    return total * scale


def rows(code, out, target, labels, logits, scale, grad):
    """The row losses' total (times scale), by the kernel that suits their number."""
    many = out.shape[0] > 1 and out.shape[0] * out.shape[2] >= PARALLEL_ROWS
    return (_rows_parallel_cpu if many else _rows_cpu)(code, out, target, labels, logits, scale,
                                                       grad)
