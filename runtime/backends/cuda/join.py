"""INPUT, ID, ADD, MEAN and CONCAT on the GPU."""
from __future__ import annotations

from numba import cuda

from netc.compiler.kinds import join as kinds

from ..registry import Implementation, implements
from .activation import fused_backward, fused_forward
from .kernels import add, fill
from .launch import ew, grid, kernel


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
    """y = act(w a + b): a the residual branch, b the shortcut; w = 1, or in training with drop=p
    each sample's 0 or 1/(1 - p) (elementwise.path_weights, as on the CPU)."""

    def forward(self, h, p, xs, ctx):
        z = ctx.buffer("z" if h["act"] != "none" else "y", xs[0].shape, xs[0].dtype)
        w = path_weights(h["drop"], False, xs, ctx)
        if w is None:
            add(xs[0], xs[1], z)
        else:
            _weighted[grid(z.size)](_rows(xs[0]), w, 0, False, _rows(z))
            add(z, xs[1], z)
        for x in xs[2:]:
            add(z, x, z)
        y = fused_forward(h, p, z, ctx)
        return y, (z, y, len(xs), w)

    def backward(self, h, p, cache, dy, ctx):
        z, y, k, w = cache
        dz, _ = fused_backward(h, p, z, y, dy, ctx)
        if w is None:
            return [dz] * k, {}
        da = ctx.grad(dz.shape, dz.dtype)
        _weighted[grid(da.size)](_rows(dz), w, 0, False, _rows(da))
        return [da] + [dz] * (k - 1), {}


@implements(kinds.Mean, "cuda")
class Mean(Implementation):
    """y = sum_k w[n, k] x_k: w = 1/K, or in training with drop_path=p elementwise.path_weights'
    (the mean of the branches each sample keeps); x_k receives w[n, k] dL/dy."""

    def forward(self, h, p, xs, ctx):
        w = path_weights(h["drop_path"], True, xs, ctx)
        if w is None:
            w = fill(ctx.buffer("w", (xs[0].shape[0], len(xs)), xs[0].dtype), 1 / len(xs))
        y = ctx.buffer("y", xs[0].shape, xs[0].dtype)
        for k, x in enumerate(xs):
            _weighted[grid(y.size)](_rows(x), w, k, k > 0, _rows(y))
        return y, w

    def backward(self, h, p, w, dy, ctx):
        out = []
        for k in range(w.shape[1]):
            dx = ctx.grad(dy.shape, dy.dtype)
            _weighted[grid(dx.size)](_rows(dy), w, k, False, _rows(dx))
            out.append(dx)
        return out, {}


def path_weights(p, mean, xs, ctx):
    """The join's weights per sample and branch (N, K), on the device, where this pass drops
    paths; else None."""
    if not ctx.train or p == 0:
        return None
    w = ctx.buffer("w", (xs[0].shape[0], len(xs)), xs[0].dtype)
    _path_weights[grid(w.shape[0])](*ew.dropout_args(p, ctx.rng, w.dtype), mean, w)
    return w


def _rows(a):
    return a.reshape(a.shape[0], a.size // a.shape[0])


@kernel()
def _path_weights(seed, threshold, scale, mean, w):
    for n in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):
        ew.path_weights(seed, threshold, scale, mean, n, w)


@kernel()
def _weighted(x, w, k, accumulate, y):
    """y[n] (+)= w[n, k] x[n], both viewed (N, rest)."""
    m_ = x.shape[1]
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, i = t // m_, t % m_
        v = w[n, k] * x[n, i]
        y[n, i] = y[n, i] + v if accumulate else v


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
