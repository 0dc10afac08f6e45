"""The loss kernels on the GPU: elementwise.py's rules, each gradient scaled by the reduction's
1/N; the total is summed in two passes (PARTS shares, then their sum), in float64."""
from __future__ import annotations

from numba import cuda

from .launch import PARTS, ew, grid, kernel


@kernel()
def _pointwise(code, out, target, delta, scale, partial, grad):
    parts = partial.size
    for t in range(cuda.grid(1), parts, cuda.gridsize(1)):
        acc = 0.0
        for i in range(t, out.size, parts):
            v, g = ew.pointwise_loss(code, out[i], target[i], delta)
            acc += v
            grad[i] = g * scale
        partial[t] = acc


@kernel()
def _rows(code, out, target, labels, logits, scale, partial, grad):
    """One thread per row out[n, :, p] of out (N, K, P) (a sample, or a pixel): cross-entropy
    from labels (N, P) or probability rows, KL, multiclass hinge; partial[row] = its loss."""
    rows = out.shape[2]
    for t in range(cuda.grid(1), out.shape[0] * rows, cuda.gridsize(1)):
        i, p = t // rows, t % rows
        g = grad[i, :, p]
        v = ew.row_loss(code, out, target, labels, i, p, g, logits)
        for j in range(out.shape[1]):
            g[j] *= scale
        partial[t] = v


@kernel()
def _total(partial, scale, out):
    if cuda.grid(1) == 0:
        acc = 0.0
        for p in range(partial.size):
            acc += partial[p]
        out[0] = acc * scale


def pointwise(code, out, target, delta, scale, arrays):
    """(loss, gradient): `arrays(tag, shape, dtype)` gives reusable device arrays."""
    grad = arrays("grad", out.shape, out.dtype)
    partial = arrays("partial", (PARTS,), "float64")
    total = arrays("total", (1,), "float64")
    _pointwise[grid(PARTS)](code, out.reshape(out.size), target.reshape(target.size), delta,
                            scale, partial, grad.reshape(grad.size))
    _total[1, 1](partial, scale, total)
    return float(total.copy_to_host()[0]), grad


def rows(code, out, target, labels, logits, scale, arrays):
    grad = arrays("grad", out.shape, out.dtype)
    count = out.shape[0] * out.shape[2]
    partial = arrays("rows", (count,), "float64")
    total = arrays("total", (1,), "float64")
    _rows[grid(count)](code, out, target, labels, logits, scale, partial, grad)
    _total[1, 1](partial, scale, total)
    return float(total.copy_to_host()[0]), grad
