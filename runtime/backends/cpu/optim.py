"""The optimizers' updates on the CPU: elementwise.update over every value, split into
parts."""
from __future__ import annotations

import numpy as np
from numba import prange

from .. import elementwise as ew
from .jit import kernel, launcher, run_part, share


@launcher
def _update_cpu(parts, rule, theta, g, s1, s2, h, first):
    for t in prange(parts):
        run_part(_update_part, np.int64(t), parts, (rule, theta, g, s1, s2, h, first))


@kernel()
def _update_part(t, parts, rule, theta, g, s1, s2, h, first):
    """theta, s1, s2 (flat; a state may be empty) after one step of `rule` with coefficients h."""
    lo, hi = share(theta.size, t, parts)
    for i in range(lo, hi):
        a = s1[i] if s1.size else g[i]
        b = s2[i] if s2.size else g[i]
        theta[i], a, b = ew.update(rule, theta[i], g[i], a, b, h, first)
        if s1.size:
            s1[i] = a
        if s2.size:
            s2[i] = b
