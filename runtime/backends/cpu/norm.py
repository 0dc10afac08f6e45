"""BN, LN, IN and GN (Numba kernels), LRN (NumPy) on the CPU."""
from __future__ import annotations

import math

import numpy as np

from netc.compiler.kinds import norm as kinds

from ..registry import Implementation, implements
from .activation import _by_channel
from .common import part_sum
from .jit import REDUCE, kernel, launch, launcher, run_parts, share, split


@implements(kinds.BatchNorm, "cpu")
class BatchNorm(Implementation):
    """Training normalises by the batch's mean and (biased) variance and updates the running
    statistics as PyTorch does (the unbiased variance); evaluation uses the running ones.
    Two kernels, split by channels: forward sums each channel (in float64) and writes y in the
    node's buffer; backward sums dy and dy (x - mean) and writes dx. Backward reads x, which the
    layer before keeps anyway (a CONV's output), rather than a kept x-hat of its own."""

    batch_statistics = True

    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        x3 = _by_channel(x)
        c = x3.shape[1]
        mean, var = ctx.buffer("mean", (c,), x.dtype), ctx.buffer("var", (c,), x.dtype)
        if not ctx.train:
            mean[:], var[:] = p["running_mean"], p["running_var"]
        inv = ctx.buffer("inv", (c,), x.dtype)
        y = ctx.value(x.shape, x.dtype)
        launch(_bn_cpu, _bn_part, min(split(2 * x.size), c), x3, ctx.train, h["eps"],
               p["weight"], p["bias"], mean, var, inv, _by_channel(y))
        if ctx.train:
            m = x.size // c
            mom = h["momentum"]
            p["running_mean"] *= 1 - mom
            p["running_mean"] += mom * mean
            p["running_var"] *= 1 - mom
            p["running_var"] += mom * var * (m / max(m - 1, 1))
        return y, (x, mean, inv, ctx.train)

    def backward(self, h, p, cache, dy, ctx):
        x, mean, inv, train = cache
        dy = np.ascontiguousarray(dy)
        c = x.shape[1]
        dw, db = np.empty(c, dy.dtype), np.empty(c, dy.dtype)
        dx = ctx.grad(dy.shape, dy.dtype) if ctx.need_dx else None
        per = dy.dtype.type(c / x.size if train else 0)  # 1/m in training (m values a channel)
        dx3 = _by_channel(dx) if ctx.need_dx else np.empty((0, c, 1), dy.dtype)  # (none wanted)
        launch(_bn_grad_cpu, _bn_grad_part, min(split(3 * x.size), c), _by_channel(x),
               _by_channel(dy), mean, inv, p["weight"], per, dw, db, dx3)
        return [dx], {"weight": dw, "bias": db}


@launcher
def _bn_cpu(parts, x, stats, eps, weight, bias, mean, var, inv, y):
    run_parts(_bn_part, parts, (x, stats, eps, weight, bias, mean, var, inv, y))


@kernel(fastmath=REDUCE)
def _bn_part(t, parts, x, stats, eps, weight, bias, mean, var, inv, y):
    """y = (x - mean) inv weight + bias over channels of part t of `parts`, inv = 1 / sqrt(var +
    eps); with `stats`, mean and var (biased) are the batch's, written, else they are given.
    Each pass runs over the samples and, in each, over the part's channels, whose planes lie
    next to each other: the part reads its memory in order (a channel at a time read a plane a
    sample apart, each a page or less, three times: ResNet-18's BNs at batch 64 took 19.2-19.6
    ms of forward, now 12.0-13.6, Zen 4). The statistics take one pass, summed in float64 from a
    point of each channel (its first value), so that the variance, E[d^2] - E[d]^2 of d = x -
    that point, does not cancel."""
    n_, c_, m_ = x.shape
    lo, hi = share(c_, t, parts)
    w_ = hi - lo
    if stats:
        ref, s, q = np.empty(w_, x.dtype), np.zeros(w_), np.zeros(w_)
        for j in range(w_):
            ref[j] = x[0, lo + j, 0]
        for n in range(n_):
            for j in range(w_):
                r, a, b = ref[j], 0.0, 0.0
                for k in range(m_):
                    d = np.float64(x[n, lo + j, k] - r)
                    a += d
                    b += d * d
                s[j] += a
                q[j] += b
        for j in range(w_):
            mu = s[j] / (n_ * m_)
            mean[lo + j] = ref[j] + mu
            var[lo + j] = max(q[j] / (n_ * m_) - mu * mu, 0.0)
    mu, scale, shift = np.empty(w_, x.dtype), np.empty(w_, x.dtype), np.empty(w_, x.dtype)
    for j in range(w_):
        inv[lo + j] = 1.0 / math.sqrt(var[lo + j] + eps)
        mu[j], scale[j], shift[j] = mean[lo + j], inv[lo + j] * weight[lo + j], bias[lo + j]
    for n in range(n_):
        for j in range(w_):
            a, b, c = mu[j], scale[j], shift[j]
            for k in range(m_):
                y[n, lo + j, k] = (x[n, lo + j, k] - a) * b + c


