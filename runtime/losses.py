"""Losses: value and gradient with respect to the network's output, or to its logits when the loss
is fused with the output activation (softmax + cross-entropy or KL, sigmoid + binary
cross-entropy). The rules per element and per row are elementwise.py's; a backend runs them.

Reductions follow PyTorch's defaults: MSE, MAE, Huber and BCE average over all elements;
cross-entropy, hinge and multiclass hinge over samples; KL sums over classes, averages over samples.
For a per-pixel output (OUT per=pixel) the row losses take a row per pixel and average over all
the pixels of the batch (PyTorch's cross-entropy on N x K x H x W).
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


def compute(name, out, y, fused, backend, delta=1.0):
    """(loss, dL/d(out)) for a loss name; `out` is the logits when `fused` (cross-entropy and BCE
    take logits whether fused or not: with another output they read it as logits; KL reads an
    unfused output as log-probabilities)."""
    n = out.shape[0]
    if name in ew.POINTWISE:
        scale = out.dtype.type(1.0 / (out.size if name in MEAN_OVER_ELEMENTS else n))
        return backend.pointwise_loss(ew.POINTWISE[name], out, y, out.dtype.type(delta), scale)
    # a row per sample, or per pixel of a per-pixel output (N, K, H, W): averaged over the rows
    k = out.shape[1]
    rows = out.reshape(n, k, out.size // (n * k))
    scale = out.dtype.type(1.0 / (n * rows.shape[2]))
    labels = (y.reshape(n, rows.shape[2]) if y.ndim == out.ndim - 1
              else backend.zeros((0, 0), np.int64))
    targets = y.reshape(rows.shape) if y.ndim == out.ndim else backend.zeros((0, 0, 0), out.dtype)
    if name == "cross_entropy":
        code = ew.CROSS_ENTROPY if y.ndim == out.ndim - 1 else ew.SOFT_CROSS_ENTROPY
    else:
        code = {"kl": ew.KL, "multiclass_hinge": ew.MULTICLASS_HINGE}[name]
    value, grad = backend.row_loss(code, rows, targets, labels, fused or name != "kl", scale)
    return value, grad.reshape(out.shape)
