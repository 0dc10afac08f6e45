"""FC (fully connected, flattens a 3-D input first), OUT (an FC with the output activation), FLATTEN."""
from __future__ import annotations

import math

import numpy as np

from ..jit import REDUCE, cpu_kernel, gemm, prange
from ..registry import ACTIVATIONS, Bool, Choice, Int, LayerError, LayerKind, register
from .conv import fused_backward, fused_forward
from .conv.common import ACT_CODES, _act, _act_row_cpu, _grad_row_cpu
from .conv.direct import TAPS, _nine_dots_cpu


@register
class FullyConnected(LayerKind):
    name = "FC"
    example = ("3x3x2", "FC 5 act=tanh")
    doc = "fully connected: `FC 4096`, `FC 84 act=tanh`; a C x H x W input is flattened first"
    keys = {
        "units": Int(doc="the number of units, an integer >= 1"),
        "bias": Bool(True),
        "act": Choice(ACTIVATIONS, "none"),
    }
    positional = {int: "units", str: "act"}

    def resolve(self, h, xs):
        if "units" not in h:
            raise LayerError(f"{self.name} needs the number of units", key="units",
                             hint=f"write it after the kind, e.g. `{self.name} 10`, or set a "
                                  f"default with `{self.name}: 10`")
        return h

    def shape(self, h, xs):
        return (h["units"],)

    def params(self, h, xs):
        p = {"weight": (h["units"], math.prod(xs[0]))}
        if h["bias"]:
            p["bias"] = (h["units"],)
        if h["act"] == "prelu":
            p["slope"] = (h["units"],)
        return p

    def macs(self, h, xs, y):
        return math.prod(xs[0]) * h["units"]

    def flops(self, h, xs, y):
        return h["units"] * (int(h["bias"]) + (h["act"] != "none"))

    def window(self, h, xs):
        return "global" if len(xs[0]) == 3 else None

    def label(self, h):
        return f"{self.name} {h['units']}" + (f" {h['act']}" if h["act"] != "none" else "")

    def cpu_algorithm(self, h, xs, batch=None, tiles=None):
        return linear_algorithm(batch or 1, math.prod(xs[0]), 4, tiles)

    # ---- runtime ------------------------------------------------------------------------------
    # Both passes are one parallel kernel each (see linear_forward, linear_backward). The
    # activation runs inside them (its gradient from the output alone), except PReLU's, with its
    # learned slope, and at the network's output, whose pre-activation the loss may need.
    def forward(self, h, p, xs, ctx):
        x = xs[0]
        x2 = np.ascontiguousarray(x.reshape(x.shape[0], -1))
        code = 0 if ctx.fresh else ACT_CODES.get(h["act"], 0)
        z = np.empty((x2.shape[0], h["units"]), x.dtype)
        linear_forward(x2, p["weight"], p.get("bias"), code, ctx.workers, z)
        if code:
            return z, (x.shape, x2, None, z, code)
        y = fused_forward(h, p, z)
        return y, (x.shape, x2, z, y, 0)

    def backward(self, h, p, cache, dy, ctx):
        if cache[4]:  # the kernel applies the activation's gradient
            return self.backward_linear(h, p, cache, (dy, {}), ctx)
        return self.backward_linear(h, p, cache, fused_backward(h, p, cache[2], cache[3], dy), ctx)

    def backward_linear(self, h, p, cache, dz_grads, ctx):
        """The backward pass from dL/dz (a loss fused with the output activation starts here), or
        from dL/dy where the forward kernel applied the activation."""
        xshape, x2, _, y, code = cache
        dz, grads = dz_grads
        dx = ctx.buffer("dx", x2.shape if ctx.need_dx else (0, x2.shape[1]), dz.dtype)
        grads.update(linear_backward(x2, p, dz, y, code, ctx, dx))
        return [dx.reshape(xshape) if ctx.need_dx else None], grads

    @staticmethod
    def logits(cache):
        return cache[2]


