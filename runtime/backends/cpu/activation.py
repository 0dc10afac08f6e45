"""The activation layers (RELU, LEAKY, PRELU, ELU, SIGMOID, TANH, SOFTMAX), MAXOUT and DROPOUT on
the CPU, and the activations that CONV, FC and ADD apply apart from their own kernels. The math
per element is elementwise.py's."""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds import activation as kinds

from .. import elementwise as ew
from ..registry import Implementation, implements
from .common import _softmax_terms_cpu
from .jit import REDUCE, kernel, launch, launcher, run_parts, share, specialized_pairs, split


# ---- activations over whole arrays ------------------------------------------------------------
def apply(name, z, a=0.0, out=None):
    """y = act(z) for an activation name (softmax: over the features of each sample, or, on an
    N x K x H x W tensor, over the K values of each pixel); `a` is leaky's slope or ELU's
    alpha. `out`: a contiguous array of z's shape for y (a fresh one by default)."""
    z = np.ascontiguousarray(z)
    y = np.empty_like(z) if out is None else out
    if name == "softmax":  # per pixel (P > 1) over a sample's pixels at once: their loops vectorize
        rows = _rows(z)
        kernels = ((_softmax_pixels_cpu, _softmax_pixels_part) if rows.shape[2] > 1
                   else (_softmax_rows_cpu, _softmax_rows_part))
        launch(*kernels, _sample_parts(z), rows, _rows(y))
    else:
        launch(*_kernels(_ACT, name), split(2 * z.size), z.dtype.type(a), z.reshape(-1),
               y.reshape(-1))
    return y


def apply_grad(name, z, y, dy, a=0.0, out=None):
    """dL/dz from dL/dy for y = act(z) (into `out` where given). Where from_output(name, a), y
    may stand for z."""
    dy = np.ascontiguousarray(dy)
    dz = np.empty_like(dy) if out is None else out
    if name == "softmax":
        launch(_softmax_grad_rows_cpu, _softmax_grad_rows_part, _sample_parts(y), _rows(y),
               _rows(dy), _rows(dz))
    else:
        launch(*_kernels(_ACT_GRAD, name), split(3 * dz.size), dy.dtype.type(a),
               np.ascontiguousarray(z).reshape(-1), y.reshape(-1), dy.reshape(-1), dz.reshape(-1))
    return dz


def _kernels(made, name):
    """(launcher, part) of `made` (_ACT or _ACT_GRAD) for the activation `name`."""
    if name not in made:
        raise ValueError(f"no elementwise kernel for the activation {name!r}: one of "
                         f"{', '.join(made)} (PReLU and softmax have their own)")
    return made[name]


def from_output(name, a=0.0) -> bool:
    """Whether act's gradient follows from its output alone (elementwise.act_grad given y for z):
    ReLU's, the sigmoid's, tanh's, softmax's, and leaky's or ELU's with a slope or alpha >= 0 (y > 0
    exactly where z > 0 then). A layer then keeps y for backward, not z: z is dead once y is
    written (ResNet-18: 150 MiB at batch 64)."""
    return name in ("none", "relu", "sigmoid", "tanh", "softmax") or (
        name in ("leaky", "elu") and a >= 0)


def prelu(z, slope):
    """y = z where z > 0, else slope[c] z (one slope per channel, or one for all)."""
    z = np.ascontiguousarray(z)
    y = np.empty_like(z)
    launch(_prelu_cpu, _prelu_part, min(split(2 * z.size), z.shape[0]), _by_channel(z), slope,
           _by_channel(y))
    return y


def prelu_grad(z, slope, dy):
    """(dL/dz, dL/dslope) for y = prelu(z, slope)."""
    z, dy = np.ascontiguousarray(z), np.ascontiguousarray(dy)
    dz = np.empty_like(dy)
    per_channel = np.empty(z.shape[1], dy.dtype)
    launch(_prelu_grad_cpu, _prelu_grad_part, min(split(4 * z.size), z.shape[1]), _by_channel(z),
           slope, _by_channel(dy), _by_channel(dz), per_channel)
    return dz, (per_channel if slope.size > 1 else per_channel.sum(keepdims=True)).astype(dy.dtype)


def _rows(a):
    """(N, K, P) view of an (N, K) or (N, K, H, W) array: softmax's rows are a[n, :, p]."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _by_channel(a):
    """(N, C, rest) view of an (N, C[, H, W]) array."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def fused_forward(h, p, z):
    """The activation of a CONV, FC or ADD applied apart from its kernel (PReLU, with its learned
    `slope`; softmax; or any at the network's output, whose loss may want the pre-activation)."""
    name = h["act"]
    if name == "none":
        return z
    if name == "prelu":
        return prelu(z, p["slope"])
    return apply(name, z, ew.FUSED_PARAM.get(name, 0.0))


def fused_backward(h, p, z, y, dy, out=None):
    """(dL/dz, {"slope": ...} for PReLU) from dL/dy, for fused_forward's activation; dL/dz into
    `out` where given (but for PReLU's)."""
    name = h["act"]
    if name == "none":
        return dy, {}
    if name == "prelu":
        dz, dslope = prelu_grad(z, p["slope"], dy)
        return dz, {"slope": dslope}
    return apply_grad(name, z, y, dy, ew.FUSED_PARAM.get(name, 0.0), out), {}


