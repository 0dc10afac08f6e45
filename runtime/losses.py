"""Losses: value and gradient with respect to the network's output (or its logits when the loss is
fused with the output activation: softmax + cross-entropy, sigmoid + binary cross-entropy).

Reductions follow PyTorch's defaults: MSE, MAE, Huber and BCE average over all elements;
cross-entropy, hinge and multiclass hinge over samples; KL sums over classes, averages over samples.
"""
from __future__ import annotations

import numpy as np

from netc.compiler.jit import cpu_kernel
from netc.compiler.kinds.activation import _exp_row_cpu

LOSSES = ("cross_entropy", "bce", "mse", "mae", "huber", "hinge", "multiclass_hinge", "kl")
# losses that take the logits when the output activation matches
FUSED = {"cross_entropy": "softmax", "kl": "softmax", "bce": "sigmoid"}
NATURAL = {"softmax": "cross_entropy", "sigmoid": "bce", "none": "mse"}
CLASS_LABELS = ("cross_entropy", "multiclass_hinge")


def log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def cross_entropy(z, y):
    """Softmax cross-entropy from logits: labels (N,) integers, or (N, K) probabilities.
    dL/dz = (softmax(z) - onehot(y)) / N."""
    n = z.shape[0]
    if y.ndim == 1:  # one kernel: NumPy's dozen small operations took 25 us at 64 x 10
        grad = np.empty_like(z)
        return _cross_entropy_labels_cpu(np.ascontiguousarray(z), y, grad), grad
    logp = log_softmax(z)
    p = np.exp(logp)
    return -(y * logp).sum() / n, (p * y.sum(axis=1, keepdims=True) - y) / n


@cpu_kernel()
def _cross_entropy_labels_cpu(z, y, grad):
    """The mean over rows of log-sum-exp(z_i) - z_i[y_i]; grad = (softmax(z) - onehot(y)) / N.
    NaN in z gives a NaN loss, as in NumPy."""
    n, k = z.shape
    total = 0.0
    for i in range(n):
        m, s = _exp_row_cpu(z[i], grad[i])
        total += np.log(s) + m - z[i, y[i]]
        for j in range(k):
            grad[i, j] = grad[i, j] / s / n
        grad[i, y[i]] -= 1 / n
    return total / n


def bce(z, y):
    """Binary cross-entropy from the logit, stable: max(z,0) - z*y + log(1 + exp(-|z|))."""
    loss = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    e = np.exp(-np.abs(z))
    sig = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return loss.mean(), (sig - y) / z.size


def mse(o, y):
    d = o - y
    return (d * d).mean(), 2 * d / d.size


def mae(o, y):
    d = o - y
    return np.abs(d).mean(), np.sign(d) / d.size


def huber(o, y, delta=1.0):
    d = o - y
    a = np.abs(d)
    loss = np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return loss.mean(), np.clip(d, -delta, delta) / d.size


def hinge(o, y):
    """Targets +-1: sum over outputs of max(0, 1 - y*s), averaged over samples."""
    n = o.shape[0]
    m = np.maximum(0, 1 - y * o)
    return m.sum() / n, np.where(m > 0, -y, 0) / n


def multiclass_hinge(o, y):
    """sum over j != y of max(0, s_j - s_y + 1), averaged over samples (integer labels)."""
    n = o.shape[0]
    idx = np.arange(n)
    margins = np.maximum(0, o - o[idx, y][:, None] + 1)
    margins[idx, y] = 0
    g = (margins > 0).astype(o.dtype)
    g[idx, y] = -g.sum(axis=1)
    return margins.sum() / n, g / n


def kl(z, t, fused=True):
    """KL(t || p): sum over classes of t*(log t - log p), averaged over samples. With a softmax
    output p = softmax(z) from the logits; otherwise the outputs are log-probabilities (PyTorch)."""
    n = z.shape[0]
    logp = log_softmax(z) if fused else z
    logt = np.log(np.where(t > 0, t, 1))
    loss = (t * (logt - logp)).sum() / n
    if fused:
        return loss, (np.exp(logp) * t.sum(axis=1, keepdims=True) - t) / n
    return loss, -t / n


def compute(name, out, y, fused, delta=1.0):
    """(loss, dL/d(out)) for a loss name; `out` is the logits when `fused`."""
    if name == "cross_entropy":
        return cross_entropy(out, y)
    if name == "bce":  # with no sigmoid output the outputs are taken as logits (BCEWithLogits)
        return bce(out, y)
    if name == "kl":
        return kl(out, y, fused)
    if name == "huber":
        return huber(out, y, delta)
    return {"mse": mse, "mae": mae, "hinge": hinge, "multiclass_hinge": multiclass_hinge}[name](out, y)
