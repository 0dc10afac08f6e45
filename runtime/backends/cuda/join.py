"""INPUT, ID, ADD and CONCAT on the GPU."""
from __future__ import annotations

from numba import cuda

from netc.compiler.kinds import join as kinds

from ..registry import Implementation, implements
from .activation import fused_backward, fused_forward
from .kernels import add
from .launch import grid, kernel


@implements(kinds.Input, "cuda")
class Input(Implementation):
    def forward(self, h, p, xs, ctx):
        return xs[0], None


@implements(kinds.Identity, "cuda")
class Identity(Implementation):
    def forward(self, h, p, xs, ctx):
        return xs[0], None

    def backward(self, h, p, cache, dy, ctx):
        return [dy], {}


@implements(kinds.Add, "cuda")
class Add(Implementation):
    """y = act(a + b + ...); every input receives dL/d(sum)."""

    def forward(self, h, p, xs, ctx):
        z = ctx.buffer("z" if h["act"] != "none" else "y", xs[0].shape, xs[0].dtype)
        add(xs[0], xs[1], z)
        for x in xs[2:]:
            add(z, x, z)
        y = fused_forward(h, p, z, ctx)
        return y, (z, y, len(xs))

    def backward(self, h, p, cache, dy, ctx):
        z, y, k = cache
        dz, _ = fused_backward(h, p, z, y, dy, ctx)
        return [dz] * k, {}


@implements(kinds.Concat, "cuda")
class Concat(Implementation):
    """Along channels (features): each input is copied into its range of channels, and its
    gradient copied out of it."""

    def forward(self, h, p, xs, ctx):
        n = xs[0].shape[0]
        sizes = [x.shape[1] for x in xs]
        y = ctx.buffer("y", (n, sum(sizes)) + xs[0].shape[2:], xs[0].dtype)
        y3, at = _channels(y), 0
        for x, c in zip(xs, sizes):
            _place[grid(x.size)](_channels(x), at, y3)
            at += c
        return y, (sizes, [x.shape for x in xs])

    def backward(self, h, p, cache, dy, ctx):
        sizes, shapes = cache
        d3, at, out = _channels(dy), 0, []
        for c, shape in zip(sizes, shapes):
            dx = ctx.grad(shape, dy.dtype)
            _take[grid(dx.size)](d3, at, _channels(dx))
            out.append(dx)
            at += c
        return out, {}


def _channels(a):
    return a.reshape(a.shape[0], a.shape[1], a.size // (a.shape[0] * a.shape[1]))


@kernel()
def _place(x, at, y):
    """y[:, at:at + C] = x (both viewed (N, C, rest))."""
    n_, c_, m_ = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, c, k = t // (c_ * m_), (t // m_) % c_, t % m_
        y[n, at + c, k] = x[n, c, k]


@kernel()
def _take(y, at, x):
    """x = y[:, at:at + C] (both viewed (N, C, rest))."""
    n_, c_, m_ = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, c, k = t // (c_ * m_), (t // m_) % c_, t % m_
        x[n, c, k] = y[n, at + c, k]