def in_kernel(h, ctx):
    """The activation a CONV or FC applies inside its own kernel: its act=, unless that is
    applied apart (PReLU, softmax, and at the network's output)."""
    name = h["act"]
    fusable = name in ew.ACT_CODES and name != "prelu"
    return name if fusable and not (ctx.output and name != "none") else "none"


# y = act(z) and its gradient: a launcher and a part of their own for each activation, made from
# the two templates below (jit.specialized: CODE a constant in each copy, so that the code's
# branches fold away and the loop vectorizes; one loop over every code branched on each element
# took 4 ns a value, 4x NumPy's time). A network compiles only the activations it uses: the five
# in one kernel compiled in 1.4 s, one in 0.2 s.
CODE = ew.NONE  # (each copy's own: jit.specialized)


def _act_each_cpu(parts, a, z, y):
    run_parts(_act_each_part, parts, (a, z, y))


def _act_each_part(t, parts, a, z, y):
    """y = act(z) over part t of `parts`, for the activation CODE."""
    lo, hi = share(z.size, t, parts)
    zs, ys = z[lo:hi], y[lo:hi]  # (jit.share: why the loop runs over slices, from 0)
    for i in range(zs.size):
        ys[i] = ew.act(CODE, zs[i], a)


def _act_grad_each_cpu(parts, a, z, y, dy, dz):
    run_parts(_act_grad_each_part, parts, (a, z, y, dy, dz))


def _act_grad_each_part(t, parts, a, z, y, dy, dz):
    """dz = dy act'(z) over part t of `parts`, for the activation CODE."""
    lo, hi = share(z.size, t, parts)
    zs, ys, dys, dzs = z[lo:hi], y[lo:hi], dy[lo:hi], dz[lo:hi]  # (from 0: jit.share)
    for i in range(zs.size):
        dzs[i] = dys[i] * ew.act_grad(CODE, zs[i], ys[i], a)


@launcher
def _prelu_cpu(parts, z, slope, y):
    run_parts(_prelu_part, parts, (z, slope, y))


@kernel()
def _prelu_part(t, parts, z, slope, y):
    """Part t of `parts`, split by samples."""
    step = 1 if slope.size > 1 else 0  # a slope per channel, or one for all
    lo, hi = share(z.shape[0], t, parts)
    for n in range(lo, hi):
        for c in range(z.shape[1]):
            a = slope[c * step]
            for k in range(z.shape[2]):
                y[n, c, k] = ew.act(ew.PRELU, z[n, c, k], a)


@launcher
def _prelu_grad_cpu(parts, z, slope, dy, dz, dslope):
    run_parts(_prelu_grad_part, parts, (z, slope, dy, dz, dslope))


@kernel(fastmath=REDUCE)
def _prelu_grad_part(t, parts, z, slope, dy, dz, dslope):
    """dz, and dslope[c] = the sum of dy z where z <= 0 over channel c (one sum per channel),
    part t of `parts`, split by channels."""
    step = 1 if slope.size > 1 else 0
    lo, hi = share(z.shape[1], t, parts)
    for c in range(lo, hi):
        a = slope[c * step]
        acc = 0.0
        for n in range(z.shape[0]):
            for k in range(z.shape[2]):
                v = z[n, c, k]
                dz[n, c, k] = dy[n, c, k] * ew.act_grad(ew.PRELU, v, v, a)
                acc += dy[n, c, k] * v if v <= 0 else 0
        dslope[c] = acc


@kernel(inline=True)
def _softmax_row(z, y, n, p):
    """y[n, :, p] = softmax(z[n, :, p])."""
    _, s = ew.softmax_row(z[n, :, p], y[n, :, p])
    for j in range(z.shape[1]):
        y[n, j, p] = y[n, j, p] / s


@launcher
def _softmax_rows_cpu(parts, z, y):
    run_parts(_softmax_rows_part, parts, (z, y))


@kernel()
def _softmax_rows_part(t, parts, z, y):
    """y[n, :, p] = softmax(z[n, :, p]) for each row (sample, pixel) of part t's samples."""
    lo, hi = share(z.shape[0], t, parts)
    for n in range(lo, hi):
        for p in range(z.shape[2]):
            _softmax_row(z, y, n, p)


@launcher
def _softmax_pixels_cpu(parts, z, y):
    run_parts(_softmax_pixels_part, parts, (z, y))


@kernel()
def _softmax_pixels_part(t, parts, z, y):
    """y[n] (K, P) = the softmax over K of each pixel of z[n], for part t's samples."""
    lo, hi = share(z.shape[0], t, parts)
    m, s = np.empty(z.shape[2], z.dtype), np.empty(z.shape[2], z.dtype)
    for n in range(lo, hi):
        yn = y[n]
        _softmax_terms_cpu(z[n], yn, m, s)
        for p in range(z.shape[2]):
            s[p] = 1.0 / s[p]
        for k in range(z.shape[1]):
            for p in range(z.shape[2]):
                yn[k, p] *= s[p]


