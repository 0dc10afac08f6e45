"""FC, OUT and FLATTEN on the CPU, and the linear map y = act(x W^T + b) that a dense CONV (a window
over its whole input) runs too.

FC's forward runs one of two ways (`linear_algorithm`): "dots", netc's own loop, two samples
against nine units a pass with the 18 sums in registers where the CPU has AVX-512's 32 vector
registers (one sample with AVX2's 16: the 18 spilled, and a lone sample was its own pair, 4x
slower at batch 1), vectorized at the CPU's full width whatever the BLAS runs; or "gemm", the
kernels' GEMM (netc's tiles on AVX-512, else the BLAS).
With the tiles, gemm wins from DOTS_SMALL_BATCH samples on; against the BLAS, dots also wins
where each row holds DOTS_ROW_BYTES (long enough for its 18 sums, short enough that nine units'
rows stay in L1), on CPUs with 64-byte vectors only. On AVX2, where the tiles run the A B^T of
few rows (blas.TILE_ROUTES), gemm wins at any batch in float32 (784 -> 256: 0.96x dots' time at
batch 1, 0.58-0.70x at 4-12). The backward pass is GEMMs, with the
activation's gradient and the bias sums in the same kernel. (Measurements: bench/RESULTS.md.)
"""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds import dense as kinds

from .. import elementwise as ew
from ..composed import PerPixelOutput
from ..registry import Implementation, implements
from .activation import fused_backward, fused_forward, in_kernel
from .blas import gemm, own_tiles, tile_routes
from .tiles import host_vector_bytes
from .common import TAPS, _act_row_cpu, _grad_row_cpu, _nine_dots1_cpu, _nine_dots_cpu, act_pair
from .jit import REDUCE, kernel, launch, launcher, run_parts, share, split_macs

DOTS_ROW_BYTES = (1024, 4096)
DOTS_SMALL_BATCH = 16
FORCE = None  # "dots" | "gemm": for tests and benchmarks
PAIRS = None  # dots two samples a pass (True) or one (False); None: by the CPU (dots_pairs)


@implements(kinds.FullyConnected, "cpu")
class FullyConnected(Implementation):
    """Both passes are one parallel kernel each (linear_forward, linear_backward), with the
    activation inside them, its gradient taken from the output, except where it runs apart
    (activation.in_kernel). On a sequence (N, T, D) each of the N*T steps is a row (rows,
    unrows): the output is (N, T, units), the activation (a softmax too) per step."""

    def algorithm(self, h, xs, batch=None, tiles=None):
        shape = xs[0]
        if len(shape) == 2:  # a sequence: a row per step
            return linear_algorithm((batch or 1) * shape[0], shape[1], 4, tiles)
        return linear_algorithm(batch or 1, int(np.prod(shape)), 4, tiles)

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        x2 = np.ascontiguousarray(rows(x))
        inside = in_kernel(h, ctx)
        z = np.empty((x2.shape[0], h["units"]), x.dtype)
        linear_forward(x2, p["weight"], p.get("bias"), act_pair(inside, x.dtype), z)
        if inside != "none" or h["act"] == "none":
            return unrows(z, x.shape), (x.shape, x2, None, z, inside)
        y = fused_forward(h, p, z)
        return unrows(y, x.shape), (x.shape, x2, z, y, "none")

    def backward(self, h, p, cache, dy, ctx):
        z, y = cache[2], cache[3]
        dy = dy.reshape(y.shape)
        dz, grads = fused_backward(h, p, z, y, dy) if z is not None else (dy, {})
        return self.backward_logits(h, p, cache, dz, ctx, grads)

    def logits(self, cache):
        return None if cache[2] is None else unrows(cache[2], cache[0])

    def backward_logits(self, h, p, cache, dz, ctx, grads=None):
        """Backward from dL/dz (a loss fused with the output's activation starts here), or from
        dL/dy where the forward kernel applied the activation."""
        xshape, x2, _, y, inside = cache
        grads = grads or {}
        dz = dz.reshape(y.shape)
        dx = ctx.grad(x2.shape if ctx.need_dx else (0, x2.shape[1]), dz.dtype)
        grads.update(linear_backward(x2, p, dz, y, act_pair(inside, dz.dtype), ctx, dx))
        return [dx.reshape(xshape) if ctx.need_dx else None], grads


@implements(kinds.Output, "cpu")
class Output(PerPixelOutput, FullyConnected):
    """OUT: an FC, or with per=pixel the 1x1 CONV it is (composed.py)."""


