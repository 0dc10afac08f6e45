"""CONV: 2-D convolution with stride, padding, groups and a fused activation.

This file is the kind: its keys, shape rule, counts, label, and forward/backward, which pick one
of the CPU algorithms beside it (im2col.py, winograd.py, direct.py, or one GEMM when the window
covers the input) from the layer's shape; common.py holds the kernels they share."""
from __future__ import annotations

import math

import numpy as np

from ...registry import (ACTIVATIONS, Bool, Choice, Int, LayerError, LayerKind, Pad, Pair,
                         register)
from ...shapes import resolve_pad, window_out
from ..activation import act_backward, act_forward, channel_view
from .common import ACT_CODES
from .direct import (_direct_backward_cpu, _direct_forward_cpu, _direct_plan, _direct_weights,
                     _direct_workspace)
from .im2col import _conv_backward_cpu, _conv_forward_cpu, _workspace
from .winograd import (_winograd_backward_cpu, _winograd_forward_cpu, _winograd_weight_grad,
                       _winograd_weights, _winograd_workspace)


def conv_geometry(h, x):
    """(out_h, out_w, dropped_h, dropped_w) of a CONV or POOL window over x = (C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    oh, dh = window_out(x[1], kh, sh, ph, h["round"], axis="height")
    ow, dw = window_out(x[2], kw, sw, pw, h["round"], axis="width")
    return oh, ow, dh, dw


@register
class Conv(LayerKind):
    name = "CONV"
    example = ("5x6x4", "CONV 3x3/2 6 pad=1 groups=2 act=prelu")
    doc = "2-D convolution: `CONV 11x11/4 96`, `CONV 3x3 64 pad=same act=relu`, `groups=G`"
    spatial = True
    keys = {
        "filters": Int(doc="the number of filters, an integer >= 1"),
        "kernel": Pair((3, 3)),
        "stride": Pair((1, 1)),
        "pad": Pad(0),
        "groups": Int(1),
        "bias": Bool(True),
        "act": Choice(ACTIVATIONS, "none"),
        "round": Choice(("exact", "floor", "ceil"), "exact"),
    }
    positional = {tuple: "kernel", int: "filters", str: "act"}

    def resolve(self, h, xs):
        x = xs[0]
        if "filters" not in h:
            raise LayerError("CONV needs the number of filters", key="filters",
                             hint="write it after the kernel, e.g. `CONV 3x3 64`, or set a default "
                                  "with `CONV: 64`")
        if h["pad"] == "same" and h["round"] == "exact":
            h["round"] = "floor"  # 'same' at stride S gives ceil(W/S), as PyTorch's padding=k//2
        h["pad"] = resolve_pad(h["pad"], h["kernel"])
        g = h["groups"]
        if x[0] % g or h["filters"] % g:
            raise LayerError(f"groups={g} must divide the input channels ({x[0]}) and the filters "
                             f"({h['filters']})", key="groups",
                             hint="choose groups among the common divisors: "
                                  + ", ".join(str(d) for d in range(1, x[0] + 1)
                                              if x[0] % d == 0 and h["filters"] % d == 0))
        return h

    def shape(self, h, xs):
        oh, ow, _, _ = conv_geometry(h, xs[0])
        return (h["filters"], oh, ow)

    def params(self, h, xs):
        kh, kw = h["kernel"]
        p = {"weight": (h["filters"], xs[0][0] // h["groups"], kh, kw)}
        if h["bias"]:
            p["bias"] = (h["filters"],)
        if h["act"] == "prelu":
            p["slope"] = (h["filters"],)
        return p

    def macs(self, h, xs, y):
        kh, kw = h["kernel"]
        return math.prod(y) * (xs[0][0] // h["groups"]) * kh * kw

    def flops(self, h, xs, y):
        return math.prod(y) * (int(h["bias"]) + (h["act"] != "none"))

    def window(self, h, xs):
        return h["kernel"], h["stride"]

    def label(self, h):
        kh, kw = h["kernel"]
        s = h["stride"]
        text = f"CONV {kh}x{kw}" + (f"/{s[0]}" if s == (s[0], s[0]) and s[0] > 1 else
                                    "" if s[0] == 1 == s[1] else f"/{s[0]}x{s[1]}")
        text += f" {h['filters']}"
        if h["pad"] != (0, 0):
            text += f" pad={h['pad'][0]}" if h["pad"][0] == h["pad"][1] else f" pad={h['pad'][0]}x{h['pad'][1]}"
        if h["groups"] > 1:
            text += f" g={h['groups']}"
        if h["act"] != "none":
            text += f" {h['act']}"
        return text

    def cpu_algorithm(self, h, xs, batch=None, tiles=None):
        return _algorithm(h, (1,) + tuple(xs[0]), tiles)

    # ---- runtime ------------------------------------------------------------------------------
    # Each pass is one parallel kernel of the algorithm _algorithm picks: every thread takes a
    # contiguous part of the batch, with its own workspace, runs its GEMMs single-threaded, and
    # writes the result back with bias and activation applied; each thread sums its own weight
    # gradient, and the parts are added after. PReLU's learned slope is applied apart (NumPy).
    # The cache is (input, pre-activation where kept apart, output, im2col's kept unfolding).
    def forward(self, h, p, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        n, f = x.shape[0], h["filters"]
        oh, ow = conv_out_hw(h, x.shape)
        w = p["weight"].reshape(f, -1)                                   # (F, C/g*kh*kw)
        fused = h["act"] in ACT_CODES
        y = ctx.buffer("y" if fused else "z", (n, f, oh, ow), x.dtype)
        bias = p.get("bias", np.zeros(f, x.dtype))
        code = ACT_CODES.get(h["act"], 0)
        algorithm = _algorithm(h, x.shape)
        kept = None
        if algorithm == "dense":  # the window covers the input: y = act(x W^T + b), an FC
            from ..dense import linear_forward
            linear_forward(x.reshape(n, -1), w, p.get("bias"), code, ctx.workers, y.reshape(n, f))
        elif algorithm == "direct":
            offs, margin, plane = _direct_plan(h, x.shape)
            xp, acc = _direct_workspace(ctx, x, f, plane, margin, ("xp", "acc"))
            _direct_forward_cpu(x, _direct_weights(p["weight"]), bias, code, *h["pad"], offs, oh,
                                ow, xp, acc, y)
        elif algorithm == "winograd":
            per, xp, v, z, o = _winograd_workspace(ctx, x, f, oh, ow, ("xp", "v", "m", "o"))
            _winograd_forward_cpu(x, _winograd_weights(p["weight"], transpose=True), bias, code,
                                  *h["pad"], oh, ow, per, xp, v, z, o, y)
        else:
            per, cols, z = _workspace(ctx, h, x, f, oh, ow, ("cols", "z"))
            size = cols.shape[1] and x.shape[0] * w.shape[1] * h["groups"] * oh * ow
            kept = ctx.buffer("cols", (size if ctx.arena is not None and
                                       size * x.itemsize <= KEEP_COLS_BYTES else 0,), x.dtype)
            _conv_forward_cpu(x, w, bias, code, h["groups"], *_geometry(h), oh, ow, per, cols,
                              kept, z, y.reshape(n, f, oh * ow))
        if fused:
            return y, (x, None, y, kept)
        z = y  # PReLU: its learned slope is applied apart
        y = fused_forward(h, p, z)
        return y, (x, z, y, kept)

    def backward(self, h, p, cache, dy, ctx):
        x, z, y, kept = cache
        f = h["filters"]
        n, _, oh, ow = dy.shape
        grads = {}
        need_dx = bool(ctx.need_dx)
        algorithm = _algorithm(h, x.shape)
        if z is not None:  # PReLU
            dy, grads = fused_backward(h, p, z, y, dy)
            code = 0
        else:
            code = ACT_CODES[h["act"]]
        dy = np.ascontiguousarray(dy)
        dx = ctx.buffer("dx", x.shape if need_dx else (0,) + x.shape[1:], dy.dtype)
        if algorithm == "dense":
            from ..dense import linear_backward
            k = x[0].size
            grads.update(linear_backward(x.reshape(n, k), p, dy, y, code, ctx,
                                         dx.reshape(dx.shape[0], k)))
            return [dx if need_dx else None], grads
        if algorithm == "direct":
            offs, margin, plane = _direct_plan(h, x.shape)
            xp, g, acc = _direct_workspace(ctx, x, f, plane, margin, ("xp", "g", "acc"))
            dw = ctx.scratch("dw", (xp.shape[0], g.shape[1], x.shape[1], len(offs)), dy.dtype)
            db = ctx.scratch("db", (xp.shape[0], f), dy.dtype)
            _direct_backward_cpu(x, _direct_weights(p["weight"], transpose=True), dy, y, code,
                                 *h["pad"], offs, margin, need_dx, xp, g, acc, dw, db, dx)
            kk = h["kernel"][0] * h["kernel"][1]
            grads["weight"] = dw.sum(axis=0)[:f, :, :kk].reshape(p["weight"].shape)
        elif algorithm == "winograd":
            u = _winograd_weights(p["weight"])
            per, xp, v, dm, dv, o = _winograd_workspace(ctx, x, f, oh, ow,
                                                        ("xp", "v", "m", "dv", "o"))
            du = ctx.scratch("dw", (xp.shape[0],) + u.shape, dy.dtype)
            db = ctx.scratch("db", (xp.shape[0], f), dy.dtype)
            _winograd_backward_cpu(x, u, dy, y, code, *h["pad"], per, need_dx, xp, v, dm, dv, o,
                                   du, db, dx)
            grads["weight"] = _winograd_weight_grad(du.sum(axis=0))
        else:
            db = self._backward_im2col(h, p, x, dy, y, code, need_dx, kept, grads, dx, ctx)
        if "bias" in p:
            grads["bias"] = db.sum(axis=0)
        return [dx if need_dx else None], grads

    @staticmethod
    def _backward_im2col(h, p, x, dy, y, code, need_dx, kept, grads, dx, ctx):
        """im2col's backward: fills grads["weight"] and dx; returns the per-thread bias sums."""
        n, f, oh, ow = dy.shape
        w = p["weight"].reshape(f, -1)
        dy = dy.reshape(n, f, oh * ow)
        per, cols, d2, dcols = _workspace(ctx, h, x, f, oh, ow, ("cols", "d2", "dcols"))
        (kh, kw), (ph, pw), c = h["kernel"], h["pad"], x.shape[1]
        if h["groups"] == 1:  # dx through a channels-last fold (see _fold_cpu)
            wt = np.ascontiguousarray(p["weight"].transpose(0, 2, 3, 1)).reshape(f, -1)
            sh, sw = h["stride"]  # room for the last window even in ceil mode
            dxp = ctx.scratch("dxp", (ctx.workers, x.shape[2] + 2 * ph + kh + sh,
                                      (x.shape[3] + 2 * pw + kw + sw) * c), dy.dtype)
        else:
            wt, dxp = w[:0], ctx.scratch("dxp", (ctx.workers, 0, 0), dy.dtype)
        t = cols.shape[0]
        dw = ctx.scratch("dw", (t,) + w.shape, dy.dtype)
        db = ctx.scratch("db", (t, f), dy.dtype)
        _conv_backward_cpu(x, w, dy, y.reshape(n, f, oh * ow), code, h["groups"], *_geometry(h),
                           oh, ow, per, need_dx, cols, kept, d2, dcols, wt, dxp, dw, db, dx)
        grads["weight"] = dw.sum(axis=0).reshape(p["weight"].shape)
        return db


