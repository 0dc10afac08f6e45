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
    """Row losses over out (N, K, P), a row out[n, :, p] per sample (P = 1) or pixel:
    cross-entropy from labels (N, P) or probability rows target (N, K, P), KL, multiclass
    hinge."""
    total = 0.0
    for i in range(out.shape[0]):
        for p in range(out.shape[2]):
            z, g = out[i, :, p], grad[i, :, p]
            if code == ew.CROSS_ENTROPY:
                total += ew.cross_entropy_row(z, labels[i, p], g)
            elif code == ew.SOFT_CROSS_ENTROPY:
                total += ew.soft_cross_entropy_row(z, target[i, :, p], g)
            elif code == ew.KL:
                total += ew.kl_row(z, target[i, :, p], g, logits)
            else:
                total += ew.multiclass_hinge_row(z, labels[i, p], g)
            for j in range(out.shape[1]):
                g[j] *= scale
    return total * scale