# FC's forward runs one of two ways. "dots": netc's own loop, two samples against nine units a
# pass with the 18 sums in registers (the direct CONV's _nine_dots_cpu), vectorized at the CPU's
# full width whatever the BLAS is pinned to. "gemm": the kernels' gemm, which on CPUs with AVX-512
# is netc's own register tiles (compiler/tiles.py) and elsewhere the BLAS. With the tiles, gemm
# wins from 16 samples on; measured by bench/fc.py on 2 threads (float32), gemm / dots: the
# MLP's 64 x 784 x 256 layer 0.74x, 400 -> 120 (LeNet's C5) 0.82x, rows of 120 0.78x, rows of
# 4096 0.56x; batch 1 0.98x. Against OpenBLAS's AVX2 kernels, dots paid where each row holds
# 1-4 KiB (long enough for its 18 sums, short enough that nine units' rows stay in L1) or the
# batch is under 16 (too few rows for a GEMM's packing to pay): the MLP's layer 1.3-1.8x faster,
# C5 1.3-1.6x, batch 1 3.7-4.6x; rows of 120 at batch 64 0.92-0.97x, rows of 4096 0.95-1.3x.
DOTS_ROW_BYTES = (1024, 4096)
DOTS_SMALL_BATCH = 16
FORCE = None  # "dots" | "gemm": for tests and benchmarks


def linear_algorithm(n, k, itemsize, tiles=None):
    """'dots' or 'gemm' for n samples of k features (see above); `tiles`: whether gemm runs on
    netc's own tiles (by default, whether this CPU has them)."""
    if FORCE is not None:
        return FORCE
    if n < DOTS_SMALL_BATCH:
        return "dots"
    if tiles is None:
        from ..blas import own_tiles
        tiles = own_tiles()
    lo, hi = DOTS_ROW_BYTES
    return "gemm" if tiles or not lo <= k * itemsize <= hi else "dots"


def linear_forward(x2, w, bias, code, workers, z):
    """z (n, units) = act(x2 w^T + bias), act by its code in ACT_CODES (0: none); bias may be None."""
    bias = np.zeros(0, z.dtype) if bias is None else bias
    if linear_algorithm(x2.shape[0], x2.shape[1], x2.itemsize) == "dots":
        _linear_dots_cpu(x2, w.reshape(w.shape[0], -1), bias, code, workers, z)
    else:
        _linear_forward_cpu(x2, w.reshape(w.shape[0], -1), bias, code, workers, z)


def linear_backward(x2, p, dy, y, code, ctx, dx):
    """{"weight": dL/dW, "bias": dL/db} for z = x2 W^T + b, y = act(z), from dy = dL/dy (with code
    0: dL/dz); dx (n, k) receives dL/dx2 unless it is empty."""
    w = p["weight"]
    w2 = w.reshape(w.shape[0], -1)
    dy = np.ascontiguousarray(dy.reshape(dy.shape[0], -1))
    dz = ctx.scratch("dz", dy.shape, dy.dtype) if code else dy
    dw = np.empty_like(w)
    db = np.empty(w.shape[0] if "bias" in p else 0, dy.dtype)
    _linear_backward_cpu(x2, w2, dy, y.reshape(dy.shape), code, ctx.workers, dz,
                         dw.reshape(w2.shape), db, dx)
    return {"weight": dw, "bias": db} if "bias" in p else {"weight": dw}


