"""CONV and DECONV on the GPU. CONV by im2col + GEMM, a chunk of samples at a time (about CHUNK_BYTES of unfolded
input): unfold the chunk to (C*kh*kw, samples*oh*ow), multiply by the weights (F, C/g*kh*kw), one
GEMM per group, and write the result back per sample with bias and activation (the kernel that
changes the layout does the epilogue too). Backward: the output gradient, times the activation's
gradient, goes into the same (F, samples*oh*ow) layout; dW += d2 cols^T; the unfolded input
gradient W^T d2 folds back into dx, each input value gathering the taps that read it (no atomics:
the same bits at every run)."""
from __future__ import annotations

from numba import cuda

from netc.compiler.kinds.conv import Conv as ConvKind
from netc.compiler.kinds.conv import Deconv as DeconvKind
from netc.compiler.shapes import window_geometry

from ..registry import Implementation, implements
from .activation import fused_backward, fused_forward
from .dense import act_pair, in_kernel
from .gemm import gemm
from .kernels import reduce
from .launch import ew, grid, kernel

CHUNK_BYTES = 64 << 20


def _window(h):
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    return kh, kw, sh, sw, ph, pw


def _unfolded(x, h, oh, ow, ctx):
    """(first sample, samples, their unfolded input (C*kh*kw, samples*oh*ow)) for each chunk of
    the batch: about CHUNK_BYTES of unfolded input each."""
    ln = oh * ow
    k = x.shape[1] * h["kernel"][0] * h["kernel"][1]
    for s, m in _chunks(x.shape[0], k * ln * x.dtype.itemsize):
        cols = ctx.scratch("cols", (k, m * ln), x.dtype)
        _im2col[grid(cols.size)](x, s, *_window(h), oh, ow, x.dtype.type(0), cols)
        yield s, m, cols