WINOGRAD_MIN_CHANNELS = 16  # fewer, and its GEMMs (K = C) are too thin to pay
WINOGRAD_MIN_OUTPUT = 64    # output pixels: fewer, and 16 small GEMMs lose to one im2col GEMM
# direct: over up to 32 input channels, on planes whose rows, as long as the padded input's, add
# up to enough values per pass. Training steps measured against the other algorithms (2 threads,
# AVX2 GEMMs): LeNet's C1 (1 channel, pass 896) forward 0.35 ms against im2col's 0.53; 16 -> 32
# 5x5 on 32x32 1.8x faster than im2col; 24 -> 48 3x3 on 28x28 1.3x faster than Winograd, and
# 32 -> 32 on 32x32 (a VGG's second layer) 1.2x, or even with AVX-512 GEMMs. Winograd wins from
# 64 channels (1.15x on 32x32) and on 16x16 planes (pass 288), im2col on LeNet's C2 (pass 140).
DIRECT_MAX_CHANNELS = 32
# where the GEMMs run on netc's own tiles (AVX-512), Winograd wins over direct above 16 channels:
# 32 -> 32 on 32x32 (the small VGG's conv2) 14.3 ms forward + backward against direct's 17.6
# (2 threads, batch 64)
DIRECT_MAX_CHANNELS_TILES = 16
DIRECT_MIN_PASS = 512
FORCE = None  # "im2col" | "winograd" | "direct" | "dense" where allowed: for tests and benchmarks


