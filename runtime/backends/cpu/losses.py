"""The loss kernels on the CPU: elementwise.py's rules, summed; each gradient scaled by the
reduction's 1/N."""
from __future__ import annotations

import numpy as np
from numba import prange

from .. import elementwise as ew
from .jit import kernel, launch, launcher, run_part, share, split


@kernel()
def _pointwise_cpu(code, out, target, delta, scale, grad):
    total = 0.0
    for i in range(out.size):
        v, g = ew.pointwise_loss(code, out[i], target[i], delta)
        total += v
        grad[i] = g * scale
    return total * scale


@kernel(inline=True)
def _row(code, out, target, labels, logits, scale, grad, i, p):
    """The loss of row out[i, :, p], its gradient (times scale) into grad[i, :, p]."""
    g = grad[i, :, p]
    value = ew.row_loss(code, out, target, labels, i, p, g, logits)
    for j in range(out.shape[1]):
        g[j] *= scale
    return value


@launcher
def _rows_cpu(parts, code, out, target, labels, logits, scale, grad, sums):
    for t in prange(parts):
        run_part(_rows_part, np.int64(t), parts, (
            code, out, target, labels, logits, scale, grad, sums))


@kernel()
def _rows_part(t, parts, code, out, target, labels, logits, scale, grad, sums):
    """Row losses over out (N, K, P), a row out[n, :, p] per sample (P = 1) or pixel, for part
    t's samples: cross-entropy from labels (N, P) or probability rows target (N, K, P), KL,
    multiclass hinge. sums[n]: sample n's sum over its pixels."""
    lo, hi = share(out.shape[0], t, parts)
    for i in range(lo, hi):
        s = 0.0
        for p in range(out.shape[2]):
            s += _row(code, out, target, labels, logits, scale, grad, i, p)
        sums[i] = s


@kernel()
def _total_cpu(sums, scale):
    """The samples' sums added in order (the same total however the samples were split)."""
    total = 0.0
    for i in range(sums.size):
        total += sums[i]
    return total * scale


def rows(code, out, target, labels, logits, scale, grad):
    """The row losses' total (times scale), their gradients into grad; the samples split across
    threads where the rows are many (about 20 operations a value: exps, logs, sums)."""
    sums = np.empty(out.shape[0])
    parts = min(split(20 * out.size), out.shape[0])
    launch(_rows_cpu, _rows_part, parts, code, out, target, labels, logits, scale, grad, sums)
    return _total_cpu(sums, scale)
