"""BN (batch normalization) and LRN (local response normalization, AlexNet)."""
from __future__ import annotations

import math

import numpy as np

from ..registry import Float, Int, LayerKind, register
from .activation import channel_view


@register
class BatchNorm(LayerKind):
    name = "BN"
    example = ("3x3x4", "BN")
    doc = "batch normalization: 2*C trainable (gamma, beta) and 2*C running statistics"
    elementwise = True
    keys = {"eps": Float(1e-5, low=0.0), "momentum": Float(0.1, low=0.0, high=1.0 + 1e-12)}
    positional = {float: "eps"}

    def params(self, h, xs):
        c = xs[0][0]
        return {"weight": (c,), "bias": (c,)}

    def buffers(self, h, xs):
        c = xs[0][0]
        return {"running_mean": (c,), "running_var": (c,)}

    def flops(self, h, xs, y):
        return 2 * math.prod(y)

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        view = channel_view
        if ctx.train:
            axes = _axes(x)
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            m = x.size // x.shape[1]
            mom = h["momentum"]
            p["running_mean"] *= 1 - mom
            p["running_mean"] += mom * mean
            p["running_var"] *= 1 - mom
            p["running_var"] += mom * var * (m / max(m - 1, 1))  # unbiased, as PyTorch
        else:
            mean, var = p["running_mean"], p["running_var"]
        inv = 1.0 / np.sqrt(var + h["eps"])
        xhat = (x - view(mean, x.ndim)) * view(inv, x.ndim)
        y = xhat * view(p["weight"], x.ndim) + view(p["bias"], x.ndim)
        return y, (xhat, inv, ctx.train)

    def backward(self, h, p, cache, dy, ctx):
        xhat, inv, train = cache
        axes = _axes(dy)
        grads = {"weight": (dy * xhat).sum(axis=axes), "bias": dy.sum(axis=axes)}
        g = channel_view(p["weight"] * inv, dy.ndim)
        if not train:
            return [dy * g], grads
        m = dy.size // dy.shape[1]
        dmean = channel_view(grads["bias"] / m, dy.ndim)
        dvar = channel_view(grads["weight"] / m, dy.ndim)
        return [g * (dy - dmean - xhat * dvar)], grads


@register
class LocalResponseNorm(LayerKind):
    name = "LRN"
    example = ("3x3x6", "LRN 3 alpha=0.1")
    doc = "local response normalization across channels (AlexNet: size=5 alpha=1e-4 beta=0.75 k=2)"
    elementwise = True
    spatial = True
    keys = {"size": Int(5), "alpha": Float(1e-4), "beta": Float(0.75), "k": Float(2.0)}
    positional = {int: "size"}

    def flops(self, h, xs, y):
        return math.prod(y) * (h["size"] + 3)

    def label(self, h):
        return f"LRN {h['size']}"

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


def _window_sum(a, before, after):
    """s[:, c] = sum of a[:, c - before : c + after + 1] over channels (zero outside)."""
    c = a.shape[1]
    padded = np.concatenate([np.zeros_like(a[:, :1]), np.cumsum(a, axis=1)], axis=1)
    hi = np.minimum(np.arange(c) + after + 1, c)
    lo = np.maximum(np.arange(c) - before, 0)
    return padded[:, hi] - padded[:, lo]
