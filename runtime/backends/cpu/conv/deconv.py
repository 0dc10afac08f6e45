"""DECONV on the CPU: the transpose of the convolution that maps its output to its input (kernel,
stride, padding and groups the same), run with that convolution's own pieces. Per sample:
forward, cols = W^T x then the fold (col2im) into the output, with bias and activation after;
backward, the output gradient times the activation's gradient is unfolded (im2col), dW += x cols^T
and dx = W cols. Each thread takes a part of the batch with its own workspace and gradients."""
from __future__ import annotations

import numpy as np

from netc.compiler.kinds.conv import Deconv as DeconvKind

from ...registry import Implementation, implements
from ..activation import fused_backward, fused_forward, in_kernel
from ..blas import gemm
from ..common import _act_row_cpu, _fill_cpu, _grad_row_cpu, act_pair, part_sum, window
from ..jit import REDUCE, kernel, launch, launcher, run_parts, split_macs
from .im2col import _col2im_cpu, _im2col_cpu


def _parts(xshape, wshape, groups, passes=1):
    """Parts for a DECONV pass, split by samples: its multiply-adds (W^T x per sample, and for
    backward `passes` of them)."""
    n, c, hh, ww = xshape
    return min(split_macs(passes * n * hh * ww * c * wshape[1]), n)


@implements(DeconvKind, "cpu")
class Deconv(Implementation):
    """The cache is (input, pre-activation where the activation runs apart, output)."""

    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        n, c, hh, ww = x.shape
        f, g = h["filters"], h["groups"]
        _, oh, ow = self.rules.shape(h, (x.shape[1:],))
        inside = in_kernel(h, ctx)
        apart = inside == "none" and h["act"] != "none"
        y = ctx.buffer("z", (n, f, oh, ow), x.dtype) if apart else ctx.value((n, f, oh, ow), x.dtype)
        w = p["weight"].reshape(c, -1)  # (C_in, C_out/g * kh * kw)
        cols = ctx.scratch("cols", (ctx.workers, w.shape[1] * g, hh * ww), x.dtype)
        bias = p.get("bias", np.zeros(f, x.dtype))
        launch(_deconv_forward_cpu, _deconv_forward_part, _parts(x.shape, w.shape, g), x, w, bias,
               act_pair(inside, x.dtype), g, *window(h), cols, y)
        if not apart:
            return y, (x, None, y)
        out = fused_forward(h, p, y)
        return out, (x, y, out)

    def logits(self, cache):
        return cache[1]

    def backward(self, h, p, cache, dy, ctx):
        x, z, y = cache
        if z is None:
            return self._backward(h, p, x, y, dy, h["act"], {}, ctx)
        dz, grads = fused_backward(h, p, z, y, dy)
        return self._backward(h, p, x, z, dz, "none", grads, ctx)

    def backward_logits(self, h, p, cache, dz, ctx):
        x, z, _ = cache
        return self._backward(h, p, x, z, dz, "none", {}, ctx)

    def _backward(self, h, p, x, y, dy, inside, grads, ctx):
        n, c, hh, ww = x.shape
        f = h["filters"]
        w = p["weight"].reshape(c, -1)
        t = ctx.workers
        d = ctx.scratch("d2", (t, 1) + dy.shape[1:], dy.dtype)
        cols = ctx.scratch("cols", (t, w.shape[1] * h["groups"], hh * ww), dy.dtype)
        dw = ctx.scratch("dw", (t,) + w.shape, dy.dtype)
        db = ctx.scratch("db", (t, f), dy.dtype)
        dx = ctx.grad(x.shape if ctx.need_dx else (0,) + x.shape[1:], dy.dtype)
        parts = _parts(x.shape, w.shape, h["groups"], passes=3)
        launch(_deconv_backward_cpu, _deconv_backward_part, parts, x, w, np.ascontiguousarray(dy), y,
               act_pair(inside, dy.dtype), h["groups"], *window(h), bool(ctx.need_dx), d, cols, dw,
               db, dx)
        grads["weight"] = part_sum(dw, parts).reshape(p["weight"].shape)
        if "bias" in p:
            grads["bias"] = part_sum(db, parts)
        return [dx if ctx.need_dx else None], grads


