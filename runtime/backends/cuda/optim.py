"""The optimizers' updates on the GPU: elementwise.update over every value."""
from __future__ import annotations

from numba import cuda

from .launch import ew, kernel


@kernel()
def _update(rule, theta, g, s1, s2, h, first):
    """theta, s1, s2 (flat; a state may be empty) after one step of `rule` with coefficients h."""
    for i in range(cuda.grid(1), theta.size, cuda.gridsize(1)):
        a = s1[i] if s1.size else g[i]
        b = s2[i] if s2.size else g[i]
        t, a, b = ew.update(rule, theta[i], g[i], a, b, h, first)
        theta[i] = t
        if s1.size:
            s1[i] = a
        if s2.size:
            s2[i] = b
