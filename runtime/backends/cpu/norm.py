"""BN, LRN, LN, IN and GN on the CPU (NumPy)."""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds import norm as kinds

from ..registry import Implementation, implements


@implements(kinds.BatchNorm, "cpu")
class BatchNorm(Implementation):
    """Training normalises by the batch's mean and (biased) variance and updates the running
    statistics as PyTorch does (the unbiased variance); evaluation uses the running ones."""

    batch_statistics = True

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        if ctx.train:
            axes = _axes(x)
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            m = x.size // x.shape[1]
            mom = h["momentum"]
            p["running_mean"] *= 1 - mom
            p["running_mean"] += mom * mean
            p["running_var"] *= 1 - mom
            p["running_var"] += mom * var * (m / max(m - 1, 1))
        else:
            mean, var = p["running_mean"], p["running_var"]
        inv = 1.0 / np.sqrt(var + h["eps"])
        xhat = (x - _channels(mean, x.ndim)) * _channels(inv, x.ndim)
        y = xhat * _channels(p["weight"], x.ndim) + _channels(p["bias"], x.ndim)
        return y, (xhat, inv, ctx.train)

    def backward(self, h, p, cache, dy, ctx):
        xhat, inv, train = cache
        axes = _axes(dy)
        grads = {"weight": (dy * xhat).sum(axis=axes), "bias": dy.sum(axis=axes)}
        g = _channels(p["weight"] * inv, dy.ndim)
        if not train:
            return [dy * g], grads
        m = dy.size // dy.shape[1]
        dmean = _channels(grads["bias"] / m, dy.ndim)
        dvar = _channels(grads["weight"] / m, dy.ndim)
        return [g * (dy - dmean - xhat * dvar)], grads


@implements(kinds.LocalResponseNorm, "cpu")
class LocalResponseNorm(Implementation):
    def forward(self, h, p, xs, ctx):
        """b_c = a_c / (k + alpha/size * sum_{c' near c} a_c'^2)^beta  (PyTorch's LocalResponseNorm)."""
        a = xs[0]
        n = h["size"]
        s = h["k"] + h["alpha"] / n * _window_sum(a * a, n // 2, (n - 1) // 2)
        y = a * s ** -h["beta"]
        return y, (a, s)

    def backward(self, h, p, cache, dy, ctx):
        a, s = cache
        n, beta = h["size"], h["beta"]
        t = dy * a * s ** (-beta - 1)
        back = _window_sum(t, (n - 1) // 2, n // 2)  # the channels whose window holds this one
        return [dy * s ** -beta - 2 * h["alpha"] * beta / n * a * back], {}


def _axes(x):
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _channels(v, ndim):
    """A per-channel vector shaped to broadcast over (N, C[, H, W])."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _window_sum(a, before, after):
    """s[:, c] = sum of a[:, c - before : c + after + 1] over channels (zero outside)."""
    c = a.shape[1]
    padded = np.concatenate([np.zeros_like(a[:, :1]), np.cumsum(a, axis=1)], axis=1)
    hi = np.minimum(np.arange(c) + after + 1, c)
    lo = np.maximum(np.arange(c) - before, 0)
    return padded[:, hi] - padded[:, lo]


class GroupNormalization(Implementation):
    """LN, IN and GN: each sample normalized over groups of channels (the kind says how many),
    y = xhat * gamma + beta per channel; the same in training and evaluation."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        n, g = x.shape[0], self.rules.groups(h, (x.shape[1:],))
        xg = x.reshape(n, g, -1)
        mean = xg.mean(axis=2, keepdims=True)
        inv = 1.0 / np.sqrt(xg.var(axis=2, keepdims=True) + h["eps"])
        xhat = ((xg - mean) * inv).reshape(x.shape)
        y = xhat * _channels(p["weight"], x.ndim) + _channels(p["bias"], x.ndim)
        return y, (xhat, inv)

    def backward(self, h, p, cache, dy, ctx):
        xhat, inv = cache
        axes = _axes(dy)
        grads = {"weight": (dy * xhat).sum(axis=axes), "bias": dy.sum(axis=axes)}
        n, g = dy.shape[0], inv.shape[1]
        d = (dy * _channels(p["weight"], dy.ndim)).reshape(n, g, -1)  # dL/dxhat
        xh = xhat.reshape(n, g, -1)
        dx = inv * (d - d.mean(axis=2, keepdims=True) - xh * (d * xh).mean(axis=2, keepdims=True))
        return [dx.reshape(dy.shape)], grads


for _kind in (kinds.LayerNorm, kinds.InstanceNorm, kinds.GroupNorm):
    implements(_kind, "cpu")(GroupNormalization)