@launcher
def _deconv_forward_cpu(parts, x, w, bias, act, groups, kh, kw, sh, sw, ph, pw, cols_ws, y):
    run_parts(_deconv_forward_part, parts, (
        x, w, bias, act, groups, kh, kw, sh, sw, ph, pw, cols_ws, y))


@kernel()
def _deconv_forward_part(t, parts, x, w, bias, act, groups, kh, kw, sh, sw, ph, pw, cols_ws, y):
    """y = act(conv^T(x, w) + bias), a sample at a time in each thread's part of the batch."""
    n, c, hh, ww = x.shape
    f, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    cg, rows = c // groups, w.shape[1]
    cols = cols_ws[t]
    for s in range(n * t // parts, n * (t + 1) // parts):
        xs = x[s].reshape(c, hh * ww)
        for g in range(groups):  # cols = W^T x, one group's rows at a time
            gemm(True, False, 1.0, w[g * cg:(g + 1) * cg], xs[g * cg:(g + 1) * cg], 0.0,
                 cols[g * rows:(g + 1) * rows])
        _col2im_cpu(cols, kh, kw, sh, sw, ph, pw, hh, ww, y, s, s + 1)
        for q in range(f):
            row = y[s, q].reshape(oh * ow)
            _act_row_cpu(act, row, bias[q], row, oh * ow)


@launcher
def _deconv_backward_cpu(parts, x, w, dy, y, act, groups, kh, kw, sh, sw, ph, pw, need_dx, d_ws,
                         cols_ws, dw_ws, db_ws, dx):
    run_parts(_deconv_backward_part, parts, (
        x, w, dy, y, act, groups, kh, kw, sh, sw, ph, pw, need_dx, d_ws, cols_ws, dw_ws, db_ws, dx))


@kernel(fastmath=REDUCE)
def _deconv_backward_part(t, parts, x, w, dy, y, act, groups, kh, kw, sh, sw, ph, pw, need_dx,
                          d_ws, cols_ws, dw_ws, db_ws, dx):
    """dw_ws[t], db_ws[t]: thread t's weight and bias gradients; dx: the input gradient."""
    n, c, hh, ww = x.shape
    f, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    cg, rows = c // groups, w.shape[1]
    d, cols, dw, db = d_ws[t], cols_ws[t], dw_ws[t], db_ws[t]
    _fill_cpu(dw.reshape(-1), 0.0)
    _fill_cpu(db, 0.0)
    for s in range(n * t // parts, n * (t + 1) // parts):
        for q in range(f):  # d = dy act'(z), and the bias's sums
            db[q] += _grad_row_cpu(act, dy[s, q].reshape(oh * ow), y[s, q].reshape(oh * ow),
                                   d[0, q].reshape(oh * ow), oh * ow)
        # (np.int64: a constant would compile a version of _im2col_cpu of its own)
        _im2col_cpu(d, np.int64(0), np.int64(1), kh, kw, sh, sw, ph, pw, hh, ww, cols)
        xs = x[s].reshape(c, hh * ww)
        for g in range(groups):  # dW += x cols^T; dx = W cols
            gemm(False, True, 1.0, xs[g * cg:(g + 1) * cg], cols[g * rows:(g + 1) * rows], 1.0,
                 dw[g * cg:(g + 1) * cg])
            if need_dx:
                gemm(False, False, 1.0, w[g * cg:(g + 1) * cg], cols[g * rows:(g + 1) * rows],
                     0.0, dx[s].reshape(c, hh * ww)[g * cg:(g + 1) * cg])