@implements(kinds.Flatten, "cpu")
class Flatten(Implementation):
    def forward(self, h, p, xs, ctx):
        return xs[0].reshape(xs[0].shape[0], -1), xs[0].shape

    def backward(self, h, p, shape, dy, ctx):
        return [dy.reshape(shape)], {}


def rows(x):
    """The rows an FC maps: (N*T, D), a row per step, for a sequence (N, T, D); (N, features)
    for vectors and flattened images."""
    return x.reshape(-1, x.shape[2]) if x.ndim == 3 else x.reshape(x.shape[0], -1)


def unrows(a, xshape):
    """rows' inverse on the output side: (N*T, units) back to (N, T, units) for a sequence
    input of shape xshape; a's own shape otherwise."""
    return a.reshape(xshape[0], xshape[1], -1) if len(xshape) == 3 else a


def linear_algorithm(n, k, itemsize, tiles=None, rows=None):
    """'dots' or 'gemm' for n samples of k features (see above); `tiles`: whether gemm runs on
    netc's own tiles (by default, whether this CPU has them); `rows`: the most rows of the
    products that run on them where not every one does (AVX2; by default, with `tiles`, this
    CPU's route, else none). The dots' row rule holds where they vectorize 64 bytes wide: with
    AVX2's 32 OpenBLAS's GEMM wins from DOTS_SMALL_BATCH on (the MLP's first layer at batch 64:
    0.48 ms against 0.95)."""
    if FORCE is not None:
        return FORCE
    if rows is None and tiles is None:
        _, every, _, rows = tile_routes()
        rows = 0 if every else rows
    if itemsize == 4 and n <= (rows or 0):
        return "gemm"
    if n < DOTS_SMALL_BATCH:
        return "dots"
    if tiles is None:
        tiles = own_tiles()
    lo, hi = DOTS_ROW_BYTES
    wide = wide_vectors()
    return "gemm" if tiles or not wide or not lo <= k * itemsize <= hi else "dots"


def wide_vectors() -> bool:
    """Whether this CPU's vectors are 64 bytes (AVX-512)."""
    return host_vector_bytes() == 64


def dots_pairs() -> bool:
    """Whether the dots take two samples a pass (AVX-512's registers hold their 18 sums) or
    one (AVX2's: at batch 1, 784 -> 256, 13 us against 52, Zen 3)."""
    return wide_vectors() if PAIRS is None else PAIRS


def linear_forward(x2, w, bias, act, z):
    """z (n, units) = act(x2 w^T + bias), act = (code, parameter) as common.act_pair gives it;
    bias may be None."""
    bias = np.zeros(0, z.dtype) if bias is None else bias
    w2 = w.reshape(w.shape[0], -1)
    parts = split_macs(z.size * x2.shape[1])
    if linear_algorithm(x2.shape[0], x2.shape[1], x2.itemsize) == "dots":
        launch(_linear_dots_cpu, _linear_dots_part, parts, x2, w2, bias, act, dots_pairs(), z)
    else:
        launch(_linear_forward_cpu, _linear_forward_part, parts, x2, w2, bias, act, z)


def linear_backward(x2, p, dy, y, act, ctx, dx):
    """{"weight": dL/dW, "bias": dL/db} for z = x2 W^T + b, y = act(z), from dy = dL/dy (with act
    none: dL/dz); dx (n, k) receives dL/dx2 unless it is empty."""
    w = p["weight"]
    w2 = w.reshape(w.shape[0], -1)
    # (writable: with act none the kernel's dz is dy, and a read-only dy, such as GAP's broadcast
    # gradient over 1x1 planes, fails its typing)
    dy = np.require(dy.reshape(dy.shape[0], -1), requirements=("C", "W"))
    dz = ctx.scratch("dz", dy.shape, dy.dtype) if act[0] != ew.NONE else dy
    dw = np.empty_like(w)
    db = np.empty(w.shape[0] if "bias" in p else 0, dy.dtype)
    launch(None, _linear_grad_out_part, 1, dy, y.reshape(dy.shape), act, dz, db)
    launch(_linear_backward_cpu, _linear_backward_part, split_macs(dz.size * x2.shape[1] * 2), x2, w2, dz,
           dw.reshape(w2.shape), dx)
    return {"weight": dw, "bias": db} if "bias" in p else {"weight": dw}


@launcher
def _linear_dots_cpu(parts, x, w, bias, act, pairs, z):
    run_parts(_linear_dots_part, parts, (x, w, bias, act, pairs, z))


