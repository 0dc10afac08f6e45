"""Activations as layers: RELU, LEAKY, PRELU, ELU, SIGMOID, TANH, SOFTMAX, MAXOUT; and DROPOUT."""
from __future__ import annotations

import math

import numpy as np

from ..jit import cpu_kernel
from ..registry import Bool, Float, Int, LayerError, LayerKind, register


# ---- the elementwise math, shared by these layers and the activations fused into CONV/FC/ADD ----
def act_forward(name, z, slope=None, alpha=1.0):
    """y = act(z); slope is LEAKY's constant or PRELU's learned slope (broadcastable)."""
    if name == "none":
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky":
        return np.where(z > 0, z, z * (0.01 if slope is None else slope))
    if name == "prelu":
        return np.where(z > 0, z, z * slope)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softmax":  # one kernel: NumPy's five operations took 10 us at 64 x 10
        y = np.empty(z.shape, z.dtype)
        _softmax_rows_cpu(np.ascontiguousarray(z).reshape(len(z), -1), y.reshape(len(z), -1))
        return y
    raise ValueError(name)  # pragma: no cover - names are checked at compile time


@cpu_kernel()
def _softmax_rows_cpu(z, y):
    """y[i] = exp(z[i] - max z[i]) / sum: softmax over each row."""
    for i in range(z.shape[0]):
        _, s = _exp_row_cpu(z[i], y[i])
        for j in range(z.shape[1]):
            y[i, j] = y[i, j] / s


@cpu_kernel(inline=True)
def _exp_row_cpu(z, e):
    """e = exp(z - max z) for one row; returns (max z, the sum of e): a softmax before its
    division, and the log-sum-exp's parts (losses.py's cross-entropy kernel shares it)."""
    m = z[0]
    for j in range(1, z.size):
        m = max(m, z[j])
    s = 0.0
    for j in range(z.size):
        e[j] = np.exp(z[j] - m)
        s += e[j]
    return m, s


def act_backward(name, z, y, dy, slope=None, alpha=1.0):
    """dL/dz from dL/dy; returns (dz, dslope) where dslope is summed to the slope's shape."""
    if name == "none":
        return dy, None
    if name == "relu":
        return dy * (z > 0), None
    if name == "leaky":
        return np.where(z > 0, dy, dy * (0.01 if slope is None else slope)), None
    if name == "prelu":
        dz = np.where(z > 0, dy, dy * slope)
        dslope = np.where(z > 0, 0, dy * z)
        return dz, _sum_to(dslope, slope.shape)
    if name == "elu":
        return np.where(z > 0, dy, dy * (y + alpha)), None
    if name == "sigmoid":
        return dy * y * (1 - y), None
    if name == "tanh":
        return dy * (1 - y * y), None
    if name == "softmax":
        return y * (dy - (dy * y).sum(axis=1, keepdims=True)), None
    raise ValueError(name)  # pragma: no cover


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _sum_to(g, shape):
    """Sum a broadcast gradient back to a parameter's shape (per channel, or shared)."""
    if g.ndim > 1:
        g = g.sum(axis=0)
        if g.ndim > 1:
            g = g.reshape(g.shape[0], -1).sum(axis=1)
    return g.sum(keepdims=True).reshape(shape) if shape == (1,) else g.reshape(shape)


def channel_view(p, ndim):
    """A per-channel vector shaped to broadcast over (N, C[, H, W])."""
    return p.reshape((1, -1) + (1,) * (ndim - 2))


class _Activation(LayerKind):
    """A layer that applies one of the fused-activation words elementwise."""
    elementwise = True
    act = "none"

    def _slope(self, h, p, ndim):
        return channel_view(p["weight"], ndim) if "weight" in p else h.get("slope")

    def forward(self, h, p, xs, ctx):
        z = xs[0]
        y = act_forward(self.act, z, self._slope(h, p, z.ndim), h.get("alpha", 1.0))
        return y, (z, y)

    def backward(self, h, p, cache, dy, ctx):
        z, y = cache
        dz, dslope = act_backward(self.act, z, y, dy, self._slope(h, p, z.ndim), h.get("alpha", 1.0))
        return [dz], ({"weight": dslope.reshape(p["weight"].shape)} if "weight" in p else {})


