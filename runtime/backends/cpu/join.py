"""INPUT, ID, ADD and CONCAT on the CPU."""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds import join as kinds

from ..registry import Implementation, implements
from .activation import fused_backward, fused_forward


@implements(kinds.Input, "cpu")
class Input(Implementation):
    def forward(self, h, p, xs, ctx):
        return xs[0], None


@implements(kinds.Identity, "cpu")
class Identity(Implementation):
    def forward(self, h, p, xs, ctx):
        return xs[0], None

    def backward(self, h, p, cache, dy, ctx):
        return [dy], {}


@implements(kinds.Add, "cpu")
class Add(Implementation):
    """y = act(a + b + ...); every input receives dL/d(sum)."""

    def forward(self, h, p, xs, ctx):
        z = xs[0] + xs[1]
        for x in xs[2:]:
            z += x
        y = fused_forward(h, p, z)
        return y, (z, y, len(xs))

    def backward(self, h, p, cache, dy, ctx):
        z, y, k = cache
        dz, _ = fused_backward(h, p, z, y, dy)
        return [dz] * k, {}


@implements(kinds.Concat, "cpu")
class Concat(Implementation):
    def forward(self, h, p, xs, ctx):
        return np.concatenate(xs, axis=1), [x.shape[1] for x in xs]

    def backward(self, h, p, sizes, dy, ctx):
        return np.split(dy, np.cumsum(sizes)[:-1], axis=1), {}