@implements(ConvKind, "cuda")
class Conv(Implementation):
    """The cache is (input, pre-activation where the activation runs apart, output)."""

    def algorithm(self, h, xs, batch=None, tiles=None):
        return "im2col"

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        n, f, g = x.shape[0], h["filters"], h["groups"]
        oh, ow, _, _ = window_geometry(h, x.shape[1:])
        inside = in_kernel(h, ctx)
        apart = inside == "none" and h["act"] != "none"
        y = ctx.buffer("z" if apart else "y", (n, f, oh, ow), x.dtype)
        w = p["weight"].reshape(f, p["weight"].size // f)
        k, fg, ln = w.shape[1], f // g, oh * ow
        bias = p.get("bias", w[0, :0])
        code, a = act_pair(inside, x.dtype)
        for s, m, cols in _unfolded(x, h, oh, ow, ctx):
            z = ctx.scratch("z", (f, m * ln), x.dtype)
            for q in range(g):
                gemm(False, False, 1.0, w[q * fg:(q + 1) * fg], cols[q * k:(q + 1) * k], 0.0,
                     z[q * fg:(q + 1) * fg])
            _epilogue[grid(z.size)](z, bias, code, a, s, y.reshape(n, f, ln))
        if not apart:
            return y, (x, None, y)
        out = fused_forward(h, p, y, ctx)
        return out, (x, y, out)

    def logits(self, cache):
        return cache[1]

    def backward(self, h, p, cache, dy, ctx):
        x, z, y = cache
        if z is None:  # the forward kernel applied the activation: its gradient comes from y
            return self._backward(h, p, x, y, dy, h["act"], {}, ctx)
        dz, grads = fused_backward(h, p, z, y, dy, ctx)
        return self._backward(h, p, x, z, dz, "none", grads, ctx)

    def backward_logits(self, h, p, cache, dz, ctx):
        x, z, _ = cache
        return self._backward(h, p, x, z, dz, "none", {}, ctx)

    def _backward(self, h, p, x, y, dy, inside, grads, ctx):
        n, f, g = x.shape[0], h["filters"], h["groups"]
        _, _, oh, ow = dy.shape
        w = p["weight"].reshape(f, p["weight"].size // f)
        k, fg, ln = w.shape[1], f // g, oh * ow
        code, a = act_pair(inside, dy.dtype)
        dw = ctx.buffer("dw", p["weight"].shape, dy.dtype)
        dw2 = dw.reshape(f, k)
        db = ctx.buffer("db", (f,), dy.dtype) if "bias" in p else None
        dx = ctx.grad(x.shape, dy.dtype) if ctx.need_dx else None
        dyl, yl = dy.reshape(n, f, ln), y.reshape(n, f, ln)
        for s, m, cols in _unfolded(x, h, oh, ow, ctx):
            d2 = ctx.scratch("d2", (f, m * ln), x.dtype)
            _prologue[grid(d2.size)](dyl, yl, code, a, s, d2)
            if db is not None:  # the bias's gradient: d2's sums over samples and pixels
                reduce(d2.reshape(1, f, m * ln), db, accumulate=s > 0, ctx=ctx)
            for q in range(g):  # dW (+)= d2 cols^T
                gemm(False, True, 1.0, d2[q * fg:(q + 1) * fg], cols[q * k:(q + 1) * k],
                     0.0 if s == 0 else 1.0, dw2[q * fg:(q + 1) * fg])
            if dx is not None:
                dcols = ctx.scratch("dcols", (k * g, m * ln), x.dtype)
                for q in range(g):  # dcols = W^T d2
                    gemm(True, False, 1.0, w[q * fg:(q + 1) * fg], d2[q * fg:(q + 1) * fg], 0.0,
                         dcols[q * k:(q + 1) * k])
                _col2im[grid(m * x[0].size)](dcols, s, m, *_window(h), oh, ow, dy.dtype.type(0),
                                             dx)
        grads["weight"] = dw
        if db is not None:
            grads["bias"] = db
        return [dx], grads


@implements(DeconvKind, "cuda")
class Deconv(Implementation):
    """The transpose of the convolution that maps its output to its input, a chunk of samples
    at a time: forward, cols = W^T x then the fold into the output (bias and activation after);
    backward, the output gradient times the activation's gradient unfolded, dW += x cols^T and
    dx = W cols. The cache is (input, pre-activation where the activation runs apart, output)."""

    def forward(self, h, p, xs, ctx):
        x = xs[0]
        n, c, hh, ww = x.shape
        f, g = h["filters"], h["groups"]
        _, oh, ow = self.rules.shape(h, (x.shape[1:],))
        inside = in_kernel(h, ctx)
        apart = inside == "none" and h["act"] != "none"
        y = ctx.buffer("z" if apart else "y", (n, f, oh, ow), x.dtype)
        w = p["weight"].reshape(c, p["weight"].size // c)
        cg, rows, ln = c // g, w.shape[1], hh * ww
        x3, none = x.reshape(n, c, ln), w[0, :0]
        for s, m in _chunks(n, rows * g * ln * x.dtype.itemsize):
            xt = ctx.scratch("xt", (c, m * ln), x.dtype)
            _prologue[grid(xt.size)](x3, x3, ew.NONE, x.dtype.type(0), s, xt)
            cols = ctx.scratch("cols", (rows * g, m * ln), x.dtype)
            for q in range(g):
                gemm(True, False, 1.0, w[q * cg:(q + 1) * cg], xt[q * cg:(q + 1) * cg], 0.0,
                     cols[q * rows:(q + 1) * rows])
            _col2im[grid(m * f * oh * ow)](cols, s, m, *_window(h), hh, ww, x.dtype.type(0), y)
        code, a = act_pair(inside, x.dtype)
        _bias_act_channels[grid(y.size)](y.reshape(n, f, oh * ow), p.get("bias", none), code, a)
        if not apart:
            return y, (x, None, y)
        out = fused_forward(h, p, y, ctx)
        return out, (x, y, out)

    def logits(self, cache):
        return cache[1]

    def backward(self, h, p, cache, dy, ctx):
        x, z, y = cache
        if z is None:
            return self._backward(h, p, x, y, dy, h["act"], {}, ctx)
        dz, grads = fused_backward(h, p, z, y, dy, ctx)
        return self._backward(h, p, x, z, dz, "none", grads, ctx)

    def backward_logits(self, h, p, cache, dz, ctx):
        x, z, _ = cache
        return self._backward(h, p, x, z, dz, "none", {}, ctx)

    def _backward(self, h, p, x, y, dy, inside, grads, ctx):
        n, c, hh, ww = x.shape
        f, g = h["filters"], h["groups"]
        w = p["weight"].reshape(c, p["weight"].size // c)
        cg, rows, ln = c // g, w.shape[1], hh * ww
        code, a = act_pair(inside, dy.dtype)
        d = ctx.scratch("dz", dy.shape, dy.dtype)  # dy act'(z)
        _act_grad_flat[grid(dy.size)](code, a, y.reshape(y.size), dy.reshape(dy.size),
                                      d.reshape(d.size))
        if "bias" in p:
            grads["bias"] = reduce(d.reshape(n, f, d.size // (n * f)),
                                   ctx.buffer("db", (f,), dy.dtype), ctx=ctx)
        dw = ctx.buffer("dw", p["weight"].shape, dy.dtype)
        dw2 = dw.reshape(c, rows)
        dx = ctx.grad(x.shape, dy.dtype) if ctx.need_dx else None
        x3 = x.reshape(n, c, ln)
        for s, m in _chunks(n, rows * g * ln * x.dtype.itemsize):
            cols = ctx.scratch("cols", (rows * g, m * ln), x.dtype)
            _im2col[grid(cols.size)](d, s, *_window(h), hh, ww, dy.dtype.type(0), cols)
            xt = ctx.scratch("xt", (c, m * ln), x.dtype)
            _prologue[grid(xt.size)](x3, x3, ew.NONE, x.dtype.type(0), s, xt)
            for q in range(g):  # dW (+)= x cols^T
                gemm(False, True, 1.0, xt[q * cg:(q + 1) * cg], cols[q * rows:(q + 1) * rows],
                     0.0 if s == 0 else 1.0, dw2[q * cg:(q + 1) * cg])
            if dx is not None:  # dx = W cols, back to samples x channels
                dxt = ctx.scratch("dxt", (c, m * ln), x.dtype)
                for q in range(g):
                    gemm(False, False, 1.0, w[q * cg:(q + 1) * cg], cols[q * rows:(q + 1) * rows],
                         0.0, dxt[q * cg:(q + 1) * cg])
                _epilogue[grid(dxt.size)](dxt, w[0, :0], ew.NONE, dy.dtype.type(0), s,
                                          dx.reshape(n, c, ln))
        grads["weight"] = dw
        return [dx], grads


def _chunks(n, bytes_per_sample):
    """(first sample, samples) of each chunk of the batch: about CHUNK_BYTES of workspace each."""
    per = max(1, min(n, CHUNK_BYTES // max(1, bytes_per_sample)))
    for s in range(0, n, per):
        yield s, min(n, s + per) - s


@kernel()
def _bias_act_channels(y, bias, code, a):
    """y[n, f, l] = act(y[n, f, l] + bias[f]) (bias may be empty)."""
    _, f_, l_ = y.shape
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, f, l = t // (f_ * l_), (t // l_) % f_, t % l_
        v = y[n, f, l] + bias[f] if bias.size else y[n, f, l]
        y[n, f, l] = ew.act(code, v, a)


@kernel()
def _act_grad_flat(code, a, y, dy, d):
    """d = dy act'(from y), flat."""
    for i in range(cuda.grid(1), d.size, cuda.gridsize(1)):
        d[i] = dy[i] * ew.act_grad(code, y[i], y[i], a)


@kernel()
def _im2col(x, s, kh, kw, sh, sw, ph, pw, oh, ow, zero, cols):
    """cols[(c, i, j), (n - s, oy, ox)] = x[n, c, oy*sh - ph + i, ox*sw - pw + j], zero outside."""
    _, c_, h_, w_ = x.shape
    ln = oh * ow
    m = cols.shape[1]
    for t in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        r, col = t // m, t % m
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        n, oy, ox = s + col // ln, (col % ln) // ow, col % ow
        iy, ix = oy * sh - ph + i, ox * sw - pw + j
        inside = 0 <= iy < h_ and 0 <= ix < w_
        cols[r, col] = x[n, c, iy, ix] if inside else zero


@kernel()
def _col2im(dcols, s, m, kh, kw, sh, sw, ph, pw, oh, ow, zero, dx):
    """dx[s + n, c, iy, ix] = the sum of dcols over the (tap, output) pairs that read it."""
    _, c_, h_, w_ = dx.shape
    ln = oh * ow
    for t in range(cuda.grid(1), m * c_ * h_ * w_, cuda.gridsize(1)):
        n, c, iy, ix = t // (c_ * h_ * w_), (t // (h_ * w_)) % c_, (t // w_) % h_, t % w_
        acc = zero
        for i in range(kh):
            qy = iy + ph - i
            if qy < 0 or qy % sh != 0 or qy // sh >= oh:
                continue
            for j in range(kw):
                qx = ix + pw - j
                if qx < 0 or qx % sw != 0 or qx // sw >= ow:
                    continue
                acc += dcols[(c * kh + i) * kw + j, n * ln + (qy // sh) * ow + qx // sw]
        dx[s + n, c, iy, ix] = acc


@kernel()
def _epilogue(z, bias, code, a, s, y):
    """y[s + n, f, l] = act(z[f, n*L + l] + bias[f]) for the chunk's samples n (bias may be empty)."""
    ln = y.shape[2]
    for t in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        f, col = t // z.shape[1], t % z.shape[1]
        v = z[f, col] + bias[f] if bias.size else z[f, col]
        y[s + col // ln, f, col % ln] = ew.act(code, v, a)


@kernel()
def _prologue(dy, y, code, a, s, d2):
    """d2[f, n*L + l] = dy[s + n, f, l] act'(from y) for the chunk's samples n."""
    ln = dy.shape[2]
    for t in range(cuda.grid(1), d2.size, cuda.gridsize(1)):
        f, col = t // d2.shape[1], t % d2.shape[1]
        n, l = s + col // ln, col % ln
        d2[f, col] = dy[n, f, l] * ew.act_grad(code, y[n, f, l], y[n, f, l], a)
