"""BN, LRN, LN, IN and GN on the GPU. The statistics (BN's per channel, the others' per sample and
group) are two-pass reductions (kernels.reduce), in float64."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from netc.compiler.kinds import norm as kinds

from ..registry import Implementation, implements
from .kernels import PRODUCTS, SQUARED_DEVIATIONS, VALUES, reduce
from .launch import grid, kernel


def _channels(a):
    return a.reshape(a.shape[0], a.shape[1], a.size // (a.shape[0] * a.shape[1]))


@implements(kinds.BatchNorm, "cuda")
class BatchNorm(Implementation):
    """As the CPU's: batch statistics in training (the running ones updated as PyTorch does),
    the running ones in evaluation."""

    batch_statistics = True

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        x3 = _channels(x)
        n, c, m = x3.shape
        mean = ctx.buffer("mean", (c,), np.float64)
        var = ctx.buffer("var", (c,), np.float64)
        if ctx.train:
            count = n * m
            reduce(x3, mean, VALUES, scale=1.0 / count, ctx=ctx)
            reduce(x3, var, SQUARED_DEVIATIONS, m=mean, scale=1.0 / count, ctx=ctx)
            _running[grid(c)](mean, var, h["momentum"], count / max(count - 1, 1),
                              p["running_mean"], p["running_var"])
        else:
            _copy[grid(c)](p["running_mean"], mean)
            _copy[grid(c)](p["running_var"], var)
        inv = ctx.buffer("inv", (c,), np.float64)
        xhat = ctx.buffer("xhat", x.shape, x.dtype)
        y = ctx.buffer("y", x.shape, x.dtype)
        _normalize[grid(x.size)](x3, mean, var, h["eps"], p["weight"], p["bias"], inv,
                                 _channels(xhat), _channels(y))
        return y, (xhat, inv, ctx.train)

    def backward(self, h, p, cache, dy, ctx):
        xhat, inv, train = cache
        d3, x3 = _channels(dy), _channels(xhat)
        n, c, m = d3.shape
        dgamma = reduce(d3, ctx.buffer("dw", (c,), dy.dtype), PRODUCTS, x3, ctx=ctx)
        dbeta = reduce(d3, ctx.buffer("db", (c,), dy.dtype), VALUES, ctx=ctx)
        dx = ctx.grad(dy.shape, dy.dtype)
        _normalize_grad[grid(dy.size)](d3, x3, p["weight"], inv, dgamma, dbeta,
                                       1.0 / (n * m) if train else 0.0, _channels(dx))
        return [dx], {"weight": dgamma, "bias": dbeta}


@kernel()
def _copy(src, dst):
    for i in range(cuda.grid(1), src.size, cuda.gridsize(1)):
        dst[i] = src[i]


@kernel()
def _running(mean, var, momentum, unbias, running_mean, running_var):
    for c in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        running_mean[c] = running_mean[c] * (1 - momentum) + momentum * mean[c]
        running_var[c] = running_var[c] * (1 - momentum) + momentum * var[c] * unbias


@kernel()
def _normalize(x, mean, var, eps, gamma, beta, inv, xhat, y):
    n_, c_, m_ = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, c, k = t // (c_ * m_), (t // m_) % c_, t % m_
        s = 1.0 / math.sqrt(var[c] + eps)
        if t < c_:
            inv[t] = 1.0 / math.sqrt(var[t] + eps)
        v = (x[n, c, k] - mean[c]) * s
        xhat[n, c, k] = v
        y[n, c, k] = v * gamma[c] + beta[c]


@kernel()
def _normalize_grad(dy, xhat, gamma, inv, dgamma, dbeta, per, dx):
    """dx = gamma inv (dy - dbeta/m - xhat dgamma/m) in training (per = 1/m), gamma inv dy in
    evaluation (per = 0)."""
    n_, c_, m_ = dy.shape
    for t in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        n, c, k = t // (c_ * m_), (t // m_) % c_, t % m_
        g = gamma[c] * inv[c]
        dx[n, c, k] = g * (dy[n, c, k] - dbeta[c] * per - xhat[n, c, k] * dgamma[c] * per)


@implements(kinds.LocalResponseNorm, "cuda")
class LocalResponseNorm(Implementation):
    """b_c = a_c / (k + alpha/size * sum_{c' near c} a_c'^2)^beta (PyTorch's LocalResponseNorm)."""

    def forward(self, h, p, xs, ctx):
        a = xs[0]
        s = ctx.buffer("s", a.shape, a.dtype)
        y = ctx.buffer("y", a.shape, a.dtype)
        n = h["size"]
        _lrn[grid(a.size)](_channels(a), n // 2, (n - 1) // 2, h["k"], h["alpha"] / n, h["beta"],
                           _channels(s), _channels(y))
        return y, (a, s)

    def backward(self, h, p, cache, dy, ctx):
        a, s = cache
        n, beta = h["size"], h["beta"]
        t = ctx.scratch("lrn_t", dy.shape, dy.dtype)
        _lrn_t[grid(dy.size)](dy.reshape(dy.size), a.reshape(a.size), s.reshape(s.size), beta,
                              t.reshape(t.size))
        dx = ctx.grad(dy.shape, dy.dtype)
        _lrn_grad[grid(dy.size)](_channels(dy), _channels(a), _channels(s), _channels(t),
                                 (n - 1) // 2, n // 2, 2 * h["alpha"] * beta / n, beta,
                                 _channels(dx))
        return [dx], {}


@kernel()
def _lrn(a, before, after, k, alpha_n, beta, s, y):
    n_, c_, m_ = a.shape
    for t in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        n, c, j = t // (c_ * m_), (t // m_) % c_, t % m_
        acc = 0.0
        for q in range(max(0, c - before), min(c_, c + after + 1)):
            acc += a[n, q, j] * a[n, q, j]
        v = k + alpha_n * acc
        s[n, c, j] = v
        y[n, c, j] = a[n, c, j] * v ** -beta


@kernel()
def _lrn_t(dy, a, s, beta, t):
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        t[i] = dy[i] * a[i] * s[i] ** (-beta - 1)


@kernel()
def _lrn_grad(dy, a, s, t, before, after, coef, beta, dx):
    """dx = dy s^-beta - coef a sum_{c' whose window holds c} t_c'."""
    n_, c_, m_ = dy.shape
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        n, c, j = i // (c_ * m_), (i // m_) % c_, i % m_
        acc = 0.0
        for q in range(max(0, c - before), min(c_, c + after + 1)):
            acc += t[n, q, j]
        dx[n, c, j] = dy[n, c, j] * s[n, c, j] ** -beta - coef * a[n, c, j] * acc


class GroupNormalization(Implementation):
    """LN, IN and GN (see the CPU's): statistics per (sample, group) by two-pass reductions."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        x3 = _channels(x)
        n, c, _ = x3.shape
        g = self.rules.groups(h, (x.shape[1:],))
        m = x.size // (n * g)
        mean = ctx.buffer("mean", (n * g,), np.float64)
        var = ctx.buffer("var", (n * g,), np.float64)
        groups = x.reshape(1, n * g, m)
        reduce(groups, mean, VALUES, scale=1.0 / m, ctx=ctx)
        reduce(groups, var, SQUARED_DEVIATIONS, m=mean, scale=1.0 / m, ctx=ctx)
        inv = ctx.buffer("inv", (n * g,), np.float64)
        xhat = ctx.buffer("xhat", x.shape, x.dtype)
        y = ctx.buffer("y", x.shape, x.dtype)
        _group_normalize[grid(x.size)](x3, c // g, mean, var, h["eps"], p["weight"], p["bias"],
                                       inv, _channels(xhat), _channels(y))
        return y, (xhat, inv, g)

    def backward(self, h, p, cache, dy, ctx):
        xhat, inv, g = cache
        d3, x3 = _channels(dy), _channels(xhat)
        n, c, _ = d3.shape
        m = dy.size // (n * g)
        dgamma = reduce(d3, ctx.buffer("dw", (c,), dy.dtype), PRODUCTS, x3, ctx=ctx)
        dbeta = reduce(d3, ctx.buffer("db", (c,), dy.dtype), VALUES, ctx=ctx)
        d = ctx.scratch("dxhat", dy.shape, dy.dtype)  # dL/dxhat = dy gamma
        _scale_channels[grid(dy.size)](d3, p["weight"], _channels(d))
        mean_d = ctx.buffer("mean_d", (n * g,), np.float64)
        mean_dx = ctx.buffer("mean_dx", (n * g,), np.float64)
        reduce(d.reshape(1, n * g, m), mean_d, VALUES, scale=1.0 / m, ctx=ctx)
        reduce(d.reshape(1, n * g, m), mean_dx, PRODUCTS, xhat.reshape(1, n * g, m),
               scale=1.0 / m, ctx=ctx)
        dx = ctx.grad(dy.shape, dy.dtype)
        _group_normalize_grad[grid(dy.size)](_channels(d), x3, c // g, inv, mean_d, mean_dx,
                                             _channels(dx))
        return [dx], {"weight": dgamma, "bias": dbeta}


for _kind in (kinds.LayerNorm, kinds.InstanceNorm, kinds.GroupNorm):
    implements(_kind, "cuda")(GroupNormalization)


@kernel()
def _group_normalize(x, per, mean, var, eps, gamma, beta, inv, xhat, y):
    """Channel c of sample n belongs to group n*G + c // per (per: channels per group)."""
    n_, c_, m_ = x.shape
    groups = c_ // per
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, c, k = t // (c_ * m_), (t // m_) % c_, t % m_
        q = n * groups + c // per
        s = 1.0 / math.sqrt(var[q] + eps)
        if t < inv.size:
            inv[t] = 1.0 / math.sqrt(var[t] + eps)
        v = (x[n, c, k] - mean[q]) * s
        xhat[n, c, k] = v
        y[n, c, k] = v * gamma[c] + beta[c]


@kernel()
def _scale_channels(x, scale, out):
    n_, c_, m_ = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, c, k = t // (c_ * m_), (t // m_) % c_, t % m_
        out[n, c, k] = x[n, c, k] * scale[c]


@kernel()
def _group_normalize_grad(d, xhat, per, inv, mean_d, mean_dx, dx):
    """dx = inv (d - mean(d) - xhat mean(d xhat)), the means over each sample's group."""
    n_, c_, m_ = d.shape
    groups = c_ // per
    for t in range(cuda.grid(1), d.size, cuda.gridsize(1)):
        n, c, k = t // (c_ * m_), (t // m_) % c_, t % m_
        q = n * groups + c // per
        dx[n, c, k] = inv[q] * (d[n, c, k] - mean_d[q] - xhat[n, c, k] * mean_dx[q])