@register
class Relu(_Activation):
    name = "RELU"
    act = "relu"
    example = ("8", "RELU")
    doc = "max(0, x)"


@register
class Leaky(_Activation):
    name = "LEAKY"
    act = "leaky"
    example = ("8", "LEAKY 0.2")
    doc = "leaky ReLU: x if x > 0 else slope*x (slope 0.01 unless given)"
    keys = {"slope": Float(0.01)}
    positional = {float: "slope"}

    def label(self, h):
        return f"LEAKY {h['slope']:g}"


@register
class PRelu(_Activation):
    name = "PRELU"
    act = "prelu"
    example = ("2x2x3", "PRELU")
    doc = "parametric ReLU: a learned slope per channel (shared=true: one slope)"
    keys = {"shared": Bool(False)}

    def params(self, h, xs):
        return {"weight": (1 if h["shared"] else xs[0][0],)}


@register
class Elu(_Activation):
    name = "ELU"
    act = "elu"
    example = ("8", "ELU")
    doc = "x if x > 0 else alpha*(exp(x) - 1)"
    keys = {"alpha": Float(1.0)}
    positional = {float: "alpha"}


@register
class Sigmoid(_Activation):
    name = "SIGMOID"
    act = "sigmoid"
    example = ("8", "SIGMOID")
    doc = "1 / (1 + exp(-x))"


@register
class Tanh(_Activation):
    name = "TANH"
    act = "tanh"
    example = ("8", "TANH")
    doc = "tanh(x)"


@register
class Softmax(_Activation):
    name = "SOFTMAX"
    act = "softmax"
    example = ("8", "SOFTMAX")
    doc = "softmax over the features (a vector input)"

    def resolve(self, h, xs):
        if len(xs[0]) != 1:
            raise LayerError(f"SOFTMAX needs a vector input; received {xs[0]}",
                             hint="put GAP or FLATTEN before it")
        return h


@register
class Maxout(LayerKind):
    name = "MAXOUT"
    example = ("2x2x6", "MAXOUT 3")
    doc = "maxout: the maximum over groups of `pieces` consecutive channels (features)"
    keys = {"pieces": Int(2, low=2)}
    positional = {int: "pieces"}

    def resolve(self, h, xs):
        if xs[0][0] % h["pieces"]:
            raise LayerError(f"MAXOUT with {h['pieces']} pieces needs a channel count divisible by "
                             f"{h['pieces']}; received {xs[0][0]}", key="pieces",
                             hint="make the previous layer's width a multiple of the pieces")
        return h

    def shape(self, h, xs):
        return (xs[0][0] // h["pieces"],) + tuple(xs[0][1:])

    def flops(self, h, xs, y):
        return math.prod(xs[0])

    def label(self, h):
        return f"MAXOUT {h['pieces']}"

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        k = h["pieces"]
        g = x.reshape((x.shape[0], x.shape[1] // k, k) + x.shape[2:])
        idx = g.argmax(axis=2)
        return np.take_along_axis(g, idx[:, :, None], axis=2)[:, :, 0], (x.shape, idx)

    def backward(self, h, p, cache, dy, ctx):
        shape, idx = cache
        k = h["pieces"]
        dg = np.zeros((shape[0], shape[1] // k, k) + shape[2:], dtype=dy.dtype)
        np.put_along_axis(dg, idx[:, :, None], dy[:, :, None], axis=2)
        return [dg.reshape(shape)], {}


@register
class Dropout(LayerKind):
    name = "DROPOUT"
    example = ("8", "DROPOUT 0.5")
    doc = "inverted dropout with drop probability p (training only): `DROPOUT 0.5`"
    elementwise = True
    keys = {"p": Float(0.5, low=0.0, high=1.0)}
    positional = {float: "p"}

    def flops(self, h, xs, y):
        return 0

    def label(self, h):
        return f"DROPOUT {h['p']:g}"

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        if not ctx.train or h["p"] == 0:
            return x, None
        keep = 1.0 - h["p"]
        mask = (ctx.rng.random(x.shape) < keep).astype(x.dtype) / keep
        return x * mask, mask

    def backward(self, h, p, mask, dy, ctx):
        return [dy if mask is None else dy * mask], {}
