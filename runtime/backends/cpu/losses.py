"""The loss kernels on the CPU: elementwise.py's rules, summed; each gradient scaled by the
reduction's 1/N."""
from __future__ import annotations

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


@kernel()
def _rows_cpu(code, out, target, labels, logits, scale, grad):
    """Row losses: cross-entropy from labels or probability rows, KL, multiclass hinge."""
    total = 0.0
    for i in range(out.shape[0]):
        if code == ew.CROSS_ENTROPY:
            total += ew.cross_entropy_row(out[i], labels[i], grad[i])
        elif code == ew.SOFT_CROSS_ENTROPY:
            total += ew.soft_cross_entropy_row(out[i], target[i], grad[i])
        elif code == ew.KL:
            total += ew.kl_row(out[i], target[i], grad[i], logits)
        else:
            total += ew.multiclass_hinge_row(out[i], labels[i], grad[i])
        for j in range(out.shape[1]):
            grad[i, j] *= scale
    return total * scale
