"""INPUT, ID, ADD, MEAN and CONCAT on the CPU."""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds import join as kinds

from .. import elementwise as ew
from ..registry import Implementation, implements
from .activation import fused_backward, fused_forward, in_kernel
from .jit import kernel, launch, run_parts, share, specialized_pairs, split


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
    """y = act(w a + b): a the residual branch, b the shortcut; w = 1, or in training with drop=p
    (stochastic depth) each sample's 0 or 1/(1 - p) (elementwise.path_weights). The branch
    receives w dL/dz, the shortcut dL/dz."""

    def forward(self, h, p, xs, ctx):
        w = path_weights(h["drop"], False, xs, ctx)
        act = in_kernel(h, ctx)
        if len(xs) == 2 and (act != "none" or h["act"] == "none") and _alike(xs):
            # two inputs and an activation of elementwise.act: one pass, into the node's buffer,
            # and backward needs y alone (z is never written)
            a, b = (np.ascontiguousarray(x).reshape(-1) for x in xs)
            y = ctx.value(xs[0].shape, xs[0].dtype)
            # (the weights' column a contiguous copy: a strided view would be a second
            # compiled kernel, 2.3 s of a first run with stochastic depth)
            ws = np.ascontiguousarray(w[:, 0]) if w is not None else np.empty(0, y.dtype)
            launch(*_ADD_ACT[act], split(3 * y.size), y.dtype.type(ew.FUSED_PARAM.get(act, 0.0)),
                   a, b, ws, y.size // len(y), y.reshape(-1))
            return y, (None, y, 2, w)
        z = xs[0] + xs[1] if w is None else xs[0] * rows(w[:, 0], xs[0]) + xs[1]
        for x in xs[2:]:
            z += x
        y = fused_forward(h, p, z)
        return y, (z, y, len(xs), w)

    def backward(self, h, p, cache, dy, ctx):
        z, y, k, w = cache
        out = None if h["act"] in ("none", "prelu") else ctx.grad(dy.shape, dy.dtype)
        dz, _ = fused_backward(h, p, y if z is None else z, y, dy, out)
        return [dz if w is None else dz * rows(w[:, 0], dz)] + [dz] * (k - 1), {}


@implements(kinds.Mean, "cpu")
class Mean(Implementation):
    """y = the mean of the branches; in training with drop_path=p, sample n's y = sum_k w[n, k]
    x_k with elementwise.path_weights' weights (the mean of the branches it keeps)."""

    def forward(self, h, p, xs, ctx):
        w = path_weights(h["drop_path"], True, xs, ctx)
        if w is None:
            y = xs[0] + xs[1]
            for x in xs[2:]:
                y += x
            return y * xs[0].dtype.type(1 / len(xs)), (None, len(xs))
        y = xs[0] * rows(w[:, 0], xs[0])
        for k, x in enumerate(xs[1:], 1):
            y += x * rows(w[:, k], x)
        return y, (w, len(xs))

    def backward(self, h, p, cache, dy, ctx):
        w, k = cache
        if w is None:
            return [dy * dy.dtype.type(1 / k)] * k, {}
        return [dy * rows(w[:, i], dy) for i in range(k)], {}


def _alike(xs) -> bool:
    return all(x.shape == xs[0].shape and x.dtype == xs[0].dtype for x in xs[1:])


# y = act(a + b): a launcher and a part of their own for each activation (jit.specialized:
# CODE a constant in each copy; a network compiles only those it uses)
CODE = ew.NONE  # (each copy's own)


def _add_act_each_cpu(parts, slope, a, b, w, per, y):
    run_parts(_add_act_each_part, parts, (slope, a, b, w, per, y))


def _add_act_each_part(t, parts, slope, a, b, w, per, y):
    """y = act(a + b), or act(w[n] a + b) for sample n (`per` values a sample) where w is given
    (stochastic depth), for the activation CODE; part t of `parts`."""
    lo, hi = share(y.size, t, parts)
    as_, bs, ys = a[lo:hi], b[lo:hi], y[lo:hi]  # (from 0: jit.share)
    if w.size == 0:
        for i in range(ys.size):
            ys[i] = ew.act(CODE, as_[i] + bs[i], slope)
    else:
        for i in range(ys.size):
            ys[i] = ew.act(CODE, as_[i] * w[(lo + i) // per] + bs[i], slope)


def path_weights(p, mean, xs, ctx):
    """The join's weights per sample and branch (N, K) where this pass drops paths, else None."""
    if not ctx.train or p == 0:
        return None
    w = np.empty((len(xs[0]), len(xs)), xs[0].dtype)
    _path_weights(*ew.dropout_args(p, ctx.rng, w.dtype), mean, w)
    return w


def rows(v, like):
    """v (N,) as a column that scales each sample of `like`."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


@kernel()
def _path_weights(seed, threshold, scale, mean, w):
    for n in range(w.shape[0]):
        ew.path_weights(seed, threshold, scale, mean, n, w)


@implements(kinds.Concat, "cpu")
class Concat(Implementation):
    def forward(self, h, p, xs, ctx):
        return np.concatenate(xs, axis=1), [x.shape[1] for x in xs]

    def backward(self, h, p, sizes, dy, ctx):
        return np.split(dy, np.cumsum(sizes)[:-1], axis=1), {}


_ADD_ACT = specialized_pairs(_add_act_each_part, _add_act_each_cpu, "_add_act_{}",
                             {name: code for name, code in ew.ACT_CODES.items() if name != "prelu"},
                             vector_division=True)
