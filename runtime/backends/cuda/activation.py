"""The activation layers (RELU, LEAKY, PRELU, ELU, SIGMOID, TANH, SOFTMAX), MAXOUT and DROPOUT on
the GPU, and the activations that CONV, FC and ADD apply apart from their own kernels. The math
per element is elementwise.py's, the same as the CPU's."""
from __future__ import annotations

import numpy as np
from numba import cuda

from netc.compiler.kinds import activation as kinds

from ..registry import Implementation, implements
from .kernels import NEGATIVE_PRODUCTS, flat, reduce
from .launch import ew, grid, kernel


def apply(name, z, ctx, tag="y", a=0.0):
    """y = act(z) into the node's buffer `tag` (softmax: over each row's features)."""
    y = ctx.buffer(tag, z.shape, z.dtype)
    if name == "softmax":  # over each sample's features, or each pixel's (N, K, H, W)
        rows = _rows(z)
        _softmax_rows[grid(rows.shape[0] * rows.shape[2])](rows, _rows(y))
    else:
        _act[grid(z.size)](ew.ACT_CODES[name], z.dtype.type(a), flat(z), flat(y))
    return y


def apply_grad(name, z, y, dy, ctx, a=0.0):
    """dL/dz from dL/dy for y = act(z)."""
    dz = ctx.grad(dy.shape, dy.dtype)
    if name == "softmax":
        rows = _rows(y)
        _softmax_grad_rows[grid(rows.shape[0] * rows.shape[2])](rows, _rows(dy), _rows(dz))
    else:
        _act_grad[grid(z.size)](ew.ACT_CODES[name], dy.dtype.type(a), flat(z), flat(y), flat(dy),
                                flat(dz))
    return dz