@cpu_kernel(parallel=True, fastmath=REDUCE)  # REDUCE: the dot products vectorize
def _linear_dots_cpu(x, w, bias, code, parts, z):
    """z = act(x w^T + bias) by dot products (bias may be empty): the threads split the units,
    nine at a time, and go through the samples two at a time against them (nine units' rows stay
    in cache while the samples stream past)."""
    n, u = z.shape
    k = x.shape[1]
    xf, wf = x.reshape(-1), w.reshape(-1)
    groups = -(-u // TAPS)
    for t in prange(parts):
        offs = np.empty(TAPS, np.int64)
        sums = np.empty((2, TAPS), z.dtype)
        for g in range(groups * t // parts, groups * (t + 1) // parts):
            j0 = g * TAPS
            for j in range(TAPS):  # past the last unit: its row again, the sums dropped
                offs[j] = min(j0 + j, u - 1) * k
            for i in range(0, n, 2):
                i1 = min(i + 1, n - 1)  # an odd last sample pairs with itself
                sums[:] = 0
                _nine_dots_cpu(xf[i * k:(i + 1) * k], xf[i1 * k:(i1 + 1) * k], wf, offs, k, sums)
                for j in range(min(TAPS, u - j0)):
                    b = bias[j0 + j] if bias.size else 0
                    z[i, j0 + j] = _act(code, sums[0, j] + b)
                    z[i1, j0 + j] = _act(code, sums[1, j] + b)


@cpu_kernel(parallel=True)
def _linear_forward_cpu(x, w, bias, code, parts, z):
    """z = act(x w^T + bias) by GEMM (bias may be empty), split into `parts` by rows (samples)
    or, where there are more units than samples, by units: each part's GEMM packs the whole of
    the other operand, so the split goes along the larger one (an MLP's 64 x 784 x 256 layer:
    79 us against 118)."""
    n, u = z.shape
    by_units = u > n
    for t in prange(parts):
        size = u if by_units else n
        lo, hi = size * t // parts, size * (t + 1) // parts
        if hi > lo:
            if by_units:
                gemm(False, True, 1.0, x, w[lo:hi], 0.0, z[:, lo:hi])
            else:
                gemm(False, True, 1.0, x[lo:hi], w, 0.0, z[lo:hi])
            if bias.size or code:
                rows, c0, c1 = (range(n), lo, hi) if by_units else (range(lo, hi), 0, u)
                for i in rows:
                    row = z[i, c0:c1]
                    if bias.size:
                        for j in range(c1 - c0):
                            row[j] += bias[c0 + j]
                    if code:  # (np.float32: a bias of 0 that keeps float32 rows in float32)
                        _act_row_cpu(code, row, np.float32(0), row, c1 - c0)


@cpu_kernel(parallel=True, fastmath=REDUCE)  # REDUCE: the bias sums vectorize
def _linear_backward_cpu(x, w, dy, y, code, parts, dz, dw, db, dx):
    """dz = dy act'(y) (with code 0, dz is dy itself), db its sums over the samples (unless db
    is empty), then dw = dz^T x (split by units) and, unless dx is empty, dx = dz w (split by
    rows, or by input features where there are more of them than samples, as in forward)."""
    n, u = dz.shape
    k = w.shape[1]
    if code:
        for i in range(n):
            _grad_row_cpu(code, dy[i], y[i], dz[i], u)
    if db.size:
        for j in range(u):
            db[j] = 0
        for i in range(n):
            for j in range(u):
                db[j] += dz[i, j]
    by_features = k > n
    for t in prange(parts):
        lo, hi = u * t // parts, u * (t + 1) // parts
        if hi > lo:
            gemm(True, False, 1.0, dz[:, lo:hi], x, 0.0, dw[lo:hi])
        if dx.shape[0]:
            size = k if by_features else n
            lo, hi = size * t // parts, size * (t + 1) // parts
            if hi > lo and by_features:
                gemm(False, False, 1.0, dz, w[:, lo:hi], 0.0, dx[:, lo:hi])
            elif hi > lo:
                gemm(False, False, 1.0, dz[lo:hi], w, 0.0, dx[lo:hi])


@register
class Output(FullyConnected):
    name = "OUT"
    example = ("6", "OUT 4 softmax")
    doc = "the output layer, an FC with the output activation: `OUT 10 softmax`"
    keys = {**FullyConnected.keys, "act": Choice(("softmax", "sigmoid", "none"), "none")}


@register
class Flatten(LayerKind):
    name = "FLATTEN"
    example = ("2x3x2", "FLATTEN")
    doc = "C x H x W -> C*H*W"

    def shape(self, h, xs):
        return (math.prod(xs[0]),)

    def flops(self, h, xs, y):
        return 0

    def window(self, h, xs):
        return "global" if len(xs[0]) == 3 else None

    def forward(self, h, p, xs, ctx):
        return xs[0].reshape(xs[0].shape[0], -1), xs[0].shape

    def backward(self, h, p, shape, dy, ctx):
        return [dy.reshape(shape)], {}
