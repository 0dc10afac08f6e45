"""The loss kernels on the CPU: elementwise.py's rules, summed; each gradient scaled by the
reduction's 1/N."""
from __future__ import annotations

import math

import numpy as np

from .. import elementwise as ew
from .common import _softmax_terms_cpu
from .jit import kernel, launch, launcher, run_parts, share, split


@kernel()
def _pointwise_cpu(code, out, target, delta, scale, grad):
    total = 0.0
    for i in range(out.size):
        v, g = ew.pointwise_loss(code, out[i], target[i], delta)
        total += v
        grad[i] = g * scale
    return total * scale


@kernel(inline=True)
def _rows(loss, t, parts, out, target, labels, logits, scale, grad, sums):
    """A row loss (elementwise.py's cross_entropy_at, ...) over out (N, K, P), a row
    out[n, :, p] per sample (P = 1) or pixel, for part t's samples, from labels (N, P) or
    probability rows target (N, K, P); each row's gradient (times scale) into grad[n, :, p].
    sums[n]: sample n's sum over its pixels."""
    lo, hi = share(out.shape[0], t, parts)
    for i in range(lo, hi):
        s = 0.0
        for p in range(out.shape[2]):
            g = grad[i, :, p]
            s += loss(out, target, labels, i, p, g, logits)
            for j in range(out.shape[1]):
                g[j] *= scale
        sums[i] = s


# A part per row loss, each compiling that loss alone. One part for the four, by a code read at
# run time, compiled all of them: 2.4-3.4 s of a first run's compiling (digits.net's first step),
# against 0.8-1.0 s for cross-entropy alone. (With the code a constant, pruned before typing,
# it still took 1.9-2.5 s: Numba processes each function it inlines before it prunes.)
@kernel()
def _cross_entropy_part(t, parts, out, target, labels, logits, scale, grad, sums):
    _rows(ew.cross_entropy_at, t, parts, out, target, labels, logits, scale, grad, sums)


@kernel()
def _soft_cross_entropy_part(t, parts, out, target, labels, logits, scale, grad, sums):
    _rows(ew.soft_cross_entropy_at, t, parts, out, target, labels, logits, scale, grad, sums)


@kernel()
def _kl_part(t, parts, out, target, labels, logits, scale, grad, sums):
    _rows(ew.kl_at, t, parts, out, target, labels, logits, scale, grad, sums)


@kernel()
def _multiclass_hinge_part(t, parts, out, target, labels, logits, scale, grad, sums):
    _rows(ew.multiclass_hinge_at, t, parts, out, target, labels, logits, scale, grad, sums)


@launcher
def _cross_entropy_cpu(parts, out, target, labels, logits, scale, grad, sums):
    run_parts(_cross_entropy_part, parts, (out, target, labels, logits, scale, grad, sums))


@launcher
def _soft_cross_entropy_cpu(parts, out, target, labels, logits, scale, grad, sums):
    run_parts(_soft_cross_entropy_part, parts, (out, target, labels, logits, scale, grad, sums))


@launcher
def _kl_cpu(parts, out, target, labels, logits, scale, grad, sums):
    run_parts(_kl_part, parts, (out, target, labels, logits, scale, grad, sums))


@launcher
def _multiclass_hinge_cpu(parts, out, target, labels, logits, scale, grad, sums):
    run_parts(_multiclass_hinge_part, parts, (out, target, labels, logits, scale, grad, sums))


# (launcher, part) by the row loss's code
ROWS = {ew.CROSS_ENTROPY: (_cross_entropy_cpu, _cross_entropy_part),
        ew.SOFT_CROSS_ENTROPY: (_soft_cross_entropy_cpu, _soft_cross_entropy_part),
        ew.KL: (_kl_cpu, _kl_part),
        ew.MULTICLASS_HINGE: (_multiclass_hinge_cpu, _multiclass_hinge_part)}


@launcher
def _cross_entropy_pixels_cpu(parts, out, target, labels, logits, scale, grad, sums):
    run_parts(_cross_entropy_pixels_part, parts, (out, target, labels, logits, scale, grad, sums))


@kernel()
def _cross_entropy_pixels_part(t, parts, out, target, labels, logits, scale, grad, sums):
    """Cross-entropy from the logits out (N, K, P) of P > 1 pixels a sample and labels (N, P),
    for part t's samples, a sample's pixels at once (common._softmax_terms_cpu: the exps 8
    pixels at a time on AVX2, where _cross_entropy_part's rows stride across the pixels and call
    the C library's exp for each value): the loss lse - z[label] with lse = log(s) + m, the
    gradient (softmax - onehot) times scale."""
    lo, hi = share(out.shape[0], t, parts)
    k_, p_ = out.shape[1], out.shape[2]
    m, s = np.empty(p_, out.dtype), np.empty(p_, out.dtype)
    for i in range(lo, hi):
        z, g, label = out[i], grad[i], labels[i]
        _softmax_terms_cpu(z, g, m, s)
        total = 0.0
        for p in range(p_):
            total += math.log(s[p]) + m[p] - z[label[p], p]
            s[p] = scale / s[p]
        for k in range(k_):
            for p in range(p_):
                g[k, p] *= s[p]
        for p in range(p_):
            g[label[p], p] -= scale
        sums[i] = total


PIXELS = (_cross_entropy_pixels_cpu, _cross_entropy_pixels_part)


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
    pixels = code == ew.CROSS_ENTROPY and out.shape[2] > 1
    launch(*(PIXELS if pixels else ROWS[code]), parts, out, target, labels, logits, scale, grad,
           sums)
    return _total_cpu(sums, scale)