@kernel(fastmath=REDUCE)  # REDUCE: the dot products vectorize
def _linear_dots_part(t, parts, x, w, bias, act, pairs, z):
    """z = act(x w^T + bias) by dot products (bias may be empty), part t of `parts`: the parts
    split the units, nine at a time, and go through the samples two at a time against them if
    `pairs` (AVX-512), else one at a time (nine units' rows stay in cache while the samples
    stream past)."""
    n, u = z.shape
    k = x.shape[1]
    code, a = act
    xf, wf = x.reshape(-1), w.reshape(-1)
    lo, hi = share(-(-u // TAPS), t, parts)
    offs = np.empty(TAPS, np.int64)
    sums = np.empty((2, TAPS), z.dtype)
    for g in range(lo, hi):
        j0 = g * TAPS
        for j in range(TAPS):  # past the last unit: its row again, the sums dropped
            offs[j] = min(j0 + j, u - 1) * k
        if not pairs:
            for i in range(n):
                sums[0] = 0
                _nine_dots1_cpu(xf[i * k:(i + 1) * k], wf, offs, k, sums[0])
                for j in range(min(TAPS, u - j0)):
                    z[i, j0 + j] = ew.act(code, sums[0, j] + (bias[j0 + j] if bias.size else 0), a)
            continue
        for i in range(0, n, 2):
            i1 = min(i + 1, n - 1)  # an odd last sample pairs with itself
            sums[:] = 0
            _nine_dots_cpu(xf[i * k:(i + 1) * k], xf[i1 * k:(i1 + 1) * k], wf, offs, k, sums)
            for j in range(min(TAPS, u - j0)):
                b = bias[j0 + j] if bias.size else 0
                z[i, j0 + j] = ew.act(code, sums[0, j] + b, a)
                z[i1, j0 + j] = ew.act(code, sums[1, j] + b, a)


@launcher
def _linear_forward_cpu(parts, x, w, bias, act, z):
    run_parts(_linear_forward_part, parts, (x, w, bias, act, z))


@kernel()
def _linear_forward_part(t, parts, x, w, bias, act, z):
    """z = act(x w^T + bias) by GEMM (bias may be empty), part t of `parts`, split by rows
    (samples) or, where there are more units than samples, by units: each part's GEMM reads the
    whole of the other operand, so the split goes along the larger one."""
    n, u = z.shape
    by_units = u > n
    lo, hi = share(u if by_units else n, t, parts)
    if hi <= lo:
        return
    if by_units:
        gemm(False, True, 1.0, x, w[lo:hi], 0.0, z[:, lo:hi])
    else:
        gemm(False, True, 1.0, x[lo:hi], w, 0.0, z[lo:hi])
    if bias.size or act[0]:
        rows, c0, c1 = (range(n), lo, hi) if by_units else (range(lo, hi), 0, u)
        for i in rows:
            row = z[i, c0:c1]
            if bias.size:
                for j in range(c1 - c0):
                    row[j] += bias[c0 + j]
            if act[0]:  # (np.float32: a bias of 0 that keeps float32 rows in float32)
                _act_row_cpu(act, row, np.float32(0), row, c1 - c0)


@kernel(fastmath=REDUCE)  # REDUCE: the bias sums vectorize
def _linear_grad_out_part(t, parts, dy, y, act, dz, db):
    """dz = dy act'(y) (with act none, dz is dy itself) and db its sums over the samples (unless
    db is empty): one part, serial (launched, so that a first step's record notes it and it
    compiles ahead with the others; called directly it compiled during the record, alone)."""
    n, u = dz.shape
    if act[0]:
        for i in range(n):
            _grad_row_cpu(act, dy[i], y[i], dz[i], u)
    if db.size:
        for j in range(u):
            db[j] = 0
        for i in range(n):
            for j in range(u):
                db[j] += dz[i, j]


@launcher
def _linear_backward_cpu(parts, x, w, dz, dw, dx):
    run_parts(_linear_backward_part, parts, (x, w, dz, dw, dx))


@kernel()
def _linear_backward_part(t, parts, x, w, dz, dw, dx):
    """Part t of `parts`: dw = dz^T x (split by units) and, unless dx is empty, dx = dz w (split
    by rows, or by input features where there are more of them than samples, as in forward)."""
    n, u = dz.shape
    k = w.shape[1]
    lo, hi = share(u, t, parts)
    if hi > lo:
        gemm(True, False, 1.0, dz[:, lo:hi], x, 0.0, dw[lo:hi])
    if dx.shape[0]:
        by_features = k > n
        lo, hi = share(k if by_features else n, t, parts)
        if hi > lo and by_features:
            gemm(False, False, 1.0, dz, w[:, lo:hi], 0.0, dx[:, lo:hi])
        elif hi > lo:
            gemm(False, False, 1.0, dz[lo:hi], w, 0.0, dx[lo:hi])