def _rows(a):
    """(N, K, P) view of an (N, K) or (N, K, H, W) array: softmax's rows are a[n, :, p]."""
    return a.reshape(a.shape[0], a.shape[1], a.size // (a.shape[0] * a.shape[1]))


def _channels(a):
    return a.reshape(a.shape[0], a.shape[1], a.size // (a.shape[0] * a.shape[1]))


def prelu(z, slope, ctx, tag="y"):
    y = ctx.buffer(tag, z.shape, z.dtype)
    _prelu[grid(z.size)](_channels(z), slope, _channels(y))
    return y


def prelu_grad(z, slope, dy, ctx):
    """(dL/dz, dL/dslope): the slope's gradient sums dy z where z <= 0, per channel."""
    dz = ctx.grad(dy.shape, dy.dtype)
    _prelu_grad[grid(z.size)](_channels(z), slope, _channels(dy), _channels(dz))
    per = ctx.buffer("dslope_channels", (z.shape[1],), dy.dtype)
    reduce(_channels(dy), per, NEGATIVE_PRODUCTS, _channels(z), ctx=ctx)
    if slope.size == 1:
        one = ctx.buffer("dslope", (1,), dy.dtype)
        return dz, reduce(per.reshape(1, 1, per.size), one, ctx=ctx)
    return dz, per


def fused_forward(h, p, z, ctx):
    """The activation of a CONV, FC or ADD applied apart from its kernel (see cpu/activation)."""
    name = h["act"]
    if name == "none":
        return z
    if name == "prelu":
        return prelu(z, p["slope"], ctx)
    return apply(name, z, ctx, a=ew.FUSED_PARAM.get(name, 0.0))


def fused_backward(h, p, z, y, dy, ctx):
    name = h["act"]
    if name == "none":
        return dy, {}
    if name == "prelu":
        dz, dslope = prelu_grad(z, p["slope"], dy, ctx)
        return dz, {"slope": dslope}
    return apply_grad(name, z, y, dy, ctx, ew.FUSED_PARAM.get(name, 0.0)), {}


@kernel()
def _act(code, a, z, y):
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        y[i] = ew.act(code, z[i], a)


@kernel()
def _act_grad(code, a, z, y, dy, dz):
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        dz[i] = dy[i] * ew.act_grad(code, z[i], y[i], a)


@kernel()
def _prelu(z, slope, y):
    n_, c_, k_ = z.shape
    step = 1 if slope.size > 1 else 0
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        n, c, k = i // (c_ * k_), (i // k_) % c_, i % k_
        y[n, c, k] = ew.act(ew.PRELU, z[n, c, k], slope[c * step])


@kernel()
def _prelu_grad(z, slope, dy, dz):
    n_, c_, k_ = z.shape
    step = 1 if slope.size > 1 else 0
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        n, c, k = i // (c_ * k_), (i // k_) % c_, i % k_
        v = z[n, c, k]
        dz[n, c, k] = dy[n, c, k] * ew.act_grad(ew.PRELU, v, v, slope[c * step])


@kernel()
def _softmax_rows(z, y):
    """y[n, :, p] = softmax(z[n, :, p]), a thread per row (sample, pixel)."""
    for t in range(cuda.grid(1), z.shape[0] * z.shape[2], cuda.gridsize(1)):
        n, p = t // z.shape[2], t % z.shape[2]
        _, s = ew.softmax_row(z[n, :, p], y[n, :, p])
        for j in range(z.shape[1]):
            y[n, j, p] = y[n, j, p] / s


@kernel()
def _softmax_grad_rows(y, dy, dz):
    for t in range(cuda.grid(1), y.shape[0] * y.shape[2], cuda.gridsize(1)):
        n, p = t // y.shape[2], t % y.shape[2]
        s = 0.0
        for j in range(y.shape[1]):
            s += dy[n, j, p] * y[n, j, p]
        for j in range(y.shape[1]):
            dz[n, j, p] = y[n, j, p] * (dy[n, j, p] - s)


# ---- the layers -------------------------------------------------------------------------------
class Elementwise(Implementation):
    """An activation layer: y = act(z) by the kind's activation, with the layer's own parameter
    (LEAKY's slope, ELU's alpha). At the network's output, softmax and sigmoid hand the loss
    their input (the logits), so that cross-entropy or BCE fuses with them."""

    def forward(self, h, p, xs, ctx):
        z = xs[0]
        act = self.rules.act_of(h)
        y = apply(act, z, ctx, "y", h.get("slope", h.get("alpha", 0.0)))
        return y, (z, y)

    def backward(self, h, p, cache, dy, ctx):
        z, y = cache
        act = self.rules.act_of(h)
        return [apply_grad(act, z, y, dy, ctx, h.get("slope", h.get("alpha", 0.0)))], {}

    def logits(self, cache):
        return cache[0]

    def backward_logits(self, h, p, cache, dz, ctx):
        return [dz], {}


for _kind in (kinds.Relu, kinds.Leaky, kinds.Elu, kinds.Sigmoid, kinds.Tanh, kinds.Softmax):
    implements(_kind, "cuda")(Elementwise)


@implements(kinds.PRelu, "cuda")
class PRelu(Implementation):
    def forward(self, h, p, xs, ctx):
        z = xs[0]
        return prelu(z, p["weight"], ctx, "y"), z

    def backward(self, h, p, z, dy, ctx):
        dz, dslope = prelu_grad(z, p["weight"], dy, ctx)
        return [dz], {"weight": dslope.reshape(p["weight"].shape)}


@implements(kinds.Maxout, "cuda")
class Maxout(Implementation):
    """y = the maximum over each group of `pieces` consecutive channels; the winner's index is
    kept for backward (the first maximum, as NumPy's argmax)."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        k = h["pieces"]
        shape = (x.shape[0], x.shape[1] // k) + x.shape[2:]
        y = ctx.buffer("y", shape, x.dtype)
        arg = ctx.buffer("arg", shape, np.int32)
        g = _groups(x, k)
        _maxout[grid(y.size)](g, _channels(y), _channels(arg))
        return y, (x.shape, arg)

    def backward(self, h, p, cache, dy, ctx):
        shape, arg = cache
        dx = ctx.grad(shape, dy.dtype)
        _maxout_grad[grid(dx.size)](_channels(dy), _channels(arg), dy.dtype.type(0),
                                    _groups(dx, h["pieces"]))
        return [dx], {}


def _groups(a, k):
    """(N, C/k, k, rest) view of an (N, C[, H, W]) array."""
    n, c = a.shape[0], a.shape[1]
    return a.reshape(n, c // k, k, a.size // (n * c))


@kernel()
def _maxout(x, y, arg):
    n_, g_, k_, m_ = x.shape
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, g, m = i // (g_ * m_), (i // m_) % g_, i % m_
        best, where = x[n, g, 0, m], 0
        for j in range(1, k_):
            if x[n, g, j, m] > best:
                best, where = x[n, g, j, m], j
        y[n, g, m] = best
        arg[n, g, m] = where


@kernel()
def _maxout_grad(dy, arg, zero, dx):
    n_, g_, k_, m_ = dx.shape
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, g, j, m = i // (g_ * k_ * m_), (i // (k_ * m_)) % g_, (i // m_) % k_, i % m_
        dx[n, g, j, m] = dy[n, g, m] if arg[n, g, m] == j else zero


@implements(kinds.Dropout, "cuda")
class Dropout(Implementation):
    """Inverted dropout with elementwise.keep's hash mask, the same as the CPU's for a seed."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        if not ctx.train or h["p"] == 0:
            return x, None
        args = ew.dropout_args(h["p"], ctx.rng, x.dtype)
        y = ctx.buffer("y", x.shape, x.dtype)
        _dropout[grid(x.size)](flat(x), *args, flat(y))
        return y, args

    def backward(self, h, p, args, dy, ctx):
        if args is None:
            return [dy], {}
        dx = ctx.grad(dy.shape, dy.dtype)
        _dropout[grid(dy.size)](flat(dy), *args, flat(dx))
        return [dx], {}


@kernel()
def _dropout(x, seed, threshold, scale, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] * scale if ew.keep(seed, i, threshold) else x[i] * 0