@launcher
def _bn_grad_cpu(parts, x, dy, mean, inv, weight, per, dw, db, dx):
    run_parts(_bn_grad_part, parts, (x, dy, mean, inv, weight, per, dw, db, dx))


@kernel(fastmath=REDUCE)
def _bn_grad_part(t, parts, x, dy, mean, inv, weight, per, dw, db, dx):
    """Over channels of part t of `parts`: db = the sum of dy, dw = the sum of dy x-hat (x-hat =
    (x - mean) inv) and, unless dx is empty, dx = weight inv (dy - per db - per x-hat dw): per is
    1/m in training (m values a channel), 0 in evaluation. Each pass runs over the samples, then
    the part's channels (as forward does)."""
    n_, c_, m_ = dy.shape
    lo, hi = share(c_, t, parts)
    w_ = hi - lo
    s, sx = np.zeros(w_), np.zeros(w_)
    for n in range(n_):
        for j in range(w_):
            mu, a, b = mean[lo + j], 0.0, 0.0
            for k in range(m_):
                d = dy[n, lo + j, k]
                a += d
                b += d * (x[n, lo + j, k] - mu)
            s[j] += a
            sx[j] += b
    for j in range(w_):
        db[lo + j] = s[j]
        dw[lo + j] = sx[j] * inv[lo + j]
    if dx.shape[0] == 0:
        return
    mu, g = np.empty(w_, dy.dtype), np.empty(w_, dy.dtype)
    shift, slope = np.empty(w_, dy.dtype), np.empty(w_, dy.dtype)
    for j in range(w_):  # dx = g dy + shift + slope (x - mean), in the data's type
        c = lo + j
        mu[j], g[j] = mean[c], weight[c] * inv[c]
        shift[j], slope[j] = -g[j] * db[c] * per, -g[j] * inv[c] * dw[c] * per
    for n in range(n_):
        for j in range(w_):
            a, b, c, e = mu[j], g[j], shift[j], slope[j]
            for k in range(m_):
                dx[n, lo + j, k] = b * dy[n, lo + j, k] + c + e * (x[n, lo + j, k] - a)


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
    y = xhat * gamma + beta per channel; the same in training and evaluation. Two kernels, as
    BN's, split by samples: forward sums each group (in float64, two passes) and writes y;
    backward sums dy and dy x-hat per channel and group and writes dx. Backward reads x and each
    group's mean and 1/std rather than a kept x-hat (NumPy's version kept x-hat and made about
    six full-size temporaries a pass: ResNet-18-GN's GNs 10.9 ms of an 82 ms step, AVX2)."""

    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        n = x.shape[0]
        g = self.rules.groups(h, (x.shape[1:],))
        mean, inv = ctx.buffer("mean", (n, g), x.dtype), ctx.buffer("inv", (n, g), x.dtype)
        y = ctx.value(x.shape, x.dtype)
        launch(_gn_cpu, _gn_part, min(split(3 * x.size), n), _by_channel(x),
               x.reshape(n, g, -1), h["eps"], p["weight"], p["bias"], mean, inv, _by_channel(y))
        return y, (x, mean, inv)

    def backward(self, h, p, cache, dy, ctx):
        x, mean, inv = cache
        dy = np.ascontiguousarray(dy)
        n, c = x.shape[0], x.shape[1]
        parts = min(split(4 * x.size), n)
        dw, db = ctx.scratch("dw", (parts, c), dy.dtype), ctx.scratch("db", (parts, c), dy.dtype)
        dx = ctx.grad(dy.shape, dy.dtype) if ctx.need_dx else None
        dx3 = _by_channel(dx) if ctx.need_dx else np.empty((0, c, 1), dy.dtype)  # (none wanted)
        launch(_gn_grad_cpu, _gn_grad_part, parts, _by_channel(x), _by_channel(dy), mean, inv,
               p["weight"], dw, db, dx3)
        return [dx], {"weight": part_sum(dw, parts), "bias": part_sum(db, parts)}


