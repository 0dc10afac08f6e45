"""The optimizers' updates on the CPU: elementwise.update over every value, split into
parts."""
from __future__ import annotations

import numpy as np

from .. import elementwise as ew
from .jit import kernel, launcher, run_parts, share


# One part per set of states the rule keeps, each a loop with no test of a state in it: one loop
# testing for them at every value ran 4-9x slower (SGD with momentum 1078 us for the MLP's 203k
# values, 119 now; Adam 1606, 345 now; plain SGD 36); one part for the three sets compiled in
# 1.8 s, each alone in 0.56-0.75: a run compiles its optimizer's. The divisions (by sqrt(s) +
# eps, by 1 - beta^t) are IEEE's (vector_division), so that the loops vectorize.
@launcher
def _update2_cpu(parts, rule, theta, g, s1, s2, h, first):
    run_parts(_update2_part, parts, (rule, theta, g, s1, s2, h, first))


@kernel(vector_division=True)
def _update2_part(t, parts, rule, theta, g, s1, s2, h, first):
    """theta, s1, s2 after one step of `rule` with coefficients h (Adam, RMSprop with momentum),
    part t of `parts` (flat arrays)."""
    lo, hi = share(theta.size, t, parts)
    theta, g, s1, s2 = theta[lo:hi], g[lo:hi], s1[lo:hi], s2[lo:hi]  # (from 0: jit.share)
    for i in range(theta.size):
        theta[i], s1[i], s2[i] = ew.update(rule, theta[i], g[i], s1[i], s2[i], h, first)


@launcher
def _update1_cpu(parts, rule, theta, g, s1, h, first):
    run_parts(_update1_part, parts, (rule, theta, g, s1, h, first))


@kernel(vector_division=True)
def _update1_part(t, parts, rule, theta, g, s1, h, first):
    """theta, s1 after one step (SGD with momentum, Adagrad, RMSprop)."""
    lo, hi = share(theta.size, t, parts)
    theta, g, s1 = theta[lo:hi], g[lo:hi], s1[lo:hi]
    for i in range(theta.size):
        theta[i], s1[i], _ = ew.update(rule, theta[i], g[i], s1[i], g[i], h, first)


@launcher
def _update0_cpu(parts, rule, theta, g, h, first):
    run_parts(_update0_part, parts, (rule, theta, g, h, first))


@kernel(vector_division=True)
def _update0_part(t, parts, rule, theta, g, h, first):
    """theta after one step (plain SGD: no state)."""
    lo, hi = share(theta.size, t, parts)
    theta, g = theta[lo:hi], g[lo:hi]
    for i in range(theta.size):
        theta[i], _, _ = ew.update(rule, theta[i], g[i], g[i], g[i], h, first)
