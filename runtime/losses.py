"""Losses: value and gradient with respect to the network's output, or to its logits when the loss
is fused with the output activation (softmax + cross-entropy or KL, sigmoid + binary
cross-entropy). The rules per element and per row are elementwise.py's; a backend runs them.

Reductions follow PyTorch's defaults: MSE, MAE, Huber and BCE average over all elements;
cross-entropy, hinge and multiclass hinge over samples; KL sums over classes, averages over samples.
For a per-pixel output (OUT per=pixel) the row losses take a row per pixel and average over all
the pixels of the batch (PyTorch's cross-entropy on N x K x H x W); for a per-step output (OUT
K after a sequence, N x T x K, the classes on the last axis) a row per step, averaged over all
the N*T steps of the batch (labels N x T).
"""
from __future__ import annotations

import numpy as np

from netc.compiler.settings import CLASS_LABELS, LOSSES  # noqa: F401 - the vocabulary, re-exported

from .backends import elementwise as ew

# losses that take the logits when the output activation matches
FUSED = {"cross_entropy": "softmax", "kl": "softmax", "bce": "sigmoid"}
# the loss an output activation calls for (else mse)
NATURAL = {"softmax": "cross_entropy", "sigmoid": "bce"}
# averaged over every element (the others sum over a sample's outputs and average over samples)
MEAN_OVER_ELEMENTS = ("mse", "mae", "huber", "bce")


def natural(output_act: str) -> str:
    return NATURAL.get(output_act, "mse")


def classes(out_shape) -> int:
    """The number of classes of an output shape (without the batch): K of K (a class per
    sample) and of K x H x W (per pixel, the first axis), the last axis of T x K (per step)."""
    return out_shape[-1] if len(out_shape) == 2 else out_shape[0]


def label_shape(out_shape) -> tuple:
    """The shape of one sample's class labels for an output shape: () for K, H x W for a
    per-pixel K x H x W, (T,) for a per-step T x K."""
    return tuple(out_shape[:-1]) if len(out_shape) == 2 else tuple(out_shape[1:])


def step_rows(out, y):
    """A per-step output (N, T, K) as N*T rows (N*T, K), with its labels (N, T) as (N*T,) or
    its targets (N, T, K) as (N*T, K): what scores a class per sample (accuracy, confusion)
    then scores one per step. Other outputs come back as they are. NumPy or device arrays."""
    if out.ndim != 3:
        return out, y
    m = out.shape[0] * out.shape[1]
    return out.reshape(m, out.shape[2]), y.reshape((m,) + tuple(y.shape[2:]))


def _rows(out):
    """The (M, K, P) view the row losses take, a row out[m, :, p] per sample (P = 1), per pixel
    of (N, K, H, W) (P = H*W), or per step of (N, T, K) (M = N*T, P = 1)."""
    if out.ndim == 3:
        return out.reshape(out.shape[0] * out.shape[1], out.shape[2], 1)
    n, k = out.shape[0], out.shape[1]
    return out.reshape(n, k, out.size // (n * k))


def compute(name, out, y, fused, backend, delta=1.0):
    """(loss, dL/d(out)) for a loss name; `out` is the logits when `fused` (cross-entropy and BCE
    take logits whether fused or not: with another output they read it as logits; KL reads an
    unfused output as log-probabilities)."""
    n = out.shape[0]
    if name in ew.POINTWISE:
        scale = out.dtype.type(1.0 / (out.size if name in MEAN_OVER_ELEMENTS else n))
        return backend.pointwise_loss(ew.POINTWISE[name], out, y, out.dtype.type(delta), scale)
    # a row per sample, per pixel of a per-pixel output (N, K, H, W) or per step of a per-step
    # output (N, T, K): averaged over the rows
    rows = _rows(out)
    scale = out.dtype.type(1.0 / (rows.shape[0] * rows.shape[2]))
    labels = (y.reshape(rows.shape[0], rows.shape[2]) if y.ndim == out.ndim - 1
              else backend.zeros((0, 0), np.int64))
    targets = y.reshape(rows.shape) if y.ndim == out.ndim else backend.zeros((0, 0, 0), out.dtype)
    if name == "cross_entropy":
        code = ew.CROSS_ENTROPY if y.ndim == out.ndim - 1 else ew.SOFT_CROSS_ENTROPY
    else:
        code = {"kl": ew.KL, "multiclass_hinge": ew.MULTICLASS_HINGE}[name]
    value, grad = backend.row_loss(code, rows, targets, labels, fused or name != "kl", scale)
    return value, grad.reshape(out.shape)