@kernel(fastmath=REDUCE, inline=True)
def _softmax_grad_row(y, dy, dz, n, p):
    """dz[n, :, p] = y (dy - sum(dy y)) over row (n, p)."""
    s = 0.0
    for j in range(y.shape[1]):
        s += dy[n, j, p] * y[n, j, p]
    for j in range(y.shape[1]):
        dz[n, j, p] = y[n, j, p] * (dy[n, j, p] - s)


@launcher
def _softmax_grad_rows_cpu(parts, y, dy, dz):
    run_parts(_softmax_grad_rows_part, parts, (y, dy, dz))


@kernel(fastmath=REDUCE)
def _softmax_grad_rows_part(t, parts, y, dy, dz):
    """dz = y (dy - sum(dy y)) for each row (sample, pixel) of part t's samples."""
    lo, hi = share(y.shape[0], t, parts)
    for n in range(lo, hi):
        for p in range(y.shape[2]):
            _softmax_grad_row(y, dy, dz, n, p)


def _sample_parts(a):
    """Parts for a softmax over the rows of `a` (N, K[, H, W]), split by samples: a row costs
    about 20 operations a value (an exp, a division, the sums)."""
    return min(split(20 * a.size), a.shape[0])


# ---- the layers -------------------------------------------------------------------------------
class Elementwise(Implementation):
    """An activation layer: y = act(z) by the kind's activation, with the layer's own parameter
    (LEAKY's slope, ELU's alpha). At the network's output, softmax and sigmoid hand the loss
    their input (the logits), so that cross-entropy or BCE fuses with them."""

    def forward(self, h, p, xs, ctx):
        z = xs[0]
        act, a = self.rules.act_of(h), h.get("slope", h.get("alpha", 0.0))
        y = apply(act, z, a, ctx.value(z.shape, z.dtype))
        # backward needs y alone, but at the network's output (the loss's logits) or for a
        # negative slope
        return y, (z if ctx.output or not from_output(act, a) else None, y)

    def backward(self, h, p, cache, dy, ctx):
        z, y = cache
        act, a = self.rules.act_of(h), h.get("slope", h.get("alpha", 0.0))
        dz = ctx.grad(dy.shape, dy.dtype)
        return [apply_grad(act, y if z is None else z, y, dy, a, dz)], {}

    def logits(self, cache):
        return cache[0]

    def backward_logits(self, h, p, cache, dz, ctx):
        return [dz], {}


for _kind in (kinds.Relu, kinds.Leaky, kinds.Elu, kinds.Sigmoid, kinds.Tanh, kinds.Softmax):
    implements(_kind, "cpu")(Elementwise)


@implements(kinds.PRelu, "cpu")
class PRelu(Implementation):
    def forward(self, h, p, xs, ctx):
        z = xs[0]
        return prelu(z, p["weight"]), z

    def backward(self, h, p, z, dy, ctx):
        dz, dslope = prelu_grad(z, p["weight"], dy)
        return [dz], {"weight": dslope.reshape(p["weight"].shape)}


@implements(kinds.Maxout, "cpu")
class Maxout(Implementation):
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


@implements(kinds.Dropout, "cpu")
class Dropout(Implementation):
    """Inverted dropout: y = x mask / (1 - p); the mask is elementwise.keep's hash of a seed drawn
    from ctx.rng, so backward recomputes it rather than keeping it."""

    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        if not ctx.train or h["p"] == 0:
            return x, None
        seed, threshold, scale = ew.dropout_args(h["p"], ctx.rng, x.dtype)
        y = np.empty_like(x)
        launch(_dropout_cpu, _dropout_part, split(4 * x.size), x.reshape(-1), seed, threshold, scale,
               y.reshape(-1))
        return y, (seed, threshold, scale)

    def backward(self, h, p, cache, dy, ctx):
        if cache is None:
            return [dy], {}
        dy = np.ascontiguousarray(dy)
        dx = np.empty_like(dy)
        launch(_dropout_cpu, _dropout_part, split(4 * dy.size), dy.reshape(-1), *cache,
               dx.reshape(-1))
        return [dx], {}


@launcher
def _dropout_cpu(parts, x, seed, threshold, scale, y):
    run_parts(_dropout_part, parts, (x, seed, threshold, scale, y))


@kernel()
def _dropout_part(t, parts, x, seed, threshold, scale, y):
    lo, hi = share(x.size, t, parts)
    xs, ys = x[lo:hi], y[lo:hi]  # (from 0: jit.share)
    for i in range(xs.size):
        ys[i] = xs[i] * scale if ew.keep(seed, lo + i, threshold) else xs[i] * 0


_FIVE = {name: ew.ACT_CODES[name] for name in ("relu", "leaky", "elu", "sigmoid", "tanh")}
_ACT = specialized_pairs(_act_each_part, _act_each_cpu, "_act_{}", _FIVE, vector_division=True)
_ACT_GRAD = specialized_pairs(_act_grad_each_part, _act_grad_each_cpu, "_act_grad_{}", _FIVE,
                              vector_division=True)