@launcher
def _gn_cpu(parts, x, xg, eps, weight, bias, mean, inv, y):
    run_parts(_gn_part, parts, (x, xg, eps, weight, bias, mean, inv, y))


@kernel(fastmath=REDUCE)
def _gn_part(t, parts, x, xg, eps, weight, bias, mean, inv, y):
    """Over the samples of part t: each group's mean and inv = 1 / sqrt(var + eps) (biased var,
    two passes over xg, the groups' flat (N, G, C/G * rest) view of x, in float64), then y =
    (x - mean) inv weight + bias per channel."""
    n0, n1 = share(x.shape[0], t, parts)
    g_, m_ = xg.shape[1], xg.shape[2]
    cg, k_ = x.shape[1] // g_, x.shape[2]
    for i in range(n1 - n0):
        n = n0 + i
        for g in range(g_):
            s = 0.0
            for k in range(m_):
                s += xg[n, g, k]
            mu = s / m_
            q = 0.0
            for k in range(m_):
                d = xg[n, g, k] - mu
                q += d * d
            mean[n, g] = mu
            inv[n, g] = 1.0 / math.sqrt(q / m_ + eps)
            mu, iv = mean[n, g], inv[n, g]
            for j in range(cg):
                c = g * cg + j
                scale, shift = iv * weight[c], bias[c]
                for k in range(k_):
                    y[n, c, k] = (x[n, c, k] - mu) * scale + shift


@launcher
def _gn_grad_cpu(parts, x, dy, mean, inv, weight, dw, db, dx):
    run_parts(_gn_grad_part, parts, (x, dy, mean, inv, weight, dw, db, dx))


@kernel(fastmath=REDUCE)
def _gn_grad_part(t, parts, x, dy, mean, inv, weight, dw, db, dx):
    """Over the samples of part t: dw[t] and db[t], its sums of dy x-hat and dy per channel, and,
    unless dx is empty, dx = inv (weight dy - s1 / m - x-hat s2 / m) where s1 and s2 are the
    group's sums of weight dy and weight dy x-hat (m values a group)."""
    n0, n1 = share(x.shape[0], t, parts)
    g_ = mean.shape[1]
    c_, k_ = x.shape[1], x.shape[2]
    cg = c_ // g_
    for c in range(c_):
        dw[t, c] = 0
        db[t, c] = 0
    per = 1.0 / (cg * k_)
    for i in range(n1 - n0):
        n = n0 + i
        for g in range(g_):
            mu, iv = mean[n, g], inv[n, g]
            s1 = 0.0
            s2 = 0.0
            for j in range(cg):
                c = g * cg + j
                s = 0.0
                sx = 0.0
                for k in range(k_):
                    d = dy[n, c, k]
                    s += d
                    sx += d * (x[n, c, k] - mu)
                sx *= iv
                db[t, c] += s
                dw[t, c] += sx
                s1 += weight[c] * s
                s2 += weight[c] * sx
            if dx.shape[0] == 0:
                continue
            shift = -iv * s1 * per  # dx = a dy + shift + slope (x - mean), in the data's type
            slope = -iv * iv * s2 * per
            for j in range(cg):
                c = g * cg + j
                a = iv * weight[c]
                for k in range(k_):
                    dx[n, c, k] = a * dy[n, c, k] + shift + slope * (x[n, c, k] - mu)


for _kind in (kinds.LayerNorm, kinds.InstanceNorm, kinds.GroupNorm):
    implements(_kind, "cpu")(GroupNormalization)