def _algorithm(h, xshape, tiles=None):
    """How a CONV runs on the CPU: dense (its window covers the whole input: an FC), winograd
    (3x3/1 over enough channels and pixels), direct (stride 1, few channels, long rows) or
    im2col. (Shifted GEMMs over the padded input, kh*kw
    of them accumulated, were measured too: no faster than im2col with its unfolding kept, and
    up to 1.3x slower on 5x5 layers; removed.) `tiles`: whether the GEMMs run on netc's own tiles
    (by default, whether this CPU has them)."""
    oh, ow, _, _ = conv_geometry(h, xshape[1:])
    dense = h["groups"] == 1 and h["pad"] == (0, 0) and h["kernel"] == tuple(xshape[2:])
    direct = h["stride"] == (1, 1) and h["groups"] == 1
    winograd = direct and h["kernel"] == (3, 3)
    if FORCE is not None:
        allowed = {"dense": dense, "winograd": winograd, "direct": direct}.get(FORCE, True)
        return FORCE if allowed else "im2col"
    if dense:
        return "dense"
    winograd = winograd and xshape[1] >= WINOGRAD_MIN_CHANNELS and oh * ow >= WINOGRAD_MIN_OUTPUT
    if direct and xshape[1] <= DIRECT_MAX_CHANNELS and oh * (xshape[3] + 2 * h["pad"][1]) >= DIRECT_MIN_PASS:
        if not (winograd and xshape[1] > DIRECT_MAX_CHANNELS_TILES
                and (_own_tiles() if tiles is None else tiles)):
            return "direct"
    return "winograd" if winograd else "im2col"


def _own_tiles():
    from ...blas import own_tiles  # the runtime's question (it needs numba): asked only there
    return own_tiles()


# a layer whose whole batch unfolds into at most this keeps it from forward to backward instead of
# unfolding twice (LeNet's convolutions: 4-5 MB each at batch 64; 10% of a step)
KEEP_COLS_BYTES = 32 << 20


def _geometry(h):
    (kh, kw), (sh, sw), (ph, pw) = h["kernel"], h["stride"], h["pad"]
    return kh, kw, sh, sw, ph, pw


def conv_out_hw(h, xshape):
    oh, ow, _, _ = conv_geometry(h, xshape[1:])
    return oh, ow


def fused_forward(h, p, z):
    """The activation fused into a CONV/FC (PReLU's slope is the layer's `slope` parameter)."""
    slope = channel_view(p["slope"], z.ndim) if "slope" in p else None
    return act_forward(h["act"], z, slope)


def fused_backward(h, p, z, y, dy):
    if h["act"] == "none":
        return dy, {}
    slope = channel_view(p["slope"], z.ndim) if "slope" in p else None
    dz, dslope = act_backward(h["act"], z, y, dy, slope)
    return dz, ({"slope": dslope} if dslope is not None else {})
